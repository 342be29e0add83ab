"""The emulated arm64 device end to end (marker `arm64`; `make test-arm64` builds the root first).

Everything here runs REAL arm64 code under qemu-user: the device's busybox shell, its python3.11
with numpy and the TVM runtime, the linux-arm64 bundles' shipped .so files (through the TVM RPC
server started inside the emulator) and `autlearn device offline`. Skipped, at no cost, when
`autlearn emulator setup` has not built the root.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from android_harness.emulator import EmulatorRoot
from conftest import TINY_TRAIN_BATCH, tiny_image_inputs, tiny_image_model, tiny_nwp_inputs, tiny_nwp_model

pytestmark = [pytest.mark.arm64,
              pytest.mark.skipif(not EmulatorRoot().is_ready(),
                                 reason="no arm64 emulator root: run `autlearn emulator setup` (or `make test-arm64`)")]

# Host and emulator run the same untuned kernels; measured: the params agree bit for bit. The
# tolerance leaves room for kernels that vectorise differently on the two CPUs.
PARAM_RTOL, PARAM_ATOL = 1e-4, 1e-6
EMULATED = "emulated arm64 Linux (aarch64-linux-gnu)"


@pytest.fixture(scope="module")
def device() -> Iterator:
    from android_harness.qemu import QemuTransport

    with QemuTransport() as emulated:
        yield emulated


def _compile(kind: str, out: Path, target: str, optimizer: str) -> Path:
    from compiler import compile_bundle

    model, inputs = (tiny_nwp_model(), tiny_nwp_inputs()) if kind == "nwp" else (tiny_image_model(), tiny_image_inputs())
    return compile_bundle(model, out=out, **inputs, train_batch=TINY_TRAIN_BATCH, target=target, optimizer=optimizer)


@pytest.fixture(scope="module")
def arm_nwp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile("nwp", tmp_path_factory.mktemp("arm64") / "nwp", "linux-arm64", "momentum")


def test_the_device_is_arm64_with_a_shell_that_reports_exit_codes(device, tmp_path: Path) -> None:
    source = tmp_path / "hello.txt"
    source.write_text("hello arm64\n")
    device.push(source, "t/hello.txt")
    result = device.run("uname -m; cat t/hello.txt; exit 7")
    assert (result.exit_code, result.stdout) == (7, "aarch64\nhello arm64\n")
    assert device.shell("uname -m").strip() == "aarch64"
    assert device.sha256(["t/hello.txt"])["t/hello.txt"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert device.pull("t/hello.txt", tmp_path / "back.txt").read_text() == "hello arm64\n"
    with pytest.raises(RuntimeError, match="exit 3"):
        device.shell("exit 3")
    with pytest.raises(ValueError, match="outside the device storage"):
        device.push(source, "../escape.txt")
    machine = device.python(["-c", "import platform, tvm; print(platform.machine(), tvm.__version__)"])
    assert machine.returncode == 0 and machine.stdout.split()[0] == "aarch64"


def test_linux_arm64_bundles_are_verified_inside_the_emulator(arm_nwp: Path, tmp_path: Path, device) -> None:
    """forward, loss, gradients, two chained updates and the optimizer state, on the device."""
    from compiler.verify import VerificationError, load_on_device, verify_forward
    from device_runtime.manifest import read_manifest

    image = _compile("image", tmp_path / "image", "linux-arm64", "adam")
    for bundle in (arm_nwp, image):
        manifest = read_manifest(bundle)
        assert manifest.verified_on.startswith(EMULATED), manifest.verified_on
        header = (bundle / "forward.so").read_bytes()[:20]
        assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64: never loadable on this host

    # a reference the shipped code does not match is caught there, naming the tensor
    manifest = read_manifest(arm_nwp)
    modules = load_on_device(device, {"forward": arm_nwp / "forward.so"})
    frozen = [np.load(arm_nwp / "frozen.npz")[n] for n in manifest.params["frozen"]]
    trainable = [np.load(arm_nwp / "trainable.npz")[n] for n in manifest.params["trainable"]]
    x = np.random.default_rng(0).integers(2, 40, (1, 6))
    with pytest.raises(VerificationError, match="forward_b1_l6: cut activation diverges"):
        verify_forward(modules["forward"], "forward_b1_l6", x, frozen, trainable,
                       lambda ids: (np.zeros((1, 40), "float32"), np.ones((1, 16), "float32")))


def test_offline_then_online_learning_in_the_emulator_end_with_the_hosts_params(arm_nwp: Path, tmp_path: Path,
                                                                     device) -> None:
    from device_runtime.checkpoint import load_checkpoint

    host = _compile("nwp", tmp_path / "host-nwp", "host", "momentum")
    rng = np.random.default_rng(1)
    shard = tmp_path / "shard.npz"
    np.savez(shard, x=rng.integers(2, 40, (48, 6)), y=rng.integers(2, 40, 48))
    args = ["device", "offline", "--data", str(shard), "--policy", "always", "--epochs", "2", "--seed", "3",
            "--augment-ratio", "0"]
    subprocess.run([sys.executable, "-m", "autlearn", *args, "--bundle", str(host), "--state", str(tmp_path / "h")],
                   check=True, capture_output=True)
    device.autlearn([*args, "--bundle", str(arm_nwp), "--state", str(tmp_path / "a")])
    on_host, _ = load_checkpoint(tmp_path / "h/checkpoint.npz")
    on_device, _ = load_checkpoint(tmp_path / "a/checkpoint.npz")
    start = np.load(arm_nwp / "trainable.npz")
    assert float(np.abs(on_device["fc.weight"] - start["fc.weight"]).max()) > 1e-3  # it learned
    for name in [n for n in on_host if not n.startswith("__")]:
        np.testing.assert_allclose(on_device[name], on_host[name], rtol=PARAM_RTOL, atol=PARAM_ATOL, err_msg=name)
    # then online learning on the same stream, continuing the learned state (no matplotlib on the device)
    online = ["device", "online", "--data", str(shard), "--batch", "4"]
    subprocess.run([sys.executable, "-m", "autlearn", *online, "--bundle", str(host), "--state", str(tmp_path / "h")],
                   check=True, capture_output=True)
    device.autlearn([*online, "--bundle", str(arm_nwp), "--state", str(tmp_path / "a")])
    on_host, host_meta = load_checkpoint(tmp_path / "h/checkpoint.npz")
    on_device, device_meta = load_checkpoint(tmp_path / "a/checkpoint.npz")
    assert device_meta["mode"] == host_meta["mode"] == "online" and device_meta["generation"] == host_meta["generation"]
    for name in [n for n in on_host if not n.startswith("__")]:
        np.testing.assert_allclose(on_device[name], on_host[name], rtol=PARAM_RTOL, atol=PARAM_ATOL, err_msg=name)


def test_cli_push_and_bench_latency_over_qemu(arm_nwp: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from autlearn.cli import main

    assert main(["push", "--bundle", str(arm_nwp), "--transport", "qemu", "--dest", "pushed/nwp"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["verified"] and "pushed/nwp/update.so" in pushed["files"]
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", "--bundle", str(arm_nwp), "--transport", "qemu", "--number", "3",
                 "--repeat", "3", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "not phone times" in data["note"]
    medians = {f["function"]: f["median_ms"] for f in data["functions"]}
    assert set(medians) == {"forward_b1_l6", "forward_b4_l6", "update"} and all(m > 0 for m in medians.values())


def test_tuning_measures_arm64_candidates_through_the_emulators_rpc_runner(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    import tvm
    from tvm.script import relax as R

    from compiler.targets import resolve_target
    from compiler.tuning import tune_modules, tuning_device

    @R.function
    def main(x: R.Tensor((16, 32), "float32"), w: R.Tensor((32, 8), "float32")):
        return R.nn.relu(R.matmul(x, w))

    with tuning_device("linux-arm64") as device:
        assert device is not None and "not phone times" in device.description
        result = tune_modules({"m": tvm.IRModule({"main": main})}, resolve_target("linux-arm64").tvm_target(),
                              trials=8, database_dir=tmp_path / "db", progress=False, device=device)
    assert result.trials >= 1 and result.failed_trials < result.trials
    assert "not phone times" in capsys.readouterr().err
