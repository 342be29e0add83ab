"""device_runtime/manifest.py: the bundle manifest both sides of the contract share."""
from __future__ import annotations

import json

import pytest
from conftest import write_manifest_json

from device_runtime.manifest import FORMAT_VERSION, Manifest, mismatched_files, read_manifest, write_manifest


def sample_manifest(**changes) -> Manifest:
    fields = dict(
        model="MobileNetV2Image", target={"name": "host", "triple": "x86_64-pc-linux-gnu", "mcpu": "generic"},
        tvm_version="0.27.0", cut_layer="classifier",
        input={"name": "image", "dtype": "float32", "shape": [None, 1, 28, 28]},
        cut={"dtype": "float32", "shape": [None, 32]}, num_classes=3, train_batch=4,
        optimizer={"name": "sgd", "lr": 0.05},
        forward_functions=[{"name": "forward_b1", "batch": 1, "input_shape": [1, 1, 28, 28]}],
        params={"frozen": ["a"], "trainable": ["b"], "optimizer_state": ["num_steps"]},
        modules={"forward": "forward.so", "loss": "loss.so", "update": "update.so"},
        labels_file="labels.txt", augmentation="images")
    fields.update(changes)
    return Manifest(**fields)


def text_changes(**changes) -> dict:
    """A next-word model's fields: token ids in, the tokenizer's vocabulary as the classes."""
    fields = dict(model="NextWordLSTM", input={"name": "tokens", "dtype": "int64", "shape": [None, None],
                                               "token_range": 40},
                  cut={"dtype": "float32", "shape": [None, 16]}, num_classes=40, labels_file="vocab.txt",
                  tokenizer={"vocab_file": "vocab.txt", "pattern": "[a-z]+", "lowercase": True,
                             "pad": "<pad>", "unk": "<unk>"}, augmentation="text", synonyms_file="synonyms.json")
    fields.update(changes)
    return fields


