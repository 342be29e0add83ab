"""The loss and update modules: the trainable part, cross-entropy, gradients, optimizer step.

Built as `tvm.relax.training.SetupTrainer` does (a loss appended, Gradient, optimizer) but
without its DecomposeOpsForTraining, which turns an inference-mode batch_norm into one with batch
statistics: here batch_norm keeps the running statistics of `model.eval()` and differentiates
through the gradient registered in compiler/gradients.py; the loss is the fused cross-entropy of
compiler/cross_entropy.py, not TVM's CrossEntropyLoss. Then wrapped in the flat VM
signatures of ARCHITECTURE.md:
`loss(cut, labels, *trainable) -> loss`,
`update(cut, labels, *trainable, *state) -> (loss, *new_trainable, *new_state)`, and, for
verification, `gradients(cut, labels, *trainable) -> (loss, *grads)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.training.optimizer import SGD, Adam, MomentumSGD, Optimizer
from tvm.relax.transform import Gradient

from compiler import gradients  # noqa: F401  (registers the gradients TVM lacks)
from compiler.cross_entropy import emit_cross_entropy
from compiler.importer import ImportedFunction

MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LOSS = 1  # backbone_loss returns (surrogate, loss): Gradient's target is the surrogate


@dataclasses.dataclass
class TrainingModules:
    """The Relax modules of loss.so and update.so, with the optimizer's initial state."""

    loss: tvm.IRModule
    update: tvm.IRModule
    state_names: list[str]
    state_values: list[np.ndarray]


def optimizer_config(name: str, lr: float) -> dict[str, Any]:
    """The manifest's `optimizer` entry: everything needed to reproduce the step."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if name == "sgd":
        return {"name": "sgd", "lr": lr}
    if name == "momentum":
        return {"name": "momentum", "lr": lr, "momentum": MOMENTUM}
    if name == "adam":
        return {"name": "adam", "lr": lr, "betas": list(ADAM_BETAS), "eps": ADAM_EPS}
    raise ValueError(f"unknown optimizer {name!r}; choose one of sgd, momentum, adam")


class _Adam(Adam):
    """TVM 0.27's `Adam.init` hands a PrimType to numpy and fails: keep the dtype as its name."""

    def _set_params_and_dtype(self, params) -> None:
        super()._set_params_and_dtype(params)
        self.dtype = getattr(self.dtype, "dtype", self.dtype)


def _relax_optimizer(config: dict[str, Any]) -> Optimizer:
    if config["name"] == "sgd":
        return SGD(config["lr"])
    if config["name"] == "momentum":
        return MomentumSGD(config["lr"], config["momentum"])
    return _Adam(config["lr"], tuple(config["betas"]), config["eps"])


def _state_names(config: dict[str, Any], params: list[str]) -> list[str]:
    """Names of the optimizer state tensors, in the order TVM's optimizer keeps them."""
    if config["name"] == "sgd":
        return ["num_steps"]
    if config["name"] == "momentum":
        return ["num_steps"] + [f"velocity:{p}" for p in params]
    return (["num_steps", "beta1_prod", "beta2_prod"] + [f"m:{p}" for p in params]
            + [f"v:{p}" for p in params])


def build_training_modules(backbone: ImportedFunction, num_classes: int,
                           optimizer: dict[str, Any]) -> TrainingModules:
    """`backbone` is the trainable part `(cut, *trainable) -> logits` with static shapes."""
    func = backbone.mod["main"]
    if backbone.num_inputs != 1:
        raise ValueError(f"the trainable part must take one input (the cut), not {backbone.num_inputs}")
    logits_info = func.ret_ty
    if not isinstance(logits_info, relax.TensorType) or logits_info.ndim != 2:
        raise ValueError(f"the trainable part must return logits [batch, classes], got {logits_info}")
    batch = int(logits_info.shape[0])
    if int(logits_info.shape[1]) != num_classes:
        raise ValueError(f"the model outputs {int(logits_info.shape[1])} classes, labels list {num_classes}")
    mod = _with_cross_entropy(func, batch)
    params = list(mod["backbone_loss"].params[1: 1 + len(backbone.param_names)])
    mod = Gradient("backbone_loss", require_grads=params, target_index=0)(mod)
    opt = _relax_optimizer(optimizer).init(params)
    mod["optimizer"] = opt.get_function().with_attr("global_symbol", "optimizer")
    state = [s.numpy() for s in opt.state]
    mod = _add_entry_points(mod, batch)
    return TrainingModules(
        loss=_keep_only(mod, "loss"),
        update=_keep_only(mod, "update", "gradients"),
        state_names=_state_names(optimizer, backbone.param_names),
        state_values=state,
    )


