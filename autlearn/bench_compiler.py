"""The compiler benchmark: compiled modules against PyTorch eager and ONNX Runtime training.

One process, equal threads everywhere, implementations timed in interleaved rounds (medians
after warm-up) so machine load hits them alike. Two workloads, as the device runs them:
- update: one training step from cached cut activations (batch `train_batch`): forward of the
  trainable part, cross-entropy, gradients, SGD step. TVM: the bundle's `update` function;
  PyTorch: eager autograd + torch.optim.SGD; ORT: onnxruntime-training artifacts.
- forward: whole-model inference, batch 1. TVM: the bundle's `forward_b1*`; PyTorch: eager.
The bundles come from `compile_bundle` (untuned, and tuned when `tune_trials` > 0); the PyTorch
side trains the same trainable part (compiler.torch_parts.split_model) with the same step as
every benchmark (autlearn/torch_step.py). It knows models, not tasks.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from autlearn.cpu_limits import measured_peak_gflops, parallel_wake_us
from autlearn.kernel_profile import profile_function
from autlearn.torch_step import TorchHeadStep
from compiler.api import TUNING_SUMMARY, compile_bundle
from compiler.executorch_baseline import build_executorch_trainer, executorch_available
from compiler.ort_baseline import build_ort_trainer
from compiler.targets import resolve_target
from compiler.split import inference_mode
from compiler.torch_parts import split_model
from compiler.tuning import default_database_dir
from device_runtime.manifest import sample_input

TIMING_BLOCK = 5  # consecutive calls of one implementation per round
GOALS = {"untuned": {"update_speedup_vs_torch": 1.0, "forward_speedup_vs_torch": 1.0},
         "tuned": {"update_speedup_vs_torch": 3.0, "update_speedup_vs_ort": 2.0, "forward_speedup_vs_torch": 3.0}}
# Every side waits passively between calls (no spinning threads taking the cores from the next):
# libgomp (PyTorch) by OMP_WAIT_POLICY, TVM's pool by its spin count, ORT by its session option.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "TVM_THREAD_POOL_SPIN_COUNT": "0"}


def set_threads(threads: int) -> None:
    """The same intra-op thread count for PyTorch and TVM's runtime pool (ORT takes it per session).

    TVM sizes its pool from TVM_NUM_THREADS when it first runs anything (without it: 1 thread
    on this machine), so this must happen before any TVM execution in the process.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import tvm

    torch.set_num_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    tvm.get_global_func("runtime.config_threadpool")(1, threads)
    if tvm.get_global_func("runtime.NumThreads")() != threads:
        raise RuntimeError(f"TVM's thread pool already started with another size; set TVM_NUM_THREADS={threads} "
                           "before TVM runs anything in this process")


def time_side_by_side(fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int, block: int = 5,
                      desc: str = "timing", progress: bool = True) -> dict[str, float]:
    """Median milliseconds per call of each function, over `repeats` rounds of `block` calls each.

    Rounds alternate between the functions so that changes in machine load hit them alike;
    within a round each runs `block` times in a row, so one implementation's idle threads
    (thread pools that spin after work) disturb at most the first call of the next block. Each
    round starts one function later than the one before, so whatever the function before leaves
    behind falls on every function alike: in a fixed order, two identical builds of one update
    measured 20-38% apart, the one after ExecuTorch's step always the slower.
    """
    if warmup < 0 or repeats < 1 or block < 1:
        raise ValueError(f"need warmup >= 0, repeats >= 1 and block >= 1, got {warmup}, {repeats}, {block}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in tqdm(range(repeats), desc=desc, unit="round", disable=None if progress else True):
        for name in names[i % len(names):] + names[:i % len(names)]:
            fn = fns[name]
            for _ in range(block):
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times) for name, times in samples.items()}


class TvmUpdate:
    """Calls a bundle's `update` with tensors kept on the device, feeding each step's params back."""

    def __init__(self, bundle: Any, cut: np.ndarray, labels: np.ndarray) -> None:
        import tvm

        self.fn = bundle.vm("update")["update"]
        self.args = [tvm.runtime.tensor(cut), tvm.runtime.tensor(labels)]
        self.state = list(bundle.trainable) + list(bundle.optimizer_state)

    def __call__(self) -> float:
        out = self.fn(*self.args, *self.state)
        self.state = [out[i] for i in range(1, len(out))]
        return float(out[0].numpy())


def tvm_forward_fn(bundle: Any, x: np.ndarray) -> Callable[[], Any]:
    import tvm

    entry = next(f for f in bundle.manifest.forward_functions if f["input_shape"] == list(x.shape))
    fn = bundle.vm("forward")[entry["name"]]
    args = [tvm.runtime.tensor(x), *bundle.frozen, *bundle.trainable]
    return lambda: fn(*args)


