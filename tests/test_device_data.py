"""The user's data file on the device, and the writer of synthetic users the device tests share.

The synthetic user's next word is a function of the context (the last token), so training on it
can be seen to help.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from device_runtime.bundle import load_bundle
from device_runtime.model import DeviceModel
from device_runtime.tokenizer import vocab_sha256
from device_runtime.userdata import load_user_data


def write_nwp_user(bundle: Path, path: Path, n: int = 64, n_test: int = 16, seed: int = 0) -> Path:
    """An .npz of token contexts for the bundle's vocabulary and length; y = the last token."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    vocab, length = manifest["num_classes"], manifest["forward_functions"][0]["input_shape"][1]
    rng = np.random.default_rng(seed)
    x = rng.integers(2, vocab, size=(n + n_test, length)).astype(np.int64)
    x[: n // 4, : length // 2] = 0  # some short, left-padded contexts
    y = x[:, -1].copy()
    np.savez(path, x=x[:n], y=y[:n], test_x=x[n:], test_y=y[n:])
    return path


@pytest.fixture(scope="module")
def model(tiny_nwp_bundle):
    return DeviceModel(load_bundle(tiny_nwp_bundle))


def test_loads_and_hashes(model, tmp_path, tiny_nwp_bundle):
    data = load_user_data(write_nwp_user(tiny_nwp_bundle, tmp_path / "u.npz", n=20, n_test=5), model)
    assert data.x.shape[0] == 20 and data.test_x.shape[0] == 5 and len(data.sha256) == 64


def test_token_ids_of_another_vocabulary_are_refused(model, tmp_path, tiny_nwp_bundle):
    """Ids of another vocabulary lie in range and would train silently: the shard's vocab_sha256 tells."""
    path = write_nwp_user(tiny_nwp_bundle, tmp_path / "u.npz", n=8, n_test=0)
    with np.load(path) as arrays:
        arrays = dict(arrays)
    np.savez(path, **arrays, vocab_sha256=np.array(vocab_sha256(model.bundle.tokenizer.vocab)))
    assert load_user_data(path, model).x.shape == (8, 6)
    other = vocab_sha256(["<pad>", "<unk>", "another"])
    np.savez(path, **arrays, vocab_sha256=np.array(other))
    with pytest.raises(ValueError, match=f"made with another vocabulary \\(sha256 {other}\\), not this bundle's "
                                         f"\\({model.manifest.tokenizer['vocab_sha256']}\\)"):
        load_user_data(path, model)
    np.savez(path, **arrays, vocab_sha256=np.array([other]))
    with pytest.raises(ValueError, match="vocab_sha256 must be one sha256 hex string"):
        load_user_data(path, model)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 6), np.int64)}, "lacks the array 'y'"),
    ({"x": np.zeros((2, 6), np.int64), "y": np.zeros(3, np.int64)}, r"y has shape \[3\], expected \[2\]"),
    ({"x": np.full((2, 6), 99, np.int64), "y": np.zeros(2, np.int64)}, r"token ids must lie in \[0, 39\]"),
    ({"x": np.zeros((2, 5), np.int64), "y": np.zeros(2, np.int64)}, "no forward function for samples of shape"),
    ({"x": np.zeros((2, 6), np.float32), "y": np.zeros(2, np.int64)}, "dtype float32"),
    ({"x": np.zeros((2, 6), np.int64), "y": np.full(2, 40)}, r"class ids must lie in \[0, 39\]"),
    ({"x": np.zeros((2, 6), np.int64), "y": np.zeros(2, np.int64), "test_x": np.zeros((1, 6), np.int64)},
     "both test_x and test_y"),
])
def test_bad_files_are_named(model, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_user_data(tmp_path / "bad.npz", model)


def test_missing_and_unreadable_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_user_data(tmp_path / "none.npz", model)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_user_data(tmp_path / "junk.npz", model)
