"""LEAF JSON (Shakespeare, Sent140, FEMNIST) through the same user containers as the built-in data."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

import cloud_pretrain.data.leaf as leaf_module
from cloud_pretrain.data.export import model_inputs
from cloud_pretrain.data.leaf import leaf_users, read_leaf_json, write_leaf_json
from cloud_pretrain.data.text import PAD, UNK, Vocabulary, count_next_word_examples
from cloud_pretrain.data.users import ImageUser, TextUser

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "leaf"  # written by write_leaf_json
PUBLISHED = pathlib.Path(__file__).parent / "fixtures" / "leaf_published"  # as LEAF's scripts write them


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


def test_leafs_own_shakespeare_split_rebuilds_each_parts_lines():
    """LEAF's split keeps the first windows for train and the last for test, 79 windows apart,
    and its test file's `num_samples` counts those 79 too."""
    macbeth, horatio = leaf_users(PUBLISHED / "shakespeare", "nwp")
    assert macbeth.id == "THE_TRAGEDY_OF_MACBETH_MACBETH"
    assert horatio.id == "THE_TRAGEDY_OF_HAMLET__PRINCE_OF_DENMARK_HORATIO"  # LEAF's name for `HAMLET, PRINCE`
    assert macbeth.train[:2] == ("So foul and fair a day I have not seen.", "Speak, if you can: what are you?")
    assert macbeth.train[2].startswith("Stay, you imperfect") and macbeth.train[2].endswith("to be Cawdor.")
    assert macbeth.train[3] == "Into the ai"  # the train part ends inside a speech
    assert macbeth.test == ("ir; and what seem'd corporal melted As breath into the wind. Would they had stay'd!",)
    raw = json.loads(next((PUBLISHED / "shakespeare" / "test").glob("*.json")).read_text())
    assert raw["num_samples"][0] == 83 and len(raw["user_data"][macbeth.id]["x"]) == 4
    assert horatio.test[0].endswith("eruption to our state.")


def test_shakespeare_without_leafs_split_is_split_on_next_word_examples():
    """`all_data.json` (with its `hierarchies`): a speaker of two lines, and one of one line, still
    get test data, which a split on lines would not give them."""
    witch, banquo = leaf_users(PUBLISHED / "shakespeare" / "all_data", "nwp")
    assert witch.train == ("When shall we three meet again In thunder, lightning, or in rain?",)
    assert witch.test == ("Where the place?",)
    assert banquo.train == ("Good sir, why do you start; and seem to fear Things that do",)
    assert banquo.test == ("do sound so fair?",)  # 3 of its 15 next-word examples
    assert count_next_word_examples(banquo.sentences("test")) == 3 == banquo.num_samples // 5


def test_leafs_femnist_floats_are_paper_white_and_become_uint8_bright_ink():
    path = next((PUBLISHED / "femnist" / "train").glob("*.json"))
    raw = json.loads(path.read_text())["user_data"]["f0031_44"]
    writer, other = leaf_users(PUBLISHED / "femnist", "image")
    assert (writer.id, other.id) == ("f0031_44", "f0107_12")
    assert writer.train_x.dtype == np.uint8 and writer.train_x.shape == (4, 28, 28)
    assert writer.train_y.tolist() == raw["y"] == [0, 29, 1, 50] and writer.test_y.tolist() == [1]
    grey = np.rint(np.asarray(raw["x"]) * 255).reshape(-1, 28, 28)
    assert np.array_equal(writer.train_x, 255 - grey)
    assert writer.train_x[0, 0, 0] == 0 and writer.train_x[0, 6, 9] == 255  # paper dark, ink bright
    assert other.train_x[0, 7, 6] == 51  # grey 204 of 255


def test_leafs_sent140_tweets_keep_leafs_split():
    special, matty = leaf_users(PUBLISHED / "sent140", "nwp")
    assert special.id == "_TheSpecialOne_" and len(special.train) == 4
    assert special.test == ("is upset that he can't update his Facebook by texting it... and might cry as a result",)
    assert matty.train == ("my car broke down again on the way to work", "thanks for all the birthday wishes everyone")


def test_files_are_made_compact_one_at_a_time_and_users_joined(tmp_path, monkeypatch):
    for number, name in enumerate(("train", "test")):  # LEAF's two parts as two files of one directory
        shutil.copy(next((PUBLISHED / "femnist" / name).glob("*.json")), tmp_path / f"{number}_{name}.json")
    converted = []
    real = leaf_module.femnist_images
    monkeypatch.setattr(leaf_module, "femnist_images", lambda x, where: converted.append(where) or real(x, where))
    writer = leaf_users(tmp_path, "image", test_fraction=0.2)[0]
    assert len(converted) == 4  # per file and user, before the next file is read
    assert writer.train_y.tolist() + writer.test_y.tolist() == [0, 29, 1, 50, 1]  # in file order
    assert writer.test_y.tolist() == [1]


def test_our_writer_writes_leafs_format(tmp_path):
    """The same windows (padding and newline included) and the same floats as LEAF's files."""
    users = leaf_users(PUBLISHED / "shakespeare" / "all_data", "nwp", test_fraction=0)
    written = read_leaf_json(write_leaf_json(users, tmp_path / "all_data.json"))
    assert written == read_leaf_json(PUBLISHED / "shakespeare" / "all_data" / "all_data.json")
    images = leaf_users(PUBLISHED / "femnist", "image")
    for part in ("train", "test"):
        written = read_leaf_json(write_leaf_json(images, tmp_path / f"{part}.json", part))
        assert written == read_leaf_json(next((PUBLISHED / "femnist" / part).glob("*.json")))


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
    unequal = {"u": {"x": ["a" * 80] * 2, "y": ["b"]}}
    bad.write_text(json.dumps({"users": ["u"], "num_samples": [2], "user_data": unequal}))
    with pytest.raises(ValueError, match="user 'u' has 2 x but 1 y"):
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
