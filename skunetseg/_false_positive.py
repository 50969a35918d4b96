"""FalsePositiveFilter: blank a segmenter's masks where a presence classifier says "absent".

Under the Kaggle Dice an (image, class) pair whose true mask is empty scores 1
only if the predicted mask is empty too, so a few stray pixels cost the whole
pair. The filter trains a presence classifier per class and zeroes the
segmenter's probabilities of the classes it finds absent.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.dummy import DummyClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import TransformerTags, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import (
    DEFAULT_CHUNK,
    SegmenterMixin,
    SharedChunk,
    as_mask_rows,
    as_rows,
    changed_after_fit,
    check_validation_data,
    pair_dice,
    presence,
    read_truth,
    record_fit_params,
    restores_on_failure,
    row_chunks,
    take_rows,
)
from ._crossfit import (
    check_fit_input,
    check_same_classes,
    cross_fit,
    fit_folds,
    fit_with_validation,
    held_out,
)
from ._images import is_paths
from ._persistence import SaveMixin
from ._targets import fit_target_encoding
from .io import binarize_mask, read_mask

__all__ = ["FalsePositiveFilter", "probability_features", "FEATURE_NAMES"]

#: The parameters ``predict`` validates as they are now (``set_params`` after fit).
_PRESENCE_PARAMS = ("presence_threshold", "max_blanked", "tune_threshold")

#: What ``classifier="auto"`` picks (see docs/false_positives.md for the measurement).
_AUTO_KIND = "image"

#: The features :func:`probability_features` computes for each (image, class) pair.
FEATURE_NAMES = ("max", "mean", "top_mean", "mask_area", "confident_area", "mask_mean")

#: Share of an image's pixels whose probabilities make the ``top_mean`` feature.
_TOP_SHARE = 0.01

#: Probability above which a pixel counts in ``confident_area``.
_CONFIDENT = 0.9


def probability_features(proba, masks):
    """Features of each (image, class) probability map, for a presence classifier.

    Parameters
    ----------
    proba : ndarray of shape (n_images, H, W, K), or list of (H_i, W_i, K) arrays
        Probability maps of a segmenter.
    masks : ndarray of shape (n_images, H, W, K), bool, or list of them per image
        The masks the segmenter predicts from them.

    Returns
    -------
    features : ndarray of shape (n_images, K, 6), float64
        In the order of :data:`FEATURE_NAMES`: the largest probability, the mean
        probability, the mean of the top 1 % of the probabilities, the mask's
        area and the area above probability 0.9 (both as shares of the image),
        and the mean probability inside the mask (0 for an empty mask).
    """
    if isinstance(proba, list):  # per-image maps of different sizes
        return np.concatenate([probability_features(p[np.newaxis], m[np.newaxis])
                               for p, m in zip(proba, masks, strict=True)])
    n_images, height, width, n_classes = proba.shape
    flat = np.moveaxis(proba, -1, 1).reshape(n_images, n_classes, height * width)
    flat = flat.astype(np.float64)
    n_top = max(1, int(np.ceil(_TOP_SHARE * height * width)))
    top = np.partition(flat, -n_top, axis=-1)[..., -n_top:]
    area = masks.sum(axis=(1, 2), dtype=np.float64)
    inside = (proba * masks).sum(axis=(1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mask_mean = np.where(area > 0, inside / area, 0.0)
    return np.stack([
        flat.max(axis=-1),
        flat.mean(axis=-1),
        top.mean(axis=-1),
        area / (height * width),
        (flat > _CONFIDENT).mean(axis=-1),
        mask_mean,
    ], axis=-1)


def _fit_class_classifier(classifier, features, labels):
    """Fit a clone on one class's features; a constant class gets a constant classifier."""
    if np.unique(labels).size < 2:
        classifier = DummyClassifier(strategy="prior")
    return clone(classifier).fit(features, labels)


def _presence_column(classifier, features):
    """Probability of "present" from a classifier fitted on bool labels."""
    proba = classifier.predict_proba(features)
    classes = list(classifier.classes_)
    return proba[:, classes.index(True)] if True in classes else np.zeros(len(features))


def _share(flags, among):
    """Share of the pairs ``among`` whose flag is set; NaN when there are none."""
    return float(flags[among].mean()) if among.any() else float("nan")


