"""Graph rewrites every module gets before it is tuned or scheduled, so both see the same kernels.

- batch_norm (in inference mode everywhere: the models train in eval mode) as elementwise ops,
  so it fuses into the convolution before it.
- One dataflow graph per entry point (the loss, its adjoint and the optimizer inlined into
  `update`), so Relax fuses across them: the weight gradient and its SGD step become one kernel.
- `x @ W.T` as one kernel reading W as stored: `linear` imports as matmul(x, permute_dims(W))
  with W a runtime input, and the transpose ran on every call.
- `A.T @ B` (every weight gradient Gradient emits for a linear layer) as one kernel reading A as
  stored: the transpose was a kernel and a pass over the logits' gradient of its own.
- `broadcast_to(ones) * x` (Gradient's unit seed times the cross-entropy's gradient) as x.
- exp, tanh, erf and log_softmax as TVM's fast approximations (relative error ~1e-7, within what
  verification allows): libm's scalar expf was half of the untuned nwp step after fusion.
"""
from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.relax import dpl
from tvm.relax.transform.fast_math import FastMathCodeGenerator


def prepare_graph(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` inlined into one dataflow graph per entry point, transposed matmuls fused, fast math."""
    return tvm.transform.Sequential([
        relax.transform.DecomposeOpsForInference(),  # batch_norm with its running statistics: fusable
        relax.transform.InlinePrivateFunctions(),
        relax.transform.DeadCodeElimination(),
        relax.transform.ConvertToDataflow(),
        relax.transform.FuseTransposeMatmul(),
        FuseTransposedLhsMatmul(),
        relax.transform.DeadCodeElimination(),
        DropUnitSeed(),
        FastMath(),
    ])(mod)


def _static_type(expr: relax.Expr) -> tuple | None:
    """(shape, dtype) of a tensor of static shape, else None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape), ty.dtype
    except TypeError:
        return None


@tvm.transform.module_pass(opt_level=0, name="AutLearnDropUnitSeed")
class DropUnitSeed:
    """`multiply(broadcast_to(ones(...)), x)` of x's own shape as x: a pass over the logits saved."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        x = dpl.wildcard()
        pattern = dpl.is_op("relax.multiply")(
            dpl.is_op("relax.broadcast_to")(dpl.is_op("relax.ones")(dpl.wildcard()), dpl.wildcard()), x)

        def rewrite(call: relax.Expr, matches: dict) -> relax.Expr:
            kept = matches[x]
            same = _static_type(kept) is not None and _static_type(kept) == _static_type(call)
            return kept if same else call

        out = tvm.IRModule(attrs=mod.attrs)
        for gvar, func in mod.functions.items():
            out[gvar] = dpl.rewrite_call(pattern, rewrite, func) if isinstance(func, relax.Function) else func
        return out


def _rewrite_functions(rewriter: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with every Relax function visited by `rewriter` (a mutator built on `mod`)."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def tn_matmul(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """A.T @ B for A [r, m] and B [r, n], reading A as stored."""
    r = te.reduce_axis((0, a.shape[0]), name="r")
    return te.compute((a.shape[1], b.shape[1]), lambda i, j: te.sum(a[r, i] * b[r, j], axis=r), name="TN_matmul")


@relax.expr_functor.mutator
class _TransposedLhs(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
            return call
        lhs, rhs = call.args
        bound = self.lookup_binding(lhs) if isinstance(lhs, relax.Var) else None
        if not (isinstance(bound, relax.Call) and isinstance(bound.op, tvm.ir.Op)
                and bound.op.name == "relax.permute_dims"):
            return call
        a = bound.args[0]
        shapes = [_static_type(e) for e in (a, rhs)]
        axes = bound.attrs.axes
        if any(t is None or len(t[0]) != 2 or t[1] != "float32" for t in shapes) or \
                (axes is not None and [int(v) for v in axes] != [1, 0]):
            return call
        return self.builder_.call_te(tn_matmul, a, rhs, primfunc_name_hint="TN_matmul")


@tvm.transform.module_pass(opt_level=0, name="AutLearnFuseTransposedLhsMatmul")
class FuseTransposedLhsMatmul:
    """matmul(permute_dims(A), B) of matrices as one `A.T @ B` kernel (FuseTransposeMatmul's
    counterpart for the left operand, which TVM lacks)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return _rewrite_functions(_TransposedLhs(mod), mod)


LANES = 8  # the vector width the default schedules use (compiler/schedules.py)


def fast_log_softmax(x: te.Tensor, axis: int) -> te.Tensor:
    """log_softmax with the fast exponential. Over the last axis of a matrix (every classifier's
    loss), each reduction is written as LANES partial results over the classes that fill whole
    vectors, plus the few left over: 10,002 classes do not divide into vectors, and a vectorised
    loop with a tail predicate read past the row when it was tried."""
    axis = axis % len(x.shape)
    if len(x.shape) != 2 or axis != 1 or int(x.shape[1]) < LANES:
        return _log_softmax_any_axis(x, axis)
    top = lane_reduce(x.shape, lambda r, j: x[r, j], te.max, "T_softmax_maxelem")
    exps = topi.fast_exp(te.compute(x.shape, lambda r, j: x[r, j] - top[r], name="T_shifted"))
    total = lane_reduce(x.shape, lambda r, j: exps[r, j], te.sum, "T_expsum")
    return te.compute(x.shape, lambda r, j: x[r, j] - top[r] - te.log(total[r]), name="T_log_softmax",
                      attrs={"axis": axis})


def lane_reduce(shape: tuple, values, combine, name: str) -> te.Tensor:
    """combine(values(r, j)) over j of a [rows, n] matrix: LANES partial results over the columns
    that fill whole vectors, then the few left over."""
    rows, n = shape
    body, tail = int(n) // LANES * LANES, int(n) % LANES
    if not body:
        j = te.reduce_axis((0, n), name="j")
        return te.compute((rows,), lambda r: combine(values(r, j), axis=j), name=name)
    k = te.reduce_axis((0, body // LANES), name="k")
    partial = te.compute((rows, LANES), lambda r, lane: combine(values(r, k * LANES + lane), axis=k),
                         name=f"{name}_lanes")
    lane = te.reduce_axis((0, LANES), name="lane")
    whole = te.compute((rows,), lambda r: combine(partial[r, lane], axis=lane), name=name)
    if not tail:
        return whole
    t = te.reduce_axis((0, tail), name="t")
    rest = te.compute((rows,), lambda r: combine(values(r, body + t), axis=t), name=f"{name}_tail")
    joined = tvm.tirx.max if combine is te.max else (lambda a, b: a + b)
    return te.compute((rows,), lambda r: joined(whole[r], rest[r]), name=f"{name}_all")


def _log_softmax_any_axis(x: te.Tensor, axis: int) -> te.Tensor:
    """log_softmax as topi computes it, with the fast exponential."""
    k = te.reduce_axis((0, x.shape[axis]), name="k")
    reduced = [d for i, d in enumerate(x.shape) if i != axis]

    def at(indices, index):
        return (*indices[:axis], index, *indices[axis:])

    def keep(indices):
        return (*indices[:axis], *indices[axis + 1:])

    top = te.compute(reduced, lambda *i: te.max(x[at(i, k)], axis=k), name="T_softmax_maxelem")
    exps = topi.fast_exp(te.compute(x.shape, lambda *i: x[i] - top[keep(i)], name="T_shifted"))
    k2 = te.reduce_axis((0, x.shape[axis]), name="k")
    total = te.compute(reduced, lambda *i: te.sum(exps[at(i, k2)], axis=k2), name="T_expsum")
    return te.compute(x.shape, lambda *i: x[i] - top[keep(i)] - te.log(total[keep(i)]),
                      name="T_log_softmax", attrs={"axis": axis})


@relax.expr_functor.mutator
class _FastMath(FastMathCodeGenerator._cls):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.log_softmax":
            return self.builder_.call_te(fast_log_softmax, self.visit_expr(call.args[0]), int(call.attrs.axis))
        if isinstance(call.op, tvm.ir.Op):
            return super().visit_call_(call)
        return relax.PyExprMutator.visit_call_(self, call)


@tvm.transform.module_pass(opt_level=0, name="AutLearnFastMath")
class FastMath:
    """TVM's FastMathTransform, plus log_softmax (the classes' exponentials of the loss)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return _rewrite_functions(_FastMath(mod), mod)
