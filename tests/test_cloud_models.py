"""Models, structural pruning and checkpoints: fast unit tests on small random models."""
from __future__ import annotations

import copy

import pytest
import torch

from cloud_pretrain.checkpoint import load_checkpoint, load_model, read_checkpoint, save_checkpoint
from cloud_pretrain.distributed import World
from cloud_pretrain.models import build_model, example_input, split_at
from cloud_pretrain.prune import prune_units, units_for_target
from cloud_pretrain.resources import count_flops, make_resource, parameter_bytes
from cloud_pretrain.search import SearchConfig, netadapt, parse_budgets
from cloud_pretrain.steptime import compare_step_times
from cloud_pretrain.train import TrainConfig, batch_plan

VOCAB = 300


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial statistics, so that cutting the wrong channel of a BN shows in the output."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(params=["nwp", "image"])
def task_model(request):
    torch.manual_seed(0)
    kwargs = {"vocab_size": VOCAB, "embed_dim": 12, "hidden_size": 16} if request.param == "nwp" else {"width_mult": 0.25}
    model = build_model(request.param, **kwargs).eval()
    _randomise_batchnorm(model)
    return request.param, model


def test_keeping_every_unit_in_any_order_changes_nothing(task_model):
    task, model = task_model
    x = example_input(task, model, batch=3)
    want = model(x)
    for group, size in model.prunable_groups().items():
        permuted = copy.deepcopy(model)
        permuted.keep_units(group, torch.randperm(size))
        got = permuted(x)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max(), group


