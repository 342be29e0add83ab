"""Images: per-writer handwritten characters rendered from installed fonts (synthetic FEMNIST).

The writers stand for LEAF's FEMNIST: a writer is an installed handwriting font in a hand of its
own (cloud_pretrain/data/writers.py), `writers_per_font` of them per font, with the 62 classes in
FEMNIST order (`0-9`, `A-Z`, `a-z`). Each writer writes each class a different number of times
(at least once), so writers differ in style and in label distribution. The device users write
with the device font families (300 writers by default); the public pretraining set is rendered
from the other families (cloud_pretrain/tasks.py), so no hand is on both sides. Rendering is
deterministic for a seed and cached per writer as `.npz` under the cache directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import zipfile
import zlib

import numpy as np
from tqdm import tqdm

from cloud_pretrain.data.fonts import FEMNIST_CLASSES, Jitter, handwriting_fonts, render_character
from cloud_pretrain.data.users import TEST_FRACTION, ImageUser, split_in_order
from cloud_pretrain.data.writers import draw_style, split_fonts
from device_runtime.files import atomic_write_bytes, cache_dir

_RENDER_VERSION = 3  # bump when rendering changes, so old caches are not reused


@dataclasses.dataclass(frozen=True)
class WritingSettings:
    """What a rendered writer depends on; its hash names the cache file."""

    seed: int = 0
    samples_per_class: float = 5.0  # mean over a writer's classes; every class at least once
    jitter: Jitter = Jitter()
    writers_per_font: int = 25  # 12 device fonts: 300 writers

    def key(self, font: pathlib.Path) -> str:
        """What one writer's images depend on (not how many writers there are)."""
        stat = font.stat()
        fields = {"version": _RENDER_VERSION, "font": str(font), "font_size": stat.st_size,
                  **dataclasses.asdict(self)}
        fields.pop("writers_per_font")
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def class_counts(rng: np.random.Generator, samples_per_class: float) -> np.ndarray:
    """How often one writer writes each class: 1 + Poisson around the writer's own volume
    (log-normal, as some writers write much more than others) and class preferences."""
    if samples_per_class < 1:
        raise ValueError(f"samples per class must be at least 1, got {samples_per_class}")
    volume = rng.lognormal(0.0, 0.5)
    preference = rng.dirichlet(np.full(len(FEMNIST_CLASSES), 2.0)) * len(FEMNIST_CLASSES)
    return 1 + rng.poisson((samples_per_class - 1) * volume * preference)


def render_writer(writer: str, font: pathlib.Path, settings: WritingSettings) -> tuple[np.ndarray, np.ndarray]:
    """All samples of one writer, in writing order, in its own hand: uint8 [n, 28, 28], int64 class ids [n]."""
    rng = np.random.default_rng([settings.seed, zlib.crc32(writer.encode())])
    labels = np.repeat(np.arange(len(FEMNIST_CLASSES)), class_counts(rng, settings.samples_per_class))
    labels = rng.permutation(labels)
    style = draw_style(writer, settings.seed)
    field = style.field()
    images = np.stack([render_character(font, FEMNIST_CLASSES[label], rng, settings.jitter, style, field)
                       for label in labels])
    return images, labels.astype(np.int64)


def cached_writer(writer: str, font: pathlib.Path, settings: WritingSettings,
                  directory: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """`render_writer`, read from `directory` when rendered before, else rendered and stored."""
    path = directory / f"{writer}-{settings.key(font)}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                return cached["x"], cached["y"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            pass  # a damaged cache file is rendered again and replaced
    images, labels = render_writer(writer, font, settings)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=images, y=labels)
    atomic_write_bytes(path, buffer.getvalue())
    return images, labels


def device_fonts() -> dict[str, pathlib.Path]:
    """The fonts of the device users' writers (the families the public data never uses)."""
    return split_fonts(handwriting_fonts())[1]


def handwriting_users(settings: WritingSettings = WritingSettings(), fonts: dict[str, pathlib.Path] | None = None,
                      cache: str | os.PathLike | None = None,
                      test_fraction: float = TEST_FRACTION) -> list[ImageUser]:
    """`settings.writers_per_font` writers per font (default: the device fonts), named
    `<font>-<k>`; each writer's samples split in writing order."""
    fonts = device_fonts() if fonts is None else fonts
    if not fonts:
        raise FileNotFoundError("no installed handwriting font has all 62 characters (make system-deps)")
    if settings.writers_per_font < 1:
        raise ValueError(f"writers per font must be at least 1, got {settings.writers_per_font}")
    directory = (cache_dir() if cache is None else pathlib.Path(cache)) / "handwriting"
    writers = [(f"{stem}-{k:02d}", font) for stem, font in fonts.items() for k in range(settings.writers_per_font)]
    users = []
    for writer, font in tqdm(writers, desc="writers", unit="writer", leave=False, disable=None):
        images, labels = cached_writer(writer, font, settings, directory)
        order = np.arange(len(labels))
        train, test = split_in_order(order, test_fraction)
        users.append(ImageUser(writer, images[train], labels[train], images[test], labels[test]))
    return users
