"""UNetSegmenter: fitting, predicting, target formats, training control."""

import copy
import warnings

import numpy as np
import pytest
from conftest import SMALL, synthetic_images

from skunetseg import UNetSegmenter


def test_predictions_have_the_fitted_format(fitted_binary, binary_data):
    X, y = binary_data
    proba = fitted_binary.predict_proba(X)
    assert proba.shape == (*X.shape, 1) and proba.dtype == np.float32
    assert ((proba >= 0) & (proba <= 1)).all()
    masks = fitted_binary.predict(X)
    assert masks.shape == y.shape and masks.dtype == y.dtype
    np.testing.assert_array_equal(masks, (proba[..., 0] > 0.5).astype(np.uint8))
    assert fitted_binary.target_type_ == "binary"
    assert fitted_binary.classes_.tolist() == [0, 1] and fitted_binary.n_classes_ == 2
    assert fitted_binary.n_channels_in_ == 1


def test_history_records_every_epoch(fitted_binary):
    history = fitted_binary.history_
    assert [record["epoch"] for record in history] == [1, 2]
    for key in ("loss", "dice", "mask_accuracy", "val_loss", "val_dice", "learning_rate"):
        assert all(np.isfinite(record[key]) for record in history), key
    assert history[0]["learning_rate"] == pytest.approx(SMALL["learning_rate"])
    assert fitted_binary.best_epoch_ in (1, 2)


def test_postprocessing_parameters_apply_in_predict_and_score(fitted_binary, binary_data):
    from skunetseg.metrics import dice_score
    from skunetseg.postprocess import postprocess

    X, y = binary_data
    proba = fitted_binary.predict_proba(X)
    model = copy.copy(fitted_binary).set_params(threshold=[0.3], min_area=0.02,
                                                min_component_area=3)
    expected = postprocess(proba, threshold=0.3, min_area=0.02, min_component_area=3)
    np.testing.assert_array_equal(model.predict(X), expected[..., 0].astype(np.uint8))
    assert model.score(X, y) == pytest.approx(dice_score(y, expected[..., 0]))
    # a min_area (in pixels) above any mask's area erases every mask
    assert not model.set_params(min_area=X.shape[1] * X.shape[2] + 1).predict(X).any()
    assert fitted_binary.min_area is None  # the copy's settings are its own


def test_verbose_predictions_show_a_progress_bar_over_the_images(fitted_binary, binary_data,
                                                                  capsys):
    X, _ = binary_data
    fitted_binary.predict_proba(X)
    assert capsys.readouterr().out == ""  # verbose=0 is silent
    chatty = copy.copy(fitted_binary).set_params(verbose=2, batch_size=1)  # chunks of 8
    np.testing.assert_allclose(chatty.predict_proba(X), fitted_binary.predict_proba(X),
                               atol=1e-5)  # other batches round a little differently
    out = capsys.readouterr().out
    assert f"{len(X)}/{len(X)}" in out and "image" in out


def test_odd_sizes_other_than_training_are_padded_and_cropped_back(fitted_binary):
    X, _ = synthetic_images(n=3, height=21, width=50, seed=3)
    assert fitted_binary.predict_proba(X).shape == (3, 21, 50, 1)


def test_score_is_the_kaggle_dice_of_predict(fitted_binary, binary_data):
    from skunetseg.metrics import dice_score

    X, y = binary_data
    assert fitted_binary.score(X, y) == pytest.approx(dice_score(y, fitted_binary.predict(X)))


