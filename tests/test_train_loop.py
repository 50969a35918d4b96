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
