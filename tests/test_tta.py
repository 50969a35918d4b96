"""Tests for skunetseg.tta (NumPy only, tiny arrays)."""

import numpy as np
import pytest

from skunetseg.tta import (
    D4_NAMES,
    MERGE_METHODS,
    Dihedral,
    Shift,
    merge_predictions,
    predict_with_tta,
    resolve_tta,
)

FLIP_NAMES = ("identity", "hflip", "vflip", "rot180")
SHIFTS = [Shift(10, 0), Shift(-10, 0), Shift(0, 10), Shift(0, -10), Shift(3, -7)]
CIRCULAR_SHIFTS = [Shift(s.dy, s.dx, mode="circular") for s in SHIFTS]


def random_batch(height=24, width=24, n_images=3, n_channels=2, seed=0):
    return np.random.default_rng(seed).random((n_images, height, width, n_channels),
                                              dtype=np.float32)


def sigmoid(images):
    """A per-pixel model: equivariant under every transform."""
    return (1 / (1 + np.exp(-4 * (images - 0.5)))).astype(np.float32)


class CountingModel:
    """Wraps a predict function and records the batch size of each call."""

    def __init__(self, predict_fn=sigmoid):
        self.predict_fn = predict_fn
        self.batch_sizes = []

    def __call__(self, images):
        self.batch_sizes.append(len(images))
        return self.predict_fn(images)


@pytest.mark.parametrize("name", D4_NAMES)
def test_d4_inverse_undoes_forward_exactly(name):
    transform = Dihedral(name)
    batch = random_batch()
    np.testing.assert_array_equal(transform.inverse(transform.forward(batch)), batch)


def test_d4_transforms_are_the_eight_distinct_symmetries():
    image = random_batch(n_images=1)
    views = [Dihedral(name).forward(image) for name in D4_NAMES]
    assert all(
        not np.array_equal(views[i], views[j]) for i in range(8) for j in range(i + 1, 8)
    )
    x = image[0]
    np.testing.assert_array_equal(Dihedral("hflip").forward(image)[0], x[:, ::-1])
    np.testing.assert_array_equal(Dihedral("vflip").forward(image)[0], x[::-1])
    np.testing.assert_array_equal(Dihedral("rot180").forward(image)[0], x[::-1, ::-1])
    np.testing.assert_array_equal(Dihedral("rot90").forward(image)[0], np.rot90(x))
    np.testing.assert_array_equal(Dihedral("rot270").forward(image)[0], np.rot90(x, 3))
    np.testing.assert_array_equal(Dihedral("transpose").forward(image)[0], x.transpose(1, 0, 2))
    np.testing.assert_array_equal(
        Dihedral("antitranspose").forward(image)[0], x[::-1, ::-1].transpose(1, 0, 2)
    )


@pytest.mark.parametrize("name", FLIP_NAMES)
def test_flips_invert_exactly_on_non_square_images(name):
    transform = Dihedral(name)
    assert not transform.requires_square
    batch = random_batch(height=16, width=40)
    np.testing.assert_array_equal(transform.inverse(transform.forward(batch)), batch)


@pytest.mark.parametrize("shape", [(24, 24), (16, 40)])
@pytest.mark.parametrize("transform", CIRCULAR_SHIFTS, ids=repr)
def test_circular_shift_inverts_exactly(transform, shape):
    batch = random_batch(*shape)
    shifted = transform.forward(batch)
    assert not np.array_equal(shifted, batch)
    np.testing.assert_array_equal(transform.inverse(shifted), batch)


@pytest.mark.parametrize("transform", SHIFTS, ids=repr)
def test_reflect_shift_inverts_exactly_away_from_the_border(transform):
    batch = random_batch(height=32, width=40)
    restored = transform.inverse(transform.forward(batch))
    assert restored.shape == batch.shape
    dy, dx = abs(transform.dy), abs(transform.dx)
    interior = (slice(None), slice(dy, 32 - dy), slice(dx, 40 - dx))
    np.testing.assert_array_equal(restored[interior], batch[interior])


def test_reflect_shift_moves_content_and_mirrors_the_border():
    row = np.arange(6, dtype=np.float32).reshape(1, 1, 6, 1)
    np.testing.assert_array_equal(Shift(0, 2).forward(row).ravel(), [2, 1, 0, 1, 2, 3])
    np.testing.assert_array_equal(Shift(0, -2).forward(row).ravel(), [2, 3, 4, 5, 4, 3])
    np.testing.assert_array_equal(
        Shift(0, 2, mode="circular").forward(row).ravel(), [4, 5, 0, 1, 2, 3]
    )


