"""FoldEnsemble: one model per cross-validation fold, averaged at prediction time."""

from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.model_selection import KFold, check_cv
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from ._base import SegmenterMixin
from ._export import ExportMixin
from ._images import load_labels
from ._segmenter import UNetSegmenter
from ._targets import encode_targets
from .metrics import dice_per_pair
from .postprocess import (
    applied_postprocessing,
    check_postprocessing,
    postprocess,
    tune_postprocessing,
)

__all__ = ["FoldEnsemble"]


def _fit_fold(estimator, X, y, train, test, verbose, fold):
    """Fit one fold's model, watching the held-out fold; return it and its held-out proba."""
    if verbose:
        print(f"[FoldEnsemble] fold {fold + 1}: training on {len(train)} images, "
              f"validating on {len(test)}", flush=True)
    X_test, y_test = _safe_indexing(X, test), _safe_indexing(y, test)
    estimator.fit(_safe_indexing(X, train), _safe_indexing(y, train),
                  validation_data=(X_test, y_test))
    return estimator, estimator.predict_proba(X_test)


class FoldEnsemble(ExportMixin, SegmenterMixin, BaseEstimator):
    """Train one model per cross-validation fold and average their probabilities.

    The Kaggle recipe: split the training images into folds, train a clone of
    ``estimator`` on each fold's training part with the held-out part as its
    validation data (early stopping and learning-rate reduction watch it), and
    predict with the mean of the fold models' probabilities. The held-out
    (out-of-fold) predictions give an honest score of the recipe, and with
    ``tune_postprocessing=True`` they choose each class's threshold and minimum
    mask area, as nnU-Net does.

    Parameters
    ----------
    estimator : estimator, default=None
        The model to clone per fold: a :class:`UNetSegmenter` (the default, with
        its default parameters) or any estimator with the same ``fit(X, y,
        validation_data=...)`` / ``predict_proba`` interface, such as
        :class:`FalsePositiveFilter`. Each fold model predicts with its own TTA.
    cv : int, cross-validation generator or iterable, default=3
        An int ``k`` means ``KFold(k, shuffle=True, random_state=random_state)``;
        any scikit-learn splitter (``GroupKFold`` keeps the images of a patient or
        a scene together: pass ``groups`` to ``fit``) or iterable of
        ``(train, test)`` index arrays works.
    threshold : None, float or sequence of float, default=None
        Per-class probability threshold applied after averaging; None takes the
        estimator's. Ignored when ``tune_postprocessing=True``.
    min_area : None, float or sequence of float, default=None
        Per-class minimum mask area (pixels, or a share of the image when in
        (0, 1)); smaller masks are erased. None takes the estimator's. Ignored
        when ``tune_postprocessing=True``.
    min_component_area : None, float or sequence of float, default=None
        Connected components smaller than this are erased; None takes the
        estimator's. Never tuned.
    tune_postprocessing : bool, default=False
        After training, choose the threshold and ``min_area`` of each class that
        maximise the Kaggle Dice of the out-of-fold predictions (see
        :func:`skunetseg.postprocess.tune_postprocessing`). Only out-of-fold
        predictions are used: no image's tuning prediction comes from a model
        trained on it.
    store_oof_proba : bool, default=True
        Keep the out-of-fold probabilities as ``oof_proba_`` (as large as the
        training images times the classes, in float32). With False only the
        scores are kept.
    n_jobs : int, default=None
        Folds trained in parallel processes (joblib); None means 1. Each process
        builds its own model; on one GPU, keep 1.
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds when ``cv`` is an int.
    verbose : int, default=0
        1 prints a line per fold (the fold models have their own ``verbose``).

    Attributes
    ----------
    estimators_ : list of estimators
        The fitted fold models.
    folds_ : list of (ndarray, ndarray)
        The (train, test) indices of every fold.
    oof_proba_ : ndarray of shape (n_images, H, W, K)
        Out-of-fold probabilities (NaN for images no fold held out). Only with
        ``store_oof_proba=True``.
    oof_fold_scores_ : ndarray of shape (n_folds,)
        Kaggle Dice of each fold model on its held-out images, with the final
        post-processing.
    oof_score_ : float
        Kaggle Dice of all out-of-fold predictions, with the final
        post-processing.
    oof_score_before_tuning_ : float
        With ``tune_postprocessing=True``: the out-of-fold Dice at threshold 0.5
        without area filtering.
    thresholds_, min_areas_, min_component_areas_ : ndarray of shape (K,)
        The post-processing ``predict`` and ``score`` apply (tuned, given or the
        estimator's); ``thresholds_`` is None for multiclass (softmax) outputs.
    classes_, n_classes_, target_type_ : as the fold models'.

    See Also
    --------
    UNetSegmenter : The default fold model.
    skunetseg.postprocess : The post-processing steps and their search.

    Notes
    -----
    Training ``k`` models in one process leaves TensorFlow's per-fit memory
    behind (an upstream leak): give the estimator ``fit_in_subprocess=True`` to
    train each fold in a process of its own.

    Examples
    --------
    >>> from skunetseg import FoldEnsemble, UNetSegmenter
    >>> ensemble = FoldEnsemble(UNetSegmenter("efficientnetb0", epochs=40), cv=3,
    ...                         tune_postprocessing=True, random_state=0)
    >>> ensemble.fit(images, masks)  # doctest: +SKIP
    >>> ensemble.oof_score_before_tuning_, ensemble.oof_score_  # doctest: +SKIP
    >>> ensemble.predict(new_images)  # doctest: +SKIP
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "cv": ["cv_object"],
        "threshold": [None, Interval(Real, 0, 1, closed="neither"), "array-like"],
        "min_area": [None, Interval(Real, 0, None, closed="left"), "array-like"],
        "min_component_area": [None, Interval(Real, 0, None, closed="left"), "array-like"],
        "tune_postprocessing": ["boolean"],
        "store_oof_proba": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator=None, *, cv=3, threshold=None, min_area=None,
                 min_component_area=None, tune_postprocessing=False, store_oof_proba=True,
                 n_jobs=None, random_state=None, verbose=0):
        self.estimator = estimator
        self.cv = cv
        self.threshold = threshold
        self.min_area = min_area
        self.min_component_area = min_component_area
        self.tune_postprocessing = tune_postprocessing
        self.store_oof_proba = store_oof_proba
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _get_estimator(self):
        return UNetSegmenter() if self.estimator is None else self.estimator

    def _get_cv(self):
        if isinstance(self.cv, Integral):
            return KFold(self.cv, shuffle=True, random_state=self.random_state)
        return check_cv(self.cv)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, groups=None):
        """Train one clone of ``estimator`` per fold, validating on the held-out fold.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)
        y : array-like, masks in a format ``estimator`` accepts
        groups : array-like of shape (n_images,), default=None
            Group labels for group-aware splitters such as ``GroupKFold``.

        Returns
        -------
        self : FoldEnsemble
        """
        if not hasattr(X, "__len__") or isinstance(X, (str, bytes)):
            raise TypeError(f"X must be an array of images; got {type(X).__name__}.")
        if len(X) != len(y):
            raise ValueError(f"X and y must hold the same number of images; got {len(X)} and "
                             f"{len(y)}.")
        self.folds_ = [(np.asarray(train), np.asarray(test))
                       for train, test in self._get_cv().split(np.zeros(len(X)), None, groups)]
        if len(self.folds_) < 2:
            raise ValueError(f"cv must give at least 2 folds; got {len(self.folds_)}.")
        base = self._get_estimator()
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_fold)(clone(base), X, y, train, test, self.verbose, fold)
            for fold, (train, test) in enumerate(self.folds_)
        )
        self.estimators_ = [estimator for estimator, _ in fitted]
        first = self.estimators_[0]
        self._encoding = first._encoding
        self.classes_, self.n_classes_ = first.classes_, first.n_classes_
        self.target_type_ = first.target_type_

        held_out = np.concatenate([test for _, test in self.folds_])
        if len(np.unique(held_out)) != len(held_out):
            raise ValueError("cv must hold out each image at most once (its test folds "
                             "overlap): out-of-fold predictions would be ambiguous.")
        if any(isinstance(proba, list) for _, proba in fitted):
            raise ValueError("FoldEnsemble needs images of one size: with input_size set, give "
                             "it image files of one size (or arrays), not files of mixed sizes.")
        oof_proba = np.full((len(X), *fitted[0][1].shape[1:]), np.nan, dtype=np.float32)
        for (_, test), (_, proba) in zip(self.folds_, fitted, strict=True):
            oof_proba[test] = proba
        binarize = getattr(fitted[0][0], "binarize_masks", False)  # as the members read y
        truth = encode_targets(load_labels(y, name="y", binarize=binarize), self._encoding,
                               name="y")[held_out] > 0.5
        self._set_postprocessing(oof_proba[held_out], truth)
        masks = self._binary_masks(oof_proba[held_out])
        pair_scores = dice_per_pair(truth, masks).mean(axis=-1)
        self.oof_score_ = float(pair_scores.mean())
        fold_ends = np.cumsum([len(test) for _, test in self.folds_])[:-1]
        self.oof_fold_scores_ = np.array(
            [scores.mean() for scores in np.split(pair_scores, fold_ends)])
        if self.store_oof_proba:
            self.oof_proba_ = oof_proba
        return self

    def _set_postprocessing(self, oof_proba, truth):
        """Set ``thresholds_``, ``min_areas_`` and ``min_component_areas_`` (tuned if asked)."""
        activation = self._encoding.activation
        first = self.estimators_[0]
        # the fold models' own post-processing, unless this ensemble sets its own
        fold_settings = applied_postprocessing(first, self._encoding)
        threshold, min_area, min_component_area = (
            fold if own is None else own for own, fold in zip(
                (self.threshold, self.min_area, self.min_component_area), fold_settings,
                strict=True))
        self.thresholds_, self.min_areas_, self.min_component_areas_ = check_postprocessing(
            truth.shape[-1], threshold=threshold if activation == "sigmoid" else None,
            min_area=min_area, min_component_area=min_component_area, activation=activation)
        if self.tune_postprocessing:
            search = tune_postprocessing(oof_proba, truth, activation=activation)
            self.oof_score_before_tuning_ = search.score_before
            self.min_areas_ = np.asarray(search.min_areas, dtype=float)
            if search.thresholds is not None:
                self.thresholds_ = np.asarray(search.thresholds, dtype=float)

    # ------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Mean of the fold models' probabilities.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)

        Returns
        -------
        proba : ndarray of shape (n_images, H, W, K), dtype float32
        """
        check_is_fitted(self)
        total = None
        for estimator in self.estimators_:
            proba = estimator.predict_proba(X)
            total = proba if total is None else total + proba
        return total / np.float32(len(self.estimators_))

    def _binary_masks(self, proba):
        """Post-processed bool ``(n, H, W, K)`` masks of the predicted classes."""
        return postprocess(proba, threshold=self.thresholds_, min_area=self.min_areas_,
                           min_component_area=self.min_component_areas_,
                           activation=self._encoding.activation)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self._get_estimator().__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.target_tags = inner.target_tags
        tags.non_deterministic = inner.non_deterministic
        return tags
