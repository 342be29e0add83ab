"""android_harness push and latency on a real compiled bundle (conftest's tiny_nwp_bundle)
through a local device directory, and their CLI commands (latency over RPC: test_harness_transports)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from android_harness.latency import bench_latency, plot_latency, write_latency_json
from android_harness.push import push_bundle
from android_harness.transports import LocalTransport
from autlearn.cli import main
from device_runtime.manifest import read_manifest


class LossyLink(LocalTransport):
    """FAKE flaky cable: the pushed copy of update.so arrives with one byte flipped."""

    name = "lossy"

    def push(self, local: Path, remote: str) -> None:
        super().push(local, remote)
        if remote.endswith("update.so"):
            data = bytearray(self.path(remote).read_bytes())
            data[100] ^= 0xFF
            self.path(remote).write_bytes(bytes(data))


def function_names(bundle: Path) -> list[str]:
    """What bench_latency times: the manifest's forward functions, then update."""
    return [f["name"] for f in read_manifest(bundle).forward_functions] + ["update"]


def test_push_copies_every_file_and_verifies_on_the_device(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    phone = LocalTransport(tmp_path / "phone")
    pushed = push_bundle(tiny_nwp_bundle, phone, "data/autlearn/tiny")
    manifest = read_manifest(tiny_nwp_bundle)
    assert set(pushed) == {f"data/autlearn/tiny/{n}" for n in ["manifest.json", *manifest.files]}
    for name in ["manifest.json", *manifest.files]:
        assert (tmp_path / "phone/data/autlearn/tiny" / name).read_bytes() == (tiny_nwp_bundle / name).read_bytes()
        if name != "manifest.json":
            assert pushed[f"data/autlearn/tiny/{name}"] == manifest.files[name]


def test_push_detects_a_damaged_copy_on_the_device(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    with pytest.raises(RuntimeError, match=r"sha256 mismatch on the device \(lossy\) for b/update.so"):
        push_bundle(tiny_nwp_bundle, LossyLink(tmp_path), "b")
    push_bundle(tiny_nwp_bundle, LossyLink(tmp_path), "c", verify=False)  # the user opted out


def test_push_refuses_a_bundle_damaged_here(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_nwp_bundle, broken)
    with open(broken / "trainable.npz", "ab") as f:
        f.write(b"\0")
    phone = LocalTransport(tmp_path / "phone")
    with pytest.raises(ValueError, match="damaged here already.*trainable.npz"):
        push_bundle(broken, phone, "b")
    assert not (tmp_path / "phone/b").exists()  # nothing was sent
    with pytest.raises(ValueError, match="no file"):
        push_bundle(tiny_nwp_bundle, phone, "b", names=["weights.bin"])


def test_latency_locally_with_json_and_plot(tmp_path: Path, tiny_nwp_bundle: Path) -> None:
    results = bench_latency(tiny_nwp_bundle, LocalTransport(tmp_path / "phone"), "b", number=3, repeat=5)
    assert [r.function for r in results] == function_names(tiny_nwp_bundle)
    assert [r.module for r in results][-1] == "update.so" and results[-1].batch == 4
    for r in results:
        assert len(r.seconds) == 5 and 0 < r.median_ms < 1000
    data = json.loads(write_latency_json(results, tmp_path / "lat.json", transport="local").read_text())
    assert data["transport"] == "local" and len(data["functions"]) == len(results)
    png = plot_latency(results, tmp_path / "lat.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_push_and_bench_latency(tmp_path: Path, tiny_nwp_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["push", "--bundle", str(tiny_nwp_bundle), "--transport", "local", "--dest", str(tmp_path / "dev")]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert (tmp_path / "dev/update.so").read_bytes() == (tiny_nwp_bundle / "update.so").read_bytes()

    out = tmp_path / "lat.json"
    assert main(["bench", "latency", "--bundle", str(tiny_nwp_bundle), "--transport", "local", "--number", "2",
                 "--repeat", "3", "--json", str(out), "--plot", str(tmp_path / "lat.png")]) == 0
    data = json.loads(out.read_text())
    assert [f["function"] for f in data["functions"]] == function_names(tiny_nwp_bundle)
    assert (tmp_path / "lat.png").is_file()

    assert main(["push", "--bundle", str(tiny_nwp_bundle), "--transport", "local"]) == 2
    assert "needs --dest" in capsys.readouterr().err
    assert main(["bench", "latency", "--bundle", str(tmp_path / "nowhere"), "--transport", "local"]) == 2
    assert "does not exist" in capsys.readouterr().err
