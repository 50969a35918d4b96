"""Post-processing of probability maps and the search for its settings (NumPy only)."""

import numpy as np
import pytest

from skunetseg.metrics import dice_score
from skunetseg.postprocess import postprocess, tune_postprocessing


def blob_and_speck(size=16):
    """One image, one class: a 5x6 blob (30 px) at 0.9 and a diagonal speck (3 px) at 0.8."""
    proba = np.full((1, size, size, 1), 0.1)
    proba[0, 1:6, 1:7] = 0.9
    proba[0, [10, 11, 12], [10, 11, 12]] = 0.8  # touching only by corners
    return proba


def blob_mask(size=16):
    mask = np.zeros((1, size, size, 1), dtype=bool)
    mask[0, 1:6, 1:7] = True
    return mask


def one_hot(labels, n_classes):
    return np.eye(n_classes, dtype=bool)[labels]


def test_defaults_are_a_plain_threshold_or_argmax():
    rng = np.random.default_rng(0)
    proba = rng.random((3, 8, 9, 2))
    masks = postprocess(proba)
    assert masks.dtype == bool
    np.testing.assert_array_equal(masks, proba > 0.5)
    softmax = proba / proba.sum(axis=-1, keepdims=True)
    np.testing.assert_array_equal(postprocess(softmax, activation="softmax"),
                                  one_hot(softmax.argmax(axis=-1), 2))


def test_small_components_are_removed_with_8_connectivity():
    proba = blob_and_speck()
    assert postprocess(proba).sum() == 33
    # the diagonal speck is one 8-connected component of 3 px: kept below 4 px ...
    assert postprocess(proba, min_component_area=3).sum() == 33
    # ... removed from 4 px on, while the 30 px blob stays until 31 px
    np.testing.assert_array_equal(postprocess(proba, min_component_area=4), blob_mask())
    np.testing.assert_array_equal(postprocess(proba, min_component_area=30), blob_mask())
    assert not postprocess(proba, min_component_area=31).any()


def test_min_area_blanks_a_small_false_positive_and_keeps_the_object():
    proba = np.full((2, 16, 16, 1), 0.2)
    proba[0, 1:6, 1:7] = 0.9  # a true object of 30 px
    proba[1, 8:10, 8] = 0.7  # a false positive of 2 px
    masks = postprocess(proba, min_area=10)
    assert masks[0].sum() == 30
    assert not masks[1].any()
    assert postprocess(proba, min_area=2)[1].sum() == 2  # only areas below min_area go


def test_min_area_is_checked_after_removing_components():
    proba = blob_and_speck()
    # 33 px in all, 30 px once the speck is gone: blanked only when both filters apply
    assert postprocess(proba, min_area=31).sum() == 33
    assert not postprocess(proba, min_area=31, min_component_area=4).any()
    np.testing.assert_array_equal(postprocess(proba, min_area=30, min_component_area=4),
                                  blob_mask())


def test_multilabel_thresholds_and_areas_per_class():
    proba = np.full((1, 10, 10, 2), 0.1)
    proba[0, :2, :, :] = 0.3  # 20 px of 0.3 in both classes
    proba[0, 5:8, 5:8, :] = 0.7  # 9 px of 0.7 in both classes
    masks = postprocess(proba, threshold=[0.2, 0.5])
    assert masks[..., 0].sum() == 29
    np.testing.assert_array_equal(masks[..., 1], proba[..., 1] > 0.5)
    assert masks[..., 1].sum() == 9
    # min_area per class: class 1 (9 px) is blanked, class 0 (29 px) is not
    masks = postprocess(proba, threshold=(0.2, 0.5), min_area=np.array([10, 10]))
    assert masks[..., 0].sum() == 29
    assert not masks[..., 1].any()
    masks = postprocess(proba, threshold=0.2, min_component_area=[0, 10])
    assert masks[..., 0].sum() == 29
    assert masks[..., 1].sum() == 20  # the 9 px square is gone from class 1 only


