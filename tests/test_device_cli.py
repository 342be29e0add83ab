"""The device commands, each in a fresh process as on a phone: no torch, no network, clear errors."""
import json
import shutil
import subprocess
import sys

import pytest

from test_device_data import write_nwp_user

# Runs the commands through autlearn's own main() under an audit hook that records every
# socket operation (creation, connect, bind, name lookup) the process attempts.
NO_NETWORK_DRIVER = r"""
import json, sys
events = []
sys.addaudithook(lambda event, args: events.append(event) if event.startswith("socket.") else None)
from autlearn.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "socket_events": events, "torch_loaded": "torch" in sys.modules}))
"""


def run_commands(commands, cwd):
    done = subprocess.run([sys.executable, "-c", NO_NETWORK_DRIVER, json.dumps(commands)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def user(tiny_nwp_bundle, tmp_path):
    return write_nwp_user(tiny_nwp_bundle, tmp_path / "user.npz", n=32, n_test=8)


def test_offline_online_infer_status_without_network_or_torch(tiny_nwp_bundle, user, tmp_path):
    b, s = str(tiny_nwp_bundle), str(tmp_path / "state")
    commands = [
        ["device", "offline", "--bundle", b, "--data", str(user), "--state", s, "--epochs", "2",
         "--window-steps", "5", "--checkpoint-every", "2", "--augment-ratio", "0"],
        ["device", "online", "--bundle", b, "--data", str(user), "--state", s, "--batch", "8",
         "--feedback-delay", "2"],
        ["device", "infer", "--bundle", b, "--input", str(user), "--state", s, "--top", "2"],
    ]
    out, result = run_commands(commands, tmp_path)
    assert result == {"codes": [0, 0, 0], "socket_events": [], "torch_loaded": False}
    assert '"stopped_because": "finished"' in out and '"prequential_accuracy"' in out
    assert (tmp_path / "state" / "prequential.png").stat().st_size > 1000
    status = subprocess.run([sys.executable, "-m", "autlearn", "device", "status", "--state", s],
                            capture_output=True, text=True, timeout=60, check=True)
    shown = json.loads(status.stdout)
    assert shown["offline"]["windows"] == 4 and shown["offline"]["step"] == 16  # ceil(16 / 5) windows
    assert shown["online"]["updates"] == 8 and shown["online"]["last_checkpoint"]


def test_errors_are_one_clear_line(tiny_nwp_bundle, user, tmp_path):
    broken = shutil.copytree(tiny_nwp_bundle, tmp_path / "broken")
    (broken / "forward.so").write_bytes(b"tampered")
    cases = [
        (["device", "offline", "--bundle", str(broken), "--data", str(user), "--state", str(tmp_path / "s")],
         "sha256 mismatch (missing, extra or changed file): forward.so"),
        (["device", "infer", "--bundle", str(tiny_nwp_bundle), "--input", str(tmp_path / "none.npy")],
         "input file"),
        (["device", "status", "--state", str(tmp_path / "nowhere")], "does not exist"),
        (["device", "offline", "--bundle", str(tiny_nwp_bundle), "--data", str(user), "--state",
          str(tmp_path / "s"), "--augment-ratio", "2"], "at most 1x the original data"),
    ]
    for argv, message in cases:
        done = subprocess.run([sys.executable, "-m", "autlearn", *argv], capture_output=True, text=True, timeout=60)
        errors = [line for line in done.stderr.splitlines() if line.startswith("autlearn: error:")]
        assert done.returncode == 2 and len(errors) == 1 and message in errors[0], (argv, done.stderr[-500:])
