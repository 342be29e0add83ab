"""`autlearn bench cache`: what the inference-training cache saves in online learning, and the
device process's memory against PyTorch doing the same training.

Three processes, so each measures only itself: this one prepares (a recipe's model with random
weights, its bundle, its split pickled as two plain FX modules, a stream); a device worker
(isolated: runtime-only TVM, numpy, no torch) streams the samples through `OnlineLearner` with
the cache and without it (recomputing the forward pass in one batched call per update),
alternating repeats so both see the same machine load; a PyTorch worker runs the same head-only
online training in eager mode (batch-1 inference that also returns the cut activation, then
autlearn.torch_step per batch). The race is fair: the PyTorch worker imports torch, numpy and
autlearn.torch_step only (the split loads with `torch.load`, not through the recipe's model
classes, torchvision or torch.export's tracing stack), both run with the same threads and wait
policy, and each reports the modules it must not have, its RSS after imports and loading, and
its RSS growth during training.

Run as `python -m autlearn.bench_cache device|torch ...` for the workers; this module imports
nothing heavy at the top, so the device worker never loads torch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

THREADS = "1"  # both workers single-threaded: a fair comparison on a shared 2-core machine
# The wait policy of `bench compiler` (autlearn.bench_compiler.WAIT_POLICY, repeated here because
# that module imports torch and the device worker must not): idle threads sleep, none spins.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "TVM_THREAD_POOL_SPIN_COUNT": "0"}
WORKER_ENV = {"OMP_NUM_THREADS": THREADS, "TVM_NUM_THREADS": THREADS, **WAIT_POLICY}
# What the PyTorch worker must not import: the recipe's model code and its torchvision, the compiler, TVM.
TORCH_FOREIGN = frozenset({"torchvision", "cloud_pretrain", "tvm", "compiler"})


def _rss_mb() -> float:
    """This process's resident memory now (/proc/self/statm), in MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM), in MiB. Not ru_maxrss: Linux carries the parent's peak
    into an exec'd child, and this benchmark's parent holds torch and the TVM compiler."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _after_imports() -> float:
    """RSS now, with the peak reset to it (Linux: 5 to clear_refs), so that the peak read after
    training is the training's; where the reset is refused the growth includes the imports' peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _rss_mb()


def _memory(after_imports_mb: float) -> dict[str, float]:
    return {"rss_after_imports_mb": round(after_imports_mb, 1),
            "rss_growth_mb": round(max(0.0, _peak_mb() - after_imports_mb), 1)}


def _foreign_modules(packages: frozenset[str] | tuple[str, ...]) -> list[str]:
    """The loaded modules of `packages`, read after training (so also none imported lazily on the
    way): the proof that a worker loads only what its training needs."""
    return sorted(m for m in sys.modules if m.split(".")[0] in packages)


def _thread_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in WORKER_ENV}


def save_torch_split(model: Any, forward_example: Any, head_example: Any, path: Path) -> None:
    """The PyTorch worker's model: batch-1 inference returning the cut (split at `forward_example`)
    and the trainable head (split at `head_example`, the training batch), as two FX GraphModules
    of ATen ops saved whole. They unpickle with plain torch, so the worker needs neither the
    recipe's model classes (and their torchvision) nor torch.export's loader (which imports
    dynamo and sympy, about 150 MiB more)."""
    import torch

    from compiler.torch_parts import split_model

    torch.save({"forward": split_model(model, forward_example).forward,
                "head": split_model(model, head_example).trainable}, path)


def prepare(task: str, work: Path, samples: int, preset: str = "demo", seed: int = 0) -> dict[str, Path]:
    """The recipe's model (random weights) compiled to a bundle and split for PyTorch, each reused
    when `work` has it, and a labelled stream of random inputs of the bundle's input spec."""
    import numpy as np

    from device_runtime.manifest import sample_input

    work.mkdir(parents=True, exist_ok=True)
    paths = {"bundle": work / "bundle", "torch": work / "torch_split.pt", "stream": work / "stream.npz"}
    rng = np.random.default_rng(seed)
    if not _current_bundle(paths["bundle"]) or not paths["torch"].exists():
        import torch

        from cloud_pretrain.recipes import get_task
        from compiler import compile_bundle

        torch.manual_seed(seed)
        recipe = get_task(task)
        model, meta = recipe.random_model(preset)
        if not _current_bundle(paths["bundle"]):
            compile_bundle(model, out=paths["bundle"], **recipe.compile_inputs(model, meta, synonyms=False))
        manifest = json.loads((paths["bundle"] / "manifest.json").read_text())
        shapes = {f["batch"]: f["input_shape"] for f in manifest["forward_functions"]}  # longest length last
        save_torch_split(model, *(torch.from_numpy(sample_input(manifest["input"], shapes[b], rng))
                                  for b in (1, manifest["train_batch"])), paths["torch"])
    manifest = json.loads((paths["bundle"] / "manifest.json").read_text())
    one = [f["input_shape"] for f in manifest["forward_functions"] if f["batch"] == 1][-1]  # as the forward split
    x = sample_input(manifest["input"], [samples, *one[1:]], rng)
    np.savez(paths["stream"], x=x, y=rng.integers(0, manifest["num_classes"], size=samples).astype(np.int64))
    return paths