def best_threshold(presence, kept_dice, blanked_dice, *, shown=None, max_blanked=None):
    """The presence threshold that maximises the mean Dice of one class's pairs.

    A pair keeps its predicted mask when ``presence > threshold`` and is blanked
    otherwise. Every distinct decision is tried; the threshold returned is the
    midpoint between the presence scores on either side of the best cut, and
    on a tie the cut that blanks fewer pairs.

    Parameters
    ----------
    presence : ndarray of shape (n_pairs,)
        Held-out presence probabilities.
    kept_dice : ndarray of shape (n_pairs,)
        Dice of each pair with the segmenter's mask.
    blanked_dice : ndarray of shape (n_pairs,)
        Dice of each pair with an empty mask (1 where the truth is empty, else 0).
    shown : ndarray of shape (n_pairs,), default=None
        Whether the segmenter's mask of each pair is non-empty; needed with
        ``max_blanked``.
    max_blanked : float in [0, 1], default=None
        Consider only the cuts that blank at most this share of the pairs whose
        truth is non-empty (counting those whose mask was shown, as
        ``blanked_rate_`` does). None places no limit.

    Returns
    -------
    threshold : float
    """
    order = np.argsort(presence, kind="stable")
    scores = presence[order]
    # gain[j]: Dice gained by blanking the j pairs of lowest presence
    gain = np.concatenate([[0.0], np.cumsum(blanked_dice[order] - kept_dice[order])])
    # a cut may only fall between two different scores
    allowed = np.concatenate([[True], scores[1:] > scores[:-1], [True]])
    if max_blanked is not None:
        holds_object = blanked_dice == 0
        wrongly_blanked = np.concatenate(
            [[0], np.cumsum((holds_object & np.asarray(shown, dtype=bool))[order])])
        allowed &= wrongly_blanked <= max_blanked * holds_object.sum()
    cut = int(np.flatnonzero(allowed)[np.argmax(gain[allowed])])
    edges = np.concatenate([[0.0], scores, [1.0]])
    return float((edges[cut] + edges[cut + 1]) / 2)



#: The parameters the default ``classifier="image"`` takes from the segmenter (from the
#: model inside a FoldEnsemble or a FrozenEstimator); every other one keeps its default.
SHARED_WITH_CLASSIFIER = ("backbone", "encoder_weights", "input_size", "random_state")


def _model_params(estimator):
    """The parameters of the model a wrapper (FoldEnsemble, FrozenEstimator, ...) holds."""
    params = estimator.get_params(deep=False)
    for wrapped in ("estimator", "segmenter"):
        if "backbone" not in params and hasattr(params.get(wrapped), "get_params"):
            return _model_params(params[wrapped])
    return params


def _fit_checked(template, X, y, encoding, validation_data, who, groups=None):
    """Fit a clone of ``template``; refuse it when it reads ``y`` as other classes."""
    segmenter = fit_with_validation(clone(template), X, y, validation_data, groups=groups)
    check_same_classes(segmenter, encoding, who)
    return segmenter


def _image_presence(classifier, X):
    """Presence probabilities ``(n, n_classes)`` of an image classifier."""
    proba = np.asarray(classifier.predict_proba(X))
    return proba if proba.ndim == 2 else proba[:, np.newaxis]


def _fit_fold_classifier(train, test, fold, *, classifier, X, labels):
    """One fold's image classifier: the presence of the held-out images ``test``."""
    fold_classifier = clone(classifier).fit(take_rows(X, train), labels[train])
    return _image_presence(fold_classifier, take_rows(X, test))


def _join(first, second):
    """Held-out results one after the other: one array, or a list of per-image maps."""
    if isinstance(first, np.ndarray) and isinstance(second, np.ndarray) and (
            first.shape[1:] == second.shape[1:]):
        return np.concatenate([first, second])
    return list(first) + list(second)


def _encoding_of(y, values, binarize=False):
    """The target encoding of all of ``y`` (an array, or mask files read one by one)."""
    if not is_paths(y):
        return fit_target_encoding(binarize_mask(y, name="y") if binarize else y, name="y")
    union = sorted(frozenset().union(*values))
    # mask files may differ in dtype (TGS salt: empty masks uint8, the others uint16)
    dtype = np.result_type(read_mask(y[0], binarize=binarize).dtype,
                           *(np.min_scalar_type(value) for value in union))
    return fit_target_encoding(np.asarray(union, dtype=dtype).reshape(1, 1, -1))


