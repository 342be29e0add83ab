"""Mean cross-entropy whose gradient over the logits is one kernel.

Relax's Gradient of nll_loss(log_softmax(z)) makes six passes over the [batch, classes] logits
(log_softmax, the one-hot NLL gradient, its row sums, the log_softmax gradient with its
exponentials, a transpose): at nwp's 10,002 classes about 0.4 ms of every step, whatever the size
of the model before it. Here one kernel takes the row maxima and exponential sums once and writes
both dz = (softmax(z) - one_hot(labels)) / batch and each row's logsumexp, from which the loss is
mean(logsumexp - z[label]). The backbone's backward stays Relax's: Gradient differentiates the
surrogate sum(z * no_grad(dz)), whose gradient over z is dz; the true loss rides along as a second
output no gradient is taken of.
"""
from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.relax.op.base import register_gradient
from tvm.relax.op.grad import no_grad

from compiler.graph import lane_reduce


def softmax_cross_entropy(z: te.Tensor, labels: te.Tensor) -> list[te.Tensor]:
    """[dz (the mean loss's gradient over z), each row's logsumexp] for logits z [rows, classes].

    dz is written from the logsumexp (exp(z - lse) = softmax), so every stage is a producer of
    dz and the default schedule computes them all row by row (compiler/schedules.py)."""
    rows = int(z.shape[0])
    top = lane_reduce(z.shape, lambda r, j: z[r, j], te.max, "ce_max")
    exps = topi.fast_exp(te.compute(z.shape, lambda r, j: z[r, j] - top[r], name="ce_shifted"))
    total = lane_reduce(z.shape, lambda r, j: exps[r, j], te.sum, "ce_expsum")
    lse = te.compute((rows,), lambda r: top[r] + te.log(total[r]), name="ce_logsumexp")
    probs = topi.fast_exp(te.compute(z.shape, lambda r, j: z[r, j] - lse[r], name="ce_centred"))
    scale, one, zero = (tvm.tirx.const(v, "float32") for v in (1.0 / rows, 1.0, 0.0))
    grad = te.compute(z.shape, lambda r, j: (probs[r, j] - tvm.tirx.Select(
        j.astype("int64") == labels[r], one, zero)) * scale, name="ce_grad")
    return [grad, lse]


def mean_loss(z: te.Tensor, labels: te.Tensor, lse: te.Tensor) -> te.Tensor:
    """mean(logsumexp - z[label]) over the rows."""
    rows = int(z.shape[0])
    k = te.reduce_axis((0, rows), name="k")
    summed = te.compute((), lambda: te.sum(lse[k] - z[k, labels[k]], axis=k), name="ce_sum")
    return te.compute((), lambda: summed() * tvm.tirx.const(1.0 / rows, "float32"), name="ce_loss")


def emit_cross_entropy(bb: relax.BlockBuilder, logits: relax.Expr, labels: relax.Expr) -> tuple[relax.Var, relax.Var]:
    """(surrogate whose gradient over `logits` is the mean cross-entropy's, the mean loss itself)."""
    out = bb.emit_te(softmax_cross_entropy, logits, labels, primfunc_name_hint="softmax_cross_entropy")
    dz = bb.emit(no_grad(bb.emit(relax.TupleGetItem(out, 0))))
    lse = bb.emit(relax.TupleGetItem(out, 1))
    loss = bb.emit(no_grad(bb.emit_te(mean_loss, logits, labels, lse, primfunc_name_hint="cross_entropy_mean")))
    return bb.emit(relax.op.sum(relax.op.multiply(logits, dz))), loss


@register_gradient("relax.grad.no_grad")
def _no_grad_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """no_grad's input gets no gradient: TVM 0.27 has the op but registers no gradient for it."""
    return [no_grad(orig_call.args[0])]
