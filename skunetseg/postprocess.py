"""Post-processing of predicted probability maps, and a search for its settings (NumPy, cv2).

The recipe of the Kaggle segmentation competitions (clouds, steel, salt) turns
each class's probability map into a mask in this order, per image and class:

1. **Threshold** the probabilities (``activation="sigmoid"``: each class on its
   own, with its own threshold). With ``activation="softmax"`` the classes
   compete instead: each pixel goes to the class of highest probability (the
   one-hot of the argmax) and no threshold applies;
2. **Remove small components**: connected components (8-connectivity) with
   fewer than ``min_component_area`` pixels are erased;
3. **Blank small masks**: if what is left of the mask covers fewer than
   ``min_area`` pixels, the whole mask of that class on that image is erased,
   betting that the class is absent from the image.

With softmax outputs, class 0 is the background: steps 2 and 3 apply to the
classes 1 to K-1, and the pixels they erase become background, so that the
masks stay one-hot.

``min_area`` and ``min_component_area`` are *scale-aware*: a number in (0, 1)
is a fraction of the image's ``H * W`` pixels, so the same setting works when
the images are resized; 0 turns the step off and a number >= 1 counts pixels.

:func:`tune_postprocessing` searches the threshold and ``min_area`` of every
class for the Kaggle Dice (see :func:`skunetseg.metrics.dice_score`) on held-out
predictions, keeping the least aggressive settings within one standard error of
the best score; :func:`postprocess` applies them.
"""

import numbers
from dataclasses import dataclass

import cv2
import numpy as np

from .metrics import _as_binary_masks, dice_per_pair

__all__ = [
    "check_postprocessing",
    "ACTIVATIONS",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_MIN_AREAS",
    "PostProcessing",
    "PostprocessingSearch",
    "postprocess",
    "tune_postprocessing",
]

#: The kinds of network output :func:`postprocess` understands.
ACTIVATIONS = ("sigmoid", "softmax")

#: Thresholds :func:`tune_postprocessing` tries by default with sigmoid outputs: 0.05 to 0.95.
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(1, 20) * 0.05, 2).tolist())

#: ``min_area`` values :func:`tune_postprocessing` tries by default: off, then fractions of H*W.
DEFAULT_MIN_AREAS = (0.0, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)

#: Relative tolerance under which two mean Dice scores of the search count as tied.
_TIE_TOLERANCE = 1e-12

#: How :func:`tune_postprocessing` picks among the candidates it scored.
SELECTIONS = ("one_se", "best")


@dataclass(frozen=True)
class PostprocessingSearch:
    """The result of :func:`tune_postprocessing`.

    Attributes
    ----------
    thresholds : tuple of float of length K, or None
        The chosen threshold of each class; None with softmax outputs, where
        thresholds do not apply.
    min_areas : tuple of float of length K
        The chosen ``min_area`` of each class, as it appears in the searched grid:
        0 (off), a fraction of ``H * W`` (a value in (0, 1), as in the default grid)
        or a pixel count (>= 1). The entry of the softmax background (class 0) is 0.
    score_before : float
        Kaggle Dice of the plain masks: threshold 0.5 (sigmoid) or the argmax
        (softmax), no area filter.
    score_after : float
        Kaggle Dice with the chosen settings.
    class_scores_before, class_scores_after : tuple of float of length K
        The mean Dice of each class over the images, before and after.
    activation : str
        The activation the search was run for.
    score_best : float or None, default=None
        Kaggle Dice of the highest-scoring settings of each class. With
        ``selection="one_se"`` the chosen ones score at most one standard error
        below it (per class); with ``"best"`` it equals ``score_after``.
    """

    thresholds: tuple | None
    min_areas: tuple
    score_before: float
    score_after: float
    class_scores_before: tuple
    class_scores_after: tuple
    activation: str
    score_best: float | None = None

    @property
    def params(self):
        """The keyword arguments of :func:`postprocess` that apply the chosen settings.

        Use ``postprocess(proba, **search.params)``.
        """
        return {
            "threshold": self.thresholds,
            "min_area": self.min_areas,
            "activation": self.activation,
        }


def _check_activation(activation):
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}; got {activation!r}.")


