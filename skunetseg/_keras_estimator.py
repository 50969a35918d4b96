"""What every skunetseg estimator that owns one Keras network shares.

:class:`KerasModelMixin` keeps the trained network out of pickles (it stores
the weights and rebuilds the network on first use), makes shallow copies share
the network, and holds the small helpers that depend only on the common
parameters ``encoder_weights``, ``validation_fraction`` and ``random_state``.
Its one hook is :meth:`KerasModelMixin._build_model`.
"""

import copy
import hashlib
import math
import os
import sys
import threading
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from ._base import check_params_now
from ._docstrings import insert_parameters, parameter_entries
from ._images import pad_to_multiple
from ._persistence import PARAMS_FILE, SaveMixin
from ._targets import balances
from .augment import AUGMENT_PRESETS

#: ``validation_fraction="auto"`` holds out this share of the training images...
AUTO_VALIDATION_FRACTION = 0.1
#: ...when more than half of them are empty and there are at least this many.
AUTO_VALIDATION_MIN_IMAGES = 20


def _keras_side():
    """The Keras half of the estimators; importing it loads TensorFlow."""
    from . import _model

    return _model


#: The numpydoc entries of the parameters in ``KerasModelMixin._parameter_constraints``,
#: written once for both Keras estimators (and for the command line's help). An
#: estimator's docstring holds a line ``%(name)s`` where each goes, and
#: :meth:`KerasModelMixin.__init_subclass__` puts the entry in with the estimator's own
#: default; lines the docstring writes beneath the marker add what holds for that
#: estimator only (skunetseg._docstrings). The first sentence of each description, up to a
#: colon or semicolon, is the help of the command line's option (skunetseg.cli): it should
#: read on its own.
SHARED_PARAMETERS_DOC = """
backbone : str, default=%(default)s
    Encoder name from segmentation-models (``"efficientnetb0"`` ...
    ``"efficientnetb7"``, ``"resnet18"`` ... , ``"vgg16"``, ``"mobilenetv2"``,
    ...). The densenets do not build under Keras 3 and are rejected.
encoder_weights : None, "imagenet" or path, default=%(default)s
    Initial encoder weights: random (train from scratch), ImageNet (needs the
    weights file in Keras' cache or the internet), or a local weights file of
    the encoder without its classification top. Pretrained encoders take 3
    channels: gray images are repeated.
input_size : None or tuple (height, width), default=%(default)s
    Train and predict at this size: every image is resized to it (area
    interpolation when shrinking, bilinear otherwise), so that images of
    different sizes go together. Any positive size works: the network input
    is still padded to a multiple of 32. None uses the images as they are, all
    of one size.
binarize_masks : bool, default=%(default)s
    Binarise the masks before reading their labels, with
    :func:`skunetseg.io.binarize_mask`: a pixel is foreground when its value
    is above half of the dtype's maximum (``uint8`` > 127, ``uint16`` >
    32767; bool and float > 0.5). For masks saved as JPEG or drawn
    anti-aliased.
learning_rate : float, default=%(default)s
    Initial learning rate of Adam.
batch_size : int, default=%(default)s
    Images per forward pass, in training and prediction.
accumulate_steps : int, default=%(default)s
    Batches whose gradients are averaged before each weight update:
    ``batch_size=16, accumulate_steps=8`` updates once per 128 images.
epochs : int, default=%(default)s
    Most passes over the training images.
max_empty_share : float in (0, 1) or None, default=%(default)s
    Largest share of an epoch given to images that hold no object, for
    mostly-empty data (defects, clouds). When such images make up more than
    this share of the training images, each epoch keeps its length (as many
    images as the training set) but is drawn so that they make up this share
    of it: a fresh draw of distinct empty images, and the images that hold an
    object, each as often as the others, for the rest. Over the epochs every
    empty image is seen. None trains on every image once every epoch. Data
    with this share of empty images or fewer is not affected.
validation_fraction : float or "auto", default=%(default)s
    Share of the training images held out (drawn with ``random_state``) to
    watch a score on when ``fit`` gets no ``validation_data``. Early stopping
    and the learning-rate reductions follow the watched score, and the
    weights of the epoch with the best one are kept. With 0 every image
    trains, the training loss is watched, and the last epoch's weights are
    kept. ``"auto"``: 0.1 on mostly-empty data (more than half of at least
    20 training images hold no object, where one run of epochs can end
    painting many empty images or none), 0 otherwise.
early_stopping_patience : int or None, default=%(default)s
    Epochs without a better watched score (see ``validation_fraction``)
    before training stops; None trains all ``epochs``. With validation images
    the weights of the best epoch are kept, without them those of the last.
reduce_lr_patience : int or None, default=%(default)s
    Epochs without a better watched score before the learning rate is
    multiplied by ``reduce_lr_factor``; None keeps it constant.
reduce_lr_factor : float, default=%(default)s
    Factor of each learning-rate reduction.
bn_momentum : "auto" or float, default=%(default)s
    Momentum of the BatchNormalization moving statistics. ``"auto"`` makes
    their average span about one epoch (at most Keras' 0.99), so that a model
    trained from scratch on few images predicts well in inference mode.
augment : None, str, Augmenter or albumentations pipeline, default=%(default)s
    Training augmentation. None trains on the images as they are: whether a
    flipped image is still a valid example depends on the data (seismic
    sections and street scenes have an up and a down), and at equal epochs
    the flips won on some public sets and lost on others (docs/design.md).
    ``"flips"`` (left-right and upside-down, each with probability 0.5),
    ``"d4"`` (flips and 90° rotations), ``"seed"`` (the Kaggle recipe: flips
    and shift-scale-rotate), an :class:`~skunetseg.augment.Augmenter` whose
    own parameters (probabilities, limits, ``crop_size``,
    brightness/contrast) a grid search can tune as ``augment__<name>``, or an
    albumentations pipeline (any callable ``pipeline(image=..., mask=...) ->
    dict``; see :class:`~skunetseg.augment.PipelineAugmenter`). Batches are
    augmented on worker threads.
mixed_precision : "auto", "bfloat16" or bool, default=%(default)s
    Compute in a 16-bit float type with float32 weights. True: float16.
    ``"auto"``: float16 on a GPU, float32 on a CPU. ``"bfloat16"``:
    prediction in bfloat16 (about 2.4x as fast on a CPU whose flags report
    ``avx512_bf16`` or ``amx_bf16``, slower on others; the masks change a
    little: Dice within 0.005 of float32's in docs/benchmarks.md), training
    in bfloat16 on a GPU and in float32 on a CPU (where bfloat16 measured
    slower). False: float32. Whatever the precision a model was trained in,
    it predicts in the one chosen here, with the same weights; predictions
    always come back as float32.
callbacks : list of keras.callbacks.Callback, default=%(default)s
    Extra Keras callbacks; each fit uses shallow copies, the list itself is
    left untouched.
random_state : int, RandomState instance or None, default=%(default)s
    Seeds the validation split, the weight initialisation and the batch
    order.
verbose : int, default=%(default)s
    0 silent, 1 a progress bar per epoch, 2 one line per epoch.
"""


