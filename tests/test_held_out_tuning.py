"""A single UNetSegmenter tunes the post-processing it was not given on the images it
holds out (issue 22): ``validation_fraction="auto"`` holds out a tenth of mostly-empty
data, ``threshold`` and ``min_area`` default to None (tuned when there are held-out
images, else 0.5 and 0), and fold models never tune on the folds held out from them."""

import copy

import numpy as np
import pytest
from conftest import SMALL
from sklearn.frozen import FrozenEstimator
from test_mostly_empty import _mostly_empty

from skunetseg import FalsePositiveFilter, PresenceClassifier, UNetSegmenter, load
from skunetseg._crossfit import untuned_clone
from skunetseg.metrics import dice_score
from skunetseg.postprocess import postprocess, tune_postprocessing, tune_unset


# ---------------------------------------------------------- what "auto" holds out
@pytest.mark.parametrize("n_images, n_empty, n_held_out", [
    (40, 30, 4),  # mostly empty: a tenth held out
    (40, 20, 0),  # half empty: nothing (the bench_defaults sets are such data)
    (19, 15, 0),  # too few images to hold out two
    (40, 40, 0),  # nothing to find
])
@pytest.mark.parametrize("estimator", [UNetSegmenter, PresenceClassifier])
def test_auto_validation_fraction_holds_out_a_tenth_of_mostly_empty_data(
        estimator, n_images, n_empty, n_held_out):
    empty = np.arange(n_images) < n_empty
    train, valid = estimator(validation_fraction="auto", random_state=0)._validation_rows(empty)
    held = 0 if valid is None else len(valid)
    assert held == n_held_out
    assert len(train) + held == n_images
    if valid is not None:
        assert not set(train) & set(valid)


def test_auto_is_the_default_and_the_command_line_spells_it():
    from skunetseg.cli import _build_parser, _make_model

    assert UNetSegmenter().validation_fraction == "auto"
    assert UNetSegmenter().threshold is None and UNetSegmenter().min_area is None
    model = _make_model(_build_parser().parse_args(
        ["fit", "in", "masks", "-o", "out", "--validation-fraction", "auto"]))
    assert model.validation_fraction == "auto"
    with pytest.raises(SystemExit):
        _build_parser().parse_args(["fit", "in", "masks", "-o", "out",
                                    "--validation-fraction", "most"])


def test_without_held_out_images_nothing_is_tuned(fitted_small, binary_data):
    # no validation images: threshold 0.5 and no area filter, as before the tuning
    X, _ = binary_data
    assert fitted_small.thresholds_.tolist() == [0.5] and fitted_small.min_areas_.tolist() == [0]
    assert fitted_small.validation_score_ is None
    np.testing.assert_array_equal(
        fitted_small.predict(X), postprocess(fitted_small.predict_proba(X))[..., 0])


# ----------------------------------------------------------------- the tuning itself
def _split():
    """30 training images (8 with an object), 10 validation images (4 with one)."""
    X, y = _mostly_empty(n=40, n_objects=12, seed=1)  # the first 12 hold an object
    valid = np.r_[0:4, 34:40]
    train = np.setdiff1d(np.arange(40), valid)
    return X[train], y[train], X[valid], y[valid]


@pytest.fixture(scope="module")
def tuned_model():
    X, y, X_val, y_val = _split()
    return UNetSegmenter(**{**SMALL, "epochs": 2}, random_state=0).fit(
        X, y, validation_data=(X_val, y_val))


def test_threshold_and_min_area_are_tuned_on_the_validation_images(tuned_model):
    X, y, X_val, y_val = _split()
    model = tuned_model
    proba = model.predict_proba(X_val)
    search = tune_postprocessing(proba, y_val[..., np.newaxis] > 0)  # done by hand
    assert model.thresholds_.tolist() == list(search.thresholds)
    assert model.min_areas_.tolist() == list(search.min_areas)
    assert (model.thresholds_.tolist(), model.min_areas_.tolist()) != ([0.5], [0.0])
    assert model.validation_score_before_tuning_ == pytest.approx(search.score_before)
    assert model.validation_score_ == pytest.approx(dice_score(y_val, model.predict(X_val)))
    assert model.validation_score_ >= model.validation_score_before_tuning_
    # predict and score apply the tuned settings
    expected = postprocess(model.predict_proba(X), threshold=search.thresholds,
                           min_area=search.min_areas)[..., 0]
    np.testing.assert_array_equal(model.predict(X), expected.astype(np.uint8))
    assert model.score(X, y) == pytest.approx(dice_score(y, expected))


def test_a_value_set_after_fit_wins_over_the_tuned_one(tuned_model):
    model = copy.copy(tuned_model).set_params(threshold=0.5)
    assert model.postprocessing_.threshold == (0.5,)
    assert model.postprocessing_.min_area == tuple(tuned_model.min_areas_.tolist())
    assert tuned_model.threshold is None  # the copy's setting is its own


