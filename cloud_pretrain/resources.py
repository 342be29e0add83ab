"""Resource(model) for the budgeted search: FLOPs, parameter bytes, or measured latency.

A `Resource` is a name, a unit and a `measure(model) -> float`. FLOPs and bytes are counted
exactly from the layers' shapes; latency is measured by a `LatencyMeter`, a callable that
times one forward pass of a model: `local_latency` times it on this machine, and a meter that
times it on a phone through a device transport plugs in the same way.
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
RESOURCE_NAMES = ("flops", "params", "latency")


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


def local_latency(model: StagedModel, task: str, repeats: int = 20) -> float:
    """Median milliseconds of one inference (batch 1) on this machine, in PyTorch eager."""
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


def make_resource(name: str, task: str, latency_meter: LatencyMeter = local_latency) -> Resource:
    """The resource `name` (flops, params or latency) of a `task` model."""
    if name == "flops":
        return Resource("flops", "FLOPs", lambda m: float(count_flops(m, task)))
    if name == "params":
        return Resource("params", "bytes", lambda m: float(parameter_bytes(m)))
    if name == "latency":
        return Resource("latency", "ms", lambda m: latency_meter(m, task))
    raise ValueError(f"unknown resource {name!r}; choose one of: {', '.join(RESOURCE_NAMES)}")
