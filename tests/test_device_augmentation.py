"""On-device augmentation through `augment`: at most ratio x the data, labels kept, ids valid."""
import numpy as np
import pytest

from device_runtime.augmentation import AUGMENTATION_KINDS, augment_user_data

VOCAB = ["<pad>", "<unk>", "the", "happy", "dog", "runs", "quickly", "big", "car", "house", "eats", "food",
         "glad", "large", "home"]
TABLE = {"happy": ["glad"], "big": ["large"], "house": ["home"], "car": ["motorcar"]}  # motorcar: outside


def _tokens(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).integers(2, 12, size=(n, 5)).astype(np.int64)
    x[:3, :2] = 0
    return x, np.arange(n, dtype=np.int64)


def test_kinds_are_data_kinds():
    assert AUGMENTATION_KINDS == ("images", "text")


@pytest.mark.parametrize("synonyms", [None, TABLE], ids=["wordnet", "table"])
def test_text_copies_keep_their_label_and_stay_in_the_vocabulary(synonyms):
    x, y = _tokens()
    ax, ay = augment_user_data(x, y, "text", ratio=0.5, seed=3, vocab=VOCAB, synonyms=synonyms)
    assert 12 < len(ax) <= 18 and ax.dtype == np.int64 and ax.shape[1] == 5
    np.testing.assert_array_equal(ax[:12], x)
    assert ax.min() >= 0 and ax.max() < len(VOCAB)
    for row, label in zip(ax[12:], ay[12:]):
        assert not np.array_equal(row, x[label])  # a changed copy of the sample whose label it keeps
    again = augment_user_data(x, y, "text", ratio=0.5, seed=3, vocab=VOCAB, synonyms=synonyms)
    np.testing.assert_array_equal(again[0], ax)  # the same seed gives the same copies (resumable)


def test_table_synonyms_map_to_their_ids_and_outside_words_to_unk():
    x, y = _tokens()
    ax, _ = augment_user_data(x, y, "text", ratio=1.0, seed=1, vocab=VOCAB, synonyms=TABLE)
    added = set(ax[12:].ravel()) - set(x.ravel())
    assert added and added <= {VOCAB.index(w) for w in ("glad", "large", "home", "<unk>")}


def test_pad_and_unk_ids_come_from_the_bundle():
    vocab = ["<unk>", "<pad>", "happy", "dog", "car"]
    x = np.array([[1, 0, 2, 3], [1, 4, 3, 2]], dtype=np.int64)  # <unk> is a word, <pad> is not
    ax, ay = augment_user_data(x, np.array([0, 1]), "text", ratio=1.0, seed=0, vocab=vocab,
                               synonyms={"happy": ["glad"], "car": ["auto"]}, pad_id=1, unk_id=0)
    np.testing.assert_array_equal(ax[2:], [[1, 0, 0, 3], [1, 0, 3, 2]])  # glad/auto are <unk> (0)
    np.testing.assert_array_equal(ay, [0, 1, 0, 1])


def test_image_copies():
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 28, 28), dtype=np.float32)
    y = np.arange(10, dtype=np.int64)
    ax, ay = augment_user_data(x, y, "images", ratio=1.0, seed=0)
    assert ax.shape == (20, 1, 28, 28) and ax.dtype == np.float32 and 0 <= ax.min() and ax.max() <= 1
    np.testing.assert_array_equal(np.sort(ay[10:]), y)  # ratio 1: each sample copied once


def test_ratio_zero_bounds_and_kinds():
    x, y = np.zeros((4, 3), np.int64), np.zeros(4, np.int64)
    assert augment_user_data(x, y, "text", ratio=0, seed=0, vocab=VOCAB)[0] is x
    assert augment_user_data(x, y, None, ratio=0, seed=0)[0] is x
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        augment_user_data(x, y, "text", ratio=1.5, seed=0, vocab=VOCAB)
    with pytest.raises(ValueError, match="this bundle has no augmentation"):
        augment_user_data(x, y, None, ratio=0.5, seed=0)
    with pytest.raises(ValueError, match="unknown augmentation kind 'nwp'"):
        augment_user_data(x, y, "nwp", ratio=0.5, seed=0, vocab=VOCAB)
    with pytest.raises(ValueError, match="vocabulary"):
        augment_user_data(x, y, "text", ratio=0.5, seed=0)
    with pytest.raises(ValueError, match="int token ids"):
        augment_user_data(x.astype(np.float32), y, "text", ratio=0.5, seed=0, vocab=VOCAB)
