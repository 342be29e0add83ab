"""augment.text and augment.wordnet: EDA on token lists with WordNet offline, or with a synonym table."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from augment.text import (STOPWORDS, augment_sentences, random_deletion, random_insertion, random_swap,
                          synonym_replacement, wordnet_synonyms)
from augment.wordnet import DEBIAN_WORDNET_DIR, LEXNAMES, WORDNET_FILES, ensure_nltk_data

SENTENCE = "the happy child drives a small car to the old house".split()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt (nltk.download, a socket) fails the test."""
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(nltk, "download", refuse)


@pytest.fixture(scope="module")
def built_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_nltk_data(tmp_path_factory.mktemp("nltk_data"))


def test_tree_is_copied_with_generated_lexnames(built_tree: Path) -> None:
    corpus = built_tree / "corpora" / "wordnet"
    for name in WORDNET_FILES:
        path = corpus / name
        assert path.is_file() and not path.is_symlink()
        assert path.stat().st_size == (DEBIAN_WORDNET_DIR / name).stat().st_size
    lines = (corpus / "lexnames").read_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert lines[15].split("\t") == ["15", "noun.location", "1"]
    import nltk

    assert nltk.data.path[0] == str(built_tree)
    assert os.environ["NLTK_DATA"].split(os.pathsep)[0] == str(built_tree)


def test_lexnames_agree_with_debian_sense_keys() -> None:
    """Every sense key's lexicographer file number must name a file of the key's category."""
    with open(DEBIAN_WORDNET_DIR / "index.sense", encoding="utf-8") as f:
        pairs = {tuple(int(v) for v in line.split("%", 1)[1].split(":")[:2]) for line in f}
    for ss_type, lex_filenum in pairs:
        assert LEXNAMES[lex_filenum][1] == (3 if ss_type == 5 else ss_type), (ss_type, lex_filenum)


def test_ensure_is_idempotent_and_repairs(built_tree: Path) -> None:
    corpus = built_tree / "corpora" / "wordnet"
    before = {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()}
    (corpus / "verb.exc").write_text("truncated")
    assert ensure_nltk_data(built_tree) == built_tree
    after = {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()}
    assert (corpus / "verb.exc").read_bytes() == (DEBIAN_WORDNET_DIR / "verb.exc").read_bytes()
    assert {n for n in before if before[n] != after[n]} == {"verb.exc"}
    assert not list(corpus.glob("*.tmp"))


def test_missing_debian_package_is_named(tmp_path: Path) -> None:
    source = tmp_path / "wordnet"
    source.mkdir()
    for name, package in WORDNET_FILES.items():
        if package == "wordnet-base":
            (source / name).symlink_to(DEBIAN_WORDNET_DIR / name)
    with pytest.raises(FileNotFoundError, match="wordnet-sense-index") as err:
        ensure_nltk_data(tmp_path / "out", source=source)
    assert "index.sense" in str(err.value) and "apt-get install" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing half-built
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        ensure_nltk_data(tmp_path / "out", source=tmp_path / "nowhere")


def test_synonym_replacement_yields_wordnet_synonyms_offline() -> None:
    assert "automobile" in wordnet_synonyms("car") and "glad" in wordnet_synonyms("happy")
    out = synonym_replacement(["car"], np.random.default_rng(0))
    assert out != ["car"] and " ".join(out) in wordnet_synonyms("car")
    out = synonym_replacement(["the", "happy", "dog"], np.random.default_rng(1), alpha=1.0)
    assert out[0] == "the"  # stopwords stay; multi-word synonyms become several tokens
    pairs = {f"{a} {b}" for a in wordnet_synonyms("happy") for b in wordnet_synonyms("dog")}
    assert " ".join(out[1:]) in pairs


