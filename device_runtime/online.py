"""Online learning with the inference-training cache.

Every input is inferred once; its cut activation and prediction wait in a bounded cache keyed
by the sample. When the user's feedback gives the label, the cached cut becomes a training
example with no second forward pass, and a full batch triggers an update. The cache evicts the
least recently used entry beyond `max_entries` and any entry older than `max_age_s`, so memory
stays bounded. Accuracy is prequential: each prediction is scored before its label trains.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device_runtime.bundle import load_bundle
from device_runtime.checkpoint import save_checkpoint
from device_runtime.learner import Learner, StepResult
from device_runtime.model import DeviceModel
from device_runtime.state import ONLINE_CHECKPOINT, restore_learned, update_status
from device_runtime.userdata import load_user_data


def sample_key(x: np.ndarray) -> str:
    """A key naming one input by its content (dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{x.dtype}{x.shape}".encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """What inference leaves for training: the cut activation of one sample and the prediction."""

    cut: np.ndarray
    prediction: int
    created: float


class InferenceCache:
    """A bounded LRU of CacheEntry with a maximum age; counts what it evicts."""

    def __init__(self, max_entries: int = 256, max_age_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or max_age_s <= 0:
            raise ValueError(f"cache needs max_entries >= 1 and max_age_s > 0, got {max_entries}, {max_age_s}")
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.clock = clock
        self._entries: collections.OrderedDict[Hashable, CacheEntry] = collections.OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached activations."""
        return sum(e.cut.nbytes for e in self._entries.values())

    def _evict_stale(self) -> None:
        deadline = self.clock() - self.max_age_s
        while self._entries and next(iter(self._entries.values())).created < deadline:
            self._entries.popitem(last=False)
            self.evicted += 1

    def put(self, key: Hashable, cut: np.ndarray, prediction: int) -> None:
        """Caches a sample's activation, evicting stale and least recently used entries."""
        self._evict_stale()
        self._entries.pop(key, None)
        self._entries[key] = CacheEntry(cut, prediction, self.clock())
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1

    def pop(self, key: Hashable) -> CacheEntry | None:
        """The entry for `key` (removed from the cache), or None when absent or stale."""
        self._evict_stale()
        return self._entries.pop(key, None)


@dataclasses.dataclass
class OnlineStats:
    """Counters of a stream and the prequential accuracy after each update."""

    inferred: int = 0
    labelled: int = 0
    correct: int = 0
    updates: int = 0
    recomputed: int = 0     # labels whose activation had to be recomputed (cache off, or evicted)
    dropped: int = 0        # labels that arrived for an unknown sample with no input to recompute
    curve: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=4096))

    @property
    def accuracy(self) -> float | None:
        """Prequential accuracy so far: predictions scored before their label trained the model."""
        return self.correct / self.labelled if self.labelled else None


class OnlineLearner:
    """Infer, keep, learn on feedback; `cache=None` recomputes the forward pass for every label."""

    def __init__(self, model: DeviceModel, learner: Learner, cache: InferenceCache | None,
                 batch: int | None = None) -> None:
        self.model = model
        self.learner = learner
        self.cache = cache
        self.batch = batch or model.train_batch
        if self.batch % model.train_batch:
            raise ValueError(f"online batch {self.batch} must be a multiple of the bundle's train_batch "
                             f"{model.train_batch}")
        self.stats = OnlineStats()
        # (cut or None, input when the cut must be recomputed, label), in arrival order
        self._pending: list[tuple[np.ndarray | None, np.ndarray | None, int]] = []
        self._predictions: collections.OrderedDict[Hashable, int] = collections.OrderedDict()

    def infer(self, x: np.ndarray, key: Hashable | None = None) -> tuple[Hashable, int]:
        """Predicts one sample (shape of one input, no batch axis); returns (key, predicted class)."""
        batch = self.model.check(np.expand_dims(x, 0))
        logits, cut = self.model.forward_batch(batch)
        prediction = int(logits.numpy()[0].argmax())
        key = sample_key(x) if key is None else key
        if self.cache is not None:
            self.cache.put(key, cut.numpy()[0], prediction)
        else:  # only the prediction, for prequential scoring; bounded like the cache
            self._predictions[key] = prediction
            while len(self._predictions) > 4 * self.batch:
                self._predictions.popitem(last=False)
        self.stats.inferred += 1
        return key, prediction

    def feedback(self, key: Hashable, label: int, x: np.ndarray | None = None) -> list[StepResult]:
        """The user's label for an inferred sample; returns the updates it triggered (often none).

        A label for a sample no longer cached is learned from `x` by recomputing its forward
        pass when `x` is given, and dropped (counted) otherwise.
        """
        label = int(label)
        if not 0 <= label < self.model.manifest.num_classes:
            raise ValueError(f"feedback label {label} is not a class id in [0, {self.model.manifest.num_classes - 1}]")
        entry = self.cache.pop(key) if self.cache is not None else None
        if entry is not None:
            prediction = entry.prediction
            self._pending.append((entry.cut, None, label))
        elif x is not None:
            prediction = self._predictions.pop(key, None)
            self._pending.append((None, np.asarray(x), label))
            self.stats.recomputed += 1
        else:
            self.stats.dropped += 1
            return []
        if prediction is not None:
            self.stats.labelled += 1
            self.stats.correct += int(prediction == label)
        return self._maybe_update()

    def _maybe_update(self) -> list[StepResult]:
        if len(self._pending) < self.batch:
            return []
        cuts = [c for c, _, _ in self._pending]
        missing = [i for i, c in enumerate(cuts) if c is None]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in missing:  # no cached activation: one batched forward pass per input shape recomputes them
            by_shape.setdefault(self._pending[i][1].shape, []).append(i)
        for group in by_shape.values():
            recomputed = self.model.forward(np.stack([self._pending[i][1] for i in group]))[1]
            for i, c in zip(group, recomputed):
                cuts[i] = c
        cut = np.stack(cuts)
        labels = np.asarray([label for _, _, label in self._pending], dtype=np.int64)
        self._pending = []
        step = self.model.train_batch
        results = [self.learner.step(cut[i:i + step], labels[i:i + step]) for i in range(0, self.batch, step)]
        self.stats.updates += len(results)
        self.stats.curve.append((self.stats.labelled, self.stats.accuracy))
        return results


