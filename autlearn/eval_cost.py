"""`autlearn eval cost`: the paper's cost table (figure 8), training time per sample of one user's
offline learning, every configuration timed side by side in one run, same threads, same data:

- `autlearn`: the compressed model (`compressed`, else the checkpoint), compiled and tuned
  (`tune_trials`), on the device path: its batched forward (the cut, once per sample) and its
  update step (once per `train_batch` samples);
- `autlearn_uncompressed`: the same for the unpruned checkpoint;
- `pytorch_eager`: the unpruned model's frozen part and an eager SGD step of the head;
- `ort_training`: ONNX Runtime: the frozen part in an InferenceSession, the head in ORT's
  on-device training (the same loss and SGD);
- `online_cache`, `online_no_cache`: the device's online learning per labelled sample (its
  inference included), with the inference-training cache and recomputing the forward pass.

A sample costs forward + update / train_batch; a user's offline learning costs that times
samples x epochs, and takes `days_at_120_min` days at the paper's median of 120 trainable
minutes a day.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MINUTES_A_DAY = 120


def _compiled(model: Any, inputs: dict[str, Any], out: Path, tune_trials: int, tuning_db: Path | None) -> Any:
    from compiler import compile_bundle
    from device_runtime.bundle import load_bundle

    return load_bundle(compile_bundle(model, out=out, tune_trials=tune_trials, tuning_db=tuning_db, **inputs))


def _ort_frozen(forward: Any, example: Any, workdir: Path, threads: int) -> Any:
    """The frozen part (input -> cut) as an ONNX Runtime InferenceSession; a call returns the cut."""
    import onnxruntime
    import torch

    class Cut(torch.nn.Module):
        def __init__(self, split_forward: Any) -> None:
            super().__init__()
            self.split_forward = split_forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.split_forward(x)[1]

    path = workdir / "frozen.onnx"
    torch.onnx.export(Cut(forward), (example,), str(path), input_names=["x"], output_names=["cut"], dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": example.numpy()}
    return lambda: session.run(None, feed)


def _online_ms_per_sample(bundle: Any, x: np.ndarray, y: np.ndarray, use_cache: bool, repeats: int) -> float:
    """Median over `repeats` streams of `x` of the device's online learning time per labelled sample."""
    from device_runtime.learner import Learner
    from device_runtime.model import DeviceModel
    from device_runtime.online import InferenceCache, OnlineLearner, simulate_stream

    times = []
    for _ in range(repeats):
        model = DeviceModel(bundle)
        online = OnlineLearner(model, Learner(model), InferenceCache(256) if use_cache else None)
        start = time.perf_counter()
        simulate_stream(online, list(x), y, feedback_delay=4)
        times.append((time.perf_counter() - start) * 1000 / len(y))
    return float(np.median(times))


