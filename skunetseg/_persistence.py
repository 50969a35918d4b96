"""Saving and loading UNetSegmenter without pickle.

A saved model is a folder holding ``model.keras`` (the Keras archive of the
network) and ``skunetseg.json`` (the estimator's parameters and fitted
attributes). Loading reads the JSON and opens the archive with Keras'
``safe_mode``, which refuses to deserialize arbitrary code (lambdas), unlike
``pickle``/``joblib`` files, which run whatever code they hold when loaded.
"""

import json
import os
import shutil
import tempfile
from numbers import Integral

import numpy as np

FORMAT_VERSION = 1
_PARAMS_FILE = "skunetseg.json"
_MODEL_FILE = "model.keras"


def _json_params(estimator):
    params = estimator.get_params(deep=False)
    if params["callbacks"]:
        params["callbacks"] = None  # Keras callbacks are code; they are not saved
    if not (params["random_state"] is None or isinstance(params["random_state"], Integral)):
        params["random_state"] = None
    if not isinstance(params["loss"], str):
        from ._backend import keras

        params["loss"] = {"keras_loss": keras.losses.serialize(params["loss"])}
    params["decoder_filters"] = [int(f) for f in params["decoder_filters"]]
    from .augment import augment_to_json

    params["augment"] = augment_to_json(params["augment"])
    if params["input_size"] is not None:
        params["input_size"] = [int(v) for v in params["input_size"]]
    for name in ("threshold", "min_area", "min_component_area"):
        if params[name] is not None and np.ndim(params[name]) == 1:
            params[name] = [float(v) for v in params[name]]  # per class
        elif params[name] is not None:
            params[name] = float(params[name])
    if params["encoder_weights"] is not None:
        params["encoder_weights"] = os.fspath(params["encoder_weights"])
    return params


def save_model(estimator, path, *, overwrite=False):
    """Save a fitted :class:`~skunetseg.UNetSegmenter` to the folder ``path``.

    Parameters
    ----------
    estimator : UNetSegmenter
        A fitted estimator.
    path : str or os.PathLike
        The folder to create. It must not exist yet unless ``overwrite=True``;
        the folder is written elsewhere first and moved into place at the end,
        so an error leaves an existing one as it was.
    overwrite : bool, default=False
        Replace an existing folder at ``path``.

    Notes
    -----
    Extra ``callbacks`` are not saved; a loaded model has ``callbacks=None``.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
    encoding = estimator._encoding
    document = {
        "format_version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": _json_params(estimator),
        "fitted": {
            "target_type": encoding.target_type,
            "classes": encoding.classes.tolist(),
            "classes_dtype": encoding.classes.dtype.str,
            "channel_axis": encoding.channel_axis,
            "n_channels_in": int(estimator.n_channels_in_),
            "history": estimator.history_,
            "best_epoch": estimator.best_epoch_,
            "bn_momentum": estimator.bn_momentum_,
        },
    }
    parent = os.path.dirname(os.path.abspath(path))
    staging = tempfile.mkdtemp(prefix=".skunetseg-", dir=parent)
    try:
        estimator.model_.save(os.path.join(staging, _MODEL_FILE))
        with open(os.path.join(staging, _PARAMS_FILE), "w") as file:
            json.dump(document, file, indent=2)
        if os.path.exists(path):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load(path):
    """Load a model saved with :meth:`UNetSegmenter.save` or :func:`save_model`.

    Parameters
    ----------
    path : str or os.PathLike
        The saved folder.

    Returns
    -------
    estimator : UNetSegmenter
        Fitted, with the saved weights.
    """
    from ._keras_estimator import _keras_side
    from ._segmenter import UNetSegmenter
    from ._targets import TargetEncoding

    path = os.fspath(path)
    params_file = os.path.join(path, _PARAMS_FILE)
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f"{path!r} is not a saved skunetseg model: {_PARAMS_FILE} "
                                "is missing.")
    with open(params_file) as file:
        document = json.load(file)
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} was saved in format {document.get('format_version')!r}; "
                         f"this skunetseg reads format {FORMAT_VERSION}.")
    params = document["params"]
    if isinstance(params["loss"], dict):
        from ._backend import keras

        params["loss"] = keras.losses.deserialize(params["loss"]["keras_loss"])
    params["decoder_filters"] = tuple(params["decoder_filters"])
    from .augment import augment_from_json

    params["augment"] = augment_from_json(params["augment"])
    if params.get("input_size") is not None:
        params["input_size"] = tuple(params["input_size"])
    estimator = UNetSegmenter(**params)
    fitted = document["fitted"]
    encoding = TargetEncoding(
        fitted["target_type"],
        np.asarray(fitted["classes"], dtype=np.dtype(fitted["classes_dtype"])),
        fitted["channel_axis"],
    )
    estimator._set_target_layout(encoding, fitted["n_channels_in"])
    estimator.history_ = fitted["history"]
    estimator.best_epoch_ = fitted["best_epoch"]
    estimator.bn_momentum_ = fitted["bn_momentum"]
    estimator._model = _keras_side().load_archive(os.path.join(path, _MODEL_FILE))
    return estimator