def _check_proba(proba):
    """Return ``proba`` as a floating ``(n, H, W, K)`` array of values in [0, 1]."""
    proba = np.asarray(proba)
    if proba.ndim != 4:
        raise ValueError(
            "proba must have shape (n_images, height, width, n_classes), one channel per "
            f"class; got shape {proba.shape}."
        )
    if not np.issubdtype(proba.dtype, np.floating):
        raise TypeError(f"proba must hold floating-point probabilities; got dtype {proba.dtype}.")
    if 0 in proba.shape[1:]:
        raise ValueError(f"proba must have a non-zero height, width and n_classes; got "
                         f"shape {proba.shape}.")
    if np.isnan(proba).any():
        raise ValueError("proba contains NaN; it must hold probabilities between 0 and 1.")
    if proba.size and not (proba.min() >= 0 and proba.max() <= 1):
        raise ValueError("proba must hold probabilities between 0 and 1; got values from "
                         f"{proba.min()} to {proba.max()}.")
    return proba


def _as_values(value, name):
    """Return ``value`` as a 1-D float array, or raise naming the parameter."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number or a sequence of numbers; got {value!r}.")
    array = np.asarray(value, dtype=object)
    items = array.ravel()
    if array.ndim > 1 or not all(
        isinstance(item, numbers.Real) and not isinstance(item, (bool, np.bool_))
        for item in items
    ):
        raise TypeError(f"{name} must be a number or a sequence of numbers; got {value!r}.")
    values = items.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite; got {value!r}.")
    return values


def _per_class(value, name, n_classes, *, threshold):
    """Return a scalar or length-K parameter as a float array of shape (K,), validated."""
    values = _as_values(value, name)
    if np.ndim(value) == 0:
        values = np.full(n_classes, values[0])
    elif values.size != n_classes:
        raise ValueError(
            f"{name} must be a number or a sequence of one value per class "
            f"({n_classes}); got {values.size} values."
        )
    _check_range(values, name, threshold=threshold)
    return values


def _check_range(values, name, *, threshold):
    if threshold and not ((values > 0) & (values < 1)).all():
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {values.tolist()}.")
    if not threshold and (values < 0).any():
        raise ValueError(
            f"{name} must be >= 0 (0: off, a number in (0, 1): a fraction of the image's "
            f"pixels, a number >= 1: pixels); got {values.tolist()}."
        )


def _pixel_counts(areas, image_size):
    """Turn ``min_area``-like values into integer pixel counts for images of ``image_size`` px.

    A value in (0, 1) is a fraction of ``image_size``; a value >= 1 counts pixels. A
    mask or component is filtered out when its area is below the returned count.
    """
    areas = np.asarray(areas, dtype=np.float64)
    pixels = np.where((areas > 0) & (areas < 1), areas * image_size, areas)
    # round away the float error of e.g. 0.002 * 10_000 before taking the ceiling
    return np.ceil(np.round(pixels, 6)).astype(np.int64)


def _remove_small_components(mask, min_pixels):
    """Erase the 8-connected components of a 2-D bool mask with fewer than ``min_pixels``."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # label 0 is the background of the mask
    return keep[labels]


def _filter(masks, min_area, min_component_area, classes):
    """Apply steps 2 and 3 in place to the given classes of bool masks ``(n, H, W, K)``."""
    image_size = masks.shape[1] * masks.shape[2]
    component_pixels = _pixel_counts(min_component_area, image_size)
    for k in classes:
        if component_pixels[k] > 1:  # every component has at least one pixel
            for i in range(masks.shape[0]):
                if masks[i, :, :, k].any():
                    masks[i, :, :, k] = _remove_small_components(
                        masks[i, :, :, k], component_pixels[k]
                    )
    areas = np.count_nonzero(masks, axis=(1, 2))  # (n, K)
    blank = areas < _pixel_counts(min_area, image_size)
    blank[:, [k for k in range(masks.shape[-1]) if k not in classes]] = False
    masks &= ~blank[:, np.newaxis, np.newaxis, :]
    return masks


def _masks(proba, threshold, activation):
    """Step 1: the bool masks ``(n, H, W, K)`` before any area filter."""
    if activation == "softmax":
        return np.eye(proba.shape[-1], dtype=bool)[np.argmax(proba, axis=-1)]
    return proba > threshold


