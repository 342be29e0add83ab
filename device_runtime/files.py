"""Reading and writing the device's files so that a crash or a bad file loses nothing.

Writes go to a temporary file in the same directory, fsynced, renamed over the old one and the
directory fsynced: a reader sees the old content or the new, never a part. Reads turn a missing
or malformed file into one error naming the file and what is wrong. A full disk is one error
naming the file, with the old content kept.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


class DiskFullError(RuntimeError):
    """No space left to write a file; the file's previous content, if any, is intact."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` so that readers see the old content or the new, never a part.

    DiskFullError when the device has no room for it (the old content stays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "its previous content is kept" if path.exists() else "nothing was written"
            raise DiskFullError(f"no space left on the device to write {path} ({len(data)} bytes): {kept}; "
                                "free some space and run again") from err
        raise
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):  # from a writer killed mid-write
        leftover.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def replace_directory(new: Path, dst: Path) -> None:
    """Moves the directory `new` to `dst`, replacing a directory there, so that `dst` always holds
    the old tree or the new: one rename, or one atomic exchange when `dst` exists (two renames
    where the OS cannot exchange). `new` must be on `dst`'s filesystem."""
    new, dst = Path(new), Path(dst)
    if not dst.exists():
        os.rename(new, dst)
    elif _renameat2_exchange(new, dst):
        shutil.rmtree(new)  # now the old tree
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old.", dir=dst.parent))
        old.rmdir()
        os.rename(dst, old)
        os.rename(new, dst)
        shutil.rmtree(old)
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def cache_dir() -> Path:
    """The toolkit's one cache root (tuning databases, rendered data, logs): `$AUTLEARN_CACHE`,
    else `~/.cache/autlearn`. Here, at the bottom of the dependencies, so every package shares it."""
    return Path(os.environ.get("AUTLEARN_CACHE") or Path.home() / ".cache" / "autlearn")


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz (no pickles); `what` names the file's role in the errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}: it does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one .npy array, not named arrays")
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{what} {path} is corrupt, not a readable .npz: {err}") from err


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object; `what` names the file's role in the errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data
