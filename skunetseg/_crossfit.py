"""The one cross-fitting engine of FoldEnsemble and FalsePositiveFilter.

Splitting (``cv=<int>`` is a shuffled, seeded k-fold split stratified on which
classes each image holds, in both), the checks made before any fold trains (enough folds, test folds
that do not overlap, every fold's training part seeing every class of ``y``),
one ``clone`` per fold fitted in parallel with joblib, and the out-of-fold
probabilities: one array, or a list of per-image maps when the images differ
in size.
"""

import inspect
from collections import Counter
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import KFold, StratifiedKFold, check_cv

from ._base import take_rows
from ._images import is_paths
from .io import binarize_mask, check_paths, read_mask

__all__ = ["make_folds", "class_strata", "label_values", "check_fold_classes", "fit_folds",
           "fit_with_validation", "fit_predict_fold", "out_of_fold", "held_out"]


def make_folds(cv, n_images, *, random_state=None, groups=None, split_y=None, strata=None,
               min_folds=2):
    """The ``(train, test)`` index arrays of ``cv``, checked before anything trains.

    ``cv`` is an int ``k``, a scikit-learn splitter (given ``split_y`` and
    ``groups``) or an iterable of ``(train, test)`` pairs. An int is
    ``StratifiedKFold(k, shuffle=True, random_state=random_state)`` over
    ``strata`` (one hashable key per image, such as :func:`class_strata`), so
    that images with and without each class spread over every fold; keys held
    by fewer than ``k`` images are pooled, and it is plain shuffled ``KFold``
    when ``strata`` is None or no key is held by ``k`` images. Raises a
    ValueError when ``cv`` gives fewer than ``min_folds`` folds or when its test
    folds overlap.
    """
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        codes = _stratum_codes(strata, cv)
        if codes is None:
            splitter, split_y = KFold(cv, shuffle=True, random_state=random_state), None
        else:
            splitter, split_y = StratifiedKFold(cv, shuffle=True,
                                                random_state=random_state), codes
    else:
        splitter = check_cv(cv)
    folds = [(np.asarray(train, dtype=int), np.asarray(test, dtype=int))
             for train, test in splitter.split(np.zeros(n_images), split_y, groups)]
    if len(folds) < min_folds:
        raise ValueError(f"cv must give at least {min_folds} fold(s); got {len(folds)}.")
    held = np.concatenate([test for _, test in folds])
    if len(np.unique(held)) != len(held):
        raise ValueError("The test folds of cv overlap: each image may be held out at most "
                         "once, or its out-of-fold prediction would be ambiguous.")
    return folds


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


def fit_predict_fold(estimator, X, y, train, test, *, validation_data=None):
    """Fit a clone of ``estimator`` on the rows ``train``; return it and its
    probabilities of the rows ``test``. ``validation_data="test"`` validates on
    the held-out rows."""
    if isinstance(validation_data, str) and validation_data == "test":
        validation_data = (take_rows(X, test), take_rows(y, test))
    model = fit_with_validation(clone(estimator), take_rows(X, train), take_rows(y, train),
                                validation_data)
    return model, model.predict_proba(take_rows(X, test))


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
