"""Numerical verification of compiled modules against a reference, before anything is written.

A compiled module is not trusted until checked (TVM_NOTES: imports can be silently wrong):
forward outputs and the cut activation, the loss, every gradient, and one optimizer step.
The reference is PyTorch for torch models and ONNX Runtime for ONNX files
(compiler/onnx_import.py). The first tensor that diverges is named in a `VerificationError`.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax

from compiler.split import inference_mode

RTOL = 1e-3
ATOL = 1e-4


class VerificationError(RuntimeError):
    """A compiled module disagrees with its reference; the message names the tensor."""


@dataclasses.dataclass
class TrainingReference:
    """What one training step must give: loss, gradients and updated params (in param order)."""

    source: str  # who computed it, named in errors: "PyTorch", "ONNX Runtime"
    loss: np.ndarray
    grads: list[np.ndarray]
    updated: list[np.ndarray]


def check_close(name: str, got: np.ndarray, want: np.ndarray, rtol: float = RTOL, atol: float = ATOL,
                against: str = "PyTorch") -> None:
    """Raises VerificationError naming `name` unless got ~= want (atol scaled by |want|'s max)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise VerificationError(f"{name}: shape {got.shape} differs from {against}'s {want.shape}")
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    if not np.all(np.isfinite(got)) or not np.allclose(got, want, rtol=rtol, atol=atol * scale):
        err = float(np.nanmax(np.abs(got.astype("float64") - want))) if got.size else 0.0
        raise VerificationError(f"{name} diverges from {against}: max abs error {err:.3g} (|ref| max {scale:.3g})")


def _vm(executable: tvm.runtime.Executable) -> relax.VirtualMachine:
    return relax.VirtualMachine(executable, tvm.cpu())


def _call(vm: relax.VirtualMachine, name: str, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = vm[name](*[tvm.runtime.tensor(np.asarray(a, order="C")) for a in args])
    items = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
    return [item.numpy() for item in items]


ForwardReference = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # x -> (logits, cut)


def torch_forward_reference(model_chain: nn.Module) -> ForwardReference:
    """A torch module returning `(logits, cut)` (compiler/split.py) as a numpy function."""
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, cut = model_chain(torch.from_numpy(x))
        return logits.numpy(), cut.numpy()
    return run


def verify_forward(executable, function: str, x: np.ndarray, frozen: Sequence[np.ndarray],
                   trainable: Sequence[np.ndarray], reference: ForwardReference,
                   against: str = "PyTorch") -> None:
    """`function(x, *frozen, *trainable) -> (logits, cut)` against `reference(x)`."""
    logits, cut = _call(_vm(executable), function, [x, *frozen, *trainable])
    want_logits, want_cut = reference(x)
    check_close(f"{function}: cut activation", cut, want_cut, against=against)
    check_close(f"{function}: logits", logits, want_logits, against=against)


def torch_optimizer(params: list[nn.Parameter], config: dict[str, Any]) -> torch.optim.Optimizer:
    """The PyTorch optimizer computing the same step as the manifest's optimizer entry."""
    if config["name"] == "sgd":
        return torch.optim.SGD(params, lr=config["lr"])
    if config["name"] == "momentum":
        return torch.optim.SGD(params, lr=config["lr"], momentum=config["momentum"])
    return torch.optim.Adam(params, lr=config["lr"], betas=tuple(config["betas"]), eps=config["eps"])


def verify_training(loss_exe, update_exe, cut: np.ndarray, labels: np.ndarray, param_names: Sequence[str],
                    trainable: Sequence[np.ndarray], state: Sequence[np.ndarray], trainable_chain: nn.Module,
                    optimizer: dict[str, Any]) -> None:
    """loss, every gradient and one update step of the compiled modules against torch.autograd."""
    chain = inference_mode(copy.deepcopy(trainable_chain))
    params = dict(chain.named_parameters())
    ordered = [params[n] for n in param_names]
    for p, value in zip(ordered, trainable):
        with torch.no_grad():
            p.copy_(torch.from_numpy(value))
    logits = chain(torch.from_numpy(cut))
    want_loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    want_loss.backward()
    grads = [p.grad.numpy() for p in ordered]
    reference = TrainingReference("PyTorch", want_loss.detach().numpy(), grads,
                                  optimizer_step_reference(trainable, grads, optimizer))
    check_training(loss_exe, update_exe, cut, labels, param_names, trainable, state, reference)


def optimizer_step_reference(trainable: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                             optimizer: dict[str, Any]) -> list[np.ndarray]:
    """Params after one step of the manifest's optimizer (from zero state) given the gradients."""
    params = [nn.Parameter(torch.from_numpy(np.array(v, copy=True))) for v in trainable]
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(np.array(g, copy=True))
    torch_optimizer(params, optimizer).step()
    return [p.detach().numpy() for p in params]


def check_training(loss_exe, update_exe, cut: np.ndarray, labels: np.ndarray, param_names: Sequence[str],
                   trainable: Sequence[np.ndarray], state: Sequence[np.ndarray],
                   reference: TrainingReference) -> None:
    """The compiled `loss`, `gradients` and `update` functions against `reference`."""
    against = reference.source
    (loss,) = _call(_vm(loss_exe), "loss", [cut, labels, *trainable])
    check_close("loss", loss, reference.loss, against=against)
    update_vm = _vm(update_exe)
    grad_loss, *grads = _call(update_vm, "gradients", [cut, labels, *trainable])
    check_close("gradients: loss", grad_loss, reference.loss, against=against)
    for name, got, want in zip(param_names, grads, reference.grads):
        check_close(f"gradient of {name}", got, want, against=against)

    step_loss, *rest = _call(update_vm, "update", [cut, labels, *trainable, *state])
    check_close("update: loss", step_loss, reference.loss, against=against)
    for name, got, want in zip(param_names, rest[: len(param_names)], reference.updated):
        check_close(f"updated {name}", got, want, against=against)
    if len(rest) != len(param_names) + len(state):
        raise VerificationError(f"update returned {len(rest)} tensors after the loss, "
                                f"expected {len(param_names)} params + {len(state)} optimizer states")