def test_softmax_masks_stay_one_hot_and_erased_pixels_become_background():
    labels = np.zeros((1, 16, 16), dtype=int)
    labels[0, 1:6, 1:7] = 1  # class 1: 30 px
    labels[0, [10, 11, 12], [10, 11, 12]] = 2  # class 2: a 3 px speck
    labels[0, 14:, :] = 2  # class 2: a 32 px band
    # class 1 is always the runner-up, so erased pixels must not fall back to it
    proba = np.where(one_hot(labels, 3), 0.6, 0.0) + np.array([0.1, 0.3, 0.0])
    masks = postprocess(proba, min_component_area=4, activation="softmax")
    np.testing.assert_array_equal(masks.sum(axis=-1), 1)
    expected = labels.copy()
    expected[0, [10, 11, 12], [10, 11, 12]] = 0
    np.testing.assert_array_equal(masks, one_hot(expected, 3))
    # min_area erases class 1 (30 px) but not class 2 (35 px); the background's entry is ignored
    masks = postprocess(proba, min_area=[10**6, 31, 31], activation="softmax")
    expected = np.where(labels == 1, 0, labels)
    np.testing.assert_array_equal(masks, one_hot(expected, 3))
    # thresholds do not apply to softmax outputs
    np.testing.assert_array_equal(postprocess(proba, threshold=0.99, activation="softmax"),
                                  postprocess(proba, threshold=None, activation="softmax"))


def test_fraction_and_pixel_areas_agree_on_a_known_size():
    # images of 100x100 = 10_000 px, so that 0.002 stands for 20 px
    proba = np.zeros((4, 100, 100, 1))
    for i, length in enumerate((19, 20, 21)):
        proba[i, 50, :length] = 0.9  # image i: one segment of 19 + i px
        proba[3, 10 * i, :length] = 0.9  # image 3: the three segments, apart
    for settings in ({"min_area": 0.002}, {"min_area": 20}):
        assert postprocess(proba, **settings).sum(axis=(1, 2, 3)).tolist() == [0, 20, 21, 60]
    for settings in ({"min_component_area": 0.002}, {"min_component_area": 20}):
        assert postprocess(proba, **settings).sum(axis=(1, 2, 3)).tolist() == [0, 20, 21, 41]
    # 0.0025 of 64x64 is 10.24 px: a 10 px mask is erased, an 11 px mask is kept
    proba = np.zeros((2, 64, 64, 1))
    proba[0, 0, :10] = 1
    proba[1, 0, :11] = 1
    assert postprocess(proba, min_area=0.0025).sum(axis=(1, 2, 3)).tolist() == [0, 11]
    # 0.07 * 100 is 7.000000000000001 in floating point: still 7 px on a 10x10 image
    proba = np.zeros((2, 10, 10, 1))
    proba[0, 0, :6] = 1
    proba[1, 0, :7] = 1
    assert postprocess(proba, min_area=0.07).sum(axis=(1, 2, 3)).tolist() == [0, 7]


def test_fractions_give_the_same_decision_on_resized_images():
    proba = np.zeros((2, 32, 32, 1))
    proba[0, 2:5, 2:5] = 0.9  # 9 px: under 1% of 1024 px
    proba[1, 2:6, 2:6] = 0.9  # 16 px: over it
    larger = np.kron(proba, np.ones((1, 2, 2, 1)))  # 64x64, every area times 4
    for settings in ({"min_area": 0.01}, {"min_component_area": 0.01}):
        small = postprocess(proba, **settings).any(axis=(1, 2, 3))
        large = postprocess(larger, **settings).any(axis=(1, 2, 3))
        assert small.tolist() == large.tolist() == [False, True]


def test_postprocess_keeps_the_input_unchanged():
    proba = blob_and_speck()
    copy = proba.copy()
    postprocess(proba, min_area=31, min_component_area=4)
    np.testing.assert_array_equal(proba, copy)


# --- tuning -----------------------------------------------------------------------------


