"""Magnitude filter pruning: one round removes the K units of one group with the smallest
L2 norm, and the model shrinks (every dependent tensor is cut too; nothing is masked)."""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from cloud_pretrain.models import StagedModel

MIN_UNITS = 1


def prune_units(model: StagedModel, group: str, k: int) -> StagedModel:
    """Removes the `k` lowest-norm units of `group` in place and returns the model."""
    model.check_group(group)
    size = model.prunable_groups()[group]
    if not 0 < k <= size - MIN_UNITS:
        raise ValueError(f"cannot remove {k} of the {size} units of {group!r}: at least {MIN_UNITS} must stay")
    norms = model.unit_norms(group)
    keep = torch.sort(torch.argsort(norms, descending=True)[:size - k]).values
    model.keep_units(group, keep)
    return model


def pruned_copy(model: StagedModel, group: str, k: int) -> StagedModel:
    """A pruned deep copy; `model` is left as it was."""
    return prune_units(copy.deepcopy(model), group, k)


def units_for_target(model: StagedModel, group: str, measure: Callable[[StagedModel], float],
                     target: float) -> int | None:
    """The fewest units of `group` whose removal brings `measure` to `target` or below
    (binary search; resources fall as units go), or None when no removal reaches it."""
    size = model.prunable_groups()[group]
    lo, hi = 1, size - MIN_UNITS
    if hi < lo or measure(pruned_copy(model, group, hi)) > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if measure(pruned_copy(model, group, mid)) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
