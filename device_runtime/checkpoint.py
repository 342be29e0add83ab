"""Atomic checkpoints: a learner killed at any instant leaves the previous checkpoint or the new one.

One `.npz` file holds the arrays and, under `__meta__`, a JSON object (a state directory's learned
state: its generation, layout and each mode's progress, device_runtime/state.py). It is written
to a temporary file in the same directory, fsynced, then renamed over the old one with
os.replace, and the directory is fsynced.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.files import atomic_write_bytes, read_npz

META_KEY = "__meta__"


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Atomically writes the arrays and the JSON-serialisable `meta` to one .npz file."""
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved for the checkpoint's metadata")
    buffer = io.BytesIO()
    meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(buffer, **arrays, **{META_KEY: meta_bytes})
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint; FileNotFoundError or ValueError when missing or corrupt."""
    arrays = read_npz(path, "checkpoint")
    if META_KEY not in arrays:
        raise ValueError(f"checkpoint {path} has no {META_KEY} record")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {path} has unreadable metadata: {err}") from err
    return arrays, meta