def check_postprocessing(n_classes, *, threshold=0.5, min_area=0, min_component_area=0,
                         activation="sigmoid"):
    """Validate post-processing settings for ``n_classes`` classes.

    Parameters
    ----------
    n_classes : int
        Number of output channels K.
    threshold, min_area, min_component_area, activation
        As in :func:`postprocess`.

    Returns
    -------
    threshold : ndarray of shape (K,) or None
        None with softmax outputs given no threshold.
    min_area, min_component_area : ndarray of shape (K,)
    """
    _check_activation(activation)
    if activation == "softmax":
        if threshold is not None:
            threshold = _per_class(threshold, "threshold", n_classes, threshold=True)
    elif threshold is None:
        raise ValueError(
            "threshold=None is only allowed with activation='softmax'; sigmoid outputs "
            "need a threshold in (0, 1) or one per class."
        )
    else:
        threshold = _per_class(threshold, "threshold", n_classes, threshold=True)
    min_area = _per_class(min_area, "min_area", n_classes, threshold=False)
    min_component_area = _per_class(
        min_component_area, "min_component_area", n_classes, threshold=False
    )
    return threshold, min_area, min_component_area


@dataclass(frozen=True)
class PostProcessing:
    """Post-processing settings that apply themselves: the ``postprocessing_`` of a segmenter.

    Every fitted skunetseg segmenter has one as ``postprocessing_``; a wrapped
    segmenter provides one too (see the user guide's page "How to wrap your own
    segmenter"). Build it with :meth:`from_params`, which validates the values.

    Attributes
    ----------
    threshold : tuple of float of length K, or None
        Per-class probability threshold (None with softmax outputs, which take
        the argmax).
    min_area, min_component_area : tuple of float of length K
        Per-class area filters, in the units of :func:`postprocess`.
    activation : {"sigmoid", "softmax"}
        The output activation the probabilities come from.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.postprocess import PostProcessing
    >>> settings = PostProcessing.from_params(1, threshold=0.3, min_area=2)
    >>> settings.threshold, settings.min_area
    ((0.3,), (2.0,))
    >>> proba = np.zeros((1, 4, 4, 1))
    >>> proba[0, 0, 0] = 0.9  # one pixel: under min_area
    >>> bool(settings.apply(proba).any())
    False
    """

    threshold: tuple | None
    min_area: tuple
    min_component_area: tuple
    activation: str = "sigmoid"

    @classmethod
    def from_params(cls, n_outputs, *, threshold=0.5, min_area=0, min_component_area=0,
                    activation="sigmoid"):
        """Validated settings for ``n_outputs`` channels (a scalar applies to all of them).

        With softmax outputs the threshold is dropped: the masks are the argmax.
        """
        if activation == "softmax":
            threshold = None
        threshold, min_area, min_component_area = check_postprocessing(
            n_outputs, threshold=threshold, min_area=min_area,
            min_component_area=min_component_area, activation=activation)
        return cls(None if threshold is None else tuple(threshold.tolist()),
                   tuple(min_area.tolist()), tuple(min_component_area.tolist()), activation)

    @property
    def params(self):
        """The keyword arguments of :func:`postprocess` these settings stand for."""
        return {"threshold": self.threshold, "min_area": self.min_area,
                "min_component_area": self.min_component_area, "activation": self.activation}

    def apply(self, proba):
        """Bool masks of the probability maps: :func:`postprocess` with these settings.

        Parameters
        ----------
        proba : array-like of shape (n_images, H, W, K), or list of (H_i, W_i, K) arrays
            Probability maps; a list (images of different sizes) is processed
            image by image, each at its own size.

        Returns
        -------
        masks : ndarray of bool of shape (n_images, H, W, K), or list of them per image
        """
        if isinstance(proba, list):
            return [postprocess(p[np.newaxis], **self.params)[0] for p in proba]
        return postprocess(proba, **self.params)


