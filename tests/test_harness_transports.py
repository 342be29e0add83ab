"""android_harness.transports: local directory, adb (through a FAKE adb executable: no phone
here), and a REAL TVM RPC server on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from android_harness.latency import bench_latency
from android_harness.transports import AdbTransport, LocalTransport, RPCTransport, local_rpc_server
from device_runtime.manifest import read_manifest

# A stand-in for the `adb` client, named as a fake: there is no phone on this machine. It logs
# its argv, lists two devices (one ready), copies files for `push`, runs `shell` commands here
# and accepts `forward`.
FAKE_ADB = """#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args == ["devices"]:
    print("List of devices attached\\nFAKE0001\\tdevice\\nFAKE0002\\toffline\\n")
    sys.exit(0)
if args[:2] != ["-s", "FAKE0001"]:
    sys.stderr.write("adb: device '%s' not found\\n" % args[1])
    sys.exit(1)
verb, rest = args[2], args[3:]
if verb == "push":
    os.makedirs(os.path.dirname(rest[1]), exist_ok=True)
    shutil.copyfile(rest[0], rest[1])
    print("%s: 1 file pushed" % rest[0])
elif verb == "shell":
    sys.exit(subprocess.run(["sh", "-c", rest[0]]).returncode)
elif verb != "forward":
    sys.exit(2)
"""

ARGS = [np.arange(4, dtype="float32").reshape(1, 4), np.ones((4, 3), dtype="float32")]


@pytest.fixture(scope="module")
def module_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real compiled relax VM module whose function returns a tuple, like a bundle's forward."""
    import tvm
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Tiny:
        @R.function
        def forward_b1(x: R.Tensor((1, 4), "float32"), w: R.Tensor((4, 3), "float32")):
            return (R.matmul(x, w), x)

    path = tmp_path_factory.mktemp("module") / "tiny.so"
    tvm.compile(Tiny, target="llvm").export_library(str(path))
    return path


@pytest.fixture(scope="module")
def rpc_server():
    with local_rpc_server() as address:
        yield address


