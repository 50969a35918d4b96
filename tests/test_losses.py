import numpy as np
import pytest

keras = pytest.importorskip("keras")
from skunetseg import losses  # noqa: E402
from skunetseg._keras_metrics import KaggleDice, MaskAccuracy  # noqa: E402
from skunetseg.metrics import dice_score, mask_accuracy_score  # noqa: E402


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 8, 8, 2)) > 0.6).astype("float32")
    y_pred = rng.random((3, 8, 8, 2)).astype("float32")
    return y_true, y_pred


def test_jaccard_and_dice_match_their_formulas(pair):
    y_true, y_pred = pair
    inter = (y_true * y_pred).sum(axis=(0, 1, 2))
    total = y_true.sum(axis=(0, 1, 2)) + y_pred.sum(axis=(0, 1, 2))
    jaccard = 1 - np.mean(inter / (total - inter))
    dice = 1 - np.mean(2 * inter / total)
    assert float(losses.JaccardLoss()(y_true, y_pred)) == pytest.approx(jaccard, rel=1e-4)
    assert float(losses.DiceLoss()(y_true, y_pred)) == pytest.approx(dice, rel=1e-4)


def test_per_image_jaccard_averages_images(pair):
    y_true, y_pred = pair
    inter = (y_true * y_pred).sum(axis=(1, 2))
    union = y_true.sum(axis=(1, 2)) + y_pred.sum(axis=(1, 2)) - inter
    expected = np.mean(1 - np.mean(inter / union, axis=-1))
    value = float(losses.JaccardLoss(per_image=True)(y_true, y_pred))
    assert value == pytest.approx(expected, rel=1e-4)


def test_binary_focal_matches_its_formula(pair):
    y_true, p = pair
    expected = np.mean(-0.25 * y_true * (1 - p) ** 2 * np.log(p)
                       - 0.75 * (1 - y_true) * p**2 * np.log(1 - p))
    assert float(losses.BinaryFocalLoss()(y_true, p)) == pytest.approx(expected, rel=1e-4)


def test_loss_algebra_sums_weighted_terms(pair):
    y_true, y_pred = pair
    bce = keras.losses.BinaryCrossentropy()
    combined = bce + 0.5 * losses.JaccardLoss()
    expected = float(bce(y_true, y_pred)) + 0.5 * float(losses.JaccardLoss()(y_true, y_pred))
    assert float(combined(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    assert [type(term) for term in combined.losses] == [type(bce), losses.JaccardLoss]


@pytest.mark.parametrize("name", losses.LOSS_NAMES)
def test_every_named_loss_round_trips_through_keras_serialization(name, pair):
    y_true, y_pred = pair
    loss = losses.get_loss(name)
    config = keras.losses.serialize(loss)
    rebuilt = keras.losses.deserialize(config)  # no custom_objects needed
    assert type(rebuilt) is type(loss)
    assert float(rebuilt(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)))


def test_unknown_loss_name_is_rejected():
    with pytest.raises(ValueError, match="'loss' parameter"):
        losses.get_loss("hinge")


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_keras_metrics_agree_with_numpy_definitions(pair, threshold):
    y_true, y_pred = pair
    y_true[0] = 0  # an empty truth
    y_pred[0, ..., 0] = 0  # ... predicted empty on one class
    dice, accuracy = KaggleDice(threshold), MaskAccuracy(threshold)
    for start in (0, 2):  # two batches
        dice.update_state(y_true[start:start + 2], y_pred[start:start + 2])
        accuracy.update_state(y_true[start:start + 2], y_pred[start:start + 2])
    assert float(dice.result()) == pytest.approx(dice_score(y_true, y_pred > threshold), rel=1e-5)
    assert float(accuracy.result()) == pytest.approx(
        mask_accuracy_score(y_true, y_pred > threshold))
