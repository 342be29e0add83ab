"""Low-rank factorisation by truncated SVD: the factors, the models' rank groups, and a
factorised model compiled and timed through the harness (local transport)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cloud_pretrain.lowrank import LowRankLinear, factorise, svd_factors
from cloud_pretrain.models import build_model, example_input
from cloud_pretrain.prune import lower_rank, prune_units, search_groups, shrink
from cloud_pretrain.resources import count_flops, parameter_bytes

VOCAB = 300

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _nwp():
    torch.manual_seed(0)
    return build_model("nwp", vocab_size=VOCAB, embed_dim=12, hidden_size=16).eval()


def _image():
    torch.manual_seed(0)
    return build_model("image", width_mult=0.25).eval()


def test_svd_factors_are_the_best_rank_r_approximation():
    w = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(w)
    for rank in (1, 5, 12):
        up, down = svd_factors(w, rank)
        assert up.shape == (40, rank) and down.shape == (rank, 12)
        # Eckart-Young: the error is exactly the dropped singular values
        assert torch.linalg.norm(w - up @ down) == pytest.approx(float(s[rank:].norm()), abs=1e-4)
    with pytest.raises(ValueError, match="rank 13 is outside 1..12"):
        svd_factors(w, 13)


def test_factorise_keeps_the_bias_and_truncation_equals_factorising_the_product():
    fc = nn.Linear(12, 30)
    x = torch.randn(5, 12)
    full = factorise(fc, 12)
    assert isinstance(full, LowRankLinear) and torch.allclose(full(x), fc(x), atol=1e-5)
    once, twice = factorise(fc, 4), factorise(factorise(fc, 8), 4)
    assert torch.allclose(once(x), twice(x), atol=1e-4)  # the top-4 subspace is the same


@pytest.mark.parametrize("task", ["nwp", "image"])
def test_full_rank_factorisation_changes_nothing_and_lower_rank_shrinks(task):
    model = _nwp() if task == "nwp" else _image()
    x = example_input(task, model, batch=3)
    want = model(x)
    for layer, rank in model.rank_groups().items():
        same = copy.deepcopy(model)
        same.set_rank(layer, rank)
        assert (same(x) - want).abs().max() <= 1e-4 * want.abs().max(), layer
        small = lower_rank(copy.deepcopy(model), layer, rank - 2)
        assert small.rank_groups()[layer] == 2 and small.config["ranks"] == {layer: 2}
        assert parameter_bytes(small) < parameter_bytes(model) and count_flops(small, task) < count_flops(model, task)
        rebuilt = build_model(task, **small.config)
        rebuilt.load_state_dict(small.state_dict())  # strict: factor shapes come from the config
        assert torch.allclose(rebuilt.eval()(x), small(x), atol=1e-5), layer


def test_pruning_after_factorising_cuts_the_first_factor_and_refits_wide_ranks():
    model = _nwp()
    x = example_input("nwp", model, batch=2)
    model.set_rank("fc", 12)
    model.set_rank("lstm2", 10)
    prune_units(model, "lstm2", 10)  # 6 inputs left to a head of rank 12: refit (exactly) at rank 6
    prune_units(model, "lstm1", 12)  # 4 inputs left to lstm2's projection of rank 10: refit at 4
    assert model.fc.down.weight.shape == (6, 6) and model.lstm2.project.weight.shape == (4, 4)
    assert model.config["ranks"] == {"fc": 6, "lstm2": 4} == {k: model.rank_groups()[k] for k in ("fc", "lstm2")}
    before = model(x)
    rebuilt = build_model("nwp", **model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.allclose(rebuilt.eval()(x), before, atol=1e-5)


def test_search_groups_name_both_moves_and_errors_name_the_choices():
    model = _nwp()
    groups = search_groups(model)
    assert groups == {"embed": 12, "lstm1": 16, "lstm2": 16, "lstm1/rank": 12, "lstm2/rank": 16, "fc/rank": 16}
    assert list(search_groups(model, ranks=False)) == ["embed", "lstm1", "lstm2"]
    assert shrink(copy.deepcopy(model), "fc/rank", 12).rank_groups()["fc"] == 4
    with pytest.raises(ValueError, match="at least 1 must stay"):
        lower_rank(model, "fc", 16)
    with pytest.raises(ValueError, match="unknown factorisable layer 'embed'; this model has: lstm1, lstm2, fc"):
        lower_rank(model, "embed", 1)


def test_a_factorised_model_compiles_trains_its_small_factor_and_is_timed_side_by_side(tmp_path):
    """The compiler's default cut (last linear layer) is the head's second factor; the timing
    clock pushes both bundles through the local transport and times them in one run."""
    from android_harness.transports import LocalTransport
    from autlearn.target_latency import TargetClock

    torch.manual_seed(0)
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=16).eval()
    small = lower_rank(copy.deepcopy(model), "fc", 8)
    clock = TargetClock(LocalTransport(tmp_path / "device"), "", "host", tmp_path / "work", number=2, repeats=3)
    runs = clock.step_times({"unpruned": model, "small": small}, "nwp", runs=2)
    assert len(runs) == 2 and clock._compiled == 2  # compiled once, timed twice
    assert all(set(times) == {"unpruned", "small"} and all(t["update"] > 0 and t["forward"] > 0
                                                          for t in times.values()) for times in runs)
    manifest = json.loads((tmp_path / "work" / "bundle-2" / "manifest.json").read_text())
    assert manifest["params"]["trainable"] == ["fc.up.weight", "fc.up.bias"] and manifest["cut"]["shape"] == [None, 8]
    assert sorted(p.name for p in Path(tmp_path / "device" / "small").iterdir()) == ["forward.so", "update.so"]
    first = clock.latency(small, "nwp")
    assert clock.latency(copy.deepcopy(small), "nwp") == first and clock._compiled == 3  # cached by architecture
