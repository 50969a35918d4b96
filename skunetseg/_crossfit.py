"""The one cross-fitting engine of FoldEnsemble and FalsePositiveFilter: :func:`cross_fit`.

Splitting (``cv=<int>`` is a shuffled, seeded k-fold split stratified on which
classes each image holds, in both; any scikit-learn splitter gets those
classes as its ``y`` and ``groups`` as its groups), the checks made before any
fold trains (enough folds, test folds that do not overlap, every fold's
training part seeing every class of ``y``), one ``clone`` per fold fitted in
parallel with joblib, and the out-of-fold probabilities: one array, or a list
of per-image maps when the images differ in size.
"""

import inspect
from collections import Counter
from numbers import Integral
from typing import NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import KFold, StratifiedKFold, check_cv

from ._base import as_mask_rows, as_rows, binarizes_masks, take_rows
from ._images import is_paths
from .io import binarize_mask, check_paths, read_mask

__all__ = ["CrossFit", "cross_fit", "check_fit_input", "make_folds", "class_strata",
           "label_values", "check_fold_classes", "check_same_classes", "fit_folds",
           "fit_with_validation", "out_of_fold", "held_out", "mean_maps"]


class CrossFit(NamedTuple):
    """What :func:`cross_fit` returns."""

    #: The ``(train, test)`` index arrays of every fold (of every repeat, in order).
    folds: list
    #: The fitted fold models, or None when not asked for.
    estimators: list | None
    #: Out-of-fold probabilities (see :func:`out_of_fold`), the mean over the repeats.
    oof_proba: object


def _is_int(cv):
    return isinstance(cv, Integral) and not isinstance(cv, bool)


def check_fit_input(estimator, X, y):
    """The opening of a meta-estimator's ``fit``: ``X`` and ``y`` as rows, checked.

    Returns ``(X, y, binarize, values)``: the images and masks (arrays or lists of
    files, not read), whether ``estimator``'s model reads masks binarised
    (:func:`~skunetseg._base.binarizes_masks`) and :func:`label_values` of ``y``
    read that way.
    """
    X, y = as_rows(X, name="X"), as_mask_rows(y, name="y")
    if len(X) != len(y):
        raise ValueError(f"X and y must hold the same number of images; got {len(X)} and "
                         f"{len(y)}.")
    binarize = binarizes_masks(estimator)
    return X, y, binarize, label_values(y, binarize=binarize)


def cross_fit(estimator, X, y, *, cv, groups=None, n_repeats=1, random_state=None,
              values=None, validation_data=None, encoding=None, min_folds=2,
              return_estimators=True, n_jobs=None, verbose=0, name="cross_fit"):
    """Fit a clone of ``estimator`` per fold of ``cv``; its probabilities of the held-out rows.

    Parameters
    ----------
    estimator : estimator
        A segmenter (``fit(X, y[, validation_data])`` and ``predict_proba``); cloned.
    X, y : array or list of paths
        Images and masks, as rows (:func:`check_fit_input`).
    cv : int, cross-validation generator or iterable
        See :func:`make_folds`: an int is a shuffled k-fold split stratified on
        which classes each image holds; a splitter gets those classes as ``y``
        (so that ``StratifiedKFold`` works) and ``groups``.
    groups : array-like of shape (n_images,), default=None
        Group labels for a group-aware splitter (``GroupKFold``).
    n_repeats : int, default=1
        Repeats of the split of an int ``cv``, each with another shuffle
        (``random_state + r`` for an int ``random_state``).
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds of an int ``cv``.
    values : list of frozenset, default=None
        :func:`label_values` of ``y``, when the caller has read them.
    validation_data : None, "test" or tuple (X_val, y_val), default=None
        Passed to every fold's fit (when it takes it); ``"test"`` validates
        each fold model on its held-out rows.
    encoding : skunetseg.TargetEncoding, default=None
        When given, every fold model must read ``y`` as these classes
        (:func:`check_same_classes`).
    min_folds : int, default=2
        Fewer folds are refused with a ValueError.
    return_estimators : bool, default=True
        Keep the fold models (else each is dropped once it has predicted).
    n_jobs : int, default=None
        Folds fitted in parallel processes (joblib).
    verbose : int, default=0
        1 prints a line per fold, headed ``[name]``.

    Returns
    -------
    result : CrossFit
        ``folds``, ``estimators`` and ``oof_proba``.
    """
    if n_repeats > 1 and not _is_int(cv):
        raise ValueError(
            f"n_repeats={n_repeats} repeats the k-fold split of an int cv with "
            f"another shuffle each time; got cv={cv!r}. Pass cv as an int, or "
            "n_repeats=1 with a splitter of your own.")
    if values is None:
        values = label_values(y, binarize=binarizes_masks(estimator))
    strata = class_strata(y, values)
    folds = [fold for state in _repeat_states(random_state, n_repeats)
             for fold in make_folds(cv, len(X), random_state=state, groups=groups,
                                    strata=strata, min_folds=min_folds)]
    check_fold_classes(folds, values)
    fitted = fit_folds(_fit_predict_fold, folds, n_jobs=n_jobs, estimator=estimator, X=X, y=y,
                       validation_data=validation_data, encoding=encoding,
                       keep=return_estimators, verbose=verbose, name=name)
    probas = [proba for _, proba in fitted]
    k = len(folds) // n_repeats
    oof_proba = mean_maps([out_of_fold(folds[r * k:(r + 1) * k], probas[r * k:(r + 1) * k],
                                       len(X)) for r in range(n_repeats)])
    estimators = [model for model, _ in fitted] if return_estimators else None
    return CrossFit(folds, estimators, oof_proba)


