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
from ._images import pad_to_multiple
from ._persistence import PARAMS_FILE, SaveMixin
from .augment import AUGMENT_PRESETS


def _keras_side():
    """The Keras half of the estimators; importing it loads TensorFlow."""
    from . import _model

    return _model


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
    ``loss``, whose allowed values each estimator declares itself.
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
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
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

    def _validation_rows(self, n_images):
        """Sorted row indices ``(train, valid)`` holding out ``validation_fraction``.

        ``valid`` is None when ``validation_fraction`` is 0.
        """
        if self.validation_fraction == 0:
            return np.arange(n_images), None
        n_valid = math.ceil(self.validation_fraction * n_images)
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
