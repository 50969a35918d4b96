"""Saving and loading every skunetseg estimator without pickle: one format, one encoder.

A saved estimator is a folder holding ``skunetseg.json``, one Keras archive
(``.keras``) per trained network in the estimator tree, and ``arrays.npz``
when some fitted array is large. The JSON describes the tree recursively: an
estimator is ``{"__type__": <class name>, "params": {...}, "fitted": {...}}``
(``"networks"`` names its archives), its parameters and fitted attributes
encoded by :class:`_Encoder`, which keeps every Python type the estimators use
(tuples, NumPy arrays and scalars, paths, :class:`~skunetseg.tta.Shift`,
augmenters, Keras losses, cross-validation splitters, nested estimators...).

Loading reads the JSON and builds only the classes of a fixed whitelist: the
skunetseg estimators (which register themselves by subclassing
:class:`SaveMixin`, so that this module never imports them), their value
objects, and a few scikit-learn classes. Keras archives are opened in Keras'
``safe_mode`` and ``arrays.npz`` with ``allow_pickle=False``: unlike
``pickle``/``joblib`` files, nothing in a saved folder can run code when it is
loaded.
"""

import dataclasses
import inspect
import json
import math
import os
import pathlib
import re
import shutil
import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    LeaveOneGroupOut,
    LeaveOneOut,
    LeavePGroupsOut,
    LeavePOut,
    PredefinedSplit,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    ShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
    TimeSeriesSplit,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from . import _atomic
from ._targets import TargetEncoding
from .augment import Augmenter, PipelineAugmenter
from .postprocess import PostProcessing
from .tta import Dihedral, Shift

__all__ = ["SaveMixin", "save_model", "load", "FORMAT_VERSION", "InconsistentVersionWarning"]

#: Version 2: any estimator tree; version 1 (a UNetSegmenter only) is still read.
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
PARAMS_FILE = "skunetseg.json"
_MODEL_FILE = "model.keras"
_ARRAYS_FILE = "arrays.npz"
_TYPE = "__type__"
#: Arrays of at most this many elements (and finite) are written into the JSON itself.
_INLINE_ARRAY_SIZE = 64

#: The skunetseg estimators, by class name: every subclass of SaveMixin defined in skunetseg.
_ESTIMATORS = {}

#: The other estimators a saved tree may hold (augmenters, the features filter's classifiers,
#: a FrozenEstimator around a fitted segmenter), by class name.
_OTHER_ESTIMATORS = {cls.__name__: cls for cls in (
    Augmenter, FrozenEstimator, Pipeline, StandardScaler, LogisticRegression, DummyClassifier)}

#: scikit-learn's cross-validation splitters, saved through their constructor arguments.
_SPLITTERS = {cls.__name__: cls for cls in (
    KFold, StratifiedKFold, GroupKFold, StratifiedGroupKFold, RepeatedKFold,
    RepeatedStratifiedKFold, ShuffleSplit, StratifiedShuffleSplit, GroupShuffleSplit,
    LeaveOneOut, LeavePOut, LeaveOneGroupOut, LeavePGroupsOut, PredefinedSplit,
    TimeSeriesSplit)}

#: Frozen dataclasses saved through their fields.
_VALUES = {cls.__name__: cls for cls in (TargetEncoding, PostProcessing, Shift, Dihedral)}

_SAVEABLE = (
    "None, bool, int, float, str, and tuples, lists and dicts of them; NumPy arrays (not of "
    "dtype object) and scalars; os.PathLike paths; a numpy RandomState; tta transforms "
    "(Shift, Dihedral); an Augmenter, a PipelineAugmenter or an albumentations pipeline; a "
    "serializable Keras loss; a scikit-learn splitter ({splitters}); and the estimators "
    "{estimators}"
)


