"""Atomic checkpoints: a failed write keeps the previous file; a corrupt file is a clear error."""
import os

import numpy as np
import pytest

from device_runtime.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "order": np.array([2, 0, 1])}
    meta = {"progress": {"step": 7}, "rng": {"state": 2**100 + 3}}
    save_checkpoint(tmp_path / "ck.npz", arrays, meta)
    got, got_meta = load_checkpoint(tmp_path / "ck.npz")
    assert got_meta == meta
    assert set(got) == {"w", "order"}
    np.testing.assert_array_equal(got["w"], arrays["w"])


def test_interrupted_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.zeros(3)}, {"step": 1})

    def crash(*args):
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        save_checkpoint(path, {"w": np.ones(3)}, {"step": 2})
    monkeypatch.undo()
    arrays, meta = load_checkpoint(path)
    assert meta == {"step": 1} and arrays["w"].sum() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left behind


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.zeros(100)}, {"step": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.npz")
    np.savez(tmp_path / "plain.npz", w=np.zeros(2))
    with pytest.raises(ValueError, match="__meta__"):
        load_checkpoint(tmp_path / "plain.npz")


def test_reserved_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "ck.npz", {"__meta__": np.zeros(1)}, {})


def test_atomic_write_replaces_content(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "f.txt", b"one")
    atomic_write_bytes(tmp_path / "a" / "f.txt", b"two")
    assert (tmp_path / "a" / "f.txt").read_bytes() == b"two"
