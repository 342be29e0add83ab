"""The paper's experiments at test size: `eval accuracy` (every mode, FedAvg on Flower's real
simulation engine, the device path) and `eval cost` on tiny pretrained checkpoints."""
from __future__ import annotations

import json

import pytest

from autlearn.cli import main
from autlearn.eval_head import Head
from autlearn.eval_stats import paired_gain, summarise

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain-image")
    assert main(["--quiet", "pretrain", "--task", "image", "--preset", "tiny", "--out", str(out),
                 "--steps-per-epoch", "10"]) == 0
    return out / "checkpoint.pt"


def test_summaries_are_means_with_a_t_interval():
    s = summarise({"a": 0.5, "b": 0.7, "c": 0.6})
    assert s["mean"] == 60.0 and s["per_user"] == {"a": 50.0, "b": 70.0, "c": 60.0}
    assert s["ci95"] == pytest.approx(4.303 * 10 / 3 ** 0.5, abs=0.01)  # t(0.975, 2) x sd / sqrt(n)
    assert summarise({"a": 0.4})["ci95"] == 0.0
    assert paired_gain({"a": 0.5, "b": 0.9}, {"a": 0.4, "b": 0.6})["mean"] == 20.0
    with pytest.raises(ValueError, match="no user"):
        summarise({"a": float("nan")})


def test_the_numpy_head_learns_like_sgd():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (x @ rng.standard_normal((8, 4))).argmax(axis=1)
    head = Head(np.zeros((4, 8), np.float32), np.zeros(4, np.float32))
    assert head.accuracy(x, y) < 0.5
    assert head.train(x, y, epochs=5, lr=0.5, batch=16, seed=0).accuracy(x, y) > 0.9


def test_eval_accuracy_runs_every_mode_on_the_device_path_and_flower(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "accuracy.json"
    assert main(["--quiet", "eval", "accuracy", "--task", "image", "--checkpoint", str(tiny_checkpoint),
                 "--users", "2", "--epochs", "1", "--json", str(out), "--work", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    for mode in ("pretrained", "autlearn", "autlearn_no_augmentation", "cloudtrain", "cloudcustomize", "fedavg",
                 "online", "online_pretrained", "device_pretrained"):
        assert set(report[mode]) == {"mean", "ci95", "per_user"} and len(report[mode]["per_user"]) == 2, mode
        assert 0 <= report[mode]["mean"] <= 100
    # the device evaluates the same model as PyTorch before it learns
    assert report["device_pretrained"]["per_user"] == pytest.approx(report["pretrained"]["per_user"], abs=0.01)
    assert isinstance(report["augmentation_gain"], float) and isinstance(report["online_gain"], float)
    assert report["fedavg_setup"] == {"rounds": 1, "clients_per_round": 2, "local_epochs": 1,
                                      "engine": "flwr.simulation.run_simulation (Ray backend)"}
    assert report["online_curve"] and set(report["goals"]) >= {"autlearn above pretrained"}
    assert out.with_suffix(".png").is_file() and "fedavg" in capsys.readouterr().out


def test_eval_cost_times_every_configuration_side_by_side(tiny_checkpoint, tmp_path):
    out = tmp_path / "cost.json"
    assert main(["--quiet", "eval", "cost", "--task", "image", "--checkpoint", str(tiny_checkpoint),
                 "--repeats", "3", "--json", str(out), "--work", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert set(report["ms_per_sample"]) == {"autlearn", "autlearn_uncompressed", "pytorch_eager", "ort_training",
                                            "online_cache", "online_no_cache"}
    assert all(v > 0 for v in report["ms_per_sample"].values())
    assert report["speedup_vs_pytorch"] > 0 and report["days_at_120_min"]["autlearn"] > 0
    assert report["samples_per_user"] > 50 and out.with_suffix(".png").is_file()
