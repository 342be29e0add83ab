"""Online learning with the inference-training cache: no second forward pass, bounded memory,
the same params as recomputing, prequential accuracy."""
import numpy as np
import pytest

from device_runtime.bundle import load_bundle
from device_runtime.learner import Learner
from device_runtime.model import DeviceModel
from device_runtime.online import InferenceCache, OnlineLearner, run_online, simulate_stream
from device_runtime.state import read_status
from test_device_data import write_nwp_user


class CountingModel(DeviceModel):
    """The real model, counting the samples its forward functions process."""

    forwarded = 0

    def forward_batch(self, x):
        self.forwarded += len(x)
        return super().forward_batch(x)


@pytest.fixture(scope="module")
def bundle(tiny_nwp_bundle):
    return load_bundle(tiny_nwp_bundle)


@pytest.fixture(scope="module")
def stream(tiny_nwp_bundle, tmp_path_factory):
    path = write_nwp_user(tiny_nwp_bundle, tmp_path_factory.mktemp("u") / "u.npz", n=64, n_test=0)
    with np.load(path) as data:
        return data["x"], data["y"]


def learner_for(bundle, cache):
    model = CountingModel(bundle)
    return OnlineLearner(model, Learner(model), cache, batch=16)


def test_cache_trains_without_a_second_forward_pass_and_matches_recomputing(bundle, stream):
    x, y = stream
    cached = learner_for(bundle, InferenceCache(max_entries=64))
    stats = simulate_stream(cached, x, y, feedback_delay=3)
    assert cached.model.forwarded == 64  # one forward pass per sample: inference only
    assert stats.updates == 64 // 4 and stats.labelled == 64 and stats.recomputed == 0
    recompute = learner_for(bundle, None)
    simulate_stream(recompute, x, y, feedback_delay=3)
    assert recompute.model.forwarded == 128 and recompute.stats.recomputed == 64
    for a, b in zip(cached.learner.state_arrays().values(), recompute.learner.state_arrays().values()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert 0 <= stats.accuracy <= 1 and len(stats.curve) == 4  # one point per update


def test_stale_labels_are_dropped_and_memory_is_bounded(bundle, stream):
    x, y = stream
    online = learner_for(bundle, InferenceCache(max_entries=8))
    stats = simulate_stream(online, x, y, feedback_delay=10)  # labels come after 10 more inferences
    # only the last 8 labels (flushed at the stream's end) find their sample still cached
    assert stats.dropped == 56 and stats.labelled == 8 and stats.updates == 0
    assert online.cache.evicted == 56 and len(online.cache) == 0


def test_prequential_accuracy_scores_before_learning(bundle, stream):
    x, y = stream
    online = learner_for(bundle, InferenceCache())
    key, prediction = online.infer(x[0])
    online.feedback(key, prediction)  # the user confirms the prediction
    key, prediction = online.infer(x[1])
    online.feedback(key, (prediction + 1) % 40)
    assert online.stats.labelled == 2 and online.stats.accuracy == 0.5


def test_bad_feedback_and_inputs(bundle, stream):
    online = learner_for(bundle, InferenceCache())
    with pytest.raises(ValueError, match=r"not a class id in \[0, 39\]"):
        online.feedback("k", 40)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 39\]"):
        online.infer(np.array([1, 2, 3, 4, 5, 77], dtype=np.int64))
    with pytest.raises(ValueError, match="multiple of the bundle's train_batch 4"):
        OnlineLearner(online.model, online.learner, None, batch=6)
    assert online.feedback("unknown", 1) == [] and online.stats.dropped == 1


def test_run_online_continues_from_the_offline_state(tiny_nwp_bundle, tmp_path):
    from device_runtime.offline import OfflineConfig, OfflineRun
    from device_runtime.policy import AlwaysProvider, TrainingPolicy

    data = write_nwp_user(tiny_nwp_bundle, tmp_path / "u.npz", n=32, n_test=0)
    OfflineRun(tiny_nwp_bundle, data, tmp_path / "s", OfflineConfig(augment_ratio=0),
               TrainingPolicy(AlwaysProvider())).run()
    status = run_online(tiny_nwp_bundle, data, tmp_path / "s", batch=8)
    assert status["started_from"].endswith("checkpoint.npz") and status["updates"] == 32 // 4
    assert read_status(tmp_path / "s").keys() == {"offline", "online"}
    again = run_online(tiny_nwp_bundle, data, tmp_path / "s", batch=8)
    assert again["started_from"].endswith("online.npz")
