"""One user's data in model-input form, the `.npz` a device learns from (ARCHITECTURE.md).

Keys `x`, `y`, `test_x`, `test_y`: for `nwp`, int64 token ids [n, seq_len] against the
bundle's vocabulary (left-padded contexts) and int64 next-word ids, and `vocab_sha256` (a
string) naming that vocabulary, so a device refuses ids of another; for `image`, float32
[n, 1, 28, 28] in [0, 1] and int64 class ids.
"""
from __future__ import annotations

import io
import os
import pathlib

import numpy as np

from cloud_pretrain.data.text import Vocabulary, next_word_examples
from cloud_pretrain.data.users import ImageUser, User
from device_runtime.files import atomic_write_bytes
from device_runtime.tokenizer import vocab_sha256


def model_inputs(user: User, vocab: Vocabulary | None = None, seq_len: int = 10) -> dict[str, np.ndarray]:
    """`x`, `y`, `test_x`, `test_y` of one user, as the model takes them."""
    if isinstance(user, ImageUser):
        return {"x": image_inputs(user.train_x), "y": user.train_y.astype(np.int64),
                "test_x": image_inputs(user.test_x), "test_y": user.test_y.astype(np.int64)}
    if vocab is None:
        raise ValueError(f"text user {user.id!r} needs a vocabulary (--vocab: the bundle's vocab.txt) to become token ids")
    if seq_len < 1:
        raise ValueError(f"the context length must be positive, got {seq_len}")
    arrays = {}
    for part, prefix in (("train", ""), ("test", "test_")):
        (x, y), = next_word_examples(user.sentences(part), vocab, (seq_len,)).values()
        arrays[f"{prefix}x"], arrays[f"{prefix}y"] = x, y
    return arrays


def image_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 [n, 28, 28] -> float32 [n, 1, 28, 28] in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


def export_user(user: User, out: str | os.PathLike, vocab: Vocabulary | None = None,
                seq_len: int = 10) -> pathlib.Path:
    """Writes `model_inputs(user, ...)` and, for token ids, their vocabulary's sha256 to `out` (.npz)."""
    arrays = model_inputs(user, vocab, seq_len)
    if vocab is not None and not isinstance(user, ImageUser):
        arrays["vocab_sha256"] = np.array(vocab_sha256(vocab.tokens))
    if len(arrays["y"]) == 0:
        raise ValueError(f"user {user.id!r} has no training examples to export")
    out = pathlib.Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"the output must be a .npz file, got {out}")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(out, buffer.getvalue())  # a killed export leaves the old shard or the new one
    return out