@pytest.fixture
def fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts the FAKE adb first on PATH; returns its argv log."""
    bin_dir = tmp_path / "fake-adb-bin"
    bin_dir.mkdir()
    script = bin_dir / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "adb-argv.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    return log


def _argv(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_transport_push_shell_sha256_and_run(tmp_path: Path, module_so: Path) -> None:
    phone = LocalTransport(tmp_path / "phone")
    phone.push(module_so, "sdcard/models/tiny.so")
    assert (tmp_path / "phone/sdcard/models/tiny.so").read_bytes() == module_so.read_bytes()
    assert phone.shell("ls sdcard/models").split() == ["tiny.so"]
    assert phone.sha256(["sdcard/models/tiny.so"]) == {"sdcard/models/tiny.so": _sha(module_so)}
    seconds = phone.run_module("sdcard/models/tiny.so", "forward_b1", ARGS, number=3, repeat=4)
    assert len(seconds) == 4 and all(0 < s < 1 for s in seconds)
    with pytest.raises(RuntimeError, match="exit 3"):
        phone.shell("exit 3")
    with pytest.raises(FileNotFoundError, match="push the bundle first"):
        phone.run_module("missing.so", "forward_b1", ARGS, number=1, repeat=1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        phone.push(tmp_path / "nothing.so", "x.so")


def test_a_push_over_a_loaded_module_leaves_it_running(tmp_path: Path, module_so: Path) -> None:
    """The pushed copy replaces the file by rename: copying over a loaded shared object in place
    crashed the process that had it loaded (a family timed twice re-pushed its bundles)."""
    phone = LocalTransport(tmp_path / "phone")
    phone.push(module_so, "tiny.so")
    timer = phone.prepare("tiny.so", "forward_b1", ARGS)
    other = tmp_path / "other.so"  # different bytes: copied in place, the loaded code would change under it
    other.write_bytes(bytes(module_so.stat().st_size))
    phone.push(other, "tiny.so")
    assert len(timer.time(number=2, repeat=2)) == 2
    assert sorted(p.name for p in (tmp_path / "phone").iterdir()) == ["tiny.so"]  # no partial copy left


def test_adb_commands_are_built_for_the_serial(fake_adb: Path, tmp_path: Path, module_so: Path) -> None:
    phone = AdbTransport()  # the only ready device
    assert phone.serial == "FAKE0001"
    remote = str(tmp_path / "data/local/tmp/autlearn/tiny.so")
    phone.push(module_so, remote)
    digests = phone.sha256([remote])
    assert digests == {remote: _sha(module_so)}
    assert _argv(fake_adb) == [
        ["devices"],
        ["-s", "FAKE0001", "push", str(module_so), remote],
        ["-s", "FAKE0001", "shell", f"sha256sum {remote}"],
    ]


def test_adb_errors_name_the_problem(fake_adb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match="no device 'PHONE9' attached.*FAKE0001"):
        AdbTransport("PHONE9")
    phone = AdbTransport("FAKE0001")
    with pytest.raises(RuntimeError, match=r"shell false.*exit 1"):
        phone.shell("false")
    with pytest.raises(RuntimeError, match="--rpc-port"):
        phone.run_module("/data/local/tmp/a.so", "f", [], number=1, repeat=1)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="not installed"):
        AdbTransport("FAKE0001")


def test_adb_runs_modules_through_forwarded_rpc(fake_adb: Path, tmp_path: Path, module_so: Path,
                                               rpc_server: tuple[str, int]) -> None:
    """adb forward (fake) to the real RPC server, which loads the module pushed by adb."""
    phone = AdbTransport("FAKE0001", rpc_port=rpc_server[1])
    remote = str(tmp_path / "phone/tiny.so")
    phone.push(module_so, remote)
    seconds = phone.run_module(remote, "forward_b1", ARGS, number=2, repeat=3)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    port = f"tcp:{rpc_server[1]}"
    assert ["-s", "FAKE0001", "forward", port, port] in _argv(fake_adb)
    with pytest.raises(ValueError, match="absolute"):
        phone.run_module("relative.so", "forward_b1", ARGS, number=1, repeat=1)


def test_rpc_transport_uploads_hashes_and_times(rpc_server: tuple[str, int], module_so: Path) -> None:
    remote = RPCTransport(*rpc_server)
    remote.push(module_so, "tiny.so")
    assert remote.sha256(["tiny.so"]) == {"tiny.so": _sha(module_so)}
    seconds = remote.run_module("tiny.so", "forward_b1", ARGS, number=3, repeat=5)
    assert len(seconds) == 5 and all(0 < s < 1 for s in seconds)
    with pytest.raises(ValueError, match="flat"):
        remote.push(module_so, "dir/tiny.so")
    with pytest.raises(RuntimeError, match="no shell"):
        remote.shell("ls")
    with pytest.raises(RuntimeError, match="not.so"):
        remote.run_module("not.so", "forward_b1", ARGS, number=1, repeat=1)
    with pytest.raises(ValueError, match="number and repeat"):
        remote.run_module("tiny.so", "forward_b1", ARGS, number=0, repeat=1)


def test_bundle_latency_over_the_rpc_server(rpc_server: tuple[str, int], tiny_nwp_bundle: Path) -> None:
    results = bench_latency(tiny_nwp_bundle, RPCTransport(*rpc_server), "", number=2, repeat=3)
    expected = [f["name"] for f in read_manifest(tiny_nwp_bundle).forward_functions] + ["update"]
    assert [r.function for r in results] == expected
    assert all(len(r.seconds) == 3 and 0 < r.median_ms < 1000 for r in results)


def test_rpc_connection_refused_is_clear() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    with pytest.raises(RuntimeError, match=f"cannot connect to a TVM RPC server at 127.0.0.1:{port}"):
        RPCTransport("127.0.0.1", port)


def test_cli_push_over_adb(fake_adb: Path, tmp_path: Path, tiny_nwp_bundle: Path,
                           capsys: pytest.CaptureFixture) -> None:
    from autlearn.cli import main

    dest = tmp_path / "sdcard/tiny"
    assert main(["push", "--bundle", str(tiny_nwp_bundle), "--transport", "adb", "--serial", "FAKE0001",
                 "--dest", str(dest)]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    pushes = [argv for argv in _argv(fake_adb) if argv[2:3] == ["push"]]
    assert [argv[-1] for argv in pushes] == [str(dest / name) for name in
                                             ["manifest.json", *read_manifest(tiny_nwp_bundle).files]]
    assert main(["push", "--bundle", str(tiny_nwp_bundle), "--transport", "adb", "--serial", "GONE"]) == 2
    assert "no device 'GONE' attached" in capsys.readouterr().err
