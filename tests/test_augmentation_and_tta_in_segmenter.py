"""The augment and tta parameters of UNetSegmenter."""

import copy

import numpy as np
import pytest
from conftest import SMALL, synthetic_images

from skunetseg import UNetSegmenter
from skunetseg.augment import Augmenter
from skunetseg.tta import evaluate_tta


def _batches(augmenter, seed, targets=None, **kwargs):
    from skunetseg._batches import AugmentedBatches

    images, masks = synthetic_images(n=10, height=40, width=44, seed=5)
    images = images[..., None].astype(np.float32) / 255
    if targets is None:
        targets = masks[..., None].astype(np.float32)
    return AugmentedBatches(images, targets, augmenter=augmenter, batch_size=4,
                            prepare_images=lambda x: np.pad(x, ((0, 0), (0, 24), (0, 20),
                                                                (0, 0))),
                            mask_fill=np.zeros(targets.shape[-1], np.float32), seed=seed,
                            **kwargs)


def test_augmented_batches_are_reproducible_and_change_each_epoch():
    augmenter = Augmenter(shift_scale_rotate_p=1.0)
    first, second = _batches(augmenter, seed=3), _batches(augmenter, seed=3)
    assert len(first) == 3
    for index in range(len(first)):
        np.testing.assert_array_equal(first[index][0], second[index][0])
        np.testing.assert_array_equal(first[index][1], second[index][1])
    before = first[0][0]
    first.on_epoch_end()
    assert not np.array_equal(first[0][0], before)
    assert not np.array_equal(_batches(augmenter, seed=4)[0][0], before)


def test_every_image_is_used_once_per_epoch_and_masks_follow_images():
    batches = _batches(Augmenter(hflip_p=1.0, vflip_p=0.0), seed=0)
    images = np.concatenate([batches[i][0] for i in range(len(batches))])
    masks = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert images.shape == (10, 64, 64, 1) and masks.shape == (10, 64, 64, 1)
    # the synthetic discs are bright: the flipped mask still marks the bright pixels
    bright = images[:, :40, :44, 0] > (120 / 255)
    assert (bright == (masks[:, :40, :44, 0] > 0.5)).mean() > 0.95
    assert sorted(images[:, :40, :44].sum(axis=(1, 2, 3)).round(3).tolist()) == sorted(
        batches.images.sum(axis=(1, 2, 3)).round(3).tolist())


def test_multiclass_masks_stay_one_hot_with_background_fill():
    from skunetseg._batches import AugmentedBatches

    images = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 3, (4, 32, 32))
    targets = np.eye(3, dtype=np.float32)[labels]
    batches = AugmentedBatches(images, targets, augmenter=Augmenter(shift_scale_rotate_p=1.0,
                                                                    shift_limit=0.3),
                               batch_size=4, prepare_images=lambda x: x,
                               mask_fill=np.eye(3, dtype=np.float32)[0], seed=0)
    _, masks = batches[0]
    np.testing.assert_array_equal(masks.sum(axis=-1), 1)


@pytest.mark.slow
def test_fit_with_augmentation_and_crops_is_reproducible(binary_data):
    X, y = binary_data
    augment = Augmenter(crop_size=(32, 32), shift_scale_rotate_p=0.5)
    params = {**SMALL, "augment": augment, "random_state": 0}
    first = UNetSegmenter(**params).fit(X, y).predict_proba(X)
    second = UNetSegmenter(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (*X.shape, 1)  # predicts whole images, not crops


def with_params(fitted, **params):
    """A shallow copy of a fitted estimator (sharing its network) with other parameters."""
    return copy.copy(fitted).set_params(**params)


def test_tta_averages_the_flipped_views_mapped_back(fitted_binary, binary_data):
    X, _ = binary_data
    plain = fitted_binary.predict_proba(X)
    views = [plain,
             fitted_binary.predict_proba(X[:, :, ::-1])[:, :, ::-1],
             fitted_binary.predict_proba(X[:, ::-1])[:, ::-1],
             fitted_binary.predict_proba(X[:, ::-1, ::-1])[:, ::-1, ::-1]]
    flips = with_params(fitted_binary, tta="flips")
    np.testing.assert_allclose(flips.predict_proba(X), np.mean(views, axis=0), atol=1e-6)
    np.testing.assert_array_equal(flips.predict(X),
                                  (np.mean(views, axis=0)[..., 0] > 0.5).astype(np.uint8))
    flips_max = with_params(fitted_binary, tta="flips", tta_merge="max")
    np.testing.assert_allclose(flips_max.predict_proba(X), np.max(views, axis=0), atol=1e-6)


def test_d4_needs_square_images(fitted_binary, binary_data):
    X, _ = binary_data  # 40 x 44
    d4 = with_params(fitted_binary, tta="d4")
    with pytest.raises(ValueError, match="tta='d4'.*need square images.*Use tta='flips'"):
        d4.predict_proba(X)
    assert d4.predict_proba(X[:, :40, :40]).shape == (12, 40, 40, 1)


def test_evaluate_tta_compares_settings_without_refitting(fitted_binary, binary_data):
    X, y = binary_data
    square_X, square_y = X[:, :40, :40], y[:, :40, :40]
    weights = [w.copy() for w in fitted_binary.model_.get_weights()]
    results = evaluate_tta(fitted_binary, square_X, square_y)
    assert [r["tta"] for r in results] == [None, "flips", "d4"]
    assert fitted_binary.tta is None  # the estimator itself is unchanged
    assert results[0]["score"] == pytest.approx(fitted_binary.score(square_X, square_y))
    assert results[1]["score"] == pytest.approx(
        with_params(fitted_binary, tta="flips").score(square_X, square_y))
    for before, after in zip(weights, fitted_binary.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("params, match", [
    ({"augment": "rotate"}, "'augment' parameter"),
    ({"tta": "spin"}, "'tta' parameter"),
    ({"tta_merge": "median"}, "'tta_merge' parameter"),
])
def test_bad_augmentation_parameters(params, match, binary_data):
    X, y = binary_data
    with pytest.raises(ValueError, match=match):
        UNetSegmenter(**{**SMALL, **params}).fit(X, y)


def test_augmenter_parameters_are_searchable_through_the_segmenter():
    from sklearn.base import clone

    model = UNetSegmenter(augment=Augmenter(shift_scale_rotate_p=0.5))
    params = model.get_params(deep=True)
    assert params["augment__shift_scale_rotate_p"] == 0.5
    assert "augment__crop_size" in params and "augment__rotate_limit" in params
    model.set_params(augment__shift_scale_rotate_p=0.25)
    assert model.augment.shift_scale_rotate_p == 0.25
    assert clone(model).augment.shift_scale_rotate_p == 0.25