def postprocess(proba, *, threshold=0.5, min_area=0, min_component_area=0, activation="sigmoid"):
    """Turn probability maps into masks: threshold, drop small components, blank small masks.

    The steps and their order are described in :mod:`skunetseg.postprocess`.

    Parameters
    ----------
    proba : array-like of shape (n_images, H, W, K)
        Predicted probabilities, one channel per class (``K = 1`` for binary
        segmentation), as returned by ``predict_proba``.
    threshold : float or sequence of K floats, default=0.5
        A pixel belongs to class k where its probability exceeds ``threshold[k]``;
        values in (0, 1). Sigmoid outputs only: with softmax outputs the masks
        are the argmax and ``threshold`` is ignored (it may be None there).
    min_area : number or sequence of K numbers, default=0
        Per image and class, erase the whole mask if its area, after removing
        small components, is below ``min_area``: a number in (0, 1) is a
        fraction of ``H * W``, a number >= 1 counts pixels, 0 keeps every mask.
    min_component_area : number or sequence of K numbers, default=0
        Erase the connected components (8-connectivity) smaller than this, in
        the units of ``min_area``.
    activation : {"sigmoid", "softmax"}, default="sigmoid"
        ``"sigmoid"`` for binary and multilabel outputs (classes independent);
        ``"softmax"`` for multiclass outputs, where class 0 is the background:
        the area filters apply to classes 1 to K-1 (the entries of class 0 are
        ignored) and erased pixels become background.

    Returns
    -------
    masks : ndarray of bool of shape (n_images, H, W, K)
        With softmax outputs, exactly one class per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.postprocess import postprocess
    >>> proba = np.zeros((1, 6, 6, 1))
    >>> proba[0, :3, :3] = 0.9  # an object of 9 pixels
    >>> proba[0, 5, 5] = 0.6  # a speck of 1 pixel
    >>> int(postprocess(proba).sum()), int(postprocess(proba, min_component_area=2).sum())
    (10, 9)
    >>> int(postprocess(proba, min_area=0.5).sum())  # less than half of the 36 pixels: blanked
    0
    """
    proba = _check_proba(proba)
    threshold, min_area, min_component_area = check_postprocessing(
        proba.shape[-1], threshold=threshold, min_area=min_area,
        min_component_area=min_component_area, activation=activation)
    classes = range(1 if activation == "softmax" else 0, proba.shape[-1])
    masks = _filter(_masks(proba, threshold, activation), min_area, min_component_area,
                    list(classes))
    if activation == "softmax":
        masks[..., 0] = ~masks[..., 1:].any(axis=-1)
    return masks


def _size_groups(proba, y_true):
    """``[(proba, bool truth)]`` per image size: one group for arrays, several for lists."""
    if not isinstance(proba, list):
        proba = _check_proba(proba)
        true = _as_binary_masks(y_true, None, "y_true")
        if true.shape != proba.shape:
            raise ValueError(
                f"y_true must have the shape of proba, {proba.shape}; got {np.shape(y_true)}."
            )
        if proba.shape[0] == 0:
            raise ValueError("tune_postprocessing needs at least one image; proba holds none.")
        return [(proba, true)]
    if not isinstance(y_true, list) or len(y_true) != len(proba):
        raise ValueError("With proba a list of per-image maps, y_true must be a list of as "
                         f"many masks; got {type(y_true).__name__} of length {len(y_true)} "
                         f"for {len(proba)} maps.")
    if not proba:
        raise ValueError("tune_postprocessing needs at least one image; proba holds none.")
    by_shape = {}
    for index, image_proba in enumerate(proba):
        by_shape.setdefault(np.shape(image_proba), []).append(index)
    return [_size_groups(np.stack([proba[i] for i in rows]),
                         np.stack([np.asarray(y_true[i]) for i in rows]))[0]
            for rows in by_shape.values()]


def _candidates(values, default, name, *, threshold):
    """Return the candidate grid of the search as a non-empty 1-D float array."""
    if values is None:
        return np.asarray(default, dtype=np.float64)
    if np.ndim(values) != 1 or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of candidates; got {values!r}.")
    candidates = _as_values(values, name)
    _check_range(candidates, name, threshold=threshold)
    return candidates


