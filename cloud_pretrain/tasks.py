"""The two tasks' public pretraining data and their presets (tiny, demo, paper).

- `nwp`: the public text corpus (a mix of WordNet glosses and examples, fortunes and the King
  James Bible: the preset's `corpus`), split by sentence (seeded) into train and validation;
  vocabulary of the 10,000 most frequent training words;
  next-word examples bucketed by context length.
- `image`: the public data is honestly disjoint from the device users. The model has the 62
  FEMNIST classes, which Fashion-MNIST (10 clothing classes) cannot teach, so we pretrain on
  characters of *public writers*: writers of the font families no device user writes with
  (data/writers.py, `PUBLIC_FAMILIES`), in hands of their own, rendered with a seed of their
  own. Their images are split (seeded) into train and validation.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch

from cloud_pretrain.data.text import DEFAULT_CORPUS
from cloud_pretrain.train import Buckets, TrainConfig

PUBLIC_RENDER_SEED = 1  # the device users' writers are rendered with seed 0
VAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Preset:
    """Model sizes, data sizes and training schedule of one preset."""

    name: str
    model: dict[str, Any]
    train: TrainConfig
    max_train: int | None  # examples kept (seeded sample); None: all
    max_val: int | None
    buckets: tuple[int, ...] = (10,)  # nwp context-length buckets
    samples_per_class: float = 5.0  # image: mean renders per class and public writer
    writers_per_font: int = 1  # image: public writers per public font
    corpus: tuple[str, ...] = DEFAULT_CORPUS  # nwp: the public sources (data/text.py SOURCES)


PRESETS: dict[str, dict[str, Preset]] = {
    "nwp": {
        "tiny": Preset("tiny", {"embed_dim": 16, "hidden_size": 32},
                       TrainConfig(epochs=2, batch_size=32, lr=5e-3), 2_000, 500, (5, 10)),
        "demo": Preset("demo", {"embed_dim": 64, "hidden_size": 128},
                       TrainConfig(epochs=3, batch_size=64, lr=3e-3), 60_000, 5_000, (5, 10)),
        # A 2-layer LSTM of 256 units, as in LEAF's next-word baselines, on the whole corpus.
        "paper": Preset("paper", {"embed_dim": 128, "hidden_size": 256},
                        TrainConfig(epochs=10, batch_size=128, lr=2e-3), None, 20_000, (5, 10, 20)),
    },
    "image": {
        "tiny": Preset("tiny", {"width_mult": 0.25},
                       TrainConfig(epochs=1, batch_size=32, lr=3e-3), 600, 200, samples_per_class=2),
        "demo": Preset("demo", {"width_mult": 0.5},
                       TrainConfig(epochs=3, batch_size=64, lr=3e-3), 12_000, None, samples_per_class=3,
                       writers_per_font=12),
        "paper": Preset("paper", {"width_mult": 1.0},
                        TrainConfig(epochs=20, batch_size=64, lr=2e-3), None, None, samples_per_class=10,
                        writers_per_font=40),
    },
}


@dataclasses.dataclass
class TaskData:
    """Train and validation buckets with the names of the outputs (vocabulary or labels)."""

    task: str
    train: Buckets
    val: Buckets
    vocab: list[str] | None = None
    labels: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.vocab if self.vocab is not None else self.labels)

    def model_config(self, preset: Preset) -> dict[str, Any]:
        """The model class's kwargs: the preset's sizes plus the output size the data fixes."""
        key = "vocab_size" if self.task == "nwp" else "num_classes"
        return {**preset.model, key: self.num_classes}


def get_preset(task: str, name: str, corpus: tuple[str, ...] | None = None, **train_overrides: Any) -> Preset:
    """A preset, with its corpus and fields of its TrainConfig replaced by the non-None overrides."""
    if task not in PRESETS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(PRESETS)}")
    if name not in PRESETS[task]:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS[task])}")
    preset = PRESETS[task][name]
    if corpus is not None:
        from cloud_pretrain.data.text import SOURCES

        unknown = [c for c in corpus if c not in SOURCES]
        if unknown or not corpus:
            raise ValueError(f"unknown corpus source(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(SOURCES)}")
        preset = dataclasses.replace(preset, corpus=tuple(corpus))
    changes = {k: v for k, v in train_overrides.items() if v is not None}
    return dataclasses.replace(preset, train=dataclasses.replace(preset.train, **changes)) if changes else preset


def _sample(x: np.ndarray, y: np.ndarray, limit: int | None, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is not None and len(y) > limit:
        keep = np.sort(rng.choice(len(y), size=limit, replace=False))
        x, y = x[keep], y[keep]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def _sample_buckets(examples: dict[int, tuple[np.ndarray, np.ndarray]], limit: int | None,
                    rng: np.random.Generator) -> Buckets:
    """At most `limit` examples in all, each bucket keeping its share."""
    total = sum(len(y) for _, y in examples.values())
    out = {}
    for key in sorted(examples):
        x, y = examples[key]
        share = None if limit is None or total <= limit else max(1, round(limit * len(y) / total))
        if len(y):
            out[key] = _sample(x, y, share, rng)
    return out


@functools.lru_cache(maxsize=1)
def _public_corpus(sources: tuple[str, ...]) -> list[list[str]]:
    """The public corpus, parsed once per process (pruning and resumed runs read it again)."""
    from cloud_pretrain.data import text

    return text.public_corpus(sources)


def nwp_data(preset: Preset, seed: int, vocab: list[str] | None = None) -> TaskData:
    """Public-corpus next-word examples; the vocabulary is built on the training sentences
    unless given (a checkpoint's vocabulary, so pruning evaluates on the same ids)."""
    from cloud_pretrain.data import text

    sentences = _public_corpus(preset.corpus)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    n_val = int(len(sentences) * VAL_FRACTION)
    val_s = [sentences[i] for i in order[:n_val]]
    train_s = [sentences[i] for i in order[n_val:]]
    words = text.Vocabulary(vocab) if vocab is not None else text.Vocabulary.build(train_s)
    train = _sample_buckets(text.next_word_examples(train_s, words, preset.buckets), preset.max_train, rng)
    val = _sample_buckets(text.next_word_examples(val_s, words, preset.buckets), preset.max_val, rng)
    return TaskData("nwp", train, val, vocab=list(words.tokens))


def image_data(preset: Preset, seed: int, vocab: list[str] | None = None) -> TaskData:
    """Characters of the public writers, as float32 [n, 1, 28, 28] in [0, 1] (an image task has no
    vocabulary: `vocab` is for the loaders' one signature and must be None)."""
    if vocab is not None:
        raise ValueError("the image task has no vocabulary")
    from cloud_pretrain.data.fonts import FEMNIST_CLASSES, handwriting_fonts
    from cloud_pretrain.data.images import WritingSettings, handwriting_users
    from cloud_pretrain.data.writers import split_fonts

    fonts = split_fonts(handwriting_fonts())[0]
    if not fonts:
        raise FileNotFoundError("no handwriting font of the public families is installed (make system-deps)")
    settings = WritingSettings(seed=PUBLIC_RENDER_SEED, samples_per_class=preset.samples_per_class,
                               writers_per_font=preset.writers_per_font)
    users = handwriting_users(settings, fonts=fonts, test_fraction=0.0)
    x = np.concatenate([u.train_x for u in users])
    y = np.concatenate([u.train_y for u in users])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = max(1, int(len(y) * VAL_FRACTION))
    images = (x.astype(np.float32) / 255.0)[:, None]
    val = {0: _sample(images[order[:n_val]], y[order[:n_val]], preset.max_val, rng)}
    train = {0: _sample(images[order[n_val:]], y[order[n_val:]], preset.max_train, rng)}
    return TaskData("image", train, val, labels=list(FEMNIST_CLASSES))


def load_data(task: str, preset: Preset, seed: int, vocab: list[str] | None = None) -> TaskData:
    """The public train/validation data of `task` for `preset`, deterministic for `seed`."""
    from cloud_pretrain.recipes import get_task  # the recipes name each task's loader

    return get_task(task).data(preset, seed, vocab)
