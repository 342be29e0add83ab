"""Atomic checkpoints: a learner killed at any instant leaves the previous checkpoint or the new one.

One `.npz` file holds the arrays and, under `__meta__`, a JSON object (cursor, RNG state,
counters, the bundle's fingerprint). It is written to a temporary file in the same directory,
fsynced, then renamed over the old one with os.replace, and the directory is fsynced.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

META_KEY = "__meta__"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that readers see the old content or the new, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):  # from a writer killed mid-write
        leftover.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint: {err}") from err
    if META_KEY not in arrays:
        raise ValueError(f"checkpoint {path} has no {META_KEY} record")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {path} has unreadable metadata: {err}") from err
    return arrays, meta
