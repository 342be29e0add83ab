"""`autlearn bench cache`: what the inference-training cache saves in online learning, and the
device process's memory against PyTorch doing the same training.

Three processes, so each measures only itself: this one prepares (a recipe's model with random
weights, its bundle, the two torch.export programs of its split, a stream); a device worker
(isolated: runtime-only TVM, numpy, no torch) streams the samples through `OnlineLearner` with
the cache and without it (recomputing the forward pass in one batched call per update),
alternating repeats so both see the same machine load; a PyTorch worker, importing torch alone,
runs the same head-only online training in eager mode (batch-1 inference that also returns the
cut activation, then autlearn.torch_step per batch). Each worker reports its RSS after its
imports and its peak.

Run as `python -m autlearn.bench_cache device|torch ...` for the workers; this module imports
nothing heavy at the top, so the device worker never loads torch.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

THREADS = "1"  # both workers single-threaded: a fair comparison on a shared 2-core machine


def _rss_kib() -> int:
    """This process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _peak_rss_kib() -> int:
    """This process's peak RSS. VmHWM, since Linux carries ru_maxrss over fork and exec from the parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _packages_loaded() -> list[str]:
    """Which of the heavy packages this worker has imported: each side loads only what it trains with."""
    return [p for p in ("torch", "torchvision", "tvm", "onnxruntime", "cloud_pretrain", "compiler")
            if p in sys.modules]


def prepare(task: str, work: Path, samples: int, preset: str = "demo", seed: int = 0) -> dict[str, Path]:
    """The recipe's model (random weights) compiled to a bundle, its split as torch.export
    programs (batch-1 inference returning the cut, the head at the training batch), all reused
    when `work` has them, and a labelled stream of random inputs of the bundle's input spec."""
    import numpy as np

    from device_runtime.manifest import sample_input

    work.mkdir(parents=True, exist_ok=True)
    paths = {"bundle": work / "bundle", "forward": work / "forward.pt2", "head": work / "head.pt2",
             "stream": work / "stream.npz"}
    rng = np.random.default_rng(seed)
    if not all(p.exists() for p in (paths["bundle"] / "manifest.json", paths["forward"], paths["head"])):
        import torch

        from cloud_pretrain.recipes import get_task
        from compiler import compile_bundle
        from compiler.torch_parts import split_model

        torch.manual_seed(seed)
        recipe = get_task(task)
        model, meta = recipe.random_model(preset)
        bundle = compile_bundle(model, out=paths["bundle"], **recipe.compile_inputs(model, meta, synonyms=False))
        manifest = json.loads((bundle / "manifest.json").read_text())
        shapes = {f["batch"]: f["input_shape"] for f in manifest["forward_functions"]}  # longest length last
        for key, batch in (("forward", 1), ("head", manifest["train_batch"])):
            x = torch.from_numpy(sample_input(manifest["input"], shapes[batch], rng))
            split = split_model(model, x)
            module, example = (split.forward, x) if key == "forward" else (split.trainable, split.forward(x)[1])
            torch.export.save(torch.export.export(module, (example.detach(),)), paths[key])
    manifest = json.loads((paths["bundle"] / "manifest.json").read_text())
    one = [f["input_shape"] for f in manifest["forward_functions"] if f["batch"] == 1][-1]  # as forward.pt2
    x = sample_input(manifest["input"], [samples, *one[1:]], rng)
    np.savez(paths["stream"], x=x, y=rng.integers(0, manifest["num_classes"], size=samples).astype(np.int64))
    return paths


def device_worker(bundle: Path, stream: Path, repeats: int) -> dict[str, Any]:
    """Online learning on the device runtime, with and without the cache, alternated per repeat."""
    from device_runtime.isolation import isolate_device_process

    isolate_device_process()
    import numpy as np

    from device_runtime.bundle import load_bundle
    from device_runtime.learner import Learner
    from device_runtime.model import DeviceModel
    from device_runtime.online import InferenceCache, OnlineLearner

    loaded = load_bundle(bundle)
    with np.load(stream) as data:
        x, y = data["x"], data["y"]
    after_imports = _rss_kib()

    def one_pass(use_cache: bool) -> tuple[float, float, int]:
        model = DeviceModel(loaded)  # fresh params from the bundle: both modes do the same work
        online = OnlineLearner(model, Learner(model), InferenceCache(len(x)) if use_cache else None)
        infer_s = learn_s = 0.0
        for i in range(len(x)):
            t0 = time.perf_counter()
            key, _ = online.infer(x[i], key=i)
            t1 = time.perf_counter()
            online.feedback(key, int(y[i]), None if use_cache else x[i])
            learn_s += time.perf_counter() - t1
            infer_s += t1 - t0
        return infer_s, learn_s, online.stats.updates

    one_pass(True), one_pass(False)  # warm-up
    runs: dict[str, list[tuple[float, float, int]]] = {"cache": [], "recompute": []}
    for _ in range(repeats):
        runs["cache"].append(one_pass(True))
        runs["recompute"].append(one_pass(False))
    n = len(x)
    result: dict[str, Any] = {"samples": n, "updates": runs["cache"][0][2], "rss_after_imports_kib": after_imports,
                              "peak_rss_kib": _peak_rss_kib(), "packages_loaded": _packages_loaded(),
                              "torch_loaded": "torch" in sys.modules}
    for mode, passes in runs.items():
        result[f"{mode}_learn_ms_per_labelled"] = 1e3 * statistics.median(p[1] for p in passes) / n
        result[f"{mode}_total_ms_per_sample"] = 1e3 * statistics.median(p[0] + p[1] for p in passes) / n
    return result


