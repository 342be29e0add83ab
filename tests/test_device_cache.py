"""The inference-training cache: bounded by entries and by age, LRU order, eviction counts."""
import numpy as np
import pytest

from device_runtime.online import InferenceCache, sample_key


class Clock:
    """A settable clock, so ages are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cut(value: float) -> np.ndarray:
    return np.full(8, value, dtype=np.float32)


def test_lru_bound_evicts_least_recently_used():
    cache = InferenceCache(max_entries=3, max_age_s=100)
    for k in range(5):
        cache.put(k, cut(k), prediction=k)
    assert len(cache) == 3 and cache.evicted == 2
    assert cache.pop(0) is None and cache.pop(1) is None
    entry = cache.pop(4)
    assert entry.prediction == 4 and float(entry.cut[0]) == 4.0
    assert len(cache) == 2


def test_reput_refreshes_position():
    cache = InferenceCache(max_entries=2, max_age_s=100)
    cache.put("a", cut(0), 0)
    cache.put("b", cut(1), 1)
    cache.put("a", cut(2), 2)  # "a" is now the most recent
    cache.put("c", cut(3), 3)
    assert cache.pop("b") is None
    assert cache.pop("a").prediction == 2


def test_stale_entries_are_evicted_by_age():
    clock = Clock()
    cache = InferenceCache(max_entries=10, max_age_s=5, clock=clock)
    cache.put("old", cut(0), 0)
    clock.now = 3
    cache.put("new", cut(1), 1)
    clock.now = 6  # "old" is 6 s old, "new" 3 s
    assert cache.pop("old") is None
    assert cache.pop("new").prediction == 1
    assert cache.evicted == 1


def test_memory_stays_bounded_over_a_long_stream():
    cache = InferenceCache(max_entries=16, max_age_s=1e9)
    for k in range(1000):
        cache.put(k, cut(k), k)
    assert len(cache) == 16 and cache.nbytes == 16 * cut(0).nbytes


def test_sample_key_is_content_based():
    a = np.arange(6, dtype=np.int64)
    assert sample_key(a) == sample_key(a.copy())
    assert sample_key(a) != sample_key(a.reshape(2, 3))
    assert sample_key(a) != sample_key(a + 1)


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="max_entries"):
        InferenceCache(max_entries=0)
