"""Load: the online learner under a long stream of events whose labels come late, out of order, or
never. Memory must stay within the cache's bound, and no label whose sample still fits the cache
(one of the `cache_size` most recent samples still waiting for a label) may be lost.

A shadow of the cache (the same LRU bound over the samples still waiting) says which labels fit;
each label the learner drops although its sample fits is a lost sample. Throughput, the resident
memory over the stream and its peak are reported.
"""
from __future__ import annotations

import collections
import heapq
import time
from pathlib import Path
from typing import Any

import numpy as np

from autlearn.reliability.workload import child_main, run_child


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stream(bundle: str, events: int, cache_size: int, mean_delay: float, missing: float, seed: int,
            pool: int = 256) -> dict[str, Any]:
    from device_runtime.bundle import load_bundle
    from device_runtime.learner import Learner
    from device_runtime.manifest import sample_input
    from device_runtime.model import DeviceModel
    from device_runtime.online import InferenceCache, OnlineLearner

    model = DeviceModel(load_bundle(bundle))
    manifest = model.manifest
    rng = np.random.default_rng(seed)
    shape = manifest.forward_functions[0]["input_shape"][1:]
    inputs = sample_input(manifest.input, (pool, *shape), rng)  # a pool of inputs; every event is its own sample
    labels = rng.integers(0, manifest.num_classes, size=pool)
    cache = InferenceCache(cache_size, max_age_s=1e9)  # the entry bound alone, so the shadow is exact
    online = OnlineLearner(model, Learner(model), cache)
    cut_bytes = int(np.prod(manifest.cut["shape"][1:])) * np.dtype(manifest.cut["dtype"]).itemsize
    waiting: collections.OrderedDict[int, None] = collections.OrderedDict()  # the shadow cache
    due: list[tuple[float, int]] = []  # (arrival, sample) of the labels on their way
    fitting = lost = beyond_bound = 0
    over_bound, rss = 0, [_rss_mb()]
    start = time.monotonic()
    for i in range(events):
        online.infer(inputs[i % pool], key=i)
        waiting[i] = None
        if len(waiting) > cache_size:
            waiting.popitem(last=False)
        if rng.random() >= missing:
            heapq.heappush(due, (i + rng.exponential(mean_delay), i))
        while due and due[0][0] <= i:
            _, j = heapq.heappop(due)
            fits = waiting.pop(j, "gone") is None
            dropped = online.stats.dropped
            online.feedback(j, int(labels[j % pool]))
            fitting += fits
            beyond_bound += not fits
            lost += fits and online.stats.dropped > dropped
        over_bound += len(cache) > cache_size or cache.nbytes > cache_size * cut_bytes or len(online.pending) >= online.batch
        if i % 1000 == 0:
            rss.append(_rss_mb())
    seconds = time.monotonic() - start
    rss.append(_rss_mb())
    return {"events": events, "labels_fitting": fitting, "labels_beyond_bound": beyond_bound,
            "samples_lost": int(lost), "updates": online.stats.updates, "memory_over_bound": over_bound,
            "cache_bound_mb": round(cache_size * cut_bytes / 2 ** 20, 3),
            "events_per_s": round(events / seconds, 1), "rss_start_mb": round(rss[0], 1),
            # the update module loads and its memory pool fills in the first updates; after that, flat
            "rss_after_first_tenth_mb": round(rss[min(len(rss) - 1, len(rss) // 10 + 1)], 1),
            "rss_end_mb": round(rss[-1], 1), "rss_max_during_mb": round(max(rss), 1)}


def stream_load(bundle: Path, *, events: int, cache_size: int = 256, mean_delay: float = 64.0, missing: float = 0.1,
         seed: int = 0) -> dict[str, Any]:
    """Streams `events` samples through online learning in a fresh device process; labels arrive
    after an exponential delay of mean `mean_delay` samples (so out of order), a `missing` share never."""
    return run_child("autlearn.reliability.load", {"bundle": str(bundle), "events": events, "cache_size": cache_size,
                                                   "mean_delay": mean_delay, "missing": missing, "seed": seed})


if __name__ == "__main__":
    child_main(_stream)
