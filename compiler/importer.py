"""PyTorch -> Relax, with the import bugs of TVM 0.27 normalised.

Every parameter keeps the name it has in the model's `state_dict` (e.g. `layer4.1.conv2.weight`),
which is how the manifest, the bundle's .npz files and `--trainable` name it.
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

from compiler import lstm
from compiler.split import inference_mode


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


def import_module(module: nn.Module, example: torch.Tensor, differentiable: bool = False) -> ImportedFunction:
    """Exports `module` for `example`'s shape; params keep the names of `module.state_dict()`.

    A function no gradient is taken of gets the fused LSTM (compiler/lstm.py)."""
    with torch.no_grad():
        program = torch.export.export(inference_mode(module), (example,))
    if differentiable:
        mod = from_exported_program(program, keep_params_as_input=True, unwrap_unit_return_tuple=True)
    else:
        mod = from_exported_program(program.run_decompositions(lstm.keep_lstm_decompositions()),
                                    keep_params_as_input=True, unwrap_unit_return_tuple=True,
                                    custom_convert_map=lstm.CONVERTERS, run_ep_decomposition=False)
    mod, _ = detach_params(mod)
    mod = normalize_negative_take(mod)
    targets = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
               if spec.target is not None}
    state = module.state_dict(keep_vars=False)
    func = mod["main"]
    num_inputs = int(func.attrs["num_input"])
    names = []
    for var in func.params[num_inputs:]:
        if var.name not in targets:
            raise RuntimeError(f"imported parameter {var.name!r} has no source tensor in the model")
        names.append(targets[var.name])
    return ImportedFunction(mod, num_inputs, names, {n: state[n].detach().cpu().numpy().copy() for n in names})


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
