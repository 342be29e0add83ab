"""augment.synonyms: the WordNet synonym table a bundle carries, and EDA over it without nltk/nlpaug."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from augment.synonyms import SYNONYMS_FILE, build_synonym_table, load_synonym_table, save_synonym_table

VOCAB = ["<pad>", "<unk>", "the", "a", "car", "automobile", "auto", "railway", "happy", "glad", "big",
         "large", "dog", "hound", "chase", "house", "home", "xqzzy"]


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    return build_synonym_table(VOCAB)


def test_table_keeps_single_word_in_vocabulary_synonyms_in_wordnet_order(table) -> None:
    assert table["car"] == ["auto", "automobile"]  # not "machine" (outside), not "railway car" (two words)
    assert table["happy"] == ["glad"] and "large" in table["big"] and table["house"] == ["home"]
    assert table["dog"] == ["hound"]  # "chase" is a verb: dog's first sense is a noun
    assert not {"<pad>", "<unk>", "the", "a", "railway", "xqzzy", "chase"} & set(table)  # stopwords, no synonyms
    for word, options in table.items():
        assert options and word not in options and all(" " not in o and o in VOCAB for o in options)


def test_table_is_deterministic(table, tmp_path: Path) -> None:
    again = build_synonym_table(VOCAB[::-1])
    assert again == table
    first = save_synonym_table(table, tmp_path / "one.json").read_bytes()
    assert save_synonym_table(again, tmp_path / "two.json").read_bytes() == first


def test_save_load_round_trip(table, tmp_path: Path) -> None:
    path = save_synonym_table(table, tmp_path / SYNONYMS_FILE)
    assert load_synonym_table(path) == table
    assert list(json.loads(path.read_text())) == sorted(table)
    assert [p.name for p in tmp_path.iterdir()] == [SYNONYMS_FILE]  # no temporary file left behind


@pytest.mark.parametrize("content", ['{"car": ["auto"', "[]", '{"car": "auto"}', '{"car": ["auto", 3]}', "\xff"])
def test_malformed_table_names_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / SYNONYMS_FILE
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        load_synonym_table(path)
    assert "\n" not in str(err.value)


# Runs where nltk and nlpaug cannot be imported: the device with a bundle's table.
_DEVICE = """
import json, sys
sys.modules["nltk"] = None
sys.modules["nlpaug"] = None
import numpy as np
from augment.synonyms import load_synonym_table
from device_runtime.augmentation import augment_user_data

vocab = json.loads(sys.argv[1])
table = load_synonym_table(sys.argv[2])
x = np.array([[0, 0, 8, 12], [4, 10, 15, 2], [0, 2, 4, 12], [10, 12, 8, 16]], dtype=np.int64)
y = np.arange(4, dtype=np.int64)
runs = [augment_user_data(x, y, "text", ratio=1.0, seed=5, vocab=vocab, synonyms=table) for _ in range(2)]
try:
    augment_user_data(x, y, "text", ratio=1.0, seed=5, vocab=vocab)
    wordnet = "loaded"
except ImportError:
    wordnet = "blocked"
print(json.dumps({"x": runs[0][0].tolist(), "y": runs[0][1].tolist(), "again": runs[1][0].tolist(),
                  "wordnet": wordnet, "loaded": sorted(m for m in ("nltk", "nlpaug") if sys.modules[m])}))
"""


def test_device_augments_with_the_table_without_nltk_or_nlpaug(table, tmp_path: Path) -> None:
    path = save_synonym_table(table, tmp_path / SYNONYMS_FILE)
    done = subprocess.run([sys.executable, "-c", _DEVICE, json.dumps(VOCAB), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["wordnet"] == "blocked" and out["loaded"] == []  # the WordNet path would need nltk
    x, y = out["x"], out["y"]
    assert 4 < len(x) <= 8 and out["again"] == x  # some rows changed; the same seed, the same copies
    for row, label in zip(x[4:], y[4:]):
        source = x[label]
        assert row != source and len(row) == len(source)
        changed = [(VOCAB[a], VOCAB[b]) for a, b in zip(source, row) if a != b]
        assert changed and all(new in table[old] for old, new in changed)  # replaced by a table synonym
