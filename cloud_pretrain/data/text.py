"""Public text for next-word prediction: WordNet glosses and examples, fortune quotes, and the
King James Bible (1611 English, the closest public text Debian ships to the Shakespeare users').

It stands for the paper's public (Twitter) pretraining set, chosen because it resembles what
users type; which mix of sources comes closest is measured (BENCHMARKS.md), not guessed. One tokenizer serves every text
source (public corpus, Shakespeare, LEAF), so a vocabulary built here fits per-user data.
"""
from __future__ import annotations

import collections
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cloud_pretrain.data.paths import debian_data
from device_runtime.tokenizer import PAD, UNK, words as device_words

WORDNET_DIR = pathlib.Path("/usr/share/wordnet")
FORTUNES_DIR = pathlib.Path("/usr/share/games/fortunes")
WORDNET_PARTS = ("noun", "verb", "adj", "adv")
VOCAB_SIZE = 10_000
DEFAULT_BUCKETS = (10,)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_OVERSTRIKE = re.compile(r".\x08")  # fortune files underline with "_\bX"
_QUOTED = re.compile(r'"([^"]*)"')


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of `text`, punctuation dropped: the device tokenizer's rules."""
    return device_words(text)


def split_sentences(text: str) -> list[str]:
    """Sentences of running text, split after `.`, `!` or `?`."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def wordnet_sentences(wordnet_dir: str | os.PathLike = WORDNET_DIR) -> list[list[str]]:
    """Every WordNet gloss: its definition and each quoted example, as token lists."""
    sentences = []
    for part in WORDNET_PARTS:
        path = debian_data(pathlib.Path(wordnet_dir) / f"data.{part}", "wordnet-base", "WordNet data")
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.startswith("  "):  # licence header
                continue
            if " | " not in line:
                raise ValueError(f"{path}:{number}: a WordNet synset line without a ' | ' gloss")
            gloss = line.split(" | ", 1)[1]
            examples = _QUOTED.findall(gloss)
            definition = _QUOTED.sub("", gloss)
            for text in (definition, *examples):
                if tokens := tokenize(text):
                    sentences.append(tokens)
    return sentences


def read_fortunes(path: pathlib.Path) -> list[str]:
    """The quotes of one fortune file (entries separated by `%` lines), overstrikes removed."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    entries = re.split(r"^%\s*$", _OVERSTRIKE.sub("", text), flags=re.MULTILINE)
    return [entry.strip() for entry in entries if entry.strip()]


def fortune_sentences(fortunes_dir: str | os.PathLike = FORTUNES_DIR) -> list[list[str]]:
    """Sentences of every fortune quote in the plain-text files of `fortunes_dir`."""
    root = debian_data(fortunes_dir, "fortunes", "fortune files")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.suffix and not p.is_symlink())
    if not files:
        raise FileNotFoundError(f"no fortune files in {root}: install the Debian package fortunes")
    return [tokens for path in files for quote in read_fortunes(path)
            for sentence in split_sentences(quote) if (tokens := tokenize(sentence))]


