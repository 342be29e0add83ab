"""Compiled models timed on the target: the compression search's `latency` and the family table.

A model is compiled (`compiler.compile_bundle`, untuned, default cut: the last linear layer)
for the device's target, its forward.so and update.so are pushed through a harness transport
(local, rpc, qemu, adb) and timed there: `update` is the transfer-learning step (one training
step of the trainable layers at the bundle's train batch), the batch-1 forward is one inference.
Bundles compiled only to be timed skip verification; the bundle that ships is verified when
`autlearn build` or `autlearn compile` writes it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

if TYPE_CHECKING:  # the harness (and TVM under it) loads when something is timed, not for --help
    from android_harness.transports import Transport, VMFunctionTimer

TRANSPORTS = ("local", "rpc", "qemu", "adb")
DEFAULT_TARGET = {"local": "host", "rpc": "host", "qemu": "linux-arm64", "adb": "android-arm64"}
PHONE_DIR = "/data/local/tmp/autlearn-prune"


@contextlib.contextmanager
def open_transport(kind: str, *, host: str | None = None, port: int = 9090, serial: str | None = None,
                   emulator_root: Path | None = None) -> Iterator[tuple[Transport, str]]:
    """(transport, directory for the bundles on it) of kind local, rpc, qemu or adb."""
    from android_harness import transports

    if kind not in TRANSPORTS:
        raise ValueError(f"unknown transport {kind!r}; choose one of: {', '.join(TRANSPORTS)}")
    if kind == "local":
        with tempfile.TemporaryDirectory(prefix="autlearn-target-") as root:
            yield transports.LocalTransport(root), ""
    elif kind == "adb":
        yield transports.AdbTransport(serial), PHONE_DIR
    elif kind == "qemu":
        from android_harness.qemu import QemuTransport

        with QemuTransport(emulator_root) as device:
            yield device, "autlearn-prune"
    elif host:
        yield transports.RPCTransport(host, port), ""
    else:
        with transports.local_rpc_server() as (rpc_host, rpc_port):
            yield transports.RPCTransport(rpc_host, rpc_port), ""


@dataclasses.dataclass
class TargetClock:
    """Compiles models for `target` into `workdir` and times them through `transport`."""

    transport: Transport
    dest: str
    target: str
    workdir: Path
    number: int = 10  # calls per timing sample
    repeats: int = 15  # samples per function (medians)
    _cache: dict[str, float] = dataclasses.field(default_factory=dict)
    _compiled: int = 0

    def compile(self, model: Any, task: str) -> Path:
        """An unverified timing bundle of `model` (its config decides the shapes)."""
        from cloud_pretrain.models import example_input
        from compiler import compile_bundle

        self._compiled += 1
        classes = model.config["vocab_size" if task == "nwp" else "num_classes"]
        out = self.workdir / f"bundle-{self._compiled}"
        return compile_bundle(model, example_input(task, model, batch=2), out, labels=[str(i) for i in range(classes)],
                              target=self.target, verify=False)

    def _timers(self, bundle: Path, name: str) -> dict[str, VMFunctionTimer]:
        """The bundle's `update` and batch-1 forward, loaded on the device with their arguments."""
        import numpy as np

        from android_harness.latency import function_calls
        from android_harness.push import push_bundle, read_intact_manifest, remote_path

        manifest = read_intact_manifest(bundle)
        calls = function_calls(bundle, manifest, np.random.default_rng(0))
        forward = next(c for c in calls if c.function != "update" and c.batch == 1)
        update = next(c for c in calls if c.function == "update")
        dest = remote_path(self.dest, name) if self.dest else name
        push_bundle(bundle, self.transport, dest, names=sorted({forward.module, update.module}), verify=False)
        return {"update": self.transport.prepare(remote_path(dest, update.module), "update", update.args),
                "forward": self.transport.prepare(remote_path(dest, forward.module), forward.function, forward.args)}

    def time_bundles(self, bundles: dict[str, Path], runs: int = 1) -> list[dict[str, dict[str, float]]]:
        """Median ms of `update` and the batch-1 forward of each bundle, side by side, in each of
        `runs` runs: every round takes one sample of each function of each bundle, so load changes
        hit all alike. The bundles are pushed and loaded once (a pushed file must not replace a
        loaded one)."""
        timers = {name: self._timers(bundle, name) for name, bundle in bundles.items()}
        out = []
        for run in range(runs):
            samples: dict[str, dict[str, list[float]]] = {n: {"update": [], "forward": []} for n in timers}
            for _ in tqdm(range(self.repeats), desc=f"time on {self.transport.name} ({run + 1}/{runs})",
                          unit="round", disable=None, leave=False):
                for name, fns in timers.items():
                    for key, timer in fns.items():
                        samples[name][key].append(1e3 * timer.time(number=self.number, repeat=1)[0])
            out.append({name: {key: statistics.median(s) for key, s in per.items()} for name, per in samples.items()})
        return out

    def step_times(self, models: dict[str, Any], task: str, runs: int = 1) -> list[dict[str, dict[str, float]]]:
        """Compiled `update` and forward ms of each model, measured side by side, in each of `runs`
        independent runs (compiled once): how far a ratio moves between runs shows how reliable it is."""
        bundles = {name: self.compile(model, task) for name, model in
                   tqdm(models.items(), desc="compile for timing", unit="model", disable=None, leave=False)}
        return self.time_bundles(bundles, runs)

    def latency(self, model: Any, task: str) -> float:
        """The search's resource: ms of one transfer-learning step plus one inference on the
        target, cached by architecture (the config fixes every shape; weights do not matter)."""
        key = json.dumps(model.config, sort_keys=True)
        if key not in self._cache:
            bundle = self.compile(model, task)
            times = self.time_bundles({f"probe-{len(self._cache)}": bundle})[0]
            shutil.rmtree(bundle)  # probes are many: keep the disk for the next
            self._cache[key] = sum(next(iter(times.values())).values())
        return self._cache[key]
