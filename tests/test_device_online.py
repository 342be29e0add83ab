"""Online learning with the inference-training cache: no second forward pass, bounded memory,
the same params as recomputing, prequential accuracy; a stream continues where it stopped."""
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_runtime.bundle import load_bundle
from device_runtime.learner import Learner
from device_runtime.model import DeviceModel
from device_runtime.online import InferenceCache, OnlineLearner, run_online, simulate_stream
from device_runtime.checkpoint import load_checkpoint
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


def learned(state):
    """The params of a state directory's learned state, and its metadata."""
    arrays, meta = load_checkpoint(state / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if not k.startswith("__")}, meta


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def write_slice(path, x, y, n):
    np.savez(path, x=x[:n], y=y[:n])
    return path


def test_run_online_continues_from_the_offline_state_and_a_rerun_changes_nothing(tiny_nwp_bundle, tmp_path):
    from device_runtime.offline import OfflineConfig, OfflineRun
    from device_runtime.policy import AlwaysProvider, TrainingPolicy

    data = write_nwp_user(tiny_nwp_bundle, tmp_path / "u.npz", n=32, n_test=0)
    OfflineRun(tiny_nwp_bundle, data, tmp_path / "s", OfflineConfig(augment_ratio=0),
               TrainingPolicy(AlwaysProvider())).run()
    status = run_online(tiny_nwp_bundle, data, tmp_path / "s", batch=8)
    assert status["started_from"] == "generation 1 (offline)" and status["updates"] == 32 // 4
    assert status["generation"] == 2 and status["consumed"] == 32 and status["resumed_at"] == 0
    assert read_status(tmp_path / "s").keys() == {"offline", "online"}
    before = (tmp_path / "s" / "checkpoint.npz").read_bytes()
    again = run_online(tiny_nwp_bundle, data, tmp_path / "s", batch=8)
    assert again["started_from"] == "generation 2 (online)" and again["resumed_at"] == 32
    assert again["inferred"] == again["updates"] == 0 and again["generation"] == 2
    assert (tmp_path / "s" / "checkpoint.npz").read_bytes() == before  # nothing learned, nothing written


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_longer_file_only_learns_its_new_tail(tiny_nwp_bundle, stream, tmp_path, use_cache):
    x, y = stream
    short, longer = write_slice(tmp_path / "a.npz", x, y, 30), write_slice(tmp_path / "b.npz", x, y, 48)
    first = run_online(tiny_nwp_bundle, short, tmp_path / "s", batch=8, use_cache=use_cache)
    assert first["updates"] == 3 * 2 and first["pending"] == 6  # 30 labels: 3 batches of 8, 6 wait
    tail = run_online(tiny_nwp_bundle, longer, tmp_path / "s", batch=8, use_cache=use_cache)
    assert tail["resumed_at"] == 30 and tail["inferred"] == 18 and tail["updates"] == 3 * 2 and tail["pending"] == 0
    run_online(tiny_nwp_bundle, longer, tmp_path / "whole", batch=8, use_cache=use_cache)
    assert_same(learned(tmp_path / "s")[0], learned(tmp_path / "whole")[0])


def test_typed_text_continues_after_the_words_learned(tiny_nwp_bundle, tmp_path):
    typed = tmp_path / "typed.txt"
    typed.write_text("w1 w2 w3 w4 w5\nw6 w7 w8\n")
    first = run_online(tiny_nwp_bundle, typed, tmp_path / "s", batch=4, text=True)
    assert first["inferred"] == 4 + 2 and first["pending"] == 2
    assert run_online(tiny_nwp_bundle, typed, tmp_path / "s", batch=4, text=True)["inferred"] == 0
    typed.write_text("w1 w2 w3 w4 w5\nw6 w7 w8\nw9 w10 w11\n")
    grown = run_online(tiny_nwp_bundle, typed, tmp_path / "s", batch=4, text=True)
    assert grown["resumed_at"] == 6 and grown["inferred"] == 2 and grown["updates"] == 1 and grown["pending"] == 0


# Runs the stream in a fresh device process and SIGKILLs it when sample KILL_AT is inferred.
KILLED_DRIVER = r"""
import os, signal, sys
from device_runtime.isolation import isolate_device_process
isolate_device_process()
from device_runtime.online import run_online
bundle, data, state, kill_at = sys.argv[1:]
def on_sample(i):
    if i == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
run_online(bundle, data, state, batch=4, feedback_delay=3, checkpoint_every=2, on_sample=on_sample)
"""


def test_a_killed_stream_reruns_to_the_uninterrupted_params(tiny_nwp_bundle, stream, tmp_path):
    x, y = stream
    data, state = write_slice(tmp_path / "u.npz", x, y, 64), tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILLED_DRIVER, str(tiny_nwp_bundle), str(data), str(state), "45"],
                            cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # updates after labels 4, 8, ...; checkpoints every 2 updates: the last one after 40 labels,
    # while samples up to 45 were inferred (labels come 3 samples late)
    at_kill = learned(state)[1]["sections"]["online"]
    assert at_kill["streams"][0]["consumed"] == 40 and at_kill["generation"] == 5
    rerun = run_online(tiny_nwp_bundle, data, state, batch=4, feedback_delay=3, checkpoint_every=2)
    assert rerun["resumed_at"] == 40 and rerun["inferred"] == 24 and rerun["updates"] == 6
    run_online(tiny_nwp_bundle, data, tmp_path / "whole", batch=4, feedback_delay=3, checkpoint_every=2)
    assert_same(learned(state)[0], learned(tmp_path / "whole")[0])
