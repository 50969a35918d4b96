"""FoldEnsemble: one model per cross-validation fold, averaged at prediction time."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from ._base import (
    DEFAULT_CHUNK,
    SegmenterMixin,
    SharedChunk,
    changed_after_fit,
    pair_dice,
    read_truth,
    record_fit_params,
    restores_on_failure,
    take_rows,
)
from ._crossfit import check_fit_input, cross_fit, held_out, mean_maps
from ._export import ExportMixin
from ._persistence import SaveMixin
from ._segmenter import UNetSegmenter
from .postprocess import PostProcessing, tune_unset

__all__ = ["FoldEnsemble"]

#: The parameters ``predict`` applies as they are now (``set_params`` after fit).
_POSTPROCESSING_PARAMS = ("threshold", "min_area", "min_component_area")


def _same_setting(new, old):
    """Whether a post-processing value (number, per-class values or None) is unchanged;
    a scalar equals per-class values that all hold it."""
    if new is None or old is None:
        return new is None and old is None
    new, old = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    return bool(np.all(np.broadcast_to(new, np.broadcast_shapes(new.shape, old.shape))
                       == np.broadcast_to(old, np.broadcast_shapes(new.shape, old.shape))))


class FoldEnsemble(SaveMixin, ExportMixin, SegmenterMixin, BaseEstimator):
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
        :class:`FalsePositiveFilter`, or your own (see the user guide's page "How
        to wrap your own segmenter"). Each fold model predicts with its own TTA.
    cv : int, cross-validation generator or iterable, default=3
        An int ``k`` means ``StratifiedKFold(k, shuffle=True,
        random_state=random_state)`` over which classes each image's mask holds
        (empty images, images with class 1, ... spread evenly over the folds;
        plain shuffled ``KFold`` when no such pattern is held by ``k`` images);
        any scikit-learn splitter (``GroupKFold`` keeps the images of a patient or
        a scene together: pass ``groups`` to ``fit``; a ``StratifiedKFold`` is
        given the class pattern of each image as its ``y``) or iterable of
        ``(train, test)`` index arrays works.
    n_repeats : int, default=1
        Repeat the split of an int ``cv`` this many times with another shuffle
        (the "several seeds" of the Kaggle recipe): ``cv * n_repeats`` fold
        models, all averaged at prediction, and each image's out-of-fold map is
        the mean of its ``n_repeats`` held-out predictions. The first repeat's
        folds are those of ``n_repeats=1``.
    threshold : None, float or sequence of float, default=None
        Per-class probability threshold applied after averaging; None takes the
        estimator's, or the tuned one with ``tune_postprocessing=True``. The fold
        models never tune their own on the fold held out from them: a
        :class:`UNetSegmenter`'s ``threshold`` and ``min_area`` left None are
        0.5 and 0 in the fold models. A value
        given here before fit is never replaced by tuning (the rest is tuned
        around it); a value set after a tuned fit warns that the tuned one wins.
        Like ``min_area`` and ``min_component_area``, it is validated and applied
        as it is at predict time, so ``set_params`` after an untuned fit takes
        effect without a refit.
    min_area : None, float or sequence of float, default=None
        Per-class minimum mask area (pixels, or a share of the image when in
        (0, 1)); smaller masks are erased. None takes the estimator's, or the
        tuned one with ``tune_postprocessing=True``; a value given here is kept.
    min_component_area : None, float or sequence of float, default=None
        Connected components smaller than this are erased; None takes the
        estimator's. Never tuned.
    tune_postprocessing : bool, default=True
        After training, choose the threshold and ``min_area`` of each class on
        the Kaggle Dice of the out-of-fold predictions: the least aggressive
        settings within one standard error of the best score (see
        :func:`skunetseg.postprocess.tune_postprocessing`). Only out-of-fold
        predictions are used: no image's tuning prediction comes from a model
        trained on it. It costs seconds and, on mostly-empty data, is what
        turns maps with a few stray pixels into empty masks (docs/mostly-empty.md);
        False keeps the estimator's (or the given) post-processing.
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
    oof_proba_ : ndarray of shape (n_images, H, W, K), or list of ndarray
        Out-of-fold probabilities (NaN for images no fold held out); for image
        files of several sizes (with the fold models' ``input_size``), a list
        of ``(H_i, W_i, K)`` maps at each image's own size (None for images no
        fold held out). Only with ``store_oof_proba=True``.
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
    postprocessing_ : skunetseg.postprocess.PostProcessing
        The same settings as one value object, which applies them.
    encoding_ : skunetseg.TargetEncoding
        The fold models' target encoding.
    classes_, n_classes_, target_type_ : as the fold models'.

    See Also
    --------
    UNetSegmenter : The default fold model.
    skunetseg.postprocess : The post-processing steps and their search.

    Notes
    -----
    Images and masks may be arrays or lists of files, of mixed sizes when the
    fold models resize them (``input_size``); predictions then come back one
    per image at its own size. ``predict_proba``, ``predict`` and ``score``
    take the images a chunk at a time, each fold model predicting the chunk.
    Before any fold trains, ``fit`` checks that the test folds do not overlap
    and that every fold's training part holds every class of ``y``.

    Training ``k`` models in one process leaves TensorFlow's per-fit memory
    behind (an upstream leak): give the estimator ``fit_in_subprocess=True`` to
    train each fold in a process of its own.

    ``save(path)`` and :func:`skunetseg.load` store the ensemble without pickle,
    the fold models' networks included (see the user guide's page "Saving and
    loading").

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
        "n_repeats": [Interval(Integral, 1, None, closed="left")],
        "threshold": [None, Interval(Real, 0, 1, closed="neither"), "array-like"],
        "min_area": [None, Interval(Real, 0, None, closed="left"), "array-like"],
        "min_component_area": [None, Interval(Real, 0, None, closed="left"), "array-like"],
        "tune_postprocessing": ["boolean"],
        "store_oof_proba": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator=None, *, cv=3, n_repeats=1, threshold=None, min_area=None,
                 min_component_area=None, tune_postprocessing=True, store_oof_proba=True,
                 n_jobs=None, random_state=None, verbose=0):
        self.estimator = estimator
        self.cv = cv
        self.n_repeats = n_repeats
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

    @_fit_context(prefer_skip_nested_validation=False)
    @restores_on_failure  # a failed or interrupted fit changes nothing
    def fit(self, X, y, groups=None):
        """Train one clone of ``estimator`` per fold, validating on the held-out fold.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images, or image files (of any sizes when the estimator has ``input_size``).
        y : array-like or list of paths
            Masks in a format ``estimator`` accepts, or mask files.
        groups : array-like of shape (n_images,), default=None
            Group labels for group-aware splitters such as ``GroupKFold``.

        Returns
        -------
        self : FoldEnsemble
        """
        X, y, binarize, values = check_fit_input(self, X, y)  # masks as the fold models read them
        result = cross_fit(self._get_estimator(), X, y, cv=self.cv, groups=groups,
                           n_repeats=self.n_repeats, random_state=self.random_state,
                           values=values, validation_data="test", n_jobs=self.n_jobs,
                           verbose=self.verbose, name="FoldEnsemble")
        self.folds_, self.estimators_, oof_proba = result
        first = self.estimators_[0]
        self.encoding_ = first.encoding_
        self.classes_, self.n_classes_ = first.classes_, first.n_classes_
        self.target_type_ = first.target_type_

        held_rows = np.unique(np.concatenate([test for _, test in self.folds_]))
        held_proba = held_out(oof_proba, held_rows)
        truth = read_truth(y, held_rows, self.encoding_, binarize=binarize)
        if isinstance(truth, list) and not isinstance(held_proba, list):
            held_proba = list(held_proba)
        self._set_postprocessing(held_proba, truth)
        record_fit_params(self, (*_POSTPROCESSING_PARAMS, "tune_postprocessing"))
        pair_scores = pair_dice(truth, self.postprocessing_.apply(held_proba)).mean(axis=-1)
        self.oof_score_ = float(pair_scores.mean())
        position = np.searchsorted(held_rows, np.arange(len(X)))
        self.oof_fold_scores_ = np.array(
            [pair_scores[position[test]].mean() for _, test in self.folds_])
        if self.store_oof_proba:
            self.oof_proba_ = oof_proba
        return self

    def _set_postprocessing(self, oof_proba, truth):
        """Set ``postprocessing_`` and its ``thresholds_``, ``min_areas_`` and
        ``min_component_areas_`` (tuned if asked)."""
        encoding = self.encoding_
        threshold, min_area, min_component_area = self._own_or_fold_postprocessing()
        if self.tune_postprocessing:
            # a value given to the ensemble is kept: only the others are searched
            tuned_threshold, tuned_min_area, search = tune_unset(
                oof_proba, truth, threshold=self.threshold, min_area=self.min_area,
                activation=encoding.activation)
            self.oof_score_before_tuning_ = search.score_before
            threshold = threshold if tuned_threshold is None else tuned_threshold
            min_area = min_area if tuned_min_area is None else tuned_min_area
        self._store_postprocessing(threshold, min_area, min_component_area)

    def _own_or_fold_postprocessing(self):
        """``(threshold, min_area, min_component_area)``: this ensemble's parameters, each
        None taking the fold models' own post-processing."""
        fold = self.estimators_[0].postprocessing_
        return tuple(
            fold_value if own is None else own for own, fold_value in zip(
                (self.threshold, self.min_area, self.min_component_area),
                (0.5 if fold.threshold is None else fold.threshold, fold.min_area,
                 fold.min_component_area), strict=True))

    def _store_postprocessing(self, threshold, min_area, min_component_area):
        """Set ``postprocessing_``, ``thresholds_``, ``min_areas_`` and ``min_component_areas_``."""
        encoding = self.encoding_
        self.postprocessing_ = PostProcessing.from_params(
            encoding.n_outputs, threshold=threshold, min_area=min_area,
            min_component_area=min_component_area, activation=encoding.activation)
        settings = self.postprocessing_
        self.thresholds_ = (None if settings.threshold is None
                            else np.asarray(settings.threshold, dtype=float))
        self.min_areas_ = np.asarray(settings.min_area, dtype=float)
        self.min_component_areas_ = np.asarray(settings.min_component_area, dtype=float)

    # ------------------------------------------------------------- predict
    # predict_proba, predict and score: the chunked engine of SegmenterMixin (_base.py)
    def _prediction_source(self, X):
        self._apply_predict_params()
        return super()._prediction_source(X)

    def _apply_predict_params(self):
        """Validate the post-processing parameters as they are now and apply them
        (``set_params`` after fit), except the ``threshold`` and ``min_area`` that
        ``tune_postprocessing`` chose, which win (with a warning)."""
        check_is_fitted(self)
        if "encoding_" not in self.__dict__:
            return  # fold models put together by hand, not by fit: probabilities only
        changed_after_fit(self, _POSTPROCESSING_PARAMS, tuning="tune_postprocessing",
                                    tuned=("threshold", "min_area"))
        threshold, min_area, min_component_area = self._own_or_fold_postprocessing()
        PostProcessing.from_params(  # validates them against the classes, applied or not
            self.encoding_.n_outputs, threshold=threshold, min_area=min_area,
            min_component_area=min_component_area, activation=self.encoding_.activation)
        if self.tune_postprocessing:
            min_area = self.min_areas_
            if self.thresholds_ is not None:
                threshold = self.thresholds_
        current = self.__dict__.get("postprocessing_")
        if current is None or not all(_same_setting(new, old) for new, old in (
                (threshold, current.threshold), (min_area, current.min_area),
                (min_component_area, current.min_component_area))):
            self._store_postprocessing(threshold, min_area, min_component_area)

    def _chunk_size(self):
        inner = getattr(self.estimators_[0], "_chunk_size", None)
        return inner() if callable(inner) else DEFAULT_CHUNK

    def _chunk_proba(self, X, rows):
        """Mean of the fold models' probabilities of the images ``rows`` (files decoded
        once for all of them)."""
        chunk = SharedChunk(take_rows(X, rows))
        return mean_maps([estimator.predict_proba(chunk.for_model(estimator))
                          for estimator in self.estimators_])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self._get_estimator().__sklearn_tags__()
        tags.input_tags = inner.input_tags
        tags.target_tags = inner.target_tags
        tags.non_deterministic = inner.non_deterministic
        return tags
