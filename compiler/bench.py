"""The compiler benchmark: compiled modules against PyTorch eager and ONNX Runtime training.

One process, equal threads everywhere, implementations timed in interleaved rounds (medians
after warm-up) so machine load hits them alike. Two workloads, as the device runs them:
- update: one training step from cached cut activations (batch `train_batch`): forward of the
  trainable part, cross-entropy, gradients, SGD step. TVM: the bundle's `update` function;
  PyTorch: eager autograd + torch.optim.SGD; ORT: onnxruntime-training artifacts.
- forward: whole-model inference, batch 1. TVM: the bundle's `forward_b1*`; PyTorch: eager.
The bundles come from `compile_bundle` (untuned, and tuned when `tune_trials` > 0).
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

from compiler.api import compile_bundle
from compiler.importer import StageChain
from compiler.ort_baseline import build_ort_trainer
from compiler.targets import resolve_target
from compiler.tuning import default_database_dir

TASK_INPUT_SHAPES = {"nwp": None, "image": (1, 28, 28)}  # nwp: [batch, seq_length] token ids
TIMING_BLOCK = 5  # consecutive calls of one implementation per round
GOALS = {"update_speedup_vs_torch": 2.0, "update_speedup_vs_ort": 2.0, "forward_speedup_vs_torch": 1.3}


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
    (thread pools that spin after work) disturb at most the first call of the next block.
    """
    if warmup < 0 or repeats < 1 or block < 1:
        raise ValueError(f"need warmup >= 0, repeats >= 1 and block >= 1, got {warmup}, {repeats}, {block}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in tqdm(range(repeats), desc=desc, unit="round", disable=None if progress else True):
        for name, fn in fns.items():
            for _ in range(block):
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times) for name, times in samples.items()}


def _sample_input(task: str, batch: int, seq_length: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    if task == "nwp":
        return rng.integers(0, num_classes, size=(batch, seq_length)).astype("int64")
    return rng.random((batch, *TASK_INPUT_SHAPES[task]), dtype=np.float32)


class _TvmUpdate:
    """Calls a bundle's `update` with tensors kept on the device, feeding each step's params back."""

    def __init__(self, bundle: Any, cut: np.ndarray, labels: np.ndarray) -> None:
        import tvm

        self.fn = bundle.vms["update"]["update"]
        self.args = [tvm.runtime.tensor(cut), tvm.runtime.tensor(labels)]
        self.state = list(bundle.trainable) + list(bundle.optimizer_state)

    def __call__(self) -> float:
        out = self.fn(*self.args, *self.state)
        self.state = [out[i] for i in range(1, len(out))]
        return float(out[0].numpy())


class _TorchUpdate:
    """An eager training step of a private copy of the trainable stages."""

    def __init__(self, trainable: nn.Module, cut: np.ndarray, labels: np.ndarray, lr: float) -> None:
        self.model = copy.deepcopy(trainable).eval()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.cut, self.labels = torch.from_numpy(cut), torch.from_numpy(labels)

    def __call__(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.cut), self.labels)
        loss.backward()
        self.opt.step()
        return loss.item()


def _forward_fn(bundle: Any, x: np.ndarray) -> Callable[[], Any]:
    import tvm

    entry = next(f for f in bundle.manifest.forward_functions if f["batch"] == x.shape[0])
    fn = bundle.vms["forward"][entry["name"]]
    args = [tvm.runtime.tensor(x), *bundle.frozen, *bundle.trainable]
    return lambda: fn(*args)


def _count_records(database_dir: Path) -> int:
    path = database_dir / "database_tuning_record.json"
    return sum(1 for line in path.open() if line.strip()) if path.is_file() else 0


def _speedups(ms: dict[str, dict[str, float]], variant: str) -> dict[str, float]:
    return {"update_speedup_vs_torch": ms["update"]["torch"] / ms["update"][variant],
            "update_speedup_vs_ort": ms["update"]["ort"] / ms["update"][variant],
            "forward_speedup_vs_torch": ms["forward"]["torch"] / ms["forward"][variant]}


