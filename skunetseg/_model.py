"""The Keras side of UNetSegmenter: build, train and run a segmentation-models U-Net.

Everything here works on NumPy arrays that :mod:`skunetseg._segmenter` has
already validated, padded and encoded; nothing here validates user input.
"""

import contextlib
import gc
import os
import random
import re
import warnings
import weakref

import numpy as np

from ._backend import gpu_available, keras, sm, tf
from ._batches import AugmentedBatches  # noqa: F401  (the estimator's training input)
from ._keras_metrics import BalancedDice, KaggleDice, MaskAccuracy
from .losses import get_loss


def keras_cache_path(filename):
    """Where ``keras.utils.get_file`` keeps a downloaded model file."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", filename)


@contextlib.contextmanager
def dtype_policy(name):
    """Build layers under the Keras dtype policy ``name`` and restore the old one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_mixed_precision(mixed_precision, purpose="train"):
    """Return the Keras dtype policy for the ``mixed_precision`` parameter.

    ``purpose`` is ``"train"`` or ``"predict"``. True: ``"mixed_float16"``.
    False: ``"float32"``. ``"auto"``: ``"mixed_float16"`` on a GPU, else
    ``"float32"``. ``"bfloat16"``: ``"mixed_bfloat16"``, except that a CPU
    trains in float32 (bfloat16 training measured 0.5x as fast). bfloat16
    prediction is opt-in because it changes the masks: its Dice differed from
    float32's by up to 0.005 (docs/design.md), and a saved model must predict
    the same masks on every CPU.
    """
    if mixed_precision == "auto":
        return "mixed_float16" if gpu_available() else "float32"
    if mixed_precision == "bfloat16":
        if purpose == "train" and not gpu_available():
            return "float32"
        return "mixed_bfloat16"
    return "mixed_float16" if mixed_precision else "float32"


def network_policy(model):
    """Name of the dtype policy ``model``'s layers compute under (its first weighted layer's)."""
    for layer in model.layers:
        if layer.weights:
            return layer.dtype_policy.name
    return model.dtype_policy.name


# trained network -> (policy, its copy under that policy); a copy lives as long as its network
_policy_copies = weakref.WeakKeyDictionary()


def under_policy(model, policy, build):
    """``model``, or a copy computing under the dtype ``policy`` that holds its weights.

    ``build()`` returns an uncompiled network like ``model`` built under
    ``policy``; it is called once per network and policy, and the copy is kept
    while ``model`` lives. Mixed policies keep float32 variables, so the weights
    go across unchanged, and the copy is brought up to date with ``model``'s
    weights on every call (a fit or ``set_weights`` on ``model`` reaches it).
    """
    if network_policy(model) == policy:
        return model
    cached = _policy_copies.get(model)
    if cached is None or cached[0] != policy:
        cached = (policy, build())
        cached[1].set_weights(model.get_weights())
        _policy_copies[model] = cached
    else:
        weights = model.get_weights()
        if not all(np.array_equal(mine, theirs)
                   for mine, theirs in zip(weights, cached[1].get_weights(), strict=True)):
            cached[1].set_weights(weights)
    return cached[1]


def distribution_scope(distribute):
    """The ``tf.distribute`` scope for the ``distribute`` parameter, or a null context.

    ``"auto"``: a ``MirroredStrategy`` (data parallelism, one model replica per
    GPU, gradients summed across them) when TensorFlow sees more than one GPU,
    else none. ``"mirrored"``: a ``MirroredStrategy`` over every visible GPU, or
    over the CPU when there is none. None: no strategy.
    """
    if distribute == "auto":
        distribute = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else None
    if distribute is None:
        return contextlib.nullcontext()
    return tf.distribute.MirroredStrategy().scope()