def median_train_samples(task: str) -> int:
    """The median number of training samples of the task's top 10% of users."""
    from cloud_pretrain.data.sources import task_users
    from cloud_pretrain.data.text import count_next_word_examples
    from cloud_pretrain.data.users import ImageUser, top_users

    sizes = sorted(len(u.train_y) if isinstance(u, ImageUser) else count_next_word_examples(u.sentences("train"))
                   for u in top_users(task_users(task)))
    return sizes[len(sizes) // 2]


def eval_cost(task: str, checkpoint: Path, work: Path, *, compressed: Path | None = None, tune_trials: int = 0,
              tuning_db: Path | None = None, threads: int = 1, repeats: int = 20, warmup: int = 5, epochs: int = 5,
              samples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The per-sample cost of each configuration (ms), the speedups of `autlearn` and the days."""
    import torch

    from autlearn.bench_compiler import TvmUpdate, set_threads, time_side_by_side, tvm_forward_fn
    from autlearn.torch_step import TorchHeadStep
    from cloud_pretrain.checkpoint import load_checkpoint
    from cloud_pretrain.recipes import get_task
    from compiler.ort_baseline import build_ort_trainer
    from compiler.split import inference_mode
    from compiler.torch_parts import split_model
    from device_runtime.manifest import sample_input
    from device_runtime.model import DeviceModel

    set_threads(threads)
    work = Path(work)
    recipe = get_task(task)
    model, meta = load_checkpoint(checkpoint)
    model = inference_mode(model)
    small, small_meta = load_checkpoint(compressed) if compressed else (model, meta)
    bundles = {"autlearn": _compiled(inference_mode(small), recipe.compile_inputs(small, small_meta, synonyms=False),
                                     work / "autlearn", tune_trials, tuning_db)}
    bundles["autlearn_uncompressed"] = _compiled(model, recipe.compile_inputs(model, meta, synonyms=False),
                                                 work / "autlearn_uncompressed", tune_trials, tuning_db)
    manifest = bundles["autlearn_uncompressed"].manifest
    batch, lr = manifest.train_batch, float(manifest.optimizer["lr"])
    rng = np.random.default_rng(seed)
    shape = next(f["input_shape"] for f in manifest.forward_functions if f["batch"] == batch)
    x = sample_input(manifest.input, shape, rng)
    y = rng.integers(0, manifest.num_classes, size=batch).astype(np.int64)
    split = split_model(model, torch.from_numpy(x))
    with torch.no_grad():
        cut = split.forward(torch.from_numpy(x))[1]
    torch_step = TorchHeadStep(split.trainable, lr)

    def torch_forward() -> Any:
        with torch.no_grad():
            return split.forward(torch.from_numpy(x))

    calls: dict[str, Any] = {}
    for name, bundle in bundles.items():
        calls[f"{name}/forward"] = tvm_forward_fn(bundle, x)
        calls[f"{name}/update"] = TvmUpdate(bundle, DeviceModel(bundle).forward(x)[1], y)  # its own cut
    calls["pytorch_eager/forward"] = torch_forward
    calls["pytorch_eager/update"] = lambda: torch_step(cut, torch.from_numpy(y))
    with tempfile.TemporaryDirectory(prefix="autlearn_cost_") as tmp:
        ort = build_ort_trainer(copy.deepcopy(split.trainable), cut, lr=lr, workdir=Path(tmp), threads=threads)
        calls["ort_training/forward"] = _ort_frozen(split.forward, torch.from_numpy(x), Path(tmp), threads)
        calls["ort_training/update"] = lambda: ort.step(cut.numpy(), y)
        ms = time_side_by_side(calls, warmup=warmup, repeats=repeats, desc="cost")
    configs = ("autlearn", "autlearn_uncompressed", "pytorch_eager", "ort_training")
    per_sample = {c: (ms[f"{c}/forward"] + ms[f"{c}/update"]) / batch for c in configs}
    stream_x = sample_input(manifest.input, (4 * batch, *shape[1:]), rng)
    stream_y = rng.integers(0, manifest.num_classes, size=4 * batch)
    online_repeats = max(3, repeats // 5)
    per_sample["online_cache"] = _online_ms_per_sample(bundles["autlearn"], stream_x, stream_y, True, online_repeats)
    per_sample["online_no_cache"] = _online_ms_per_sample(bundles["autlearn"], stream_x, stream_y, False, online_repeats)
    if samples is None:
        samples = median_train_samples(task)
    offline = {c: per_sample[c] for c in configs}
    return {"task": task, "threads": threads, "train_batch": batch, "epochs": epochs, "samples_per_user": samples,
            "tune_trials": tune_trials, "tuning_db": str(tuning_db) if tuning_db else "the target's default (reused)",
            "compressed": str(compressed) if compressed else None,
            "timings_ms": {k: round(v, 4) for k, v in ms.items()},
            "ms_per_sample": {k: round(v, 4) for k, v in per_sample.items()},
            "speedup_vs_pytorch": round(per_sample["pytorch_eager"] / per_sample["autlearn"], 2),
            "speedup_vs_ort": round(per_sample["ort_training"] / per_sample["autlearn"], 2),
            "cache_speedup": round(per_sample["online_no_cache"] / per_sample["online_cache"], 2),
            "days_at_120_min": {c: round(v * samples * epochs / 1000 / 60 / MINUTES_A_DAY, 5)
                                for c, v in offline.items()},
            "goals": {"autlearn >= 2x cheaper than PyTorch": per_sample["pytorch_eager"] >= 2 * per_sample["autlearn"],
                      "autlearn >= 2x cheaper than ORT": per_sample["ort_training"] >= 2 * per_sample["autlearn"]}}


def plot_cost(report: dict[str, Any], path: Path) -> Path:
    """Figure 8: training time per sample of every configuration, one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values = zip(*report["ms_per_sample"].items())
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(names)), values, color=["#2a7", "#7c9", "#47c", "#c74", "#2a7", "#999"])
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("ms per training sample")
    ax.set_title(f"{report['task']}: cost of training, {report['threads']} thread(s), "
                 f"{report['tune_trials']} tuning trials per module")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
