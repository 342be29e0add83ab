"""Checks on what reaches a compiled module: a bad input must fail here, not inside TVM.

An out-of-range token id makes TVM's `take` read out of bounds (a segfault, TVM_NOTES), and
a NaN input or update silently poisons the model, so every input and every update is checked.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_inputs(x: np.ndarray, *, dtype: str, shape: Sequence[int | None], num_tokens: int | None = None,
                 what: str = "input") -> np.ndarray:
    """Returns `x` when it matches the bundle's input spec; raises ValueError naming the mismatch.

    `shape` may hold None for free dimensions (the batch); `num_tokens` bounds token ids.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.dtype(dtype):
        raise ValueError(f"{what}: dtype {x.dtype} does not match the bundle's {dtype}")
    if x.ndim != len(shape) or any(want is not None and got != want for got, want in zip(x.shape, shape)):
        spec = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
        raise ValueError(f"{what}: shape {list(x.shape)} does not match the bundle's {spec}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{what}: {bad} non-finite value(s) (NaN or inf)")
    if num_tokens is not None and x.size:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= num_tokens:
            raise ValueError(f"{what}: token ids must lie in [0, {num_tokens - 1}], found {low}..{high}")
    return x


def check_labels(y: np.ndarray, num_classes: int, what: str = "labels") -> np.ndarray:
    """Returns `y` as int64 when every label is a class id in [0, num_classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected integer class ids, got dtype {y.dtype}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{what}: class ids must lie in [0, {num_classes - 1}], found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64, copy=False)


def is_finite(array: np.ndarray) -> bool:
    """No NaN or inf in `array`: one float64 sum, since NaN and inf propagate through it."""
    return bool(np.isfinite(np.sum(array, dtype=np.float64)))
