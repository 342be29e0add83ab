"""Mean cross-entropy whose gradient over the logits is one kernel.

Relax's Gradient of nll_loss(log_softmax(z)) makes six passes over the [batch, classes] logits
(log_softmax, the one-hot NLL gradient, its row sums, the log_softmax gradient with its
exponentials, a transpose): at nwp's 10,002 classes about 0.4 ms of every step, whatever the size
of the model before it. Here one hand-scheduled kernel takes each row (rows in parallel where
the logits are work enough to pay for the thread pool, schedules.PARALLEL_MIN_WORK) through three
vectorised passes: its maximum; its exponentials, written into dz's row as they are summed;
that row scaled into dz = (softmax(z) - one_hot(labels)) / batch. Each element gets one
exponential (the costly part; a TE version inlined it into both its readers). The kernel also
writes each row's logsumexp, from which the loss is mean(logsumexp - z[label]).
The backbone's backward stays Relax's: Gradient differentiates the surrogate
sum(z * no_grad(dz)), whose gradient over z is dz; the true loss rides along as a second output
no gradient is taken of.
"""
from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax.op.base import register_gradient
from tvm.relax.op.grad import no_grad

from tvm.script import tirx as T

from compiler.fastmath import fast_exp
from compiler.schedules import PARALLEL_MIN_WORK

# 16 lanes: one AVX-512 register, or two AVX2 (four NEON) whose exponentials run as independent
# chains. Measured against 8 (10,002 classes, 16 rows, 1 thread): 0.096 against 0.063 ms on
# AVX-512, 0.145 against 0.115 ms built for AVX2 (haswell) on the same machine.
LANES = 16


def cross_entropy_kernel(rows: int, classes: int) -> tvm.tirx.PrimFunc:
    """(z [rows, classes], labels [rows]) -> (dz, the mean loss's gradient over z; each row's
    logsumexp). A label outside 0..classes-1 adds no one-hot (callers check labels first).

    Lane values stay in buffers, never in a `let` (compiler/lstm.py: TVM 0.27 vectorises those wrongly).
    """
    body = classes // LANES * LANES
    vectors, scale = body // LANES, 1.0 / rows
    row_loop = T.parallel if rows * classes >= PARALLEL_MIN_WORK else T.serial

    @T.prim_func(private=True)
    def softmax_cross_entropy(z: T.Buffer((rows, classes), "float32"), labels: T.Buffer((rows,), "int64"),
                              dz: T.Buffer((rows, classes), "float32"), lse: T.Buffer((rows,), "float32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        for r in row_loop(rows):
            acc = T.alloc_buffer((LANES,), "float32", scope="local")
            top = T.alloc_buffer((1,), "float32", scope="local")
            total = T.alloc_buffer((1,), "float32", scope="local")
            for lane in T.vectorized(LANES):
                acc[lane] = T.min_value("float32")
            for k in range(vectors):
                for lane in T.vectorized(LANES):
                    acc[lane] = T.max(acc[lane], z[r, k * LANES + lane])
            top[0] = T.min_value("float32")
            for lane in range(LANES):
                top[0] = T.max(top[0], acc[lane])
            for j in range(body, classes):
                top[0] = T.max(top[0], z[r, j])
            for lane in T.vectorized(LANES):
                acc[lane] = T.float32(0)
            for k in range(vectors):
                for lane in T.vectorized(LANES):
                    dz[r, k * LANES + lane] = fast_exp(z[r, k * LANES + lane] - top[0])
                    acc[lane] = acc[lane] + dz[r, k * LANES + lane]
            total[0] = T.float32(0)
            for lane in range(LANES):
                total[0] = total[0] + acc[lane]
            for j in range(body, classes):
                dz[r, j] = fast_exp(z[r, j] - top[0])
                total[0] = total[0] + dz[r, j]
            lse[r] = top[0] + T.log(total[0])
            total[0] = T.float32(scale) / total[0]
            for k in range(vectors):
                for lane in T.vectorized(LANES):
                    dz[r, k * LANES + lane] = dz[r, k * LANES + lane] * total[0]
            for j in range(body, classes):
                dz[r, j] = dz[r, j] * total[0]
            if 0 <= labels[r] and labels[r] < classes:
                dz[r, labels[r]] = dz[r, labels[r]] - T.float32(scale)

    return softmax_cross_entropy


def mean_loss(z: te.Tensor, labels: te.Tensor, lse: te.Tensor) -> te.Tensor:
    """mean(logsumexp - z[label]) over the rows."""
    rows = int(z.shape[0])
    k = te.reduce_axis((0, rows), name="k")
    summed = te.compute((), lambda: te.sum(lse[k] - z[k, labels[k]], axis=k), name="ce_sum")
    return te.compute((), lambda: summed() * tvm.tirx.const(1.0 / rows, "float32"), name="ce_loss")


def emit_cross_entropy(bb: relax.BlockBuilder, logits: relax.Expr, labels: relax.Expr) -> tuple[relax.Var, relax.Var]:
    """(surrogate whose gradient over `logits` is the mean cross-entropy's, the mean loss itself)."""
    rows, classes = (int(d) for d in logits.ty.shape)
    kernel = bb.add_func(cross_entropy_kernel(rows, classes), "softmax_cross_entropy")
    out = bb.emit(relax.call_tir(kernel, [logits, labels], [relax.TensorType((rows, classes), "float32"),
                                                           relax.TensorType((rows,), "float32")]))
    dz = bb.emit(no_grad(bb.emit(relax.TupleGetItem(out, 0))))
    lse = bb.emit(relax.TupleGetItem(out, 1))
    loss = bb.emit(no_grad(bb.emit_te(mean_loss, logits, labels, lse, primfunc_name_hint="cross_entropy_mean")))
    return bb.emit(relax.op.sum(relax.op.multiply(logits, dz))), loss


@register_gradient("relax.grad.no_grad")
def _no_grad_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """no_grad's input gets no gradient: TVM 0.27 has the op but registers no gradient for it."""
    return [no_grad(orig_call.args[0])]
