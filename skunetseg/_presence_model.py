"""The Keras side of PresenceClassifier that :mod:`skunetseg._model` does not hold.

The network itself is built by :func:`skunetseg._model.build_classifier` and
trained by :func:`skunetseg._model.train`; this module adds the augmented
training input for image-level labels.
"""

import numpy as np

from ._batches import AugmentedBatches


class PresenceBatches(AugmentedBatches):
    """Shuffled batches of augmented images with their image-level labels ``(n, K)``.

    Each label travels through :class:`~skunetseg._batches.AugmentedBatches` as
    a constant mask channel, so that batches, order and transforms are exactly
    those the segmenter's training input would draw, and is read back as the
    channel's maximum: no transform (flip, rotation, crop, shift-scale-rotate
    with a zero border) can erase a constant channel, so the labels are kept.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, C), float32
    labels : ndarray of shape (n, K)
        0/1 labels.
    **kwargs
        ``augmenter``, ``batch_size``, ``prepare_images``, ``seed`` and
        ``workers`` of :class:`~skunetseg._batches.AugmentedBatches`.
    """

    def __init__(self, images, labels, **kwargs):
        labels = np.asarray(labels, dtype=np.float32)
        masks = np.broadcast_to(labels[:, np.newaxis, np.newaxis, :],
                                images.shape[:3] + labels.shape[1:])
        super().__init__(images, masks, mask_fill=np.zeros(labels.shape[1], np.float32),
                         **kwargs)

    def __getitem__(self, index):
        images, masks = super().__getitem__(index)
        return images, masks.max(axis=(1, 2))