def test_multiclass_label_maps_get_softmax_and_label_maps_back():
    X, discs = synthetic_images(n=8, height=32, width=32, seed=1)
    y = np.where(discs == 1, 7, np.where(X > 100, 3, 0)).astype(np.int16)  # labels 0, 3, 7
    model = UNetSegmenter(**SMALL, loss="bce_dice", random_state=0).fit(X, y)
    assert model.target_type_ == "multiclass" and model.classes_.tolist() == [0, 3, 7]
    proba = model.predict_proba(X)
    assert proba.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(proba.sum(axis=-1), 1, atol=1e-4)  # softmax
    predicted = model.predict(X)
    assert predicted.shape == y.shape and predicted.dtype == y.dtype
    assert set(np.unique(predicted)) <= {0, 3, 7}
    assert 0 <= model.score(X, y) <= 1


def test_multilabel_masks_get_one_sigmoid_per_class():
    X, discs = synthetic_images(n=8, height=32, width=32, seed=2, channels=3)
    y = np.stack([discs, 1 - discs], axis=-1)  # two overlapping-style channels
    model = UNetSegmenter(**SMALL, loss="bce_jaccard", threshold=[0.3, 0.7],
                          random_state=0).fit(X, y)
    assert model.target_type_ == "multilabel" and model.n_classes_ == 2
    # one threshold per class, in predict and in the Dice watched during training
    expected = (model.predict_proba(X) > np.array([0.3, 0.7])).astype(np.uint8)
    np.testing.assert_array_equal(model.predict(X), expected)
    assert np.isfinite(model.history_[-1]["dice"])
    assert model.n_channels_in_ == 3


@pytest.mark.slow
def test_same_random_state_gives_identical_predictions(binary_data):
    X, y = binary_data
    first = UNetSegmenter(**SMALL, random_state=7).fit(X, y)
    # the same fit in a worker process: same history, same weights, same predictions
    second = UNetSegmenter(**SMALL, random_state=7, fit_in_subprocess=True).fit(X, y)
    assert second.history_ == first.history_
    np.testing.assert_array_equal(second.predict_proba(X), first.predict_proba(X))
    first = first.predict_proba(X)
    third = UNetSegmenter(**SMALL, random_state=8).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, third)


def test_training_learns_the_synthetic_discs():
    X, y = synthetic_images(n=24, height=32, width=32, seed=4)
    model = UNetSegmenter(**{**SMALL, "epochs": 12}, loss="bce_dice", random_state=0).fit(X, y)
    empty_score = np.mean([not mask.any() for mask in y])  # Dice of predicting nothing
    assert model.score(X, y) > max(0.6, empty_score + 0.2)


class _InterruptAfter:
    """A Keras callback (built lazily) that simulates Ctrl-C after some epochs."""

    def __new__(cls, epochs):
        import keras

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == epochs:
                    raise KeyboardInterrupt

        return Interrupt()


@pytest.mark.slow
def test_ctrl_c_leaves_a_fitted_model_with_the_best_weights(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**{**SMALL, "epochs": 10}, callbacks=[_InterruptAfter(2)],
                          random_state=0)
    with pytest.warns(UserWarning, match="interrupted after 2 epoch"):
        model.fit(X, y)
    assert len(model.history_) == 2
    assert model.predict(X).shape == y.shape


def test_callbacks_and_warnings_travel_to_and_from_the_worker_process(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**{**SMALL, "epochs": 10}, callbacks=[_InterruptAfter(3)],
                          fit_in_subprocess=True, random_state=0)
    with pytest.warns(UserWarning, match="interrupted after 3 epoch"):
        model.fit(X, y)
    assert len(model.history_) == 3
    assert model.predict(X).shape == y.shape


def test_without_validation_the_training_dice_is_watched(fitted_small):
    model = fitted_small  # SMALL has validation_fraction=0
    assert "val_dice" not in model.history_[0] and "dice" in model.history_[0]