def discs(n=10, size=32, seed=0):
    """Truth of (n, size, size) with one disc on every other image, empty elsewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = np.zeros((n, size, size), dtype=bool)
    for i in range(0, n, 2):
        cy, cx = rng.integers(8, size - 8, 2)
        truth[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(4, 7) ** 2
    return truth


def test_tuning_recovers_the_best_threshold_of_each_class():
    rng = np.random.default_rng(0)
    truth = np.stack([discs(seed=0), discs(seed=1)], axis=-1)
    # class 0: objects in [0.32, 0.4], background below 0.18: 0.2, 0.25 and 0.3 are
    # perfect and 0.3 is nearest 0.5. Class 1: objects in [0.72, 0.8], background
    # below 0.58: 0.6, 0.65 and 0.7 are perfect and 0.6 is nearest 0.5.
    low = np.array([0.32, 0.72])
    high = np.array([0.18, 0.58])
    noise = rng.random(truth.shape)
    proba = np.where(truth, low + 0.08 * noise, high * noise)
    search = tune_postprocessing(proba, truth)
    assert search.thresholds == (0.3, 0.6)
    assert search.min_areas == (0.0, 0.0)  # no filter needed: the smallest area wins
    assert search.score_after == search.class_scores_after[0] == 1.0
    assert search.class_scores_before[0] == 0.5  # nothing found, so only empty images score
    assert search.score_before < search.score_after
    assert search.activation == "sigmoid"


def test_tuning_recovers_the_min_area_that_erases_false_positives():
    truth = discs(n=8)  # discs of 49 px or more on the even images
    proba = np.where(truth, 0.9, 0.05)
    for i in (1, 3, 5):  # specks of 3 to 5 px on empty images
        proba[i, 2, 2:2 + i // 2 + 3] = 0.9
    search = tune_postprocessing(proba[..., None], truth[..., None],
                                 min_areas=[0, 3, 5, 6, 100], selection="best")
    assert search.min_areas == (6.0,)  # 5 keeps the 5 px speck, 100 erases the discs
    assert search.thresholds == (0.5,)  # every threshold gives the same masks: the tie goes to 0.5
    assert search.score_before == pytest.approx(5 / 8)
    assert search.score_after == 1.0


def _brute_force(proba, truth, thresholds, min_areas):
    """Per-image Dice of every (threshold, min_area) of one class, in the search's order
    of preference (smaller area, then nearer 0.5, then lower): ``[(settings, dice)]``."""
    settings = sorted(((t, a) for t in thresholds for a in min_areas),
                      key=lambda ta: (ta[1], abs(ta[0] - 0.5), ta[0]))
    return [(ta, dice_score(truth, postprocess(proba, threshold=ta[0], min_area=ta[1]),
                            average=False)[:, 0]) for ta in settings]


@pytest.mark.parametrize("selection", ["best", "one_se"])
def test_tuning_matches_a_brute_force_search(selection):
    rng = np.random.default_rng(3)
    truth = np.stack([discs(n=30, size=24, seed=s) for s in (4, 5)], axis=-1)
    noise = rng.normal(0, 0.25, truth.shape)
    proba = np.clip(np.where(truth, 0.55, 0.3) + noise, 0, 1)
    thresholds, min_areas = [0.4, 0.5, 0.6, 0.7], [0, 0.005, 0.02, 30]
    search = tune_postprocessing(proba, truth, thresholds=thresholds, min_areas=min_areas,
                                 selection=selection)
    for k in range(2):
        candidates = _brute_force(proba[..., k:k + 1], truth[..., k:k + 1], thresholds,
                                  min_areas)
        best_dice = max((dice for _, dice in candidates), key=np.mean)
        if selection == "best":
            chosen = next(ta for ta, dice in candidates
                          if dice.mean() == pytest.approx(best_dice.mean()))
        else:  # the first (least aggressive) one within a standard error of the best
            chosen = next(ta for ta, dice in candidates
                          if best_dice.mean() - dice.mean()
                          <= np.std(best_dice - dice, ddof=1) / np.sqrt(len(dice)) + 1e-12)
        assert (search.thresholds[k], search.min_areas[k]) == chosen
        assert search.class_scores_after[k] == pytest.approx(
            dict(candidates)[chosen].mean())
    assert search.score_best == pytest.approx(np.mean(
        [max(np.mean(dice) for _, dice in _brute_force(
            proba[..., k:k + 1], truth[..., k:k + 1], thresholds, min_areas))
         for k in range(2)]))


def _specks_and_small_objects(n_specks):
    """40 images: 20 with a 49 px or larger disc, one of which is a 9 px object
    instead; ``n_specks`` of the 20 empty ones hold a 12 px false-positive speck."""
    truth = discs(n=40)
    truth[0] = False
    truth[0, 10:13, 10:13] = True  # a small true object: 9 px
    proba = np.where(truth, 0.9, 0.05)
    for i in range(1, 2 * n_specks, 2):
        proba[i, 2:5, 2:6] = 0.9  # 12 px on an empty image
    return proba[..., None], truth[..., None]


def test_one_standard_error_keeps_small_objects_when_the_gain_is_noise():
    # erasing masks under 13 px removes 2 specks (+2 pairs) and the small object
    # (-1 pair): +0.025 on 40 images, with a standard error of 0.044
    proba, truth = _specks_and_small_objects(n_specks=2)
    best = tune_postprocessing(proba, truth, min_areas=[0, 13])
    assert best.min_areas == (0.0,)
    assert best.score_after == best.score_before < best.score_best
    assert best.score_best == pytest.approx(best.score_before + 1 / 40)
    assert tune_postprocessing(proba, truth, min_areas=[0, 13],
                               selection="best").min_areas == (13.0,)


def test_one_standard_error_takes_a_filter_that_clearly_pays():
    # 10 specks erased for one small object lost: +0.225, standard error 0.076
    proba, truth = _specks_and_small_objects(n_specks=10)
    search = tune_postprocessing(proba, truth, min_areas=[0, 13])
    assert search.min_areas == (13.0,)
    assert search.score_after == search.score_best == pytest.approx(
        search.score_before + 9 / 40)


def test_one_standard_error_never_takes_settings_below_the_plain_ones():
    from skunetseg.postprocess import _best, _one_standard_error

    # per-image Dice of 3 candidates on 40 images, in the order of preference:
    # the plain settings, then a noisy one, then the best one
    best = np.ones(40)
    best[:2] = 0.0  # 0.95
    plain = best.copy()
    plain[10:30] -= 0.08  # 0.91: a consistent shortfall, well beyond its standard error
    noisy = best.copy()
    noisy[:2], noisy[2:6] = 1.0, 0.0  # 0.90: within its (large) standard error of the best
    pair_dice = np.stack([plain, noisy, best])[..., np.newaxis]
    scores, rank = pair_dice.mean(axis=1), np.arange(3.0)[:, np.newaxis]
    top = _best(scores, rank)
    assert top.tolist() == [2]
    allowance = _one_standard_error(pair_dice, top, floor=np.array([-np.inf]))
    assert _best(scores, rank, allowance).tolist() == [1]  # without the floor: below plain
    allowance = _one_standard_error(pair_dice, top, floor=scores[0])
    assert _best(scores, rank, allowance).tolist() == [2]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_tuning_never_scores_below_the_plain_masks(seed, activation):
    rng = np.random.default_rng(seed)
    n_classes = 3
    labels = np.stack([discs(n=8, size=24, seed=seed + 10 * k) * k for k in (1, 2)]).max(axis=0)
    truth = one_hot(labels, n_classes)
    if activation == "sigmoid":
        truth = truth[..., 1:]  # multilabel: the two object classes
    logits = 2.0 * truth + rng.normal(0, 1.2, truth.shape)
    if activation == "softmax":
        proba = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    else:
        proba = 1 / (1 + np.exp(-(logits - 1)))
    search = tune_postprocessing(proba, truth, activation=activation)
    assert search.score_after >= search.score_before
    masks = postprocess(proba, **search.params)
    assert search.score_after == pytest.approx(dice_score(truth, masks))
    plain = proba > 0.5 if activation == "sigmoid" else one_hot(proba.argmax(axis=-1), n_classes)
    assert search.score_before == pytest.approx(dice_score(truth, plain))
    if activation == "softmax":
        assert search.thresholds is None
        assert search.min_areas[0] == 0.0
        np.testing.assert_array_equal(masks.sum(axis=-1), 1)


def test_softmax_tuning_erases_small_false_positives():
    labels = discs(n=6, seed=7).astype(int)  # class 1 on the even images
    labels[1::2] = 2 * discs(n=6, seed=8)[::2]  # class 2 on the odd ones
    predicted = labels.copy()
    predicted[1::2, 0, 0] = 1  # a 1 px class-1 false positive on every odd image
    proba = np.where(one_hot(predicted, 3), 0.8, 0.1)
    search = tune_postprocessing(proba, one_hot(labels, 3), min_areas=[0, 5],
                                 activation="softmax")
    assert search.thresholds is None
    assert search.min_areas == (0.0, 5.0, 0.0)  # class 2 needs no filter: the tie goes to 0
    assert search.class_scores_before[1] == 0.5
    assert search.score_after == 1.0
    np.testing.assert_array_equal(postprocess(proba, **search.params), one_hot(labels, 3))


def test_softmax_tuning_falls_back_when_the_background_loses_more():
    labels = np.zeros((2, 100, 100), dtype=int)
    labels[1, :20] = 1
    labels[1, 20, :40] = 1  # image 1: 2040 px of class 1; image 0: background only
    predicted = np.zeros_like(labels)
    predicted[0, 50, 50] = 1  # a 1 px false positive
    predicted[1, :20] = 1  # 2000 of the 2040 px: Dice 4000 / 4040
    proba = np.where(one_hot(predicted, 2), 0.9, 0.1)
    # erasing masks under 2001 px is best for class 1 alone: (1 + 0) / 2 > (0 + 0.99) / 2,
    # but it turns 2000 px of image 1 into background, which costs the background more
    search = tune_postprocessing(proba, one_hot(labels, 2), min_areas=[0, 2001],
                                 activation="softmax")
    assert postprocess(proba, min_area=2001, activation="softmax")[..., 1].sum() == 0
    assert search.min_areas == (0.0, 0.0)
    assert search.score_after == search.score_before
    assert search.class_scores_after == search.class_scores_before


# --- errors -------------------------------------------------------------------------------


PROBA = np.full((2, 8, 8, 2), 0.25)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"proba": np.zeros((2, 8, 8))}, ValueError, "proba must have shape"),
        ({"proba": np.zeros((2, 8, 8, 1), dtype=int)}, TypeError, "proba must hold floating"),
        ({"proba": np.full((1, 4, 4, 1), 1.5)}, ValueError, "between 0 and 1"),
        ({"proba": np.full((1, 4, 4, 1), np.nan)}, ValueError, "NaN"),
        ({"threshold": 0.0}, ValueError, "threshold must lie strictly between 0 and 1"),
        ({"threshold": [0.5, 1.0]}, ValueError, "threshold must lie strictly between 0 and 1"),
        ({"threshold": [0.5, 0.5, 0.5]}, ValueError, r"threshold must be .* per class \(2\)"),
        ({"threshold": "0.5"}, TypeError, "threshold must be a number"),
        ({"threshold": None}, ValueError, "threshold=None is only allowed"),
        ({"min_area": -1}, ValueError, "min_area must be >= 0"),
        ({"min_area": [1, 2, 3]}, ValueError, r"min_area must be .* per class \(2\)"),
        ({"min_area": True}, TypeError, "min_area must be a number"),
        ({"min_area": np.inf}, ValueError, "min_area must be finite"),
        ({"min_component_area": [0, -0.5]}, ValueError, "min_component_area must be >= 0"),
        ({"activation": "relu"}, ValueError, "activation must be one of"),
    ],
)
def test_postprocess_errors(kwargs, error, match):
    kwargs = {"proba": PROBA, **kwargs}
    with pytest.raises(error, match=match):
        postprocess(kwargs.pop("proba"), **kwargs)


def test_softmax_threshold_is_still_validated():
    with pytest.raises(ValueError, match="threshold must lie strictly"):
        postprocess(PROBA, threshold=2.0, activation="softmax")


TRUTH = np.zeros((2, 8, 8, 2), dtype=bool)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"y_true": TRUTH[..., :1]}, ValueError, "y_true must have the shape of proba"),
        ({"y_true": TRUTH[..., 0]}, ValueError, "y_true must have the shape of proba"),
        ({"y_true": np.arange(256).reshape(2, 8, 8, 2)}, ValueError, "y_true holds the values"),
        ({"proba": PROBA[:0], "y_true": TRUTH[:0]}, ValueError, "at least one image"),
        ({"thresholds": []}, ValueError, "thresholds must be a non-empty 1-D"),
        ({"thresholds": [0.5, 1.0]}, ValueError, "thresholds must lie strictly"),
        ({"thresholds": 0.5}, ValueError, "thresholds must be a non-empty 1-D"),
        ({"min_areas": [0, -10]}, ValueError, "min_areas must be >= 0"),
        ({"thresholds": [0.5], "activation": "softmax"}, ValueError, "thresholds must be None"),
        ({"activation": "linear"}, ValueError, "activation must be one of"),
    ],
)
def test_tune_postprocessing_errors(kwargs, error, match):
    kwargs = {"proba": PROBA, "y_true": TRUTH, **kwargs}
    with pytest.raises(error, match=match):
        tune_postprocessing(kwargs.pop("proba"), kwargs.pop("y_true"), **kwargs)