def build_unet(*, backbone, encoder_weights, n_channels, n_outputs, activation,
               decoder_filters, policy="float32"):
    """Build an uncompiled ``sm.Unet``; ``encoder_weights`` is None, "imagenet" or a path."""
    kwargs = dict(input_shape=(None, None, n_channels), classes=n_outputs,
                  activation=activation, decoder_filters=tuple(decoder_filters))
    with dtype_policy(policy):
        if encoder_weights == "imagenet":
            return _build_with_imagenet_weights(backbone, kwargs)
        model = sm.Unet(backbone, encoder_weights=None, **kwargs)
        if encoder_weights is not None:
            _load_encoder_weights(model, backbone, os.fspath(encoder_weights), n_channels)
    return model


def _build_with_imagenet_weights(backbone, kwargs):
    try:
        return sm.Unet(backbone, encoder_weights="imagenet", **kwargs)
    except Exception as error:  # keras.utils.get_file raises a bare Exception
        match = re.search(r"URL fetch failure on (\S+?):? ", str(error))
        if match is None:
            raise
        filename = match.group(1).rstrip(":").rsplit("/", 1)[-1]
        raise OSError(
            f"The ImageNet weights of the {backbone!r} encoder could not be downloaded "
            f"({error}). Keras looks for them in its cache as {keras_cache_path(filename)}: "
            f"copy the file there from a machine with internet access (it comes from "
            f"{match.group(1).rstrip(':')}), or pass encoder_weights='/path/to/{filename}' "
            "to use a local copy, or encoder_weights=None to train the encoder from scratch."
        ) from None


def build_encoder(backbone, n_channels):
    """The bare encoder of ``backbone`` (no classification top), randomly initialised."""
    get_backbone = sm.inject_global_submodules(sm.Backbones.get_backbone)
    return get_backbone(backbone, input_shape=(None, None, n_channels), weights=None,
                        include_top=False)


def _load_encoder_weights(model, backbone, path, n_channels):
    """Load an encoder weights file (Keras .weights.h5 or legacy .h5) into the U-Net."""
    encoder = build_encoder(backbone, n_channels)
    try:
        encoder.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"encoder_weights={path!r} does not hold weights of a {backbone!r} encoder "
            f"without its classification top: {error}"
        ) from None
    by_name = {layer.name: layer for layer in model.layers}
    copied = 0
    for layer in encoder.layers:
        target = by_name.get(layer.name)
        if target is not None and layer.weights:
            target.set_weights(layer.get_weights())
            copied += 1
    if copied == 0:
        raise ValueError(f"No layer of encoder_weights={path!r} matches the {backbone!r} "
                         "encoder's layers.")


def set_batchnorm_momentum(model, momentum):
    """Set the moving-statistics momentum of every BatchNormalization layer."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def auto_batchnorm_momentum(steps_per_epoch):
    """Momentum whose moving average spans about one epoch, at most Keras' 0.99.

    Keras' default 0.99 averages over ~100 steps; a small data set trained for a
    few hundred steps leaves the statistics far from the network's final ones,
    and inference-mode predictions collapse (see docs/design.md).
    """
    return min(0.99, 1.0 - 1.0 / max(1, steps_per_epoch))


@keras.saving.register_keras_serializable(package="skunetseg")
class FusedAdam(keras.optimizers.Adam):
    """Keras 3's Adam with each variable's update as one TensorFlow op.

    Keras 3 writes Adam's update as about fifteen small ops per variable (casts,
    powers, the two moment updates, the step); an EfficientNet U-Net has some 400
    variables, so the training step holds thousands of them, and tracing them is
    a large part of a fit's first epoch. ``ResourceApplyAdam``, the kernel tf-keras
    uses, computes the same update (``m``, ``v``, then
    ``lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``) in one op.
    Gradient accumulation, clipping and loss scaling stay Keras' own; AMSGrad,
    sparse gradients and variables other than float32 take Keras' path.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != tf.float32):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
            epsilon=tf.constant(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32), use_locking=False)


