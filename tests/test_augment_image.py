"""augment.image: numpy-only image ops and the at-most-ratio sampler."""
from __future__ import annotations

import numpy as np
import pytest

from augment.image import DEFAULT_IMAGE_OPS, IMAGE_OPS, augment_images, crop, flip, rotate, translate


def _characters(n: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 [n, 1, 28, 28]: an off-centre bar and a random blob each, asymmetric on purpose."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), np.uint8)
    x[:, 0, 6:22, 7:11] = 255
    x[:, 0, 10:18, 12:20] = rng.integers(60, 256, (n, 8, 8))
    return x


LAYOUTS = {
    "uint8 [n,1,H,W]": lambda x: x,
    "uint8 [n,H,W]": lambda x: x[:, 0],
    "float32 [n,1,H,W]": lambda x: (x / 255).astype(np.float32),
    "float64 [n,H,W]": lambda x: x[:, 0] / 255.0,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", IMAGE_OPS)
def test_op_keeps_shape_dtype_range_and_changes_pixels(name: str, layout: str) -> None:
    x = LAYOUTS[layout](_characters())
    out = IMAGE_OPS[name](x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    hi = 255 if x.dtype == np.uint8 else 1.0
    assert out.min() >= 0 and out.max() <= hi
    changed = np.abs(out.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    assert (changed > 0.02 * hi).all(), f"{name} left some images unchanged"


@pytest.mark.parametrize("name", IMAGE_OPS)
def test_op_is_deterministic_for_a_seed(name: str) -> None:
    x = _characters()
    a = IMAGE_OPS[name](x, np.random.default_rng(7))
    b = IMAGE_OPS[name](x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    if name != "flip":  # flip draws nothing
        assert not np.array_equal(a, IMAGE_OPS[name](x, np.random.default_rng(8)))


def test_zero_strength_geometry_is_identity() -> None:
    x = _characters()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(rotate(x, rng, max_degrees=0.0), x)
    np.testing.assert_array_equal(translate(x, rng, max_fraction=0.0), x)
    np.testing.assert_array_equal(crop(x, rng, min_fraction=1.0), x)
    np.testing.assert_array_equal(flip(flip(x, rng), rng), x)


def test_small_rotation_and_translation_keep_the_ink() -> None:
    x = np.zeros((3, 28, 28))
    x[:, 10:18, 11:17] = 1.0  # well inside the frame, so nothing leaves it
    for op in (rotate, translate):
        out = op(x, np.random.default_rng(3))
        np.testing.assert_allclose(out.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=0.03)


def test_crop_zooms_in() -> None:
    x = np.zeros((4, 28, 28))
    x[:, 12:16, 12:16] = 1.0
    out = crop(x, np.random.default_rng(0), min_fraction=0.6)
    assert (out.sum(axis=(1, 2)) > x.sum(axis=(1, 2))).all()


def test_augment_images_default_adds_at_most_1x_with_source_labels() -> None:
    x = _characters(10)
    y = np.arange(10)
    ax, ay = augment_images(x, y, rng=0, ops=("flip",))
    assert ax.shape == (20, 1, 28, 28) and ax.dtype == np.uint8 and ay.shape == (20,)
    np.testing.assert_array_equal(ax[:10], x)
    np.testing.assert_array_equal(ay[:10], y)
    np.testing.assert_array_equal(ax[10:], x[ay[10:]][..., ::-1])  # each copy is its labelled source, flipped
    assert len(set(ay[10:].tolist())) == 10  # ratio 1: every source at most once


@pytest.mark.parametrize("ratio, extra", [(0.0, 0), (0.35, 3), (1.0, 10), (2.0, 20)])
def test_augment_images_respects_ratio(ratio: float, extra: int) -> None:
    ax, ay = augment_images(_characters(10), np.arange(10), ratio=ratio, rng=1)
    assert len(ax) == len(ay) == 10 + extra


def test_augment_images_deterministic_and_defaults_skip_flip() -> None:
    x, y = _characters(8), np.arange(8)
    a = augment_images(x, y, rng=5)
    b = augment_images(x, y, rng=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert "flip" not in DEFAULT_IMAGE_OPS


@pytest.mark.parametrize("x, y, kwargs, message", [
    (np.zeros((2, 1, 3, 28, 28), np.uint8), np.zeros(2), {}, "shape"),
    (np.zeros((2, 28, 28), np.int32), np.zeros(2), {}, "dtype"),
    (np.full((2, 28, 28), 2.0), np.zeros(2), {}, r"\[0, 1\]"),
    (np.zeros((2, 28, 28), np.uint8), np.zeros(3), {}, "length"),
    (np.zeros((2, 28, 28), np.uint8), np.zeros(2), {"ops": ("warp",)}, "warp"),
    (np.zeros((2, 28, 28), np.uint8), np.zeros(2), {"ratio": -1}, "ratio"),
])
def test_augment_images_rejects_bad_input(x, y, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        augment_images(x, y, rng=0, **kwargs)


def test_colour_channels_move_together() -> None:
    """A 3-channel image whose channels are equal stays equal under every geometric op."""
    grey = _characters(4).astype(np.float32) / 255.0
    rgb = np.repeat(grey, 3, axis=1)
    for name in ("rotate", "crop", "translate", "scale", "flip"):
        out = IMAGE_OPS[name](rgb, np.random.default_rng(2))
        assert out.shape == rgb.shape
        np.testing.assert_array_equal(out[:, 0], out[:, 2])
        np.testing.assert_allclose(out[:, :1], IMAGE_OPS[name](grey, np.random.default_rng(2)), atol=1e-6)
