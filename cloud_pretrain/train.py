"""Training and evaluation over length-bucketed tensors, for pretraining and pruning alike.

Data is `Buckets`: `{key: (x, y)}`; nwp keys are context lengths (a batch never mixes
lengths), image has one bucket. An epoch is a seeded plan of batches (shuffled within and
across buckets), so a run is reproducible and a resumed run skips exactly the steps done.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cloud_pretrain.distributed import World

Buckets = dict[int, tuple[torch.Tensor, torch.Tensor]]
Batch = tuple[int, torch.Tensor]  # (bucket key, example indices)
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs of at most `steps_per_epoch` steps (None: the whole data)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    steps_per_epoch: int | None = None
    checkpoint_every: int = 200  # steps between resumable checkpoints inside an epoch

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs, batch size and learning rate must be positive: {self}")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def count_examples(buckets: Buckets) -> int:
    return sum(len(y) for _, y in buckets.values())


def batch_plan(buckets: Buckets, batch_size: int, seed: int, epoch: int, world: World = World(),
               max_steps: int | None = None) -> list[Batch]:
    """This rank's batches for `epoch`: the same seeded plan on every rank, dealt round-robin.

    Within a bucket the last partial batch is dropped (batch norm needs more than one
    example), unless it is the bucket's only batch. Every rank gets the same number of steps.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    plan: list[Batch] = []
    for key in sorted(buckets):
        n = len(buckets[key][1])
        perm = torch.randperm(n, generator=g)
        full = max(1, n // batch_size) if n > 1 else 0
        plan += [(key, perm[i * batch_size:(i + 1) * batch_size]) for i in range(full)]
    plan = [plan[i] for i in torch.randperm(len(plan), generator=g).tolist()]
    if max_steps is not None:
        plan = plan[:max_steps * world.size]
    per_rank = len(plan) // world.size
    if per_rank == 0:
        raise ValueError(f"{count_examples(buckets)} training examples make no batch of {batch_size} "
                         f"for each of {world.size} processes")
    return plan[world.rank::world.size][:per_rank]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step on cross-entropy; returns the batch loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, buckets: Buckets, plan: list[Batch],
              world: World = World(), desc: str = "train",
              after_step: Callable[[int], None] | None = None, first_step: int = 0) -> float:
    """Trains on `plan[first_step:]` with a progress bar; returns the mean loss of those steps."""
    model.train()
    total, steps = 0.0, 0
    bar = tqdm(range(first_step, len(plan)), desc=desc, disable=None if world.is_main else True, leave=False,
               dynamic_ncols=True, initial=first_step, total=len(plan))
    for step in bar:
        key, idx = plan[step]
        x, y = buckets[key]
        loss = train_step(model, optimizer, x[idx].to(world.device), y[idx].to(world.device))
        if not math.isfinite(loss):
            raise RuntimeError(f"{desc}: the loss became {loss} at step {step}: lower the learning rate")
        total, steps = total + loss, steps + 1
        bar.set_postfix(loss=f"{total / steps:.3f}")
        if after_step is not None:
            after_step(step + 1)
    return total / max(steps, 1)


@torch.no_grad()
def evaluate(model: nn.Module, buckets: Buckets, world: World = World(), batch_size: int = 512) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy; ranks split the batches and sum their counts."""
    was_training = model.training
    model.eval()
    loss_sum = correct = count = 0.0
    batches = [(key, start) for key in sorted(buckets) for start in range(0, len(buckets[key][1]), batch_size)]
    for key, start in batches[world.rank::world.size]:
        x, y = (t[start:start + batch_size].to(world.device) for t in buckets[key])
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(dim=1) == y).sum())
        count += len(y)
    loss_sum, correct, count = world.sum([loss_sum, correct, count])
    model.train(was_training)
    if count == 0:
        raise ValueError("no examples to evaluate on")
    return {"loss": loss_sum / count, "accuracy": correct / count}


def fine_tune(model: nn.Module, buckets: Buckets, config: TrainConfig, seed: int, steps: int,
              desc: str = "fine-tune") -> float:
    """`steps` training steps in one process (pruning's recovery); returns the mean loss."""
    optimizer = make_optimizer(model, config)
    done, epoch, loss = 0, 0, 0.0
    while done < steps:
        plan = batch_plan(buckets, config.batch_size, seed, epoch, max_steps=steps - done)
        loss = run_steps(model, optimizer, buckets, plan, desc=desc)
        done, epoch = done + len(plan), epoch + 1
    model.eval()
    return loss


def head(buckets: Buckets, limit: int | None) -> Buckets:
    """At most `limit` examples, the first of each bucket in proportion to its size."""
    total = count_examples(buckets)
    if limit is None or total <= limit:
        return buckets
    return {k: (x[:max(1, limit * len(y) // total)], y[:max(1, limit * len(y) // total)])
            for k, (x, y) in buckets.items()}