def test_write_read_round_trip_hashes_every_file(tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    (tmp_path / "tuning").mkdir()
    (tmp_path / "tuning" / "db.json").write_text("{}")
    write_manifest(tmp_path, sample_manifest())
    loaded = read_manifest(tmp_path)
    assert loaded == sample_manifest(files=loaded.files, fingerprint=loaded.fingerprint)
    assert sorted(loaded.files) == ["labels.txt", "tuning/db.json"]
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION and list(data)[0] == "format_version"
    assert "task" not in data and data["model"] == "MobileNetV2Image"
    assert data["input"] == {"name": "image", "dtype": "float32", "shape": [None, 1, 28, 28]}
    assert data["tokenizer"] is None and "vocab_file" not in data  # an image model has no vocabulary
    assert loaded.labels_file == "labels.txt" and loaded.augmentation == "images"
    assert loaded.token_range is None and not loaded.next_token
    assert loaded.referenced_files() == ["forward.so", "loss.so", "update.so", "labels.txt"]
    assert mismatched_files(tmp_path, loaded) == []


def test_a_manifest_changed_after_writing_is_refused_by_its_fingerprint(tmp_path):
    """A field edited (an lr, a hash) without the compiler's fingerprint is refused, whitespace is not."""
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    write_manifest(tmp_path, sample_manifest())
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["fingerprint"] == read_manifest(tmp_path).fingerprint and len(data["fingerprint"]) == 64
    (tmp_path / "manifest.json").write_text(json.dumps(data, indent=4))
    read_manifest(tmp_path)
    for change in ({"optimizer": {**data["optimizer"], "lr": 0.5}}, {"files": {"labels.txt": "0" * 64}}):
        (tmp_path / "manifest.json").write_text(json.dumps({**data, **change}))
        with pytest.raises(ValueError, match="fingerprint does not match"):
            read_manifest(tmp_path)


def test_text_manifest_round_trip_names_vocab_and_synonyms(tmp_path):
    for name in ("vocab.txt", "synonyms.json"):
        (tmp_path / name).write_text(name)
    write_manifest(tmp_path, sample_manifest(**text_changes()))
    loaded = read_manifest(tmp_path)
    assert loaded == sample_manifest(**text_changes(), files=loaded.files, fingerprint=loaded.fingerprint)
    assert loaded.token_range == 40 and loaded.next_token
    assert loaded.labels_file == "vocab.txt" and loaded.tokenizer["vocab_file"] == "vocab.txt"
    assert loaded.referenced_files()[-3:] == ["vocab.txt", "vocab.txt", "synonyms.json"]
    # classes of their own (labels.txt) over a tokenizer's ids: a classifier of text, not next-word
    other = sample_manifest(**text_changes(labels_file="labels.txt", num_classes=3))
    assert other.token_range == 40 and not other.next_token


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
    for key, value, message in [("format_version", 99, "format_version"), ("format_version", 1, "format_version"),
                                ("task", "image", "unknown keys: task"),  # a format-1 field
                                ("augmentation", "speech", "augmentation"),
                                ("input", {**data["input"], "dtype": "float64"}, "dtype"),
                                ("optimizer", {"name": "rmsprop"}, "optimizer"), ("surprise", 1, "unknown keys")]:
        write_manifest_json(tmp_path, {**data, key: value})
        with pytest.raises(ValueError, match=message):
            read_manifest(tmp_path)
    write_manifest_json(tmp_path, {k: v for k, v in data.items() if k != "params"})
    with pytest.raises(ValueError, match="lacks keys: params"):
        read_manifest(tmp_path)
    write_manifest_json(tmp_path, {k: v for k, v in data.items() if k != "labels_file"})
    with pytest.raises(ValueError, match="lacks keys: labels_file"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="integer ids need a positive token_range"):
        sample_manifest(**text_changes(input={"name": "tokens", "dtype": "int64", "shape": [None, None]}))
    with pytest.raises(ValueError, match="integer ids need a positive token_range, floats none"):
        sample_manifest(input={"name": "image", "dtype": "float32", "shape": [None, 1, 28, 28], "token_range": 4})
    with pytest.raises(ValueError, match="augmentation 'text' needs a tokenizer"):
        sample_manifest(**text_changes(tokenizer=None))
    with pytest.raises(ValueError, match="needs a vocab_file"):
        sample_manifest(**text_changes(tokenizer={"pattern": "[a-z]+"}))
    with pytest.raises(ValueError, match="target features 'avx2' must be a list"):
        sample_manifest(target={"name": "host", "triple": "x86_64-pc-linux-gnu", "features": "avx2"})
    with pytest.raises(ValueError, match="vocab_sha256 'abc' is not a sha256"):
        sample_manifest(**text_changes(tokenizer={**text_changes()["tokenizer"], "vocab_sha256": "abc"}))


@pytest.mark.parametrize("outside", ["../x", "/etc/x", "sub/../../x"])
@pytest.mark.parametrize("field", ["modules", "labels_file", "vocab_file", "synonyms_file", "files"])
def test_file_names_outside_the_bundle_are_refused(tmp_path, field, outside):
    """Every name the manifest gives a file, `files` keys too: the device must never read outside."""
    fields = text_changes()
    if field == "modules":
        fields["modules"] = {"forward": outside, "loss": "loss.so", "update": "update.so"}
    elif field == "vocab_file":
        fields["tokenizer"] = {**fields["tokenizer"], "vocab_file": outside}
    elif field == "files":
        fields["files"] = {"vocab.txt": "0" * 64, outside: "0" * 64}
    else:
        fields[field] = outside
    with pytest.raises(ValueError, match=f"names file '{outside}' outside the bundle"):
        sample_manifest(**fields)
    write_manifest_json(tmp_path, {**sample_manifest(**text_changes()).to_json(), **fields})
    with pytest.raises(ValueError, match="outside the bundle"):  # as the device reads it
        read_manifest(tmp_path)
    sample_manifest(**text_changes(files={"vocab.txt": "0" * 64, "tuning/a..b.json": "0" * 64}))  # '..' in a name is fine