def bench_compiler(model: nn.Module, task: str, labels: Sequence[str], work_dir: Path, *,
                   cut: str | None = None, tune_trials: int = 0, tuning_db: Path | None = None,
                   threads: int = 2, train_batch: int = 16, seq_length: int = 10, lr: float = 0.05,
                   warmup: int = 10, repeats: int = 50, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Compiles `model` (untuned, and tuned if `tune_trials` > 0) and times it against the baselines.

    Returns a JSON-ready dict: median times in ms, first-step losses of every implementation
    (they start from the same parameters, so they must agree), compile and tune seconds, new
    tuning trials, and speedups of the best compiled variant.
    """
    if task not in TASK_INPUT_SHAPES:
        raise ValueError(f"unknown task {task!r}; choose nwp or image")
    from device_runtime.bundle import load_bundle

    set_threads(threads)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stages = list(model.eval().stages())
    names = [n for n, _ in stages]
    cut = cut or names[-1]
    if cut not in names:
        raise ValueError(f"unknown cut layer {cut!r}; the model's stages are: {', '.join(names)}")
    k = names.index(cut)
    options = dict(labels=labels, cut=cut, train_batch=train_batch, seq_lengths=(seq_length,), lr=lr)

    variants = {"tvm_untuned": 0} | ({"tvm_tuned": tune_trials} if tune_trials > 0 else {})
    database_dir = Path(tuning_db) if tuning_db else default_database_dir(resolve_target("host").tvm_target())
    bundles, compile_seconds = {}, {}
    records_before = _count_records(database_dir)
    for variant, trials in variants.items():
        start = time.perf_counter()
        path = compile_bundle(model, task, work_dir / variant, tune_trials=trials, tuning_db=database_dir,
                              **options)
        compile_seconds[variant] = time.perf_counter() - start
        bundles[variant] = load_bundle(path)
    new_trials = _count_records(database_dir) - records_before

    rng = np.random.default_rng(seed)
    x_train = _sample_input(task, train_batch, seq_length, len(labels), rng)
    with torch.no_grad():
        cut_acts = StageChain(stages[:k])(torch.from_numpy(x_train)).numpy() if k else x_train
    y_train = rng.integers(0, len(labels), size=train_batch).astype("int64")
    x_one = _sample_input(task, 1, seq_length, len(labels), rng)
    trainable = StageChain(copy.deepcopy(stages[k:]))

    with tempfile.TemporaryDirectory(prefix="autlearn_ort_") as ort_dir:
        ort = build_ort_trainer(copy.deepcopy(trainable), torch.from_numpy(cut_acts), lr=lr,
                                workdir=Path(ort_dir), threads=threads)
        updates = {"torch": _TorchUpdate(trainable, cut_acts, y_train, lr),
                   "ort": lambda: ort.step(cut_acts, y_train)}
        updates |= {v: _TvmUpdate(b, cut_acts, y_train) for v, b in bundles.items()}
        first_loss = {name: fn() for name, fn in updates.items()}
        update_ms = time_side_by_side(updates, warmup=warmup, repeats=repeats, block=TIMING_BLOCK, desc="update step",
                                      progress=progress)

    x_torch = torch.from_numpy(x_one)

    def torch_forward() -> torch.Tensor:
        with torch.no_grad():
            return model(x_torch)

    forwards = {"torch": torch_forward} | {v: _forward_fn(b, x_one) for v, b in bundles.items()}
    forward_ms = time_side_by_side(forwards, warmup=warmup, repeats=repeats, block=TIMING_BLOCK, desc="forward",
                                  progress=progress)

    ms = {"update": update_ms, "forward": forward_ms}
    best = "tvm_tuned" if "tvm_tuned" in bundles else "tvm_untuned"
    headline = _speedups(ms, best)
    return {
        "task": task, "cut": cut, "threads": threads, "train_batch": train_batch, "forward_batch": 1,
        "seq_length": seq_length if task == "nwp" else None, "warmup": warmup, "repeats": repeats,
        "load_average": list(os.getloadavg()), "compared": best,
        "environment": {k: os.environ.get(k) for k in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        **headline,
        "tuned_trials": new_trials, "tune_trials_requested": tune_trials,
        "tuning_database": str(database_dir), "tuning_database_records": _count_records(database_dir),
        "update_ms": update_ms, "forward_ms": forward_ms,
        "speedups": {v: _speedups(ms, v) for v in bundles},
        "first_step_loss": first_loss,
        "compile_seconds": compile_seconds,
        "goals": {key: {"target": goal, "met": headline[key] >= goal} for key, goal in GOALS.items()},
    }


def write_report(result: dict[str, Any], json_path: Path) -> tuple[Path, Path]:
    """Writes the result as JSON and a bar chart of the times next to it (same name, .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "update_ms", f"update step, batch {result['train_batch']}"),
                           (axes[1], "forward_ms", "forward, batch 1")):
        names, values = list(result[key]), list(result[key].values())
        bars = ax.bar(names, values, color=["#888888" if n in ("torch", "ort") else "#2a7ab9" for n in names])
        ax.bar_label(bars, fmt="%.3f")
        ax.set_title(title)
        ax.set_ylabel("median ms (lower is better)")
    fig.suptitle(f"{result['task']}: TVM vs PyTorch eager vs ORT training, {result['threads']} threads, "
                 f"{result['tuned_trials']} new tuning trials")
    fig.tight_layout()
    png = json_path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return json_path, png