def _best(scores, rank, allowance=0.0):
    """Index of the chosen candidate: the lowest ``rank`` among those scoring within
    ``allowance`` of the highest score (within rounding when ``allowance`` is 0).

    ``scores``, ``rank`` and ``allowance`` have the candidates on their first axis
    and the classes on the second (or broadcast); returns one index per class.
    """
    top = scores.max(axis=0)
    tied = scores >= top - np.maximum(allowance, _TIE_TOLERANCE * np.maximum(np.abs(top), 1))
    return np.argmin(np.where(tied, rank, np.inf), axis=0)


def _one_standard_error(pair_dice, best, floor):
    """Per-candidate allowance of the one-standard-error rule.

    ``pair_dice`` is ``(candidates, images, classes)``; ``best`` the index of the
    highest-scoring candidate of each class. A candidate's allowance is the standard
    error of its per-image Dice difference to that best one (paired: the same
    images), so that it counts as tied with the best when its shortfall is within
    that noise. Candidates scoring below ``floor`` (the untuned settings' score of
    each class) get a negative allowance: they are never chosen over the best.
    """
    n_images = pair_dice.shape[1]
    classes = np.arange(pair_dice.shape[2])
    if n_images < 2:
        return np.zeros(pair_dice.shape[::2])
    difference = pair_dice[best, :, classes].T[np.newaxis] - pair_dice  # (C, n, K)
    allowance = difference.std(axis=1, ddof=1) / np.sqrt(n_images)
    below_floor = pair_dice.mean(axis=1) < floor - _TIE_TOLERANCE
    return np.where(below_floor, -np.inf, allowance)


def tune_postprocessing(proba, y_true, *, thresholds=None, min_areas=None, activation="sigmoid",
                        selection="one_se"):
    """Search each class's threshold and ``min_area`` for the Kaggle Dice.

    The Kaggle Dice is the mean Dice over all (image, class) pairs, so each class
    can be tuned on its own: for every class, every pair (threshold, min_area) of
    the grid is scored by the mean Dice of that class over the images. By
    default the *one-standard-error rule* then chooses: the least aggressive
    settings (the smallest ``min_area``, then the threshold nearest 0.5) whose
    score is within one standard error of the best one; ``selection="best"``
    keeps the highest score. It is fast: for each threshold the masks are computed once,
    and every ``min_area`` is then scored at once from the per-image areas (a
    mask smaller than ``min_area`` becomes empty, scoring 1 where the truth is
    empty and 0 elsewhere).

    ``min_component_area`` is not searched (it stays 0): removing components
    changes the masks themselves, which would need the components of every mask
    at every threshold. Tune ``min_area`` first, then try a few component sizes
    with :func:`postprocess` and :func:`~skunetseg.metrics.dice_score`.

    Parameters
    ----------
    proba : array-like of shape (n_images, H, W, K), or list of (H_i, W_i, K) arrays
        Predicted probabilities on held-out images (not the training images).
        A list holds images of different sizes: they are scored together
        (grouped by size), every image counting once.
    y_true : array-like of shape (n_images, H, W, K), or list of (H_i, W_i, K) arrays
        The true masks, one binary channel per class (one-hot with softmax outputs);
        a list when ``proba`` is one.
    thresholds : sequence of float, default=None
        Candidate thresholds, in (0, 1), tried for every class. None: 0.05 to
        0.95 in steps of 0.05 (:data:`DEFAULT_THRESHOLDS`). Sigmoid outputs
        only; must be None with softmax outputs, which take the argmax.
    min_areas : sequence of numbers, default=None
        Candidate ``min_area`` values, in the units of :func:`postprocess`: 0
        (off), a fraction of ``H * W`` in (0, 1) or a pixel count >= 1. None:
        :data:`DEFAULT_MIN_AREAS`, 0 and fractions from 0.0005 to 0.1, so that
        the result still applies when the images are resized. The chosen values
        are returned as given here.
    activation : {"sigmoid", "softmax"}, default="sigmoid"
        As in :func:`postprocess`. With softmax outputs only ``min_area`` is
        searched, for the classes 1 to K-1; class 0 (the background) keeps 0.
    selection : {"one_se", "best"}, default="one_se"
        How the settings are chosen among the scored ones. ``"one_se"``: the
        least aggressive settings whose mean Dice is at most one standard error
        below the best one's, the standard error being that of the per-image
        Dice difference between the two (Breiman et al.'s rule for choosing
        among cross-validated models); never below the untuned score.
        ``"best"``: the highest mean Dice.

    Returns
    -------
    search : PostprocessingSearch
        The chosen ``thresholds`` and ``min_areas`` per class (pass
        ``**search.params`` to :func:`postprocess`), ``score_before`` (threshold
        0.5 or argmax, no filter), ``score_after`` and the per-class scores.

    Notes
    -----
    Ties go to the smaller ``min_area``, then to the threshold closest to 0.5
    (the lower one when two are equally close). With the default grids, which
    hold threshold 0.5 and ``min_area`` 0, ``score_after >= score_before``.

    Why one standard error by default: on mostly-empty data a larger ``min_area``
    wins the held-out score by erasing one or two stray masks, and then erases
    the small true objects of new images. On KolektorSDD (264 held-out images,
    35 with a defect), the highest score came from ``min_area`` 0.25 % of the
    image, 0.003 above 0.05 % with a standard error of 0.004; on the test images
    it found 59 % of the defects against 82 % (docs/mostly-empty.md).

    With softmax outputs the background also changes when a class's pixels are
    erased, which the per-class search does not see; ``score_after`` is
    measured on the final masks and counts it. Should the chosen values score
    below ``score_before`` through the background, every ``min_area`` falls
    back to 0.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.postprocess import tune_postprocessing
    >>> truth = np.zeros((2, 8, 8, 1), dtype=bool)
    >>> truth[0, 2:6, 2:6] = True  # an object on image 0, nothing on image 1
    >>> proba = np.where(truth, 0.4, 0.1)
    >>> proba[1, 0, 0] = 0.45  # a 1-pixel false positive on image 1
    >>> search = tune_postprocessing(proba, truth, selection="best")
    >>> search.thresholds, search.min_areas  # 0.02 * 64 px: erase masks under 2 px
    ((0.35,), (0.02,))
    >>> search.score_before, search.score_after
    (0.5, 1.0)

    Two images are too few to tell those settings from chance: by default the
    search keeps the plain ones.

    >>> search = tune_postprocessing(proba, truth)
    >>> search.thresholds, search.min_areas, search.score_best
    ((0.5,), (0.0,), 1.0)
    """
    _check_activation(activation)
    return _search(_size_groups(proba, y_true), thresholds=thresholds, min_areas=min_areas,
                   activation=activation, selection=selection)


