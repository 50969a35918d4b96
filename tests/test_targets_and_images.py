import numpy as np
import pytest

from skunetseg._images import check_images, pad_to_multiple
from skunetseg._targets import decode_masks, encode_targets, fit_target_encoding


@pytest.mark.parametrize("y, kind, classes", [
    (np.array([[[0, 1]]], dtype=np.uint8), "binary", [0, 1]),
    (np.array([[[0, 255]]], dtype=np.uint8), "binary", [0, 255]),
    (np.array([[[False, True]]]), "binary", [False, True]),
    (np.zeros((1, 1, 2), dtype=np.uint8), "binary", [0, 1]),
    (np.array([[[0, 1, 2]]]), "multiclass", [0, 1, 2]),
    (np.zeros((1, 1, 2, 3), dtype=np.uint8), "multilabel", [0, 1, 2]),
])
def test_target_type_is_recognised(y, kind, classes):
    encoding = fit_target_encoding(y)
    assert encoding.target_type == kind
    assert encoding.classes.tolist() == classes


@pytest.mark.parametrize("y", [
    np.array([[[0, 255], [255, 0]]], dtype=np.uint8),
    np.array([[[0, 255], [255, 0]]], dtype=np.uint8)[..., None],
    np.array([[[3, 5], [7, 3]]]),
    np.array([[[[0, 1], [1, 1]], [[0, 0], [1, 0]]]], dtype=np.uint8),
])
def test_encode_then_decode_gives_back_the_targets(y):
    encoding = fit_target_encoding(y)
    encoded = encode_targets(y, encoding)
    decoded = decode_masks(encoded > 0.5, encoding)
    assert decoded.shape == y.shape and decoded.dtype == y.dtype
    np.testing.assert_array_equal(decoded, y)


def test_targets_with_unknown_values_are_rejected():
    encoding = fit_target_encoding(np.array([[[0, 1]]]))
    with pytest.raises(ValueError, match=r"values \[2\] that are not among the classes"):
        encode_targets(np.array([[[0, 2]]]), encoding)
    with pytest.raises(ValueError, match="multilabel"):
        fit_target_encoding(np.full((1, 2, 2, 3), 2))
    with pytest.raises(ValueError, match="non-integer"):
        fit_target_encoding(np.full((1, 2, 2), 0.5))


def test_uint8_and_uint16_images_are_scaled_to_unit_range():
    assert check_images(np.full((1, 2, 2), 255, np.uint8)).max() == 1.0
    assert check_images(np.full((1, 2, 2), 65535, np.uint16)).max() == 1.0
    floats = check_images(np.full((1, 2, 2, 3), 7.5))
    assert floats.shape == (1, 2, 2, 3) and floats.dtype == np.float32 and floats.max() == 7.5


def test_padding_reflects_to_a_multiple_of_32():
    images = np.random.default_rng(0).random((2, 33, 40, 1)).astype(np.float32)
    padded = pad_to_multiple(images)
    assert padded.shape == (2, 64, 64, 1)
    np.testing.assert_array_equal(padded[:, :33, :40], images)
    np.testing.assert_array_equal(padded[:, 33, :40], images[:, 31])  # reflected row
    assert pad_to_multiple(padded) is padded
