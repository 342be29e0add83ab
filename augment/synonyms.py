"""The synonym table a bundle carries, so text augmentation runs where WordNet is not installed.

The table is built on the cloud from WordNet for the bundle's vocabulary and keeps only
single-word synonyms inside that vocabulary: any other would become `<unk>` on the device.
Loading it needs only the standard library (no nltk).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from device_runtime.files import atomic_write_bytes, read_json_object

SYNONYMS_FILE = "synonyms.json"


def build_synonym_table(vocabulary: Sequence[str]) -> dict[str, list[str]]:
    """word -> its WordNet synonyms (augment.text.wordnet_synonyms, same order) that are single
    words of the vocabulary, for each non-stopword of the vocabulary that has any."""
    from augment.text import STOPWORDS, wordnet_synonyms

    known = set(vocabulary)
    table = {}
    for word in vocabulary:
        if word.lower() in STOPWORDS:
            continue
        kept = [s for s in wordnet_synonyms(word) if " " not in s and s in known]
        if kept:
            table[word] = kept
    return table


def save_synonym_table(table: Mapping[str, Sequence[str]], path: str | os.PathLike) -> Path:
    """Writes the table as compact JSON with sorted keys, atomically (a reader never sees half a file)."""
    path = Path(path)
    text = json.dumps({word: list(options) for word, options in table.items()},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
    return path


def load_synonym_table(path: str | os.PathLike) -> dict[str, list[str]]:
    """Reads a table written by save_synonym_table; ValueError naming the file if it is malformed."""
    path = Path(path)
    table = read_json_object(path, "synonym table")
    for word, options in table.items():
        if not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
            raise ValueError(f"{path}: synonyms of {word!r} must be a list of strings, got {options!r:.60}")
    return table