def test_pruning_shrinks_every_dependent_tensor_and_rebuilds_from_config(task_model):
    task, model = task_model
    x = example_input(task, model, batch=2)
    groups = list(model.prunable_groups().items())
    for group, size in [groups[0], groups[len(groups) // 2], groups[-1]]:  # each kind of group, image included
        pruned = prune_units(copy.deepcopy(model), group, size // 2)
        assert pruned.prunable_groups()[group] == size - size // 2
        assert parameter_bytes(pruned) < parameter_bytes(model), group
        assert count_flops(pruned, task) < count_flops(model, task), group
        assert pruned(x).shape == model(x).shape
        rebuilt = build_model(task, **pruned.config)
        rebuilt.load_state_dict(pruned.state_dict())  # strict: every shape must match


def test_pruning_removes_the_smallest_norm_units():
    torch.manual_seed(0)
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=6).eval()
    norms = model.unit_norms("lstm2")
    kept_before = torch.sort(torch.argsort(norms, descending=True)[:4]).values
    w_before = model.lstm2.lstm.weight_hh_l0.detach().clone()
    prune_units(model, "lstm2", 2)
    # the recurrent weights of the kept units are the old rows and columns of exactly those units
    rows = torch.cat([g * 6 + kept_before for g in range(4)])
    assert torch.equal(model.lstm2.lstm.weight_hh_l0, w_before[rows][:, kept_before])
    assert model.fc.in_features == 4


def test_pruning_rejects_bad_requests(task_model):
    task, model = task_model
    group, size = next(iter(model.prunable_groups().items()))
    with pytest.raises(ValueError, match="at least 1 must stay"):
        prune_units(model, group, size)
    with pytest.raises(ValueError, match="unknown prunable group 'nope'"):
        prune_units(model, "nope", 1)
    with pytest.raises(ValueError, match="distinct"):
        model.keep_units(group, torch.tensor([0, 0]))


def test_units_for_target_is_the_fewest_units_reaching_the_target():
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=16)
    flops = make_resource("flops", "nwp").measure
    target = 0.8 * flops(model)
    k = units_for_target(model, "lstm2", flops, target)
    assert k is not None
    assert flops(prune_units(copy.deepcopy(model), "lstm2", k)) <= target
    assert flops(prune_units(copy.deepcopy(model), "lstm2", k - 1)) > target
    assert units_for_target(model, "embed", flops, 1.0) is None  # no removal gets there


def test_budgets_parse_relative_and_absolute_values():
    budgets = parse_budgets("50%, 3000,75%", unpruned=10_000)
    assert [(b.label, b.value) for b in budgets] == [("75%", 7500), ("50%", 5000), ("3000", 3000)]
    with pytest.raises(ValueError, match="'abc' is not a number"):
        parse_budgets("abc", 1.0)
    with pytest.raises(ValueError, match="must be positive"):
        parse_budgets("-5%", 1.0)


def test_split_at_default_cut_composes_to_the_model(task_model):
    task, model = task_model
    x = example_input(task, model, batch=2)
    frozen, trainable = split_at(model, "fc" if task == "nwp" else "classifier")
    assert torch.allclose(trainable(frozen(x)), model(x))
    with pytest.raises(ValueError, match="unknown cut layer"):
        split_at(model, "nope")


def test_pruned_model_trains_faster_at_the_cut():
    model = build_model("nwp", vocab_size=10_002, embed_dim=16, hidden_size=128)
    pruned = prune_units(copy.deepcopy(model), "lstm2", 112)
    times = compare_step_times({"unpruned": model, "pruned": pruned}, "nwp", repeats=15)
    assert times["pruned"] < times["unpruned"]


def test_checkpoint_round_trip_keeps_pruned_sizes(tmp_path, task_model):
    task, model = task_model
    group, size = list(model.prunable_groups().items())[-1]
    prune_units(model, group, size // 2)
    names = {"vocab": [f"w{i}" for i in range(VOCAB)]} if task == "nwp" else {"labels": [str(i) for i in range(62)]}
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pt", model, task, metrics={"val_accuracy": 0.5}, **names)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # the temp file is gone
    loaded, meta = load_checkpoint(path)
    assert meta["config"] == model.config and meta["metrics"] == {"val_accuracy": 0.5}
    x = example_input(task, model, batch=2)
    assert torch.equal(loaded(x), model(x))
    assert load_model(tmp_path / "run").config == model.config  # a directory finds its checkpoint.pt


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"task": "nwp"}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing config, state_dict, metrics"):
        read_checkpoint(tmp_path / "partial.pt")
    model = build_model("nwp", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="exactly one of vocab"):
        save_checkpoint(tmp_path / "c.pt", model, "nwp", metrics={})
    with pytest.raises(ValueError, match="unknown task 'speech'"):
        build_model("speech")


def test_batch_plan_is_seeded_and_ranks_share_it_without_overlap():
    buckets = {5: (torch.zeros(100, 5), torch.zeros(100)), 10: (torch.zeros(37, 10), torch.zeros(37))}
    one = batch_plan(buckets, 8, seed=3, epoch=0)
    assert [idx.tolist() for _, idx in one] == [idx.tolist() for _, idx in batch_plan(buckets, 8, seed=3, epoch=0)]
    assert [idx.tolist() for _, idx in one] != [idx.tolist() for _, idx in batch_plan(buckets, 8, seed=3, epoch=1)]
    assert len(one) == 100 // 8 + 37 // 8 and all(len(idx) == 8 for _, idx in one)
    ranks = [batch_plan(buckets, 8, seed=3, epoch=0, world=World(rank=r, size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) // 2
    seen = [(key, i) for plan in ranks for key, idx in plan for i in idx.tolist()]
    assert len(seen) == len(set(seen))  # no example twice in one epoch


def test_netadapt_meets_each_budget_and_names_an_unreachable_one():
    torch.manual_seed(0)
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=16)
    g = torch.Generator().manual_seed(0)
    data = {6: (torch.randint(2, VOCAB, (64, 6), generator=g), torch.randint(2, VOCAB, (64,), generator=g))}
    flops = make_resource("flops", "nwp")
    tiny = SearchConfig(step_fraction=0.3, short_steps=1, long_steps=1, eval_examples=32)
    budgets = parse_budgets("60%,30%", flops.measure(model))
    family = netadapt(model, data, data, flops, budgets, TrainConfig(1, 16, 1e-3), tiny, log=lambda _: None)
    assert [m.budget.label for m in family] == ["60%", "30%"]
    for member, budget in zip(family, budgets):
        assert member.resource == flops.measure(member.model) <= budget.value
    assert model.config["hidden2_size"] == 16  # the input model is left whole
    with pytest.raises(RuntimeError, match="out of reach"):
        netadapt(model, data, data, flops, parse_budgets("1", 1.0), TrainConfig(1, 16, 1e-3), tiny, log=lambda _: None)


def test_resources_measure_the_model_and_name_bad_choices():
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=16)
    latency = make_resource("host-latency", "nwp")
    assert latency.unit == "ms" and latency.measure(model) > 0
    with pytest.raises(ValueError, match="timed on the target"):
        make_resource("latency", "nwp")
    assert make_resource("latency", "nwp", lambda m, task: 2.5).measure(model) == 2.5
    assert make_resource("params", "nwp").measure(model) == sum(p.numel() * 4 for p in model.parameters())
    # FLOPs by hand at batch 1, length 10: two LSTMs (4 gates) and the FC layer
    lstm = 10 * 2 * 4 * 16 * ((8 + 16) + (16 + 16))
    assert make_resource("flops", "nwp").measure(model) == lstm + 2 * 16 * VOCAB
    with pytest.raises(ValueError, match="unknown resource 'energy'"):
        make_resource("energy", "nwp")


def test_step_flops_count_what_the_device_trains_and_steer_the_search_to_it():
    """The step's FLOPs are the last linear layer's forward and weight gradient: they follow the
    FC's inputs or its rank, and no other group; so a search on them shrinks only those."""
    torch.manual_seed(0)
    model = build_model("nwp", vocab_size=VOCAB, embed_dim=8, hidden_size=16)
    step = make_resource("step-flops", "nwp")
    assert step.measure(model) == 4 * 16 * VOCAB
    assert step.measure(prune_units(copy.deepcopy(model), "lstm1", 8)) == step.measure(model)
    factorised = copy.deepcopy(model)
    factorised.set_rank("fc", 4)
    assert step.measure(factorised) == 4 * 4 * VOCAB  # only `up` trains at the default cut
    image = build_model("image", width_mult=0.25)
    assert make_resource("step-flops", "image").measure(image) == 4 * image.classifier[1].in_features * \
        image.classifier[1].out_features
    g = torch.Generator().manual_seed(0)
    data = {6: (torch.randint(2, VOCAB, (64, 6), generator=g), torch.randint(2, VOCAB, (64,), generator=g))}
    tiny = SearchConfig(step_fraction=0.3, short_steps=1, long_steps=1, eval_examples=32)
    family = netadapt(model, data, data, step, parse_budgets("40%", step.measure(model)), TrainConfig(1, 16, 1e-3),
                      tiny, log=lambda _: None)
    small = family[0].model.config
    assert (small["embed_dim"], small["hidden_size"]) == (8, 16)
    assert small["hidden2_size"] < 16 or small["ranks"].get("fc", 16) < 16
