"""Online learning with the inference-training cache.

Every input is inferred once; its cut activation and prediction wait in a bounded cache keyed
by the sample. When the user's feedback gives the label, the cached cut becomes a training
example with no second forward pass, and a full batch triggers an update. The cache evicts the
least recently used entry beyond `max_entries` and any entry older than `max_age_s`, so memory
stays bounded. Accuracy is prequential: each prediction is scored before its label trains.

`run_online` continues the state directory's newest params (device_runtime/state.py) and, per
stream, where it stopped: a stream's entry holds how many samples were consumed (their label
given) and the sha256 of those samples, so a rerun of the same file, or of one that grew, starts
after them. The labels still pending (their cut or input) are saved with the params; a killed
run loses only what followed its last checkpoint, and the rerun processes exactly that.
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
from device_runtime.learner import Learner, StepResult
from device_runtime.model import DeviceModel
from device_runtime.state import CHECKPOINT, load_learned, save_learned, update_status
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
    fed: int = 0            # labels given, whatever came of them: the samples the stream consumed
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
        # (cut or None, input when the cut must be recomputed, label), in arrival order; run_online saves them
        self.pending: list[tuple[np.ndarray | None, np.ndarray | None, int]] = []
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
        self.stats.fed += 1
        entry = self.cache.pop(key) if self.cache is not None else None
        if entry is not None:
            prediction = entry.prediction
            self.pending.append((entry.cut, None, label))
        elif x is not None:
            prediction = self._predictions.pop(key, None)
            self.pending.append((None, np.asarray(x), label))
            self.stats.recomputed += 1
        else:
            self.stats.dropped += 1
            return []
        if prediction is not None:
            self.stats.labelled += 1
            self.stats.correct += int(prediction == label)
        return self._maybe_update()

    def _maybe_update(self) -> list[StepResult]:
        if len(self.pending) < self.batch:
            return []
        cuts = [c for c, _, _ in self.pending]
        missing = [i for i, c in enumerate(cuts) if c is None]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in missing:  # no cached activation: one batched forward pass per input shape recomputes them
            by_shape.setdefault(self.pending[i][1].shape, []).append(i)
        for group in by_shape.values():
            recomputed = self.model.forward(np.stack([self.pending[i][1] for i in group]))[1]
            for i, c in zip(group, recomputed):
                cuts[i] = c
        cut = np.stack(cuts)
        labels = np.asarray([label for _, _, label in self.pending], dtype=np.int64)
        self.pending = []
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


def _pack_pending(pending: list[tuple[np.ndarray | None, np.ndarray | None, int]]) -> dict[str, np.ndarray]:
    """The pending labels as arrays: `labels`, and per label `cut_<i>` or `x_<i>`, as they are held."""
    arrays = {"labels": np.asarray([label for _, _, label in pending], dtype=np.int64)}
    for i, (cut, x, _) in enumerate(pending):
        arrays[f"cut_{i}" if cut is not None else f"x_{i}"] = cut if cut is not None else x
    return arrays


def _unpack_pending(arrays: dict[str, np.ndarray]) -> list[tuple[np.ndarray | None, np.ndarray | None, int]]:
    """What `_pack_pending` wrote, back in OnlineLearner.pending's form."""
    return [(arrays.get(f"cut_{i}"), arrays.get(f"x_{i}"), int(label))
            for i, label in enumerate(arrays.get("labels", ()))]


class _PrefixDigest:
    """sha256 of a stream's first n samples (inputs and labels), extended as n grows."""

    def __init__(self, x: Sequence[np.ndarray], y: np.ndarray) -> None:
        self._x, self._y, self._n, self._hash = x, y, 0, hashlib.sha256()

    def at(self, n: int) -> str:
        for i in range(self._n, n):
            self._hash.update(f"{sample_key(self._x[i])}:{int(self._y[i])};".encode())
        self._n = max(self._n, n)
        return self._hash.hexdigest()


def _stream_entry(streams: list[dict[str, Any]], x: Sequence[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    """The entry of `streams` this stream continues (the longest whose consumed samples it begins
    with), else a new one appended."""
    digest, found = _PrefixDigest(x, y), None
    for entry in sorted(streams, key=lambda e: e["consumed"]):
        if entry["consumed"] > len(y):
            break
        if digest.at(entry["consumed"]) == entry["digest"]:
            found = entry
    if found is None:
        found = {"consumed": 0, "digest": hashlib.sha256().hexdigest()}
        streams.append(found)
    return found


def run_online(bundle_dir: str | Path, data_path: str | Path, state_dir: str | Path, *, batch: int = 16,
               cache_size: int = 256, max_age_s: float = 600.0, feedback_delay: int = 0, use_cache: bool = True,
               checkpoint_every: int = 10, on_sample: Callable[[int], None] | None = None,
               text: bool = False) -> dict[str, Any]:
    """Streams the data file's samples through online learning; saves params and status in `state_dir`.

    With `text`, the file is typed text, one line at a time (device_runtime/text.py): every word
    is predicted from the words before it, then learned.

    Starts from the state directory's newest params and pending labels, after the samples of this
    stream already consumed (`on_sample` gets indices into the whole file); checkpoints atomically
    every `checkpoint_every` updates and at the end, when anything was consumed.
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
    state = load_learned(state_dir, learner)
    started_from = state.describe(model.manifest.fingerprint)
    cache = InferenceCache(cache_size, max_age_s) if use_cache else None
    online = OnlineLearner(model, learner, cache, batch)
    online.pending = _unpack_pending(state.arrays.get("online", {}))
    streams = [dict(e) for e in state.sections.get("online", {}).get("streams", [])]
    stream = _stream_entry(streams, x, y)
    start = stream["consumed"]
    digest = _PrefixDigest(x, y)
    digest.at(start)
    saved_updates, saved_fed, saved_time = 0, 0, None

    def save() -> None:
        nonlocal state, saved_updates, saved_fed, saved_time
        saved_updates, saved_fed = online.stats.updates, online.stats.fed
        stream.update(consumed=start + saved_fed, digest=digest.at(start + saved_fed))
        state = save_learned(state_dir, learner, state, "online", {"streams": streams}, _pack_pending(online.pending))
        saved_time = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def after_sample(i: int) -> None:
        if online.stats.updates - saved_updates >= checkpoint_every:
            save()
        if on_sample is not None:
            on_sample(start + i)

    stats = simulate_stream(online, x[start:], y[start:], feedback_delay=feedback_delay, on_sample=after_sample)
    if stats.fed > saved_fed:
        save()
    status = {"started_from": started_from, "samples": len(y), "resumed_at": start, "consumed": start + stats.fed,
              "pending": len(online.pending), "inferred": stats.inferred,
              "labelled": stats.labelled, "updates": stats.updates, "rollbacks": learner.rollbacks,
              "prequential_accuracy": stats.accuracy, "recomputed": stats.recomputed, "dropped": stats.dropped,
              "evicted": cache.evicted if cache else 0, "curve": [list(p) for p in stats.curve],
              "last_checkpoint": saved_time, "generation": state.generation, "checkpoint": str(state_dir / CHECKPOINT)}
    update_status(state_dir, "online", status)
    return status