def _search(groups, *, thresholds, min_areas, activation, selection):
    """:func:`tune_postprocessing` on the images grouped by size (:func:`_size_groups`)."""
    n_images = sum(len(group_proba) for group_proba, _ in groups)
    n_classes = groups[0][0].shape[-1]
    if activation == "softmax":
        if thresholds is not None:
            raise ValueError(
                "thresholds must be None with activation='softmax': the masks are the "
                "argmax of the probabilities, which takes no threshold."
            )
        threshold_grid = np.array([np.nan])
    else:
        threshold_grid = _candidates(thresholds, DEFAULT_THRESHOLDS, "thresholds", threshold=True)
    area_grid = _candidates(min_areas, DEFAULT_MIN_AREAS, "min_areas", threshold=False)

    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}; got {selection!r}.")

    # the Dice of every (image, class) pair under every candidate, images of every
    # size one after the other: (thresholds, min_areas, images, classes)
    pair_dice = np.empty((len(threshold_grid), len(area_grid), n_images, n_classes))
    start = 0
    for group_proba, true in groups:
        rows = slice(start, start + len(true))
        start += len(true)
        area_pixels = _pixel_counts(area_grid, true.shape[1] * true.shape[2])  # (M,)
        true_empty = ~true.any(axis=(1, 2))  # (n, K): the Dice of an erased mask
        for t, threshold in enumerate(threshold_grid):
            masks = _masks(group_proba, threshold, activation)
            dice = dice_per_pair(true, masks)  # (n, K) before any area filter
            areas = np.count_nonzero(masks, axis=(1, 2))
            kept = areas >= area_pixels[:, np.newaxis, np.newaxis]  # (M, n, K)
            pair_dice[t, :, rows] = np.where(kept, dice, true_empty)
    pair_dice = pair_dice.reshape(-1, n_images, n_classes)  # candidates first
    scores = pair_dice.mean(axis=1)  # (candidates, classes)

    # rank every (threshold, min_area) candidate for the ties: smaller area, then nearer 0.5
    order = np.lexsort((
        np.nan_to_num(np.repeat(threshold_grid, len(area_grid))),
        np.nan_to_num(np.abs(np.repeat(threshold_grid, len(area_grid)) - 0.5)),
        # areas in pixels at the (first) image size: a fraction and a count compare
        np.tile(_pixel_counts(area_grid, groups[0][1].shape[1] * groups[0][1].shape[2]),
                len(threshold_grid)),
    ))
    rank = np.empty(order.size)
    rank[order] = np.arange(order.size)
    rank = rank[:, np.newaxis]
    best = _best(scores, rank)
    score_best = float(scores[best, np.arange(n_classes)].mean())

    def mean_dice(threshold, min_area):
        return np.concatenate([
            dice_per_pair(true, postprocess(group_proba, threshold=threshold, min_area=min_area,
                                            activation=activation))
            for group_proba, true in groups]).mean(axis=0)

    before = mean_dice(0.5 if activation == "sigmoid" else None, 0)
    if selection == "one_se":
        best = _best(scores, rank, _one_standard_error(pair_dice, best, before))
    best_threshold, best_area = np.divmod(best, len(area_grid))

    chosen_areas = area_grid[best_area]
    if activation == "softmax":
        chosen_areas[0] = 0.0
        chosen_thresholds = None
    else:
        chosen_thresholds = tuple(threshold_grid[best_threshold].tolist())

    after = mean_dice(chosen_thresholds, chosen_areas)
    if activation == "softmax" and after.mean() < before.mean():
        chosen_areas[:] = 0.0
        after = before
    return PostprocessingSearch(
        thresholds=chosen_thresholds,
        min_areas=tuple(chosen_areas.tolist()),
        score_before=float(before.mean()),
        score_after=float(after.mean()),
        class_scores_before=tuple(before.tolist()),
        class_scores_after=tuple(after.tolist()),
        activation=activation,
        score_best=score_best,
    )


