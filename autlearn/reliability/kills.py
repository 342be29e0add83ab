"""SIGKILL at random moments: offline and online learning, each killed mid-run in a fresh device
process and rerun; the checkpoint must never be corrupt, and the rerun must end with the params of
an uninterrupted run, bit for bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autlearn.reliability.workload import device_argv, learned_params, same_params, synthetic_user
from device_runtime.checkpoint import load_checkpoint
from device_runtime.manifest import read_manifest


def _mode_args(mode: str, bundle: Path, user: Path, state: Path, epochs: int, batch: int) -> list[str]:
    common = ["--bundle", str(bundle), "--data", str(user), "--state", str(state), "--checkpoint-every", "1"]
    if mode == "offline":
        return ["offline", *common, "--epochs", str(epochs), "--augment-ratio", "0", "--policy", "always"]
    return ["online", *common, "--batch", str(batch), "--feedback-delay", "3"]


def _intact(state: Path) -> bool:
    """Whether what the killed process left is readable: checkpoint and status, if there (a
    leftover temporary file is harmless: readers never open it and the next write removes it)."""
    try:
        if (state / "checkpoint.npz").exists():
            load_checkpoint(state / "checkpoint.npz")
        if (state / "status.json").exists():
            json.loads((state / "status.json").read_text())
        return True
    except (ValueError, OSError):
        return False


def _run(argv: list[str]) -> tuple[int, float, float | None]:
    """Runs to the end: (exit code, seconds in all, seconds until the first checkpoint appeared)."""
    state = Path(argv[argv.index("--state") + 1])
    start, first = time.monotonic(), None
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if first is None and (state / "checkpoint.npz").exists():
            first = time.monotonic() - start
        time.sleep(0.002)
    return proc.returncode, time.monotonic() - start, first


def _kill_during(argv: list[str], delay: float) -> bool:
    """Starts the run and SIGKILLs it `delay` seconds after its first checkpoint; True when it was
    still running then (the kill landed), False when it finished first."""
    state = Path(argv[argv.index("--state") + 1])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (state / "checkpoint.npz").exists():
        time.sleep(0.001)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    landed = proc.poll() is None
    if landed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return landed


def kill_trials(bundle: Path, work: Path, *, trials: int, samples: int = 64, epochs: int = 4, seed: int = 0,
                on_trial: Callable[[], None] | None = None) -> dict[str, Any]:
    """`trials` kills alternating offline and online; figures: trials, survived, landed, failures."""
    bundle, work = Path(bundle), Path(work)
    user = synthetic_user(bundle, work / "user.npz", samples, seed)
    batch = read_manifest(bundle).train_batch
    log = work / "device.log"
    reference, span = {}, {}
    for mode in ("offline", "online"):
        code, total, first = _run(device_argv(log, *_mode_args(mode, bundle, user, work / f"ref-{mode}", epochs, batch)))
        if code != 0:
            raise RuntimeError(f"the uninterrupted {mode} run failed (exit {code}); see {log}")
        reference[mode], span[mode] = learned_params(work / f"ref-{mode}"), total - (first or 0.0)
    rng = np.random.default_rng(seed)
    survived, landed, failures = 0, 0, []
    for trial in range(trials):
        mode = ("offline", "online")[trial % 2]
        state = work / f"trial-{trial}"
        argv = device_argv(log, *_mode_args(mode, bundle, user, state, epochs, batch))
        delay = float(rng.uniform(0, span[mode]))
        landed += _kill_during(argv, delay)
        intact = _intact(state)
        code, _, _ = _run(argv)
        ok = intact and code == 0 and same_params(learned_params(state), reference[mode])
        survived += ok
        if not ok:
            failures.append(f"trial {trial} ({mode}, killed {delay:.3f} s after its first checkpoint): "
                            f"{'checkpoint unreadable after the kill' if not intact else f'rerun exit {code}' if code else 'params differ'}")
        if on_trial is not None:
            on_trial()
    return {"kill_trials": trials, "kills_survived": survived, "kills_landed": landed,
            "kill_failures": failures, "training_span_s": {m: round(s, 3) for m, s in span.items()}}