class KerasModelMixin(SaveMixin):
    """Persistence and input plumbing of an estimator backed by one Keras model.

    The estimator sets ``self._model`` at the end of ``fit`` and implements
    ``_build_model(keras_side, encoder_weights)``, which returns the
    uncompiled network for the fitted attributes (``keras_side`` is
    :mod:`skunetseg._model`). Pickling stores ``model.get_weights()`` instead of
    the Keras model; :attr:`model_` rebuilds the network (never downloading
    weights) and loads them on first use. ``copy.copy`` shares the network,
    ``copy.deepcopy`` gets its own.

    ``_build_model`` also takes ``policy``, the Keras dtype policy to build
    under (None: the training one); :meth:`_predict_network` builds the
    prediction network with it when prediction computes in another precision.

    It declares the parameters both estimators share in its
    ``_parameter_constraints``, which each estimator merges into its own: the
    helpers that check the weights, draw the seed and the validation split, and
    prepare the network input read ``encoder_weights``, ``validation_fraction``,
    ``mixed_precision``, ``random_state`` and, once fitted, ``n_channels_in_``;
    :meth:`_build_and_train` reads the training parameters (``learning_rate``,
    ``batch_size``, ``accumulate_steps``, ``epochs``, ``bn_momentum``, the
    early-stopping and learning-rate settings, ``callbacks``, ``verbose``) and
    ``loss``, whose allowed values each estimator declares itself. It describes
    them once, in :data:`SHARED_PARAMETERS_DOC`: a subclass's docstring names
    each with a line ``%(name)s``, which :meth:`__init_subclass__` replaces
    with the entry and the subclass's default.
    """

    #: The parameters both Keras estimators share, which this mixin (and its training
    #: sequence) reads: each estimator merges them into its own constraints, the
    #: scikit-learn way (``{**KerasModelMixin._parameter_constraints, ...}``), and adds
    #: its own parameters and its own ``loss`` and ``threshold``.
    _parameter_constraints = {
        "backbone": [str],
        "encoder_weights": [None, str, os.PathLike],
        "input_size": [None, "array-like"],
        "binarize_masks": ["boolean"],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "accumulate_steps": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "max_empty_share": [Interval(Real, 0, 1, closed="neither"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="left"), StrOptions({"auto"})],
        "early_stopping_patience": [Interval(Integral, 0, None, closed="left"), None],
        "reduce_lr_patience": [Interval(Integral, 0, None, closed="left"), None],
        "reduce_lr_factor": [Interval(Real, 0, 1, closed="neither")],
        "bn_momentum": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="left")],
        "augment": [None, StrOptions(set(AUGMENT_PRESETS)), HasMethods(["augment_batch"]),
                    callable],
        "mixed_precision": [StrOptions({"auto", "bfloat16"}), "boolean"],
        "callbacks": [list, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    #: The parameters that shape the network: changing one after fit needs a refit.
    _architecture_params = ("backbone", "encoder_weights")

    # save/load (skunetseg._persistence): Keras callbacks are code, not saved; the network
    # goes to its own Keras archive instead of the JSON
    _unsaved_params = {"callbacks": None}
    _unsaved_state = ("_model", "_weights", "_rebuild_lock")

    def __init_subclass__(cls, **kwargs):
        # the shared parameters' entries go into the docstring, with this class's defaults
        super().__init_subclass__(**kwargs)
        cls.__doc__ = insert_parameters(cls.__doc__, parameter_entries(SHARED_PARAMETERS_DOC),
                                        cls._get_param_defaults())

    def _build_model(self, keras_side, encoder_weights, policy=None):
        raise NotImplementedError

    def _network_outputs(self):
        """Output channels of the network (what the fitted attributes say)."""
        raise NotImplementedError

    def _saved_networks(self):
        if self.__dict__.get("_model") is None and self.__dict__.get("_weights") is None:
            return {}  # not fitted (a template inside a meta-estimator)
        return {"model": self.model_}

    def _restore_networks(self, networks):
        model = networks["model"]
        found = (model.input_shape[-1], model.output_shape[-1])
        expected = (self._network_channels(), self._network_outputs())
        if found != expected:
            return (f"a network of {found[0]} input and {found[1]} output channel(s), but "
                    f"{PARAMS_FILE} describes {expected[0]} and {expected[1]}")
        self._model = model
        return None

    def _forget_model(self):
        """Drop the network and any weights left by unpickling, before a new fit."""
        self._model = None
        self.__dict__.pop("_weights", None)

    # ------------------------------------------------- the fitted network
    def _architecture(self):
        """The architecture parameters as comparable values."""
        values = {}
        for name in self._architecture_params:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif name == "decoder_filters":
                value = tuple(int(v) for v in value)
            values[name] = value
        return values

    def _record_architecture(self):
        self._fit_architecture = self._architecture()

    def _check_architecture(self):
        """Refuse to use the network when a parameter that shapes it changed after fit."""
        fitted = self.__dict__.get("_fit_architecture")
        if fitted is None:  # pickled before the architecture was recorded
            return
        for name, value in self._architecture().items():
            if name in fitted and fitted[name] != value:
                raise ValueError(
                    f"The parameter {name!r} changed from {fitted[name]!r} to {value!r} after "
                    f"fit; the fitted network was built with {fitted[name]!r}. Refit the "
                    f"estimator, or set {name}={fitted[name]!r} back."
                )

    def _check_predict_params(self, names):
        """Validate the parameters that prediction uses (set_params after fit skips fit's check)."""
        check_params_now(self, names)

    @property
    def model_(self):
        """The trained Keras model, rebuilt from the stored weights when needed."""
        self._check_architecture()
        model = self.__dict__.get("_model")
        if model is not None:
            return model
        # one thread rebuilds; the others wait and then use its network
        with self.__dict__.setdefault("_rebuild_lock", threading.Lock()):
            model = self.__dict__.get("_model")
            if model is not None:
                return model
            weights = self.__dict__.get("_weights")
            if weights is None:
                raise NotFittedError(
                    f"This {type(self).__name__} instance is not fitted yet. Call 'fit' "
                    "with appropriate arguments before using this estimator."
                )
            # never download on load: the stored weights replace the initial ones
            model = self._build_model(_keras_side(), encoder_weights=None)
            model.set_weights(weights)
            self._model = model
            del self._weights
        return model

    def __getstate__(self):
        # a copy: BaseEstimator.__getstate__ may return the live __dict__ itself
        state = dict(super().__getstate__())
        state.pop("_rebuild_lock", None)  # locks do not pickle; __setstate__ makes a new one
        model = state.pop("_model", None)
        if model is not None:
            state["_weights"] = model.get_weights()
        if state.get("_weights") is not None:
            state["_weights_sha256"] = _weights_digest(state["_weights"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        digest = state.pop("_weights_sha256", None)
        if digest is not None and _weights_digest(state.get("_weights")) != digest:
            source = _unpickled_file()
            where = f"the file {source!r}" if source else "the pickled estimator"
            raise ValueError(
                f"The network weights in {where} do not match the SHA-256 digest stored when "
                f"the {type(self).__name__} was pickled: the file is corrupted (damaged on "
                "disk or in transfer). Use an intact copy, or fit and save the model again."
            )
        super().__setstate__(state)
        # parameters added since the estimator was pickled take their defaults
        for name, value in self._get_param_defaults().items():
            self.__dict__.setdefault(name, value)
        self._model = None
        self._rebuild_lock = threading.Lock()

    @classmethod
    def _get_param_defaults(cls):
        import inspect

        return {name: parameter.default
                for name, parameter in inspect.signature(cls.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}

    def __copy__(self):
        # a shallow copy shares the trained network (copy.deepcopy goes through
        # __getstate__ and gets its own network, rebuilt from the weights)
        duplicate = type(self).__new__(type(self))
        duplicate.__dict__.update(self.__dict__)
        return duplicate

    def _predict_network(self):
        """The network to predict with: :attr:`model_`, or its copy under the dtype
        policy that ``mixed_precision`` gives prediction on this machine (see
        :func:`skunetseg._model.resolve_mixed_precision`)."""
        keras_side = _keras_side()
        policy = keras_side.resolve_mixed_precision(self.mixed_precision, purpose="predict")
        return keras_side.under_policy(
            self.model_, policy, lambda: self._build_model(keras_side, None, policy=policy))
    # ------------------------------------------------------ input scale
    def _record_input(self, dtype, value_range):
        """Remember the dtype and value range of the training images."""
        self.input_dtype_ = str(dtype)
        self.input_range_ = (float(value_range[0]), float(value_range[1]))

    def _check_input_scale(self, dtype, value_range, name="X"):
        """Warn when images of ``dtype`` and ``value_range`` cannot be on the fitted scale.

        ``uint8``/``uint16`` images are scaled to [0, 1] by their dtype's maximum,
        other dtypes used as they are; the images a network sees at predict must
        be on the scale it was trained on. Models fitted before the input was
        recorded are not checked.
        """
        fitted_dtype = self.__dict__.get("input_dtype_")
        if fitted_dtype is None:
            return
        fitted = _network_scale(fitted_dtype, self.input_range_)
        given = _network_scale(str(dtype), value_range)
        integer_given = str(dtype) in _SCALED_DTYPES
        if given > _SCALE_FACTOR * max(fitted, 1e-6) or (
                integer_given and fitted > _SCALE_FACTOR * given):
            warnings.warn(
                f"{name} is {dtype} with values in [{value_range[0]:g}, {value_range[1]:g}] "
                f"but the model was fitted on {fitted_dtype} images with values in "
                f"[{self.input_range_[0]:g}, {self.input_range_[1]:g}]. uint8 and uint16 images "
                "are scaled to [0, 1], other dtypes are used as they are, so these images are "
                f"on another scale ({_scale_text(str(dtype), value_range)} against "
                f"{_scale_text(fitted_dtype, self.input_range_)}) and the predictions will be "
                f"wrong. Give {name} as {fitted_dtype} like in fit, or scale it the same way.",
                UserWarning, stacklevel=3,
            )

    # ------------------------------------------------------------ training
    def _build_and_train(self, training, validation, *, n_train, seed, activation, threshold,
                         metrics=None, monitor="dice", mode="max", distribute=None):
        """Build, compile and train the network; return (model, history, best_epoch, momentum).

        ``training`` and ``validation`` are what :func:`skunetseg._model.train`
        takes; ``n_train`` is the number of training images, which sets the
        automatic BatchNormalization momentum. The network is built and
        trained under ``seed`` (the one the training batches use), inside the
        ``distribute`` scope.
        """
        keras_side = _keras_side()
        keras_side.release_memory()
        steps_per_epoch = math.ceil(n_train / self.batch_size)
        momentum = (keras_side.auto_batchnorm_momentum(steps_per_epoch)
                    if self.bn_momentum == "auto" else float(self.bn_momentum))
        with keras_side.seeded(seed), keras_side.distribution_scope(distribute):
            model = self._build_model(keras_side, self.encoder_weights)
            keras_side.set_batchnorm_momentum(model, momentum)
            keras_side.compile_model(
                model, loss=self.loss, activation=activation, learning_rate=self.learning_rate,
                accumulate_steps=self.accumulate_steps, threshold=threshold, metrics=metrics,
            )
            history, best_epoch = keras_side.train(
                model, training, validation_data=validation,
                epochs=self.epochs, batch_size=self.batch_size,
                early_stopping_patience=self.early_stopping_patience,
                reduce_lr_patience=self.reduce_lr_patience,
                reduce_lr_factor=self.reduce_lr_factor,
                callbacks=[copy.copy(callback) for callback in self.callbacks or []],
                verbose=self.verbose, monitor=monitor, mode=mode,
            )
        return model, history, best_epoch, momentum

    # ------------------------------------------------------------ the input
    def _check_encoder_weights(self):
        weights = self.encoder_weights
        if weights is not None and weights != "imagenet" and not os.path.isfile(weights):
            raise ValueError(
                "The 'encoder_weights' parameter must be None, 'imagenet' or the path of "
                f"an existing weights file; got {weights!r}."
            )

    def _seed(self):
        """An integer seed for Keras, or None; stable across calls for a RandomState."""
        if self.random_state is None:
            return None
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _validation_share(self, empty):
        """``validation_fraction`` as a number, for training images whose emptiness (no
        object in the mask) is ``empty`` (bool, one per image)."""
        if not isinstance(self.validation_fraction, str):
            return self.validation_fraction
        mostly_empty = len(empty) >= AUTO_VALIDATION_MIN_IMAGES and balances(empty, 0.5)
        return AUTO_VALIDATION_FRACTION if mostly_empty else 0.0

    def _validation_rows(self, empty):
        """Sorted row indices ``(train, valid)`` holding out ``validation_fraction`` of the
        training images whose emptiness is ``empty`` (see :meth:`_validation_share`).

        ``valid`` is None when nothing is held out.
        """
        n_images = len(empty)
        share = self._validation_share(np.asarray(empty, dtype=bool))
        if share == 0:
            return np.arange(n_images), None
        n_valid = math.ceil(share * n_images)
        if n_valid >= n_images:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} holds out {n_valid} of the "
                f"{n_images} images and leaves none to train on; lower it, set it to 0, or "
                "pass validation_data."
            )
        order = check_random_state(self._seed()).permutation(n_images)
        return np.sort(order[n_valid:]), np.sort(order[:n_valid])

    def _network_channels(self):
        if self.encoder_weights is not None:
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


#: Image dtypes scaled to [0, 1] by their maximum (see skunetseg._images.check_images).
_SCALED_DTYPES = ("uint8", "uint16")

#: How many times larger (or smaller) the predict input's scale may be before a warning.
_SCALE_FACTOR = 8.0


def _network_scale(dtype, value_range):
    """The largest magnitude of the network input for images of ``dtype`` and ``value_range``."""
    if dtype in _SCALED_DTYPES or dtype == "bool":
        return 1.0
    return max(abs(float(value_range[0])), abs(float(value_range[1])))


def _scale_text(dtype, value_range):
    if dtype in _SCALED_DTYPES:
        return "network input up to 1"
    return f"network input up to {_network_scale(dtype, value_range):g}"


def _weights_digest(weights):
    """SHA-256 of a list of weight arrays (their dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for array in weights or ():
        array = np.asarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _unpickled_file():
    """The file name ``joblib.load`` or ``pickle.load`` is reading, when one is on the stack."""
    try:
        frame = sys._getframe(2)
    except ValueError:  # pragma: no cover
        return None
    while frame is not None:
        if frame.f_code.co_name == "load":
            for name in ("filename", "file", "f"):
                value = frame.f_locals.get(name)
                if isinstance(value, (str, os.PathLike)):
                    return os.fspath(value)
                value = getattr(value, "name", None)
                if isinstance(value, str):
                    return value
        frame = frame.f_back
    return None
