"""Writing the artifact bundle (ARCHITECTURE.md): modules, parameters, labels, manifest.

The bundle is assembled in a sibling temporary directory and moved into place by one atomic
rename (or exchange with the previous bundle) only when every file is written, so a failed or
killed compile never leaves a half bundle or destroys the previous one.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from device_runtime.files import replace_directory
from device_runtime.manifest import MANIFEST_NAME, Manifest, write_manifest


def write_npz(path: Path, names: Sequence[str], values: Sequence[np.ndarray]) -> None:
    """Arrays saved under their names (the manifest keeps the order)."""
    if len(names) != len(values) or len(set(names)) != len(names):
        raise ValueError(f"{path.name}: {len(names)} names (unique: {len(set(names))}) for {len(values)} arrays")
    np.savez(path, **{n: np.asarray(v, order="C") for n, v in zip(names, values)})


def check_replaceable(out: Path) -> Path:
    """`out` if it may become a bundle: missing, empty, or an earlier bundle; else ValueError."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise ValueError(f"{out} exists and is not a bundle directory; refusing to overwrite it")
    return out


def write_bundle(out: Path, manifest: Manifest, fill: Callable[[Path], None]) -> Path:
    """Calls `fill(tmp_dir)` to write the files, hashes them into the manifest, then swaps `out` in.

    `out` must be missing, empty, or an earlier bundle (it has a manifest.json): other
    directories are refused rather than overwritten.
    """
    out = check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        fill(tmp)
        write_manifest(tmp, manifest)
        replace_directory(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