def test_transforms_have_readable_names():
    assert repr(Dihedral("hflip")) == "Dihedral(name='hflip')"
    assert repr(Shift(10, -10)) == "Shift(dy=10, dx=-10, mode='reflect')"
    assert Dihedral("rot90").requires_square and not Shift(1, 1).requires_square


@pytest.mark.parametrize("merge", MERGE_METHODS)
@pytest.mark.parametrize(
    "transform", [*(Dihedral(name) for name in D4_NAMES), *CIRCULAR_SHIFTS], ids=repr
)
def test_equivariant_model_gives_the_plain_prediction(transform, merge):
    images = random_batch(n_images=4, n_channels=3)
    merged = predict_with_tta(sigmoid, images, [transform], merge=merge)
    assert merged.dtype == np.float32
    np.testing.assert_array_equal(merged, sigmoid(images))


@pytest.mark.parametrize("merge", MERGE_METHODS)
@pytest.mark.parametrize("tta", [None, "flips", "d4", ["identity", ("shift", 10, 0, "circular")]])
def test_equivariant_model_gives_the_plain_prediction_for_presets(tta, merge):
    images = random_batch(n_images=5)
    np.testing.assert_array_equal(predict_with_tta(sigmoid, images, tta, merge), sigmoid(images))


def test_reflect_shifts_give_the_plain_prediction_for_a_pointwise_model():
    # the reflected border strip of the inverse holds predictions of mirrored
    # pixels: a per-pixel model sees them too, so only the interior is compared
    images = random_batch(height=32, width=32)
    merged = predict_with_tta(sigmoid, images, ["identity", ("shift", 10, 0), ("shift", 0, -10)])
    np.testing.assert_array_equal(merged[:, :22, 10:], sigmoid(images)[:, :22, 10:])
    assert not np.array_equal(merged, sigmoid(images))


@pytest.mark.parametrize("batch_images, expected_calls", [(None, [8 * 5]), (2, [16, 16, 8]),
                                                          (5, [40]), (10, [40])])
def test_predict_fn_is_called_once_per_chunk_with_all_views(batch_images, expected_calls):
    images = random_batch(n_images=5)
    model = CountingModel()
    merged = predict_with_tta(model, images, "d4", batch_images=batch_images)
    assert model.batch_sizes == expected_calls
    assert merged.shape == (5, 24, 24, 2)
    np.testing.assert_array_equal(merged, sigmoid(images))


def test_views_are_inverted_before_merging():
    # a model that is not equivariant: a horizontal ramp added to the image
    images = random_batch(n_images=2, n_channels=1)
    ramp = np.linspace(0, 1, 24, dtype=np.float32).reshape(1, 1, 24, 1)
    merged = predict_with_tta(lambda x: x + ramp, images, ["identity", "hflip"])
    # hflip's view sees the ramp reversed relative to the image: the mean is flat
    np.testing.assert_allclose(merged, images + 0.5, atol=1e-6)


def test_predict_with_tta_output_channels_may_differ_from_input():
    images = random_batch(n_images=3, n_channels=3)
    merged = predict_with_tta(lambda x: sigmoid(x[..., :1]), images, "flips", batch_images=2)
    np.testing.assert_array_equal(merged, sigmoid(images[..., :1]))


def test_merge_predictions_on_hand_computed_values():
    stack = np.array([0.25, 1.0, 0.5, 0.0], dtype=np.float32).reshape(4, 1, 1, 1, 1)
    pairs = stack[:2]
    np.testing.assert_allclose(merge_predictions(pairs, "mean").ravel(), [0.625])
    np.testing.assert_allclose(merge_predictions(pairs, "gmean").ravel(), [0.5], rtol=1e-6)
    np.testing.assert_array_equal(merge_predictions(pairs, "max").ravel(), [1.0])
    # a zero is clipped to 1e-7 before the logarithm: (0.25 * 1 * 0.5 * 1e-7) ** (1 / 4)
    np.testing.assert_allclose(
        merge_predictions(stack, "gmean").ravel(), [(0.125e-7) ** 0.25], rtol=1e-5
    )
    np.testing.assert_allclose(merge_predictions(stack, "mean").ravel(), [0.4375])
    for how in MERGE_METHODS:
        merged = merge_predictions(stack, how)
        assert merged.dtype == np.float32 and merged.shape == (1, 1, 1, 1)


