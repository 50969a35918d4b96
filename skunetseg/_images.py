"""Checking, scaling, resizing and padding stacks of images; image sources for the estimators."""

import copy
import os

import cv2
import numpy as np

from ._checks import check_array_like, check_height_width, is_array_like
from .io import (
    _describe,
    _resize,
    check_image_files,
    header_size,
    is_path_sequence,
    read_image,
    read_images,
)

#: Every segmentation-models encoder downsamples five times.
SIZE_MULTIPLE = 32


def check_images(X, *, name="X", n_channels=None):
    """Validate an image stack and return it as float32 ``(n, H, W, C)``.

    Parameters
    ----------
    X : array-like of shape (n, H, W) or (n, H, W, C)
        Images of any real numeric dtype. ``uint8`` and ``uint16`` images are
        scaled to [0, 1] by the largest value of their dtype; other dtypes are
        kept as they are.
    name : str, default="X"
        The argument's name, used in error messages.
    n_channels : int, default=None
        The channel count the images must have (the one seen in ``fit``).

    Returns
    -------
    images : ndarray of shape (n, H, W, C), dtype float32
    """
    check_array_like(X, name=name, what="an array of images of shape (n_images, height, "
                     "width) or (n_images, height, width, channels)")
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise TypeError(
            f"{name} must have a real numeric dtype (uint8, uint16, float32, ...); "
            f"got dtype {X.dtype}."
        )
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    if X.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (n_images, height, width) or "
            f"(n_images, height, width, channels); got an array with {X.ndim} "
            f"dimension(s), shape {X.shape}."
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {X.shape}); at least 1 is required.")
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"{name} has images of size {X.shape[1]}x{X.shape[2]}.")
    if X.ndim == 3:
        X = X[..., np.newaxis]
    if n_channels is not None and X.shape[-1] != n_channels:
        raise ValueError(
            f"{name} has {X.shape[-1]} channel(s) but the model was fitted on images "
            f"with {n_channels} channel(s)."
        )
    if X.dtype in (np.uint8, np.uint16):
        return X.astype(np.float32) / np.float32(np.iinfo(X.dtype).max)
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity; images must be finite.")
    return X


def value_range(images, dtype):
    """The (min, max) pixel values of images stored as ``dtype``: the dtype's range for
    ``uint8``/``uint16`` (cheap; they are scaled by it), else the values' own range."""
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.uint16):
        return 0.0, float(np.iinfo(dtype).max)
    if dtype.kind == "b":
        return 0.0, 1.0
    return float(np.min(images)), float(np.max(images))
def check_input_size(size):
    """The ``input_size`` parameter as a tuple (height, width) of ints, or None."""
    return check_height_width(size, name="The 'input_size' parameter", allow_none=True)


def pad_to_multiple(images, multiple=SIZE_MULTIPLE, mode="reflect"):
    """Pad the height and width of ``(n, H, W, C)`` images up to a multiple.

    The padding goes at the bottom and right so that cropping back is a slice.
    Returns the padded array (the input itself when no padding is needed).
    """
    height, width = images.shape[1:3]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)



# --------------------------------------------------------------- image sources
# The estimators read their images through a source: ``len(source)`` images,
# ``source.take(indices)`` gives them as network-ready float32 ``(m, h, w, C)``
# (scaled like check_images, resized to ``size`` when given). ArrayImages holds
# them in memory; PathImages reads the files of the selected rows on each call.


def is_paths(X):
    """Whether ``X`` names files: one path (rejected later by check_paths) or a sequence."""
    return isinstance(X, (str, bytes, os.PathLike)) or is_path_sequence(X)


def reject_single_path(value, *, name="X", kind="image"):
    """Raise a TypeError when ``value`` is one path rather than a sequence of them."""
    if isinstance(value, (str, bytes, os.PathLike)):
        path = os.fsdecode(value)
        raise TypeError(
            f"{name} must be an array of {kind}s or a list of {kind} file paths; got the single "
            f"path {path!r}. Pass [{path!r}] for one file, or the lists that "
            "skunetseg.io.load_image_folder makes of a folder."
        )


