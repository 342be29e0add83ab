"""`autlearn bench compiler` on a tiny checkpoint: real compile, PyTorch and ORT training side by side."""
from __future__ import annotations

import json
import time

import pytest
from conftest import TINY_WORDS, tiny_nwp_model

from autlearn.bench_compiler import time_side_by_side
from autlearn.cli import main

REQUIRED_KEYS = ("update_speedup_vs_torch", "forward_speedup_vs_torch", "update_speedup_vs_ort", "tuned_trials")


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory):
    from cloud_pretrain.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("bench")
    ckpt = save_checkpoint(root / "checkpoint.pt", tiny_nwp_model(), "nwp", vocab=TINY_WORDS)
    json_path = root / "result.json"
    # One thread: TVM's pool may already be running in this test process, and it only shrinks.
    code = main(["bench", "compiler", "--task", "nwp", "--checkpoint", str(ckpt), "--json", str(json_path),
                 "--threads", "1", "--repeats", "3", "--warmup", "1", "--work-dir", str(root / "bundles"),
                 "--tuning-db", str(root / "db"), "--profile"])
    assert code == 0
    return json.loads(json_path.read_text()), json_path


def test_json_has_the_figures_and_a_chart(bench_result):
    result, json_path = bench_result
    for key in REQUIRED_KEYS:
        assert key in result
    assert "task" not in result and result["model"] == "nwp" and result["cut"] == "fc"  # the recipe's name
    assert result["tuned_trials"] == 0 and result["compared"] == "tvm_untuned"
    assert set(result["update_ms"]) == {"torch", "ort", "tvm_untuned"}
    assert set(result["forward_ms"]) == {"torch", "tvm_untuned"}
    assert all(v > 0 for v in [*result["update_ms"].values(), *result["forward_ms"].values()])
    assert result["update_speedup_vs_ort"] == pytest.approx(result["update_ms"]["ort"] / result["update_ms"]["tvm_untuned"])
    assert result["compile_seconds"]["tvm_untuned"] > 0
    assert json_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_three_implementations_agree_on_the_loss(bench_result):
    losses = bench_result[0]["first_step_loss"]
    assert set(losses) == {"torch", "ort", "tvm_untuned"}
    for name, value in losses.items():
        assert value == pytest.approx(losses["torch"], rel=1e-4), name


def test_side_by_side_timing_ranks_a_slower_function_slower():
    times = time_side_by_side({"fast": lambda: None, "slow": lambda: time.sleep(0.002)},
                              warmup=1, repeats=5, progress=False)
    assert times["slow"] >= 2.0 > times["fast"]


def test_bad_thread_count_is_one_clear_error(capsys):
    assert main(["bench", "compiler", "--task", "image", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_a_checkpoint_of_another_task_is_one_clear_error(bench_result, capsys):
    ckpt = bench_result[1].parent / "checkpoint.pt"
    assert main(["bench", "compiler", "--task", "image", "--checkpoint", str(ckpt), "--threads", "1"]) == 2
    assert "is for task 'nwp', not 'image'" in capsys.readouterr().err


def test_profile_lists_each_modules_kernels_with_their_shares(bench_result):
    profile = bench_result[0]["profile"]["tvm_untuned"]
    assert set(profile) == {"update", "forward"}
    for module, rows in profile.items():
        assert sum(row["share"] for row in rows) == pytest.approx(1.0, abs=1e-3), module
        assert [row["ms"] for row in rows] == sorted((row["ms"] for row in rows), reverse=True)
        assert all(row["calls"] >= 1 for row in rows)
    kernels = {row["name"] for row in profile["update"]}
    assert any("matmul" in name for name in kernels) and "backbone_loss_adjoint" in kernels  # nested: self time