def _count_records(database_dir: Path) -> int:
    path = database_dir / "database_tuning_record.json"
    return sum(1 for line in path.open() if line.strip()) if path.is_file() else 0


def update_flops(trainable: nn.Module, cut: torch.Tensor, labels: torch.Tensor) -> int:
    """FLOPs of one training step of `trainable` (forward, loss, backward to its parameters), as
    torch's FlopCounterMode counts them (matmuls and convolutions; elementwise work is free)."""
    from torch.utils.flop_counter import FlopCounterMode

    head = copy.deepcopy(trainable).eval()
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(head(cut), labels).backward()
    return int(counter.get_total_flops())


def peak_gflops(threads: int) -> dict[str, Any]:
    """This machine's FP32 peak for `threads` cores: measured (autlearn/cpu_limits.py, TVM's pool
    sized to `threads` already), and nominal, cores x 32 FLOP per cycle (two 8-lane FMA units) x
    the clock that /proc/cpuinfo reports, which a VM's boost and shared cores make wrong; with the
    microseconds a parallel loop costs beyond its work at this thread count and wait policy."""
    clocks = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("cpu MHz")] if Path("/proc/cpuinfo").is_file() else []
    ghz = max(clocks) / 1e3 if clocks else None
    target = resolve_target("host").tvm_target()
    return {"cores": threads, "flop_per_cycle": 32, "clock_ghz": ghz,
            "nominal_gflops": threads * 32 * ghz if ghz else None,
            "gflops": measured_peak_gflops(target, threads),
            "parallel_wake_us": parallel_wake_us(target, threads) if threads > 1 else 0.0}


def _speedups(ms: dict[str, dict[str, float]], variant: str, flops: int) -> dict[str, float]:
    update = ms["update"][variant]
    return {"update_speedup_vs_torch": ms["update"]["torch"] / update,
            "update_speedup_vs_ort": ms["update"]["ort"] / update,
            **({"update_speedup_vs_executorch": ms["update"]["executorch"] / update}
               if "executorch" in ms["update"] else {}),
            "forward_speedup_vs_torch": ms["forward"]["torch"] / ms["forward"][variant],
            "update_gflops": flops / (update * 1e6)}


