"""Mostly-empty data (issue 22): object-balanced epochs, balanced-Dice model selection,
repeated fold ensembles and a false-positive filter that reuses its ensemble's folds."""

import numpy as np
import pytest
from conftest import SMALL
from sklearn.model_selection import GroupKFold, KFold
from test_segmenter_contract import Thresholded

from skunetseg import FalsePositiveFilter, FoldEnsemble, UNetSegmenter


def _mostly_empty(n=20, n_objects=3, size=32, seed=0):
    """``n`` noisy images of which the first ``n_objects`` hold a bright square."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n_objects):
        top, left = rng.integers(0, size - 10, size=2)
        masks[i, top:top + 10, left:left + 10] = 1
    images = np.clip(60 + 120 * masks + rng.normal(0, 20, masks.shape), 0, 255)
    return images.astype(np.uint8), masks


# ------------------------------------------------------------- balanced epochs
def test_balanced_epochs_keep_their_length_and_draw_half_of_it_from_the_object_images():
    from skunetseg._batches import AugmentedBatches

    _, masks = _mostly_empty(n=20, n_objects=3)
    targets = masks[..., None].astype(np.float32)
    images = np.zeros(targets.shape, np.float32)
    batches = AugmentedBatches(images, targets, augmenter=None, batch_size=2,
                               prepare_images=lambda x: x, mask_fill=np.zeros(1, np.float32),
                               seed=0, max_empty_share=0.5)
    seen_empty = set()
    for _ in range(12):
        order = batches.order.tolist()
        assert len(order) == 20 and len(batches) == 10  # the epoch keeps its length
        empty = [row for row in order if row >= 3]
        assert len(empty) == 10 and len(set(empty)) == 10  # distinct empty images: half
        # the other half: every object image, each as often as the others, give or take one
        assert sorted(order.count(row) for row in range(3)) == [3, 3, 4]
        seen_empty |= set(empty)
        batches.on_epoch_end()
    assert len(seen_empty) == 17  # the empty images change from epoch to epoch

    # data with no more empty images than the share: every image, every epoch
    plain = AugmentedBatches(images, targets, augmenter=None, batch_size=2,
                             prepare_images=lambda x: x, mask_fill=np.zeros(1, np.float32),
                             seed=0, max_empty_share=0.9)
    assert sorted(plain.order.tolist()) == list(range(20))


class _CountBatches:
    """A Keras callback factory counting the training steps of each epoch."""

    @staticmethod
    def make():
        import keras

        class Count(keras.callbacks.Callback):
            steps = []

            def on_epoch_begin(self, epoch, logs=None):
                Count.steps.append(0)

            def on_train_batch_end(self, batch, logs=None):
                Count.steps[-1] += 1

        return Count


@pytest.mark.parametrize("share, object_draws", [(0.5, 10), (None, 3)])
def test_segmenter_trains_balanced_epochs_on_mostly_empty_data(share, object_draws,
                                                                monkeypatch):
    from skunetseg._batches import AugmentedBatches

    orders = []
    permutation = AugmentedBatches._permutation
    monkeypatch.setattr(AugmentedBatches, "_permutation",
                        lambda self: orders.append(permutation(self)) or orders[-1])
    X, y = _mostly_empty(n=20, n_objects=3)
    counter = _CountBatches.make()
    model = UNetSegmenter(**{**SMALL, "epochs": 2}, max_empty_share=share,
                          callbacks=[counter()], random_state=0).fit(X, y)
    assert counter.steps == [5, 5]  # 20 images in batches of 4: balanced or not
    # balanced: half of each epoch's 20 images are the 3 object images; else once each
    assert len(orders) >= 2
    assert [(len(order), int((order < 3).sum())) for order in orders] == (
        [(20, object_draws)] * len(orders))
    assert "balanced_dice" in model.history_[0]


# ---------------------------------------------------------------- balanced Dice
def test_balanced_dice_weighs_empty_and_object_pairs_equally():
    from skunetseg._keras_metrics import BalancedDice, KaggleDice

    truth = np.zeros((10, 8, 8, 1), np.float32)
    truth[:2, 2:6, 2:6] = 1  # 2 object images, 8 empty ones
    nothing = np.zeros_like(truth)
    found = truth.copy()
    found[2:4, 0, 0] = 1  # both objects found, 2 of the 8 empty images given a pixel

    def result(metric, pred, true=truth):
        metric.update_state(true, pred)
        return float(metric.result())

    assert result(KaggleDice(), nothing) == pytest.approx(0.8)
    assert result(BalancedDice(), nothing) == pytest.approx(0.5)  # silence cannot win
    assert result(BalancedDice(), found) == pytest.approx((1.0 + 6 / 8) / 2)
    # without empty pairs it is the Kaggle Dice
    half = np.zeros_like(truth[:2])
    half[:, 2:4, 2:6] = 1
    assert result(BalancedDice(), half, truth[:2]) == pytest.approx(
        result(KaggleDice(), half, truth[:2]))
    assert result(KaggleDice(), half, truth[:2]) == pytest.approx(2 / 3)


# ------------------------------------------------------------ fold ensembles
class Brightness(Thresholded):
    """The contract's brightness segmenter, shifted by an offset that differs from fold
    to fold; it counts its fits in the class attribute ``fits``."""

    fits = 0

    def fit(self, X, y, validation_data=None):
        type(self).fits += 1
        super().fit(X, y, validation_data)
        self.offset_ = float(np.asarray(X).mean()) / 2550
        return self

    def predict_proba(self, X):
        return np.clip(super().predict_proba(X) - self.offset_, 0, 1)


def test_fold_ensemble_repeats_its_split_and_averages_the_out_of_fold_maps():
    X, y = _mostly_empty(n=24, n_objects=8)
    ensemble = FoldEnsemble(Brightness(), cv=3, n_repeats=2, random_state=0).fit(X, y)
    assert len(ensemble.estimators_) == len(ensemble.folds_) == 6
    once = FoldEnsemble(Brightness(), cv=3, random_state=0).fit(X, y)
    for (_, test), (_, test1) in zip(ensemble.folds_[:3], once.folds_, strict=True):
        np.testing.assert_array_equal(test, test1)  # the first repeat is n_repeats=1's split
    assert any(not np.array_equal(a[1], b[1])
               for a, b in zip(ensemble.folds_[:3], ensemble.folds_[3:], strict=True))
    expected = np.zeros(ensemble.oof_proba_.shape, np.float32)
    for (_, test), model in zip(ensemble.folds_, ensemble.estimators_, strict=True):
        expected[test] += model.predict_proba(X[test]) / 2
    np.testing.assert_allclose(ensemble.oof_proba_, expected, rtol=1e-6)
    assert ensemble.oof_fold_scores_.shape == (6,)
    with pytest.raises(ValueError, match="n_repeats=2 repeats the k-fold split of an int cv"):
        FoldEnsemble(Brightness(), cv=KFold(3), n_repeats=2).fit(X, y)


def test_fold_ensemble_tunes_post_processing_by_default_but_keeps_given_values():
    X, y = _mostly_empty(n=24, n_objects=8)
    tuned = FoldEnsemble(Brightness(), cv=3, random_state=0).fit(X, y)
    assert hasattr(tuned, "oof_score_before_tuning_")
    assert tuned.oof_score_ >= tuned.oof_score_before_tuning_
    kept = FoldEnsemble(Brightness(), cv=3, threshold=0.3, min_area=5,
                        random_state=0).fit(X, y)
    assert kept.thresholds_.tolist() == [0.3] and kept.min_areas_.tolist() == [5]


@pytest.mark.parametrize("classifier", ["features"])
def test_filter_over_a_fold_ensemble_reuses_its_folds_and_out_of_fold_maps(classifier):
    X, y = _mostly_empty(n=24, n_objects=8)
    Brightness.fits = 0
    fp_filter = FalsePositiveFilter(FoldEnsemble(Brightness(), cv=3, random_state=0),
                                    classifier, tune_threshold=True).fit(X, y)
    assert Brightness.fits == 3  # the ensemble's three fold models, nothing more
    ensemble = fp_filter.segmenter_
    assert fp_filter.n_held_out_ == len(X)
    # the held-out maps are the ensemble's out-of-fold maps: same Dice before filtering
    assert fp_filter.dice_before_ == pytest.approx(ensemble.oof_score_)
    Brightness.fits = 0
    FalsePositiveFilter(Brightness(), classifier, cv=3).fit(X, y)
    assert Brightness.fits == 4  # a plain segmenter: cv + 1 fits


def test_filter_passes_groups_to_the_ensemble_it_reuses():
    X, y = _mostly_empty(n=24, n_objects=8)
    groups = np.arange(24) // 4  # six parts of four images each
    fp_filter = FalsePositiveFilter(FoldEnsemble(Brightness(), cv=GroupKFold(3)),
                                    "features").fit(X, y, groups=groups)
    for train, test in fp_filter.segmenter_.folds_:
        assert not set(groups[train]) & set(groups[test])  # no part on both sides
    plain = FalsePositiveFilter(Brightness(), "features", cv=GroupKFold(3))
    plain.fit(X, y, groups=groups)  # a splitter that needs groups gets them
    with pytest.raises(ValueError, match="groups"):
        plain.fit(X, y)


def test_presence_classifier_trains_balanced_epochs_too(monkeypatch):
    from skunetseg import PresenceClassifier
    from skunetseg._batches import AugmentedBatches

    orders = []
    permutation = AugmentedBatches._permutation
    monkeypatch.setattr(AugmentedBatches, "_permutation",
                        lambda self: orders.append(permutation(self)) or orders[-1])
    X, y = _mostly_empty(n=20, n_objects=3)
    labels = y.any(axis=(1, 2)).astype(int)
    counter = _CountBatches.make()
    PresenceClassifier("vgg16", epochs=1, batch_size=4, validation_fraction=0,
                       callbacks=[counter()], random_state=0).fit(X, labels)
    assert counter.steps == [5]  # the epoch keeps its 20 images
    assert orders and all(int((order < 3).sum()) == 10 for order in orders)  # half present


def test_data_with_few_empty_images_trains_exactly_as_without_balancing(binary_data,
                                                                        fitted_small):
    # 5 of these 12 images are empty: below the default share, so the default fit is the
    # fit of every image every epoch (the five sets of bench_defaults.py are such data)
    X, y = binary_data
    assert 0 < (~y.any(axis=(1, 2))).mean() <= 0.5
    balanced = fitted_small  # UNetSegmenter(**SMALL, random_state=0), default share
    plain = UNetSegmenter(**SMALL, max_empty_share=None, random_state=0).fit(X, y)
    np.testing.assert_array_equal(balanced.predict_proba(X), plain.predict_proba(X))
