"""`bench cache` end to end on a tiny recipe model: both workers run, the JSON has the figures."""
import json

from autlearn.bench_cache import WAIT_POLICY, run_cache_benchmark, run_worker, save_torch_split, summary


def test_cache_benchmark_reports_speedup_and_rss(tmp_path):
    work = tmp_path / "work"
    result = run_cache_benchmark("nwp", work=work, samples=64, repeats=3, preset="tiny", json_path=tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    device, torch_side = saved["device"], saved["torch"]
    assert saved["cache_speedup"] == result["cache_speedup"] > 1.0
    assert 0 < saved["rss_ratio_vs_torch"] < 1.0  # the device process never loads torch
    assert device["updates"] == 64 // 16
    assert device["recompute_learn_ms_per_labelled"] > device["cache_learn_ms_per_labelled"]
    # Each side loads only what its training needs: no torch/cloud/compiler on the device, and
    # no torchvision, cloud_pretrain, TVM or compiler in PyTorch's process.
    assert device["foreign_modules"] == [] and torch_side["foreign_modules"] == []
    for side, floor in ((device, 20), (torch_side, 200)):  # torch alone is some hundreds of MiB
        assert floor < side["rss_after_imports_mb"] < 4096 and 0 <= side["rss_growth_mb"] < 1024
    assert saved["threads"] == device["threads"] == torch_side["threads"] == 1 and saved["wait_policy"] == WAIT_POLICY
    assert device["thread_env"] == torch_side["thread_env"] == {"OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1",
                                                                **WAIT_POLICY}
    assert "PyTorch RSS" in summary(result) and (work / "bench_cache.png").stat().st_size > 1000


def test_torch_worker_loads_image_split_without_torchvision(tmp_path):
    """The image model is torchvision's MobileNetV2, yet its split trains in a torch-only process."""
    import numpy as np
    import torch

    from cloud_pretrain.recipes import get_task

    recipe = get_task("image")
    model, _ = recipe.random_model("tiny")
    save_torch_split(model, recipe.example_input(model, 1), recipe.example_input(model, 16), tmp_path / "split.pt")
    x = torch.rand(32, *recipe.example_input(model, 1).shape[1:]).numpy()
    np.savez(tmp_path / "stream.npz", x=x, y=np.arange(32) % 62)
    side = run_worker(["torch", "--split", str(tmp_path / "split.pt"), "--stream", str(tmp_path / "stream.npz"),
                       "--repeats", "1", "--lr", "0.05", "--batch", "16"])
    assert side["foreign_modules"] == [] and side["threads"] == 1 and side["total_ms_per_sample"] > 0
    assert 200 < side["rss_after_imports_mb"] < 4096 and 0 <= side["rss_growth_mb"] < 1024


def test_a_bundle_this_runtime_cannot_read_is_rebuilt_not_reused(tiny_nwp_bundle, tmp_path):
    """A work directory left by an older compiler (another manifest format) is not benchmarked."""
    import json
    import shutil

    from autlearn.bench_cache import _current_bundle
    from conftest import write_manifest_json

    assert _current_bundle(tiny_nwp_bundle) and not _current_bundle(tmp_path / "missing")
    stale = tmp_path / "bundle"
    shutil.copytree(tiny_nwp_bundle, stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    write_manifest_json(stale, {**manifest, "format_version": 2})
    assert not _current_bundle(stale)
