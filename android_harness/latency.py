"""Latency of a bundle's forward functions and its training step, measured on the device.

The modules are pushed (and verified) through the transport, then each function is timed
there with the bundle's own parameters and random inputs of the manifest's input spec: token ids
in its range, floats in [0, 1), cut activations and labels for `update`.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from android_harness.push import push_bundle, read_intact_manifest, remote_path
from android_harness.transports import Transport
from device_runtime.bundle import load_param_arrays
from device_runtime.manifest import Manifest, sample_input


@dataclasses.dataclass
class FunctionLatency:
    """Timings of one VM function: seconds per call, one value per repeat."""

    module: str
    function: str
    batch: int
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.seconds)

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "function": self.function, "batch": self.batch,
                "median_ms": self.median_ms, "min_ms": 1e3 * min(self.seconds),
                "max_ms": 1e3 * max(self.seconds), "seconds": self.seconds}


def bundle_arrays(bundle: Path, manifest: Manifest) -> dict[str, list[np.ndarray]]:
    """Frozen, trainable and optimizer-state arrays in the manifest's order."""
    files = {"frozen": "frozen.npz", "trainable": "trainable.npz", "optimizer_state": "optimizer.npz"}
    return {key: load_param_arrays(Path(bundle) / file, manifest.params[key]) for key, file in files.items()}


@dataclasses.dataclass
class FunctionCall:
    """One VM function of the bundle with arguments to time it with."""

    module: str  # the bundle's file, e.g. forward.so
    function: str
    batch: int
    args: list[np.ndarray]


def function_calls(bundle: Path, manifest: Manifest, rng: np.random.Generator) -> list[FunctionCall]:
    """Every forward function, then `update`, with the bundle's parameters and random inputs."""
    arrays = bundle_arrays(bundle, manifest)
    calls = [FunctionCall(manifest.modules["forward"], f["name"], f["batch"],
                          [sample_input(manifest.input, f["input_shape"], rng), *arrays["frozen"], *arrays["trainable"]])
             for f in manifest.forward_functions]
    batch = manifest.train_batch
    cut = rng.standard_normal((batch, *manifest.cut["shape"][1:])).astype(manifest.cut["dtype"])
    labels = rng.integers(0, manifest.num_classes, size=batch).astype("int64")
    calls.append(FunctionCall(manifest.modules["update"], "update", batch,
                              [cut, labels, *arrays["trainable"], *arrays["optimizer_state"]]))
    return calls


def bench_latency(bundle: Path, transport: Transport, dest: str, *, number: int = 10, repeat: int = 10,
                  seed: int = 0) -> list[FunctionLatency]:
    """Pushes forward.so and update.so to dest (verified) and times every forward function and `update`."""
    manifest = read_intact_manifest(bundle)
    calls = function_calls(bundle, manifest, np.random.default_rng(seed))
    push_bundle(bundle, transport, dest, names=sorted({c.module for c in calls}))
    results = []
    for call in tqdm(calls, desc=f"latency {transport.name}", unit="function", disable=None):
        seconds = transport.run_module(remote_path(dest, call.module), call.function, call.args,
                                       number=number, repeat=repeat)
        results.append(FunctionLatency(call.module, call.function, call.batch, seconds))
    return results


def write_latency_json(results: list[FunctionLatency], path: Path, **context: Any) -> Path:
    """The results (and context such as bundle, transport) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**context, "functions": [r.to_json() for r in results]}, indent=2) + "\n")
    return path


def plot_latency(results: list[FunctionLatency], path: Path, title: str = "latency on the device") -> Path:
    """A bar per function: median ms, whiskers from the fastest to the slowest repeat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.function for r in results]
    medians = np.array([r.median_ms for r in results])
    low = medians - np.array([1e3 * min(r.seconds) for r in results])
    high = np.array([1e3 * max(r.seconds) for r in results]) - medians
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(results) + 1.5))
    ax.barh(names, medians, xerr=[low, high], capsize=3)
    ax.set_xlabel("milliseconds per call (median of repeats)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
