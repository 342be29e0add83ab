"""Compression moves of the search: magnitude filter pruning and low-rank factorisation.

Pruning removes the K units of one group with the smallest L2 norm, and the model shrinks
(every dependent tensor is cut too; nothing is masked). Factorisation lowers the rank of one
layer by K (truncated SVD, cloud_pretrain/lowrank.py). The search sees both as groups of one
namespace: unit groups by their names, rank groups as `<layer>/rank`.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from cloud_pretrain.lowrank import MIN_RANK
from cloud_pretrain.models import StagedModel

MIN_UNITS = 1
RANK_SUFFIX = "/rank"


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


def lower_rank(model: StagedModel, layer: str, k: int) -> StagedModel:
    """Lowers the rank of `layer` by `k` in place (truncated SVD) and returns the model."""
    model.check_rank_group(layer)
    rank = model.rank_groups()[layer]
    if not 0 < k <= rank - MIN_RANK:
        raise ValueError(f"cannot lower the rank {rank} of {layer!r} by {k}: at least {MIN_RANK} must stay")
    model.set_rank(layer, rank - k)
    return model


def search_groups(model: StagedModel, ranks: bool = True) -> dict[str, int]:
    """Every group the search may shrink, with its size: unit groups, then `<layer>/rank`
    groups (with `ranks`)."""
    groups = dict(model.prunable_groups())
    if ranks:
        groups.update({layer + RANK_SUFFIX: rank for layer, rank in model.rank_groups().items()})
    return groups


def shrink(model: StagedModel, group: str, k: int) -> StagedModel:
    """Removes `k` units of a unit group, or `k` of the rank of a `<layer>/rank` group, in place."""
    if group.endswith(RANK_SUFFIX):
        return lower_rank(model, group[:-len(RANK_SUFFIX)], k)
    return prune_units(model, group, k)


def pruned_copy(model: StagedModel, group: str, k: int) -> StagedModel:
    """A shrunk deep copy (`shrink`); `model` is left as it was."""
    return shrink(copy.deepcopy(model), group, k)


def removals(size: int, grid: int | None = None, align: int = 1) -> list[int]:
    """The removals a search may try from a group of `size`, ascending: any (at least one unit
    left), or with `grid` only those leaving multiples of size/grid, and with `align` only those
    leaving a multiple of `align` (compiled kernels vectorise by 8 lanes: a head of 21 inputs
    steps slower than one of 32, BENCHMARKS.md). Alignment is dropped where it leaves nothing."""
    ks = list(range(1, size)) if grid is None else \
        sorted({k for i in range(grid) if 0 < (k := size - max(1, round(size * i / grid))) < size})
    aligned = [k for k in ks if (size - k) % align == 0]
    return aligned or ks


def units_for_target(model: StagedModel, group: str, measure: Callable[[StagedModel], float],
                     target: float, grid: int | None = None, align: int = 1) -> int | None:
    """The fewest units (or ranks) of `group` whose removal brings `measure` to `target` or
    below (binary search over `removals`; resources fall as units go), or None when no removal
    reaches it. `grid` is for measured resources, where every try is a compile and a timing run."""
    ks = removals(search_groups(model)[group], grid, align)
    if not ks:
        return None
    if measure(pruned_copy(model, group, ks[-1])) > target:
        return None
    lo, top = 0, len(ks) - 1
    while lo < top:
        mid = (lo + top) // 2
        if measure(pruned_copy(model, group, ks[mid])) <= target:
            top = mid
        else:
            lo = mid + 1
    return ks[lo]