def _current_bundle(bundle: Path) -> bool:
    """Whether `bundle` is there and this runtime reads it (one from an older format is rebuilt)."""
    from device_runtime.bundle import verify_bundle

    try:
        verify_bundle(bundle)
    except (FileNotFoundError, ValueError):
        return False
    return True


def device_worker(bundle: Path, stream: Path, repeats: int) -> dict[str, Any]:
    """Online learning on the device runtime, with and without the cache, alternated per repeat."""
    from device_runtime.isolation import FORBIDDEN_PACKAGES, isolate_device_process

    isolate_device_process()
    import numpy as np
    import tvm

    from device_runtime.bundle import load_bundle
    from device_runtime.learner import Learner
    from device_runtime.model import DeviceModel
    from device_runtime.online import InferenceCache, OnlineLearner

    loaded = load_bundle(bundle)
    with np.load(stream) as data:
        x, y = data["x"], data["y"]
    after_imports = _after_imports()

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
    result: dict[str, Any] = {"samples": n, "updates": runs["cache"][0][2], **_memory(after_imports),
                              "foreign_modules": _foreign_modules(FORBIDDEN_PACKAGES),
                              "threads": tvm.get_global_func("runtime.NumThreads")(), "thread_env": _thread_env()}
    for mode, passes in runs.items():
        result[f"{mode}_learn_ms_per_labelled"] = 1e3 * statistics.median(p[1] for p in passes) / n
        result[f"{mode}_total_ms_per_sample"] = 1e3 * statistics.median(p[0] + p[1] for p in passes) / n
    return result


def torch_worker(split: Path, stream: Path, repeats: int, lr: float, batch: int) -> dict[str, Any]:
    """The same head-only online training in PyTorch eager: infer each sample (keeping its cut
    activation), train the head per batch with the benchmarks' one torch step."""
    import numpy as np
    import torch

    from autlearn.torch_step import TorchHeadStep

    torch.set_num_threads(int(THREADS))
    parts = torch.load(split, weights_only=False)  # FX modules pickled by prepare(): plain torch
    infer, trainable = parts["forward"], parts["head"]
    with np.load(stream) as data:
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    after_imports = _after_imports()

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
    return {"total_ms_per_sample": 1e3 * seconds / len(x), **_memory(after_imports),
            "foreign_modules": _foreign_modules(TORCH_FOREIGN),
            "threads": torch.get_num_threads(), "thread_env": _thread_env()}


