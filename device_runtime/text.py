"""Typed text as model inputs: a context for the keyboard's suggestions, and its own training stream.

A token model's bundle carries its tokenizer; its forward functions exist for a few context
lengths (axis 1). A context goes into the shortest compiled length that holds it, left-padded
(longer ones keep their last words), as the model was pretrained. A line the user typed is a
stream of (context, next word) samples: each word is first predicted from the words before it,
then learned once typed. Words outside the vocabulary are never a label.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from device_runtime.model import DeviceModel
from device_runtime.tokenizer import Tokenizer


def context_lengths(model: DeviceModel) -> list[int]:
    """The axis-1 lengths of the batch-1 forward functions, shortest first."""
    shape = model.manifest.input["shape"]
    if len(shape) != 2 or model.manifest.token_range is None:
        raise ValueError(f"the bundle's model reads {shape} {model.manifest.input['dtype']} inputs, not token "
                         "sequences: text needs a token model")
    return sorted({f["input_shape"][1] for f in model.manifest.forward_functions if f["batch"] == 1})


def context_input(tokenizer: Tokenizer, ids: np.ndarray, lengths: list[int]) -> np.ndarray:
    """One model input row [1, L]: `ids` in the shortest length that holds them."""
    length = next((n for n in lengths if n >= len(ids)), lengths[-1])
    return tokenizer.context(ids, length)[None, :]


def text_input(model: DeviceModel, text: str) -> np.ndarray:
    """The model input for typed text; ValueError when none of its words is in the vocabulary."""
    tokenizer = model.bundle.tokenizer
    ids = tokenizer.encode(text)
    if not len(ids):
        raise ValueError(f"no word in {text!r}: type some text")
    return context_input(tokenizer, ids, context_lengths(model))


def suggestions(model: DeviceModel, text: str, top: int = 3) -> list[dict[str, object]]:
    """The `top` most likely classes for the text; for a next-word model never `<pad>` or `<unk>`."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    logits = model.forward(text_input(model, text))[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    excluded = model.bundle.tokenizer.special_ids if model.manifest.next_token else set()
    order = [int(c) for c in np.argsort(-probs) if int(c) not in excluded][:top]
    return [{"id": c, "label": model.bundle.labels[c], "p": round(float(probs[c]), 6)} for c in order]


def typed_samples(model: DeviceModel, lines: Iterable[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """(contexts, next-word ids) of every word after the first of every line, in typing order."""
    if not model.manifest.next_token:
        raise ValueError("learning from typed text needs a next-word model (its classes are the vocabulary)")
    tokenizer, lengths = model.bundle.tokenizer, context_lengths(model)
    unk = tokenizer.ids["<unk>"]
    contexts, labels = [], []
    for line in lines:
        ids = tokenizer.encode(line)
        for i in range(1, len(ids)):
            if ids[i] != unk:
                contexts.append(context_input(tokenizer, ids[:i], lengths)[0])
                labels.append(int(ids[i]))
    return contexts, np.asarray(labels, dtype=np.int64)


def read_text(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file; one clear line when it is missing or not text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None