def resize_images(images, size, *, kind="image", interpolation=None):
    """Resize each of the ``(n, H, W, C)`` images to ``size = (height, width)``.

    Images are resized like :func:`skunetseg.io.read_images` does (area when
    shrinking, bilinear otherwise, unless ``interpolation`` is given), masks by
    nearest neighbour. Returns ``images`` itself when ``size`` is None or their size.
    """
    if size is None or tuple(images.shape[1:3]) == tuple(size):
        return images
    resized = np.empty((len(images), *size, images.shape[-1]), dtype=images.dtype)
    for index, image in enumerate(images):
        resized[index] = _resize(image, tuple(size), kind, interpolation).reshape(
            resized.shape[1:])  # cv2 drops a single channel axis
    return resized


def restore_sizes(proba, sizes):
    """Bilinearly resize each of the ``(m, h, w, K)`` maps back to its image's size.

    Returns one ``(m, H, W, K)`` array when all ``sizes`` agree, else a list of
    ``(H_i, W_i, K)`` arrays.
    """
    if len(set(sizes)) == 1:
        return resize_images(proba, sizes[0], interpolation=cv2.INTER_LINEAR)
    return [resize_images(p[np.newaxis], size, interpolation=cv2.INTER_LINEAR)[0]
            for p, size in zip(proba, sizes, strict=True)]


def load_labels(y, *, name="y", size=None, binarize=False):
    """Masks given as files read into one label array (resized by nearest neighbour to
    ``size``); masks given as an array returned as they are. With ``binarize``, each
    mask is binarised (:func:`skunetseg.io.binarize_mask`) to 0/255 ``uint8``."""
    from .io import binarize_mask

    reject_single_path(y, name=name, kind="mask")
    if is_paths(y):
        return read_images(y, name=name, kind="mask", size=size, binarize=binarize)
    if binarize:
        return binarize_mask(y, name=name)
    return y


def mask_row_names(y):
    """The file names of masks given as files (to name them in errors), else None."""
    if is_paths(y) and not isinstance(y, (str, bytes, os.PathLike)):
        return [os.fspath(path) for path in y]
    return None


class ArrayImages:
    """Validated in-memory images ``(n, H, W, C)`` float32, taken at ``size`` when given."""

    def __init__(self, images, size=None, dtype=None, value_range=None):
        self.images = images
        self.size = None if size is None else tuple(size)
        # what the images were given as, before check_images scaled them
        self.dtype = np.dtype(images.dtype if dtype is None else dtype).name
        self.value_range = value_range

    def __len__(self):
        return len(self.images)

    @property
    def n_channels(self):
        return self.images.shape[-1]

    @property
    def own_size(self):
        """The (height, width) every image has as given."""
        return tuple(self.images.shape[1:3])

    @property
    def image_size(self):
        """The (height, width) of the images ``take`` gives."""
        return self.size or self.own_size

    def read(self, indices):
        """``(images at image_size, the images' own sizes)`` of the rows ``indices``."""
        images = self.images[indices]
        return resize_images(images, self.size), [self.own_size] * len(images)

    def take(self, indices):
        return self.read(indices)[0]

    def subset(self, indices):
        return ArrayImages(self.images[indices], self.size, self.dtype, self.value_range)

    def resized(self):
        """The same images resized to ``size`` once, in memory."""
        return ArrayImages(resize_images(self.images, self.size), None, self.dtype,
                           self.value_range)


class DecodedImages:
    """Image files decoded once, as :func:`skunetseg.io.read_image` gives them.

    What a meta-estimator hands down to each of its models in place of the files
    of one chunk (see :class:`skunetseg._base.SharedChunk`), so that the chunk is
    decoded once, not once per model. The models read it as they read the files
    (:class:`PathImages`): each image at its own size and dtype, resized and
    scaled by each model as it would the file.
    """

    def __init__(self, paths, images):
        self.paths = list(paths)
        self.images = list(images)

    @classmethod
    def read(cls, paths, *, name="X"):
        """Decode the files ``paths``, checked as :class:`PathImages` checks them."""
        paths = check_image_files(paths, name=name)
        return cls(paths, [read_image(path) for path in paths])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, rows):
        """The rows ``rows`` (a slice or indices), still decoded."""
        if isinstance(rows, slice):
            return DecodedImages(self.paths[rows], self.images[rows])
        rows = np.asarray(rows).tolist()
        return DecodedImages([self.paths[row] for row in rows],
                             [self.images[row] for row in rows])


