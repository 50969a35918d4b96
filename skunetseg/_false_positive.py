"""FalsePositiveFilter: blank a segmenter's masks where a presence classifier says "absent".

Under the Kaggle Dice an (image, class) pair whose true mask is empty scores 1
only if the predicted mask is empty too, so a few stray pixels cost the whole
pair. The filter trains a presence classifier per class and zeroes the
segmenter's probabilities of the classes it finds absent.
"""

import inspect
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.dummy import DummyClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import check_cv
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import SegmenterMixin
from ._images import check_images
from ._targets import encode_targets, fit_target_encoding
from .io import binarize_mask
from .metrics import dice_per_pair
from .postprocess import applied_postprocessing

__all__ = ["FalsePositiveFilter", "probability_features", "FEATURE_NAMES"]

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
    proba : ndarray of shape (n_images, H, W, K)
        Probability maps of a segmenter.
    masks : ndarray of shape (n_images, H, W, K), bool
        The masks the segmenter predicts from them.

    Returns
    -------
    features : ndarray of shape (n_images, K, 6), float64
        In the order of :data:`FEATURE_NAMES`: the largest probability, the mean
        probability, the mean of the top 1 % of the probabilities, the mask's
        area and the area above probability 0.9 (both as shares of the image),
        and the mean probability inside the mask (0 for an empty mask).
    """
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


def _fit_with_validation(estimator, X, y, validation_data):
    """``estimator.fit(X, y)``, passing ``validation_data`` when given and accepted."""
    if validation_data is not None and (
            "validation_data" in inspect.signature(estimator.fit).parameters
            or isinstance(estimator, FrozenEstimator)):
        return estimator.fit(X, y, validation_data=validation_data)
    return estimator.fit(X, y)


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


class FalsePositiveFilter(SegmenterMixin, MetaEstimatorMixin, BaseEstimator):
    """Blank a segmenter's masks of the classes a presence classifier finds absent.

    ``fit`` trains the segmenter and a classifier that predicts, per image and
    class, whether the class's mask is non-empty. Predictions are the
    segmenter's with the absent classes' masks made empty, which removes the
    stray false-positive masks that cost whole (image, class) pairs under the
    Kaggle Dice.

    Parameters
    ----------
    segmenter : estimator
        An unfitted :class:`~skunetseg.UNetSegmenter`, or an estimator with the
        same ``fit(X, y, validation_data=None)``, ``predict_proba`` and fitted
        ``classes_``, ``n_classes_``, ``target_type_``, ``_encoding`` and
        ``_binary_masks``; cloned by ``fit``. A fitted one wrapped in
        :class:`sklearn.frozen.FrozenEstimator` is used as it is; out-of-fold
        predictions then come from clones of the estimator it wraps.
    classifier : "auto", "image", "features" or estimator, default="auto"
        The presence classifier:

        * ``"image"``: a :class:`~skunetseg.PresenceClassifier` on the images,
          with the segmenter's backbone, encoder weights, batch size, epochs,
          augmentation, early stopping and seed;
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
    threshold : float or array-like of shape (n_classes,), default=0.5
        Presence probability at or below which a class's mask is blanked, for
        all classes or per class (the classes of ``classes_``, without the
        background of multiclass targets). Ignored when ``tune_threshold``.
    tune_threshold : bool, default=False
        Choose each class's threshold to maximise the Kaggle Dice of the
        held-out predictions (see Notes).
    max_blanked : float in [0, 1], default=None
        With ``tune_threshold``, a budget: choose among the thresholds that
        blank at most this share of the held-out (image, class) pairs that
        hold an object (``blanked_rate_``), for when a missed object costs more
        than the Dice says. None: no budget. Ignored without ``tune_threshold``.
    cv : int, cross-validation generator or iterable, default=3
        Folds giving the out-of-fold predictions (see Notes): an int is the
        number of unshuffled ``KFold`` folds. Test folds must not overlap; they
        may leave images out: ``ShuffleSplit(n_splits=1, test_size=0.2)`` is a
        holdout, which costs one extra fit instead of ``cv``.

    Attributes
    ----------
    segmenter_ : estimator
        The segmenter fitted on all of ``X`` (or the frozen one).
    classifiers_ : list of estimators
        The fitted presence classifiers: one per class on the map features, or
        a single image classifier for all classes.
    kind_ : {"image", "features"}
        The kind of presence classifier used.
    threshold_ : ndarray of shape (n_classes,)
        The presence threshold of each class.
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
    trained on the image:

    * the features classifiers learn on out-of-fold probability maps: the
      segmenter is cloned and fitted once per fold of ``cv`` and predicts its
      test fold, then fitted on all the data, which costs ``cv + 1`` segmenter
      fits. Their held-out presence probabilities come from classifiers fitted
      on the other folds' maps;
    * the image classifier, given ``validation_data``, is fitted once on ``X``
      and the held-out predictions are those of ``validation_data`` (one
      segmenter and one classifier fit). Without it, segmenter and classifier
      are both fitted per fold of ``cv`` and once on all the data.

    ``validation_data`` is also passed to every segmenter fit (and to the
    image classifier's) for early stopping, so that tuning on it is tuning on
    the images that chose the epoch: prefer out-of-fold predictions when that
    matters.

    ``predict_proba`` returns the segmenter's probabilities with the absent
    classes zeroed. For multiclass (softmax) targets, an absent class's
    probability is moved onto the background class (the first label), so that
    every pixel's probabilities still sum to 1.

    Examples
    --------
    >>> from skunetseg import FalsePositiveFilter, UNetSegmenter
    >>> model = FalsePositiveFilter(UNetSegmenter("efficientnetb0", epochs=30),
    ...                             tune_threshold=True)
    >>> model.fit(X_train, y_train)  # doctest: +SKIP
    >>> model.fp_rate_before_, model.fp_rate_, model.blanked_rate_  # doctest: +SKIP
    >>> model.score(X_test, y_test)  # doctest: +SKIP
    """

    _parameter_constraints = {
        "segmenter": [HasMethods(["fit", "predict_proba"])],
        "classifier": [StrOptions({"auto", "image", "features"}),
                       HasMethods(["fit", "predict_proba"])],
        "threshold": [Interval(Real, 0, 1, closed="both"), "array-like"],
        "tune_threshold": ["boolean"],
        "max_blanked": [Interval(Real, 0, 1, closed="both"), None],
        "cv": ["cv_object"],
    }

    def __init__(self, segmenter, classifier="auto", *, threshold=0.5, tune_threshold=False,
                 max_blanked=None, cv=3):
        self.segmenter = segmenter
        self.classifier = classifier
        self.threshold = threshold
        self.tune_threshold = tune_threshold
        self.max_blanked = max_blanked
        self.cv = cv

    # ------------------------------------------------------------ settings
    def _get_classifier(self):
        """Return ``(kind, unfitted classifier)`` without touching the parameter."""
        classifier = _AUTO_KIND if self.classifier == "auto" else self.classifier
        if classifier == "features":
            return "features", make_pipeline(StandardScaler(), LogisticRegression())
        if classifier == "image":
            from ._presence import PresenceClassifier

            shared = self._fold_segmenter().get_params(deep=False)
            names = set(PresenceClassifier().get_params()) - {"threshold", "loss", "callbacks"}
            return "image", PresenceClassifier(**{k: v for k, v in shared.items() if k in names})
        kind = "image" if get_tags(classifier).input_tags.three_d_array else "features"
        return kind, classifier

    def _fold_segmenter(self):
        """The estimator cloned for each fold: the one a FrozenEstimator wraps."""
        if isinstance(self.segmenter, FrozenEstimator):
            return self.segmenter.estimator
        return self.segmenter

    def _check_threshold(self, n_classes):
        threshold = np.asarray(self.threshold, dtype=float)
        if threshold.ndim == 0:
            return np.full(n_classes, float(threshold))
        if threshold.shape != (n_classes,) or not ((threshold >= 0) & (threshold <= 1)).all():
            raise ValueError(
                "The 'threshold' parameter must be a float in [0, 1] or one such float per "
                f"class ({n_classes}); got {self.threshold!r}."
            )
        return threshold

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, validation_data=None):
        """Fit the segmenter and the presence classifier, and set the thresholds.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)
            Images.
        y : array-like
            Masks in any format the segmenter takes.
        validation_data : tuple (X_val, y_val), default=None
            Held-out images and masks, passed on to the segmenter's fits for
            early stopping; for the image classifier they also give the
            held-out predictions (see Notes).

        Returns
        -------
        self : FalsePositiveFilter
        """
        check_images(X, name="X")
        X = np.asarray(X)
        if getattr(self._fold_segmenter(), "binarize_masks", False):
            # read the masks as the segmenter does (binarising twice changes nothing)
            y = binarize_mask(y, name="y")
            if validation_data is not None and isinstance(validation_data, (tuple, list)) \
                    and len(validation_data) == 2:
                validation_data = (validation_data[0],
                                   binarize_mask(validation_data[1], name="validation_data[1]"))
        encoding = fit_target_encoding(y, name="y")
        truth = encode_targets(y, encoding, name="y") > 0.5
        if len(truth) != len(X):
            raise ValueError(f"X and y must hold the same number of images; got {len(X)} "
                             f"and {len(truth)}.")
        y = np.asarray(y)
        columns = slice(1, None) if encoding.target_type == "multiclass" else slice(None)
        labels = truth.any(axis=(1, 2))[:, columns]
        threshold = self._check_threshold(labels.shape[1])
        kind, classifier = self._get_classifier()
        if validation_data is not None and (
                not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2):
            raise TypeError("validation_data must be a tuple (X_val, y_val).")

        if kind == "image" and validation_data is not None:
            held = self._fit_with_validation_data(X, y, encoding, labels, classifier,
                                                  validation_data, columns)
        else:
            held = self._fit_out_of_fold(X, y, encoding, truth, labels, kind, classifier,
                                         validation_data)
        held_truth, held_proba, held_presence = held
        self.kind_ = kind
        self.classes_ = self.segmenter_.classes_
        self.n_classes_ = self.segmenter_.n_classes_
        self.target_type_ = self.segmenter_.target_type_
        self._encoding = self.segmenter_._encoding

        before = self._binary_masks(held_proba)
        kept_dice = dice_per_pair(held_truth, before)
        if self.tune_threshold:
            blanked_dice = (~held_truth.any(axis=(1, 2))).astype(float)[:, columns]
            shown = before.any(axis=(1, 2))[:, columns]
            threshold = np.array([
                best_threshold(held_presence[:, k], kept_dice[:, columns][:, k],
                               blanked_dice[:, k], shown=shown[:, k],
                               max_blanked=self.max_blanked)
                for k in range(held_presence.shape[1])
            ])
        self.threshold_ = threshold
        after = self._binary_masks(self._filter(held_proba, held_presence))
        self._set_diagnostics(held_truth[..., columns], before[..., columns],
                              after[..., columns])
        self.dice_before_ = float(kept_dice.mean())
        self.dice_ = float(dice_per_pair(held_truth, after).mean())
        self.n_held_out_ = len(held_truth)
        return self

    def _fit_segmenter(self, template, X, y, encoding, validation_data, who):
        segmenter = _fit_with_validation(clone(template), X, y, validation_data)
        fitted = segmenter._encoding
        if (fitted.target_type != encoding.target_type
                or not np.array_equal(fitted.classes, encoding.classes)):
            raise ValueError(
                f"{who} reads the masks as {fitted.target_type} with classes "
                f"{fitted.classes.tolist()}, but y holds {encoding.target_type} masks with "
                f"classes {encoding.classes.tolist()}: every fit must see the same classes "
                "(use fewer cv folds, or masks in the segmenter's format)."
            )
        return segmenter

    def _fit_with_validation_data(self, X, y, encoding, labels, classifier, validation_data,
                                  columns):
        """Image classifier with validation data: fit each once, hold out the validation."""
        self.segmenter_ = self._fit_segmenter(self.segmenter, X, y, encoding, validation_data,
                                              "The segmenter")
        X_val = np.asarray(validation_data[0])
        val_truth = encode_targets(validation_data[1], self.segmenter_._encoding,
                                   name="validation_data[1]") > 0.5
        val_labels = val_truth.any(axis=(1, 2))[:, columns]
        self.classifiers_ = [_fit_with_validation(clone(classifier), X, labels,
                                                  (X_val, val_labels))]
        return (val_truth, self.segmenter_.predict_proba(X_val),
                self._image_presence(self.classifiers_[0], X_val))

    def _fit_out_of_fold(self, X, y, encoding, truth, labels, kind, classifier,
                         validation_data):
        """Out-of-fold predictions over ``X``, then the final fits on all of it."""
        folds = list(check_cv(self.cv).split(X, labels[:, 0] if labels.shape[1] == 1
                                             else labels))
        tests = [test for _, test in folds]
        held_rows = np.concatenate(tests)
        if len(np.unique(held_rows)) != len(held_rows):
            raise ValueError("The test folds of cv overlap; each image may be held out once.")
        held_proba, held_presence = [], []
        for train, test in folds:
            segmenter = self._fit_segmenter(self._fold_segmenter(), X[train], y[train], encoding,
                                            validation_data, "A fold's segmenter")
            held_proba.append(segmenter.predict_proba(X[test]))
            if kind == "image":
                fold_classifier = clone(classifier).fit(X[train], labels[train])
                held_presence.append(self._image_presence(fold_classifier, X[test]))
        held_proba = np.concatenate(held_proba)
        self.segmenter_ = self._fit_segmenter(self.segmenter, X, y, encoding, validation_data,
                                              "The segmenter")
        if kind == "image":
            self.classifiers_ = [clone(classifier).fit(X, labels)]
            return truth[held_rows], held_proba, np.concatenate(held_presence)
        features = self._features(held_proba)
        held_labels = labels[held_rows]
        bounds = np.cumsum([0] + [len(test) for test in tests])
        held_presence = np.empty(held_labels.shape)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            others = np.r_[0:start, stop:len(held_rows)]
            for k in range(labels.shape[1]):
                fitted = _fit_class_classifier(classifier, features[others, k],
                                               held_labels[others, k])
                held_presence[start:stop, k] = _presence_column(fitted,
                                                                features[start:stop, k])
        self.classifiers_ = [_fit_class_classifier(classifier, features[:, k], held_labels[:, k])
                             for k in range(labels.shape[1])]
        return truth[held_rows], held_proba, held_presence

    def _set_diagnostics(self, truth, before, after):
        """False-positive and wrongly-blanked shares of the held-out pairs."""
        empty = ~truth.any(axis=(1, 2))
        predicted_before = before.any(axis=(1, 2))
        predicted_after = after.any(axis=(1, 2))
        self.fp_rate_before_ = _share(predicted_before, empty)
        self.fp_rate_ = _share(predicted_after, empty)
        self.blanked_rate_ = _share(predicted_before & ~predicted_after, ~empty)

    # -------------------------------------------------------------- predict
    def _features(self, proba):
        """Features ``(n, K, F)`` of the presence classes' maps."""
        features = probability_features(proba, self.segmenter_._binary_masks(proba))
        if self.segmenter_._encoding.target_type == "multiclass":
            return features[:, 1:]
        return features

    @staticmethod
    def _image_presence(classifier, X):
        proba = np.asarray(classifier.predict_proba(X))
        return proba if proba.ndim == 2 else proba[:, np.newaxis]

    def _presence(self, X, proba):
        """Presence probabilities ``(n, n_classes)`` of the images ``X``."""
        if self.kind_ == "image":
            return self._image_presence(self.classifiers_[0], X)
        features = self._features(proba)
        return np.column_stack([_presence_column(classifier, features[:, k])
                                for k, classifier in enumerate(self.classifiers_)])

    def _filter(self, proba, presence):
        """Zero the probabilities of the absent classes (multiclass: onto the background)."""
        keep = presence > self.threshold_
        if self._encoding.target_type == "multiclass":
            keep = np.column_stack([np.ones(len(keep), dtype=bool), keep])
        keep = keep[:, np.newaxis, np.newaxis, :]
        filtered = proba * keep
        if self._encoding.target_type == "multiclass":
            filtered[..., 0] += (proba * ~keep).sum(axis=-1)
        return filtered.astype(np.float32, copy=False)

    def predict_proba(self, X):
        """The segmenter's probabilities with the absent classes zeroed.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)

        Returns
        -------
        proba : ndarray of shape (n_images, H, W, K), dtype float32
        """
        check_is_fitted(self)
        proba = self.segmenter_.predict_proba(X)
        return self._filter(proba, self._presence(X, proba))

    def transform(self, X):
        """The filtered probability maps: the same as :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)

        Returns
        -------
        proba : ndarray of shape (n_images, H, W, K), dtype float32
        """
        return self.predict_proba(X)

    def _postprocessing(self, encoding):
        """The segmenter's (threshold, min_area, min_component_area), one value per output."""
        return applied_postprocessing(self.segmenter_, encoding)

    def _binary_masks(self, proba):
        """Bool ``(n, H, W, K)`` masks, by the segmenter's own post-processing."""
        return self.segmenter_._binary_masks(proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.segmenter)
        tags.input_tags = inner.input_tags
        tags.target_tags = inner.target_tags
        tags.non_deterministic = inner.non_deterministic
        return tags
