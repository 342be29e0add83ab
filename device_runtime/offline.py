"""Offline learning: epochs over the user's history data, in windows the device may train in.

The cut activations depend on the frozen stages only, so they are computed once per sample
(augmented copies included) and reused by every epoch. Each epoch visits the samples in an
order drawn from one seeded Generator; the checkpoint (params, optimizer state, the epoch's
order and cursor, the Generator's state) is written atomically every N steps and at the end of
every window, so a killed or paused run resumes where it stopped and ends with the same params
as an uninterrupted one. The params are the state directory's newest (device_runtime/state.py):
after online learning, offline keeps its own progress but trains on from online's params.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.augmentation import augment_user_data
from device_runtime.bundle import Bundle, load_bundle
from device_runtime.learner import Learner, StepResult
from device_runtime.model import DeviceModel
from device_runtime.policy import TrainingPolicy
from device_runtime.state import CHECKPOINT, load_learned, save_learned, update_status
from device_runtime.userdata import load_user_data


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """How much to train and how to split it. Exactly one window budget may be set (or none)."""

    epochs: int = 1
    window_steps: int | None = None
    window_seconds: float | None = None
    checkpoint_every: int = 50
    augment_ratio: float = 1.0
    seed: int = 0
    max_windows: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.window_steps is not None and self.window_seconds is not None:
            raise ValueError("give a window budget in steps or in seconds, not both")
        if self.window_steps is not None and self.window_steps < 1:
            raise ValueError(f"window_steps must be >= 1, got {self.window_steps}")
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not 0 <= self.augment_ratio <= 1:
            raise ValueError(f"augment_ratio must lie in [0, 1] (at most 1x the original data), got {self.augment_ratio}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {self.max_windows}")


@dataclasses.dataclass
class Progress:
    """Where training stands; saved in the checkpoint's metadata and in status.json."""

    epoch: int = 0
    cursor: int = 0          # next batch start inside the current epoch's order
    step: int = 0
    windows: int = 0
    rollbacks: int = 0
    last_loss: float | None = None
    finished: bool = False
    rng_state: dict[str, Any] | None = None
    last_checkpoint: str | None = None
    stopped_because: str = ""


