"""Tests for skunetseg.augment (NumPy and OpenCV only, tiny arrays)."""

import cv2
import numpy as np
import pytest
from sklearn.base import clone

from skunetseg.augment import AUGMENT_PRESETS, Augmenter, resolve_augmenter

ALL_PARAMETERS = {
    "hflip_p", "vflip_p", "rotate90_p", "shift_scale_rotate_p", "rotate_limit",
    "scale_limit", "shift_limit", "crop_size", "brightness_limit", "contrast_limit",
    "brightness_contrast_p",
}


def shapes_batch(n_images=8, size=64):
    """Images whose channel 0 holds a filled rectangle and a disc, with one-hot masks.

    The shapes stay well inside the image so that no transform of the tests moves
    them across the border (where the image is reflected but the mask filled).
    Channels 1 and 2 of the images hold noise, to check that channels stay apart.
    """
    rng = np.random.default_rng(0)
    images = rng.random((n_images, size, size, 3), dtype=np.float32)
    shape = np.zeros((size, size), dtype=np.uint8)
    cv2.rectangle(shape, (20, 18), (34, 29), color=1, thickness=-1)
    cv2.circle(shape, (38, 40), radius=7, color=1, thickness=-1)
    images[..., 0] = shape
    masks = np.stack([1 - shape, shape], axis=-1).astype(np.float32)
    return images, np.repeat(masks[np.newaxis], n_images, axis=0)


def boundary_band(mask):
    """Pixels within one pixel of the edge of a binary mask."""
    kernel = np.ones((3, 3), dtype=np.uint8)
    mask = mask.astype(np.uint8)
    return cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)


def test_shift_scale_rotate_keeps_mask_on_the_shape():
    images, masks = shapes_batch()
    augmenter = Augmenter(hflip_p=0.0, vflip_p=0.0, shift_scale_rotate_p=1.0)
    new_images, new_masks = augmenter.augment_batch(images, masks, random_state=0)

    assert new_images.dtype == new_masks.dtype == np.float32
    assert new_images.shape == images.shape and new_masks.shape == masks.shape
    assert not np.array_equal(new_masks, masks)  # the transforms did something
    for image, mask in zip(new_images, new_masks, strict=True):
        shape_in_image = image[..., 0] > 0.5
        shape_in_mask = mask[..., 1] == 1
        # Bilinear (image) and nearest-neighbour (mask) interpolation may round the
        # edge pixels differently: disagreement is allowed only on the shapes' edge.
        disagreement = shape_in_image != shape_in_mask
        assert not (disagreement & ~boundary_band(shape_in_mask)).any()
        assert disagreement.sum() < 0.2 * boundary_band(shape_in_mask).sum()


def test_masks_keep_their_values_and_stay_one_hot():
    images, masks = shapes_batch()
    augmenter = Augmenter(shift_scale_rotate_p=1.0, rotate90_p=1.0, rotate_limit=45,
                          scale_limit=0.3, shift_limit=0.3)
    _, new_masks = augmenter.augment_batch(images, masks, 1, mask_fill=[1, 0])
    assert set(np.unique(new_masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(new_masks.sum(axis=-1), 1)


@pytest.mark.parametrize("n_channels", [2, 6])
def test_mask_fill_fills_the_uncovered_border(n_channels):
    # every pixel belongs to the last class; what a large shift uncovers must be class 0
    images = np.ones((4, 32, 32, 5), dtype=np.float32) * np.arange(5, dtype=np.float32)
    masks = np.zeros((4, 32, 32, n_channels), dtype=np.float32)
    masks[..., -1] = 1
    background = np.eye(n_channels)[0]
    augmenter = Augmenter(hflip_p=0.0, vflip_p=0.0, shift_scale_rotate_p=1.0,
                          rotate_limit=0, scale_limit=0.0, shift_limit=0.5)
    new_images, new_masks = augmenter.augment_batch(images, masks, 2, mask_fill=background)

    np.testing.assert_array_equal(new_masks.sum(axis=-1), 1)
    filled = new_masks[..., 0] == 1
    assert filled.any() and (new_masks[..., -1] == 1).any()
    assert set(np.unique(new_masks)) <= {0.0, 1.0}
    # the image border is reflected: each constant channel stays constant, in order
    np.testing.assert_allclose(new_images, images, atol=1e-5)


def test_default_mask_fill_is_zero():
    images = np.zeros((2, 32, 32, 1), dtype=np.float32)
    masks = np.ones((2, 32, 32, 1), dtype=np.float32)
    augmenter = Augmenter(shift_scale_rotate_p=1.0, rotate_limit=0, scale_limit=0.0,
                          shift_limit=0.5)
    _, new_masks = augmenter.augment_batch(images, masks, 2)
    assert (new_masks == 0).any() and (new_masks == 1).any()


@pytest.mark.parametrize(
    "hflip_p, vflip_p, expected",
    [
        (1.0, 0.0, lambda a: a[:, :, ::-1]),
        (0.0, 1.0, lambda a: a[:, ::-1]),
        (1.0, 1.0, lambda a: a[:, ::-1, ::-1]),
        (0.0, 0.0, lambda a: a),
    ],
)
def test_flips_are_exact(hflip_p, vflip_p, expected):
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 48, 2), dtype=np.float32)
    masks = (rng.random((3, 32, 48, 3)) > 0.5).astype(np.float32)
    augmenter = Augmenter(hflip_p=hflip_p, vflip_p=vflip_p)
    new_images, new_masks = augmenter.augment_batch(images, masks, 0)
    np.testing.assert_array_equal(new_images, expected(images))
    np.testing.assert_array_equal(new_masks, expected(masks))


