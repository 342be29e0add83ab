"""The ExecuTorch on-device training baseline for the compiler benchmark.

ExecuTorch (PyTorch's own on-device runtime) trains through extension/training: the trainable
part wrapped so its forward returns cross_entropy(trainable(cut), labels) (mean), as its CIFAR
example does, is exported with torch.export, turned into one joint forward+backward program by
`_export_forward_backward`, lowered (`to_edge`, `to_executorch`) to a .pte and stepped with
ExecuTorch's SGD at the same learning rate: the same work as the compiled `update` module.
Threads: the runtime's threadpool (used by its optimized CPU kernels; the portable ones are
single-threaded) is process-wide, so `build_executorch_trainer` resets it to `threads`.
The program has the example's static shapes (one batch size), like the ORT export, and every
parameter of the trainable part trains (requires_grad is set on a private copy).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class _WithLoss(nn.Module):
    """`trainable` (cut -> logits) followed by cross-entropy (mean): ExecuTorch trains a loss."""

    def __init__(self, trainable: nn.Module) -> None:
        super().__init__()
        self.trainable = trainable

    def forward(self, cut: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.trainable(cut), labels)


@dataclasses.dataclass
class ExecuTorchTrainer:
    """A loaded training program: `step` runs forward, loss, backward and the SGD update."""

    module: Any  # executorch.extension.training.TrainingModule
    optimizer: Any  # its ExecuTorchSGD, built on the runtime's own parameter tensors
    pte_path: Path

    def step(self, cut: np.ndarray, labels: np.ndarray) -> float:
        inputs = (torch.from_numpy(np.ascontiguousarray(cut, dtype=np.float32)),
                  torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)))
        loss = self.module.forward_backward("forward", inputs)[0]
        self.optimizer.step(self.module.named_gradients())
        return float(loss)

    def parameters(self) -> dict[str, torch.Tensor]:
        """The runtime's parameters by the trainable part's names (views: they change with steps)."""
        prefix = "trainable."
        return {name.removeprefix(prefix): p for name, p in self.module.named_parameters().items()}


@contextlib.contextmanager
def _native_stdout_on_stderr() -> Iterator[None]:
    """ExecuTorch's runtime logs (`[threadpool.cpp:66] Resetting threadpool...`) go to fd 1: point
    it at fd 2 meanwhile, where library output belongs (the CLI sends fd 2 to its log file)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _imports() -> tuple[Any, ...]:
    with warnings.catch_warnings(), _native_stdout_on_stderr():
        warnings.simplefilter("ignore")  # every ExecuTorch training API warns it is experimental
        from executorch.exir import EdgeCompileConfig, to_edge
        from executorch.extension.pybindings import portable_lib
        from executorch.extension.training import _load_for_executorch_for_training, get_sgd_optimizer
        from torch.export.experimental import _export_forward_backward
    return EdgeCompileConfig, to_edge, portable_lib, _load_for_executorch_for_training, get_sgd_optimizer, \
        _export_forward_backward


@functools.cache
def executorch_available() -> str | None:
    """None when ExecuTorch imports and is usable with this torch, otherwise a one-line reason."""
    try:
        _imports()
    except Exception as e:  # ImportError, or an undefined symbol when its ABI does not match torch's
        return f"executorch is not usable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def build_executorch_trainer(trainable: nn.Module, cut_example: torch.Tensor, labels_example: torch.Tensor,
                             *, lr: float, workdir: Path, threads: int) -> ExecuTorchTrainer:
    """An ExecuTorch training program for `trainable` (cut -> logits) written to `workdir`, loaded."""
    if lr <= 0 or threads < 1:
        raise ValueError(f"need lr > 0 and threads >= 1, got lr={lr}, threads={threads}")
    EdgeCompileConfig, to_edge, portable_lib, load_for_training, get_sgd_optimizer, export_fw_bw = _imports()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = _WithLoss(copy.deepcopy(trainable).eval())  # eval, like the torch and ORT sides
    for p in model.parameters():
        p.requires_grad_(True)
    labels_example = labels_example.to(torch.int64)
    ep = export_fw_bw(torch.export.export(model, (cut_example, labels_example), strict=True))
    program = to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    pte_path = workdir / "trainable_training.pte"
    pte_path.write_bytes(program.buffer)

    with warnings.catch_warnings(), _native_stdout_on_stderr():
        warnings.simplefilter("ignore")
        portable_lib._unsafe_reset_threadpool(threads)
        module = load_for_training(str(pte_path))
        module.forward_backward("forward", (cut_example, labels_example))  # exposes the parameters
        names = {n for n, _ in model.named_parameters()}
        if set(module.named_parameters()) != names:
            raise RuntimeError(f"ExecuTorch trains {sorted(module.named_parameters())}, not {sorted(names)}")
        # That run only read the parameters (no update): training starts from `trainable`'s weights.
        optimizer = get_sgd_optimizer(module.named_parameters(), lr, 0.0, 0.0, 0.0, False)
    return ExecuTorchTrainer(module, optimizer, pte_path)
