"""PyTorch -> Relax, with the import bugs of TVM 0.27 normalised.

A staged model is imported as a chain of its stages, so every parameter keeps the name it has
in the model's `state_dict` (e.g. `features.3.conv.0.weight`) whichever stages are exported.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax
from tvm.relax.frontend import detach_params
from tvm.relax.frontend.torch import from_exported_program


class StageChain(nn.Module):
    """Named stages run in order; with `cut_index`, also returns the input of that stage."""

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], cut_index: int | None = None) -> None:
        super().__init__()
        self.stage_names = [name for name, _ in stages]
        for i, (_, module) in enumerate(stages):
            self.add_module(f"s{i}", module)
        self.cut_index = cut_index

    def forward(self, x: torch.Tensor):
        cut = x
        for i in range(len(self.stage_names)):
            if i == self.cut_index:
                cut = x
            x = getattr(self, f"s{i}")(x)
        return x if self.cut_index is None else (x, cut)

    def model_name(self, chain_name: str) -> str:
        """`s3.conv.0.weight` -> `features.3.conv.0.weight` (the name in the model)."""
        head, _, rest = chain_name.partition(".")
        return f"{self.stage_names[int(head[1:])]}.{rest}"

    def chain_name(self, model_name: str) -> str:
        """The inverse of `model_name`."""
        for i, stage in enumerate(self.stage_names):
            if model_name.startswith(stage + "."):
                return f"s{i}.{model_name[len(stage) + 1:]}"
        raise KeyError(f"{model_name!r} belongs to none of the stages {self.stage_names}")


@dataclasses.dataclass
class ImportedFunction:
    """A Relax module whose `main` takes `(*inputs, *params)`; params named as in the model.

    Only parameters are params: buffers (batch-norm running statistics) are imported as constants.
    """

    mod: tvm.IRModule
    num_inputs: int
    param_names: list[str]
    param_values: dict[str, np.ndarray]

    def reorder_params(self, names: Sequence[str]) -> "ImportedFunction":
        """The same function with its params in the order `names` (which must be a permutation)."""
        if sorted(names) != sorted(self.param_names):
            raise ValueError(f"param order {list(names)} is not a permutation of {self.param_names}")
        func = self.mod["main"]
        inputs = list(func.params[: self.num_inputs])
        by_name = dict(zip(self.param_names, func.params[self.num_inputs:]))
        new = relax.Function(inputs + [by_name[n] for n in names], func.body, func.ret_ty, func.is_pure, func.attrs)
        mod = tvm.IRModule({gvar: f for gvar, f in self.mod.functions.items() if gvar.name_hint != "main"})
        mod["main"] = new  # helper PrimFuncs (the ONNX importer emits some) are kept
        return dataclasses.replace(self, mod=mod, param_names=list(names))


def import_stages(stages: Sequence[tuple[str, nn.Module]], example: torch.Tensor,
                  cut_index: int | None = None) -> ImportedFunction:
    """Exports `stages` (with the cut activation as second output when `cut_index` is set)."""
    chain = StageChain(stages, cut_index).eval()
    with torch.no_grad():
        program = torch.export.export(chain, (example,))
    mod = from_exported_program(program, keep_params_as_input=True, unwrap_unit_return_tuple=True)
    mod, _ = detach_params(mod)
    mod = normalize_negative_take(mod)
    targets = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
               if spec.target is not None}
    state = chain.state_dict(keep_vars=False)
    func = mod["main"]
    num_inputs = int(func.attrs["num_input"])
    names = []
    for var in func.params[num_inputs:]:
        if var.name not in targets:
            raise RuntimeError(f"imported parameter {var.name!r} has no source tensor in the model")
        names.append(chain.model_name(targets[var.name]))
    values = {chain.model_name(k): v.detach().cpu().numpy().copy() for k, v in state.items()}
    return ImportedFunction(mod, num_inputs, names, {n: values[n] for n in names})


@relax.expr_functor.mutator
class _NegativeTakeIndex(relax.PyExprMutator):
    """`take(x, const(-k), axis)` -> `take(x, const(n - k), axis)` for a static axis length n."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.take"):
            return call
        data, indices = call.args
        if not isinstance(indices, tvm.ir.expr.GenericConst):
            return call
        idx = indices.value.numpy()
        if not (idx < 0).any():
            return call
        axis = int(call.attrs.axis) if call.attrs.axis is not None else None
        shape = data.ty.shape
        if axis is None or shape is None:
            raise ValueError("take with a negative index needs a static axis to normalise it")
        try:
            length = int(shape[axis])
        except TypeError as err:
            raise ValueError(f"take with a negative index on a dynamic axis ({shape[axis]}) "
                             "cannot be normalised") from err
        fixed = np.where(idx < 0, idx + length, idx).astype(idx.dtype)
        return relax.op.take(data, relax.const(fixed, str(idx.dtype)), axis=axis, mode=call.attrs.mode)


def normalize_negative_take(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrites constant negative `take` indices, which TVM's `mode="fast"` reads out of bounds."""
    out = tvm.IRModule(attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            func = _NegativeTakeIndex().visit_expr(func)
        out[gvar] = func
    return out


@relax.expr_functor.mutator
class _RenameGlobals(relax.PyExprMutator):
    """References to global functions redirected by name."""

    def __init__(self, mapping: dict[str, tvm.ir.GlobalVar]) -> None:
        super().__init__()
        self.mapping = mapping

    def visit_global_var_(self, op: tvm.ir.GlobalVar) -> relax.Expr:
        return self.mapping.get(op.name_hint, op)


def merge_mains(named: dict[str, tvm.IRModule]) -> tvm.IRModule:
    """One module holding each module's `main` under its new name; the helper functions they
    call are added apart (identical ones shared) and renamed where names clash."""
    builder = relax.BlockBuilder()
    for name, mod in named.items():
        helpers = {gvar.name_hint: builder.add_func(func, gvar.name_hint)
                   for gvar, func in mod.functions.items() if gvar.name_hint != "main"}
        main = _RenameGlobals(helpers).visit_expr(mod["main"]) if helpers else mod["main"]
        builder.add_func(main.with_attr("global_symbol", name), name)
    return builder.get()
