"""Resource(model) for the budgeted search: FLOPs, parameter bytes, or measured latency.

A `Resource` is a name, a unit and a `measure(model) -> float`. FLOPs and bytes are counted
exactly from the layers' shapes: `flops` of one inference, `step-flops` of one transfer-learning
step on the device (what the paper's training-time saving is about: a search on whole-model FLOPs
shrinks layers the step never runs, such as the first LSTM). `latency` is the real NetAdapt's: a `LatencyMeter` given by
the caller compiles the model and times it on the target device (autlearn/target_latency.py;
cloud_pretrain never imports the compiler). `host-latency` times one PyTorch forward pass on
this workstation: cheap, but not the device's figure, and named so.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cloud_pretrain.models import StagedModel, example_input

LatencyMeter = Callable[[StagedModel, str], float]  # (model, task) -> milliseconds
RESOURCE_NAMES = ("flops", "step-flops", "params", "latency", "host-latency")
MEASURED_GRID = 8  # a measured resource tries removals leaving multiples of 1/8 of a group


def count_flops(model: StagedModel, task: str, length: int = 10) -> int:
    """Floating-point operations (multiply and add counted apart) of one forward pass at
    batch 1: convolutions, linear layers and LSTM gate products; the rest is negligible."""
    total = 0

    def conv(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * out.numel() * k

    def linear(m: nn.Linear, inp, _out) -> None:
        nonlocal total
        total += 2 * inp[0].numel() * m.out_features  # rows x in x out

    def lstm(m: nn.LSTM, inp, _out) -> None:
        nonlocal total
        steps = inp[0].shape[0] * inp[0].shape[1]  # batch x time, either layout
        total += steps * 2 * 4 * m.hidden_size * (m.input_size + m.hidden_size)

    hooks = []
    for module in model.modules():
        for kind, hook in ((nn.Conv2d, conv), (nn.Linear, linear), (nn.LSTM, lstm)):
            if isinstance(module, kind):
                hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(example_input(task, model, batch=1, length=length))
            model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return total


def step_flops(model: nn.Module) -> int:
    """FLOPs per example of one transfer-learning step at the device's default cut, the last
    linear layer (a factorised layer's `up`; compiler/api.py): its forward and its weight
    gradient, 2 x in x out each (nothing before the cut trains, so no input gradient)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("step-flops counts the last linear layer, and this model has none")
    return 4 * linears[-1].in_features * linears[-1].out_features


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (batch-norm statistics): the model's weight file."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def median_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn()` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def host_latency(model: StagedModel, task: str, repeats: int = 20) -> float:
    """Median milliseconds of one inference (batch 1) on this workstation, in PyTorch eager."""
    x = example_input(task, model, batch=1)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ms = median_ms(lambda: model(x), repeats=repeats)
    model.train(was_training)
    return ms


@dataclasses.dataclass(frozen=True)
class Resource:
    """What a budget limits, and how to measure it."""

    name: str
    unit: str
    measure: Callable[[StagedModel], float]
    grid: int | None = None  # measured resources: see cloud_pretrain.prune.units_for_target


def make_resource(name: str, task: str, latency_meter: LatencyMeter | None = None) -> Resource:
    """The resource `name` (flops, step-flops, params, latency or host-latency) of a `task` model;
    `latency` needs the target's `latency_meter`."""
    if name == "flops":
        return Resource("flops", "FLOPs", lambda m: float(count_flops(m, task)))
    if name == "step-flops":
        return Resource("step-flops", "FLOPs", lambda m: float(step_flops(m)))
    if name == "params":
        return Resource("params", "bytes", lambda m: float(parameter_bytes(m)))
    if name == "host-latency":
        return Resource("host-latency", "ms", lambda m: host_latency(m, task))
    if name == "latency":
        if latency_meter is None:
            raise ValueError("resource 'latency' is timed on the target: give a latency meter (autlearn prune "
                             "--transport), or use host-latency for PyTorch on this machine")
        return Resource("latency", "ms", lambda m: latency_meter(m, task), grid=MEASURED_GRID)
    raise ValueError(f"unknown resource {name!r}; choose one of: {', '.join(RESOURCE_NAMES)}")
