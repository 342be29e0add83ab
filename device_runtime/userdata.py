"""The user's own data on the device: an .npz with `x`, `y` (and optionally `test_x`, `test_y`,
and for token ids `vocab_sha256`, the vocabulary they index).

Already in model-input form (ARCHITECTURE.md, "Per-user data on the device"); every array is
checked against the bundle here, so training never meets a bad sample halfway through an epoch,
nor learns from ids of another vocabulary (in range, so no other check would see them).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from device_runtime.files import read_npz
from device_runtime.guards import check_labels
from device_runtime.manifest import is_sha256, sha256_file
from device_runtime.model import DeviceModel
from device_runtime.tokenizer import vocab_sha256


@dataclasses.dataclass
class UserData:
    """Training samples and, when the file has them, held-out test samples."""

    x: np.ndarray
    y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    sha256: str


def load_user_data(path: str | Path, model: DeviceModel) -> UserData:
    """Reads and checks a user's .npz against the bundle; errors name the file and the array."""
    path = Path(path)
    arrays = read_npz(path, "user data file")
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"user data {path} lacks the array {key!r} (has: {', '.join(sorted(arrays)) or 'none'})")
    if ("test_x" in arrays) != ("test_y" in arrays):
        raise ValueError(f"user data {path} must have both test_x and test_y or neither")
    if "vocab_sha256" in arrays:
        check_vocabulary(path, arrays["vocab_sha256"], model)
    pairs = [("x", "y")] + ([("test_x", "test_y")] if "test_x" in arrays else [])
    for xk, yk in pairs:
        model.check(arrays[xk], what=f"{path.name}:{xk}")
        arrays[yk] = check_labels(arrays[yk], model.manifest.num_classes, what=f"{path.name}:{yk}")
        if arrays[yk].shape != (len(arrays[xk]),):
            raise ValueError(f"{path.name}: {yk} has shape {list(arrays[yk].shape)}, expected [{len(arrays[xk])}]")
    return UserData(arrays["x"], arrays["y"], arrays.get("test_x"), arrays.get("test_y"), sha256_file(path))


def check_vocabulary(path: Path, recorded: np.ndarray, model: DeviceModel) -> None:
    """Refuses token ids made with a vocabulary other than the bundle's (named by its sha256)."""
    theirs = str(recorded) if recorded.shape == () and recorded.dtype.kind == "U" else None
    if not is_sha256(theirs):
        got = repr(theirs[:72]) if theirs is not None else f"an array of {recorded.dtype} shape {list(recorded.shape)}"
        raise ValueError(f"user data {path}: vocab_sha256 must be one sha256 hex string, got {got}")
    ours = vocab_sha256(model.bundle.tokenizer.vocab) if model.manifest.tokenizer is not None else None
    if theirs != ours:
        raise ValueError(f"user data {path} was made with another vocabulary (sha256 {theirs}), not this "
                         f"bundle's ({ours or 'the bundle has none'})")
