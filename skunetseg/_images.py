"""Checking, scaling and padding stacks of images (NumPy only)."""

import numpy as np

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
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__") and not hasattr(X, "__array__"):
        raise TypeError(
            f"{name} must be an array of images of shape (n_images, height, width) or "
            f"(n_images, height, width, channels); got {type(X).__name__}."
        )
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

