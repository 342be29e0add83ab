"""Gradients the compiler registers (compiler/gradients.py), and TVM's grouped conv2d gradient.

Each op is differentiated by TVM's Gradient pass, compiled, and compared with torch.autograd
and with central finite differences of the compiled forward, in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch.nn import functional as F
from tvm import relax

import compiler.gradients  # noqa: F401  (registers the gradients under test)
from compiler.targets import resolve_target

RNG = np.random.default_rng(7)
FD_STEP = 1e-6
FD_POINTS = 6


def compiled_loss_and_grads(build, inputs: list[np.ndarray], wrt: list[int], weight: np.ndarray):
    """Compiles loss = sum(build(*inputs) * weight) and its adjoint; returns (loss_fn, grads)."""
    bb = relax.BlockBuilder()
    args = [relax.Var(f"a{i}", relax.TensorType(v.shape, str(v.dtype))) for i, v in enumerate(inputs)]
    with bb.function("f", args):
        with bb.dataflow():
            y = bb.emit(build(*args))
            if isinstance(y.ty, relax.TupleType):
                y = bb.emit(relax.TupleGetItem(y, 0))
            loss = bb.emit_output(relax.op.sum(relax.op.multiply(y, relax.const(weight, str(weight.dtype)))))
        bb.emit_func_output(loss)
    mod = relax.transform.Gradient("f", require_grads=[args[i] for i in wrt])(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, target=resolve_target("host").tvm_target()), tvm.cpu())

    def loss_fn(values: list[np.ndarray]) -> float:
        return float(vm["f"](*[tvm.runtime.tensor(v) for v in values]).numpy())

    _, grads = vm["f_adjoint"](*[tvm.runtime.tensor(v) for v in inputs])
    return loss_fn, [g.numpy() for g in grads]


def torch_grads(fn, inputs: list[np.ndarray], wrt: list[int], weight: np.ndarray) -> list[np.ndarray]:
    tensors = [torch.tensor(v, requires_grad=(i in wrt)) for i, v in enumerate(inputs)]
    (fn(*tensors) * torch.from_numpy(weight)).sum().backward()
    return [tensors[i].grad.numpy() for i in wrt]


def finite_difference_check(loss_fn, inputs: list[np.ndarray], wrt: list[int], grads: list[np.ndarray]) -> None:
    """Central differences at a few random coordinates of each differentiated input."""
    for i, grad in zip(wrt, grads):
        for flat in RNG.choice(inputs[i].size, size=min(FD_POINTS, inputs[i].size), replace=False):
            plus = [v.copy() for v in inputs]
            minus = [v.copy() for v in inputs]
            plus[i].flat[flat] += FD_STEP
            minus[i].flat[flat] -= FD_STEP
            numeric = (loss_fn(plus) - loss_fn(minus)) / (2 * FD_STEP)
            assert numeric == pytest.approx(grad.flat[flat], rel=1e-4, abs=1e-6), (i, flat)


def check_op(build, torch_fn, inputs: list[np.ndarray], wrt: list[int]) -> None:
    with torch.no_grad():
        out_shape = torch_fn(*[torch.from_numpy(v) for v in inputs]).shape
    weight = RNG.standard_normal(tuple(out_shape))
    loss_fn, grads = compiled_loss_and_grads(build, inputs, wrt, weight)
    for got, want in zip(grads, torch_grads(torch_fn, inputs, wrt, weight)):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    assert any(np.abs(g).max() > 0 for g in grads)
    finite_difference_check(loss_fn, inputs, wrt, grads)


def test_clip_relu6_gradient():
    x = RNG.uniform(-3, 9, size=(3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kinks, where finite differences are undefined
    x[np.abs(x - 6) < 1e-3] = 5.5
    check_op(lambda a: relax.op.clip(a, 0.0, 6.0), F.relu6, [x], [0])


def test_batch_norm_inference_gradient():
    x = RNG.standard_normal((4, 3, 2, 5))
    gamma, beta = RNG.standard_normal(3), RNG.standard_normal(3)
    mean, var = RNG.standard_normal(3), RNG.uniform(0.5, 2.0, 3)
    check_op(lambda a, g, b, m, v: relax.op.nn.batch_norm(a, g, b, m, v, axis=1, epsilon=1e-5, training=False),
             lambda a, g, b, m, v: F.batch_norm(a, m, v, g, b, training=False, eps=1e-5),
             [x, gamma, beta, mean, var], [0, 1, 2])


@pytest.mark.parametrize("output_size", [(1, 1), (2, 3)])
def test_adaptive_avg_pool2d_gradient(output_size):
    x = RNG.standard_normal((2, 3, 5, 7))  # 5x7 -> 2x3: overlapping, unequal windows
    check_op(lambda a: relax.op.nn.adaptive_avg_pool2d(a, output_size),
             lambda a: F.adaptive_avg_pool2d(a, output_size), [x], [0])


def test_strided_slice_gradient():
    x = RNG.standard_normal((5, 3, 6))
    check_op(lambda a: relax.op.strided_slice(a, axes=[0, 2], begin=[1, 0], end=[5, 5], strides=[2, 2]),
             lambda a: a[1:5:2, :, 0:5:2], [x], [0])


def test_take_gradient_embedding_indices():
    table = RNG.standard_normal((7, 3))
    tokens = np.array([[0, 3, 3], [6, 1, 0]], dtype="int64")  # 2-D ids, repeated ids accumulate
    check_op(lambda w, t: relax.op.take(w, t, axis=0), lambda w, t: F.embedding(t, w), [table, tokens], [0])


def test_take_gradient_scalar_index():
    x = RNG.standard_normal((2, 4, 3))  # LastStep: x[:, 3] imports as take with a 0-d index
    check_op(lambda a: relax.op.take(a, relax.const(np.array(3, "int64"), "int64"), axis=1),
             lambda a: a[:, 3], [x], [0])


def test_squeeze_gradient():
    x = RNG.standard_normal((2, 1, 3))
    check_op(lambda a: relax.op.squeeze(a, axis=[1]), lambda a: a.squeeze(1), [x], [0])


@pytest.mark.parametrize("groups", [2, 4])  # grouped, and depthwise (groups == channels)
def test_grouped_conv2d_gradient(groups):
    x = RNG.standard_normal((2, 4, 6, 6))
    w = RNG.standard_normal((4, 4 // groups, 3, 3))
    check_op(lambda a, k: relax.op.nn.conv2d(a, k, strides=2, padding=1, groups=groups),
             lambda a, k: F.conv2d(a, k, stride=2, padding=1, groups=groups), [x, w], [0, 1])
