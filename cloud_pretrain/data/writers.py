"""Synthetic writers: an installed handwriting font drawn in a hand of the writer's own.

FEMNIST's writers differ in their hand, not only in their pen. A synthetic writer is one font
with a style drawn once for that writer and kept for every character it writes: slant, stroke
weight, size, aspect, and a smooth elastic distortion field over the whole character; each
sample then gets the small per-sample jitter of `fonts.Jitter` on top.

Fonts come in families (dkg, dkgBd and dkgIt are one hand in three weights). The public
(pretraining) writers use the families of `PUBLIC_FAMILIES` only and the device users the
others, so the pretrained model meets each user's hand for the first time.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import zlib

import numpy as np

from cloud_pretrain.data.fonts import IMAGE_SIZE

PUBLIC_FAMILIES = ("dkg", "humor-sans", "rufscript", "yuseimagic")


@dataclasses.dataclass(frozen=True)
class WriterStyle:
    """One writer's persistent hand."""

    slant: float  # horizontal shear of the glyph (x += slant * y)
    stroke: int  # extra outline in canvas pixels, added to every sample's
    size: float  # scale of the character box
    aspect: float  # width stretch against height
    warp_px: float  # largest displacement of the elastic field, in image pixels
    warp_seed: int

    def field(self) -> np.ndarray:
        """The writer's displacement field, float32 [2, 28, 28] (dy, dx): smooth noise (Gaussian,
        sigma 4 px) scaled so its largest displacement is `warp_px`."""
        noise = np.random.default_rng(self.warp_seed).standard_normal((2, IMAGE_SIZE, IMAGE_SIZE))
        taps = np.exp(-0.5 * (np.arange(-8, 9) / 4.0) ** 2)
        taps /= taps.sum()
        for axis in (1, 2):
            noise = np.apply_along_axis(lambda v: np.convolve(np.pad(v, 8, mode="wrap"), taps, "valid"), axis, noise)
        return (noise * self.warp_px / max(np.abs(noise).max(), 1e-6)).astype(np.float32)


def draw_style(writer: str, seed: int) -> WriterStyle:
    """The style of `writer` for a rendering seed: deterministic, different per writer."""
    rng = np.random.default_rng([seed, zlib.crc32(writer.encode()), 7])
    return WriterStyle(slant=float(rng.uniform(-0.35, 0.35)), stroke=int(rng.integers(-1, 3)),
                       size=float(rng.uniform(0.8, 1.05)), aspect=float(rng.uniform(0.75, 1.25)),
                       warp_px=float(rng.uniform(0.5, 2.5)), warp_seed=int(rng.integers(2 ** 31)))


def warp(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """`image` (uint8 [28, 28]) resampled bilinearly at each pixel plus the field's displacement."""
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    y = np.clip(ys + field[0], 0, IMAGE_SIZE - 1)
    x = np.clip(xs + field[1], 0, IMAGE_SIZE - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, IMAGE_SIZE - 1), np.minimum(x0 + 1, IMAGE_SIZE - 1)
    wy, wx = y - y0, x - x0
    img = image.astype(np.float32)
    out = ((1 - wy) * (1 - wx) * img[y0, x0] + (1 - wy) * wx * img[y0, x1]
           + wy * (1 - wx) * img[y1, x0] + wy * wx * img[y1, x1])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def font_family(font: pathlib.Path) -> str:
    """The family of a font file, from its name: weights and styles of one hand share it
    (`dkgBd` -> `dkg`, `breipfont` -> `breip`, `BecauseWeLearn-Regular` -> `becausewe`)."""
    stem = font.stem.lower().removesuffix("-regular")
    for family in ("becausewe", "breip", "dkg"):
        if stem.startswith(family):
            return family
    return re.sub(r"[0-9]+$", "", stem)


def split_fonts(fonts: dict[str, pathlib.Path]) -> tuple[dict[str, pathlib.Path], dict[str, pathlib.Path]]:
    """(public fonts, device fonts): by family, so no hand is on both sides."""
    public = {k: f for k, f in fonts.items() if font_family(f) in PUBLIC_FAMILIES}
    return public, {k: f for k, f in fonts.items() if k not in public}