def _grid_of(given, applies=True):
    """The search grid of a post-processing parameter for :func:`tune_unset`: the default
    grid when it is None, the value alone when it is one number, the default grid for
    per-class values (which are then kept)."""
    if not applies or given is None or np.ndim(given) > 0:
        return None
    return [float(given)]


def tune_unset(proba, y_true, *, threshold=None, min_area=None, activation="sigmoid"):
    """Tune the ``threshold`` and ``min_area`` an estimator was not given, on held-out maps.

    The one tuning step of the estimators (``UNetSegmenter`` on its held-out
    images, ``FoldEnsemble`` on its out-of-fold maps): :func:`tune_postprocessing`
    with its default one-standard-error selection searches the parameters left
    None and, for one given number, scores that value alone; per-class values
    given are kept as they are. A class that no held-out mask holds keeps its
    untuned values (0.5 and 0, or the given number): on its images the search
    could only learn to erase, which on new images would erase real objects.

    Returns
    -------
    threshold : tuple of float, or None
        Per-class thresholds; None when the threshold was not searched
        (softmax outputs, or per-class values given): keep your own.
    min_area : tuple of float, or None
        Per-class ``min_area``; None when per-class values were given.
    search : PostprocessingSearch
        The search itself (``score_before`` is the untuned held-out Dice).
    """
    _check_activation(activation)
    groups = _size_groups(proba, y_true)  # once: a list of maps is stacked by size here
    search = _search(groups, thresholds=_grid_of(threshold, activation == "sigmoid"),
                     min_areas=_grid_of(min_area), activation=activation, selection="one_se")
    held = np.any([true.any(axis=(0, 1, 2)) for _, true in groups], axis=0)

    def settled(given, tuned, untuned):
        if tuned is None or (given is not None and np.ndim(given) > 0):
            return None
        untuned = untuned if given is None else float(given)
        return tuple(np.where(held, tuned, untuned).tolist())

    return (settled(threshold, search.thresholds, 0.5),
            settled(min_area, search.min_areas, 0.0), search)
