"""`autlearn device infer`: predictions for a file of inputs or typed text, with a state's newest learned
params when given (device_runtime/state.py)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.bundle import load_bundle
from device_runtime.learner import Learner
from device_runtime.model import DeviceModel
from device_runtime.state import LearnedState, load_learned


def read_inputs(path: str | Path) -> np.ndarray:
    """Inputs from a .npy array or the `x` array of an .npz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"input {path} is not a readable .npy or .npz: {err}") from err
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        if "x" not in loaded.files:
            raise ValueError(f"input {path} has no array 'x' (has: {', '.join(loaded.files) or 'none'})")
        return loaded["x"]


def infer_file(bundle_dir: str | Path, input_path: str | Path, *, state_dir: str | Path | None = None,
               top: int = 1) -> dict[str, Any]:
    """Top-`top` classes (id, label, probability) per input, from the bundle or a state's learned params."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    model = DeviceModel(load_bundle(bundle_dir))
    used = load_learned(state_dir, Learner(model)) if state_dir is not None else LearnedState()
    logits = model.forward(read_inputs(input_path))[0].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    best = np.argsort(-probs, axis=1)[:, :top]
    labels = model.bundle.labels
    return {"params": used.describe(model.manifest.fingerprint),
            "predictions": [[{"id": int(c), "label": labels[c], "p": round(float(p[c]), 6)} for c in row]
                            for row, p in zip(best, probs)]}


def infer_text(bundle_dir: str | Path, text: str, *, state_dir: str | Path | None = None,
               top: int = 3) -> dict[str, Any]:
    """The top suggestions for typed text (next words, or classes for a text classifier)."""
    from device_runtime.text import suggestions

    model = DeviceModel(load_bundle(bundle_dir))
    used = load_learned(state_dir, Learner(model)) if state_dir is not None else LearnedState()
    return {"params": used.describe(model.manifest.fingerprint), "text": text, "suggestions": suggestions(model, text, top)}
