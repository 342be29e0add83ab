"""`bench cache` end to end on a tiny recipe model: both workers run, the JSON has the figures."""
import json

from autlearn.bench_cache import run_cache_benchmark


def test_cache_benchmark_reports_speedup_and_rss(tmp_path):
    work = tmp_path / "work"
    result = run_cache_benchmark("nwp", work=work, samples=64, repeats=3, preset="tiny", json_path=tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["cache_speedup"] == result["cache_speedup"] > 1.0
    assert 0 < saved["rss_ratio_vs_torch"] < 1.0  # the device process never loads torch
    assert saved["device"]["torch_loaded"] is False and saved["device"]["updates"] == 64 // 16
    assert saved["device"]["recompute_learn_ms_per_labelled"] > saved["device"]["cache_learn_ms_per_labelled"]
    assert 0 < saved["torch"]["rss_after_imports_kib"] <= saved["torch"]["peak_rss_kib"]
    assert saved["torch"]["packages_loaded"] == ["torch"]  # not torchvision, TVM or the cloud packages
    assert "torch" not in saved["device"]["packages_loaded"] and "tvm" in saved["device"]["packages_loaded"]
    assert (work / "bench_cache.png").stat().st_size > 1000