def _repeat_states(random_state, n_repeats):
    """The ``random_state`` of each repeat's split: the given one for the first, then
    ``random_state + r`` for an int (a RandomState instance draws anew each time)."""
    if isinstance(random_state, Integral):
        return [random_state + r for r in range(n_repeats)]
    return [random_state] * n_repeats


def _fit_predict_fold(train, test, fold, *, estimator, X, y, validation_data, encoding, keep,
                      verbose, name):
    """Fit a clone of ``estimator`` on the rows ``train``; return it (or None without
    ``keep``) and its probabilities of the rows ``test``."""
    validate_on_test = isinstance(validation_data, str) and validation_data == "test"
    if verbose:
        print(f"[{name}] fold {fold + 1}: training on {len(train)} images, "
              f"{'validating on' if validate_on_test else 'predicting'} {len(test)}",
              flush=True)
    if validate_on_test:
        validation_data = (take_rows(X, test), take_rows(y, test))
    model = fit_with_validation(untuned_clone(estimator), take_rows(X, train),
                                take_rows(y, train), validation_data)
    if encoding is not None:
        check_same_classes(model, encoding, "A fold's segmenter")
    return model if keep else None, model.predict_proba(take_rows(X, test))


def untuned_clone(estimator):
    """A clone of ``estimator`` whose segmenters do not tune their post-processing.

    A fold model is scored and used through its probabilities: the caller tunes
    (``FoldEnsemble`` on the out-of-fold maps), and a fold model that tuned its
    own on the fold held out from it would see the images those maps come from.
    Every segmenter in ``estimator`` (itself or nested, as a
    ``FalsePositiveFilter``'s) declaring ``_untuned_postprocessing`` gets those
    values for the parameters it leaves None; a ``FrozenEstimator`` is left
    as it is.
    """
    model = clone(estimator)
    if isinstance(model, FrozenEstimator):
        return model
    params = model.get_params(deep=True)
    frozen = tuple(f"{name}__" for name, value in params.items()
                   if isinstance(value, FrozenEstimator))
    parts = [("", model)] + [(f"{name}__", value) for name, value in params.items()
                             if hasattr(value, "_untuned_postprocessing")
                             and not name.startswith(frozen)]
    model.set_params(**{prefix + name: value for prefix, part in parts
                        for name, value in getattr(part, "_untuned_postprocessing", {}).items()
                        if getattr(part, name) is None})
    return model


