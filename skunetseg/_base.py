"""What every skunetseg segmentation estimator shares: predict and score from probabilities."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._images import load_labels
from ._targets import decode_masks, encode_targets
from .metrics import dice_per_pair

__all__ = ["SegmenterMixin"]


class SegmenterMixin:
    """``predict`` and ``score`` for an estimator that predicts probability maps.

    The estimator provides ``predict_proba(X)`` -> ``(n, H, W, K)``, a fitted
    ``_encoding`` (:class:`skunetseg._targets.TargetEncoding`) and
    ``_binary_masks(proba)``, its post-processing of the probabilities into bool
    ``(n, H, W, K)`` masks.
    """

    def _decode(self, proba):
        """Post-processed masks in the format of the fitted ``y``."""
        return decode_masks(self._binary_masks(proba), self._encoding)

    def predict(self, X):
        """Predicted masks, post-processed, in the format of the ``y`` given to ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)

        Returns
        -------
        masks : ndarray
            Binary masks with the two values of ``classes_``, multiclass label
            maps, or multilabel 0/1 masks, shaped like the fitted ``y``.
        """
        return self._decode(self.predict_proba(X))

    def score(self, X, y):
        """Mean Kaggle Dice of the post-processed predictions of ``X`` against ``y``.

        Every (image, class) pair counts once, a pair with both masks empty as 1.
        Binary targets score the positive class; multiclass label maps score
        every label, background included.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C)
        y : array-like, masks in the format given to ``fit``

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        labels = load_labels(y, name="y", binarize=getattr(self, "binarize_masks", False))
        truth = encode_targets(labels, self._encoding, name="y") > 0.5
        proba = self.predict_proba(X)
        if truth.shape[:3] != proba.shape[:3]:
            raise ValueError(f"y must hold one mask per image of X, of the images' size; "
                             f"got {truth.shape[:3]} for images {proba.shape[:3]}.")
        return float(np.mean(dice_per_pair(truth, self._binary_masks(proba))))
