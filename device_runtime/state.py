"""The state directory of one user's learning: checkpoints and status.json.

Offline learning writes `checkpoint.npz`, online learning `online.npz` (it starts from the
offline result when there is one); `status.json` holds one section per mode, for
`autlearn device status`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from device_runtime.checkpoint import load_checkpoint
from device_runtime.files import atomic_write_bytes, read_json_object
from device_runtime.learner import Learner

OFFLINE_CHECKPOINT = "checkpoint.npz"
ONLINE_CHECKPOINT = "online.npz"
STATUS_NAME = "status.json"
ORDER_KEY = "__order__"  # the offline epoch's sample order, stored next to the params


def read_status(state_dir: str | Path) -> dict[str, Any]:
    """The state directory's status.json: a section per mode (progress, windows, last checkpoint)."""
    path = Path(state_dir) / STATUS_NAME
    if not Path(state_dir).is_dir():
        raise FileNotFoundError(f"state directory {state_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"no {STATUS_NAME} in {state_dir}: no offline or online run has used it")
    return read_json_object(path, "status file")


def update_status(state_dir: str | Path, mode: str, section: dict[str, Any]) -> None:
    """Atomically replaces the `mode` section of status.json, keeping the others."""
    path = Path(state_dir) / STATUS_NAME
    try:
        status = read_status(state_dir)
    except (FileNotFoundError, ValueError):
        status = {}
    status[mode] = section
    atomic_write_bytes(path, (json.dumps(status, indent=2, sort_keys=True) + "\n").encode())


def latest_checkpoint(state_dir: str | Path) -> Path | None:
    """The params to continue from: the online checkpoint, else the offline one, else None."""
    for name in (ONLINE_CHECKPOINT, OFFLINE_CHECKPOINT):
        path = Path(state_dir) / name
        if path.exists():
            return path
    return None


def restore_learned(learner: Learner, state_dir: str | Path) -> Path | None:
    """Loads the state directory's latest params into `learner`; returns the checkpoint used.

    ValueError when that checkpoint was trained from another bundle.
    """
    path = latest_checkpoint(state_dir)
    if path is None:
        return None
    arrays, meta = load_checkpoint(path)
    if meta.get("identity", {}).get("bundle") != learner.model.bundle.fingerprint:
        raise ValueError(f"checkpoint {path} was trained from another bundle (use a new --state directory)")
    arrays.pop(ORDER_KEY, None)
    learner.load_state_arrays(arrays)
    return path
