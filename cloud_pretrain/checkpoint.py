"""Model checkpoints (`checkpoint.pt`): the one file format between pretraining, pruning,
export and the compiler's command.

A checkpoint is `{"task", "config", "state_dict", "vocab" | "labels", "metrics"}` (ARCHITECTURE.md);
`config` holds the keyword arguments of the model class, so a pruned model (other sizes)
rebuilds from the same file. Writes are atomic: a temp file in the same directory, then
`os.replace`, so a killed process never leaves half a checkpoint.
"""
from __future__ import annotations

import os
import io
from pathlib import Path
from typing import Any

import torch

from cloud_pretrain.models import StagedModel, build_model
from device_runtime.files import atomic_write_bytes

REQUIRED_KEYS = ("task", "config", "state_dict", "metrics")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` that a killed process cannot leave half-written (the device's atomic write)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_checkpoint(path: str | os.PathLike, model: StagedModel, task: str, *,
                    vocab: list[str] | None = None, labels: list[str] | None = None,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Writes `model` (its config and weights) with its vocabulary or labels."""
    if (vocab is None) == (labels is None):
        raise ValueError("a checkpoint needs exactly one of vocab (nwp) or labels (image)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt: dict[str, Any] = {"task": task, "config": dict(model.config), "state_dict": state,
                            "metrics": dict(metrics or {})}
    ckpt["vocab" if vocab is not None else "labels"] = list(vocab if vocab is not None else labels)
    return atomic_torch_save(ckpt, path)


def write_names(directory: str | os.PathLike, *, vocab: list[str] | None = None,
                labels: list[str] | None = None) -> Path:
    """`vocab.txt` or `labels.txt` (one name a line) beside a checkpoint, for tools that read text."""
    if (vocab is None) == (labels is None):
        raise ValueError("write exactly one of vocab (nwp) or labels (image)")
    path = Path(directory) / ("vocab.txt" if vocab is not None else "labels.txt")
    path.write_text("\n".join(vocab if vocab is not None else labels) + "\n", encoding="utf-8")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, checked for the keys the format requires."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from err
    missing = [k for k in REQUIRED_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(REQUIRED_KEYS)
    if missing or ("vocab" not in ckpt and "labels" not in ckpt):
        raise ValueError(f"{path} is not an AutLearn checkpoint: missing {', '.join(missing) or 'vocab/labels'}")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> tuple[StagedModel, dict[str, Any]]:
    """(model in eval mode, meta): meta is the checkpoint without its state_dict."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["task"], **ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path}: weights do not fit its config {ckpt['config']}: {err}") from err
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval(), meta


def load_model(path: str | os.PathLike) -> StagedModel:
    """The model of a checkpoint, rebuilt from its config (pruned sizes included)."""
    return load_checkpoint(path)[0]
