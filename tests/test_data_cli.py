"""The `autlearn data` commands, run as a user runs them (through `autlearn.cli.main`)."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
from conftest import write_manifest_json

from autlearn.cli import main
from device_runtime.tokenizer import vocab_sha256

LEAF = pathlib.Path(__file__).parent / "fixtures" / "leaf"


def test_info_nwp_reports_enough_shakespeare_users(tmp_path, capsys):
    assert main(["data", "info", "--task", "nwp", "--json", str(tmp_path / "nwp.json")]) == 0
    report = json.loads((tmp_path / "nwp.json").read_text())
    assert report["users"] >= 1_350 and report["users_with_1000_chars"] >= 600
    assert report["samples"] > 500_000 and report["classes"] > 10_000
    assert report["per_user"]["hamlet:HAMLET"]["chars"] > 50_000
    assert "users with at least 1,000 characters" in capsys.readouterr().out


def test_info_on_leaf_femnist_writes_json_and_a_plot(tmp_path, capsys):
    out = tmp_path / "femnist.json"
    assert main(["data", "info", "--task", "image", "--leaf", str(LEAF / "femnist"), "--json", str(out),
                 "--plot", str(tmp_path / "sizes.png")]) == 0
    report = json.loads(out.read_text())
    assert (report["users"], report["samples"], report["classes"]) == (2, 8, 4)
    assert report["per_user"]["f0002_writer"] == {"images": 4, "train": 3, "test": 1, "classes": 3}
    assert (tmp_path / "sizes.png").read_bytes()[:4] == b"\x89PNG"


def test_users_lists_the_top_fraction(capsys):
    def listed(*extra: str) -> dict[str, int]:
        assert main(["data", "users", "--task", "nwp", "--leaf", str(LEAF / "shakespeare"), *extra]) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
        return {user: int(sizes.split("examples=")[1].split()[0]) for user, sizes in rows}

    everyone = listed()
    assert sorted(everyone) == ["HAMLET_HORATIO", "THE_SONNETS_POET"]
    top = listed("--top", "0.5")
    assert len(top) == 1 and list(top.values())[0] == max(everyone.values())


def test_export_user_writes_model_inputs(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<pad>\n<unk>\nthe\nmatch\n")
    out = tmp_path / "bob.npz"
    assert main(["data", "export-user", "--task", "nwp", "--leaf", str(LEAF / "sent140"), "--user", "bob_t",
                 "--out", str(out), "--vocab", str(vocab), "--seq-len", "6"]) == 0
    with np.load(out) as arrays:
        assert sorted(arrays) == ["test_x", "test_y", "vocab_sha256", "x", "y"]
        assert arrays["x"].shape == (17, 6) and arrays["x"].dtype == np.int64
        assert str(arrays["vocab_sha256"]) == vocab_sha256(["<pad>", "<unk>", "the", "match"])
    image_out = tmp_path / "writer.npz"
    assert main(["data", "export-user", "--task", "image", "--leaf", str(LEAF / "femnist"), "--user",
                 "f0001_writer", "--out", str(image_out), "--vocab", str(vocab)]) == 0
    with np.load(image_out) as arrays:  # images index no vocabulary, whatever --vocab says
        assert sorted(arrays) == ["test_x", "test_y", "x", "y"]
        assert arrays["x"].shape == (3, 1, 28, 28) and arrays["x"].dtype == np.float32
        assert 0 <= arrays["x"].min() and arrays["x"].max() <= 1


def test_export_user_with_the_bundles_vocabulary_loads_on_that_bundle(tiny_nwp_bundle, tmp_path, capsys):
    """--bundle takes the bundle's own vocab.txt, so the shard names it and the device accepts it;
    made with another vocabulary, the same user is refused."""
    from device_runtime.bundle import load_bundle
    from device_runtime.model import DeviceModel
    from device_runtime.userdata import load_user_data

    model = DeviceModel(load_bundle(tiny_nwp_bundle))
    export = ["data", "export-user", "--task", "nwp", "--leaf", str(LEAF / "sent140"), "--user", "bob_t",
              "--seq-len", "6"]
    assert main(export + ["--bundle", str(tiny_nwp_bundle), "--out", str(tmp_path / "bob.npz")]) == 0
    data = load_user_data(tmp_path / "bob.npz", model)
    assert data.x.shape == (17, 6) and data.test_x.shape == (3, 6)
    (tmp_path / "vocab.txt").write_text("<pad>\n<unk>\nthe\nmatch\n")
    assert main(export + ["--vocab", str(tmp_path / "vocab.txt"), "--out", str(tmp_path / "other.npz")]) == 0
    with pytest.raises(ValueError, match="made with another vocabulary"):
        load_user_data(tmp_path / "other.npz", model)

    no_text = shutil.copytree(tiny_nwp_bundle, tmp_path / "no-text")
    manifest = json.loads((no_text / "manifest.json").read_text())
    write_manifest_json(no_text, {**manifest, "tokenizer": None, "augmentation": None})
    assert main(export + ["--bundle", str(no_text), "--out", str(tmp_path / "x.npz")]) == 2
    assert "has no tokenizer" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys):
    args = ["data", "export-user", "--task", "nwp", "--leaf", str(LEAF / "sent140"), "--user", "bob_t",
            "--out", str(tmp_path / "x.npz")]
    assert main(args) == 2
    assert "needs a vocabulary (--vocab" in capsys.readouterr().err
    assert main(args + ["--vocab", str(tmp_path / "none.txt")]) == 2
    assert "vocabulary file not found" in capsys.readouterr().err
    assert main(["data", "export-user", "--task", "image", "--leaf", str(LEAF / "femnist"), "--user", "nobody",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
