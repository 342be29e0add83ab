"""The cloud pipeline end to end on the tiny nwp preset: pretrain (resumable), prune, export,
build, and the CLI's errors. Real data (the installed public corpus), real files."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import cloud_pretrain.train
from autlearn.cli import main
from cloud_pretrain.checkpoint import load_checkpoint
from cloud_pretrain.models import example_input
from cloud_pretrain.pretrain import pretrain

STEPS = 12  # per epoch: enough to move the weights, few enough to stay fast


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    assert main(["pretrain", "--task", "nwp", "--preset", "tiny", "--out", str(out), "--epochs", "2",
                 "--steps-per-epoch", str(STEPS)]) == 0
    return out


def test_pretrain_writes_checkpoint_vocab_metrics_and_figure(tiny_run):
    model, meta = load_checkpoint(tiny_run / "checkpoint.pt")
    assert meta["task"] == "nwp" and len(meta["vocab"]) == 10_002
    assert (tiny_run / "vocab.txt").read_text().split("\n")[:2] == ["<pad>", "<unk>"]
    assert json.loads((tiny_run / "metrics.json").read_text()) == meta["metrics"]
    history, classes = meta["metrics"]["history"], len(meta["vocab"])
    assert [h["epoch"] for h in history] == [1, 2]
    start = min(history[0]["train_loss"], math.log(classes))  # an untrained model's loss is about ln(classes)
    assert history[-1]["train_loss"] < start - 1.0 and history[-1]["val_loss"] < math.log(classes) - 1.0
    assert all(1 / classes < h["val_accuracy"] < 1 for h in history)  # above chance
    assert (tiny_run / "pretrain_accuracy.png").stat().st_size > 1000
    assert model(example_input("nwp", model, batch=2)).shape == (2, 10_002)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, tiny_run, monkeypatch):
    """Killed mid-epoch 2 after a resumable checkpoint, then rerun: same weights as one go."""
    real_step, calls = cloud_pretrain.train.train_step, []

    def dies_at_step_18(*args):
        calls.append(1)
        if len(calls) == STEPS + 6:
            raise KeyboardInterrupt("killed")
        return real_step(*args)

    monkeypatch.setattr(cloud_pretrain.train, "train_step", dies_at_step_18)
    kwargs = {"epochs": 2, "steps_per_epoch": STEPS, "checkpoint_every": 4}
    with pytest.raises(KeyboardInterrupt):
        pretrain("nwp", "tiny", tmp_path, **kwargs)
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    assert (state["epoch"], state["step"]) == (1, 4)
    monkeypatch.setattr(cloud_pretrain.train, "train_step", real_step)
    resumed, _ = load_checkpoint(pretrain("nwp", "tiny", tmp_path, **kwargs))
    at_once, _ = load_checkpoint(tiny_run / "checkpoint.pt")
    for name, tensor in at_once.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], tensor, atol=1e-6), name


def test_prune_emits_smaller_models_within_budget_and_a_table(tmp_path, tiny_run, capsys):
    out = tmp_path / "prune"
    assert main(["prune", "--task", "nwp", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--resource", "params",
                 "--budgets", "80%,60%", "--out", str(out), "--preset", "tiny"]) == 0
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["model"] for r in rows] == ["unpruned", "budget-1", "budget-2"]
    unpruned = float(rows[0]["resource"])
    for row, fraction in zip(rows[1:], (0.8, 0.6)):
        assert float(row["resource"]) <= fraction * unpruned
        model, meta = load_checkpoint(out / row["model"] / "checkpoint.pt")
        assert sum(p.numel() * 4 for p in model.parameters()) == int(row["param_bytes"])
        assert meta["metrics"]["budget"] == row["budget"]
    assert (out / "pruning.png").is_file() and (out / "steptime.png").is_file()
    assert "fastest within 1 point of accuracy" in capsys.readouterr().out


def test_export_writes_programs_that_compute_the_model(tmp_path, tiny_run):
    assert main(["export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--out", str(tmp_path),
                 "--seq-lengths", "5"]) == 0
    model, _ = load_checkpoint(tiny_run / "checkpoint.pt")
    program = torch.export.load(tmp_path / "model_l5.pt2")
    x = example_input("nwp", model, batch=7, length=5)  # another batch size than exported with
    assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    assert (tmp_path / "model_l5.onnx").stat().st_size > 10_000  # checked against PyTorch by export


def test_cli_errors_are_one_line_naming_the_problem(tmp_path, tiny_run, capsys):
    assert main(["prune", "--task", "nwp", "--checkpoint", str(tmp_path / "none.pt"), "--budgets", "50%",
                 "--out", str(tmp_path)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["prune", "--task", "image", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--budgets", "50%",
                 "--out", str(tmp_path)]) == 2
    assert "is a nwp checkpoint, not image" in capsys.readouterr().err
    assert main(["prune", "--task", "nwp", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--budgets", "half",
                 "--out", str(tmp_path)]) == 2
    assert "'half' is not a number" in capsys.readouterr().err
    assert main(["pretrain", "--task", "nwp", "--preset", "tiny", "--out", str(tiny_run), "--seed", "3"]) == 2
    assert "holds a run of" in capsys.readouterr().err


@pytest.mark.slow
def test_build_pretrains_prunes_and_compiles_a_bundle(tmp_path, capsys):
    """The whole cloud side in one command, ending in a bundle of the chosen model."""
    assert main(["build", "--task", "nwp", "--preset", "tiny", "--budgets", "70%", "--train-batch", "8",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "pretrain" / "checkpoint.pt").is_file()
    assert (tmp_path / "prune" / "budget-1" / "checkpoint.pt").is_file()
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    chosen = printed.split("fastest within 1 point of accuracy: ")[1].split()[0]
    source = tmp_path / ("pretrain" if chosen == "unpruned" else f"prune/{chosen}") / "checkpoint.pt"
    model, _ = load_checkpoint(source)
    assert manifest["model"] == "nwp" and manifest["num_classes"] == 10_002
    assert manifest["tokenizer"]["vocab_file"] == manifest["labels_file"] == "vocab.txt"
    assert manifest["synonyms_file"] == "synonyms.json" and manifest["augmentation"] == "text"
    assert manifest["cut"]["shape"][1:] == [model.config["hidden2_size"]]  # the chosen model was compiled
    assert manifest["train_batch"] == 8  # build takes the compile flags


@pytest.mark.parametrize("command", ["pretrain", "prune", "export", "build"])
def test_every_cloud_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and "--out" in capsys.readouterr().out
