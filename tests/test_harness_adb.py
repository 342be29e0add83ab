"""android_harness.transports.AdbTransport against Debian's REAL `adb` binary, for everything that
needs no phone: its version, a device list with nothing attached, and the harness's own errors for
a missing or unknown serial. What only a phone could answer (push, shell, forward on a device) runs
against the stand-in FAKE_ADB in test_harness_transports.py."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from android_harness.qemu import free_port
from android_harness.transports import AdbTransport

pytestmark = pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb is not installed (make system-deps)")


@pytest.fixture(scope="module")
def adb_server() -> Iterator[dict[str, str]]:
    """A private adb server port, so no other adb server is touched; the server is stopped after."""
    env = {"ANDROID_ADB_SERVER_PORT": str(free_port())}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=60)


def test_real_adb_reports_its_version() -> None:
    done = subprocess.run(["adb", "version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Android Debug Bridge version")


def test_real_adb_lists_no_device_and_the_harness_says_so(adb_server: dict[str, str]) -> None:
    with pytest.raises(RuntimeError, match=r"pass --serial: adb sees 0 attached devices \(none\)"):
        AdbTransport()
    with pytest.raises(RuntimeError, match=r"no device 'PHONE9' attached \(adb devices lists: none\)"):
        AdbTransport("PHONE9")


def test_cli_errors_for_a_serial_that_is_not_attached(adb_server: dict[str, str], tmp_path: Path,
                                                      tiny_nwp_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    from autlearn.cli import main

    assert main(["push", "--bundle", str(tiny_nwp_bundle), "--transport", "adb", "--serial", "emulator-5554"]) == 2
    assert "no device 'emulator-5554' attached" in capsys.readouterr().err
    assert main(["bench", "latency", "--bundle", str(tiny_nwp_bundle), "--transport", "adb"]) == 2
    assert "adb sees 0 attached devices" in capsys.readouterr().err
