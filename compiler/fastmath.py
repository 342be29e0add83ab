"""exp, tanh and sigmoid as TIR polynomials, so the loops that use them vectorise.

LLVM has no vector libm here: a `T.exp` in a vector loop becomes one scalar libm call per lane.
These are the approximations TVM's topi uses (fast_exp, fast_tanh), written as TIR expressions
for hand-scheduled kernels (compiler/lstm.py, compiler/cross_entropy.py).
"""
from __future__ import annotations

from tvm import tirx

# Eigen's rational approximation of tanh on [-9, 9] (TVM's fast_tanh), float32-exact there.
TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
          -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
# topi's fast_exp: exp(x) = 2^n exp(f), n = round(x / ln 2), exp(f) by this polynomial on |f| <= ln 2 / 2.
EXP_P = (5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3, 1.3981999507e-3, 1.9875691500e-4)
EXP_RANGE = (-88.3762626647949, 88.3762626647950)  # beyond, float32's exp under- or overflows
LOG2E, LN2 = 1.44269504088896341, 0.6931471805599453


def f32(value: float) -> tirx.PrimExpr:
    return tirx.const(value, "float32")


def _horner(x: tirx.PrimExpr, coefficients: tuple[float, ...]) -> tirx.PrimExpr:
    out = f32(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * x + f32(c)
    return out


def fast_tanh(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """tanh as a polynomial ratio."""
    x = tirx.max(tirx.min(value, f32(9.0)), f32(-9.0))
    return x * _horner(x * x, TANH_P) / _horner(x * x, TANH_Q)


def fast_sigmoid(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """sigmoid(x) = (1 + tanh(x / 2)) / 2, exactly."""
    return f32(0.5) * fast_tanh(f32(0.5) * x) + f32(0.5)


def fast_exp(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """exp as topi's fast_exp computes it (relative error about 1e-7 in float32's range)."""
    x = tirx.max(tirx.min(value, f32(EXP_RANGE[1])), f32(EXP_RANGE[0]))
    n = tirx.floor(x * f32(LOG2E) + f32(0.5))
    f = x - n * f32(LN2)
    poly = _horner(f, EXP_P) * f * f + f + f32(1.0)
    two_n = tirx.reinterpret("float32", tirx.Cast("int32", n + f32(127.0)) << 23)
    return tirx.max(two_n * poly, value)
