"""Gradients TVM 0.27 lacks, registered so that every cut of both models can train.

Importing this module registers them (`tvm.relax.op.base.register_gradient`): clip (ReLU6),
batch_norm, adaptive_avg_pool2d, strided_slice and squeeze (the LSTM import), and take for
indices of any rank (embedding look-ups, the LSTM's last step). Grouped and depthwise conv2d
keep TVM's own gradient, which tests/test_compiler_gradients.py checks. Each follows
PyTorch's backward: ReLU6 (`clip`) passes the gradient strictly inside (min, max) like
`hardtanh_backward`; `batch_norm` is in inference mode (running statistics are constants, as
in `model.eval()`). Shapes must be static, which the compiler's exports always are.
"""
from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import PrimType
from tvm.relax.op import (
    add, divide, greater, less, logical_and, matmul, multiply, reshape, sqrt, subtract, where, zeros,
)
from tvm.relax.op.base import register_gradient
from tvm.relax.op.grad import no_grad, take_backward
from tvm.relax.op.statistical import sum as reduce_sum

# Above the level of TVM's own registrations (10), so a corrected gradient replaces TVM's.
OVERRIDE_LEVEL = 11


def _shape(expr: relax.Expr) -> list[int]:
    shape = expr.ty.shape
    if shape is None:
        raise ValueError(f"gradient needs a static shape, got {expr.ty}")
    return [int(d) for d in shape]


def _dtype(expr: relax.Expr) -> str:
    dtype = expr.ty.dtype
    return dtype.dtype if isinstance(dtype, PrimType) else str(dtype)


def _ints(expr: relax.Expr) -> list[int]:
    """The integers of a Tuple of PrimValues or a ShapeExpr argument."""
    if isinstance(expr, relax.ShapeExpr):
        return [int(v) for v in expr.values]
    return [int(field.value) for field in expr.fields]


@register_gradient("relax.take", level=OVERRIDE_LEVEL)
def take_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """y = take(x, idx, axis) for indices of any rank (TVM's handles 1-D only): dx scatters dy.

    Covers embedding look-ups (2-D token ids) and the 0-d index of the last LSTM step.
    """
    x, indices = orig_call.args
    axis = orig_call.attrs.axis
    idx_shape = _shape(indices)
    if len(idx_shape) == 1:
        return [take_backward(output_grad, x, indices, axis), no_grad(indices)]
    count = int(np.prod(idx_shape))
    if axis is None:
        grad_shape = [count]
    else:
        axis = int(axis) % len(_shape(x))
        grad_shape = _shape(x)[:axis] + [count] + _shape(x)[axis + 1:]
    flat_grad = take_backward(reshape(output_grad, grad_shape), x, reshape(indices, [count]), axis)
    return [flat_grad, no_grad(indices)]


@register_gradient("relax.clip")
def clip_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """y = clip(x, lo, hi): dx = dy where lo < x < hi, else 0 (ReLU6 is clip(x, 0, 6))."""
    x, lo, hi = orig_call.args
    dtype = _dtype(x)
    inside = logical_and(greater(x, relax.const(float(lo.value), dtype)),
                         less(x, relax.const(float(hi.value), dtype)))
    return [where(inside, output_grad, relax.const(0, dtype)), no_grad(lo), no_grad(hi)]


@register_gradient("relax.squeeze")
def squeeze_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """y = squeeze(x): dx = reshape(dy, x.shape)."""
    return [reshape(output_grad, _shape(orig_call.args[0]))]


@register_gradient("relax.strided_slice")
def strided_slice_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """y = x[slices]: dx scatters dy back; one `take_backward` per sliced axis, last axis first."""
    x, axes, begin, end, *rest = orig_call.args
    shape = _shape(x)
    strides = _ints(rest[0]) if rest else [1] * len(_ints(axes))
    picks = []  # (axis, indices, shape of the tensor that axis is sliced from)
    current = list(shape)
    for axis, b, e, s in zip(_ints(axes), _ints(begin), _ints(end), strides):
        axis = axis % len(shape)
        idx = np.arange(*slice(b, e, s).indices(current[axis]), dtype="int64")
        picks.append((axis, idx, tuple(current)))
        current[axis] = len(idx)
    grad = output_grad
    for axis, idx, source_shape in reversed(picks):
        if len(idx) == source_shape[axis] and (idx == np.arange(len(idx))).all():
            continue  # the whole axis: nothing to scatter
        grad = take_backward(grad, zeros(source_shape, _dtype(x)), relax.const(idx, "int64"), axis)
    return [grad] + [no_grad(arg) for arg in orig_call.args[1:]]


def _adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] averaging weights of adaptive pooling along one axis (PyTorch's windows)."""
    weights = np.zeros((out_size, in_size), "float32")
    for i in range(out_size):
        start = (i * in_size) // out_size
        stop = -((-(i + 1) * in_size) // out_size)
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights


@register_gradient("relax.nn.adaptive_avg_pool2d")
def adaptive_avg_pool2d_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """y = Ph x Pw^T per channel (separable windows): dx = Ph^T dy Pw, NCHW only."""
    attrs = orig_call.attrs
    if attrs.layout != "NCHW" or (attrs.out_layout or "NCHW") != "NCHW":
        raise ValueError(f"adaptive_avg_pool2d gradient supports NCHW only, got {attrs.layout}")
    x = orig_call.args[0]
    _, _, height, width = _shape(x)
    _, _, out_h, out_w = _shape(orig_var)
    dtype = _dtype(x)
    rows = relax.const(_adaptive_pool_matrix(height, out_h).T.astype(dtype), dtype)
    cols = relax.const(_adaptive_pool_matrix(width, out_w).astype(dtype), dtype)
    return [matmul(rows, matmul(output_grad, cols))]


@register_gradient("relax.nn.batch_norm")
def batch_norm_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """Inference mode, y = (x - mean) * gamma / sqrt(var + eps) + beta along `axis`.

    dx = dy * gamma / sqrt(var + eps); dgamma = sum(dy * xhat); dbeta = sum(dy); the running
    statistics get no gradient. `output_grad` is the tuple (dy, dmean, dvar) of the op's outputs.
    """
    attrs = orig_call.attrs
    if attrs.training:
        raise ValueError("batch_norm gradient is for inference mode (model.eval()) only")
    x, gamma, beta, mean, var = orig_call.args
    dy = relax.TupleGetItem(output_grad, 0) if isinstance(output_grad.ty, relax.TupleType) \
        else output_grad
    ndim = len(_shape(x))
    axis = int(attrs.axis) % ndim
    other_axes = [a for a in range(ndim) if a != axis]

    def along_axis(v: relax.Expr) -> relax.Expr:  # [C] -> broadcastable to x
        return reshape(v, [(_shape(x)[axis] if a == axis else 1) for a in range(ndim)])

    inv_std = divide(relax.const(1.0, _dtype(x)), sqrt(add(var, relax.const(float(attrs.epsilon), _dtype(x)))))
    x_grad = multiply(dy, along_axis(multiply(gamma, inv_std)))
    x_hat = multiply(subtract(x, along_axis(mean)), along_axis(inv_std))
    gamma_grad = reduce_sum(multiply(dy, x_hat), other_axes)
    beta_grad = reduce_sum(dy, other_axes)
    return [x_grad, gamma_grad, beta_grad, no_grad(mean), no_grad(var)]
