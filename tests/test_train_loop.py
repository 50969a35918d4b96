"""How :func:`skunetseg._model.train` runs Keras' ``fit``: validation batches, tracing."""

import math

import numpy as np
import pytest


def _tiny_model(keras):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("n_valid,batch_size", [(5, 2), (40, 3)])
def test_validation_arrays_are_batched_at_batch_size(n_valid, batch_size):
    from skunetseg import _model

    keras = _model.keras
    sizes = []

    class BatchSize(keras.metrics.Metric):
        # counts how many validation batches there were and how large the largest was
        def __init__(self):
            super().__init__(name="batch")
            self.largest = self.add_variable(shape=(), initializer="zeros", name="largest")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.largest.assign(keras.ops.maximum(
                self.largest, keras.ops.cast(keras.ops.shape(y_true)[0], "float32")))

        def result(self):
            return self.largest

        def reset_state(self):
            self.largest.assign(0.0)

    class CountBatches(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            sizes.append(0)

        def on_test_batch_end(self, batch, logs=None):
            sizes[-1] += 1

    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    training = _model.AugmentedBatches(x, y, augmenter=None, batch_size=batch_size,
                                       prepare_images=lambda images: images,
                                       mask_fill=np.zeros(1, np.float32), seed=0)
    valid = (rng.random((n_valid, 32, 32, 1), dtype=np.float32),
             np.zeros((n_valid, 32, 32, 1), np.float32))
    model = _tiny_model(keras)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=[BatchSize()])
    history, _ = _model.train(
        model, training, validation_data=valid, epochs=2, batch_size=batch_size,
        early_stopping_patience=None, reduce_lr_patience=None, reduce_lr_factor=0.5,
        callbacks=[CountBatches()], verbose=0, monitor="loss", mode="min")
    assert sizes == [math.ceil(n_valid / batch_size)] * 2
    assert [epoch["val_batch"] for epoch in history] == [min(batch_size, n_valid)] * 2


@pytest.mark.parametrize("build_first", [True, False])
def test_the_training_step_is_traced_once(monkeypatch, build_first):
    # A tf.function that creates variables (Adam's moments, built lazily by Keras 3)
    # during its first trace is traced twice; train() builds the optimizer before
    # fit, so the step's Python runs once. The unbuilt case shows the test can fail.
    from skunetseg import _model

    keras = _model.keras
    traces = []

    class CountingModel(keras.Model):
        def train_step(self, data):
            traces.append(1)  # Python side effect: runs once per trace
            return super().train_step(data)

    inputs = keras.Input((None, None, 1))
    model = CountingModel(inputs, keras.layers.Conv2D(1, 3, padding="same",
                                                      activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    if not build_first:
        monkeypatch.setattr(_model, "build_optimizer", lambda model: None)
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 1), dtype=np.float32)
    _model.train(model, (x, (x > 0.5).astype(np.float32)), validation_data=None, epochs=2,
                 batch_size=4, early_stopping_patience=None, reduce_lr_patience=None,
                 reduce_lr_factor=0.5, callbacks=None, verbose=0, monitor="loss", mode="min")
    assert len(traces) == (1 if build_first else 2)


@pytest.mark.parametrize("accumulate", [None, 2])
def test_fused_adam_trains_like_keras_adam(accumulate):
    from skunetseg import _model

    keras = _model.keras

    def fitted(optimizer_class):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((16, 16, 1))
        hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        hidden = keras.layers.BatchNormalization()(hidden)
        outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(hidden)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=optimizer_class(learning_rate=1e-2,
                                                gradient_accumulation_steps=accumulate),
                      loss="binary_crossentropy")
        x = np.random.default_rng(0).random((32, 16, 16, 1), dtype=np.float32)
        model.fit(x, (x > 0.5).astype(np.float32), batch_size=8, epochs=3, shuffle=False,
                  verbose=0)
        return model.get_weights() + [v.numpy() for v in model.optimizer.variables]

    reference, fused = fitted(keras.optimizers.Adam), fitted(_model.FusedAdam)
    other = fitted(keras.optimizers.SGD)
    assert len(fused) == len(reference)
    # the comparison tells optimizers apart: plain SGD ends elsewhere
    assert max(np.abs(a - b).max() for a, b in zip(reference[:4], other[:4], strict=True)) > 1e-3
    for ours, theirs in zip(fused, reference, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("with_validation", [False, True])
def test_the_kept_epoch_is_the_best_validation_dice_or_else_the_last(with_validation):
    # "dice" falls every epoch, so the best validation epoch is the first; the last
    # epoch trains at a learning rate so large that its loss is the worst, so
    # neither the best "dice" nor the lowest training loss would keep it
    from skunetseg import _model

    keras = _model.keras

    class FallingDice(keras.metrics.Metric):
        def __init__(self):
            super().__init__(name="dice")
            self.calls = self.add_variable(shape=(), initializer="zeros", name="calls")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.calls.assign_add(1.0)

        def result(self):
            return 1.0 / self.calls

        def reset_state(self):
            pass  # calls accumulate over epochs: the result falls

    final_weights = []

    class WreckTheLastEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                self.model.optimizer.learning_rate.assign(50.0)

        def on_epoch_end(self, epoch, logs=None):
            final_weights[:] = self.model.get_weights()

    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 16, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    model = _tiny_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  metrics=[FallingDice()])
    history, best = _model.train(
        model, (x, y), validation_data=(x[:4], y[:4]) if with_validation else None,
        epochs=4, batch_size=4, early_stopping_patience=None, reduce_lr_patience=None,
        reduce_lr_factor=0.5, callbacks=[WreckTheLastEpoch()], verbose=0, monitor="dice",
        mode="max")
    losses = [epoch["loss"] for epoch in history]
    assert np.argmax(losses) == 3  # the last epoch has the worst training loss
    kept_last = all(np.array_equal(kept, last) for kept, last
                    in zip(model.get_weights(), final_weights, strict=True))
    if with_validation:
        assert best == 1 + int(np.argmax([epoch["val_dice"] for epoch in history])) == 1
        assert not kept_last
    else:
        assert best == 4
        assert kept_last