def bench_compiler(model: nn.Module, inputs: dict[str, Any], work_dir: Path, *, cut: str | None = None,
                   tune_trials: int = 0, tuning_db: Path | None = None, threads: Sequence[int] = (1, 2),
                   train_batch: int = 16, lr: float = 0.05, warmup: int = 10, repeats: int = 50, seed: int = 0,
                   progress: bool = True, profile: bool = False, executorch: bool = True) -> dict[str, Any]:
    """Compiles `model` (untuned, and tuned if `tune_trials` > 0) and times it against the peers
    at each thread count of `threads`.

    `inputs`: the `compile_bundle` inputs (example_input, labels, lengths, tokenizer, name).
    Returns a JSON-ready dict: per thread count the median times in ms; objects `untuned` and
    `tuned` (per thread count: speedups against each peer, the update's GFLOP/s); the first and
    second step's loss of every implementation (they start from the same parameters, so they
    must agree: the updates are the same); compile and tune seconds, new tuning trials; with
    `profile`, per variant and module the kernels by self time (autlearn/kernel_profile.py).
    ExecuTorch (compiler/executorch_baseline.py) joins where it is installed; otherwise the
    result says why not.
    """
    from device_runtime.bundle import load_bundle

    threads = sorted(set(threads), reverse=True)  # TVM's pool can shrink after it starts, not grow
    if not threads or threads[-1] < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    set_threads(threads[0])
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    model = inference_mode(model)
    variants = {"tvm_untuned": 0} | ({"tvm_tuned": tune_trials} if tune_trials > 0 else {})
    database_dir = Path(tuning_db) if tuning_db else default_database_dir(resolve_target("host").tvm_target())
    bundles, compile_seconds = {}, {}
    records_before = _count_records(database_dir)
    for variant, trials in variants.items():
        start = time.perf_counter()
        path = compile_bundle(model, out=work_dir / variant, cut=cut, train_batch=train_batch, lr=lr,
                              tune_trials=trials, tuning_db=database_dir, **inputs)
        compile_seconds[variant] = time.perf_counter() - start
        bundles[variant] = load_bundle(path)
    new_trials = _count_records(database_dir) - records_before

    manifest = bundles["tvm_untuned"].manifest
    rng = np.random.default_rng(seed)
    shapes = {f["batch"]: f["input_shape"] for f in manifest.forward_functions}  # the longest length last
    x_train = sample_input(manifest.input, shapes[train_batch], rng)
    split = split_model(model, torch.from_numpy(x_train), cut=cut)
    with torch.no_grad():
        cut_acts = split.forward(torch.from_numpy(x_train))[1].numpy()
    y_train = rng.integers(0, manifest.num_classes, size=train_batch).astype("int64")
    x_one = sample_input(manifest.input, shapes[1], rng)
    cut_torch, y_torch = torch.from_numpy(cut_acts), torch.from_numpy(y_train)
    flops = update_flops(split.trainable, cut_torch, y_torch)
    executorch_missing = executorch_available() if executorch else "not asked for (--no-executorch)"

    runs, losses, peaks = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="autlearn_peers_") as peers_dir:
        for n in threads:
            set_threads(n)
            peaks[str(n)] = peak_gflops(n)
            ort = build_ort_trainer(copy.deepcopy(split.trainable), cut_torch, lr=lr,
                                    workdir=Path(peers_dir) / f"ort-{n}", threads=n)
            torch_step = TorchHeadStep(split.trainable, lr)
            updates = {"torch": lambda: torch_step(cut_torch, y_torch), "ort": lambda: ort.step(cut_acts, y_train)}
            if executorch_missing is None:
                et = build_executorch_trainer(split.trainable, cut_torch, y_torch, lr=lr,
                                              workdir=Path(peers_dir) / f"executorch-{n}", threads=n)
                updates["executorch"] = lambda: et.step(cut_acts, y_train)
            updates |= {v: TvmUpdate(b, cut_acts, y_train) for v, b in bundles.items()}
            losses[str(n)] = {name: [fn(), fn()] for name, fn in updates.items()}  # first and second step
            update_ms = time_side_by_side(updates, warmup=warmup, repeats=repeats, block=TIMING_BLOCK,
                                          desc=f"update step, {n} threads", progress=progress)
            x_torch = torch.from_numpy(x_one)

            def torch_forward() -> torch.Tensor:
                with torch.no_grad():
                    return model(x_torch)

            forwards = {"torch": torch_forward} | {v: tvm_forward_fn(b, x_one) for v, b in bundles.items()}
            forward_ms = time_side_by_side(forwards, warmup=warmup, repeats=repeats, block=TIMING_BLOCK,
                                          desc=f"forward, {n} threads", progress=progress)
            runs[str(n)] = {"update": update_ms, "forward": forward_ms}

    kernels = {v: _profile(b, cut_acts, y_train, x_one) for v, b in bundles.items()} if profile else None
    per_variant = {v.removeprefix("tvm_"): {n: _speedups(ms, v, flops) for n, ms in runs.items()} for v in bundles}
    goals = {variant: {n: {key: {"target": goal, "met": figures[key] >= goal} for key, goal in GOALS[variant].items()}
                       for n, figures in by_threads.items()}
             for variant, by_threads in per_variant.items()}
    tuning = _tuning_summary(bundles.get("tvm_tuned"))
    return {
        "model": manifest.model, "cut": manifest.cut_layer, "threads": threads, "train_batch": train_batch,
        "forward_batch": 1, "forward_input_shape": shapes[1], "warmup": warmup, "repeats": repeats,
        "load_average": list(os.getloadavg()),
        "wait_policy": {k: os.environ.get(k) for k in WAIT_POLICY},
        **per_variant,
        "update_flops": flops, "peak": peaks,
        "tuned_trials": new_trials, "tune_trials_requested": tune_trials,
        "tuning_seconds": tuning.get("seconds", 0.0), "tuning": tuning,
        "tuning_database": str(database_dir), "tuning_database_records": _count_records(database_dir),
        "ms": runs, "first_step_loss": {n: {k: v[0] for k, v in by.items()} for n, by in losses.items()},
        "second_step_loss": {n: {k: v[1] for k, v in by.items()} for n, by in losses.items()},
        "executorch": executorch_missing or "ran",
        "compile_seconds": compile_seconds, "goals": goals,
        **({"profile": kernels} if kernels is not None else {}),
    }


