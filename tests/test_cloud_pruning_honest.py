"""The compression search's honesty and its shrink moves: a search split apart from the
held-out split, aligned and gridded removals, and the family's summary."""
from __future__ import annotations

import pytest
import torch

from cloud_pretrain import family, search
from cloud_pretrain.family import best_within_tolerance, family_summary, split_validation
from cloud_pretrain.models import build_model
from cloud_pretrain.prune import removals
from cloud_pretrain.resources import make_resource
from cloud_pretrain.search import SearchConfig, netadapt, parse_budgets
from cloud_pretrain.train import TrainConfig

VOCAB = 200

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _buckets(n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randint(2, VOCAB, (n, k), generator=g), torch.randint(2, VOCAB, (n,), generator=g))
            for k in (4, 6)}


def test_removals_leave_aligned_and_gridded_sizes():
    assert removals(5) == [1, 2, 3, 4]
    assert removals(32, align=8) == [8, 16, 24]
    assert removals(128, grid=8) == [16, 32, 48, 64, 80, 96, 112, 127]
    assert removals(128, grid=8, align=8) == [16, 32, 48, 64, 80, 96, 112]
    assert removals(6, align=8) == [1, 2, 3, 4, 5]  # alignment that leaves nothing is dropped


def test_validation_splits_are_disjoint_complete_and_seeded():
    val = _buckets(41)
    search_split, held_out = split_validation(val)
    for key, (x, y) in val.items():
        rows = {tuple(r.tolist()) + (int(t),) for r, t in zip(x, y)}
        got_s = {tuple(r.tolist()) + (int(t),) for r, t in zip(*search_split[key])}
        got_h = {tuple(r.tolist()) + (int(t),) for r, t in zip(*held_out[key])}
        assert not got_s & got_h and got_s | got_h == rows and len(held_out[key][1]) == 20
    again = split_validation(val)[1]
    assert all(torch.equal(again[k][0], held_out[k][0]) for k in val)
    with pytest.raises(ValueError, match="held-out fraction"):
        split_validation(val, 1.0)


def test_the_search_scores_only_on_its_split_and_may_factorise(monkeypatch):
    """Every evaluation inside netadapt reads the search split's tensors, never the held-out's."""
    torch.manual_seed(0)
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=16)
    search_split, held_out = split_validation(_buckets(64))
    seen = []
    real = search.evaluate
    monkeypatch.setattr(search, "evaluate", lambda m, b: seen.append(b) or real(m, b))
    params = make_resource("params", "nwp")
    budgets = parse_budgets("60%,40%", params.measure(model))
    config = SearchConfig(step_fraction=0.3, short_steps=1, long_steps=1, eval_examples=32)
    members = netadapt(model, _buckets(64, seed=1), search_split, params, budgets, TrainConfig(1, 16, 1e-3), config,
                       log=lambda _: None)
    held = {b[0].data_ptr() for b in held_out.values()}
    searched = {b[0].data_ptr() for b in search_split.values()}
    assert seen and all({x.data_ptr() for x, _ in b.values()} <= searched for b in seen)
    assert not any({x.data_ptr() for x, _ in b.values()} & held for b in seen)
    assert all(m.resource <= b.value for m, b in zip(members, budgets))
    value = params.measure(model)
    offered = dict(search._proposals(model, params, value, 0.8 * value, config))
    assert {"fc/rank", "lstm2"} <= set(offered)  # factorisation competes with pruning
    assert "fc/rank" not in dict(search._proposals(model, params, value, 0.8 * value,
                                                   SearchConfig(factorise=False)))


def test_speedups_are_ratios_within_each_timing_run_then_their_median():
    """A slow run slows every model in it: ratios taken within runs cancel it, medians of raw
    times across runs would not."""
    rows = [{"model": "unpruned"}, {"model": "small"}]
    runs = [{"unpruned": {"update": 4.0, "forward": 1.0}, "small": {"update": 1.0, "forward": 0.5}},
            {"unpruned": {"update": 8.0, "forward": 2.0}, "small": {"update": 2.0, "forward": 1.0}},
            {"unpruned": {"update": 5.0, "forward": 1.0}, "small": {"update": 2.5, "forward": 0.5}}]
    family.add_step_times(rows, runs)
    assert rows[1]["step_speedup_runs"] == [4.0, 4.0, 2.0] and rows[1]["step_speedup"] == 4.0
    assert rows[1]["step_ms"] == 2.0 and rows[0]["step_ms"] == 5.0 and rows[0]["step_speedup"] == 1.0
    assert family._speedups(rows[1]) == "4.00x (2.00-4.00)"


def test_the_goal_is_judged_on_held_out_and_the_pick_on_the_search_split():
    rows = [{"model": "unpruned", "accuracy": 0.20, "search_accuracy": 0.20, "step_ms": 4.0, "step_speedup": 1.0,
             "step_speedup_runs": [1.0]},
            {"model": "a", "accuracy": 0.195, "search_accuracy": 0.17, "step_ms": 2.0, "step_speedup": 2.0,
             "step_speedup_runs": [2.0]},
            {"model": "b", "accuracy": 0.17, "search_accuracy": 0.199, "step_ms": 1.0, "step_speedup": 4.0,
             "step_speedup_runs": [4.0]}]
    assert best_within_tolerance(rows)["model"] == "a"
    assert best_within_tolerance(rows, key="search_accuracy")["model"] == "b"
    summary = family_summary(rows, task="nwp")
    assert summary["best_within_1pt_speedup"] == 2.0 and summary["picked_on_search_split"]["model"] == "b"
    assert summary["picked_on_search_split"]["accuracy"] == 0.17 and summary["tolerance"] == family.ACCURACY_TOLERANCE