def compile_model(model, *, loss, activation, learning_rate, accumulate_steps, threshold,
                  metrics=None):
    """Compile with Adam (gradient accumulation when ``accumulate_steps > 1``).

    ``metrics=None`` means the segmentation metrics ``dice``, ``balanced_dice`` and
    ``mask_accuracy``.
    """
    optimizer = FusedAdam(
        learning_rate=learning_rate,
        gradient_accumulation_steps=accumulate_steps if accumulate_steps > 1 else None,
    )
    multiclass = activation == "softmax"
    model.compile(
        optimizer=optimizer,
        loss=get_loss(loss, activation),
        metrics=(metrics if metrics is not None else
                 [KaggleDice(threshold, multiclass), BalancedDice(threshold, multiclass),
                  MaskAccuracy(threshold, multiclass)]),
        # XLA on the CPU trains and predicts about 4x slower here (docs/design.md)
        jit_compile=False,
    )


class _EpochRecorder(keras.callbacks.Callback):
    """Record each epoch's logs and learning rate; keep the best weights so far.

    ``monitor=None`` counts every epoch as the best so far: the last finished
    epoch's weights are kept. It runs before every other callback, so the
    learning rate it records is the one the epoch trained with, and the kept
    weights are safe even when a later callback (or Ctrl-C) ends training.
    """

    def __init__(self, monitor, mode="max"):
        super().__init__()
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.epochs = []
        self.best_score = -np.inf
        self.best_weights = None
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        record["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        self.epochs.append(record)
        if self.monitor is None:
            better = True
        else:
            score = record.get(self.monitor)
            better = score is not None and self.sign * score > self.best_score
            if better:
                self.best_score = self.sign * score
        if better:
            self.best_epoch = epoch + 1
            self.best_weights = self.model.get_weights()


def build_optimizer(model):
    """Create the optimizer's variables (Adam's moments, accumulators) now, eagerly.

    Keras 3 without a distribution strategy creates them inside the first trace of
    the training step, and a ``tf.function`` that creates variables is traced twice
    (once to create them, once more without). Built beforehand, the step is traced
    once: the first epoch of an EfficientNet-B0 fit at 128 px takes 40 s less on a
    2-core CPU (docs/design.md). Under a distribution strategy Keras builds it
    itself, in the strategy's scope, before the first trace.
    """
    if not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)


def train(model, training, *, validation_data, epochs, batch_size, early_stopping_patience,
          reduce_lr_patience, reduce_lr_factor, callbacks, verbose, monitor="dice",
          mode="max"):
    """Train ``model``, restore its best weights, and return (history, best epoch).

    ``training`` is a tuple of arrays ``(x, y)``, shuffled by Keras, or a
    :class:`AugmentedBatches`, which batches and shuffles itself.

    With ``validation_data``, watches ``"val_" + monitor``, which is better
    when larger (``mode="max"``) or smaller (``mode="min"``), and keeps the
    weights of the best epoch. Without it, as scikit-learn's ``MLPClassifier``
    without early stopping, the training loss drives the learning-rate
    reductions and early stopping, and the last epoch's weights are kept. (The
    training Dice would rank epochs that predict nothing above later ones that
    find the objects with a few false pixels where most (image, class) pairs are
    empty, and the training loss of an epoch measures the weights moving through
    it, not the weights it ends with; see docs/design.md.) Ctrl-C after the
    first epoch stops training with a warning and keeps the weights kept so far;
    before it, the KeyboardInterrupt propagates.
    """
    if validation_data is not None:
        monitor = f"val_{monitor}"
        recorder = _EpochRecorder(monitor, mode)
    else:
        monitor, mode = "loss", "min"
        recorder = _EpochRecorder(None)
    schedule = [recorder]
    if early_stopping_patience is not None:
        schedule.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=early_stopping_patience))
    if reduce_lr_patience is not None:
        schedule.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, patience=reduce_lr_patience,
            factor=reduce_lr_factor, verbose=min(verbose, 1)))
    build_optimizer(model)
    try:
        if isinstance(training, tuple):
            data = dict(x=training[0], y=training[1], batch_size=batch_size, shuffle=True)
        else:
            data = dict(x=training, shuffle=False)
        # validation arrays are batched at batch_size too (Keras' default is 32,
        # whatever the training batches are); a PyDataset batches itself
        model.fit(**data, epochs=epochs, validation_data=validation_data,
                  validation_batch_size=batch_size,
                  callbacks=schedule + list(callbacks or []), verbose=verbose)
    except KeyboardInterrupt:
        if not recorder.epochs:  # no epoch finished: there are no weights worth keeping
            raise KeyboardInterrupt(
                "Training interrupted before the first epoch ended: no weights were kept and "
                "the estimator was left as it was before fit (unfitted if it was)."
            ) from None
        warnings.warn(f"Training interrupted after {len(recorder.epochs)} epoch(s); the "
                      "model keeps the best weights seen so far.", stacklevel=3)
    if recorder.best_weights is not None:
        model.set_weights(recorder.best_weights)
    # the training graph is not needed for prediction: let it go
    model.train_function = model.test_function = None
    return recorder.epochs, recorder.best_epoch


