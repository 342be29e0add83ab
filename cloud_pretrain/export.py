"""Export of a model as a torch.export program (`.pt2`) and as ONNX, both checked.

The batch dimension is dynamic. An nwp program is specialised to one context length (the
LSTM unrolls over it), so nwp exports one pair of files per length bucket. Every ONNX file
is run with onnxruntime against PyTorch before this returns: an export that computes
something else is an error, not a file.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.export import Dim

from cloud_pretrain.models import StagedModel, example_input

TOLERANCE = 1e-4  # max |onnx - torch| relative to max |torch|


def _check_onnx(path: Path, model: StagedModel, x: torch.Tensor) -> float:
    """Relative error of the ONNX file against PyTorch on `x`; raises past TOLERANCE."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    error = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))
    if not error <= TOLERANCE:
        raise RuntimeError(f"{path}: ONNX output differs from PyTorch by {error:.2e} (relative), over {TOLERANCE}")
    return error


def export_model(model: StagedModel, task: str, out: str | Path, lengths: Sequence[int] = (10,)) -> list[Path]:
    """Writes `model[_l<length>].pt2` and `.onnx` into `out`; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    variants = [(f"model_l{n}", n) for n in lengths] if task == "nwp" else [("model", 10)]
    if task == "nwp" and (not lengths or min(lengths) < 1):
        raise ValueError(f"nwp export needs positive context lengths, got {list(lengths)}")
    g = torch.Generator().manual_seed(0)
    written = []
    for stem, length in variants:
        x = example_input(task, model, batch=2, length=length, generator=g)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: Dim("batch", min=1, max=4096)},))
        torch.export.save(program, out / f"{stem}.pt2")
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every pass
            torch.onnx.export(program, (x,), out / f"{stem}.onnx", dynamo=True,
                              input_names=["tokens" if task == "nwp" else "image"], output_names=["logits"])
        _check_onnx(out / f"{stem}.onnx", model, example_input(task, model, batch=3, length=length, generator=g))
        written += [out / f"{stem}.pt2", out / f"{stem}.onnx"]
    return written
