"""Handwriting fonts as writers: which installed fonts qualify, and one jittered character.

A writer is one font file of a Debian handwriting font package that has a glyph for each of
the 62 FEMNIST characters; every sample of it is drawn with its own small rotation, scale,
shift and stroke width, as no one writes a letter twice the same.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import string
import subprocess
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cloud_pretrain.data.writers import WriterStyle

FEMNIST_CLASSES = string.digits + string.ascii_uppercase + string.ascii_lowercase
HANDWRITING_FONT_PACKAGES = (
    "fonts-bwht", "fonts-dkg-handwriting", "fonts-breip", "fonts-femkeklaver", "fonts-humor-sans",
    "fonts-rufscript", "fonts-sjfonts", "fonts-yusei-magic", "fonts-leckerli-one",
)
FONT_SUFFIXES = (".ttf", ".otf")
IMAGE_SIZE = 28
_CANVAS, _FONT_SIZE = 128, 72  # drawn large, then fitted into the 28x28 image


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Per-sample variation, each drawn uniformly from its range."""

    max_rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.8, 1.05)
    max_shift_px: float = 2.0
    stroke_width: tuple[int, int] = (0, 3)  # extra outline, in canvas pixels (inclusive range)
    box_px: int = 20  # the longer side of an unscaled character, as in (E)MNIST


def package_font_files(package: str) -> list[pathlib.Path]:
    """The font files a Debian package installed, or an error naming the package."""
    try:
        listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("dpkg-query is not available: handwriting fonts come from Debian packages") from None
    if listing.returncode != 0:
        raise FileNotFoundError(f"the Debian package {package} is not installed "
                                f"(apt-get install {package}, or make system-deps)")
    files = [pathlib.Path(line) for line in listing.stdout.splitlines()
             if line.lower().endswith(FONT_SUFFIXES) and pathlib.Path(line).is_file()]
    if not files:
        raise FileNotFoundError(f"the Debian package {package} installed no .ttf or .otf font file")
    return files


def missing_characters(font: pathlib.Path, characters: str = FEMNIST_CLASSES) -> str:
    """The characters of `characters` that the font's character map lacks."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        cmap = TTFont(str(font), lazy=True).getBestCmap() or {}
    except (TTLibError, OSError) as err:
        raise ValueError(f"{font}: not a readable font file ({err})") from None
    return "".join(c for c in characters if ord(c) not in cmap)


def handwriting_fonts(packages: tuple[str, ...] = HANDWRITING_FONT_PACKAGES) -> dict[str, pathlib.Path]:
    """Writer id (the font file's stem) -> font file, for each font with all 62 characters."""
    fonts = {}
    for package in packages:
        for font in sorted(package_font_files(package)):
            if not missing_characters(font):
                fonts.setdefault(font.stem, font)
    return dict(sorted(fonts.items()))


@functools.lru_cache(maxsize=32)
def _load_font(path: pathlib.Path, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size)


def render_character(font: pathlib.Path, character: str, rng: np.random.Generator,
                     jitter: Jitter = Jitter(), style: WriterStyle | None = None,
                     field: np.ndarray | None = None) -> np.ndarray:
    """One jittered sample of `character`: uint8 [28, 28], ink bright on black, centred; in a
    writer's `style` (its slant, stroke, size, aspect) and elastic `field` when given."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    stroke = int(rng.integers(jitter.stroke_width[0], jitter.stroke_width[1] + 1))
    stroke = max(0, stroke + (style.stroke if style else 0))
    ImageDraw.Draw(canvas).text((_CANVAS / 2, _CANVAS / 2), character, fill=255, anchor="mm",
                                font=_load_font(font, _FONT_SIZE), stroke_width=stroke, stroke_fill=255)
    angle = rng.uniform(-jitter.max_rotation_deg, jitter.max_rotation_deg)
    glyph = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    box = glyph.getbbox()
    if box is None:
        raise ValueError(f"{font}: the glyph of {character!r} draws nothing")
    glyph = glyph.crop(box)
    if style is not None and style.slant:
        shift = abs(style.slant) * glyph.height
        glyph = glyph.transform((glyph.width + int(np.ceil(shift)), glyph.height), Image.Transform.AFFINE,
                                (1, style.slant, -shift if style.slant > 0 else 0, 0, 1, 0),
                                resample=Image.Resampling.BILINEAR)
        glyph = glyph.crop(glyph.getbbox() or (0, 0, glyph.width, glyph.height))
    longest = jitter.box_px * rng.uniform(*jitter.scale) * (style.size if style else 1.0)
    aspect = style.aspect if style else 1.0
    ratio = longest / max(glyph.width * aspect, glyph.height)
    size = (max(1, round(glyph.width * aspect * ratio)), max(1, round(glyph.height * ratio)))
    glyph = glyph.resize(size, Image.Resampling.LANCZOS)
    shift = rng.uniform(-jitter.max_shift_px, jitter.max_shift_px, size=2)
    left = round((IMAGE_SIZE - size[0]) / 2 + shift[0])
    top = round((IMAGE_SIZE - size[1]) / 2 + shift[1])
    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    image.paste(glyph, (left, top))
    pixels = np.asarray(image, dtype=np.uint8)
    if field is None:
        return pixels
    from cloud_pretrain.data.writers import warp

    return warp(pixels, field)