def make_folds(cv, n_images, *, random_state=None, groups=None, strata=None, min_folds=2):
    """The ``(train, test)`` index arrays of ``cv``, checked before anything trains.

    ``cv`` is an int ``k``, a scikit-learn splitter or an iterable of ``(train,
    test)`` pairs. An int is ``StratifiedKFold(k, shuffle=True,
    random_state=random_state)`` over ``strata`` (one hashable key per image,
    such as :func:`class_strata`), so that images with and without each class
    spread over every fold; keys held by fewer than ``k`` images are pooled, and
    it is plain shuffled ``KFold`` when ``strata`` is None or no key is held by
    ``k`` images. A splitter's ``split`` gets one integer label per key of
    ``strata`` as ``y`` (a ``StratifiedKFold`` instance stratifies on them) and
    ``groups``. Raises a ValueError when ``cv`` gives fewer than ``min_folds``
    folds or when its test folds overlap.
    """
    if _is_int(cv):
        codes = _stratum_codes(strata, cv)
        if codes is None:
            splitter, split_y = KFold(cv, shuffle=True, random_state=random_state), None
        else:
            splitter, split_y = StratifiedKFold(cv, shuffle=True,
                                                random_state=random_state), codes
    else:
        splitter, split_y = check_cv(cv), _stratum_labels(strata)
    folds = [(np.asarray(train, dtype=int), np.asarray(test, dtype=int))
             for train, test in splitter.split(np.zeros(n_images), split_y, groups)]
    if len(folds) < min_folds:
        raise ValueError(f"cv must give at least {min_folds} fold(s); got {len(folds)}.")
    held = np.concatenate([test for _, test in folds])
    if len(np.unique(held)) != len(held):
        raise ValueError("The test folds of cv overlap: each image may be held out at most "
                         "once, or its out-of-fold prediction would be ambiguous.")
    return folds


def _stratum_labels(strata):
    """One integer label per image, one per distinct key of ``strata`` (None for None);
    the key of no class (an empty image) is 0."""
    if strata is None:
        return None
    keys = list(strata)
    code = {key: index for index, key in enumerate(sorted(set(keys),
                                                           key=lambda key: (len(key), key)))}
    return np.array([code[key] for key in keys])


def _stratum_codes(strata, k):
    """Integer stratum of each image for ``StratifiedKFold(k)``; keys held by
    fewer than ``k`` images share one pooled stratum. None when nothing is left
    to stratify (no strata, or a single stratum once the rare keys are pooled)."""
    if strata is None:
        return None
    keys = list(strata)
    counts = Counter(keys)
    common = sorted((key for key, count in counts.items() if count >= k), key=repr)
    if not common:
        return None
    code = {key: index for index, key in enumerate(common)}
    pooled = len(code)
    codes = np.array([code.get(key, pooled) for key in keys])
    if 0 < np.count_nonzero(codes == pooled) < k:
        # the pooled rare keys are themselves too few: they join the largest stratum
        codes[codes == pooled] = np.bincount(codes[codes != pooled]).argmax()
    return codes if len(np.unique(codes)) > 1 else None


def class_strata(y, values):
    """One key per image for stratified folds: which classes its mask holds.

    ``values`` is :func:`label_values` of ``y``; for multilabel arrays (where it
    is None) the key is which channels hold any pixel.
    """
    if values is not None:
        return [tuple(sorted(value for value in image if value)) for image in values]
    y = np.asarray(y)
    present = y.reshape(len(y), -1, y.shape[-1]).any(axis=1)
    return [tuple(np.flatnonzero(row).tolist()) for row in present]


def label_values(y, *, name="y", binarize=False):
    """The label values of each image's mask (frozensets), read from arrays or mask files.

    None for multilabel masks ``(n, H, W, K>1)``, whose classes are the channels
    that every image has. With ``binarize``, the masks are binarised first
    (:func:`skunetseg.io.binarize_mask`).
    """
    if is_paths(y):
        return [frozenset(np.unique(read_mask(path, binarize=binarize)).tolist())
                for path in check_paths(y, name=name)]
    y = binarize_mask(y, name=name) if binarize else np.asarray(y)
    if y.ndim == 4 and y.shape[-1] > 1:
        return None
    return [frozenset(np.unique(mask).tolist()) for mask in y]


