"""Text <-> token ids on the device, by the same rules the cloud pretrained with.

A token model's bundle carries its tokenizer: the vocabulary file and the normalisation rules
(the manifest's `tokenizer` entry), so what a user types becomes the ids the model was trained
on, with no cloud-side import. The cloud's corpus code tokenizes through `words` too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

PAD, UNK = "<pad>", "<unk>"
# Lower-case words; an apostrophe or hyphen inside a word keeps it whole ("show'd", "well-met");
# every other character (punctuation, dashes, quotes) separates words and is dropped.
WORD_PATTERN = r"[a-z0-9]+(?:['\-][a-z0-9]+)*"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


def vocab_sha256(tokens: Sequence[str]) -> str:
    """The sha256 of a vocabulary as `vocab.txt` holds it (one token a line): what ties token ids
    made on the cloud to the bundle whose vocabulary they index."""
    return hashlib.sha256("".join(f"{t}\n" for t in tokens).encode("utf-8")).hexdigest()


def words(text: str, pattern: str = WORD_PATTERN, lowercase: bool = True) -> list[str]:
    """The word tokens of `text` under the normalisation rules."""
    text = text.translate(_APOSTROPHES)
    return re.findall(pattern, text.lower() if lowercase else text)


@dataclasses.dataclass
class Tokenizer:
    """A vocabulary (id 0 `<pad>`, id 1 `<unk>`) with the rules that split text into its words."""

    vocab: list[str]
    pattern: str = WORD_PATTERN
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.vocab[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r} and {UNK!r}, not {self.vocab[:2]}")
        self.ids = {token: i for i, token in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise ValueError("the vocabulary lists a token twice")

    @property
    def special_ids(self) -> set[int]:
        """Ids that are never a suggestion: padding and unknown."""
        return {0, 1}

    def words(self, text: str) -> list[str]:
        return words(text, self.pattern, self.lowercase)

    def encode_words(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids (int64), `<unk>` for words outside the vocabulary."""
        return np.fromiter((self.ids.get(t, 1) for t in tokens), dtype=np.int64, count=len(tokens))

    def encode(self, text: str) -> np.ndarray:
        return self.encode_words(self.words(text))

    def context(self, ids: np.ndarray, length: int) -> np.ndarray:
        """The last `length` ids, left-padded with `<pad>`: a model input row of that length."""
        ids = np.asarray(ids, dtype=np.int64)[-length:] if length else np.zeros(0, np.int64)
        return np.concatenate([np.zeros(length - len(ids), np.int64), ids])

    def manifest_entry(self, vocab_file: str) -> dict[str, Any]:
        return {"vocab_file": vocab_file, "vocab_sha256": vocab_sha256(self.vocab), "pattern": self.pattern,
                "lowercase": self.lowercase, "pad": PAD, "unk": UNK}

    @classmethod
    def from_manifest(cls, entry: dict[str, Any], vocab: list[str]) -> "Tokenizer":
        if entry.get("pad", PAD) != PAD or entry.get("unk", UNK) != UNK:
            raise ValueError(f"bundle tokenizer uses special tokens {entry.get('pad')!r}/{entry.get('unk')!r}; "
                             f"this runtime knows {PAD!r}/{UNK!r}")
        try:
            re.compile(entry["pattern"])
        except (KeyError, TypeError, re.error) as err:
            raise ValueError(f"bundle tokenizer has no valid pattern: {err}") from None
        return cls(vocab, entry["pattern"], bool(entry.get("lowercase", True)))
