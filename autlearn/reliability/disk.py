"""A full disk during a checkpoint write: the state directory lives on a tmpfs with room for one
checkpoint but not for its replacement beside it, so the second save fails with ENOSPC. The run
must stop with one clear error, the previous checkpoint must stay intact, and a rerun once space
is back must end with the uninterrupted run's params.

The tmpfs is mounted in a private user and mount namespace (`unshare`, no root needed); where the
kernel refuses that, ENOSPC is injected at the checkpoint's fsync instead, and the report says so.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from autlearn.reliability.workload import device_argv, learned_params, same_params, synthetic_user
from device_runtime.checkpoint import load_checkpoint

PAGE = 4096

INJECT_ENOSPC = r"""
import errno, os, runpy, sys
import device_runtime.files as files
calls = {"n": 0}
real = os.fsync
def fsync(fd):
    if files.Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".checkpoint.npz."):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd)
files.os.fsync = fsync
sys.argv = ["autlearn", *sys.argv[1:]]
runpy.run_module("autlearn", run_name="__main__")
"""


def _offline_args(bundle: Path, user: Path, state: Path, log: Path) -> list[str]:
    return device_argv(log, "offline", "--bundle", str(bundle), "--data", str(user), "--state", str(state),
                       "--epochs", "2", "--checkpoint-every", "1", "--augment-ratio", "0", "--policy", "always")


def _inside(bundle: str, user: str, mount: str, copy_to: str, log: str, inject: bool) -> dict[str, Any]:
    """On the full filesystem (or with ENOSPC injected): the run, and what it left, copied out."""
    state = Path(mount) / "state"
    argv = _offline_args(Path(bundle), Path(user), state, Path(log))
    if inject:
        argv = [sys.executable, "-c", INJECT_ENOSPC, *argv[argv.index("autlearn") + 1:]]
    proc = subprocess.run(argv, capture_output=True, text=True)
    try:
        _, meta = load_checkpoint(state / "checkpoint.npz")
        kept = meta["generation"]
    except (OSError, ValueError) as err:
        kept = f"unreadable: {err}"
    shutil.copytree(state, copy_to, ignore=shutil.ignore_patterns(".*.tmp"))
    return {"exit": proc.returncode, "stderr": proc.stderr.strip(), "kept_generation": kept,
            "leftover_tmp": sorted(p.name for p in state.glob(".*.tmp"))}


def _mount_and_run(payload: dict[str, Any], size_kb: int) -> dict[str, Any] | None:
    """Runs `_inside` on a fresh tmpfs of `size_kb` in a private namespace; None where not allowed."""
    mount = Path(payload["mount"])
    mount.mkdir(parents=True, exist_ok=True)
    script = (f'mount -t tmpfs -o size={size_kb}k autlearn-full "{mount}" && exec "{sys.executable}" -m '
              f'autlearn.reliability.disk \'{json.dumps(payload)}\'')
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def disk_full(bundle: Path, work: Path, *, samples: int = 32, seed: int = 0) -> dict[str, Any]:
    """Figures: method (tmpfs or injected), exit code and message, the checkpoint kept, the rerun."""
    bundle, work = Path(bundle), Path(work)
    user = synthetic_user(bundle, work / "user.npz", samples, seed)
    log = work / "device.log"
    reference = work / "reference"
    if subprocess.run(_offline_args(bundle, user, reference, log), stdout=subprocess.DEVNULL).returncode != 0:
        raise RuntimeError(f"the offline run on a disk with room failed; see {log}")
    pages = -(-(reference / "checkpoint.npz").stat().st_size // PAGE)
    status_pages = -(-(reference / "status.json").stat().st_size // PAGE)
    payload = {"bundle": str(bundle), "user": str(user), "mount": str(work / "full"), "log": str(log),
               "copy_to": str(work / "after"), "inject": False}
    # tmpfs counts whole pages: room for a checkpoint and the status, not for a second checkpoint beside them
    result = _mount_and_run(payload, (pages + status_pages + (pages - 1) // 2) * PAGE // 1024)
    method = "tmpfs"
    if result is None:
        method = "injected ENOSPC at the checkpoint's fsync (this kernel refused a private tmpfs mount)"
        shutil.rmtree(work / "after", ignore_errors=True)
        result = _inside(**{**payload, "inject": True})
    after = work / "after"
    rerun = subprocess.run(_offline_args(bundle, user, after, log), stdout=subprocess.DEVNULL).returncode
    message = result["stderr"]
    refused_clearly = (result["exit"] == 2 and "\n" not in message and "no space left" in message
                       and result["kept_generation"] == 1 and not result["leftover_tmp"])
    return {"disk_full_method": method, "disk_full_exit": result["exit"], "disk_full_message": message,
            "disk_full_checkpoint_kept": result["kept_generation"] == 1,
            "disk_full_clear_error": refused_clearly,
            "disk_full_rerun_matches": rerun == 0 and same_params(learned_params(after), learned_params(reference))}


if __name__ == "__main__":  # inside the private namespace, on the full tmpfs
    print(json.dumps(_inside(**json.loads(sys.argv[1]))))