def predict(model, x, batch_size):
    """Run the model in inference mode, batch by batch; float32 output (also from a
    network computing in float16 or bfloat16)."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def progress_bar(n_images, verbose):
    """Keras' progress bar over ``n_images`` images (1: a live bar, 2: a line at the end)."""
    return keras.utils.Progbar(n_images, verbose=1 if verbose == 1 else 2, unit_name="image")


@contextlib.contextmanager
def seeded(random_state):
    """Seed Keras and TensorFlow for reproducible training.

    Keras' seeding also reseeds Python's and NumPy's global generators (its
    initialisers draw from them); their states are restored when the block ends,
    so the user's own random streams are untouched by a fit.
    """
    if random_state is None:
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(int(random_state))
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def release_memory():
    """Free Keras' global state left by earlier models (between fits in one process)."""
    keras.backend.clear_session()
    gc.collect()


def load_archive(archive):
    """Load a ``.keras`` archive in Keras' safe mode (no arbitrary code is deserialized)."""
    return keras.saving.load_model(archive, safe_mode=True, compile=False)


def build_classifier(*, backbone, encoder_weights, n_channels, n_outputs, pooling, dropout,
                     policy="float32"):
    """Build an uncompiled image classifier: the bare encoder of ``backbone``, global
    ``pooling`` ("avg" or "max"), dropout, and ``n_outputs`` sigmoid outputs.

    ``encoder_weights`` is None, "imagenet" or the path of an encoder weights file.
    """
    pool = {"avg": keras.layers.GlobalAveragePooling2D,
            "max": keras.layers.GlobalMaxPooling2D}[pooling]
    with dtype_policy(policy):
        encoder = build_encoder(backbone, n_channels)
        features = pool(name="presence_pool")(encoder.output)
        if dropout:
            features = keras.layers.Dropout(dropout, name="presence_dropout")(features)
        outputs = keras.layers.Dense(n_outputs, activation="sigmoid", dtype="float32",
                                     name="presence")(features)
        model = keras.Model(encoder.input, outputs, name=f"{backbone}_presence")
    if encoder_weights == "imagenet":
        # the U-Net builder knows how to fetch them (and explains a failed download)
        donor = build_unet(backbone=backbone, encoder_weights="imagenet",
                           n_channels=n_channels, n_outputs=1, activation="sigmoid",
                           decoder_filters=(1,) * 5, policy=policy)
        donor_layers = {layer.name: layer for layer in donor.layers}
        for layer in encoder.layers:
            if layer.weights:
                layer.set_weights(donor_layers[layer.name].get_weights())
    elif encoder_weights is not None:
        _load_encoder_weights(model, backbone, os.fspath(encoder_weights), n_channels)
    return model


def presence_metrics(threshold):
    """Metrics of a presence classifier: accuracy at ``threshold`` and ROC AUC."""
    return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold),
            keras.metrics.AUC(name="auc")]