def augment_bundle_data(bundle: Bundle, x: np.ndarray, y: np.ndarray, *, ratio: float,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's data with the augmentation the bundle names (none for a model without one)."""
    kind = bundle.manifest.augmentation
    if kind is None:
        return x, y
    text = kind == "text"
    return augment_user_data(x, y, kind, ratio=ratio, seed=seed, vocab=bundle.tokenizer.vocab if text else None,
                             synonyms=bundle.synonyms if text else None)


class OfflineRun:
    """One bundle, one user's data, one state directory: trains in windows until the epochs are done."""

    def __init__(self, bundle_dir: str | Path, data_path: str | Path, state_dir: str | Path,
                 config: OfflineConfig, policy: TrainingPolicy,
                 on_step: Callable[[Progress, StepResult], None] | None = None) -> None:
        self.config = config
        self.policy = policy
        self.on_step = on_step
        self.state_dir = Path(state_dir)
        self.bundle = load_bundle(bundle_dir)
        self.model = DeviceModel(self.bundle)
        self.learner = Learner(self.model)
        self.data = load_user_data(data_path, self.model)
        x, y = augment_bundle_data(self.bundle, self.data.x, self.data.y, ratio=config.augment_ratio,
                                   seed=config.seed)
        batch = self.learner.batch
        if len(x) < batch:
            raise ValueError(f"user data has {len(x)} samples (with augmentation); one update needs {batch}")
        self.labels = y
        self.cuts = self.model.forward(x)[1]  # once per sample, reused by every epoch
        self.steps_per_epoch = len(x) // batch
        # the bundle is not part of it: a bundle of the same layout continues (device_runtime/state.py)
        self.identity = {"data": self.data.sha256, "augment_ratio": config.augment_ratio, "seed": config.seed,
                         "samples": len(x)}
        self.state = load_learned(self.state_dir, self.learner)
        self.started_from = self.state.describe(self.model.manifest.fingerprint)
        self.progress, self.order = self._resume_or_start()
        self._saved = (self.progress.step, self.progress.windows)

    @property
    def checkpoint_path(self) -> Path:
        return self.state_dir / CHECKPOINT

    def _resume_or_start(self) -> tuple[Progress, np.ndarray]:
        section = self.state.sections.get("offline")
        if section is None:
            rng = np.random.default_rng(self.config.seed)
            order = rng.permutation(len(self.labels))
            return Progress(rng_state=rng.bit_generator.state), order
        changed = [k for k, v in self.identity.items() if section["identity"].get(k) != v]
        if changed:
            raise ValueError(f"checkpoint {self.checkpoint_path} belongs to another run: {', '.join(changed)} differ "
                             f"(use a new --state directory)")
        if section["generation"] < self.state.generation:
            self.started_from += f", newer than offline's own generation {section['generation']}"
        progress = Progress(**section["progress"])
        progress.finished = progress.epoch >= self.config.epochs
        self.learner.rollbacks = progress.rollbacks
        return progress, self.state.arrays["offline"]["order"]

    def _checkpoint(self) -> None:
        """Saves the next generation when steps or windows were made since the last save; updates the status."""
        p = self.progress
        if (p.step, p.windows) != self._saved:
            p.rollbacks = self.learner.rollbacks
            p.last_checkpoint = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.state = save_learned(self.state_dir, self.learner, self.state, "offline",
                                      {"identity": self.identity, "progress": dataclasses.asdict(p)},
                                      {"order": self.order})
            self._saved = (p.step, p.windows)
        update_status(self.state_dir, "offline", self.status())

    def status(self) -> dict[str, Any]:
        """What `autlearn device status` shows."""
        p = self.progress
        total = self.config.epochs * self.steps_per_epoch
        return {"epoch": p.epoch, "epochs": self.config.epochs, "step": p.step,
                "total_steps": total, "progress": min(1.0, p.step / total), "windows": p.windows,
                "rollbacks": self.learner.rollbacks, "last_loss": p.last_loss, "finished": p.finished,
                "last_checkpoint": p.last_checkpoint, "checkpoint": str(self.checkpoint_path),
                "started_from": self.started_from, "generation": self.state.generation,
                "stopped_because": p.stopped_because}

    def _next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        batch = self.learner.batch
        index = self.order[self.progress.cursor:self.progress.cursor + batch]
        return self.cuts[index], self.labels[index]

    def _advance(self) -> None:
        """Moves the cursor one batch; at an epoch's end draws the next epoch's order."""
        p = self.progress
        p.cursor += self.learner.batch
        p.step += 1
        if p.cursor + self.learner.batch > len(self.labels):
            p.epoch += 1
            p.cursor = 0
            rng = np.random.default_rng()
            rng.bit_generator.state = p.rng_state
            self.order = rng.permutation(len(self.labels))
            p.rng_state = rng.bit_generator.state
            p.finished = p.epoch >= self.config.epochs

    def _window(self) -> None:
        """Steps until the window's budget is spent, training is done or the policy says stop."""
        cfg = self.config
        start, steps = time.monotonic(), 0
        while not self.progress.finished:
            if cfg.window_steps is not None and steps >= cfg.window_steps:
                break
            if cfg.window_seconds is not None and time.monotonic() - start >= cfg.window_seconds:
                break
            cut, labels = self._next_batch()
            result = self.learner.step(cut, labels)
            self.progress.last_loss = None if result.rolled_back else result.loss
            self._advance()
            steps += 1
            if self.on_step is not None:
                self.on_step(self.progress, result)
            if self.progress.step % cfg.checkpoint_every == 0:
                self._checkpoint()
                if not self.policy.may_train():
                    self.progress.stopped_because = f"policy: {self.policy.reason or 'the device may not train now'}"
                    break
        self.progress.windows += 1

    def run(self) -> dict[str, Any]:
        """Trains window after window until done, out of windows, or the policy forbids; returns the status."""
        windows_here = 0
        self.progress.stopped_because = ""
        while not self.progress.finished and not self.progress.stopped_because:
            if self.config.max_windows is not None and windows_here >= self.config.max_windows:
                self.progress.stopped_because = f"used the {windows_here} window(s) allowed for this run"
                break
            if not self.policy.may_train():
                self.progress.stopped_because = f"policy: {self.policy.reason or 'the device may not train now'}"
                break
            self._window()
            windows_here += 1
            self._checkpoint()
        if self.progress.finished:
            self.progress.stopped_because = "finished"
        self._checkpoint()
        return self.status()

    def evaluate(self) -> float | None:
        """Accuracy on the data file's test split with the current params (None without one)."""
        if self.data.test_x is None or not len(self.data.test_x):
            return None
        return float((self.model.predict(self.data.test_x) == self.data.test_y).mean())