def test_synonyms_keep_the_first_senses_part_of_speech() -> None:
    dog = wordnet_synonyms("dog")  # first sense a noun: its verb senses (chase, tail, ...) are left out
    assert "hound" in dog and "domestic dog" in dog and not {"chase", "tail", "track"} & set(dog)
    assert "dog" not in dog and wordnet_synonyms("xqzzy") == []


def test_insertion_adds_synonyms_and_keeps_the_original_order() -> None:
    out = random_insertion(SENTENCE, np.random.default_rng(2), alpha=0.2)
    assert len(out) > len(SENTENCE)
    rest = iter(out)
    assert all(word in rest for word in SENTENCE)  # the original is a subsequence
    content = [w for w in SENTENCE if w not in STOPWORDS]
    known = {part for w in content for s in wordnet_synonyms(w) for part in s.split(" ")}
    extra = list(out)
    for word in SENTENCE:
        extra.remove(word)
    assert extra and set(extra) <= known


def test_swap_and_deletion_invariants() -> None:
    rng = np.random.default_rng(3)
    swapped = random_swap(SENTENCE, rng, alpha=0.2)
    assert sorted(swapped) == sorted(SENTENCE) and swapped != SENTENCE
    deleted = random_deletion(SENTENCE, rng, alpha=0.3)
    rest = iter(SENTENCE)
    assert 1 <= len(deleted) < len(SENTENCE) and all(word in rest for word in deleted)
    assert len(random_deletion(["word", "other"], rng, alpha=1.0)) == 1
    assert random_swap(["alone"], rng) == ["alone"] and random_deletion(["alone"], rng, 1.0) == ["alone"]


def test_augment_sentences_ratio_order_and_determinism() -> None:
    sentences = [SENTENCE, "i love this car".split(), "dogs bark at night".split(), "a big red apple".split()]
    ops = ("synonym", "insert", "swap", "delete")
    out = augment_sentences(sentences, rng=11, ops=ops)
    assert out[:4] == sentences and 4 < len(out) <= 8
    assert out == augment_sentences(sentences, rng=11, ops=ops)
    assert out != augment_sentences(sentences, rng=12, ops=ops)
    assert len(augment_sentences(sentences, ratio=0.5, rng=1, ops=("swap",))) == 6
    assert augment_sentences(sentences, ratio=0.0, rng=1) == sentences


@pytest.mark.parametrize("kwargs, message", [
    ({"ops": ("paraphrase",)}, "paraphrase"), ({"ops": ()}, "op"),
    ({"ratio": -0.5}, "ratio"), ({"alpha": 0.0}, "alpha"),
])
def test_augment_sentences_rejects_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        augment_sentences([["a", "car"]], rng=0, **kwargs)


def test_a_table_replaces_wordnet() -> None:
    """With a table, synonyms come from it alone (these ones are not WordNet's)."""
    table = {"car": ["zorp"], "happy": ["blip", "quux"], "the": ["nope"]}
    sentences = [SENTENCE, "i love this car".split()]
    out = augment_sentences(sentences, ratio=1.0, rng=4, ops=("synonym", "insert"), synonyms=table)
    assert out[:2] == sentences and len(out) > 2
    for copy in out[2:]:
        assert set(copy) - set(SENTENCE) - {"i", "love", "this"} <= {"zorp", "blip", "quux"}
    assert out == augment_sentences(sentences, ratio=1.0, rng=4, ops=("synonym", "insert"), synonyms=table)
    assert augment_sentences([["a", "dog"]], rng=0, synonyms=table) == [["a", "dog"]]  # nothing to replace


def test_augment_never_loads_torch_or_nlpaug() -> None:
    """The device imports augment: neither the image ops nor the WordNet path may pull torch (or nlpaug) in."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, augment.image, augment.synonyms, augment.text as t; "
            "assert t.synonym_replacement(['car'], np.random.default_rng(0)) != ['car']; "
            "assert not {'torch', 'nlpaug'} & set(sys.modules), 'torch or nlpaug loaded'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
