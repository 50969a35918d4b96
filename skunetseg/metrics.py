"""Segmentation metrics with the Kaggle definitions, in NumPy.

Both metrics look at every (image, class) pair on its own, as the Kaggle
segmentation competitions (clouds, steel, salt) scored submissions:

* :func:`dice_score` averages ``2|X∩Y| / (|X| + |Y|)`` over the pairs, counting
  a pair whose truth and prediction are both empty as 1 (and one empty against
  one non-empty as 0);
* :func:`mask_accuracy_score` is the share of pairs in which "the mask is
  non-empty" was predicted correctly.
"""

import numpy as np
from sklearn.metrics import make_scorer

__all__ = ["dice_score", "mask_accuracy_score", "make_dice_scorer", "dice_scorer"]


def _as_binary_masks(y, labels, name):
    """Return ``y`` as boolean masks of shape (n_images, H, W, n_classes)."""
    y = np.asarray(y)
    if y.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (n_images, height, width) or "
            f"(n_images, height, width, n_classes); got shape {y.shape}."
        )
    if labels is not None:
        labels = np.asarray(labels)
        if y.ndim == 4:
            if y.shape[-1] != 1:
                raise ValueError(
                    f"With labels given, {name} must hold label maps of shape "
                    f"(n_images, height, width); got shape {y.shape}."
                )
            y = y[..., 0]
        unknown = np.setdiff1d(np.unique(y), labels)
        if unknown.size:
            raise ValueError(
                f"{name} holds values {unknown[:10].tolist()} that are not in "
                f"labels={labels.tolist()}."
            )
        return y[..., np.newaxis] == labels
    values = np.unique(y)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        raise ValueError(
            f"{name} holds the values {values[:10].tolist()}; without labels the masks "
            "must be binary (0 and one other value per class channel). For label maps "
            "with several classes, pass labels=[...]."
        )
    masks = y != 0
    return masks[..., np.newaxis] if masks.ndim == 3 else masks


def _check_pair(y_true, y_pred, labels):
    true = _as_binary_masks(y_true, labels, "y_true")
    pred = _as_binary_masks(y_pred, labels, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape; got {np.shape(y_true)} "
            f"and {np.shape(y_pred)}."
        )
    return true, pred


def dice_per_pair(true, pred):
    """Dice of each (image, class) pair of boolean masks ``(n, H, W, K)`` → ``(n, K)``."""
    intersection = np.logical_and(true, pred).sum(axis=(1, 2), dtype=np.float64)
    total = true.sum(axis=(1, 2), dtype=np.float64) + pred.sum(axis=(1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, 1.0, 2.0 * intersection / total)


def dice_score(y_true, y_pred, *, labels=None, average=True):
    """Kaggle Dice: the mean Dice coefficient over (image, class) pairs.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_images, H, W) or (n_images, H, W, n_classes)
        Binary masks (any two values, the non-zero one counting as the object),
        one channel per class. With ``labels``, integer label maps instead.
    labels : array-like, default=None
        The labels of a multiclass label map; each label is scored as one class.
    average : bool, default=True
        Return the mean over all pairs; if False, the ``(n_images, n_classes)``
        array of per-pair scores.

    Returns
    -------
    score : float or ndarray of shape (n_images, n_classes)
        Between 0 and 1; a pair with both masks empty scores 1.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.metrics import dice_score
    >>> truth = np.zeros((2, 4, 4), dtype=np.uint8)
    >>> truth[0, :2, :2] = 1
    >>> pred = np.zeros_like(truth)
    >>> pred[0, :2, :] = 1
    >>> float(dice_score(truth, pred))  # (2*4/(4+8) + 1) / 2
    0.8333333333333333
    """
    true, pred = _check_pair(y_true, y_pred, labels)
    scores = dice_per_pair(true, pred)
    return float(scores.mean()) if average else scores


def mask_accuracy_score(y_true, y_pred, *, labels=None):
    """Share of (image, class) pairs where "the mask is non-empty" is predicted right.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_images, H, W) or (n_images, H, W, n_classes)
        As in :func:`dice_score`.
    labels : array-like, default=None
        The labels of a multiclass label map.

    Returns
    -------
    score : float
    """
    true, pred = _check_pair(y_true, y_pred, labels)
    return float((true.any(axis=(1, 2)) == pred.any(axis=(1, 2))).mean())


def make_dice_scorer(*, labels=None):
    """Make a scikit-learn scorer from :func:`dice_score`.

    Parameters
    ----------
    labels : array-like, default=None
        Pass the class labels when the estimator predicts multiclass label maps.

    Returns
    -------
    scorer : callable ``scorer(estimator, X, y)``
        Greater is better, for ``cross_val_score`` and ``GridSearchCV``.
    """
    return make_scorer(dice_score, labels=labels)


#: A ready scorer for binary and multilabel masks: ``scoring=dice_scorer``.
dice_scorer = make_dice_scorer()