def test_resolve_tta_presets():
    assert resolve_tta(None, 16, 40) == [Dihedral("identity")]
    assert resolve_tta("flips", 16, 40) == [Dihedral(name) for name in FLIP_NAMES]
    assert resolve_tta("d4", 32, 32) == [Dihedral(name) for name in D4_NAMES]


def test_resolve_tta_lists():
    transforms = resolve_tta(
        ["identity", Dihedral("hflip"), ("shift", 10, 0), ("shift", 0, -10, "circular"),
         Shift(1, 2)],
        16, 40,
    )
    assert transforms == [Dihedral("identity"), Dihedral("hflip"), Shift(10, 0),
                          Shift(0, -10, "circular"), Shift(1, 2)]


@pytest.mark.parametrize("tta", ["d4", ["identity", "rot90"], [Dihedral("transpose")]])
def test_resolve_tta_needs_square_images_for_rotations(tta):
    with pytest.raises(ValueError, match=r"square images.*tta='flips'"):
        resolve_tta(tta, 16, 40)


@pytest.mark.parametrize(
    "tta, match",
    [
        ("rotations", "'tta' parameter must be"),
        ("hflip", "'tta' parameter must be"),
        ([], "'tta' parameter must be"),
        (3, "'tta' parameter must be"),
        (["identity", "mirror"], "'mirror'"),
        ([("shift", 10)], r"\('shift', 10\)"),
        ([("shift", 1.5, 0)], "dy must be an integer"),
        ([("shift", 1, 0, "wrap")], "mode must be one of"),
    ],
)
def test_resolve_tta_rejects_bad_values(tta, match):
    with pytest.raises(ValueError, match=match):
        resolve_tta(tta, 32, 32)


def test_bad_transform_arguments():
    with pytest.raises(ValueError, match="Dihedral name"):
        Dihedral("rot45")
    with pytest.raises(ValueError, match="dx must be an integer"):
        Shift(0, True)
    with pytest.raises(ValueError, match="mode"):
        Shift(0, 1, mode="constant")


@pytest.mark.parametrize("how", ["median", None, "MEAN"])
def test_bad_merge_is_rejected(how):
    stack = np.zeros((2, 1, 4, 4, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="tta_merge"):
        merge_predictions(stack, how)
    model = CountingModel()
    with pytest.raises(ValueError, match="tta_merge"):
        predict_with_tta(model, stack[0], "flips", merge=how)
    assert model.batch_sizes == []  # checked before predicting


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": np.zeros((4, 4, 1))}, "images must have shape"),
        ({"images": np.zeros((0, 4, 4, 1))}, "no images"),
        ({"batch_images": 0}, "batch_images"),
        ({"batch_images": 1.5}, "batch_images"),
        ({"predict_fn": lambda x: x[:1]}, "predict_fn must return"),
        ({"predict_fn": lambda x: x[..., 0]}, "predict_fn must return"),
    ],
)
def test_predict_with_tta_rejects_bad_arguments(kwargs, match):
    arguments = {"predict_fn": sigmoid, "images": np.zeros((2, 4, 4, 1)), "transforms": "flips"}
    with pytest.raises(ValueError, match=match):
        predict_with_tta(**{**arguments, **kwargs})


def test_merge_predictions_rejects_bad_stacks():
    with pytest.raises(ValueError, match="stack must have shape"):
        merge_predictions(np.zeros((2, 4, 4, 1)), "mean")


@pytest.mark.parametrize("shift", [("shift", 10**9, 0), ("shift", 0, -48), ("shift", 32, 0),
                                   ("shift", 0, 48, "circular"), Shift(-32, 0)])
def test_shifts_as_large_as_the_image_are_refused_naming_tta(shift):
    """A shift of 10**9 rows would pad the batch to 954 GiB (issue 23): the size is checked
    against the images (32x48) before any view is made."""
    with pytest.raises(ValueError, match="'tta' parameter holds Shift.*32x48"):
        resolve_tta(["identity", shift], 32, 48)
    assert len(resolve_tta(["identity", ("shift", 31, -47)], 32, 48)) == 2
