"""Transfer-learning step time: what pruning buys the device.

On the device only the trainable part (the cut stage and after) trains, from cut
activations. One step here is that part's forward, cross-entropy, backward and an SGD update
at the device's batch (16), in PyTorch. Competing models are timed side by side: their
repeats interleave in one process, so machine noise hits all of them alike; medians.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from cloud_pretrain.models import DEFAULT_CUT, StagedModel, example_input, split_at

DEVICE_BATCH = 16
DEVICE_LR = 0.05  # compile_bundle's default SGD learning rate


def _step_fn(model: StagedModel, task: str, cut: str | None, batch: int):
    """A closure doing one training step of `model`'s trainable part on fixed cut activations."""
    frozen, trainable = split_at(model, cut or DEFAULT_CUT[task])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        frozen.eval()
        cut_x = frozen(example_input(task, model, batch=batch, generator=g))
    num_classes = model.config["vocab_size" if task == "nwp" else "num_classes"]
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    trainable.train()
    optimizer = torch.optim.SGD(trainable.parameters(), lr=DEVICE_LR)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(trainable(cut_x), labels).backward()
        optimizer.step()

    return step


def compare_step_times(models: dict[str, StagedModel], task: str, *, cut: str | None = None,
                       batch: int = DEVICE_BATCH, repeats: int = 50, warmup: int = 5) -> dict[str, float]:
    """Median milliseconds of one transfer-learning step of each model, measured interleaved.

    The models are copied first: timing trains them, and callers keep theirs unchanged.
    """
    import copy

    steps = {name: _step_fn(copy.deepcopy(model), task, cut, batch) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}