def _with_cross_entropy(backbone: relax.Function, batch: int) -> tvm.IRModule:
    """`backbone_loss(cut, *trainable, labels) -> (surrogate, loss)` as one dataflow block: the
    surrogate's gradient is the mean cross-entropy's (compiler/cross_entropy.py)."""
    bb = relax.BlockBuilder()
    inner = bb.add_func(backbone.without_attr("global_symbol"), "backbone")
    inputs = [relax.Var(p.name, p.ty) for p in backbone.params]
    labels = relax.Var("labels", relax.TensorType((batch,), "int64"))
    with bb.function("backbone_loss", [*inputs, labels]):
        with bb.dataflow():
            surrogate, loss = emit_cross_entropy(bb, bb.emit(relax.Call(inner, inputs)), labels)
            surrogate, loss = bb.emit_output(surrogate), bb.emit_output(loss)
        bb.emit_func_output(relax.Tuple([surrogate, loss]))
    mod = relax.transform.InlinePrivateFunctions()(bb.get())
    return relax.transform.DeadCodeElimination(["backbone_loss"])(mod)


def _add_entry_points(mod: tvm.IRModule, batch: int) -> tvm.IRModule:
    """Adds `loss`, `gradients` and `update`: flat signatures over the loss, adjoint and optimizer."""
    loss_fn = mod["backbone_loss"]
    cut_info = loss_fn.params[0].ty
    param_infos = [p.ty for p in loss_fn.params[1:-1]]
    state_infos = list(mod["optimizer"].params[2].ty.fields)
    # Relax functions added through the builder, so each GlobalVar carries its function's type
    # (calls need it); the kernels (the fused loss) stay under the GlobalVars their calls name.
    builder = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items()
                                               if isinstance(f, tvm.tirx.PrimFunc)}))
    callee = {gvar.name_hint: builder.add_func(func, gvar.name_hint) for gvar, func in mod.functions.items()
              if isinstance(func, relax.Function)}

    def signature():
        cut = relax.Var("cut", cut_info)
        labels = relax.Var("labels", relax.TensorType((batch,), "int64"))
        params = [relax.Var(p.name, info) for p, info in zip(loss_fn.params[1:-1], param_infos)]
        return cut, labels, params

    cut, labels, params = signature()
    with builder.function("loss", [cut, labels, *params]):
        out = builder.emit(relax.Call(callee["backbone_loss"], [cut, *params, labels]))
        builder.emit_func_output(builder.emit(relax.TupleGetItem(out, LOSS)))

    cut, labels, params = signature()
    with builder.function("gradients", [cut, labels, *params]):
        out = builder.emit(relax.Call(callee["backbone_loss_adjoint"],
                                      [cut, *params, labels]))
        grads = relax.TupleGetItem(out, 1)
        builder.emit_func_output(relax.Tuple([relax.TupleGetItem(relax.TupleGetItem(out, 0), LOSS)]
                                             + [relax.TupleGetItem(grads, i) for i in range(len(params))]))

    cut, labels, params = signature()
    states = [relax.Var(f"state{i}", info) for i, info in enumerate(state_infos)]
    with builder.function("update", [cut, labels, *params, *states]):
        out = builder.emit(relax.Call(callee["backbone_loss_adjoint"],
                                      [cut, *params, labels]))
        step = builder.emit(relax.Call(callee["optimizer"],
                                       [relax.Tuple(params), relax.TupleGetItem(out, 1), relax.Tuple(states)]))
        new_params = builder.emit(relax.TupleGetItem(step, 0))
        new_states = builder.emit(relax.TupleGetItem(step, 1))
        builder.emit_func_output(relax.Tuple(
            [relax.TupleGetItem(relax.TupleGetItem(out, 0), LOSS)]
            + [relax.TupleGetItem(new_params, i) for i in range(len(params))]
            + [relax.TupleGetItem(new_states, i) for i in range(len(states))]))
    return builder.get().with_attrs(mod.attrs)


def _keep_only(mod: tvm.IRModule, *entries: str) -> tvm.IRModule:
    """The functions reachable from `entries`, the others made private and removed."""
    out = tvm.IRModule(attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function) and gvar.name_hint not in entries:
            func = func.without_attr("global_symbol")
        out[gvar] = func
    return relax.transform.DeadCodeElimination(list(entries))(out)