class PathImages:
    """Image files read on demand, scaled like :func:`check_images` and resized to ``size``.

    The first file is read once to learn the channels, dtype and (without
    ``size``) the size that every other file must share; a file that differs is
    reported with both names when its batch is read. Given ``decoded`` (a
    :class:`DecodedImages` of ``paths``), the images are taken from it instead
    of the files.
    """

    def __init__(self, paths, *, name="X", size=None, n_channels=None, decoded=None):
        # every file is checked to exist and to start like an image file now, before
        # any network is built: a bad file is not found in the middle of training
        self.decoded = None if decoded is None else list(decoded.images)
        self.paths = (check_image_files(paths, name=name) if decoded is None
                      else list(decoded.paths))
        self.name = name
        self.size = None if size is None else tuple(size)
        first = read_image(self.paths[0]) if decoded is None else self.decoded[0]
        self.reference = (self.paths[0], first.shape, first.dtype)
        if self.size is None:
            self._check_sizes()
        # the dtype's range for 8/16-bit files, else (float TIFFs) the first file's
        self.dtype = first.dtype.name
        self.value_range = value_range(first, first.dtype)
        if n_channels is not None and self.n_channels != n_channels:
            raise ValueError(
                f"{name} has {self.n_channels} channel(s) (file {str(self.paths[0])!r}) but the "
                f"model was fitted on images with {n_channels} channel(s)."
            )

    def __len__(self):
        return len(self.paths)

    @property
    def n_channels(self):
        shape = self.reference[1]
        return 1 if len(shape) == 2 else shape[2]

    @property
    def own_size(self):
        """The (height, width) every file must have, or None when they are resized."""
        return tuple(self.reference[1][:2]) if self.size is None else None

    @property
    def image_size(self):
        return self.size or self.own_size

    def _check_sizes(self):
        """Without ``size``, every file must have the first one's size: read from the
        headers (PNG, JPEG, BMP; other files are decoded), before any network is built."""
        expected = self.reference[1][:2]
        for path in self.paths[1:]:
            size = header_size(path)
            if size is None:
                size = read_image(path).shape[:2]
            if tuple(size) != tuple(expected):
                self._check_like_first(path, np.empty((*size, *self.reference[1][2:]),
                                                      self.reference[2]))

    def _check_like_first(self, path, image):
        first_path, shape, dtype = self.reference
        if image.ndim != len(shape) or image.shape[2:] != shape[2:]:
            problem = ("differ in channel count (gray and colour images mixed?); convert the "
                       "data set to one colour mode first")
        elif image.dtype != dtype:
            problem = ("differ in dtype; 8- and 16-bit images are scaled differently, convert "
                       "the data set to one dtype first")
        elif self.size is None and image.shape[:2] != shape[:2]:
            problem = "differ in size; pass input_size=(height, width) to resize them"
        else:
            return
        first = np.empty(shape, dtype)
        raise ValueError(f"{self.name}: the files {str(first_path)!r} ({_describe(first)}) and "
                         f"{str(path)!r} ({_describe(image)}) {problem}.")

    def read(self, indices):
        """``(images at image_size, the images' own sizes)`` of the rows ``indices``."""
        rows = range(len(self.paths))[indices] if isinstance(indices, slice) else indices
        images, sizes = [], []
        for row in rows:
            path = self.paths[row]
            image = read_image(path) if self.decoded is None else self.decoded[row]
            self._check_like_first(path, image)
            sizes.append(tuple(image.shape[:2]))
            images.append(resize_images(check_images(image[np.newaxis], name=self.name),
                                        self.size))
        return np.concatenate(images), sizes

    def take(self, indices):
        return self.read(indices)[0]

    def subset(self, indices):
        part = copy.copy(self)
        part.paths = [self.paths[index] for index in indices]
        if self.decoded is not None:
            part.decoded = [self.decoded[index] for index in indices]
        return part


def image_source(X, *, name="X", size=None, n_channels=None):
    """``X`` (an image array, a sequence of image files or :class:`DecodedImages`) as an
    image source."""
    if isinstance(X, DecodedImages):
        return PathImages(X.paths, name=name, size=size, n_channels=n_channels, decoded=X)
    reject_single_path(X, name=name)
    if is_paths(X):
        return PathImages(X, name=name, size=size, n_channels=n_channels)
    if is_array_like(X):
        X = np.asarray(X)
    images = check_images(X, name=name, n_channels=n_channels)
    return ArrayImages(images, size, X.dtype, value_range(images, X.dtype))