def torch_worker(forward: Path, head: Path, stream: Path, repeats: int, lr: float, batch: int) -> dict[str, Any]:
    """The same head-only online training in PyTorch eager: infer each sample (keeping its cut
    activation), train the head per batch with the benchmarks' one torch step."""
    import numpy as np
    import torch

    from autlearn.torch_step import TorchHeadStep

    torch.set_num_threads(int(THREADS))
    with np.load(stream) as data:
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    infer = torch.export.load(str(forward)).module()
    trainable = torch.export.load(str(head)).module()
    after_imports = _rss_kib()

    def one_pass() -> float:
        step = TorchHeadStep(trainable, lr)  # fresh params: every pass does the same work
        cuts: list[torch.Tensor] = []
        pending: list[int] = []
        start = time.perf_counter()
        for i in range(len(x)):
            with torch.no_grad():
                logits, cut = infer(x[i:i + 1])
                logits.argmax(1)
            cuts.append(cut)
            pending.append(i)
            if len(pending) == batch:
                step(torch.cat(cuts), y[torch.tensor(pending)])
                cuts, pending = [], []
        return time.perf_counter() - start

    one_pass()
    seconds = statistics.median(one_pass() for _ in range(repeats))
    return {"total_ms_per_sample": 1e3 * seconds / len(x), "rss_after_imports_kib": after_imports,
            "peak_rss_kib": _peak_rss_kib(), "packages_loaded": _packages_loaded()}


def _worker(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": THREADS, "TVM_NUM_THREADS": THREADS}
    done = subprocess.run([sys.executable, "-m", "autlearn.bench_cache", *args], capture_output=True,
                          text=True, env=env, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(result: dict[str, Any], path: Path) -> None:
    """Two panels: learning cost per labelled sample, and peak RSS per process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = result["device"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(["cache", "recompute"], [dev["cache_learn_ms_per_labelled"], dev["recompute_learn_ms_per_labelled"]],
             color=["tab:green", "tab:red"])
    left.set_ylabel("ms per labelled sample")
    left.set_title(f"online learning ({result['task']}): x{result['cache_speedup']:.1f} with the cache")
    right.bar(["device (TVM)", "PyTorch"], [dev["peak_rss_kib"] / 1024, result["torch"]["peak_rss_kib"] / 1024],
              color=["tab:blue", "tab:orange"])
    right.set_ylabel("peak RSS (MiB)")
    right.set_title(f"memory: {result['rss_ratio_vs_torch']:.2f} of PyTorch's")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_cache_benchmark(task: str, *, work: str | Path, samples: int = 320, repeats: int = 5,
                        preset: str = "demo", json_path: str | Path | None = None) -> dict[str, Any]:
    """Prepares, runs both workers and returns (and optionally writes) the figures, with a plot."""
    if samples < 16 or repeats < 1:
        raise ValueError(f"need samples >= 16 and repeats >= 1, got {samples}, {repeats}")
    work = Path(work)
    paths = prepare(task, work, samples, preset)
    manifest = json.loads((paths["bundle"] / "manifest.json").read_text())
    device = _worker(["device", "--bundle", str(paths["bundle"]), "--stream", str(paths["stream"]),
                      "--repeats", str(repeats)])
    torch_side = _worker(["torch", "--forward", str(paths["forward"]), "--head", str(paths["head"]),
                          "--stream", str(paths["stream"]),
                          "--repeats", str(repeats), "--lr", str(manifest["optimizer"]["lr"]),
                          "--batch", str(manifest["train_batch"])])
    result = {"task": task, "samples": samples, "repeats": repeats, "threads": int(THREADS),
              "cache_speedup": device["recompute_learn_ms_per_labelled"] / device["cache_learn_ms_per_labelled"],
              "rss_ratio_vs_torch": device["peak_rss_kib"] / torch_side["peak_rss_kib"],
              "device": device, "torch": torch_side, "plot": str(work / "bench_cache.png")}
    plot(result, work / "bench_cache.png")
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m autlearn.bench_cache")
    sub = parser.add_subparsers(dest="worker", required=True)
    d = sub.add_parser("device")
    d.add_argument("--bundle", type=Path, required=True)
    d.add_argument("--stream", type=Path, required=True)
    d.add_argument("--repeats", type=int, default=5)
    t = sub.add_parser("torch")
    t.add_argument("--forward", type=Path, required=True)
    t.add_argument("--head", type=Path, required=True)
    t.add_argument("--stream", type=Path, required=True)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--batch", type=int, required=True)
    args = parser.parse_args(argv)
    if args.worker == "device":
        result = device_worker(args.bundle, args.stream, args.repeats)
    else:
        result = torch_worker(args.forward, args.head, args.stream, args.repeats, args.lr, args.batch)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
