"""The state directory of one user's learning: one learned state, `checkpoint.npz`, and status.json.

One lineage, so that every mode continues from the newest params (a file per mode, picked by its
name, let a stale one win):

- `checkpoint.npz` (device_runtime.checkpoint: written atomically) holds the trainable params
  and the optimizer state under their manifest names. Its metadata: `generation` (1 at the first
  save, +1 at every save of any mode), `mode` (who wrote it), `layout` (trainable names,
  optimizer name, optimizer state names) and `sections`: per mode, what it needs to resume,
  with the generation of that mode's last save. A mode's arrays are stored as
  `__<mode>__<name>` (offline's sample order, online's pending labels). A save keeps the other
  mode's section and arrays as they were. A run that learns nothing writes nothing.
- Every mode loads it first (`load_learned`) and continues from its params, whoever wrote them;
  `infer` predicts with them. Offline resumes its own epoch, cursor, order and RNG; when its
  section is older than the file (online learned since), it keeps its progress but trains the
  newer params, and its status says so. Online resumes a stream after its last consumed sample,
  with the labels still pending (device_runtime/online.py).
- A bundle continues the state when the layout matches and every array has this bundle's shape
  and dtype (a recompile, a retune: another fingerprint, said in the status); otherwise (another
  head, optimizer or learning rate) ValueError, one line naming the difference, never a silent
  start over. No file: the bundle's params (generation 0). A corrupt
  file: an error naming it, never a fallback to the bundle.
- `status.json` holds one section per mode, for `autlearn device status`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.checkpoint import load_checkpoint, save_checkpoint
from device_runtime.files import atomic_write_bytes, read_json_object
from device_runtime.learner import Learner

CHECKPOINT = "checkpoint.npz"
STATUS_NAME = "status.json"


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


@dataclasses.dataclass
class LearnedState:
    """What is on disk besides the params: the generation, its writer, each mode's section and arrays."""

    generation: int = 0  # 0: nothing learned yet, the bundle's params
    mode: str = "bundle"
    bundle: str = ""  # the fingerprint of the bundle that wrote it
    sections: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    def describe(self, fingerprint: str) -> str:
        """Where the params come from, for the status: `bundle` or `generation N (mode)`, and when
        another build of the model (`fingerprint` is this bundle's) wrote them, which."""
        if not self.generation:
            return "bundle"
        other = f", by another build (bundle {self.bundle[:12]})" if self.bundle != fingerprint else ""
        return f"generation {self.generation} ({self.mode}){other}"


def _layout(learner: Learner) -> dict[str, Any]:
    manifest = learner.model.manifest
    return {"trainable": manifest.params["trainable"], "optimizer": manifest.optimizer,
            "optimizer_state": manifest.params["optimizer_state"]}


def load_learned(state_dir: str | Path, learner: Learner) -> LearnedState:
    """The state directory's learned state, its params loaded into `learner` (the bundle's when none).

    ValueError naming the file when it is corrupt, not a learned state, or of another layout.
    """
    path = Path(state_dir) / CHECKPOINT
    if not path.exists():
        return LearnedState()
    arrays, meta = load_checkpoint(path)
    if not (isinstance(meta.get("generation"), int) and isinstance(meta.get("mode"), str)
            and isinstance(meta.get("sections"), dict) and isinstance(meta.get("layout"), dict)):
        raise ValueError(f"checkpoint {path} holds no learned state (generation, mode, layout, sections): "
                         "use a new --state directory")
    state = LearnedState(meta["generation"], meta["mode"], meta.get("bundle", ""), meta["sections"])
    for name in [n for n in arrays if n.startswith("__")]:
        mode, _, key = name[2:].partition("__")
        state.arrays.setdefault(mode, {})[key] = arrays.pop(name)
    try:
        for key, want in _layout(learner).items():
            if meta["layout"].get(key) != want:
                raise ValueError(f"learned state has {key} {json.dumps(meta['layout'].get(key), sort_keys=True)}; "
                                 f"this bundle's is {json.dumps(want, sort_keys=True)}")
        learner.load_state_arrays(arrays)
    except ValueError as err:
        raise ValueError(f"{path}: {err}: use a new --state directory") from None
    return state


def save_learned(state_dir: str | Path, learner: Learner, state: LearnedState, mode: str,
                 section: dict[str, Any], arrays: dict[str, np.ndarray]) -> LearnedState:
    """Atomically writes `learner`'s params as the next generation with `mode`'s section and arrays
    (the other modes' kept); returns the state now on disk."""
    generation = state.generation + 1
    fingerprint = learner.model.manifest.fingerprint
    saved = LearnedState(generation, mode, fingerprint, {**state.sections, mode: {**section, "generation": generation}},
                         {**state.arrays, mode: arrays})
    named = {f"__{m}__{k}": a for m, by_name in saved.arrays.items() for k, a in by_name.items()}
    save_checkpoint(Path(state_dir) / CHECKPOINT, {**learner.state_arrays(), **named},
                    {"generation": generation, "mode": mode, "bundle": fingerprint, "layout": _layout(learner),
                     "sections": saved.sections})
    return saved
