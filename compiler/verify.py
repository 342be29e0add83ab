"""Numerical verification of compiled modules against a reference, before anything is written.

A compiled module is not trusted until checked (TVM_NOTES: imports can be silently wrong):
forward outputs and the cut activation, the loss, every gradient, and optimizer steps (torch
models: two chained steps with the optimizer state after each). The reference is PyTorch for
torch models and ONNX Runtime for ONNX files (compiler/onnx_import.py). The first tensor that
diverges is named in a `VerificationError`.

Verification runs the very files that ship, where they run (`verify_where_it_runs`): in this
process for the host; inside the emulated arm64 device (android_harness.qemu, through its TVM
RPC server) for linux-arm64 once `autlearn emulator setup` has built it. A host rebuild of a
cross-compiled bundle's modules is a check of the import, not verification: such a bundle's
manifest says `verified_on: null`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax

from compiler.split import inference_mode

RTOL = 1e-3
ATOL = 1e-4
REL_NORM = 1e-3  # |got - want| / |want| of a whole gradient or update delta, however small its entries


class VerificationError(RuntimeError):
    """A compiled module disagrees with its reference; the message names the tensor."""


@dataclasses.dataclass
class StepReference:
    """A training step after the first: its loss, params and optimizer state (the bundle's order)."""

    loss: np.ndarray
    params: list[np.ndarray]
    state: list[np.ndarray]


@dataclasses.dataclass
class TrainingReference:
    """What training must give: the first step's loss, gradients and updated params (in param
    order), and where the reference has them, its optimizer state and a second chained step."""

    source: str  # who computed it, named in errors: "PyTorch", "ONNX Runtime"
    loss: np.ndarray
    grads: list[np.ndarray]
    updated: list[np.ndarray]
    state: list[np.ndarray] | None = None  # optimizer state after the first step
    second: StepReference | None = None  # the step from the first one's params and state


@dataclasses.dataclass(frozen=True)
class LoadedModule:
    """A compiled module loaded where it runs: a device's RPC session (module and device there)."""

    module: Any
    device: Any


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


def check_relative(name: str, got: np.ndarray, want: np.ndarray, tol: float = REL_NORM, floor: float = 0.0,
                   against: str = "PyTorch") -> None:
    """Raises VerificationError unless |got - want| <= tol |want| + floor (L2 norms over the
    tensor): an atol cannot check gradients of 1e-5, a norm relative to the tensor's own size can.
    `floor`: what rounding alone allows (a float32 update delta is known to the params' ulp)."""
    got, want = np.asarray(got, "float64"), np.asarray(want, "float64")
    error, reference = float(np.linalg.norm(got - want)), float(np.linalg.norm(want))
    if not np.isfinite(error) or error > tol * reference + floor:
        relative = error / reference if reference else float("inf")
        raise VerificationError(f"{name} diverges from {against}: relative error {relative:.3g} (norm), "
                                f"tolerance {tol:g}")


@dataclasses.dataclass
class _DeviceVM:
    vm: relax.VirtualMachine
    device: Any


def _vm(executable: tvm.runtime.Executable | LoadedModule) -> _DeviceVM:
    if isinstance(executable, LoadedModule):
        return _DeviceVM(relax.VirtualMachine(executable.module, executable.device), executable.device)
    return _DeviceVM(relax.VirtualMachine(executable, tvm.cpu()), tvm.cpu())


def _call(vm: _DeviceVM, name: str, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The function's outputs as arrays; the stateful API, which returns tuples over RPC too."""
    vm.vm.set_input(name, *[tvm.runtime.tensor(np.asarray(a, order="C"), vm.device) for a in args])
    vm.vm.invoke_stateful(name)
    out = vm.vm.get_outputs(name)
    items = list(out) if isinstance(out, tuple) else [out]
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
    """loss, every gradient and two chained update steps (params and optimizer state after each)
    of the compiled modules against torch.autograd and torch.optim."""
    chain = inference_mode(copy.deepcopy(trainable_chain))
    params = dict(chain.named_parameters())
    ordered = [params[n] for n in param_names]
    for p, value in zip(ordered, trainable):
        with torch.no_grad():
            p.copy_(torch.from_numpy(value))
    opt = torch_optimizer(ordered, optimizer)
    steps = []
    for step in (1, 2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(chain(torch.from_numpy(cut)), torch.from_numpy(labels))
        loss.backward()
        grads = [p.grad.numpy().copy() for p in ordered]
        opt.step()
        steps.append((loss.detach().numpy().copy(), grads, [p.detach().numpy().copy() for p in ordered],
                      torch_optimizer_state(opt, ordered, optimizer, step, state)))
    (loss1, grads1, params1, state1), (loss2, _, params2, state2) = steps
    reference = TrainingReference("PyTorch", loss1, grads1, params1, state1, StepReference(loss2, params2, state2))
    check_training(loss_exe, update_exe, cut, labels, param_names, trainable, state, reference)


def torch_optimizer_state(opt: torch.optim.Optimizer, params: Sequence[nn.Parameter], config: dict[str, Any],
                          steps: int, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """torch's optimizer state after `steps` steps in the order (and dtypes) of TVM's state
    (compiler.training): num_steps, then momentum's velocities, or Adam's beta powers, m and v."""
    if config["name"] == "sgd":
        values = [np.array(steps)]
    elif config["name"] == "momentum":
        values = [np.array(steps)] + [opt.state[p]["momentum_buffer"].numpy() for p in params]
    else:
        beta1, beta2 = config["betas"]
        values = ([np.array(steps), np.array(beta1 ** steps), np.array(beta2 ** steps)]
                  + [opt.state[p]["exp_avg"].numpy() for p in params]
                  + [opt.state[p]["exp_avg_sq"].numpy() for p in params])
    if len(values) != len(like):
        raise VerificationError(f"the bundle keeps {len(like)} optimizer state tensors, "
                                f"torch's {config['name']} {len(values)}")
    return [np.asarray(v, dtype=l.dtype).reshape(l.shape).copy() for v, l in zip(values, like)]


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
    """The compiled `loss`, `gradients` and `update` functions against `reference` (a second
    `update` from the first one's outputs when the reference has it)."""
    against = reference.source
    (loss,) = _call(_vm(loss_exe), "loss", [cut, labels, *trainable])
    check_close("loss", loss, reference.loss, against=against)
    update_vm = _vm(update_exe)
    grad_loss, *grads = _call(update_vm, "gradients", [cut, labels, *trainable])
    check_close("gradients: loss", grad_loss, reference.loss, against=against)
    if len(grads) != len(reference.grads):
        raise VerificationError(f"gradients returned {len(grads)} tensors, {against} {len(reference.grads)}")
    for name, got, want in zip(param_names, grads, reference.grads):
        check_close(f"gradient of {name}", got, want, against=against)
        check_relative(f"gradient of {name}", got, want, against=against)

    new_params, new_state = _check_step(update_vm, "update", cut, labels, param_names, trainable, state,
                                        reference.loss, reference.updated, reference.state, against)
    if reference.second is not None:
        second = reference.second
        _check_step(update_vm, "second update", cut, labels, param_names, new_params, new_state,
                    second.loss, second.params, second.state, against)


def _check_step(update_vm: _DeviceVM, what: str, cut: np.ndarray, labels: np.ndarray,
                param_names: Sequence[str], params: Sequence[np.ndarray], state: Sequence[np.ndarray],
                want_loss: np.ndarray, want_params: Sequence[np.ndarray], want_state: Sequence[np.ndarray] | None,
                against: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One `update` call checked against its reference; the params and state it returned."""
    step_loss, *rest = _call(update_vm, "update", [cut, labels, *params, *state])
    if len(rest) != len(param_names) + len(state):
        raise VerificationError(f"{what} returned {len(rest)} tensors after the loss, "
                                f"expected {len(param_names)} params + {len(state)} optimizer states")
    check_close(f"{what}: loss", step_loss, want_loss, against=against)
    got_params, got_state = rest[: len(param_names)], rest[len(param_names):]
    for name, before, got, want in zip(param_names, params, got_params, want_params):
        check_close(f"{what}: {name}", got, want, against=against)
        rounding = 2 * float(np.finfo(np.float32).eps) * float(np.linalg.norm(np.asarray(before, "float64")))
        check_relative(f"{what}: the change of {name}", got - before, want - before, floor=rounding,
                       against=against)
    if want_state is not None and len(want_state) != len(got_state):
        raise VerificationError(f"{what} keeps {len(got_state)} optimizer state tensors, {against} {len(want_state)}")
    for i, (got, want) in enumerate(zip(got_state, want_state or [])):
        check_close(f"{what}: optimizer state {i}", got, want, against=against)
    return got_params, got_state


Check = Callable[[Mapping[str, Any]], None]  # ModelParts.check: raises naming the first diverging tensor


def verify_where_it_runs(target: str, paths: Mapping[str, Path], modules: Mapping[str, tvm.IRModule],
                         check: Check) -> str | None:
    """Runs `check` on the compiled files where they run; where that was (the manifest's
    `verified_on`), or None when they could not run here.

    host: loaded in this process. linux-arm64: pushed into the emulated arm64 device and run
    there (needs `autlearn emulator setup`). Otherwise (android-arm64, or no emulator root) the
    same modules rebuilt for the host are checked, which catches import errors but runs none of
    the shipped code: None, with a warning.
    """
    if target == "host":
        from compiler.targets import host_triple

        check({key: tvm.runtime.load_module(str(path)) for key, path in paths.items()})
        return f"host ({host_triple()})"
    if target == "linux-arm64":
        with _emulated_arm64() as device:
            if device is not None:
                check(load_on_device(device, paths))
                return device.description
    from compiler.targets import resolve_target

    host = resolve_target("host").tvm_target()
    check({key: tvm.compile(mod, target=host) for key, mod in modules.items()})
    reason = ("no arm64 device here: `autlearn emulator setup` builds the emulated one" if target == "linux-arm64"
              else f"{target} code runs only on its device")
    print(f"warning: {target} bundle not verified ({reason}); its modules passed a host rebuild check only, "
          "so the manifest says verified_on: null", file=sys.stderr)
    return None


@contextlib.contextmanager
def _emulated_arm64() -> Iterator[Any]:
    """The emulated arm64 device (android_harness.qemu) when its root is set up, else None."""
    from android_harness.emulator import EmulatorRoot
    from android_harness.qemu import QemuTransport

    if not EmulatorRoot().is_ready():
        yield None
        return
    with QemuTransport() as device:
        yield device


def load_on_device(device: Any, paths: Mapping[str, Path]) -> dict[str, LoadedModule]:
    """Pushes the files (sha256 checked there) and loads each in the device's RPC server."""
    import hashlib

    folder = f"verify/{next(iter(paths.values())).parent.name}"
    remote = {key: f"{folder}/{path.name}" for key, path in paths.items()}
    for key, path in paths.items():
        device.push(path, remote[key])
    digests = device.sha256(list(remote.values()))
    for key, path in paths.items():
        if digests.get(remote[key]) != hashlib.sha256(path.read_bytes()).hexdigest():
            raise RuntimeError(f"{path.name} arrived damaged on the {device.name} device")
    session = device.rpc().session
    return {key: LoadedModule(session.load_module(str(device.path(remote[key]))), session.cpu())
            for key in paths}
