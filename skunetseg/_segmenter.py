"""UNetSegmenter: a segmentation-models U-Net as a scikit-learn estimator."""

import copy
import math
import os
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._backbones import LOSS_NAMES, check_backbone
from ._base import SegmenterMixin
from ._images import check_images, pad_to_multiple
from ._targets import encode_targets, fit_target_encoding
from ._worker import run_in_worker
from .augment import AUGMENT_PRESETS, resolve_augmenter
from .postprocess import check_postprocessing, postprocess
from .tta import MERGE_METHODS, TTA_PRESETS, predict_with_tta, resolve_tta

__all__ = ["UNetSegmenter"]


#: With TTA, images are predicted in chunks of this many batches (times the views).
_TTA_CHUNK_BATCHES = 8


def _keras_side():
    """The Keras half of the estimator; importing it loads TensorFlow."""
    from . import _model

    return _model


def _train_network(estimator, train, valid):
    """Train ``estimator``'s network in a worker; return what ``fit`` keeps of it."""
    model, history, best_epoch, momentum = estimator._train(train, valid)
    return model.get_weights(), history, best_epoch, momentum


class UNetSegmenter(SegmenterMixin, BaseEstimator):
    """U-Net image segmentation (segmentation-models on Keras 3) as a scikit-learn estimator.

    Trains a U-Net with a segmentation-models encoder on a stack of images and
    masks, watching the validation Kaggle Dice for early stopping and learning
    rate reduction, and predicts masks in the format it was fitted on.

    Parameters
    ----------
    backbone : str, default="efficientnetb2"
        Encoder name from segmentation-models (``"efficientnetb0"`` ...
        ``"efficientnetb7"``, ``"resnet18"`` ... , ``"vgg16"``, ``"mobilenetv2"``,
        ...). The densenets do not build under Keras 3 and are rejected.
    encoder_weights : None, "imagenet" or path, default=None
        Initial encoder weights: random (train from scratch), ImageNet (needs the
        weights file in Keras' cache or the internet), or a local weights file of
        the encoder without its classification top. Pretrained encoders take 3
        channels: gray images are repeated.
    decoder_filters : tuple of 5 int, default=(256, 128, 64, 32, 16)
        Filters of the five decoder blocks.
    loss : str or keras.losses.Loss, default="jaccard"
        ``"jaccard"``, ``"dice"``, ``"bce"``, ``"focal"``, ``"bce_jaccard"``,
        ``"bce_dice"`` or any Keras loss (see :mod:`skunetseg.losses`).
    learning_rate : float, default=1e-3
        Initial learning rate of Adam.
    batch_size : int, default=8
        Images per forward pass, in training and prediction.
    accumulate_steps : int, default=1
        Batches whose gradients are averaged before each weight update:
        ``batch_size=16, accumulate_steps=8`` updates once per 128 images.
    epochs : int, default=50
        Most passes over the training images.
    validation_fraction : float, default=0.1
        Share of the training images held out (drawn with ``random_state``) to
        watch ``val_dice`` when ``fit`` gets no ``validation_data``. With 0 the
        training Dice is watched instead.
    early_stopping_patience : int or None, default=10
        Epochs without a better watched Dice before training stops; None trains
        all ``epochs``. Either way the weights of the best epoch are kept.
    reduce_lr_patience : int or None, default=5
        Epochs without a better watched Dice before the learning rate is
        multiplied by ``reduce_lr_factor``; None keeps it constant.
    reduce_lr_factor : float, default=0.5
        Factor of each learning-rate reduction.
    bn_momentum : "auto" or float, default="auto"
        Momentum of the BatchNormalization moving statistics. ``"auto"`` makes
        their average span about one epoch (at most Keras' 0.99), so that a model
        trained from scratch on few images predicts well in inference mode.
    threshold : float or sequence of float, default=0.5
        Probability above which a pixel is predicted as the class (sigmoid
        outputs), one for all classes or one per class; multiclass outputs take
        the most probable label.
    min_area : float or sequence of float, default=0
        Post-processing in ``predict`` and ``score``: on each image, a class whose
        mask covers fewer pixels is erased entirely (a value in (0, 1) is a share
        of the image's pixels, so it holds at any image size; >= 1 counts pixels;
        0 keeps every mask). One for all classes or one per class.
    min_component_area : float or sequence of float, default=0
        Post-processing: connected components smaller than this are erased
        before ``min_area`` is applied; same units as ``min_area``. See
        :mod:`skunetseg.postprocess`.
    augment : None, str or Augmenter, default=None
        Training augmentation: ``"flips"``, ``"d4"`` (flips and 90° rotations),
        ``"seed"`` (the Kaggle recipe: flips and shift-scale-rotate), or an
        :class:`~skunetseg.augment.Augmenter` whose own parameters (probabilities,
        limits, ``crop_size``, brightness/contrast) a grid search can tune as
        ``augment__<name>``. Batches are augmented on worker threads.
    tta : None, "flips", "d4" or list, default=None
        Test-time augmentation in ``predict_proba``, ``predict`` and ``score``:
        predict flipped (``"flips"``: 4 views), flipped and rotated (``"d4"``: 8
        views, square images only) or listed views (see :mod:`skunetseg.tta`),
        map each back and merge them. Views are predicted in batches.
    tta_merge : {"mean", "gmean", "max"}, default="mean"
        How the views' probabilities are merged.
    mixed_precision : "auto" or bool, default="auto"
        Compute in float16 with float32 weights; ``"auto"`` does so on a GPU only.
    distribute : {"auto", "mirrored"} or None, default="auto"
        Data-parallel training through ``tf.distribute``: ``"mirrored"`` trains
        one replica per visible GPU (``tf.distribute.MirroredStrategy``; the CPU
        when there is none), ``"auto"`` does so when more than one GPU is
        visible, None never. ``batch_size`` is the global batch, split across
        the replicas.
    callbacks : list of keras.callbacks.Callback, default=None
        Extra Keras callbacks; each fit uses shallow copies, the list itself is
        left untouched.
    fit_in_subprocess : bool, default=False
        Train in a fresh worker process that exits after the fit, bringing back
        only the weights and the history. TensorFlow keeps about the size of the
        weights and optimizer state of every model trained in a process (an
        upstream leak, see the design notes); in a worker that memory is freed
        when the fit ends, so many fits in one process (a grid search, a fold
        ensemble) do not grow its memory. Costs a few seconds per fit to start
        the worker and to copy the training images to it; ``callbacks`` must
        pickle and run in the worker.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the weight initialisation and the batch
        order: two fits on the CPU with the same integer give the same model.
    verbose : int, default=0
        0 silent, 1 a progress bar per epoch, 2 one line per epoch.

    Attributes
    ----------
    classes_ : ndarray
        The labels of ``y`` (binary and multiclass), or the channel indices
        (multilabel).
    n_classes_ : int
        Number of classes.
    target_type_ : {"binary", "multilabel", "multiclass"}
        How ``y`` was read; ``predict`` returns masks of the same kind and shape.
    n_channels_in_ : int
        Channels of the images seen in ``fit``.
    history_ : list of dict
        One dict per epoch: ``epoch``, ``loss``, ``dice``, ``mask_accuracy``, their
        ``val_`` twins when validating, and ``learning_rate``.
    best_epoch_ : int
        The epoch whose weights were kept.
    bn_momentum_ : float
        The BatchNormalization momentum used.
    model_ : keras.Model
        The trained network (rebuilt from its weights after unpickling).

    See Also
    --------
    skunetseg.ImagePreprocessor : ImageNet input normalisation for pretrained encoders.
    skunetseg.metrics.dice_score : The Kaggle Dice used by ``score``.

    Notes
    -----
    Images of any size are padded (reflected) to a multiple of 32 and the
    predictions cropped back. ``uint8`` and ``uint16`` images are scaled to
    [0, 1]; other dtypes are used as they are. TensorFlow is imported on the
    first ``fit``, ``predict`` or load, never by ``import skunetseg``.

    Pickling (``joblib.dump``) stores the parameters and the weights, never the
    compiled Keras model; loading rebuilds the network. Pickle files run code
    when loaded: load only files you trust, or use :meth:`save` and
    :func:`skunetseg.load`.

    Examples
    --------
    >>> from skunetseg import UNetSegmenter
    >>> from skunetseg.datasets import load_membrane
    >>> data = load_membrane()  # doctest: +SKIP
    >>> model = UNetSegmenter(backbone="efficientnetb0", epochs=40, random_state=0)
    >>> model.fit(data.images[:20], data.masks[:20])  # doctest: +SKIP
    >>> model.score(data.images[20:], data.masks[20:])  # doctest: +SKIP
    """

    _parameter_constraints = {
        "backbone": [str],
        "encoder_weights": [None, str, os.PathLike],
        "decoder_filters": ["array-like"],
        "loss": [StrOptions(set(LOSS_NAMES)), HasMethods("__call__")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "accumulate_steps": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping_patience": [Interval(Integral, 0, None, closed="left"), None],
        "reduce_lr_patience": [Interval(Integral, 0, None, closed="left"), None],
        "reduce_lr_factor": [Interval(Real, 0, 1, closed="neither")],
        "bn_momentum": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="left")],
        "threshold": [Interval(Real, 0, 1, closed="neither"), "array-like"],
        "min_area": [Interval(Real, 0, None, closed="left"), "array-like"],
        "min_component_area": [Interval(Real, 0, None, closed="left"), "array-like"],
        "augment": [None, StrOptions(set(AUGMENT_PRESETS)), HasMethods(["augment_batch"])],
        "tta": [None, StrOptions(set(TTA_PRESETS)), list, tuple],
        "tta_merge": [StrOptions(set(MERGE_METHODS))],
        "mixed_precision": [StrOptions({"auto"}), "boolean"],
        "distribute": [StrOptions({"auto", "mirrored"}), None],
        "callbacks": [list, None],
        "fit_in_subprocess": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone="efficientnetb2",
        *,
        encoder_weights=None,
        decoder_filters=(256, 128, 64, 32, 16),
        loss="jaccard",
        learning_rate=1e-3,
        batch_size=8,
        accumulate_steps=1,
        epochs=50,
        validation_fraction=0.1,
        early_stopping_patience=10,
        reduce_lr_patience=5,
        reduce_lr_factor=0.5,
        bn_momentum="auto",
        threshold=0.5,
        min_area=0,
        min_component_area=0,
        augment=None,
        tta=None,
        tta_merge="mean",
        mixed_precision="auto",
        distribute="auto",
        callbacks=None,
        fit_in_subprocess=False,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.encoder_weights = encoder_weights
        self.decoder_filters = decoder_filters
        self.loss = loss
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.accumulate_steps = accumulate_steps
        self.epochs = epochs
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.reduce_lr_patience = reduce_lr_patience
        self.reduce_lr_factor = reduce_lr_factor
        self.bn_momentum = bn_momentum
        self.threshold = threshold
        self.min_area = min_area
        self.min_component_area = min_component_area
        self.augment = augment
        self.tta = tta
        self.tta_merge = tta_merge
        self.mixed_precision = mixed_precision
        self.distribute = distribute
        self.callbacks = callbacks
        self.fit_in_subprocess = fit_in_subprocess
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, validation_data=None):
        """Train the U-Net on images ``X`` and masks ``y``.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)
            Images of any real dtype and any size.
        y : array-like of shape (n_images, H, W), (n_images, H, W, 1) or (n_images, H, W, K)
            Binary masks, multiclass label maps, or multilabel 0/1 masks.
        validation_data : tuple (X_val, y_val), default=None
            Images and masks to watch ``val_dice`` on; when None,
            ``validation_fraction`` of ``X`` is held out.

        Returns
        -------
        self : UNetSegmenter
        """
        self._check_params()
        images = check_images(X, name="X")
        encoding = fit_target_encoding(y, name="y")
        targets = encode_targets(y, encoding, name="y")
        self._check_same_layout(images, targets, "X", "y")
        self._postprocessing(encoding)
        train, valid = self._split(images, targets, validation_data, encoding)
        resolve_augmenter(self.augment)  # validate it here, before any worker starts
        self._model = None
        self.__dict__.pop("_weights", None)  # left by unpickling: replaced by this fit
        self._set_target_layout(encoding, images.shape[-1])
        if self.fit_in_subprocess:
            weights, self.history_, self.best_epoch_, self.bn_momentum_ = run_in_worker(
                _train_network, self, train, valid)
            self._weights = weights  # model_ rebuilds the network on first use
        else:
            model, self.history_, self.best_epoch_, self.bn_momentum_ = self._train(train, valid)
            self._model = model
        return self

    def _train(self, train, valid):
        """Build, compile and train the network on encoded arrays (the Keras half of fit).

        Returns
        -------
        model, history, best_epoch, bn_momentum
        """
        keras_side = _keras_side()
        keras_side.release_memory()
        steps_per_epoch = math.ceil(len(train[0]) / self.batch_size)
        momentum = (keras_side.auto_batchnorm_momentum(steps_per_epoch)
                    if self.bn_momentum == "auto" else float(self.bn_momentum))
        augmenter = resolve_augmenter(self.augment)
        seed = self._seed()
        if augmenter is None:
            training = (self._network_input(train[0]), pad_to_multiple(train[1]))
        else:
            training = keras_side.AugmentedBatches(
                *train, augmenter=augmenter, batch_size=self.batch_size,
                prepare_images=self._network_input, mask_fill=self._encoding.background,
                seed=seed)
        with keras_side.seeded(seed), keras_side.distribution_scope(self.distribute):
            model = self._build_model(keras_side, self.encoder_weights)
            keras_side.set_batchnorm_momentum(model, momentum)
            keras_side.compile_model(
                model, loss=self.loss, activation=self._encoding.activation,
                learning_rate=self.learning_rate, accumulate_steps=self.accumulate_steps,
                threshold=self._graph_threshold(),
            )
            history, best_epoch = keras_side.train(
                model, training,
                validation_data=(None if valid is None else
                                 (self._network_input(valid[0]), pad_to_multiple(valid[1]))),
                epochs=self.epochs, batch_size=self.batch_size,
                early_stopping_patience=self.early_stopping_patience,
                reduce_lr_patience=self.reduce_lr_patience,
                reduce_lr_factor=self.reduce_lr_factor,
                callbacks=[copy.copy(callback) for callback in self.callbacks or []],
                verbose=self.verbose,
            )
        return model, history, best_epoch, momentum

    def _set_target_layout(self, encoding, n_channels):
        """Set the fitted attributes that describe the targets and the input channels."""
        self._encoding = encoding
        self.target_type_ = encoding.target_type
        self.classes_ = encoding.classes
        self.n_classes_ = len(encoding.classes)
        self.n_channels_in_ = n_channels

    def _check_params(self):
        check_backbone(self.backbone)
        filters = self.decoder_filters
        if (isinstance(filters, str) or len(filters) != 5
                or not all(isinstance(f, Integral) and f > 0 for f in filters)):
            raise ValueError("The 'decoder_filters' parameter must be 5 positive integers, "
                             f"one per decoder block; got {filters!r}.")
        weights = self.encoder_weights
        if weights is not None and weights != "imagenet" and not os.path.isfile(weights):
            raise ValueError(
                "The 'encoder_weights' parameter must be None, 'imagenet' or the path of "
                f"an existing weights file; got {weights!r}."
            )

    @staticmethod
    def _check_same_layout(images, targets, images_name, targets_name):
        if len(images) != len(targets):
            raise ValueError(
                f"{images_name} and {targets_name} must hold the same number of images; got "
                f"{len(images)} and {len(targets)}."
            )
        if images.shape[1:3] != targets.shape[1:3]:
            raise ValueError(
                f"The masks in {targets_name} must have the height and width of the images in "
                f"{images_name}; got {targets.shape[1:3]} and {images.shape[1:3]}."
            )

    def _split(self, images, targets, validation_data, encoding):
        """Return ((X_train, Y_train), (X_val, Y_val) or None)."""
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a tuple (X_val, y_val).")
            valid_images = check_images(validation_data[0], name="validation_data[0]",
                                        n_channels=images.shape[-1])
            valid_targets = encode_targets(validation_data[1], encoding, name="validation_data[1]")
            self._check_same_layout(valid_images, valid_targets,
                                    "validation_data[0]", "validation_data[1]")
            return (images, targets), (valid_images, valid_targets)
        if self.validation_fraction == 0:
            return (images, targets), None
        n_images = len(images)
        n_valid = math.ceil(self.validation_fraction * n_images)
        if n_valid >= n_images:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} holds out {n_valid} of the "
                f"{n_images} images and leaves none to train on; lower it, set it to 0, or "
                "pass validation_data."
            )
        order = check_random_state(self._seed()).permutation(n_images)
        train, valid = np.sort(order[n_valid:]), np.sort(order[:n_valid])
        return (images[train], targets[train]), (images[valid], targets[valid])

    def _seed(self):
        """An integer seed for Keras, or None; stable across calls for a RandomState."""
        if self.random_state is None:
            return None
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # ---------------------------------------------------------- the network
    def _needs_rgb(self):
        return self.encoder_weights is not None

    def _network_channels(self):
        if self._needs_rgb():
            if self.n_channels_in_ not in (1, 3):
                raise ValueError(
                    f"A pretrained encoder (encoder_weights={self.encoder_weights!r}) takes "
                    f"3 channels; X has {self.n_channels_in_}. Use encoder_weights=None to "
                    "train on any number of channels."
                )
            return 3
        return self.n_channels_in_

    def _network_input(self, images):
        """Repeat gray images for a 3-channel encoder and pad to a multiple of 32."""
        if self._network_channels() != images.shape[-1]:
            images = np.repeat(images, 3, axis=-1)
        return pad_to_multiple(images)

    def _build_model(self, keras_side, encoder_weights):
        return keras_side.build_unet(
            backbone=self.backbone, encoder_weights=encoder_weights,
            n_channels=self._network_channels(), n_outputs=self._encoding.n_outputs,
            activation=self._encoding.activation, decoder_filters=self.decoder_filters,
            policy=keras_side.resolve_mixed_precision(self.mixed_precision),
        )

    @property
    def model_(self):
        """The trained Keras model, rebuilt from the stored weights when needed."""
        model = self.__dict__.get("_model")
        if model is None:
            weights = self.__dict__.get("_weights")
            if weights is None:
                raise NotFittedError(
                    f"This {type(self).__name__} instance is not fitted yet. Call 'fit' "
                    "with appropriate arguments before using this estimator."
                )
            keras_side = _keras_side()
            # never download on load: the stored weights replace the initial ones
            model = self._build_model(keras_side, encoder_weights=None)
            model.set_weights(weights)
            self._model = model
            del self._weights
        return model

    def __getstate__(self):
        # a copy: BaseEstimator.__getstate__ may return the live __dict__ itself
        state = dict(super().__getstate__())
        model = state.pop("_model", None)
        if model is not None:
            state["_weights"] = model.get_weights()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._model = None

    def __copy__(self):
        # a shallow copy shares the trained network (copy.deepcopy goes through
        # __getstate__ and gets its own network, rebuilt from the weights)
        duplicate = type(self).__new__(type(self))
        duplicate.__dict__.update(self.__dict__)
        return duplicate

    # -------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Class probabilities of every pixel.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)

        Returns
        -------
        proba : ndarray of shape (n_images, H, W, K), dtype float32
            K is 1 for binary targets, else the number of classes.
        """
        check_is_fitted(self)
        images = check_images(X, name="X", n_channels=self.n_channels_in_)
        transforms = resolve_tta(self.tta, *images.shape[1:3])
        if self.tta is None:
            return self._predict_views(images)
        return predict_with_tta(self._predict_views, images, transforms, merge=self.tta_merge,
                                batch_images=_TTA_CHUNK_BATCHES * self.batch_size)

    def _predict_views(self, images):
        """Network probabilities of ready images, padded for the network and cropped back."""
        height, width = images.shape[1:3]
        proba = _keras_side().predict(self.model_, self._network_input(images), self.batch_size)
        return proba[:, :height, :width]

    def _postprocessing(self, encoding):
        """The validated (threshold, min_area, min_component_area), one value per output."""
        return check_postprocessing(
            encoding.n_outputs, threshold=self.threshold, min_area=self.min_area,
            min_component_area=self.min_component_area, activation=encoding.activation)

    def _graph_threshold(self):
        """The threshold(s) of the in-graph Dice that training watches."""
        return [float(t) for t in self._postprocessing(self._encoding)[0]]

    def _binary_masks(self, proba):
        """Post-processed bool ``(n, H, W, K)`` masks of the predicted classes."""
        threshold, min_area, min_component_area = self._postprocessing(self._encoding)
        return postprocess(proba, threshold=threshold, min_area=min_area,
                           min_component_area=min_component_area,
                           activation=self._encoding.activation)

    # ---------------------------------------------------------------- misc
    def save(self, path, *, overwrite=False):
        """Save without pickle: a Keras archive of the network plus JSON parameters.

        See :func:`skunetseg.save_model`.
        """
        from ._persistence import save_model

        save_model(self, path, overwrite=overwrite)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.non_deterministic = self.random_state is None
        return tags