def test_rotate90_rotates_image_and_mask_alike():
    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 32, 1), dtype=np.float32)
    masks = images.copy()
    augmenter = Augmenter(hflip_p=0.0, vflip_p=0.0, rotate90_p=1.0)
    new_images, new_masks = augmenter.augment_batch(images, masks, 0)
    np.testing.assert_array_equal(new_images, new_masks)
    turns = []
    for image, new_image in zip(images, new_images, strict=True):
        matches = [k for k in range(4) if np.array_equal(np.rot90(image, k), new_image)]
        assert len(matches) == 1 and matches[0] != 0
        turns.append(matches[0])
    assert set(turns) == {1, 2, 3}


def test_rotate90_is_skipped_on_non_square_images():
    images = np.random.default_rng(0).random((4, 32, 48, 1), dtype=np.float32)
    augmenter = Augmenter(hflip_p=0.0, vflip_p=0.0, rotate90_p=1.0)
    new_images, _ = augmenter.augment_batch(images, images, 0)
    np.testing.assert_array_equal(new_images, images)


def test_crop_size_gives_the_same_crop_of_image_and_mask():
    n_images, height, width = 6, 32, 40
    ramp = np.arange(height * width, dtype=np.float32).reshape(1, height, width, 1)
    images = np.repeat(ramp, n_images, axis=0)
    augmenter = Augmenter(hflip_p=0.0, vflip_p=0.0, crop_size=(16, 24))
    new_images, new_masks = augmenter.augment_batch(images, images.copy(), 0)

    assert new_images.shape == new_masks.shape == (n_images, 16, 24, 1)
    np.testing.assert_array_equal(new_images, new_masks)
    tops_lefts = set()
    for crop in new_images:
        top, left = divmod(int(crop[0, 0, 0]), width)
        np.testing.assert_array_equal(crop, ramp[0, top:top + 16, left:left + 24])
        tops_lefts.add((top, left))
    assert len(tops_lefts) > 1  # a random crop, not always the same window


def test_crop_size_larger_than_the_images_is_rejected():
    images = np.zeros((1, 16, 16, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="crop_size"):
        Augmenter(crop_size=(8, 32)).augment_batch(images, images, 0)


def test_brightness_contrast_changes_images_only():
    images, masks = shapes_batch(n_images=4)
    augmenter = Augmenter(hflip_p=0.0, vflip_p=0.0, brightness_contrast_p=1.0,
                          brightness_limit=0.2, contrast_limit=0.2)
    new_images, new_masks = augmenter.augment_batch(images, masks, 0)
    np.testing.assert_array_equal(new_masks, masks)
    assert not np.allclose(new_images, images)
    # contrast scales about the image mean and brightness adds a constant: the
    # change is affine per image, so relative differences between pixels survive
    for image, new_image in zip(images, new_images, strict=True):
        slope, intercept = np.polyfit(image.ravel(), new_image.ravel(), 1)
        np.testing.assert_allclose(new_image, slope * image + intercept, atol=1e-4)


def test_inputs_are_not_modified():
    images, masks = shapes_batch(n_images=2)
    images_before, masks_before = images.copy(), masks.copy()
    Augmenter(hflip_p=1.0, shift_scale_rotate_p=1.0).augment_batch(images, masks, 0)
    np.testing.assert_array_equal(images, images_before)
    np.testing.assert_array_equal(masks, masks_before)


def test_random_state_makes_results_reproducible():
    images, masks = shapes_batch()
    augmenter = Augmenter(shift_scale_rotate_p=0.5, rotate90_p=0.5, crop_size=(48, 48),
                          brightness_contrast_p=0.5, brightness_limit=0.1)
    first = augmenter.augment_batch(images, masks, 3)
    again = augmenter.augment_batch(images, masks, 3)
    other = augmenter.augment_batch(images, masks, 4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])

    from_generator = augmenter.augment_batch(images, masks, np.random.default_rng(3))
    again_generator = augmenter.augment_batch(images, masks, np.random.default_rng(3))
    np.testing.assert_array_equal(from_generator[0], again_generator[0])

    state = np.random.RandomState(3)
    epoch_1 = augmenter.augment_batch(images, masks, state)
    epoch_2 = augmenter.augment_batch(images, masks, state)
    assert not np.array_equal(epoch_1[0], epoch_2[0])  # a shared state advances
    np.testing.assert_array_equal(
        epoch_1[0], augmenter.augment_batch(images, masks, np.random.RandomState(3))[0]
    )