def kjv_sentences(bible: str = "bible") -> list[list[str]]:
    """Every verse of the King James Bible (Debian's `bible-kjv`, its `bible` reader), split into
    sentences, as token lists."""
    program = shutil.which(bible)
    if program is None:
        raise FileNotFoundError("the King James Bible reader `bible` is not installed: install the Debian "
                                "package bible-kjv (make system-deps)")
    dump = subprocess.run([program, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=False)
    if dump.returncode != 0 or not dump.stdout:
        raise RuntimeError(f"`bible -f Gen1:1-Rev22:21` failed (exit {dump.returncode}): {dump.stderr.strip()[:200]}")
    verses = [line.split(" ", 1)[1] for line in dump.stdout.splitlines() if " " in line and ":" in line.split(" ", 1)[0]]
    return [tokens for verse in verses for sentence in split_sentences(verse) if (tokens := tokenize(sentence))]


# The public sources by name; a corpus is a mix of them, in this order.
SOURCES: dict[str, Callable[[], list[list[str]]]] = {
    "wordnet": wordnet_sentences, "fortunes": fortune_sentences, "kjv": kjv_sentences,
}
DEFAULT_CORPUS = ("wordnet", "fortunes")  # measured best overall: BENCHMARKS.md, "Experiments"


def public_corpus(sources: Sequence[str] = DEFAULT_CORPUS) -> list[list[str]]:
    """The public pretraining corpus: the sentences of each named source, in the order given."""
    unknown = [name for name in sources if name not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"unknown corpus source(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(SOURCES)}")
    return [sentence for name in sources for sentence in SOURCES[name]()]


class Vocabulary:
    """Token <-> id: `<pad>` is 0, `<unk>` is 1, then words by falling frequency."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r} and {UNK!r}, not {tokens[:2]}")
        self.tokens = tokens
        self.ids = {token: i for i, token in enumerate(tokens)}
        if len(self.ids) != len(tokens):
            duplicate = next(t for t, n in collections.Counter(tokens).items() if n > 1)
            raise ValueError(f"the vocabulary lists {duplicate!r} twice")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], size: int = VOCAB_SIZE) -> Vocabulary:
        """The `size` most frequent words of `sentences` (ties in alphabetical order)."""
        if size < 1:
            raise ValueError(f"vocabulary size must be positive, got {size}")
        counts = collections.Counter(token for sentence in sentences for token in sentence)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        words = sorted(counts, key=lambda word: (-counts[word], word))[:size]
        return cls([PAD, UNK, *words])

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads `vocab.txt` (one token a line)."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        tokens = path.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        for number, token in enumerate(tokens, 1):
            if not token or token != token.strip():
                raise ValueError(f"{path}:{number}: a vocabulary line must be one token, got {token!r}")
        try:
            return cls(tokens)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Writes `vocab.txt`, one token a line."""
        path = pathlib.Path(path)
        path.write_text("\n".join(self.tokens) + "\n", encoding="utf-8")
        return path

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids (int64), `<unk>` for words outside the vocabulary."""
        return np.fromiter((self.ids.get(token, 1) for token in tokens), dtype=np.int64, count=len(tokens))


def next_word_examples(sentences: Iterable[Sequence[str]], vocab: Vocabulary,
                       buckets: Sequence[int] = DEFAULT_BUCKETS) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Every (context, next word) pair of every sentence, grouped by context-length bucket.

    Returns `{length: (x int64 [n, length], y int64 [n])}` for each bucket; a context sits in
    the smallest bucket that holds it, left-padded with id 0; a longer one keeps its last
    `max(buckets)` words. Vectorised over one concatenation of all sentences.
    """
    buckets = sorted(set(buckets))
    if not buckets or buckets[0] < 1:
        raise ValueError(f"length buckets must be positive integers, got {buckets}")
    sentences = [sentence for sentence in sentences if len(sentence) > 1]
    ids = vocab.encode([token for sentence in sentences for token in sentence])
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    sentence_starts = np.cumsum(lengths) - lengths
    starts = np.repeat(sentence_starts, lengths - 1)  # per example: where its sentence starts
    is_target = np.ones(len(ids), dtype=bool)
    is_target[sentence_starts] = False  # every word but a sentence's first is a target
    ends = np.flatnonzero(is_target)
    context_lengths = np.minimum(ends - starts, buckets[-1])
    bucket_of = np.searchsorted(buckets, context_lengths)
    examples = {}
    for index, bucket in enumerate(buckets):
        end, length = ends[bucket_of == index], context_lengths[bucket_of == index]
        positions = end[:, None] - bucket + np.arange(bucket)[None, :]
        inside = positions >= (end - length)[:, None]
        x = np.where(inside, ids[np.clip(positions, 0, None)], 0).astype(np.int64)
        examples[bucket] = (x, ids[end])
    return examples


def count_next_word_examples(sentences: Iterable[Sequence[str]]) -> int:
    """How many examples `next_word_examples` makes of `sentences`: one per word after the first."""
    return sum(max(len(sentence) - 1, 0) for sentence in sentences)
