"""LEAF JSON (Shakespeare, Sent140, FEMNIST) through the same user containers as the built-in data."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from cloud_pretrain.data.export import model_inputs
from cloud_pretrain.data.leaf import leaf_users, read_leaf_json, write_leaf_json
from cloud_pretrain.data.text import PAD, UNK, Vocabulary
from cloud_pretrain.data.users import ImageUser, TextUser

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "leaf"


def test_shakespeare_windows_become_the_users_text_with_leafs_split():
    users = leaf_users(FIXTURES / "shakespeare", "nwp")
    assert [user.id for user in users] == ["THE_SONNETS_POET", "HAMLET_HORATIO"]
    poet = users[0]
    assert isinstance(poet, TextUser) and len(poet.train) == len(poet.test) == 1
    assert poet.train[0].startswith("From fairest creatures") and poet.train[0].endswith("his memory.")
    assert poet.test[0].startswith("But thou contracted")
    assert poet.sentences("train")[0][:3] == ["from", "fairest", "creatures"]


def test_sent140_tweets_are_lines_split_in_order():
    users = leaf_users(FIXTURES / "sent140" / "all_data.json", "nwp")
    bob = users[1]
    assert bob.id == "bob_t" and bob.train[0] == "the match last night was amazing"
    assert bob.test == ("see you all there",)  # the last fifth


def test_femnist_floats_become_bright_ink_images():
    users = leaf_users(FIXTURES / "femnist", "image")
    writer = users[0]
    assert isinstance(writer, ImageUser) and writer.id == "f0001_writer"
    assert writer.train_x.shape == (3, 28, 28) and writer.train_y.tolist() == [1, 11, 1]
    assert writer.test_y.tolist() == [37]
    assert writer.train_x[0, 10, 10] == 255 and writer.train_x[0, 10, 11] == 204 and writer.train_x[0, 0, 0] == 0
    inputs = model_inputs(writer)
    assert inputs["x"].shape == (3, 1, 28, 28) and inputs["x"].dtype == np.float32 and inputs["x"].max() == 1.0


@pytest.mark.parametrize("kind, task", [("shakespeare", "nwp"), ("femnist", "image")])
def test_leaf_fixtures_round_trip(tmp_path, kind, task):
    users = leaf_users(FIXTURES / kind, task)
    for part in ("train", "test"):
        write_leaf_json(users, tmp_path / part / f"{part}.json", part)
    again = leaf_users(tmp_path, task)
    assert [user.id for user in again] == [user.id for user in users]
    for before, after in zip(users, again):
        if task == "nwp":
            assert (before.train, before.test) == (after.train, after.test)
        else:
            assert np.array_equal(before.train_x, after.train_x) and np.array_equal(before.test_y, after.test_y)
    original = read_leaf_json(FIXTURES / kind / "train" / "all_data_train.json")
    rewritten = read_leaf_json(tmp_path / "train" / "train.json")
    assert rewritten.keys() == original.keys()
    assert all(rewritten[u][1] == original[u][1] for u in original)


def test_text_users_export_as_token_contexts():
    vocab = Vocabulary([PAD, UNK, "the", "match", "was"])
    bob = leaf_users(FIXTURES / "sent140" / "all_data.json", "nwp")[1]
    inputs = model_inputs(bob, vocab, seq_len=4)
    assert inputs["x"].shape == (17, 4) and inputs["x"].dtype == np.int64
    assert inputs["x"][:2].tolist() == [[0, 0, 0, 2], [0, 0, 2, 3]] and inputs["y"][:2].tolist() == [3, 1]
    assert inputs["test_x"].shape == (3, 4)
    with pytest.raises(ValueError, match="needs a vocabulary"):
        model_inputs(bob)


def test_malformed_leaf_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"users": ["u"], "num_samples": [1]}')
    with pytest.raises(ValueError, match="bad.json: a LEAF file needs the keys"):
        read_leaf_json(bad)
    bad.write_text(json.dumps({"users": ["u"], "num_samples": [2], "user_data": {"u": {"x": ["a" * 80], "y": ["b"]}}}))
    with pytest.raises(ValueError, match="user 'u' has 1 x, 1 y, num_samples 2"):
        read_leaf_json(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_leaf_json(bad)
    bad.write_text(json.dumps({"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": [[1, 2]], "y": [0]}}}))
    with pytest.raises(ValueError, match="none of Shakespeare"):
        leaf_users(bad, "image")
    pixels = [[1.0] * 784, [1.0] * 783]
    bad.write_text(json.dumps({"users": ["u"], "num_samples": [2], "user_data": {"u": {"x": pixels, "y": [0, 1]}}}))
    with pytest.raises(ValueError, match="user 'u': every FEMNIST sample must be 784 numbers"):
        leaf_users(bad, "image")
    with pytest.raises(ValueError, match="femnist data, which is not for task 'nwp'"):
        leaf_users(FIXTURES / "femnist", "nwp")
    with pytest.raises(FileNotFoundError, match="LEAF data not found"):
        leaf_users(tmp_path / "missing", "nwp")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no LEAF .json files"):
        leaf_users(tmp_path / "empty", "nwp")