@pytest.mark.slow
def test_validation_data_is_used_instead_of_a_split(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**SMALL, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a plain fit warns about nothing
        model.fit(X[:8], y[:8], validation_data=(X[8:], y[8:]))
    assert "val_dice" in model.history_[0]


@pytest.mark.slow
def test_gradient_accumulation_trains(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**{**SMALL, "batch_size": 2}, accumulate_steps=2, random_state=0)
    model.fit(X, y)
    assert model.model_.optimizer.gradient_accumulation_steps == 2
    assert np.isfinite(model.history_[0]["loss"])


def test_batchnorm_momentum_adapts_to_the_epoch_length(fitted_binary):
    # 12 images, 3 held out, batch 4: 3 steps per epoch
    assert fitted_binary.bn_momentum_ == pytest.approx(1 - 1 / 3)
    import keras

    momenta = [layer.momentum for layer in fitted_binary.model_.layers
               if isinstance(layer, keras.layers.BatchNormalization)]
    assert momenta and momenta == pytest.approx([1 - 1 / 3] * len(momenta))


def test_local_encoder_weights_file_is_loaded(tmp_path, binary_data):
    from skunetseg._model import build_encoder

    encoder = build_encoder("resnet18", n_channels=3)
    path = tmp_path / "resnet18_encoder.weights.h5"
    encoder.save_weights(path)
    X, y = binary_data
    # a vanishing learning rate keeps the trained kernels at their initial values
    model = UNetSegmenter(**{**SMALL, "backbone": "resnet18", "learning_rate": 1e-12},
                          encoder_weights=str(path), random_state=0).fit(X, y)
    assert model.model_.input_shape[-1] == 3  # gray repeated for the pretrained encoder
    name = "stage1_unit1_conv1"
    kernel = model.model_.get_layer(name).get_weights()[0]
    np.testing.assert_allclose(kernel, encoder.get_layer(name).get_weights()[0], atol=1e-6)
    other_init = build_encoder("resnet18", n_channels=3).get_layer(name).get_weights()[0]
    assert not np.allclose(kernel, other_init, atol=1e-6)


def test_imagenet_weights_offline_say_what_to_do(tmp_path):
    import subprocess
    import sys

    code = ("import numpy as np; from skunetseg import UNetSegmenter\n"
            "try:\n"
            "    UNetSegmenter('resnet18', encoder_weights='imagenet', epochs=1)"
            ".fit(np.zeros((2, 32, 32)), np.zeros((2, 32, 32)))\n"
            "except OSError as e:\n    print(e)\n")
    env = {**__import__("os").environ, "KERAS_HOME": str(tmp_path),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    message = out.stdout
    assert str(tmp_path / "models" / "resnet18_imagenet_1000_no_top.h5") in message
    assert "encoder_weights=None" in message and "encoder_weights='/path/to/" in message


def test_predict_before_fit_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        UNetSegmenter().predict(np.zeros((1, 32, 32)))
    assert not hasattr(UNetSegmenter(), "model_")


@pytest.mark.slow
def test_refitting_releases_nothing_the_first_model_needs(fitted_binary, binary_data):
    X, y = binary_data
    before = fitted_binary.predict_proba(X)
    UNetSegmenter(**SMALL, random_state=1).fit(X, y)  # clears Keras' global session
    np.testing.assert_array_equal(fitted_binary.predict_proba(X), before)




@pytest.mark.slow
def test_mirrored_strategy_trains_replicas_and_matches_a_single_device_fit():
    # tf.distribute on the CPU: a MirroredStrategy over the one CPU device
    X, y = synthetic_images(n=8, height=32, width=32, seed=5)
    mirrored = UNetSegmenter(**SMALL, distribute="mirrored", random_state=0).fit(X, y)
    network = mirrored.model_
    assert type(network.distribute_strategy).__name__ == "MirroredStrategy"
    assert type(network.weights[0].value).__name__ == "MirroredVariable"
    single = UNetSegmenter(**SMALL, distribute="auto", random_state=0).fit(X, y)  # no GPU: none
    assert type(single.model_.distribute_strategy).__name__ != "MirroredStrategy"
    np.testing.assert_allclose(mirrored.predict_proba(X), single.predict_proba(X), atol=1e-5)
