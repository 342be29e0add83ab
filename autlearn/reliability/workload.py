"""What the reliability sections share: a user's data made from the bundle's own input spec, the
device commands run as a phone runs them (each in a fresh, isolated process), and the params a
state directory holds."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.checkpoint import load_checkpoint
from device_runtime.manifest import read_manifest, sample_input


def synthetic_user(bundle: Path, path: Path, samples: int, seed: int) -> Path:
    """A user data file of `samples` valid inputs (the shape of the bundle's first forward
    function) with random labels: enough to train and to stream, whatever the model."""
    manifest = read_manifest(bundle)
    rng = np.random.default_rng(seed)
    shape = manifest.forward_functions[0]["input_shape"][1:]
    x = sample_input(manifest.input, (samples, *shape), rng)
    y = rng.integers(0, manifest.num_classes, size=samples).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def device_argv(log_file: Path, *args: str) -> list[str]:
    """The command line of `autlearn device ARGS` in a new process, quiet, its log in `log_file`."""
    return [sys.executable, "-m", "autlearn", "--quiet", "--log-file", str(log_file), "device", *args]


def learned_params(state_dir: Path) -> dict[str, np.ndarray]:
    """The trainable params and optimizer state of a state directory's checkpoint."""
    arrays, _ = load_checkpoint(Path(state_dir) / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if not k.startswith("__")}


def same_params(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Bit-identical params: a resumed run must end exactly where an uninterrupted one does."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def run_child(module: str, payload: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Runs `python -m module PAYLOAD_JSON` (a section's device side, see `child_main`) and returns
    the JSON object it prints last; RuntimeError with its stderr when it fails."""
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(payload)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{module} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(section: Callable[..., dict[str, Any]]) -> None:
    """The entry of a section's device process: isolated like a phone (runtime-only TVM, no torch),
    then `section(**payload)`, its result and this process's peak RSS printed as one JSON line."""
    from device_runtime.isolation import isolate_device_process

    isolate_device_process()
    result = section(**json.loads(sys.argv[1]))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
