"""PresenceClassifier: an image classifier network as a scikit-learn classifier."""

import copy

import numpy as np
import pytest
from conftest import predict_in_fresh_process, synthetic_images
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags

from skunetseg import PresenceClassifier
from skunetseg.augment import Augmenter

TINY = dict(batch_size=4, learning_rate=1e-3, reduce_lr_patience=None)


def presence_data(n=16, seed=0):
    """Synthetic disc images and their labels: "salt" where the image holds a disc."""
    X, masks = synthetic_images(n=n, height=32, width=32, seed=seed)
    return X, np.where(masks.any(axis=(1, 2)), "salt", "empty")


@pytest.fixture(scope="module")
def binary():
    """A classifier of two string labels, trained 3 epochs with a validation split."""
    X, y = presence_data()
    model = PresenceClassifier("resnet18", epochs=3, validation_fraction=0.25,
                               early_stopping_patience=None, random_state=0, **TINY)
    return model.fit(X, y)


@pytest.fixture(scope="module")
def multilabel():
    """A two-class indicator-matrix classifier, augmented, with validation data."""
    X, y = presence_data(n=12, seed=1)
    Y = np.column_stack([y == "salt", y == "empty"]).astype(int)
    X_val, y_val = presence_data(n=4, seed=2)
    Y_val = np.column_stack([y_val == "salt", y_val == "empty"]).astype(int)
    model = PresenceClassifier("vgg16", epochs=1, augment="seed", random_state=0, **TINY)
    return model.fit(X, Y, validation_data=(X_val, Y_val)), X, Y


def test_binary_labels_probabilities_and_predictions(binary):
    X, y = presence_data()
    proba = binary.predict_proba(X)
    assert proba.shape == (16, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    assert binary.classes_.tolist() == ["empty", "salt"] and binary.n_outputs_ == 1
    np.testing.assert_array_equal(binary.predict(X), binary.classes_[(proba[:, 1] > 0.5) * 1])
    assert binary.score(X, y) == np.mean(binary.predict(X) == y)


def test_training_fits_the_training_labels(binary):
    # three epochs on 12 images fit them (in training mode); whether that carries over
    # to unseen images is measured on real data by benchmarks/bench_false_positive.py
    history = binary.history_
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["accuracy"] > history[0]["accuracy"]


def test_history_and_early_stopping_watch_the_validation_loss(binary):
    history = binary.history_
    assert [record["epoch"] for record in history] == [1, 2, 3]
    for key in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc",
                "learning_rate"):
        assert all(np.isfinite(record[key]) for record in history), key
    # the kept epoch is the one of lowest validation loss (not highest, as for a Dice)
    val_losses = [record["val_loss"] for record in history]
    assert binary.best_epoch_ == int(np.argmin(val_losses)) + 1
    assert 0 < binary.bn_momentum_ <= 0.99 and binary.n_channels_in_ == 1


def test_indicator_matrix_with_augmentation_and_validation_data(multilabel):
    model, X, Y = multilabel
    proba = model.predict_proba(X)
    assert proba.shape == (12, 2) and model.n_outputs_ == 2
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(model.predict(X), (proba > 0.5).astype(int))
    assert model.classes_.tolist() == [0, 1]
    assert "val_loss" in model.history_[0]
    # other sizes are padded for the network; the answer is one row per image
    X_odd, _ = synthetic_images(n=3, height=21, width=50)
    assert model.predict_proba(X_odd).shape == (3, 2)


def test_joblib_round_trip_in_a_fresh_process(binary, tmp_path):
    X, _ = presence_data()
    proba = predict_in_fresh_process(binary, X, tmp_path,
                                     tensorflow_loads_lazily=True)["predict_proba"]
    np.testing.assert_allclose(proba, binary.predict_proba(X), atol=1e-6)


def test_pickle_holds_weights_and_copies_share_or_own_the_network(binary):
    network = binary.model_
    state = binary.__getstate__()
    assert "_model" not in state and all(isinstance(w, np.ndarray) for w in state["_weights"])
    assert binary.model_ is network and "_weights" not in vars(binary)
    assert copy.copy(binary).model_ is network
    deep = copy.deepcopy(binary)
    assert deep.model_ is not network
    X, _ = presence_data(n=4)
    np.testing.assert_array_equal(deep.predict_proba(X), binary.predict_proba(X))