def run_worker(args: list[str]) -> dict[str, Any]:
    """`python -m autlearn.bench_cache ARGS` with the benchmark's threads and wait policy; its JSON."""
    done = subprocess.run([sys.executable, "-m", "autlearn.bench_cache", *args], capture_output=True,
                          text=True, env={**os.environ, **WORKER_ENV}, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak(side: dict[str, Any]) -> float:
    return side["rss_after_imports_mb"] + side["rss_growth_mb"]


def summary(result: dict[str, Any]) -> str:
    """The headline figures in a few lines, for the command's output."""
    dev, tor = result["device"], result["torch"]
    return "\n".join([
        f"bench cache {result['task']}: {result['samples']} samples, {result['threads']} thread(s), "
        f"{', '.join(f'{k}={v}' for k, v in result['wait_policy'].items())}",
        f"learning per labelled sample: cache {dev['cache_learn_ms_per_labelled']:.3f} ms, recompute "
        f"{dev['recompute_learn_ms_per_labelled']:.3f} ms (x{result['cache_speedup']:.2f})",
        f"inference + learning per sample: device cache {dev['cache_total_ms_per_sample']:.3f} ms, "
        f"PyTorch {tor['total_ms_per_sample']:.3f} ms",
        *(f"{name} RSS: {side['rss_after_imports_mb']:.1f} MiB after imports, +{side['rss_growth_mb']:.1f} MiB "
          f"training; foreign modules: {side['foreign_modules'] or 'none'}"
          for name, side in (("device", dev), ("PyTorch", tor))),
        f"peak RSS ratio device / PyTorch: {result['rss_ratio_vs_torch']:.3f}"])


def plot(result: dict[str, Any], path: Path) -> None:
    """Two panels: learning cost per labelled sample, and each process's RSS (after imports, then training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev, tor = result["device"], result["torch"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.bar(["cache", "recompute"], [dev["cache_learn_ms_per_labelled"], dev["recompute_learn_ms_per_labelled"]],
             color=["tab:green", "tab:red"])
    left.set_ylabel("ms per labelled sample")
    left.set_title(f"online learning ({result['task']}): x{result['cache_speedup']:.1f} with the cache")
    names, base = ["device (TVM)", "PyTorch"], [dev["rss_after_imports_mb"], tor["rss_after_imports_mb"]]
    right.bar(names, base, color=["tab:blue", "tab:orange"], label="after imports")
    right.bar(names, [dev["rss_growth_mb"], tor["rss_growth_mb"]], bottom=base, color="tab:gray",
              label="growth in training")
    right.set_ylabel("RSS (MiB)")
    right.set_title(f"peak memory: {result['rss_ratio_vs_torch']:.2f} of PyTorch's")
    right.legend()
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
    device = run_worker(["device", "--bundle", str(paths["bundle"]), "--stream", str(paths["stream"]),
                      "--repeats", str(repeats)])
    torch_side = run_worker(["torch", "--split", str(paths["torch"]), "--stream", str(paths["stream"]),
                          "--repeats", str(repeats), "--lr", str(manifest["optimizer"]["lr"]),
                          "--batch", str(manifest["train_batch"])])
    if (device["threads"], device["thread_env"]) != (torch_side["threads"], torch_side["thread_env"]):
        raise RuntimeError(f"the workers ran with different threads: {device['threads']} {device['thread_env']} "
                           f"against {torch_side['threads']} {torch_side['thread_env']}")
    result = {"task": task, "samples": samples, "repeats": repeats, "threads": int(THREADS),
              "wait_policy": WAIT_POLICY,
              "cache_speedup": device["recompute_learn_ms_per_labelled"] / device["cache_learn_ms_per_labelled"],
              "rss_ratio_vs_torch": _peak(device) / _peak(torch_side),
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
    t.add_argument("--split", type=Path, required=True)
    t.add_argument("--stream", type=Path, required=True)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--batch", type=int, required=True)
    args = parser.parse_args(argv)
    if args.worker == "device":
        result = device_worker(args.bundle, args.stream, args.repeats)
    else:
        result = torch_worker(args.split, args.stream, args.repeats, args.lr, args.batch)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