def check_fold_classes(folds, values):
    """Raise when a fold's training part does not see every class of the whole ``y``.

    ``values`` comes from :func:`label_values`. A fold model fitted on fewer
    classes would read its masks differently (another target type or other
    classes) than the models fitted on all of ``y``.
    """
    if values is None:
        return
    whole = frozenset().union(*values)
    for index, (train, _) in enumerate(folds):
        seen = frozenset().union(*(values[row] for row in train))
        if seen != whole:
            raise ValueError(
                f"The training part of fold {index} holds the mask values {sorted(seen)} but "
                f"y holds {sorted(whole)}: every fold must be fitted on every class. Use "
                "fewer folds, or a splitter that keeps every class in every training part.")


def check_same_classes(model, encoding, who):
    """Raise when the fitted ``model`` reads the masks as other classes than ``encoding``."""
    fitted = model.encoding_
    if (fitted.target_type != encoding.target_type
            or not np.array_equal(fitted.classes, encoding.classes)):
        raise ValueError(
            f"{who} reads the masks as {fitted.target_type} with classes "
            f"{fitted.classes.tolist()}, but y holds {encoding.target_type} masks with "
            f"classes {encoding.classes.tolist()}: every fit must see the same classes "
            "(use fewer cv folds, or masks in the segmenter's format)."
        )


def fit_with_validation(estimator, X, y, validation_data, groups=None):
    """``estimator.fit(X, y)``, passing ``validation_data`` and ``groups`` when given and
    accepted."""
    accepted = inspect.signature(estimator.fit).parameters
    frozen = isinstance(estimator, FrozenEstimator)
    params = {}
    if validation_data is not None and ("validation_data" in accepted or frozen):
        params["validation_data"] = validation_data
    if groups is not None and "groups" in accepted and not frozen:
        params["groups"] = groups
    return estimator.fit(X, y, **params)


def fit_folds(fit_fold, folds, *, n_jobs=None, **kwargs):
    """``[fit_fold(train, test, fold, **kwargs) for each fold]``, run by joblib on
    ``n_jobs`` processes (each builds its own models)."""
    return Parallel(n_jobs=n_jobs)(
        delayed(fit_fold)(train, test, fold, **kwargs)
        for fold, (train, test) in enumerate(folds))


def out_of_fold(folds, probas, n_images):
    """Put each fold's held-out probabilities at their rows.

    Returns an ``(n_images, H, W, K)`` float32 array (NaN for images no fold
    held out) when every map has one shape, else a list of ``(H_i, W_i, K)``
    maps (None for images no fold held out).
    """
    shapes = {tuple(np.shape(map_)) for proba in probas for map_ in proba}
    if len(shapes) == 1:
        oof = np.full((n_images, *shapes.pop()), np.nan, dtype=np.float32)
        for (_, test), proba in zip(folds, probas, strict=True):
            oof[test] = np.asarray(proba) if not isinstance(proba, list) else np.stack(proba)
        return oof
    oof = [None] * n_images
    for (_, test), proba in zip(folds, probas, strict=True):
        for row, map_ in zip(test, proba, strict=True):
            oof[row] = map_
    return oof


def held_out(oof, rows):
    """The entries ``rows`` of out-of-fold results: an array, or a list of per-image maps."""
    if isinstance(oof, list):
        return [oof[row] for row in rows]
    return oof[rows]


def mean_maps(probas):
    """Elementwise mean of several models' probabilities: arrays, or lists of per-image maps
    (None where any of them is None)."""
    if len(probas) == 1:
        return probas[0]
    if any(isinstance(proba, list) for proba in probas):
        return [None if any(m is None for m in maps) else
                np.mean(maps, axis=0, dtype=np.float32) for maps in zip(*probas, strict=True)]
    total = probas[0].astype(np.float32, copy=True)
    for proba in probas[1:]:
        total += proba
    return total / np.float32(len(probas))
