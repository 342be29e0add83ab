"""Public corpus, tokenizer, vocabulary and next-word examples on the installed Debian data."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from cloud_pretrain.data.text import (PAD, UNK, Vocabulary, count_next_word_examples, fortune_sentences,
                                      kjv_sentences, next_word_examples, public_corpus, read_fortunes, tokenize,
                                      wordnet_sentences)


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    return public_corpus()


@pytest.fixture(scope="module")
def vocab(corpus) -> Vocabulary:
    return Vocabulary.build(corpus)


def test_tokenize_lowercases_and_drops_punctuation_but_keeps_word_apostrophes():
    assert tokenize("Show'd like a rebel's whore: but ALL'S too weak!") == \
        ["show'd", "like", "a", "rebel's", "whore", "but", "all's", "too", "weak"]
    assert tokenize("Macdonwald--Worthy, 'Gainst well-met \u2019tis") == \
        ["macdonwald", "worthy", "gainst", "well-met", "tis"]


def test_public_corpus_holds_wordnet_glosses_examples_and_fortunes(corpus):
    assert len(corpus) > 190_000  # 117,659 synsets (a definition each, plus examples) and the fortunes
    assert ["an", "entity", "that", "has", "physical", "existence"] in corpus  # a WordNet definition
    assert ["the", "dog", "barked", "all", "night"] in corpus  # a WordNet example
    assert ["a", "day", "for", "firm", "decisions"] in corpus  # a fortune
    assert all(sentence and all(token == token.lower() for token in sentence) for sentence in corpus[:5000])


def test_the_king_james_bible_is_a_source_and_mixes_are_chosen_by_name(corpus):
    kjv = kjv_sentences()
    assert len(kjv) > 30_000 and ["in", "the", "beginning", "god", "created", "the", "heaven", "and", "the",
                                  "earth"] in kjv
    assert ["jesus", "wept"] in kjv and not any(t.startswith("ge1") for t in kjv[0])  # no verse numbers
    assert len(public_corpus(("wordnet", "fortunes", "kjv"))) == len(corpus) + len(kjv)  # the default has no kjv
    assert public_corpus(("kjv",)) == kjv
    with pytest.raises(ValueError, match="unknown corpus source.*tweets.*choose from wordnet, fortunes, kjv"):
        public_corpus(("kjv", "tweets"))
    with pytest.raises(FileNotFoundError, match="bible-kjv"):
        kjv_sentences("bible-not-installed")


def test_fortune_files_are_split_on_percent_lines_without_overstrikes(tmp_path):
    path = tmp_path / "quotes"
    path.write_bytes(b"First quote.\n%\nSecond _\x08u_\x08n_\x08d_\x08e_\x08r quote.\n\t-- Someone\n%\n")
    assert read_fortunes(path) == ["First quote.", "Second under quote.\n\t-- Someone"]


def test_vocabulary_keeps_the_10000_most_frequent_words_after_pad_and_unk(corpus, vocab):
    assert len(vocab) == 10_002
    assert vocab.tokens[:3] == [PAD, UNK, "the"]
    assert vocab.encode(["the", "zzzunseen"]).tolist() == [2, 1]
    sample = corpus[:20_000]
    small = Vocabulary.build(sample, size=500)
    counts = collections.Counter(token for sentence in sample for token in sentence)
    least_kept = min(counts[token] for token in small.tokens[2:])
    assert len(small) == 502
    assert not [token for token, count in counts.items() if count > least_kept and token not in small.ids]


def test_vocabulary_file_round_trips_and_a_malformed_one_is_named(tmp_path, vocab):
    path = vocab.save(tmp_path / "vocab.txt")
    assert Vocabulary.load(path).tokens == vocab.tokens
    (tmp_path / "bad.txt").write_text("<pad>\n<unk>\nthe\n\nof\n")
    with pytest.raises(ValueError, match=r"bad.txt:4"):
        Vocabulary.load(tmp_path / "bad.txt")
    (tmp_path / "order.txt").write_text("the\n<pad>\n<unk>\n")
    with pytest.raises(ValueError, match="starts with '<pad>'"):
        Vocabulary.load(tmp_path / "order.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Vocabulary.load(tmp_path / "missing.txt")


def test_next_word_examples_pad_left_into_the_smallest_bucket():
    vocab = Vocabulary([PAD, UNK, "a", "b", "c", "d", "e"])
    examples = next_word_examples([["a", "b", "c", "d", "e"], ["x"], ["e", "zz"]], vocab, buckets=(2, 3))
    x2, y2 = examples[2]
    x3, y3 = examples[3]
    assert x2.tolist() == [[0, 2], [2, 3], [0, 6]] and y2.tolist() == [3, 4, 1]
    assert x3.tolist() == [[2, 3, 4], [3, 4, 5]] and y3.tolist() == [5, 6]  # longer contexts keep the last 3
    assert x2.dtype == y2.dtype == np.int64
    assert len(y2) + len(y3) == count_next_word_examples([["a", "b", "c", "d", "e"], ["x"], ["e", "zz"]])


def test_next_word_examples_on_the_corpus_cover_every_word_after_the_first(corpus, vocab):
    sample = corpus[:2000]
    examples = next_word_examples(sample, vocab, buckets=(5, 10))
    assert sum(len(y) for _, y in examples.values()) == count_next_word_examples(sample)
    x, y = examples[10]
    assert x.shape == (len(y), 10) and (x[:, -1] > 0).all()
    with pytest.raises(ValueError, match="buckets"):
        next_word_examples(sample, vocab, buckets=(0,))


def test_missing_wordnet_or_fortunes_name_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        wordnet_sentences(tmp_path)
    with pytest.raises(FileNotFoundError, match="fortunes"):
        fortune_sentences(tmp_path / "none")


def test_a_malformed_wordnet_file_names_its_line(tmp_path):
    for part in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text("  licence header\n00001740 03 n 01 entity 0 000 | a thing\n")
    (tmp_path / "data.verb").write_text("00001740 29 v 01 breathe 0 000 without a gloss\n")
    with pytest.raises(ValueError, match=r"data.verb:1"):
        wordnet_sentences(tmp_path)
