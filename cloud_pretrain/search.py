"""Budgeted compression search, after NetAdapt (Yang et al., 2018).

Maximise accuracy subject to Resource(model) <= Budget. Each iteration asks for a fixed drop of
the resource (a fraction of the unpruned model's); every group proposes the smallest shrink that
reaches it: the fewest lowest-norm units of a unit group, or the least rank of a factorisable
layer (truncated SVD), so one model may mix both. Each proposal is briefly fine-tuned and
scored on the search split, and the most accurate one is kept. When a budget is met the model
is fine-tuned longer, scored on the search split, a copy joins the family, and the next,
smaller budget continues from it. The search never sees any other data: the family is judged
on a held-out split by the caller (cloud_pretrain/family.py).
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch

from cloud_pretrain.models import StagedModel
from cloud_pretrain.prune import pruned_copy, search_groups, units_for_target
from cloud_pretrain.resources import Resource
from cloud_pretrain.train import Buckets, TrainConfig, evaluate, fine_tune, head


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Sizes of the search: how far one iteration prunes and how long models recover."""

    step_fraction: float = 0.1  # resource removed per iteration, as a fraction of the unpruned model's
    short_steps: int = 20  # fine-tuning of each proposal
    long_steps: int = 200  # fine-tuning of each family member
    eval_examples: int = 1000  # search-split examples that score proposals
    lr_scale: float = 0.3  # fine-tuning learning rate, relative to pretraining's
    factorise: bool = True  # rank groups (SVD) beside unit groups
    align: int = 1  # sizes left are multiples of this (8: the compiled kernels' vector lanes)


@dataclasses.dataclass(frozen=True)
class Budget:
    """One budget as the user wrote it (`label`) and its value in the resource's unit."""

    label: str
    value: float


@dataclasses.dataclass
class Member:
    """A model of the family, with what it achieved on the search split."""

    budget: Budget
    resource: float
    search_accuracy: float
    model: StagedModel


def parse_budgets(text: str, unpruned: float) -> list[Budget]:
    """`"50%,0.25e6,..."`: a value ending in % is relative to the unpruned model's resource;
    others are absolute (FLOPs, bytes or milliseconds). Returned from largest to smallest."""
    budgets = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        try:
            value = float(item[:-1]) / 100 * unpruned if item.endswith("%") else float(item)
        except ValueError:
            raise ValueError(f"budget {item!r} is not a number or a percentage") from None
        if not value > 0:
            raise ValueError(f"budget {item!r} must be positive")
        budgets.append(Budget(item, value))
    if not budgets:
        raise ValueError(f"no budgets in {text!r}: give a comma-separated list like 75%,50%")
    return sorted(budgets, key=lambda b: -b.value)


def _proposals(model: StagedModel, resource: Resource, value: float, target: float, config: SearchConfig,
               halvings: int = 6) -> list[tuple[str, int]]:
    """(group, units to remove) for each group that alone brings the resource to `target`.
    When no group can, the drop asked for is halved (a few times) rather than giving up."""
    for _ in range(halvings + 1):
        found = [(group, k) for group in search_groups(model, ranks=config.factorise)
                 if (k := units_for_target(model, group, resource.measure, target, resource.grid,
                                           config.align)) is not None]
        if found:
            return found
        target = value - (value - target) / 2
    return []


def netadapt(model: StagedModel, train: Buckets, search: Buckets, resource: Resource, budgets: list[Budget],
             train_config: TrainConfig, config: SearchConfig = SearchConfig(), seed: int = 0,
             on_member: Callable[[Member], None] | None = None,
             log: Callable[[str], None] = print) -> list[Member]:
    """The family of compressed models, one per budget (largest budget first); `search` is the
    only data that scores proposals and members."""
    torch.manual_seed(seed)  # dropout draws from the global generator: one seed, one family
    tune = dataclasses.replace(train_config, lr=train_config.lr * config.lr_scale)
    score_set = head(search, config.eval_examples)
    unpruned = resource.measure(model)
    current, iteration, family = copy.deepcopy(model), 0, []
    for budget in sorted(budgets, key=lambda b: -b.value):
        value = resource.measure(current)
        while value > budget.value:
            iteration += 1
            target = max(value - config.step_fraction * unpruned, budget.value)
            proposals = _proposals(current, resource, value, target, config)
            best: tuple[float, str, int, StagedModel] | None = None
            for group, k in proposals:
                candidate = pruned_copy(current, group, k)
                fine_tune(candidate, train, tune, seed + iteration, config.short_steps, desc=f"try {group} -{k}")
                accuracy = evaluate(candidate, score_set)["accuracy"]
                if best is None or accuracy > best[0]:
                    best = (accuracy, group, k, candidate)
            if best is None:
                raise RuntimeError(f"budget {budget.label} ({budget.value:g} {resource.unit}) is out of reach: "
                                   f"no group can be pruned further below {value:g} {resource.unit}")
            accuracy, group, k, current = best
            value = resource.measure(current)
            log(f"iteration {iteration}: removed {k} of {group}: {resource.name} {value:g} {resource.unit}, "
                f"proposal accuracy {accuracy:.4f} (search split)")
        fine_tune(current, train, tune, seed + 10_000 + iteration, config.long_steps, desc=f"fine-tune {budget.label}")
        member = Member(budget, resource.measure(current), evaluate(current, search)["accuracy"],
                        copy.deepcopy(current))
        log(f"budget {budget.label}: {resource.name} {member.resource:g} {resource.unit}, "
            f"search-split accuracy {member.search_accuracy:.4f}")
        family.append(member)
        if on_member is not None:
            on_member(member)
    return family
