"""Input guards: wrong shape, dtype, non-finite values and out-of-range token ids are named."""
import numpy as np
import pytest

from device_runtime.guards import check_inputs, check_labels, is_finite


def test_good_inputs_pass():
    x = np.zeros((3, 10), dtype=np.int64)
    assert check_inputs(x, dtype="int64", shape=[None, 10], num_tokens=5) is x


@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 9), dtype=np.int64), r"shape \[3, 9\] does not match the bundle's \[\?, 10\]"),
    (np.zeros((3, 10), dtype=np.int32), "dtype int32 does not match the bundle's int64"),
    (np.full((2, 10), 5, dtype=np.int64), r"token ids must lie in \[0, 4\], found 5..5"),
    (np.full((2, 10), -1, dtype=np.int64), r"found -1..-1"),
    ([[1, 2]], "expected a numpy array"),
])
def test_bad_token_inputs_are_named(x, message):
    with pytest.raises(ValueError, match=message):
        check_inputs(x, dtype="int64", shape=[None, 10], num_tokens=5)


def test_non_finite_images_are_refused():
    x = np.zeros((2, 1, 4, 4), dtype=np.float32)
    x[1, 0, 2, 2] = np.nan
    x[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="2 non-finite"):
        check_inputs(x, dtype="float32", shape=[None, 1, 4, 4])


def test_labels():
    assert check_labels(np.array([0, 2], dtype=np.int32), 3).dtype == np.int64
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 2\]"):
        check_labels(np.array([3]), 3)
    with pytest.raises(ValueError, match="integer class ids"):
        check_labels(np.array([0.5]), 3)


def test_is_finite():
    assert is_finite(np.ones((3, 2), dtype=np.float32))
    assert not is_finite(np.array([1.0, np.nan], dtype=np.float32))
    assert not is_finite(np.array([-np.inf, 0.0]))
