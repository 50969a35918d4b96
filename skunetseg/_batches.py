"""Training and validation batches for Keras, prepared on worker threads.

:class:`AugmentedBatches` is the training input of ``UNetSegmenter.fit`` when
``augment`` is set or the images are files, and its validation input for files.
It reads the images of each batch from an image source (:mod:`skunetseg._images`:
rows of an in-memory array, or image files read per batch), so a data set of files
is never loaded whole. cv2 releases the GIL, so threads read and augment the next
batches while TensorFlow trains on the current one. Each batch's random draws come
from ``(seed, epoch, batch index)``: the result does not depend on which worker
thread prepared it or when, so a fit with an integer ``random_state`` is reproducible.
"""

import math
import os

import numpy as np

from ._backend import keras
from ._images import ArrayImages, pad_to_multiple
from ._targets import balances, empty_images


class AugmentedBatches(keras.utils.PyDataset):
    """Batches of (augmented) network-ready images and masks, shuffled each epoch.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, C), float32, or image source
        Validated, unpadded training images, or a source whose ``take(indices)``
        returns them (:class:`~skunetseg._images.PathImages` reads files).
    targets : ndarray of shape (n, H, W, K), float32
        Their encoded masks.
    augmenter : skunetseg.augment.Augmenter or None
        Draws and applies the random transforms; None leaves the images as read.
    batch_size : int
    prepare_images : callable
        Turns augmented images into network input (channel repeat, padding).
    mask_fill : ndarray of shape (K,)
        Mask value for pixels that a transform brings in from outside the image.
    seed : int or None
        None draws a fresh seed.
    shuffle : bool, default=True
        Draw a new order of the images each epoch; False keeps their order (validation).
    workers : int, default=None
        Worker threads; None means ``min(4, os.cpu_count())``.
    max_empty_share : float or None, default=None
        Object-balanced epochs: when the images whose masks are empty (every
        pixel ``mask_fill``) are more than this share of all images, each epoch
        keeps its length (``n`` images) but is drawn so that the empty images
        make up this share of it: a fresh draw of distinct empty images, and
        the images that hold an object for the rest, each of them as often as
        the others (give or take one). None, or a share that the empty images
        do not exceed, takes every image once every epoch.
    """

    def __init__(self, images, targets, *, augmenter, batch_size, prepare_images, mask_fill,
                 seed, shuffle=True, workers=None, max_empty_share=None):
        workers = workers or min(4, os.cpu_count() or 1)
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.images = images
        self.source = ArrayImages(images) if isinstance(images, np.ndarray) else images
        self.targets = targets
        self.augmenter = augmenter
        self.batch_size = batch_size
        self.prepare_images = prepare_images
        self.mask_fill = mask_fill
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self.shuffle = shuffle
        self.epoch = 0
        self.empty_rows, self.object_rows, self.n_empty = _epoch_draw(
            targets, mask_fill, max_empty_share if shuffle else None)
        self.order = self._permutation()

    def _permutation(self):
        if not self.shuffle:
            return np.arange(len(self.source))
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.empty_rows is None:
            return rng.permutation(len(self.source))
        empty = rng.choice(self.empty_rows, self.n_empty, replace=False)
        n_objects = len(self.source) - self.n_empty
        rounds = math.ceil(n_objects / len(self.object_rows))
        objects = np.concatenate([rng.permutation(self.object_rows)
                                  for _ in range(rounds)])[:n_objects]
        return rng.permutation(np.concatenate([objects, empty]))

    def __len__(self):
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        images, masks = self.source.take(rows), self.targets[rows]
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            images, masks = self.augmenter.augment_batch(images, masks, rng,
                                                         mask_fill=self.mask_fill)
        return self.prepare_images(images), pad_to_multiple(masks)

    def on_epoch_end(self):
        # Keras stops the worker threads before calling this
        self.epoch += 1
        self.order = self._permutation()


def _epoch_draw(targets, mask_fill, max_empty_share):
    """``(empty rows, object rows, empty images per epoch)``, or Nones for plain epochs.

    A balanced epoch keeps the data's length ``n``: it draws ``n_empty``
    distinct empty images, ``max_empty_share`` of ``n`` (at least one), and
    fills the rest with the object images, in rounds (see :func:`balances`).
    """
    if max_empty_share is None:
        return None, None, None
    empty = empty_images(targets, mask_fill)
    if not balances(empty, max_empty_share):
        return None, None, None
    n_empty = max(1, math.floor(len(empty) * max_empty_share))
    return np.flatnonzero(empty), np.flatnonzero(~empty), n_empty
