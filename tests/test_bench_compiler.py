"""`autlearn bench compiler` on a tiny checkpoint: real compile, PyTorch and ORT training side by side."""
from __future__ import annotations

import json
import time

import pytest
from conftest import TINY_WORDS, tiny_nwp_model

from autlearn.bench_compiler import time_side_by_side
from autlearn.cli import main

FIGURES = ("update_speedup_vs_torch", "forward_speedup_vs_torch", "update_speedup_vs_ort", "update_gflops")


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
    assert result["threads"] == [1] and set(result["untuned"]) == {"1"} and "tuned" not in result
    figures = result["untuned"]["1"]
    for key in FIGURES:
        assert figures[key] > 0, key
    assert "task" not in result and result["model"] == "nwp" and result["cut"] == "fc"  # the recipe's name
    assert result["tuned_trials"] == 0 and result["tuning_seconds"] == 0
    ms = result["ms"]["1"]
    peers = {"torch", "ort"} | ({"executorch"} if result["executorch"] == "ran" else set())
    assert set(ms["update"]) == peers | {"tvm_untuned"}
    assert set(ms["forward"]) == {"torch", "tvm_untuned"}
    assert all(v > 0 for v in [*ms["update"].values(), *ms["forward"].values()])
    assert figures["update_speedup_vs_ort"] == pytest.approx(ms["update"]["ort"] / ms["update"]["tvm_untuned"])
    assert figures["update_gflops"] == pytest.approx(result["update_flops"] / (ms["update"]["tvm_untuned"] * 1e6))
    assert result["update_flops"] > 0 and result["wait_policy"]["TVM_THREAD_POOL_SPIN_COUNT"] == "0"
    assert result["compile_seconds"]["tvm_untuned"] > 0
    peak = result["peak"]["1"]  # measured: no compiled step can run faster than independent FMAs
    assert 0 < figures["update_gflops"] < peak["gflops"] and peak["cores"] == 1
    assert json_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_implementation_agrees_on_the_first_and_second_step_loss(bench_result):
    """The same second-step loss proves the first updates were the same."""
    result = bench_result[0]
    for key in ("first_step_loss", "second_step_loss"):
        losses = result[key]["1"]
        assert {"torch", "ort", "tvm_untuned"} <= set(losses)
        for name, value in losses.items():
            assert value == pytest.approx(losses["torch"], rel=1e-4), (key, name)
    assert result["second_step_loss"]["1"]["torch"] != result["first_step_loss"]["1"]["torch"]


def test_side_by_side_timing_ranks_a_slower_function_slower():
    times = time_side_by_side({"fast": lambda: None, "slow": lambda: time.sleep(0.002)},
                              warmup=1, repeats=5, progress=False)
    assert times["slow"] >= 2.0 > times["fast"]


def test_side_by_side_rounds_rotate_so_no_function_always_follows_the_same_one():
    calls: list[str] = []
    time_side_by_side({name: (lambda n=name: calls.append(n)) for name in "abc"}, warmup=0, repeats=3, block=1,
                      progress=False)
    assert "".join(calls) == "abcbcacab"


def test_bad_thread_count_is_one_clear_error(capsys):
    assert main(["bench", "compiler", "--task", "image", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["bench", "compiler", "--task", "image", "--threads", "one"]) == 2
    assert "thread counts separated by commas" in capsys.readouterr().err


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
    for row in profile["update"]:  # the module's kernels are also timed alone; the runtime's builtins are not
        assert (row["alone_ms"] is None) == row["name"].startswith("vm.builtin."), row
        assert row["alone_ms"] is None or row["alone_ms"] > 0, row
    # the weight gradient and its SGD step are one kernel (compiler/graph.py inlines the optimizer)
    assert any(name.startswith("fused_TN_matmul") and "_multiply" in name and "_subtract" in name
               for name in kernels), kernels
    # the cross-entropy and its gradient over the logits are one kernel (compiler/cross_entropy.py)
    assert "softmax_cross_entropy" in kernels and not any("log_softmax" in name for name in kernels), kernels


def test_the_tables_go_between_their_markers_and_replace_the_old_ones(bench_result, tmp_path):
    from autlearn.bench_compiler import markdown_tables, replace_section

    result = bench_result[0]
    text = markdown_tables(result, "autlearn bench compiler --task nwp")
    assert "| update step, ms |" in text and "untuned, 1 thread(s): update x" in text
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nkept above\n")
    replace_section(doc, "bench compiler nwp", text)
    replace_section(doc, "bench compiler nwp", "second version")
    written = doc.read_text()
    assert written.count("<!-- bench compiler nwp -->") == 1 and "second version" in written
    assert "kept above" in written and "| update step, ms |" not in written
