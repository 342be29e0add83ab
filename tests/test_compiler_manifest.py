"""device_runtime/manifest.py: the bundle manifest both sides of the contract share."""
from __future__ import annotations

import json

import pytest

from device_runtime.manifest import FORMAT_VERSION, Manifest, mismatched_files, read_manifest, write_manifest


def sample_manifest(**changes) -> Manifest:
    fields = dict(
        task="image", target={"name": "host", "triple": "x86_64-pc-linux-gnu", "mcpu": "generic"},
        tvm_version="0.27.0", cut_layer="classifier",
        input={"name": "image", "dtype": "float32", "shape": [None, 1, 28, 28]},
        cut={"dtype": "float32", "shape": [None, 32]}, num_classes=3, train_batch=4,
        optimizer={"name": "sgd", "lr": 0.05},
        forward_functions=[{"name": "forward_b1", "batch": 1, "input_shape": [1, 1, 28, 28]}],
        params={"frozen": ["a"], "trainable": ["b"], "optimizer_state": ["num_steps"]},
        modules={"forward": "forward.so", "loss": "loss.so", "update": "update.so"},
        labels_file="labels.txt")
    fields.update(changes)
    return Manifest(**fields)


def test_write_read_round_trip_hashes_every_file(tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "db.json").write_text("{}")
    write_manifest(tmp_path, sample_manifest())
    loaded = read_manifest(tmp_path)
    assert loaded == sample_manifest(files=loaded.files)
    assert sorted(loaded.files) == ["labels.txt", "tuning/db.json"]
    assert json.loads((tmp_path / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    assert "vocab_file" not in json.loads((tmp_path / "manifest.json").read_text())
    assert loaded.label_file == "labels.txt"
    assert mismatched_files(tmp_path, loaded) == []


def test_changed_missing_and_extra_files_are_named(tmp_path):
    for name in ("labels.txt", "frozen.npz"):
        (tmp_path / name).write_text(name)
    write_manifest(tmp_path, sample_manifest())
    manifest = read_manifest(tmp_path)
    (tmp_path / "labels.txt").write_text("changed")
    (tmp_path / "frozen.npz").unlink()
    (tmp_path / "extra.so").write_text("x")
    assert mismatched_files(tmp_path, manifest) == ["extra.so", "frozen.npz", "labels.txt"]


def test_bad_manifests_are_refused_with_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(tmp_path)
    data = sample_manifest().to_json()
    for key, value, message in [("format_version", 99, "format_version"), ("task", "speech", "task"),
                                ("optimizer", {"name": "rmsprop"}, "optimizer"), ("surprise", 1, "unknown keys")]:
        (tmp_path / "manifest.json").write_text(json.dumps({**data, key: value}))
        with pytest.raises(ValueError, match=message):
            read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({k: v for k, v in data.items() if k != "params"}))
    with pytest.raises(ValueError, match="lacks keys: params"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="needs vocab_file"):
        sample_manifest(task="nwp")
