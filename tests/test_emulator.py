"""android_harness.emulator and the qemu transport without an emulator root: where the root goes,
the clear errors before setup, and the refusal to tune a target this machine cannot run. Fast; the
emulated device itself is exercised by the tests marked arm64 (tests/test_arm64_device.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from android_harness.emulator import EmulatorRoot, default_root


def test_the_root_lives_in_the_cache_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTLEARN_EMULATOR_ROOT", raising=False)
    monkeypatch.setenv("AUTLEARN_CACHE", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache/emulator/arm64"
    monkeypatch.setenv("AUTLEARN_EMULATOR_ROOT", str(tmp_path / "elsewhere"))
    assert EmulatorRoot().root == (tmp_path / "elsewhere").resolve()


def test_no_root_is_one_clear_error(tmp_path: Path) -> None:
    from android_harness.qemu import QemuTransport

    root = EmulatorRoot(tmp_path / "empty")
    assert not root.is_ready()
    with pytest.raises(FileNotFoundError, match=r"run `autlearn emulator setup --root .*empty`"):
        QemuTransport(tmp_path / "empty")


def test_cli_without_a_root_exits_2(tmp_path: Path, tiny_nwp_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    from autlearn.cli import main

    assert main(["emulator", "info", "--root", str(tmp_path / "none")]) == 2
    assert "autlearn emulator setup" in capsys.readouterr().err
    assert main(["bench", "latency", "--bundle", str(tiny_nwp_bundle), "--transport", "qemu",
                 "--emulator-root", str(tmp_path / "none")]) == 2
    assert "no arm64 emulator root" in capsys.readouterr().err


def test_tuning_an_arm64_target_without_a_device_is_refused() -> None:
    from tvm.script import relax as R

    from compiler.targets import resolve_target
    from compiler.tuning import tune_modules

    @R.function
    def main(x: R.Tensor((2, 2), "float32")):
        return R.add(x, x)

    import tvm

    with pytest.raises(ValueError, match="cannot measure aarch64-linux-gnu candidates.*autlearn emulator setup"):
        tune_modules({"m": tvm.IRModule({"main": main})}, resolve_target("linux-arm64").tvm_target(), trials=16,
                     database_dir=None)
