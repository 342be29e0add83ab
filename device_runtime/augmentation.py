"""On-device augmentation of the user's data, through `augment` (never our own ops).

The bundle names the kind of its data, not its task: "images" batches go through augment.image
(numpy-only ops); "text" token rows are turned back into words with the bundle's vocabulary,
augmented by augment.text's EDA (with the bundle's synonym table when it has one, so no
WordNet or nltk is needed), and turned into ids again (a word outside the vocabulary becomes
`<unk>`), keeping the label of their source sample. At most `ratio` x the original data is
added (ratio <= 1: the paper's cap).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

AUGMENTATION_KINDS = ("images", "text")


def _text_copies(x: np.ndarray, y: np.ndarray, sources: np.ndarray, vocab: Sequence[str],
                 synonyms: Mapping[str, Sequence[str]] | None, pad_id: int, unk_id: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from augment.text import augment_sentences

    ids = {word: i for i, word in enumerate(vocab)}
    length = x.shape[1]
    rows, labels = [], []
    for index in sources:
        words = [vocab[i] for i in x[index] if i != pad_id]
        for copy in augment_sentences([words], ratio=1.0, rng=rng, synonyms=synonyms)[1:]:
            tokens = [ids.get(w, ids.get(w.lower(), unk_id)) for w in copy][-length:]
            rows.append([pad_id] * (length - len(tokens)) + tokens)
            labels.append(y[index])
    return np.asarray(rows, dtype=x.dtype).reshape(-1, length), np.asarray(labels, dtype=y.dtype)


def augment_user_data(x: np.ndarray, y: np.ndarray, kind: str | None, *, ratio: float, seed: int,
                      vocab: Sequence[str] | None = None, synonyms: Mapping[str, Sequence[str]] | None = None,
                      pad_id: int = 0, unk_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) followed by at most ratio x len(x) augmented copies; the same seed gives the same copies.

    kind is "images" (float [n, C, H, W]), "text" (int ids [n, length], left-padded with pad_id;
    needs vocab) or None for a bundle without augmentation (ratio must then be 0).
    """
    if kind is not None and kind not in AUGMENTATION_KINDS:
        raise ValueError(f"unknown augmentation kind {kind!r}; known: {', '.join(AUGMENTATION_KINDS)}")
    if not 0 <= ratio <= 1:
        raise ValueError(f"augment ratio must lie in [0, 1], got {ratio}")
    if ratio == 0:
        return x, y
    if kind is None:
        raise ValueError(f"this bundle has no augmentation, so the augment ratio must be 0, got {ratio}")
    rng = np.random.default_rng([seed, 0xA06])
    if kind == "images":
        from augment.image import augment_images

        return augment_images(x, y, ratio=ratio, rng=rng)
    if vocab is None:
        raise ValueError("text augmentation needs the bundle's vocabulary")
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"text data must be int token ids [n, length], got {x.dtype} {x.shape}")
    count = int(ratio * len(x))
    if count == 0:
        return x, y
    sources = np.sort(rng.choice(len(x), size=count, replace=False))
    extra_x, extra_y = _text_copies(x, y, sources, vocab, synonyms, pad_id, unk_id, rng)
    return np.concatenate([x, extra_x]), np.concatenate([y, extra_y])
