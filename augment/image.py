"""Image augmentation in numpy only (the device side has no torch, no PIL).

Ops take a batch [n, C, H, W] (any number of channels) or [n, H, W], uint8 in [0, 255] or float
in [0, 1], and return a batch of the same shape, dtype and range; the channels of an image move
together. Geometric ops (rotation, scale, crop, translation)
are one affine resampling with bilinear interpolation; pixels that come from outside the
image are background (0). Every op draws its parameters per sample from a numpy Generator.
Horizontal flip turns some characters into others (b/d, p/q), so it is not a default op.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps

import numpy as np


def check_image_batch(x: np.ndarray) -> None:
    """Raises ValueError unless x is [n, C, H, W] or [n, H, W], uint8, or float in [0, 1]."""
    if x.ndim not in (3, 4):
        raise ValueError(f"image batch must be [n, C, H, W] or [n, H, W], got shape {x.shape}")
    if x.dtype == np.uint8:
        return
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"image batch must be uint8 or float, got dtype {x.dtype}")
    if x.size and not (np.nanmin(x) >= 0.0 and np.nanmax(x) <= 1.0 and not np.isnan(x).any()):
        raise ValueError(f"float images must be in [0, 1] without NaN, got range [{np.nanmin(x)}, {np.nanmax(x)}]")


def _as_unit_batch(x: np.ndarray) -> np.ndarray:
    """float64 [n, C, H, W] in [0, 1] from a checked uint8 or float batch of either layout."""
    check_image_batch(x)
    unit = x / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    return unit.reshape(len(x), -1, *x.shape[-2:])


def _like(unit: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Back to the original's shape and dtype (clipped to the range, uint8 rounded)."""
    unit = np.clip(unit, 0.0, 1.0).reshape(original.shape)
    if original.dtype == np.uint8:
        return np.rint(unit * 255.0).astype(np.uint8)
    return unit.astype(original.dtype)