def test_given_values_are_kept_and_only_the_others_tuned():
    X, y, X_val, y_val = _split()
    model = UNetSegmenter(**SMALL, min_area=0.001, random_state=0).fit(
        X, y, validation_data=(X_val, y_val))
    assert model.min_areas_.tolist() == [0.001]
    search = tune_postprocessing(model.predict_proba(X_val), y_val[..., np.newaxis] > 0,
                                 min_areas=[0.001])
    assert model.thresholds_.tolist() == list(search.thresholds)
    both = UNetSegmenter(**SMALL, threshold=0.5, min_area=0, random_state=0).fit(
        X, y, validation_data=(X_val, y_val))
    assert both.validation_score_ is None  # nothing left to tune: no extra prediction
    assert both.thresholds_.tolist() == [0.5] and both.min_areas_.tolist() == [0]


def test_a_class_no_held_out_mask_holds_keeps_its_untuned_settings():
    rng = np.random.default_rng(0)
    truth = np.zeros((12, 16, 16, 2), dtype=bool)
    truth[:6, 4:10, 4:10, 0] = True  # class 0 on half the images, class 1 on none
    proba = np.where(truth, 0.9, 0.1).astype(np.float32)
    proba[:, :2, :2, 1] = rng.uniform(0.55, 0.8, size=(12, 2, 2))  # stray class-1 pixels
    plain = tune_postprocessing(proba, truth)
    assert plain.thresholds[1] != 0.5 or plain.min_areas[1] != 0  # it would learn to erase
    threshold, min_area, _ = tune_unset(proba, truth)
    assert (threshold[1], min_area[1]) == (0.5, 0.0)
    assert (threshold[0], min_area[0]) == (plain.thresholds[0], plain.min_areas[0])
    # a given number stays that number, per-class values are not searched
    threshold, min_area, _ = tune_unset(proba, truth, threshold=0.4, min_area=[0, 3])
    assert threshold == (0.4, 0.4) and min_area is None


def test_tuned_settings_survive_save_and_load(tuned_model, tmp_path):
    X, _, _, _ = _split()
    tuned_model.save(tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert loaded.postprocessing_ == tuned_model.postprocessing_
    np.testing.assert_array_equal(loaded.predict(X), tuned_model.predict(X))
    # a model saved before the tuning existed had its settings as parameters
    older = copy.copy(tuned_model)
    del older.thresholds_, older.min_areas_
    assert older.postprocessing_.threshold == (0.5,)


# ------------------------------------------------------------ fold models do not tune
def test_cross_fitting_clones_segmenters_without_tuning():
    model = untuned_clone(UNetSegmenter(threshold=0.3))
    assert (model.threshold, model.min_area) == (0.3, 0)  # a given value is kept
    nested = untuned_clone(FalsePositiveFilter(UNetSegmenter(), "features"))
    assert (nested.segmenter.threshold, nested.segmenter.min_area) == (0.5, 0)
    frozen = FrozenEstimator(UNetSegmenter())
    assert untuned_clone(frozen).estimator.threshold is None  # a fitted model stays as it is


def test_files_of_mixed_sizes_hold_out_and_tune_by_default(tmp_path):
    # mostly-empty JPEG images of two sizes with anti-aliased 0/255 PNG masks, as they come
    import cv2

    from skunetseg.io import read_mask

    X, y = _mostly_empty(n=24, n_objects=8, size=48, seed=2)
    images, masks = [], []
    for i in range(len(X)):
        size = (48, 40) if i % 2 else (48, 48)  # (width, height) for cv2
        image = cv2.resize(X[i], size, interpolation=cv2.INTER_AREA)
        mask = cv2.GaussianBlur(cv2.resize(y[i] * 255, size, interpolation=cv2.INTER_LINEAR),
                                (3, 3), 0)
        images.append(str(tmp_path / f"{i:02d}.jpg"))
        masks.append(str(tmp_path / f"{i:02d}_mask.png"))
        assert cv2.imwrite(images[-1], image) and cv2.imwrite(masks[-1], mask)
    model = UNetSegmenter(**{**SMALL, "validation_fraction": "auto"}, input_size=(32, 32),
                          binarize_masks=True, random_state=0).fit(images, masks)
    empty = np.array([not read_mask(path).any() for path in masks])
    held = model._validation_rows(empty)[1]
    assert len(held) == 3  # a tenth of 24 files, rounded up
    assert "val_balanced_dice" in model.history_[0] and model.validation_score_ is not None
    proba = model.predict_proba([images[i] for i in held])  # at each file's own size
    truth = [read_mask(masks[i], binarize=True)[..., np.newaxis] > 0 for i in held]
    threshold, min_area, _ = tune_unset(proba, truth)
    assert model.thresholds_.tolist() == list(threshold)
    assert model.min_areas_.tolist() == list(min_area)
    predicted = model.predict(images[:4])
    assert [mask.shape for mask in predicted] == [(48, 48), (40, 48), (48, 48), (40, 48)]