class InconsistentVersionWarning(UserWarning):
    """An estimator was pickled under other versions of skunetseg, scikit-learn or Keras.

    As scikit-learn's warning of the same name: unpickling under other versions
    may break or give other results. Attributes ``estimator_name``,
    ``original_versions`` and ``current_versions`` (dicts ``{package: version}``;
    None when the pickle recorded none) say which.
    """

    def __init__(self, *, estimator_name, original_versions, current_versions):
        self.estimator_name = estimator_name
        self.original_versions = original_versions
        self.current_versions = current_versions

    def __str__(self):
        if self.original_versions is None:
            then = "a skunetseg that recorded no versions (before 0.1.0)"
        else:
            then = ", ".join(f"{name} {version}"
                             for name, version in self.original_versions.items())
        now = ", ".join(f"{name} {version}" for name, version in self.current_versions.items())
        return (f"Trying to unpickle a {self.estimator_name} pickled under {then}, with {now}. "
                "This might lead to breaking code or invalid results; use at your own risk. "
                "Refit it, or save it with model.save and load it with skunetseg.load, which "
                "read a documented format.")


def current_versions():
    """``{package: version}`` of skunetseg, scikit-learn and Keras (Keras is not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    import sklearn

    from ._version import __version__

    try:
        keras_version = version("keras")
    except PackageNotFoundError:  # pragma: no cover
        keras_version = None
    return {"skunetseg": __version__, "scikit-learn": sklearn.__version__,
            "keras": keras_version}


class SaveMixin:
    """The ``save`` method of every skunetseg estimator, and the versions its pickles record.

    Subclasses defined in skunetseg are registered by class name as estimators
    that :func:`load` may build. Pickling records the versions of skunetseg,
    scikit-learn and Keras; unpickling under other ones warns with
    :class:`InconsistentVersionWarning`, as scikit-learn's estimators do.
    """

    #: Parameters that are not saved, with the value a loaded estimator gets instead.
    _unsaved_params = {}
    #: Instance attributes that are not saved (runtime state, the networks themselves).
    _unsaved_state = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if issubclass(cls, BaseEstimator) and cls.__module__.split(".")[0] == "skunetseg":
            _ESTIMATORS[cls.__name__] = cls

    def __getstate__(self):
        # a copy: BaseEstimator.__getstate__ may return the live __dict__ itself
        state = dict(super().__getstate__())
        state["_skunetseg_versions"] = current_versions()
        return state

    def __setstate__(self, state):
        state = dict(state)
        original = state.pop("_skunetseg_versions", None)
        current = current_versions()
        if original != current:
            warnings.warn(InconsistentVersionWarning(
                estimator_name=type(self).__name__, original_versions=original,
                current_versions=current), stacklevel=2)
        super().__setstate__(state)

    def _saved_networks(self):
        """``{name: keras.Model}`` of the trained networks this estimator holds itself."""
        return {}

    def _restore_networks(self, networks):
        """Set the networks :meth:`_saved_networks` gave; return a disagreement or None."""
        return None

    def save(self, path, *, overwrite=False):
        """Save the fitted estimator without pickle: JSON, Keras archives and NumPy arrays.

        Nested estimators (fold models, a filter's segmenter and classifiers)
        are saved with it. See :func:`skunetseg.save_model`.

        Parameters
        ----------
        path : str or os.PathLike
            The folder to create.
        overwrite : bool, default=False
            Replace an existing folder at ``path``.
        """
        save_model(self, path, overwrite=overwrite)


def _splitter_params(splitter):
    """The constructor arguments of a scikit-learn splitter, as its repr finds them."""
    params = {}
    for name, parameter in inspect.signature(type(splitter).__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if hasattr(splitter, name):
            params[name] = getattr(splitter, name)
        elif name in getattr(splitter, "cvargs", {}):  # RepeatedKFold and its kin
            params[name] = splitter.cvargs[name]
    return params


def _file_stem(path):
    """A file-name stem for the network of the tree node at ``path`` (root: "")."""
    return re.sub(r"[^A-Za-z0-9_]+", ".", path).strip(".")


class _Encoder:
    """Turns an estimator tree into JSON-ready values, networks and large arrays."""

    def __init__(self):
        self.arrays = {}      # npz key -> array
        self.networks = {}    # file name -> keras.Model
        self._seen = {}       # id(estimator) -> path of its first occurrence

    def unsaveable(self, path, value, why=""):
        names = sorted(_ESTIMATORS) + sorted(_OTHER_ESTIMATORS)
        return TypeError(
            f"{path} = {_short_repr(value)} cannot be saved without pickle{why}. Saveable "
            "values: " + _SAVEABLE.format(splitters=", ".join(sorted(_SPLITTERS)),
                                          estimators=", ".join(names))
            + ". Use one of these (or joblib.dump, a pickle, for anything else).")

    def encode(self, value, path):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            return self.scalar(value, path)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {_TYPE: "float", "value": repr(value)}
        if isinstance(value, np.ndarray):
            return self.array(value, path)
        if isinstance(value, tuple):
            return {_TYPE: "tuple", "items": [self.encode(item, f"{path}[{index}]")
                                              for index, item in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(item, f"{path}[{index}]") for index, item in enumerate(value)]
        if isinstance(value, dict):
            return self.mapping(value, path)
        if isinstance(value, os.PathLike):
            return {_TYPE: "path", "value": os.fspath(value)}
        if isinstance(value, np.random.RandomState):
            return {_TYPE: "RandomState", "state": self.encode(value.get_state(), path)}
        name = type(value).__name__
        if _VALUES.get(name) is type(value):
            return {_TYPE: name, "fields": {
                field.name: self.encode(getattr(value, field.name), f"{path}.{field.name}")
                for field in dataclasses.fields(value)}}
        if _SPLITTERS.get(name) is type(value):
            return {_TYPE: name, "params": self.mapping(_splitter_params(value), path)}
        if type(value) is PipelineAugmenter:
            return {_TYPE: "PipelineAugmenter",
                    "pipeline": self.albumentations(value.pipeline, f"{path}.pipeline")}
        if isinstance(value, BaseEstimator):
            return self.estimator(value, path)
        if _is_keras_loss(value):
            return self.keras_loss(value, path)
        if callable(value) and type(value).__module__.startswith("albumentations"):
            return self.albumentations(value, path)
        raise self.unsaveable(path, value)

    def scalar(self, value, path):
        if value.dtype.kind not in "biufU":
            raise self.unsaveable(path, value, f" (a NumPy {value.dtype} scalar)")
        item = value.item()
        if isinstance(item, float) and not math.isfinite(item):
            item = repr(item)
        return {_TYPE: "numpy", "dtype": value.dtype.str, "value": item}

    def array(self, value, path):
        if value.dtype.hasobject or value.dtype.kind not in "biufUS":
            raise self.unsaveable(path, value, f" (an array of dtype {value.dtype})")
        if value.size <= _INLINE_ARRAY_SIZE and value.dtype.kind != "S" and (
                value.dtype.kind != "f" or np.isfinite(value).all()):
            return {_TYPE: "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                    "data": value.ravel().tolist()}
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value
        return {_TYPE: "ndarray", "npz": key}

    def mapping(self, value, path):
        if all(isinstance(key, str) for key in value) and _TYPE not in value:
            return {key: self.encode(item, f"{path}[{key!r}]") for key, item in value.items()}
        return {_TYPE: "dict", "items": [
            [self.encode(key, f"{path} key {key!r}"), self.encode(item, f"{path}[{key!r}]")]
            for key, item in value.items()]}

    def keras_loss(self, value, path):
        from ._backend import keras

        try:
            config = keras.losses.serialize(value)
            json.dumps(config)
            keras.losses.deserialize(config)  # what load will do, in Keras' safe mode
        except Exception as error:  # noqa: BLE001 - any failure means: not saveable
            raise self.unsaveable(path, value, f" (Keras cannot serialize it: {error})") from None
        return {_TYPE: "keras_loss", "config": config}

    def albumentations(self, value, path):
        try:
            stored = PipelineAugmenter(value).to_json()
        except TypeError as error:
            raise self.unsaveable(path, value, f" ({error})") from None
        return {_TYPE: "albumentations", "config": stored["albumentations"]}

    def estimator(self, value, path):
        name = type(value).__name__
        if (_ESTIMATORS.get(name) or _OTHER_ESTIMATORS.get(name)) is not type(value):
            raise self.unsaveable(path, value, f" (skunetseg does not save a {name})")
        if id(value) in self._seen:  # the same object twice (a FrozenEstimator's segmenter_)
            return {_TYPE: "ref", "path": self._seen[id(value)]}
        self._seen[id(value)] = path
        params = value.get_params(deep=False)
        # class attributes: a FrozenEstimator forwards unknown attributes to its estimator
        params.update(getattr(type(value), "_unsaved_params", {}))
        unsaved = set(params) | set(getattr(type(value), "_unsaved_state", ()))
        node = {_TYPE: name,
                "params": {key: self.encode(item, f"{path}.{key}")
                           for key, item in params.items()},
                "fitted": {key: self.encode(item, f"{path}.{key}")
                           for key, item in vars(value).items() if key not in unsaved}}
        networks = value._saved_networks() if isinstance(value, SaveMixin) else {}
        if networks:
            stem = _file_stem(path.partition(".")[2]) or "model"
            node["networks"] = {}
            for key, network in networks.items():
                file = stem + ("" if key == "model" else f".{key}")
                while file + ".keras" in self.networks:  # two paths made one stem
                    file += "_"
                file += ".keras"
                self.networks[file] = network
                node["networks"][key] = file
        return node


def _is_keras_loss(value):
    """Whether ``value`` is a Keras loss object or a named loss function of Keras or
    skunetseg (Keras is loaded when it is)."""
    keras = sys.modules.get("keras")
    if keras is None:
        return False
    if isinstance(value, keras.losses.Loss):
        return True
    return (inspect.isfunction(value) and value.__name__ != "<lambda>"
            and (value.__module__ or "").startswith(("keras", "skunetseg")))


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def save_model(estimator, path, *, overwrite=False):
    """Save a fitted skunetseg estimator to the folder ``path``, without pickle.

    Works for :class:`~skunetseg.UNetSegmenter`,
    :class:`~skunetseg.PresenceClassifier`, :class:`~skunetseg.FoldEnsemble`
    and :class:`~skunetseg.FalsePositiveFilter`, nested in any order (and in a
    :class:`sklearn.frozen.FrozenEstimator`).

    Parameters
    ----------
    estimator : UNetSegmenter, PresenceClassifier, FoldEnsemble or FalsePositiveFilter
        A fitted estimator.
    path : str or os.PathLike
        The folder to create. It must not exist yet unless ``overwrite=True``;
        the folder is written beside it first (a hidden staging folder) and
        moved into place at the end, so an error leaves an existing one as it
        was and no staging folder behind.
    overwrite : bool, default=False
        Replace an existing folder at ``path``.

    Raises
    ------
    TypeError
        When a parameter or fitted attribute holds a value that cannot be saved
        without pickle (a lambda, an object of an unknown class); the message
        names it by its path in the tree, such as
        ``FalsePositiveFilter.segmenter.tta[2]``.

    Notes
    -----
    The folder holds ``skunetseg.json`` (the parameters and fitted attributes
    of the whole tree), one Keras archive per network (``model.keras`` for the
    estimator's own; nested ones are named after their place in the tree, such
    as ``estimators_.0.keras``) and ``arrays.npz`` for large fitted arrays.
    Extra Keras ``callbacks`` are not saved; a loaded model has
    ``callbacks=None``.

    With ``overwrite=True`` the old folder is renamed to a hidden backup
    (``.<name>.skunetseg-backup`` beside it), the new one renamed to ``path``,
    and the backup deleted: at every instant a complete model is on disk. If
    the process dies between the two renames, :func:`load` finds the backup
    and loads it, with a warning.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    path = os.fspath(path)
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
        check_replaceable(path)
    encoder = _Encoder()
    root = encoder.encode(estimator, type(estimator).__name__)
    if not isinstance(root, dict) or root.get(_TYPE) not in _ESTIMATORS:
        raise TypeError(f"save_model saves a skunetseg estimator ({', '.join(_ESTIMATORS)}); "
                        f"got {type(estimator).__name__}.")
    document = {"format_version": FORMAT_VERSION, **root}
    staging = _atomic.staging_folder(path)
    try:
        for file, network in encoder.networks.items():
            network.save(os.path.join(staging, file))
        if encoder.arrays:
            np.savez(os.path.join(staging, _ARRAYS_FILE), **encoder.arrays)
        with open(os.path.join(staging, PARAMS_FILE), "w", encoding="utf-8") as file:
            json.dump(document, file, indent=1, allow_nan=False)
        _atomic.replace_folder(staging, path, overwrite=overwrite, check=check_replaceable)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once moved into place


#: The files of a saved model folder besides its Keras archives (``*.keras``): the JSON,
#: the arrays and the training history that ``skunetseg fit`` writes beside them.
MODEL_FOLDER_FILES = (PARAMS_FILE, _ARRAYS_FILE, "history.csv", "history.png")


def check_replaceable(path):
    """Raise FileExistsError unless ``path`` is absent or a saved skunetseg model folder.

    ``overwrite=True`` replaces a model, never a folder of the user's: the
    folder must hold ``skunetseg.json`` and nothing but the files a save (and
    ``skunetseg fit``) writes, :data:`MODEL_FOLDER_FILES` and ``*.keras``
    archives, all plain files.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    refuse = ("overwrite=True replaces only a folder written by save; remove it yourself "
              "or choose another path.")
    if os.path.islink(path) or not os.path.isdir(path):
        kind = "a symbolic link" if os.path.islink(path) else "a file"
        raise FileExistsError(f"{path!r} is {kind}, not a saved skunetseg model; {refuse}")
    names = os.listdir(path)
    if PARAMS_FILE not in names:
        raise FileExistsError(f"{path!r} is not a saved skunetseg model (it holds no "
                              f"{PARAMS_FILE}); {refuse}")
    others = sorted(name for name in names
                    if not (name in MODEL_FOLDER_FILES or name.endswith(".keras"))
                    or os.path.islink(os.path.join(path, name))
                    or not os.path.isfile(os.path.join(path, name)))
    if others:
        listed = ", ".join(map(repr, others[:3])) + (", ..." if len(others) > 3 else "")
        raise FileExistsError(f"{path!r} holds other files than a saved skunetseg model's "
                              f"({listed}); {refuse}")


# --------------------------------------------------------------------------- loading
def _damaged(path, what):
    return ValueError(f"{path!r} is not a loadable skunetseg model: {what}. Save the model "
                      "again (or restore the folder from a backup).")


#: The names the saved files may have: plain names, no folders (archives are ``*.keras``).
_ARCHIVE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*\.keras")


def _member(path, name, what="file"):
    """The file ``name`` of the saved folder ``path``, refused unless it lies inside it.

    ``name`` must be a plain file name (no folder part, not absolute) and, when
    it is a symbolic link, the link must resolve inside the folder: a saved
    folder never makes :func:`load` open a file elsewhere.
    """
    file = os.path.join(path, name)
    if os.path.islink(file):
        folder = os.path.realpath(path)
        target = os.path.realpath(file)
        if os.path.commonpath([folder, target]) != folder:
            raise _damaged(path, f"{file!r} is a symbolic link leading out of the folder "
                           f"(to {target!r}); load opens only files inside it")
    return file


def _archive(path, name):
    """The Keras archive a ``networks`` entry names, refused unless inside the folder."""
    if not isinstance(name, str) or not _ARCHIVE_NAME.fullmatch(name):
        raise _damaged(path, f"{os.path.join(path, PARAMS_FILE)!r} names the network archive "
                       f"{_short_repr(name, 300)}, which is not a file inside the folder (a plain "
                       "name ending in .keras); load opens only files inside it")
    return _member(path, name)


def _read_document(path):
    params_file = _member(path, PARAMS_FILE)
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f"{path!r} is not a saved skunetseg model: {PARAMS_FILE} "
                                "is missing.")
    try:
        with open(params_file, encoding="utf-8") as file:
            document = json.load(file)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        # JSONDecodeError is a ValueError; a document nested too deep, a RecursionError
        why = ("nested too deep" if isinstance(error, RecursionError)
               else "truncated or edited?")
        raise _damaged(path, f"{params_file!r} is not valid JSON ({why}): "
                       f"{error}") from None
    if not isinstance(document, dict):
        raise _damaged(path, f"{params_file!r} does not hold a JSON object")
    if document.get("format_version") not in _READABLE_VERSIONS:
        raise ValueError(f"{path!r} was saved in format {document.get('format_version')!r}; "
                         f"this skunetseg reads formats {list(_READABLE_VERSIONS)}.")
    return document


def _load_network(path, archive):
    """The Keras model of ``archive``, or a ValueError naming it when it is damaged."""
    import zipfile

    if not os.path.isfile(archive):
        raise FileNotFoundError(f"{path!r} is not a complete saved skunetseg model: "
                                f"{os.path.basename(archive)} is missing.")
    try:
        with zipfile.ZipFile(archive) as bundle:
            bad = bundle.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _damaged(path, f"{archive!r} is truncated or corrupted (not a readable "
                       f"Keras zip archive: {error})") from None
    if bad is not None:
        raise _damaged(path, f"the member {bad!r} of {archive!r} is corrupted (CRC mismatch)")
    try:
        from ._model import load_archive  # the Keras side: loads TensorFlow

        return load_archive(archive)
    except Exception as error:
        raise _damaged(path, f"Keras could not load {archive!r}: {error}") from None


class _Garbled(Exception):
    """An entry of the JSON that the decoder cannot read (with where it is)."""


class _Decoder:
    """Builds the estimator tree back from what :class:`_Encoder` wrote."""

    def __init__(self, path):
        self.path = path
        self._arrays = None
        self._objects = {}  # tree path -> estimator, for "ref" entries

    def arrays(self):
        if self._arrays is None:
            file = _member(self.path, _ARRAYS_FILE)
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{self.path!r} is not a complete saved skunetseg "
                                        f"model: {_ARRAYS_FILE} is missing.")
            try:
                with np.load(file, allow_pickle=False) as bundle:
                    self._arrays = {key: bundle[key] for key in bundle.files}
            except Exception as error:  # noqa: BLE001 - zip, format and pickle refusals alike
                raise _damaged(self.path, f"{file!r} is truncated or corrupted ({error})") \
                    from None
        return self._arrays

    def decode(self, value, path):
        """The value the entry ``value`` at ``path`` stands for; an entry that does not
        build raises :class:`_Garbled` naming its path."""
        try:
            return self._decode(value, path)
        except (_Garbled, FileNotFoundError, RecursionError):
            raise
        except Exception as error:  # noqa: BLE001 - whatever a garbled entry makes code raise
            if isinstance(error, ValueError) and str(error).startswith(repr(self.path)):
                raise  # already names the folder and the file (an archive, arrays.npz)
            raise _Garbled(f"{path} does not build ({type(error).__name__}: "
                           f"{_short_repr(str(error), 120)})") from None

    def _decode(self, value, path):
        if isinstance(value, list):
            return [self.decode(item, f"{path}[{index}]") for index, item in enumerate(value)]
        if not isinstance(value, dict):
            return value
        kind = value.get(_TYPE)
        if kind is None:
            return {key: self.decode(item, f"{path}[{key!r}]") for key, item in value.items()}
        if kind == "tuple":
            return tuple(self.decode(value["items"], path))
        if kind == "float":
            return float(value["value"])
        if kind == "numpy":
            item = value["value"]
            return np.dtype(value["dtype"]).type(float(item) if isinstance(item, str) else item)
        if kind == "ndarray":
            if "npz" in value:
                return self.arrays()[value["npz"]]
            dtype = np.dtype(value["dtype"])
            if dtype.hasobject:
                raise _Garbled(f"{path} is an array of dtype {dtype}, which save never writes")
            return np.asarray(value["data"], dtype=dtype).reshape(value["shape"])
        if kind == "dict":
            keys = [self.decode(key, path) for key, _ in value["items"]]
            return {key: self.decode(item, f"{path}[{key!r}]")
                    for key, (_, item) in zip(keys, value["items"], strict=True)}
        if kind == "path":
            return pathlib.Path(value["value"])
        if kind == "RandomState":
            random_state = np.random.RandomState()
            random_state.set_state(self.decode(value["state"], path))
            return random_state
        if kind == "keras_loss":
            from ._backend import keras

            _check_loss_config(value["config"], path)
            return keras.losses.deserialize(value["config"])
        if kind == "albumentations":
            import albumentations

            return albumentations.from_dict(value["config"])
        if kind == "PipelineAugmenter":
            return PipelineAugmenter(self.decode(value["pipeline"], f"{path}.pipeline"))
        if kind == "ref":
            return self._objects[value["path"]]
        if kind in _VALUES:
            return _VALUES[kind](**{key: self.decode(item, f"{path}.{key}")
                                    for key, item in value["fields"].items()})
        if kind in _SPLITTERS:
            return _SPLITTERS[kind](**self.decode(value["params"], path))
        if kind in _ESTIMATORS or kind in _OTHER_ESTIMATORS:
            return self.estimator(kind, value, path)
        raise _Garbled(f"{path} names the class {kind!r}, which skunetseg does not load")

    def estimator(self, kind, node, path):
        cls = _ESTIMATORS.get(kind) or _OTHER_ESTIMATORS[kind]
        params = {key: self.decode(item, f"{path}.{key}") for key, item in node["params"].items()}
        estimator = cls(**params)
        estimator.__dict__.update({key: self.decode(item, f"{path}.{key}")
                                   for key, item in node["fitted"].items()})
        networks = node.get("networks") or {}
        if networks:
            loaded = {key: _load_network(self.path, _archive(self.path, file))
                      for key, file in networks.items()}
            disagreement = estimator._restore_networks(loaded)
            if disagreement is not None:
                files = ", ".join(repr(os.path.join(self.path, file))
                                  for file in networks.values())
                raise _damaged(self.path, f"{files} holds {disagreement} (at {path})")
        self._objects[path] = estimator
        return estimator


def load(path):
    """Load an estimator saved with its ``save`` method or :func:`save_model`.

    Parameters
    ----------
    path : str or os.PathLike
        The saved folder.

    Returns
    -------
    estimator : UNetSegmenter, PresenceClassifier, FoldEnsemble or FalsePositiveFilter
        Fitted, with the saved networks and parameters, nested estimators included.

    Raises
    ------
    FileNotFoundError
        If ``path`` or one of its files is missing.
    ValueError
        If a file is truncated or corrupted, the JSON names a class outside the
        whitelist, or the JSON and a Keras archive disagree (another network
        than the parameters describe); the message names the file.

    Notes
    -----
    Only the classes of a fixed whitelist are built: the skunetseg estimators
    and value objects, :class:`sklearn.frozen.FrozenEstimator`, scikit-learn's
    splitters and the scaler, logistic regression and dummy classifier of the
    features filter. Keras archives are opened in Keras' ``safe_mode``, the
    arrays with ``allow_pickle=False``.

    When ``path`` is missing but the backup that ``save(path, overwrite=True)``
    keeps while it swaps folders is present (the process died mid-swap), the
    backup is loaded, with a warning. Folders of format 1 (a UNetSegmenter
    saved by skunetseg before every estimator could be saved) load too.
    """
    path = os.fspath(path)
    backup = _atomic.backup_path(path)
    if not os.path.exists(path) and os.path.isdir(backup):
        warnings.warn(f"{path!r} is missing but the backup {backup!r} left by an interrupted "
                      "save(overwrite=True) is there; loading the backup. Save the model again "
                      f"to {path!r}.", UserWarning, stacklevel=2)
        path = backup
    document = _read_document(path)
    decoder = _Decoder(path)
    try:
        if document["format_version"] == 1:
            document = _version_1_document(document)
        if document.get(_TYPE) not in _ESTIMATORS:
            raise _Garbled(f"the root names {document.get(_TYPE)!r}, not a skunetseg estimator")
        return decoder.decode(document, document[_TYPE])
    except FileNotFoundError:
        raise  # a missing archive or arrays.npz: the message names it
    except Exception as error:  # noqa: BLE001 - whatever a hostile JSON makes a constructor raise
        if isinstance(error, ValueError) and str(error).startswith(repr(path)):
            raise  # already names the folder and the file (a damaged archive, arrays.npz)
        if isinstance(error, RecursionError):
            error = _Garbled("the document is nested too deep")
        detail = error if isinstance(error, _Garbled) else f"{type(error).__name__}: {error}"
        raise _damaged(path, f"{os.path.join(path, PARAMS_FILE)!r} lacks or garbles an entry "
                       f"({_short_repr(str(detail), 300)})") from None


def _keras_loss_names():
    """``(functions, classes)``: the names of Keras' built-in loss functions and classes."""
    from ._backend import keras

    functions, classes = set(), set()
    for name, value in vars(keras.losses).items():
        if inspect.isclass(value) and issubclass(value, keras.losses.Loss):
            classes.add(name)
        elif inspect.isfunction(value) and name not in ("deserialize", "get", "serialize"):
            functions.add(name)
    return functions, classes


def _check_loss_config(config, path):
    """Refuse a saved Keras loss that is not one of Keras' built-in losses or skunetseg's.

    Every serialized object in ``config`` (a combined loss holds others) must
    name a loss class of ``keras.losses`` or ``skunetseg.losses``, or a
    built-in Keras loss function; lambdas and anything from another module are
    refused before Keras sees them.
    """
    from . import losses

    functions, classes = _keras_loss_names()
    ours = {name for name in losses.__all__ if inspect.isclass(getattr(losses, name))}

    def allowed(entry):
        if isinstance(entry, str):
            return entry in functions
        if not isinstance(entry, dict):
            return False
        module, name = entry.get("module"), entry.get("class_name")
        if name == "function":
            return module in ("builtins", "keras.losses") and entry.get("config") in functions
        if module == "skunetseg.losses":
            return name in ours and entry.get("registered_name") == f"skunetseg>{name}"
        return module == "keras.losses" and name in classes and not entry.get("registered_name")

    def walk(entry):
        if isinstance(entry, list):
            return all(walk(item) for item in entry)
        if not isinstance(entry, dict):
            return True
        if "class_name" in entry and not allowed(entry):
            return False
        return all(walk(item) for item in entry.values())

    if not allowed(config) or not walk(config):
        raise _Garbled(f"{path} is not one of Keras' built-in losses or skunetseg.losses, and "
                       f"load builds no other code: {_short_repr(config, 120)}")


def _version_1_document(document):
    """A format-1 document (a UNetSegmenter: plain JSON parameters and named fitted
    values) in the terms of format 2."""
    params, fitted = dict(document["params"]), document["fitted"]
    if isinstance(params.get("loss"), dict):
        params["loss"] = {_TYPE: "keras_loss", "config": params["loss"]["keras_loss"]}
    for name in ("decoder_filters", "input_size"):
        if params.get(name) is not None:
            params[name] = {_TYPE: "tuple", "items": params[name]}
    augment = params.get("augment")
    if isinstance(augment, dict) and "augmenter" in augment:
        inner = dict(augment["augmenter"])
        if inner.get("crop_size") is not None:
            inner["crop_size"] = {_TYPE: "tuple", "items": inner["crop_size"]}
        params["augment"] = {_TYPE: "Augmenter", "params": inner, "fitted": {}}
    elif isinstance(augment, dict):
        params["augment"] = {_TYPE: "albumentations", "config": augment["albumentations"]}
    classes = {_TYPE: "ndarray", "dtype": fitted["classes_dtype"],
               "shape": [len(fitted["classes"])], "data": fitted["classes"]}
    encoding = {_TYPE: "TargetEncoding", "fields": {
        "target_type": fitted["target_type"], "classes": classes,
        "channel_axis": fitted["channel_axis"]}}
    architecture = {"backbone": params["backbone"],
                    "encoder_weights": params["encoder_weights"],
                    "decoder_filters": params["decoder_filters"]}
    state = {"encoding_": encoding, "target_type_": fitted["target_type"],
             "classes_": classes, "n_classes_": len(fitted["classes"]),
             "n_channels_in_": fitted["n_channels_in"], "history_": fitted["history"],
             "best_epoch_": fitted["best_epoch"], "bn_momentum_": fitted["bn_momentum"],
             "_fit_architecture": architecture}
    if "input_dtype" in fitted:
        state["input_dtype_"] = fitted["input_dtype"]
        state["input_range_"] = {_TYPE: "tuple", "items": fitted["input_range"]}
    return {_TYPE: document["estimator"], "params": params, "fitted": state,
            "networks": {"model": _MODEL_FILE}}