def simulate_stream(online: OnlineLearner, x: Sequence[np.ndarray], y: np.ndarray, *, feedback_delay: int = 0,
                    on_sample: Callable[[int], None] | None = None) -> OnlineStats:
    """A user's stream: each sample is inferred, and its label arrives `feedback_delay` samples later.

    Without a cache the input goes along with the label, so its forward pass is recomputed.
    """
    if len(x) != len(y):
        raise ValueError(f"stream has {len(x)} inputs but {len(y)} labels")
    if feedback_delay < 0:
        raise ValueError(f"feedback_delay must be >= 0, got {feedback_delay}")
    waiting: collections.deque[tuple[Hashable, int]] = collections.deque()
    recompute = online.cache is None
    for i in range(len(x)):
        key, _ = online.infer(x[i], key=i)
        waiting.append((key, i))
        while len(waiting) > feedback_delay:
            key, j = waiting.popleft()
            online.feedback(key, int(y[j]), x[j] if recompute else None)
        if on_sample is not None:
            on_sample(i)
    while waiting:
        key, j = waiting.popleft()
        online.feedback(key, int(y[j]), x[j] if recompute else None)
    return online.stats


def run_online(bundle_dir: str | Path, data_path: str | Path, state_dir: str | Path, *, batch: int = 16,
               cache_size: int = 256, max_age_s: float = 600.0, feedback_delay: int = 0, use_cache: bool = True,
               checkpoint_every: int = 10, on_sample: Callable[[int], None] | None = None,
               text: bool = False) -> dict[str, Any]:
    """Streams the data file's samples through online learning; saves params and status in `state_dir`.

    With `text`, the file is typed text, one line at a time (device_runtime/text.py): every word
    is predicted from the words before it, then learned.

    Starts from the state directory's last online or offline checkpoint of the same bundle and
    checkpoints atomically every `checkpoint_every` updates and at the end.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    state_dir = Path(state_dir)
    model = DeviceModel(load_bundle(bundle_dir))
    learner = Learner(model)
    if text:
        from device_runtime.text import read_text, typed_samples

        x, y = typed_samples(model, read_text(data_path))
    else:
        data = load_user_data(data_path, model)
        x, y = data.x, data.y
    start = restore_learned(learner, state_dir)
    cache = InferenceCache(cache_size, max_age_s) if use_cache else None
    online = OnlineLearner(model, learner, cache, batch)
    saved_at = 0

    def save() -> None:
        nonlocal saved_at
        saved_at = online.stats.updates
        save_checkpoint(state_dir / ONLINE_CHECKPOINT, learner.state_arrays(),
                        {"identity": {"bundle": model.bundle.fingerprint}, "updates": saved_at})

    def after_sample(i: int) -> None:
        if online.stats.updates - saved_at >= checkpoint_every:
            save()
        if on_sample is not None:
            on_sample(i)

    stats = simulate_stream(online, x, y, feedback_delay=feedback_delay, on_sample=after_sample)
    save()
    status = {"started_from": str(start) if start else "bundle", "inferred": stats.inferred,
              "labelled": stats.labelled, "updates": stats.updates, "rollbacks": learner.rollbacks,
              "prequential_accuracy": stats.accuracy, "recomputed": stats.recomputed, "dropped": stats.dropped,
              "evicted": cache.evicted if cache else 0, "curve": [list(p) for p in stats.curve],
              "last_checkpoint": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "checkpoint": str(state_dir / ONLINE_CHECKPOINT)}
    update_status(state_dir, "online", status)
    return status
