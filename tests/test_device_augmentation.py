"""On-device augmentation through `augment`: at most ratio x the data, labels kept, ids valid."""
import numpy as np
import pytest

from device_runtime.augmentation import augment_user_data

VOCAB = ["<pad>", "<unk>", "the", "happy", "dog", "runs", "quickly", "big", "car", "house", "eats", "food"]


def test_text_copies_keep_their_label_and_stay_in_the_vocabulary():
    rng = np.random.default_rng(0)
    x = rng.integers(2, len(VOCAB), size=(12, 5)).astype(np.int64)
    x[:3, :2] = 0
    y = np.arange(12, dtype=np.int64)
    ax, ay = augment_user_data(x, y, "nwp", VOCAB, ratio=0.5, seed=3)
    assert 12 < len(ax) <= 18 and ax.dtype == np.int64 and ax.shape[1] == 5
    np.testing.assert_array_equal(ax[:12], x)
    assert ax.min() >= 0 and ax.max() < len(VOCAB)
    copies = ax[12:]
    for row, label in zip(copies, ay[12:]):
        assert not np.array_equal(row, x[label])  # a changed copy of the sample whose label it keeps
    again = augment_user_data(x, y, "nwp", VOCAB, ratio=0.5, seed=3)
    np.testing.assert_array_equal(again[0], ax)  # the same seed gives the same copies (resumable)


def test_image_copies():
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 28, 28), dtype=np.float32)
    y = np.arange(10, dtype=np.int64)
    ax, ay = augment_user_data(x, y, "image", [], ratio=1.0, seed=0)
    assert ax.shape == (20, 1, 28, 28) and ax.dtype == np.float32 and 0 <= ax.min() and ax.max() <= 1
    np.testing.assert_array_equal(np.sort(ay[10:]), y)  # ratio 1: each sample copied once


def test_ratio_zero_and_bounds():
    x, y = np.zeros((4, 3), np.int64), np.zeros(4, np.int64)
    assert augment_user_data(x, y, "nwp", VOCAB, ratio=0, seed=0)[0] is x
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        augment_user_data(x, y, "nwp", VOCAB, ratio=1.5, seed=0)
