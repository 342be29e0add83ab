"""On-device augmentation of the user's data, through `augment` (never our own ops).

Images go through augment.image (numpy-only ops). Token contexts are turned back into words with
the bundle's vocabulary, augmented by augment.text's EDA, and turned into ids again (a word
outside the vocabulary becomes `<unk>`, id 1), keeping the label of their source sample.
At most `ratio` x the original data is added (ratio <= 1: the paper's cap).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD_ID, UNK_ID = 0, 1


def _text_copies(x: np.ndarray, y: np.ndarray, sources: np.ndarray, vocab: Sequence[str],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from augment.text import augment_sentences

    ids = {word: i for i, word in enumerate(vocab)}
    length = x.shape[1]
    rows, labels = [], []
    for index in sources:
        words = [vocab[i] for i in x[index] if i != PAD_ID]
        for copy in augment_sentences([words], ratio=1.0, rng=rng)[1:]:
            tokens = [ids.get(w, ids.get(w.lower(), UNK_ID)) for w in copy][-length:]
            rows.append([PAD_ID] * (length - len(tokens)) + tokens)
            labels.append(y[index])
    return np.asarray(rows, dtype=x.dtype).reshape(-1, length), np.asarray(labels, dtype=y.dtype)


def augment_user_data(x: np.ndarray, y: np.ndarray, task: str, vocab: Sequence[str], *, ratio: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) followed by at most ratio x len(x) augmented copies; the same seed gives the same copies."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"augment ratio must lie in [0, 1], got {ratio}")
    if ratio == 0:
        return x, y
    rng = np.random.default_rng([seed, 0xA06])
    if task == "image":
        from augment.image import augment_images

        return augment_images(x, y, ratio=ratio, rng=rng)
    if task != "nwp":
        raise ValueError(f"no augmentation for task {task!r}")
    count = int(ratio * len(x))
    if count == 0:
        return x, y
    sources = np.sort(rng.choice(len(x), size=count, replace=False))
    extra_x, extra_y = _text_copies(x, y, sources, vocab, rng)
    return np.concatenate([x, extra_x]), np.concatenate([y, extra_y])
