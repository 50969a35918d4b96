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
from numbers import Integral

import numpy as np

from . import _atomic

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
        the folder is written beside it first (a hidden staging folder) and
        moved into place at the end, so an error leaves an existing one as it
        was and no staging folder behind.
    overwrite : bool, default=False
        Replace an existing folder at ``path``.

    Notes
    -----
    Extra ``callbacks`` are not saved; a loaded model has ``callbacks=None``.

    With ``overwrite=True`` the old folder is renamed to a hidden backup
    (``.<name>.skunetseg-backup`` beside it), the new one renamed to ``path``,
    and the backup deleted: at every instant a complete model is on disk. If
    the process dies between the two renames, :func:`load` finds the backup
    and loads it, with a warning.
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
            **({"input_dtype": estimator.input_dtype_,
                "input_range": [float(v) for v in estimator.input_range_]}
               if hasattr(estimator, "input_dtype_") else {}),
        },
    }
    staging = _atomic.staging_folder(path)
    try:
        estimator.model_.save(os.path.join(staging, _MODEL_FILE))
        with open(os.path.join(staging, _PARAMS_FILE), "w") as file:
            json.dump(document, file, indent=2)
        _atomic.replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once moved into place


def _damaged(path, what):
    return ValueError(f"{path!r} is not a loadable skunetseg model: {what}. Save the model "
                      "again (or restore the folder from a backup).")


def _read_document(path):
    params_file = os.path.join(path, _PARAMS_FILE)
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f"{path!r} is not a saved skunetseg model: {_PARAMS_FILE} "
                                "is missing.")
    try:
        with open(params_file, encoding="utf-8") as file:
            document = json.load(file)
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise _damaged(path, f"{params_file!r} is not valid JSON (truncated or edited?): "
                       f"{error}") from None
    if not isinstance(document, dict):
        raise _damaged(path, f"{params_file!r} does not hold a JSON object")
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} was saved in format {document.get('format_version')!r}; "
                         f"this skunetseg reads format {FORMAT_VERSION}.")
    return document


def _load_network(path, archive):
    """The Keras model of ``archive``, or a ValueError naming it when it is damaged."""
    import zipfile

    from ._keras_estimator import _keras_side

    if not os.path.isfile(archive):
        raise FileNotFoundError(f"{path!r} is not a complete saved skunetseg model: "
                                f"{_MODEL_FILE} is missing.")
    try:
        with zipfile.ZipFile(archive) as bundle:
            bad = bundle.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _damaged(path, f"{archive!r} is truncated or corrupted (not a readable "
                       f"Keras zip archive: {error})") from None
    if bad is not None:
        raise _damaged(path, f"the member {bad!r} of {archive!r} is corrupted (CRC mismatch)")
    try:
        return _keras_side().load_archive(archive)
    except Exception as error:
        raise _damaged(path, f"Keras could not load {archive!r}: {error}") from None


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

    Raises
    ------
    FileNotFoundError
        If ``path`` or one of its two files is missing.
    ValueError
        If a file is truncated or corrupted, or the JSON and the Keras archive
        disagree (another network than the parameters describe); the message
        names the file.

    Notes
    -----
    When ``path`` is missing but the backup that ``save(path, overwrite=True)``
    keeps while it swaps folders is present (the process died mid-swap), the
    backup is loaded, with a warning.
    """
    import warnings

    from ._segmenter import UNetSegmenter
    from ._targets import TargetEncoding

    path = os.fspath(path)
    backup = _atomic.backup_path(path)
    if not os.path.exists(path) and os.path.isdir(backup):
        warnings.warn(f"{path!r} is missing but the backup {backup!r} left by an interrupted "
                      "save(overwrite=True) is there; loading the backup. Save the model again "
                      f"to {path!r}.", UserWarning, stacklevel=2)
        path = backup
    document = _read_document(path)
    try:
        params = dict(document["params"])
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
        if "input_dtype" in fitted:
            estimator._record_input(fitted["input_dtype"], fitted["input_range"])
    except (KeyError, TypeError, ValueError) as error:
        raise _damaged(path, f"{os.path.join(path, _PARAMS_FILE)!r} lacks or garbles an entry "
                       f"({type(error).__name__}: {error})") from None
    estimator._record_architecture()
    model = _load_network(path, os.path.join(path, _MODEL_FILE))
    channels, outputs = model.input_shape[-1], model.output_shape[-1]
    expected = (estimator._network_channels(), encoding.n_outputs)
    if (channels, outputs) != expected:
        raise _damaged(path, f"{os.path.join(path, _MODEL_FILE)!r} holds a network of "
                       f"{channels} input and {outputs} output channel(s), but "
                       f"{_PARAMS_FILE} describes {expected[0]} and {expected[1]}")
    estimator._model = model
    return estimator