def _tuning_summary(bundle: Any) -> dict[str, Any]:
    """What tuning the bundle records (compiler.api's tuning/summary.json): trials, seconds, tasks."""
    if bundle is None:
        return {}
    path = Path(bundle.root) / TUNING_SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def _profile(bundle: Any, cut: np.ndarray, labels: np.ndarray, x: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """The kernels of the bundle's update step and batch-1 forward, by self time."""
    import tvm

    entry = next(f for f in bundle.manifest.forward_functions if f["input_shape"] == list(x.shape))
    calls = {"update": ("update", [tvm.runtime.tensor(cut), tvm.runtime.tensor(labels), *bundle.trainable,
                                   *bundle.optimizer_state]),
             "forward": (entry["name"], [tvm.runtime.tensor(x), *bundle.frozen, *bundle.trainable])}
    return {module: [row.to_json() for row in profile_function(bundle.vm(module), function, args)]
            for module, (function, args) in calls.items()}


def write_report(result: dict[str, Any], json_path: Path) -> tuple[Path, Path]:
    """Writes the result as JSON and a bar chart of the times next to it (same name, .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    runs = result["ms"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.6 * len(runs)), squeeze=False)
    for row, (n, ms) in zip(axes, runs.items()):
        for ax, key, title in ((row[0], "update", f"update step, batch {result['train_batch']}"),
                               (row[1], "forward", "forward, batch 1")):
            names, values = list(ms[key]), list(ms[key].values())
            bars = ax.bar(names, values, color=["#2a7ab9" if n_.startswith("tvm") else "#888888" for n_ in names])
            ax.bar_label(bars, fmt="%.3f")
            ax.set_yscale("log")
            ax.set_title(f"{title}, {n} thread(s)")
            ax.set_ylabel("median ms (log; lower is better)")
    fig.suptitle(f"{result['model']}: TVM vs PyTorch eager, ORT and ExecuTorch training, "
                 f"{result['tuned_trials']} new tuning trials")
    fig.tight_layout()
    png = json_path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return json_path, png


def markdown_tables(result: dict[str, Any], command: str) -> str:
    """The result as BENCHMARKS.md's compiler tables: per thread count, every implementation's
    medians and the speedups of each compiled variant, the command above them."""
    peak = {n: p["gflops"] for n, p in result["peak"].items()}
    lines = [f"`{command}`", "",
             f"{result['model']}, cut `{result['cut']}`, update batch {result['train_batch']}, forward batch 1; "
             f"medians of {result['repeats']} rounds; wait policy {result['wait_policy']}; load average "
             f"{result['load_average'][0]:.1f}; {result['tuned_trials']} tuning trials in "
             f"{result['tuning_seconds']:.0f} s from the database given; ExecuTorch: {result['executorch']}.", ""]
    races = result.get("tuning", {}).get("end_to_end", {})
    if races:
        lines += ["Tuned modules against the default build, end to end (compiler/module_race.py): " + "; ".join(
            f"{key} {r['default_ms']} ms default, {r['tuned_ms']} ms tuned at {r['threads']} thread(s): the "
            f"{r['ships']} build ships" for key, r in races.items()) + ".", ""]
    for n, ms in result["ms"].items():
        names = list(ms["update"])
        wake = result["peak"][n].get("parallel_wake_us")
        lines += [f"At {n} thread(s): measured peak {peak[n]:.0f} GFLOP/s"
                  + (f"; a parallel loop costs {wake:.1f} us beyond its work" if int(n) > 1 and wake is not None else "")
                  + ".", ""]
        lines += [f"| {n} thread(s) | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names),
                  "| update step, ms | " + " | ".join(f"{ms['update'][k]:.3f}" for k in names) + " |",
                  "| forward, ms | " + " | ".join(f"{ms['forward'][k]:.3f}" if k in ms["forward"] else "-"
                                                  for k in names) + " |", ""]
        for variant in ("untuned", "tuned"):
            if variant in result:
                f = result[variant][n]
                peers = ", ".join(f"x{f[k]:.2f} vs {k.rsplit('_', 1)[1]}" for k in f if k.startswith("update_speedup"))
                share = f" ({f['update_gflops'] / peak[n]:.0%} of the {peak[n]:.0f} GFLOP/s measured peak)"
                met = ", ".join(f"{k} {'met' if g['met'] else 'missed'}" for k, g in result["goals"][variant][n].items())
                lines.append(f"- {variant}, {n} thread(s): update {peers}; forward x{f['forward_speedup_vs_torch']:.2f} "
                             f"vs torch; update {f['update_gflops']:.1f} GFLOP/s{share}. Goals: {met}.")
        lines += ["", "Losses after the first and second step: " + "; ".join(
            f"{k} {result['first_step_loss'][n][k]:.7f} / {result['second_step_loss'][n][k]:.7f}"
            for k in result["first_step_loss"][n]) + ".", ""]
    return "\n".join(lines)


def replace_section(path: Path, key: str, text: str) -> None:
    """Writes `text` between `<!-- key -->` and `<!-- /key -->` in `path` (appended if missing)."""
    path = Path(path)
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    old = path.read_text() if path.is_file() else ""
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)
