"""Offline learning: windows, policy, atomic checkpoints, and resuming to the same params."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from device_runtime.offline import OfflineConfig, OfflineRun
from device_runtime.policy import AlwaysProvider, LinuxSysfsProvider, TrainingPolicy
from device_runtime.state import read_status
from test_device_data import write_nwp_user

ALWAYS = TrainingPolicy(AlwaysProvider())


@pytest.fixture(scope="module")
def user(tiny_nwp_bundle, tmp_path_factory):
    return write_nwp_user(tiny_nwp_bundle, tmp_path_factory.mktemp("user") / "user.npz", n=64)


def final_params(run: OfflineRun) -> dict:
    return run.learner.state_arrays()


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_windowed_runs_end_with_the_uninterrupted_params(tiny_nwp_bundle, user, tmp_path):
    config = OfflineConfig(epochs=3, augment_ratio=0, checkpoint_every=3, seed=7)
    whole = OfflineRun(tiny_nwp_bundle, user, tmp_path / "whole", config, ALWAYS)
    status = whole.run()
    assert status["finished"] and status["step"] == 3 * (64 // 4)
    windowed = OfflineConfig(epochs=3, augment_ratio=0, checkpoint_every=3, seed=7, window_steps=7, max_windows=1)
    invocations = 0
    while True:  # one window per invocation, as a scheduler would start it
        run = OfflineRun(tiny_nwp_bundle, user, tmp_path / "windowed", windowed, ALWAYS)
        status = run.run()
        invocations += 1
        if status["finished"]:
            break
        assert status["stopped_because"].startswith("used the 1 window")
    assert invocations == 7 and status["windows"] == 7  # ceil(48 / 7)
    assert_same_params(final_params(whole), final_params(run))
    assert status["last_checkpoint"] and read_status(tmp_path / "windowed")["offline"]["windows"] == 7


def test_time_windows(tiny_nwp_bundle, user, tmp_path):
    config = OfflineConfig(epochs=1000, augment_ratio=0, checkpoint_every=10_000, window_seconds=0.2, max_windows=2)
    start = time.monotonic()
    status = OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", config, ALWAYS).run()
    assert 0.4 <= time.monotonic() - start < 5 and status["windows"] == 2 and 0 < status["step"] < 16_000


def test_training_lowers_the_loss(tiny_nwp_bundle, user, tmp_path):
    losses = []
    config = OfflineConfig(epochs=20, augment_ratio=0, checkpoint_every=1000)
    run = OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", config, ALWAYS,
                     on_step=lambda progress, result: losses.append(result.loss))
    run.run()
    assert len(losses) == 20 * 16
    assert np.mean(losses[-16:]) < np.mean(losses[:16]) - 0.05


def test_policy_pauses_and_resumes(tiny_nwp_bundle, user, tmp_path):
    supply = tmp_path / "power_supply"
    (supply / "BAT0").mkdir(parents=True)
    (supply / "BAT0" / "type").write_text("Battery\n")
    (supply / "BAT0" / "status").write_text("Discharging\n")
    policy = TrainingPolicy(LinuxSysfsProvider(supply, tmp_path / "no_backlight"))
    config = OfflineConfig(epochs=1, augment_ratio=0)
    status = OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", config, policy).run()
    assert status["step"] == 0 and status["stopped_because"] == "policy: not charging"
    (supply / "BAT0" / "status").write_text("Charging\n")
    status = OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", config, policy).run()
    assert status["finished"] and status["step"] == 16


def test_a_checkpoint_of_another_run_is_refused(tiny_nwp_bundle, user, tmp_path):
    OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", OfflineConfig(augment_ratio=0), ALWAYS).run()
    with pytest.raises(ValueError, match="belongs to another run: seed differ"):
        OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", OfflineConfig(augment_ratio=0, seed=1), ALWAYS)
    (tmp_path / "s" / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        OfflineRun(tiny_nwp_bundle, user, tmp_path / "s", OfflineConfig(augment_ratio=0), ALWAYS)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="not both"):
        OfflineConfig(window_steps=3, window_seconds=1.0)
    with pytest.raises(ValueError, match="at most 1x"):
        OfflineConfig(augment_ratio=1.5)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        OfflineConfig(epochs=0)


def test_sigkilled_process_resumes_where_it_stopped(tiny_nwp_bundle, user, tmp_path):
    state = tmp_path / "killed"
    args = ["--bundle", str(tiny_nwp_bundle), "--data", str(user), "--state", str(state), "--epochs", "60",
            "--checkpoint-every", "1", "--augment-ratio", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "autlearn", "device", "offline", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status_file = state / "status.json"
            if status_file.exists() and json.loads(status_file.read_text())["offline"]["step"] >= 20:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_status(state)["offline"]
    assert not killed_at["finished"] and killed_at["step"] >= 20
    config = OfflineConfig(epochs=60, checkpoint_every=10_000, augment_ratio=0)  # checkpoints do not change params
    resumed = OfflineRun(tiny_nwp_bundle, user, state, config, ALWAYS)
    assert resumed.progress.step >= killed_at["step"]
    resumed.run()
    assert not list(state.glob(".*.tmp"))  # a write cut by the kill leaves nothing behind
    whole = OfflineRun(tiny_nwp_bundle, user, tmp_path / "whole", config, ALWAYS)
    whole.run()
    assert_same_params(final_params(whole), final_params(resumed))
