"""`bench cache` end to end on the tiny bundle: both workers run, the JSON has the figures."""
import json
import shutil

from android_harness.bench_cache import run_cache_benchmark
from conftest import TINY_VOCAB, tiny_nwp_model


def test_cache_benchmark_reports_speedup_and_rss(tiny_nwp_bundle, tmp_path):
    from cloud_pretrain.checkpoint import save_checkpoint

    work = tmp_path / "work"
    shutil.copytree(tiny_nwp_bundle, work / "bundle")  # the bundle compiled from this very model
    save_checkpoint(work / "checkpoint.pt", tiny_nwp_model(), "nwp", vocab=[f"w{i}" for i in range(TINY_VOCAB)])
    result = run_cache_benchmark("nwp", work=work, samples=64, repeats=3, json_path=tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["cache_speedup"] == result["cache_speedup"] > 1.0
    assert 0 < saved["rss_ratio_vs_torch"] < 1.0  # the device process never loads torch
    assert saved["device"]["torch_loaded"] is False and saved["device"]["updates"] == 64 // 4
    assert saved["device"]["recompute_learn_ms_per_labelled"] > saved["device"]["cache_learn_ms_per_labelled"]
    assert (work / "bench_cache.png").stat().st_size > 1000