def test_clone_params_and_tags(binary):
    twin = clone(binary)
    assert twin.get_params() == binary.get_params() and not hasattr(twin, "history_")
    tags = get_tags(PresenceClassifier())
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array
    assert tags.estimator_type == "classifier" and tags.classifier_tags.multi_label
    assert repr(PresenceClassifier("vgg16", epochs=3)) == \
        "PresenceClassifier(backbone='vgg16', epochs=3)"


def test_presence_batches_keep_each_images_labels():
    from skunetseg._presence_model import PresenceBatches

    n = 10
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                             (n, 24, 24, 1)).copy()
    labels = (np.arange(n)[:, None] >> np.arange(4) & 1).astype(np.float32)  # index in bits
    augmenter = Augmenter(rotate90_p=1.0, shift_scale_rotate_p=1.0, scale_limit=0.3,
                          crop_size=(16, 16))
    batches = PresenceBatches(images, labels, augmenter=augmenter, batch_size=4,
                              prepare_images=lambda x: x, seed=0)
    seen = []
    for index in range(len(batches)):
        batch_images, batch_labels = batches[index]
        assert batch_images.shape[1:] == (16, 16, 1) and batch_labels.shape[1:] == (4,)
        rows = batch_images[:, 8, 8, 0].round().astype(int)  # a constant image stays so
        np.testing.assert_array_equal(batch_labels, labels[rows])
        seen.extend(rows)
    assert sorted(seen) == list(range(n))


# ---------------------------------------------------------------- bad input
X = np.zeros((4, 32, 32), dtype=np.uint8)


@pytest.mark.parametrize("y, error, match", [
    (np.array([0, 1, 2, 1]), ValueError, r"1-D y must hold exactly two labels; got \[0, 1, 2\]"),
    (np.zeros(4), ValueError, r"exactly two labels; got \[0.0\]"),
    (np.full((4, 2), 2), ValueError, "indicator matrix .* only 0 and 1"),
    (np.array([0, 1, 1]), ValueError, "one label per image; got 3 labels for 4 images"),
    (np.zeros((4, 2, 2)), ValueError, r"shape \(n_images,\) or \(n_images, n_classes\)"),
    ("labels", TypeError, "y must be an array of labels"),
])
def test_bad_labels(y, error, match):
    with pytest.raises(error, match=match):
        PresenceClassifier("vgg16").fit(X, y)


@pytest.mark.parametrize("params, match", [
    (dict(pooling="min"), "'pooling' parameter"),
    (dict(loss="jaccard"), "'loss' parameter"),
    (dict(dropout=1.0), "'dropout' parameter"),
    (dict(backbone="densenet121"), "not supported"),
    (dict(encoder_weights="/no/such/file.h5"), "path of an existing weights file"),
    (dict(validation_fraction=0.9), "leaves none to train on"),
])
def test_bad_parameters(params, match):
    model = PresenceClassifier("vgg16", **TINY).set_params(**params)
    with pytest.raises(ValueError, match=match):
        model.fit(X[:1], np.array([[1]]))


def test_bad_validation_and_predict_input(binary):
    y = np.array([0, 1, 0, 1])
    with pytest.raises(TypeError, match=r"validation_data must be a tuple \(X_val, y_val\)"):
        PresenceClassifier("vgg16").fit(X, y, validation_data=[X])
    with pytest.raises(ValueError, match=r"validation_data\[1\] holds labels \[7\]"):
        PresenceClassifier("vgg16").fit(X, y, validation_data=(X, np.array([0, 1, 7, 1])))
    with pytest.raises(ValueError, match=r"validation_data\[1\] must have shape \(n_images,\)"):
        PresenceClassifier("vgg16").fit(X, y, validation_data=(X, np.zeros((4, 2))))
    with pytest.raises(NotFittedError):
        PresenceClassifier().predict_proba(X)
    with pytest.raises(ValueError, match="fitted on images with 1 channel"):
        binary.predict_proba(np.zeros((2, 32, 32, 3), dtype=np.uint8))
