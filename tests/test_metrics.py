import numpy as np
import pytest

from skunetseg.metrics import dice_score, make_dice_scorer, mask_accuracy_score


def masks(*arrays):
    return np.array(arrays, dtype=np.uint8)


def test_dice_hand_computed_pairs():
    truth = masks([[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]])
    pred = masks([[1, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 1], [0, 0]])
    # pairs: 2*1/(2+1) ; empty vs empty = 1 ; non-empty vs empty = 0 ; empty vs non-empty = 0
    expected = [2 / 3, 1.0, 0.0, 0.0]
    assert dice_score(truth, pred, average=False).ravel() == pytest.approx(expected)
    assert dice_score(truth, pred) == pytest.approx(np.mean(expected))


def test_dice_multilabel_counts_every_image_class_pair():
    truth = np.zeros((2, 3, 3, 2), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, 0, 0] = pred[0, 0, 0, 0] = 1  # perfect
    truth[1, :, :, 1] = 1                     # missed entirely
    scores = dice_score(truth, pred, average=False)
    np.testing.assert_allclose(scores, [[1, 1], [1, 0]])
    assert dice_score(truth, pred) == pytest.approx(0.75)


def test_dice_accepts_any_two_values_and_bool():
    truth = masks([[255, 0], [0, 0]])
    assert dice_score(truth, truth.astype(bool)) == 1.0


def test_dice_with_labels_scores_each_label():
    truth = np.array([[[0, 1], [2, 2]]])
    pred = np.array([[[0, 1], [2, 0]]])
    # label 0: 2*1/(1+2) ; label 1: 1 ; label 2: 2*1/(2+1)
    assert dice_score(truth, pred, labels=[0, 1, 2]) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


def test_dice_rejects_label_maps_without_labels():
    with pytest.raises(ValueError, match="labels="):
        dice_score(np.array([[[0, 1], [2, 2]]]), np.array([[[0, 1], [2, 2]]]))


def test_dice_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        dice_score(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))


def test_mask_accuracy_hand_computed():
    truth = masks([[1, 0]], [[0, 0]], [[1, 1]], [[0, 0]])
    pred = masks([[0, 1]], [[0, 0]], [[0, 0]], [[1, 0]])
    # present/present right, empty/empty right, present/empty wrong, empty/present wrong
    assert mask_accuracy_score(truth, pred) == 0.5


def test_scorer_uses_predict():
    from sklearn.base import BaseEstimator

    class Echo(BaseEstimator):
        def predict(self, X):
            return X

    truth = masks([[1, 1], [0, 0]])
    pred = masks([[1, 0], [0, 0]])
    assert make_dice_scorer()(Echo(), pred, truth) == pytest.approx(2 / 3)