def _batch_op(core: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Makes a core op on float [n, C, H, W] in [0, 1] accept and return any supported batch."""
    @wraps(core)
    def op(x: np.ndarray, rng: np.random.Generator, **params: float) -> np.ndarray:
        x = np.asarray(x)
        return _like(core(_as_unit_batch(x), rng, **params), x)
    return op


def _affine(x: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Resamples each image: output pixel (r, c) reads input at inverse[i] @ (r, c, 1), bilinearly.

    inverse: [n, 2, 3] maps output (row, col) to input (row, col), both centred on the image.
    """
    n, channels, h, w = x.shape
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    rows, cols = np.meshgrid(np.arange(h) - centre[0], np.arange(w) - centre[1], indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel(), np.ones(h * w)])            # [3, h*w]
    src = inverse @ grid + centre[None, :, None]                              # [n, 2, h*w]
    r0, c0 = np.floor(src[:, 0]), np.floor(src[:, 1])
    fr, fc = src[:, 0] - r0, src[:, 1] - c0
    # Sample from a copy with a one-pixel background border; coordinates beyond it clamp to it.
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).reshape(n, channels, -1)
    out = np.zeros((n, channels, h * w))
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                           (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r = np.clip(r0 + dr + 1, 0, h + 1).astype(np.intp)
        c = np.clip(c0 + dc + 1, 0, w + 1).astype(np.intp)
        out += weight[:, None] * np.take_along_axis(padded, (r * (w + 2) + c)[:, None], axis=2)
    return out.reshape(n, channels, h, w)


def _matrices(n: int, angle: np.ndarray | float = 0.0, zoom: np.ndarray | float = 1.0,
              shift_r: np.ndarray | float = 0.0, shift_c: np.ndarray | float = 0.0) -> np.ndarray:
    """[n, 2, 3] inverse maps for: rotate by angle (radians), zoom, then shift (pixels)."""
    angle, zoom = np.broadcast_to(angle, n), np.broadcast_to(zoom, n)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    m = np.empty((n, 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    shift = np.stack([np.broadcast_to(shift_r, n), np.broadcast_to(shift_c, n)], axis=1)
    m[:, :, 2] = -np.einsum("nij,nj->ni", m[:, :, :2], shift)
    return m


@_batch_op
def flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal mirror (opt-in: it changes a character's identity)."""
    return x[..., ::-1]


@_batch_op
def rotate(x: np.ndarray, rng: np.random.Generator, max_degrees: float = 15.0) -> np.ndarray:
    """Rotation by a uniform angle in [-max_degrees, max_degrees] about the centre."""
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, len(x)))
    return _affine(x, _matrices(len(x), angle=angle))


@_batch_op
def scale(x: np.ndarray, rng: np.random.Generator, low: float = 0.85, high: float = 1.15) -> np.ndarray:
    """Zoom about the centre by a uniform factor in [low, high] (< 1 shrinks)."""
    return _affine(x, _matrices(len(x), zoom=rng.uniform(low, high, len(x))))


@_batch_op
def crop(x: np.ndarray, rng: np.random.Generator, min_fraction: float = 0.75) -> np.ndarray:
    """Random crop keeping a fraction in [min_fraction, 1) of each side, resized back to H x W."""
    n, h, w = len(x), *x.shape[-2:]
    fraction = rng.uniform(min_fraction, 1.0, n)
    # The crop window's centre may sit anywhere that keeps the window inside the image.
    slack_r, slack_c = (1 - fraction) * (h - 1) / 2, (1 - fraction) * (w - 1) / 2
    centre_r, centre_c = rng.uniform(-1, 1, n) * slack_r, rng.uniform(-1, 1, n) * slack_c
    inverse = _matrices(n, zoom=1.0 / fraction)
    inverse[:, :, 2] = np.stack([centre_r, centre_c], axis=1)
    return _affine(x, inverse)


@_batch_op
def translate(x: np.ndarray, rng: np.random.Generator, max_fraction: float = 0.1) -> np.ndarray:
    """Shift by up to max_fraction of the height / width in each direction."""
    n, h, w = len(x), *x.shape[-2:]
    dr = rng.uniform(-max_fraction, max_fraction, n) * h
    dc = rng.uniform(-max_fraction, max_fraction, n) * w
    return _affine(x, _matrices(n, shift_r=dr, shift_c=dc))


@_batch_op
def gaussian_noise(x: np.ndarray, rng: np.random.Generator, sigma: float = 0.05) -> np.ndarray:
    """Adds N(0, sigma^2) noise (sigma as a fraction of the full range), clipped back to range."""
    return x + rng.normal(0.0, sigma, x.shape)


IMAGE_OPS: dict[str, Callable[..., np.ndarray]] = {
    "flip": flip,
    "rotate": rotate,
    "scale": scale,
    "crop": crop,
    "translate": translate,
    "noise": gaussian_noise,
}
# The paper's image augmentation (+3.1 points for MobileNet): crop, rotation, translation.
DEFAULT_IMAGE_OPS = ("crop", "rotate", "translate")


def augment_images(x: np.ndarray, y: np.ndarray, ratio: float = 1.0,
                   rng: np.random.Generator | int | None = None,
                   ops: Sequence[str] = DEFAULT_IMAGE_OPS) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) followed by round-down(ratio x len(x)) augmented copies of random samples.

    Each copy gets one op drawn from ops, keeps its source's label, and the source samples
    are drawn without replacement while ratio <= 1 (the paper's cap: at most 1x).
    """
    x, y = np.asarray(x), np.asarray(y)
    unknown = [op for op in ops if op not in IMAGE_OPS]
    if unknown or not ops:
        raise ValueError(f"unknown image augmentation op(s) {unknown or list(ops)!r}; known: {sorted(IMAGE_OPS)}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} images, {len(y)} labels")
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    check_image_batch(x)
    rng = np.random.default_rng(rng)
    count = int(ratio * len(x))
    sources = rng.choice(len(x), size=count, replace=count > len(x))
    chosen_ops = rng.integers(len(ops), size=count)
    new_x = np.empty((count, *x.shape[1:]), dtype=x.dtype)
    for k, name in enumerate(ops):
        picked = np.flatnonzero(chosen_ops == k)
        if picked.size:
            new_x[picked] = IMAGE_OPS[name](x[sources[picked]], rng)
    return np.concatenate([x, new_x]), np.concatenate([y, y[sources]])