def test_get_params_lists_every_parameter_and_clone_works():
    augmenter = Augmenter(rotate_limit=15, crop_size=(32, 32))
    assert set(augmenter.get_params()) == ALL_PARAMETERS
    cloned = clone(augmenter)
    assert cloned.get_params() == augmenter.get_params()


@pytest.mark.parametrize(
    "name, value",
    [
        ("hflip_p", 1.5),
        ("vflip_p", -0.1),
        ("rotate90_p", "often"),
        ("shift_scale_rotate_p", None),
        ("brightness_contrast_p", True),
        ("rotate_limit", -5),
        ("rotate_limit", 270),
        ("scale_limit", 1.0),
        ("shift_limit", 2.0),
        ("brightness_limit", -0.1),
        ("contrast_limit", 1.5),
        ("crop_size", 32),
        ("crop_size", (32, 0)),
        ("crop_size", (32, 32, 3)),
        ("crop_size", (32.0, 32)),
    ],
)
def test_invalid_parameters_raise_naming_the_parameter(name, value):
    images = np.zeros((1, 16, 16, 1), dtype=np.float32)
    augmenter = Augmenter(**{name: value})  # accepted until used
    with pytest.raises(ValueError, match=f"'{name}'"):
        augmenter.augment_batch(images, images, 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"masks": np.zeros((1, 16, 8, 1))}, ValueError, "same number of images"),
        ({"images": np.zeros((16, 16, 1))}, ValueError, "images must have shape"),
        ({"images": np.zeros((1, 16, 16, 1), dtype=complex)}, TypeError, "real numbers"),
        ({"mask_fill": [1, 0, 0]}, ValueError, "mask_fill"),
        ({"mask_fill": [np.nan, 0]}, ValueError, "mask_fill"),
        ({"random_state": "seed"}, ValueError, "random_state"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    arguments = {
        "images": np.zeros((1, 16, 16, 1)),
        "masks": np.zeros((1, 16, 16, 2)),
        "random_state": 0,
    }
    with pytest.raises(error, match=match):
        Augmenter().augment_batch(**{**arguments, **kwargs})


@pytest.mark.parametrize("name", sorted(AUGMENT_PRESETS))
def test_resolve_augmenter_presets(name):
    augmenter = resolve_augmenter(name)
    assert isinstance(augmenter, Augmenter)
    params = augmenter.get_params()
    assert all(params[key] == value for key, value in AUGMENT_PRESETS[name].items())
    assert resolve_augmenter(name) is not augmenter  # a fresh instance each time


def test_resolve_augmenter_preset_values():
    assert resolve_augmenter("flips").get_params() == Augmenter().get_params()
    assert resolve_augmenter("d4").rotate90_p == 0.5
    seed = resolve_augmenter("seed")
    assert (seed.shift_scale_rotate_p, seed.rotate_limit, seed.scale_limit, seed.shift_limit) == (
        0.5, 30, 0.1, 0.0625
    )


def test_resolve_augmenter_none_and_instance():
    assert resolve_augmenter(None) is None
    augmenter = Augmenter(hflip_p=0.0)
    assert resolve_augmenter(augmenter) is augmenter


@pytest.mark.parametrize("augment", ["rotate", 3, ["flips"], True])
def test_resolve_augmenter_rejects_unknown_values(augment):
    with pytest.raises(ValueError, match=r"'augment'.*'d4', 'flips', 'seed'"):
        resolve_augmenter(augment)