class FalsePositiveFilter(SaveMixin, SegmenterMixin, MetaEstimatorMixin, BaseEstimator):
    """Blank a segmenter's masks of the classes a presence classifier finds absent.

    ``fit`` trains the segmenter and a classifier that predicts, per image and
    class, whether the class's mask is non-empty. Predictions are the
    segmenter's with the absent classes' masks made empty, which removes the
    stray false-positive masks that cost whole (image, class) pairs under the
    Kaggle Dice.

    Parameters
    ----------
    segmenter : estimator
        An unfitted :class:`~skunetseg.UNetSegmenter` or
        :class:`~skunetseg.FoldEnsemble`, or any segmenter meeting the contract
        of the user guide's page "How to wrap your own segmenter" (``fit(X, y)``,
        ``predict_proba`` and the fitted ``encoding_``, ``postprocessing_``,
        ``classes_``, ``n_classes_``, ``target_type_``); cloned by ``fit``. A
        fitted one wrapped in :class:`sklearn.frozen.FrozenEstimator` is used
        as it is; out-of-fold predictions then come from clones of the
        estimator it wraps.
    classifier : "auto", "image", "features" or estimator, default="auto"
        The presence classifier:

        * ``"image"``: a :class:`~skunetseg.PresenceClassifier` with its
          default parameters except ``backbone``, ``encoder_weights``,
          ``input_size`` and ``random_state``, taken from the segmenter (from
          the model inside a ``FoldEnsemble`` or ``FrozenEstimator``) where it
          has them. Nothing else is copied: to set its epochs, augmentation,
          ``fit_in_subprocess``-like settings and so on, pass
          ``classifier=PresenceClassifier(...)``;
        * ``"features"``: a logistic regression (after standardisation) per
          class on features of the segmenter's out-of-fold probability maps
          (:func:`probability_features`);
        * ``"auto"``: ``"image"``, the one that removed false positives on
          TGS salt where the features classifier did no better than a tuned
          ``min_area`` (see the user guide);
        * an estimator: one whose tags accept 3-D input (like
          ``PresenceClassifier``) is an image classifier, fitted on the images
          and a ``(n_images, n_classes)`` 0/1 matrix, and must return one
          probability column per class; any other scikit-learn classifier is
          cloned per class and fitted on the map features.
    presence_threshold : float or array-like of shape (n_classes,), default=0.5
        Presence probability at or below which a class's mask is blanked, for
        all classes or per class (the classes of ``classes_``, without the
        background of multiclass targets). Not the pixel threshold of the
        segmenter. Ignored when ``tune_threshold`` (a value set after such a fit
        warns that the tuned thresholds win); otherwise validated and applied as
        it is at predict time, so ``set_params`` after fit takes effect.
    tune_threshold : bool, default=False
        Choose each class's presence threshold to maximise the Kaggle Dice of
        the held-out predictions (see Notes).
    max_blanked : float in [0, 1], default=None
        With ``tune_threshold``, a budget: choose among the thresholds that
        blank at most this share of the held-out (image, class) pairs that
        hold an object (``blanked_rate_``), for when a missed object costs more
        than the Dice says. None: no budget. Ignored without ``tune_threshold``.
    cv : int, cross-validation generator, iterable or None, default=3
        Folds giving the out-of-fold predictions over the training images (see
        Notes): an int ``k`` is a shuffled ``StratifiedKFold`` over which
        classes each image holds, as in :class:`~skunetseg.FoldEnsemble`, and
        a splitter gets that pattern as its ``y`` and ``groups``. Test folds
        must not overlap; they may leave images out:
        ``ShuffleSplit(n_splits=1, test_size=0.2)`` is a holdout, which costs
        one extra fit instead of ``cv``. None: no cross-fitting; the held-out
        predictions are those of ``validation_data`` alone (image classifiers
        only; one fit of each model). Not used with a
        :class:`~skunetseg.FoldEnsemble` segmenter (unless None): the ensemble is
        fitted once and its folds and out-of-fold maps are the filter's, so the
        whole ladder costs the ensemble plus ``k + 1`` image classifiers (or
        nothing more with the features classifier), not ``k`` more ensembles.
    n_jobs : int, default=None
        Folds fitted in parallel processes (joblib); None means 1.
    random_state : int, RandomState instance or None, default=None
        Shuffles the folds when ``cv`` is an int.

    Attributes
    ----------
    segmenter_ : estimator
        The segmenter fitted on all of ``X`` (or the frozen one).
    classifiers_ : list of estimators
        The fitted presence classifiers: one per class on the map features, or
        a single image classifier for all classes.
    kind_ : {"image", "features"}
        The kind of presence classifier used.
    presence_thresholds_ : ndarray of shape (n_classes,)
        The presence threshold of each class.
    encoding_, postprocessing_
        Those of ``segmenter_``: the filter blanks masks, it thresholds pixels
        as its segmenter does.
    classes_, n_classes_, target_type_
        Those of ``segmenter_``.
    n_held_out_ : int
        Images whose held-out predictions gave the diagnostics and thresholds.
    fp_rate_before_ : float
        On the held-out predictions, the share of the (image, class) pairs with
        an empty true mask that the segmenter predicts non-empty (NaN without
        such pairs).
    fp_rate_ : float
        The same share after filtering.
    blanked_rate_ : float
        The share of the pairs with a non-empty true mask whose non-empty
        predicted mask the filter blanked (NaN without such pairs).
    dice_before_, dice_ : float
        Kaggle Dice of the held-out predictions before and after filtering.

    See Also
    --------
    skunetseg.PresenceClassifier : The image classifier network.
    skunetseg.UNetSegmenter : The segmenter.

    Notes
    -----
    Held-out predictions, for the features classifier's training data, the
    threshold tuning and the diagnostics, never come from a model that was
    trained on the image. The cross-fitting engine that
    :class:`~skunetseg.FoldEnsemble` uses fits a clone of the segmenter (and,
    for an image classifier, of the classifier) on the training part of each
    fold of ``cv`` and predicts its test part; then both are fitted on all the
    data, which costs ``cv + 1`` fits of each. The features classifiers learn
    on the out-of-fold probability maps; their held-out presence
    probabilities come from classifiers fitted on the other folds' maps.
    Before any fold trains, ``fit`` checks that the test folds do not overlap
    and that every fold's training part holds every class of ``y``.

    Given ``validation_data``, its predictions by the final models join the
    held-out predictions (or, with ``cv=None``, are all of them), and it is
    passed to every segmenter fit (and to the final image classifier's) for
    early stopping: tuning on it is then tuning on the images that chose the
    epoch.

    Images and masks may be arrays or lists of files, of mixed sizes when the
    segmenter and the image classifier resize them (``input_size``).
    ``predict_proba`` returns the segmenter's probabilities with the absent
    classes zeroed, a chunk of images at a time. For multiclass (softmax)
    targets, an absent class's probability is moved onto the background class
    (the first label), so that every pixel's probabilities still sum to 1.

    ``save(path)`` and :func:`skunetseg.load` store the filter without pickle,
    its segmenter and classifiers included (see the user guide's page "Saving
    and loading").

    Examples
    --------
    >>> from skunetseg import FalsePositiveFilter, PresenceClassifier, UNetSegmenter
    >>> model = FalsePositiveFilter(UNetSegmenter("efficientnetb0", epochs=30),
    ...                             PresenceClassifier("efficientnetb0", epochs=20),
    ...                             tune_threshold=True, random_state=0)
    >>> model.fit(X_train, y_train)  # doctest: +SKIP
    >>> model.fp_rate_before_, model.fp_rate_, model.blanked_rate_  # doctest: +SKIP
    >>> model.score(X_test, y_test)  # doctest: +SKIP
    """

    _parameter_constraints = {
        "segmenter": [HasMethods(["fit", "predict_proba"])],
        "classifier": [StrOptions({"auto", "image", "features"}),
                       HasMethods(["fit", "predict_proba"])],
        "presence_threshold": [Interval(Real, 0, 1, closed="both"), "array-like"],
        "tune_threshold": ["boolean"],
        "max_blanked": [Interval(Real, 0, 1, closed="both"), None],
        "cv": ["cv_object"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(self, segmenter, classifier="auto", *, presence_threshold=0.5,
                 tune_threshold=False, max_blanked=None, cv=3, n_jobs=None, random_state=None):
        self.segmenter = segmenter
        self.classifier = classifier
        self.presence_threshold = presence_threshold
        self.tune_threshold = tune_threshold
        self.max_blanked = max_blanked
        self.cv = cv
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------ settings
    def _get_classifier(self):
        """Return ``(kind, unfitted classifier)`` without touching the parameter."""
        classifier = _AUTO_KIND if self.classifier == "auto" else self.classifier
        if classifier == "features":
            return "features", make_pipeline(StandardScaler(), LogisticRegression())
        if classifier == "image":
            from ._presence import PresenceClassifier

            params = _model_params(self._fold_segmenter())
            return "image", PresenceClassifier(**{
                name: params[name] for name in SHARED_WITH_CLASSIFIER if name in params})
        kind = "image" if get_tags(classifier).input_tags.three_d_array else "features"
        return kind, classifier

    def _fold_segmenter(self):
        """The estimator cloned for each fold: the one a FrozenEstimator wraps."""
        if isinstance(self.segmenter, FrozenEstimator):
            return self.segmenter.estimator
        return self.segmenter

    def _check_threshold(self, n_classes):
        threshold = np.asarray(self.presence_threshold, dtype=float)
        if threshold.ndim == 0:
            return np.full(n_classes, float(threshold))
        if threshold.shape != (n_classes,) or not ((threshold >= 0) & (threshold <= 1)).all():
            raise ValueError(
                "The 'presence_threshold' parameter must be a float in [0, 1] or one such "
                f"float per class ({n_classes}); got {self.presence_threshold!r}."
            )
        return threshold

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    @restores_on_failure  # a failed or interrupted fit changes nothing
    def fit(self, X, y, validation_data=None, groups=None):
        """Fit the segmenter and the presence classifier, and set the thresholds.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images, or image files (of any sizes when the models have ``input_size``).
        y : array-like or list of paths
            Masks in any format the segmenter takes, or mask files.
        validation_data : tuple (X_val, y_val), default=None
            Held-out images and masks, passed on to the segmenter's fits for
            early stopping; their predictions join the held-out ones (see Notes).
        groups : array-like of shape (n_images,), default=None
            Group labels for a group-aware ``cv`` such as ``GroupKFold`` (the
            images of one patient, scene or part stay on one side of every
            split); passed on to a :class:`~skunetseg.FoldEnsemble` segmenter,
            whose folds the filter then reuses.

        Returns
        -------
        self : FalsePositiveFilter
        """
        X, y, binarize, values = check_fit_input(self, X, y)  # masks as the segmenter reads
        self._binarize = binarize
        encoding = _encoding_of(y, values, binarize)
        columns = slice(1, None) if encoding.target_type == "multiclass" else slice(None)
        labels = self._presence_labels(y, encoding, columns)
        threshold = self._check_threshold(labels.shape[1])
        kind, classifier = self._get_classifier()
        valid = None
        if validation_data is not None:
            validation_data = check_validation_data(validation_data)
            valid = (as_rows(validation_data[0], name="validation_data[0]"),
                     as_mask_rows(validation_data[1], name="validation_data[1]"))
            validation_data = valid
        if self.cv is None and (valid is None or kind != "image"):
            raise ValueError("cv=None takes the held-out predictions from validation_data "
                             "alone: it needs validation_data and an image classifier.")
        self.kind_ = kind
        held_truth, held_proba, held_presence = self._held_out(
            X, y, encoding, labels, values, kind, classifier, validation_data, columns, groups)
        if valid is not None:  # the final models never saw the validation images
            val_truth = read_truth(valid[1], slice(None), encoding, name="validation_data[1]",
                                   binarize=binarize)
            val_proba = self.segmenter_.predict_proba(valid[0])
            held_truth = val_truth if held_truth is None else _join(held_truth, val_truth)
            held_proba = val_proba if held_proba is None else _join(held_proba, val_proba)
            val_presence = self._presence(valid[0], val_proba)
            held_presence = (val_presence if held_presence is None
                             else np.concatenate([held_presence, val_presence]))
        if isinstance(held_truth, list) != isinstance(held_proba, list):
            held_truth, held_proba = list(held_truth), list(held_proba)
        self.encoding_ = self.segmenter_.encoding_
        self.classes_ = self.segmenter_.classes_
        self.n_classes_ = self.segmenter_.n_classes_
        self.target_type_ = self.segmenter_.target_type_

        before = self.postprocessing_.apply(held_proba)
        kept_dice = pair_dice(held_truth, before)
        truth_present, shown_before = presence(held_truth), presence(before)
        if self.tune_threshold:
            blanked_dice = (~truth_present).astype(float)[:, columns]
            threshold = np.array([
                best_threshold(held_presence[:, k], kept_dice[:, columns][:, k],
                               blanked_dice[:, k], shown=shown_before[:, columns][:, k],
                               max_blanked=self.max_blanked)
                for k in range(held_presence.shape[1])
            ])
        self.presence_thresholds_ = threshold
        record_fit_params(self, _PRESENCE_PARAMS)
        after = self.postprocessing_.apply(self._filter(held_proba, held_presence))
        self._set_diagnostics(truth_present[:, columns], shown_before[:, columns],
                              presence(after)[:, columns])
        self.dice_before_ = float(kept_dice.mean())
        self.dice_ = float(pair_dice(held_truth, after).mean())
        self.n_held_out_ = len(held_truth)
        return self

    def _presence_labels(self, y, encoding, columns):
        """Whether each class's true mask is non-empty, ``(n_images, n_classes)``, chunk by
        chunk (mask files are read one at a time)."""
        return np.concatenate([presence(read_truth(y, rows, encoding,
                                                   binarize=self._binarize))[:, columns]
                               for rows in row_chunks(len(y), DEFAULT_CHUNK)])

    def _held_out(self, X, y, encoding, labels, values, kind, classifier, validation_data,
                  columns, groups=None):
        """Out-of-fold (truth, probabilities, presence) over ``X`` (None for ``cv=None``);
        fits ``segmenter_`` and ``classifiers_`` on all of ``X``."""
        if self.cv is None:
            self.segmenter_ = _fit_checked(self.segmenter, X, y, encoding, validation_data,
                                           "The segmenter")
            self.classifiers_ = [self._fit_final_classifier(classifier, X, labels,
                                                            validation_data, columns)]
            return None, None, None
        if self._reuses_ensemble_folds():
            # the ensemble, fitted once: its folds and out-of-fold maps are the filter's
            template = clone(self.segmenter).set_params(store_oof_proba=True)
            self.segmenter_ = _fit_checked(template, X, y, encoding, validation_data,
                                           "The segmenter", groups=groups)
            folds, oof_proba = self.segmenter_.folds_, self.segmenter_.oof_proba_
        else:
            folds, _, oof_proba = cross_fit(
                self._fold_segmenter(), X, y, cv=self.cv, groups=groups,
                random_state=self.random_state, values=values,
                validation_data=validation_data, encoding=encoding, min_folds=1,
                return_estimators=False, n_jobs=self.n_jobs)
            self.segmenter_ = _fit_checked(self.segmenter, X, y, encoding, validation_data,
                                           "The segmenter")
        held_rows = np.concatenate([test for _, test in folds])
        held_proba = held_out(oof_proba, held_rows)
        held_truth = read_truth(y, held_rows, encoding, binarize=self._binarize)
        if kind == "image":  # k image classifiers give the held-out presence, then one more
            image_presence = np.concatenate(fit_folds(
                _fit_fold_classifier, folds, n_jobs=self.n_jobs, classifier=classifier, X=X,
                labels=labels))
            self.classifiers_ = [self._fit_final_classifier(classifier, X, labels,
                                                            validation_data, columns)]
            return held_truth, held_proba, image_presence
        features = self._features(held_proba)
        held_labels = labels[held_rows]
        bounds = np.cumsum([0] + [len(test) for _, test in folds])
        held_presence = np.empty(held_labels.shape)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            others = np.r_[0:start, stop:len(held_rows)]
            for k in range(labels.shape[1]):
                fitted_k = _fit_class_classifier(classifier, features[others, k],
                                                 held_labels[others, k])
                held_presence[start:stop, k] = _presence_column(fitted_k,
                                                                features[start:stop, k])
        self.classifiers_ = [_fit_class_classifier(classifier, features[:, k], held_labels[:, k])
                             for k in range(labels.shape[1])]
        return held_truth, held_proba, held_presence

    def _reuses_ensemble_folds(self):
        """Whether the segmenter is an unfitted FoldEnsemble whose folds the filter reuses."""
        from ._ensemble import FoldEnsemble

        return isinstance(self.segmenter, FoldEnsemble)

    def _fit_final_classifier(self, classifier, X, labels, validation_data, columns):
        """The image classifier fitted on all of ``X`` (watching the validation images)."""
        if validation_data is None:
            return clone(classifier).fit(X, labels)
        X_val, y_val = validation_data
        val_labels = self._presence_labels(y_val, self.segmenter_.encoding_, columns)
        return fit_with_validation(clone(classifier), X, labels, (X_val, val_labels))

    def _set_diagnostics(self, truth_present, shown_before, shown_after):
        """False-positive and wrongly-blanked shares of the held-out pairs."""
        empty = ~truth_present
        self.fp_rate_before_ = _share(shown_before, empty)
        self.fp_rate_ = _share(shown_after, empty)
        self.blanked_rate_ = _share(shown_before & ~shown_after, ~empty)

    # -------------------------------------------------------------- predict
    @property
    def postprocessing_(self):
        """The segmenter's post-processing: the filter thresholds pixels as it does."""
        check_is_fitted(self, "segmenter_")
        return self.segmenter_.postprocessing_

    def _features(self, proba):
        """Features ``(n, K, F)`` of the presence classes' maps."""
        features = probability_features(proba, self.segmenter_.postprocessing_.apply(proba))
        if self.segmenter_.encoding_.target_type == "multiclass":
            return features[:, 1:]
        return features

    def _presence(self, X, proba):
        """Presence probabilities ``(n, n_classes)`` of the images ``X`` (or a SharedChunk)."""
        if self.kind_ == "image":
            classifier = self.classifiers_[0]
            return _image_presence(classifier, X.for_model(classifier)
                                   if isinstance(X, SharedChunk) else X)
        features = self._features(proba)
        return np.column_stack([_presence_column(classifier, features[:, k])
                                for k, classifier in enumerate(self.classifiers_)])

    def _filter(self, proba, presence_proba):
        """Zero the probabilities of the absent classes (multiclass: onto the background)."""
        keep = presence_proba > self.presence_thresholds_
        if self.segmenter_.encoding_.target_type == "multiclass":
            keep = np.column_stack([np.ones(len(keep), dtype=bool), keep])
        if isinstance(proba, list):
            return [self._blank(image_proba, image_keep)
                    for image_proba, image_keep in zip(proba, keep, strict=True)]
        return self._blank(proba, keep[:, np.newaxis, np.newaxis, :])

    def _blank(self, proba, keep):
        filtered = proba * keep
        if self.segmenter_.encoding_.target_type == "multiclass":
            filtered[..., 0] += (proba * ~keep).sum(axis=-1)
        return filtered.astype(np.float32, copy=False)

    # predict_proba, predict and score: the chunked engine of SegmenterMixin (_base.py)
    def _prediction_source(self, X):
        self._apply_predict_params()
        return super()._prediction_source(X)

    def _apply_predict_params(self):
        """Validate ``presence_threshold`` (and ``tune_threshold``, ``max_blanked``) as
        they are now and apply it (``set_params`` after fit), except over thresholds
        that ``tune_threshold`` chose, which win (with a warning)."""
        check_is_fitted(self)
        changed_after_fit(self, ("presence_threshold", "max_blanked"), tuning="tune_threshold",
                          tuned=("presence_threshold", "max_blanked"))
        threshold = self._check_threshold(len(self.presence_thresholds_))
        if not self.tune_threshold and not np.array_equal(threshold, self.presence_thresholds_):
            self.presence_thresholds_ = threshold  # predicting changes nothing otherwise

    def _chunk_size(self):
        inner = getattr(self.segmenter_, "_chunk_size", None)
        return inner() if callable(inner) else DEFAULT_CHUNK

    def _chunk_proba(self, X, rows):
        """The segmenter's probabilities of the images ``rows``, filtered by their presence
        (files decoded once for the segmenter and the image classifier)."""
        chunk = SharedChunk(take_rows(X, rows))
        proba = self.segmenter_.predict_proba(chunk.for_model(self.segmenter_))
        return self._filter(proba, self._presence(chunk, proba))

    def transform(self, X):
        """The filtered probability maps: the same as :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths

        Returns
        -------
        proba : ndarray of shape (n_images, H, W, K), dtype float32, or list of ndarray
        """
        return self.predict_proba(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.segmenter)
        tags.input_tags = inner.input_tags
        tags.target_tags = inner.target_tags
        tags.non_deterministic = inner.non_deterministic
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags
