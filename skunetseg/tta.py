"""Test-time augmentation: predict on transformed views and merge them back (NumPy).

A test-time transform has a ``forward`` method, applied to the images before
prediction, and an ``inverse`` method, applied to each view's prediction to bring
it back onto the original pixel grid. Both take and return ``(n, H, W, channels)``
arrays. Two kinds are defined:

* :class:`Dihedral`: the eight symmetries of the square (the group D4), by name:
  ``"identity"``, ``"hflip"``, ``"vflip"``, ``"rot180"`` (both flips),
  ``"rot90"``, ``"rot270"``, ``"transpose"`` and ``"antitranspose"``. Their
  inverses are exact. All but the first four need square images;
* :class:`Shift`: a shift by a few pixels, circular (exactly invertible) or with
  reflected borders.

:func:`predict_with_tta` predicts every view of a chunk of images in one call of
the model and merges the views with :func:`merge_predictions`.
"""

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "D4_NAMES",
    "TTA_PRESETS",
    "MERGE_METHODS",
    "Dihedral",
    "Shift",
    "resolve_tta",
    "merge_predictions",
    "predict_with_tta",
    "evaluate_tta",
]

#: Each D4 element as (flip left-right first?, counter-clockwise quarter turns after).
_D4_ELEMENTS = {
    "identity": (False, 0),
    "hflip": (True, 0),
    "vflip": (True, 2),
    "rot180": (False, 2),
    "rot90": (False, 1),
    "rot270": (False, 3),
    "transpose": (True, 1),
    "antitranspose": (True, 3),
}

#: The names :class:`Dihedral` accepts, in the order of the ``"d4"`` preset.
D4_NAMES = tuple(_D4_ELEMENTS)

#: The preset names :func:`resolve_tta` accepts, with the D4 elements they stand for.
TTA_PRESETS = {
    "flips": ("identity", "hflip", "vflip", "rot180"),
    "d4": D4_NAMES,
}

#: The ways :func:`merge_predictions` can combine the views.
MERGE_METHODS = ("mean", "gmean", "max")

#: Smallest value the geometric mean takes the logarithm of.
_GMEAN_EPSILON = 1e-7

_SHIFT_MODES = ("circular", "reflect")


@dataclass(frozen=True)
class Dihedral:
    """One of the eight symmetries of the square, as a test-time transform.

    Parameters
    ----------
    name : str
        One of :data:`D4_NAMES`: ``"identity"``, ``"hflip"`` (left-right flip),
        ``"vflip"`` (upside-down flip), ``"rot180"`` (both flips), ``"rot90"``
        and ``"rot270"`` (counter-clockwise, as the image is displayed with row 0
        at the top), ``"transpose"`` (swap rows and columns) and
        ``"antitranspose"`` (transpose about the other diagonal).

    Attributes
    ----------
    requires_square : bool
        Whether the transform swaps height and width, so that it can only be used
        on square images (true for rot90, rot270, transpose and antitranspose).

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.tta import Dihedral
    >>> x = np.arange(4).reshape(1, 2, 2, 1)
    >>> Dihedral("transpose").forward(x)[0, :, :, 0]
    array([[0, 2],
           [1, 3]])
    """

    name: str

    def __post_init__(self):
        if not isinstance(self.name, str) or self.name not in _D4_ELEMENTS:
            raise ValueError(f"Dihedral name must be one of {list(D4_NAMES)}; got {self.name!r}.")

    @property
    def requires_square(self):
        return _D4_ELEMENTS[self.name][1] % 2 == 1

    def forward(self, batch):
        """Return the transformed ``(n, H, W, channels)`` batch (a view when possible)."""
        flip, quarter_turns = _D4_ELEMENTS[self.name]
        batch = batch[:, :, ::-1] if flip else batch
        return np.rot90(batch, quarter_turns, axes=(1, 2))

    def inverse(self, batch):
        """Undo :meth:`forward` on a ``(n, H, W, channels)`` batch; exact."""
        flip, quarter_turns = _D4_ELEMENTS[self.name]
        batch = np.rot90(batch, -quarter_turns, axes=(1, 2))
        return batch[:, :, ::-1] if flip else batch


@dataclass(frozen=True)
class Shift:
    """A shift of the image content by whole pixels, as a test-time transform.

    Parameters
    ----------
    dy : int
        Rows to move the content down (negative: up).
    dx : int
        Columns to move the content right (negative: left).
    mode : {"reflect", "circular"}, default="reflect"
        What fills the strips the shift uncovers. ``"circular"`` wraps the content
        around (``np.roll``); the inverse is exact. ``"reflect"`` mirrors the
        content at the border (``np.pad(mode="reflect")``), which looks more like
        a real image; the inverse is exact except in a strip of ``|dy|`` rows and
        one of ``|dx|`` columns on the side opposite the shift, where it mirrors
        the prediction instead.

    Attributes
    ----------
    requires_square : bool
        Always False: shifts work on images of any shape.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.tta import Shift
    >>> Shift(0, 1, mode="circular").forward(np.arange(3).reshape(1, 1, 3, 1))[0, 0, :, 0]
    array([2, 0, 1])
    """

    dy: int
    dx: int
    mode: str = "reflect"

    requires_square = False

    def __post_init__(self):
        for name in ("dy", "dx"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"Shift {name} must be an integer; got {value!r}.")
        if self.mode not in _SHIFT_MODES:
            raise ValueError(f"Shift mode must be one of {list(_SHIFT_MODES)}; got {self.mode!r}.")

    def forward(self, batch):
        """Return the shifted ``(n, H, W, channels)`` batch."""
        return _shift(batch, self.dy, self.dx, self.mode)

    def inverse(self, batch):
        """Shift a ``(n, H, W, channels)`` batch back (see ``mode`` for exactness)."""
        return _shift(batch, -self.dy, -self.dx, self.mode)


def _shift(batch, dy, dx, mode):
    """Move the content of a batch ``dy`` rows down and ``dx`` columns right."""
    if mode == "circular":
        return np.roll(batch, (dy, dx), axis=(1, 2))
    height, width = batch.shape[1:3]
    padding = ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0))
    padded = np.pad(batch, padding, mode="reflect")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, top:top + height, left:left + width]


def _as_transform(item):
    """Return the transform an entry of a ``tta`` list stands for, or None if none."""
    if isinstance(item, (Dihedral, Shift)):
        return item
    if isinstance(item, str) and item in _D4_ELEMENTS:
        return Dihedral(item)
    if isinstance(item, tuple) and len(item) in (3, 4) and item[0] == "shift":
        return Shift(*item[1:])
    return None


def resolve_tta(tta, height, width):
    """Return the list of test-time transforms a ``tta`` parameter stands for.

    Parameters
    ----------
    tta : None, str or list
        The views to predict on:

        - ``None``: the image as it is (``[Dihedral("identity")]``);
        - ``"flips"``: identity, left-right flip, upside-down flip and both flips
          (4 views), for images of any shape;
        - ``"d4"``: the eight symmetries of the square (8 views). They include
          rotations by 90 degrees, so square images are required: for other
          images a ValueError suggests ``"flips"`` rather than silently
          predicting on fewer views;
        - a list (or tuple) whose entries are transform objects
          (:class:`Dihedral`, :class:`Shift`), D4 names such as ``"hflip"``, or
          tuples ``("shift", dy, dx)`` and ``("shift", dy, dx, mode)``. The views
          are used as given: include ``"identity"`` to predict on the image as
          it is, and repeat a transform to weigh it more.
    height, width : int
        The size of the images, to check that every transform applies to them
        (rotations need square images; a shift must be smaller than the image).

    Returns
    -------
    transforms : list of Dihedral or Shift

    Examples
    --------
    >>> from skunetseg.tta import resolve_tta
    >>> resolve_tta(["identity", ("shift", 10, 0)], 64, 96)
    [Dihedral(name='identity'), Shift(dy=10, dx=0, mode='reflect')]
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if tta is None:
        return [Dihedral("identity")]
    if isinstance(tta, str) and tta in TTA_PRESETS:
        transforms = [Dihedral(name) for name in TTA_PRESETS[tta]]
    elif isinstance(tta, (list, tuple)) and len(tta) > 0:
        transforms = [_as_transform(item) for item in tta]
        for item, transform in zip(tta, transforms, strict=True):
            if transform is None:
                raise ValueError(
                    f"The 'tta' parameter holds {item!r}, which is not a transform: use one of "
                    f"{list(D4_NAMES)}, a tuple ('shift', dy, dx[, mode]) or a Dihedral or "
                    "Shift instance."
                )
    else:
        raise ValueError(
            f"The 'tta' parameter must be None, one of {sorted(TTA_PRESETS)} or a non-empty "
            f"list of transforms; got {tta!r}."
        )
    too_far = [transform for transform in transforms if isinstance(transform, Shift)
               and (abs(transform.dy) >= height or abs(transform.dx) >= width)]
    if too_far:
        raise ValueError(
            f"The 'tta' parameter holds {too_far[0]!r}, a shift at least as large as the "
            f"images ({height}x{width}): it would move the whole content out of view. Shift "
            "by fewer pixels than the image's height (dy) and width (dx).")
    if height != width:
        needs_square = [transform for transform in transforms if transform.requires_square]
        if needs_square:
            preset = f"tta={tta!r}" if isinstance(tta, str) else "the 'tta' parameter"
            raise ValueError(
                f"{preset} includes {needs_square}, which need square images; the images "
                f"are {height}x{width}. Use tta='flips' for images that are not square."
            )
    return transforms


def _check_merge(how):
    """Raise a ValueError unless ``how`` names a merge method."""
    if not isinstance(how, str) or how not in MERGE_METHODS:
        raise ValueError(
            f"The 'tta_merge' parameter must be one of {list(MERGE_METHODS)}; got {how!r}."
        )


def merge_predictions(stack, how):
    """Combine the predictions of several views of the same images.

    Parameters
    ----------
    stack : array-like of shape (k, n, H, W, K)
        The ``k`` views' predictions, already brought back onto the original
        pixel grid.
    how : {"mean", "gmean", "max"}
        ``"mean"``: the arithmetic mean (accumulated in float64); ``"gmean"``: the
        geometric mean, with values below 1e-7 raised to 1e-7 before the
        logarithm (so one view predicting 0 pulls the result towards 0 without
        producing -inf); ``"max"``: the largest value.

    Returns
    -------
    merged : ndarray of shape (n, H, W, K), dtype float32

    Examples
    --------
    >>> from skunetseg.tta import merge_predictions
    >>> merge_predictions([[[[[0.25]]]], [[[[1.0]]]]], "gmean").ravel()
    array([0.5], dtype=float32)
    """
    _check_merge(how)
    stack = np.asarray(stack)
    if stack.ndim != 5 or stack.shape[0] == 0:
        raise ValueError(
            "stack must have shape (n_views, n_images, height, width, channels) with at least "
            f"one view; got shape {stack.shape}."
        )
    if how == "mean":
        merged = stack.mean(axis=0, dtype=np.float64)
    elif how == "gmean":
        logs = np.log(np.maximum(stack.astype(np.float64), _GMEAN_EPSILON))
        merged = np.exp(logs.mean(axis=0))
    else:
        merged = stack.max(axis=0)
    return merged.astype(np.float32)


def predict_with_tta(predict_fn, images, transforms, merge="mean", batch_images=None):
    """Predict on several transformed views of each image and merge the predictions.

    The images are taken ``batch_images`` at a time. For each chunk, the ``k``
    views of its ``m`` images are built and concatenated, ``predict_fn`` is called
    once on the ``k * m`` views, and each view's prediction is transformed back
    with the inverse transform before the views are merged.

    Parameters
    ----------
    predict_fn : callable
        Maps float32 images of shape ``(k * m, H, W, C)`` to predictions of shape
        ``(k * m, H, W, K)``; it does its own batching inside a call, if any.
    images : array-like of shape (n, H, W, C)
        The images.
    transforms : None, str or list
        The views, as anything :func:`resolve_tta` accepts (for example
        ``"flips"`` or a list of :class:`Dihedral` and :class:`Shift`).
    merge : {"mean", "gmean", "max"}, default="mean"
        How to combine the views; see :func:`merge_predictions`.
    batch_images : int, default=None
        Images per call of ``predict_fn``, which then sees ``k * batch_images``
        views at most: this bounds the memory that the views and their
        predictions take. ``None`` predicts all the images in one call.

    Returns
    -------
    predictions : ndarray of shape (n, H, W, K), dtype float32

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.tta import predict_with_tta
    >>> images = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    >>> merged = predict_with_tta(lambda x: x ** 2, images, "d4", batch_images=2)
    >>> bool(np.array_equal(merged, images ** 2))
    True
    """
    _check_merge(merge)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (n_images, height, width, channels); got shape {images.shape}."
        )
    n_images, height, width = images.shape[:3]
    if n_images == 0:
        raise ValueError("images holds no images; at least 1 is required.")
    transforms = resolve_tta(transforms, height, width)
    if batch_images is None:
        batch_images = n_images
    elif isinstance(batch_images, bool) or not isinstance(batch_images, numbers.Integral) or (
        batch_images < 1
    ):
        raise ValueError(
            f"batch_images must be None or a positive integer; got {batch_images!r}."
        )

    merged_chunks = []
    for start in range(0, n_images, batch_images):
        chunk = images[start:start + batch_images]
        views = np.concatenate([transform.forward(chunk) for transform in transforms])
        predictions = np.asarray(predict_fn(views), dtype=np.float32)
        if predictions.ndim != 4 or predictions.shape[:3] != views.shape[:3]:
            raise ValueError(
                f"predict_fn must return an array of shape ({len(views)}, {height}, {width}, "
                f"n_outputs) for {len(views)} views; got shape {predictions.shape}."
            )
        per_view = np.split(predictions, len(transforms))
        stack = np.stack(
            [transform.inverse(view) for transform, view in zip(transforms, per_view, strict=True)]
        )
        merged_chunks.append(merge_predictions(stack, merge))
    return np.concatenate(merged_chunks)


def evaluate_tta(estimator, X, y, settings=(None, "flips", "d4"), merge=None):
    """Score one fitted estimator under several TTA settings, without refitting.

    TTA only changes prediction, so a single trained model can be compared with
    and without it. Each setting is scored on a shallow copy of ``estimator``
    (sharing its trained network) whose ``tta`` parameter is set to it; the
    estimator itself is left unchanged.

    Parameters
    ----------
    estimator : fitted estimator with ``tta`` and ``tta_merge`` parameters
        For example a fitted :class:`~skunetseg.UNetSegmenter`.
    X, y : array-like
        Images and masks to score on.
    settings : sequence, default=(None, "flips", "d4")
        The ``tta`` values to compare.
    merge : str, default=None
        The ``tta_merge`` to use; None keeps the estimator's.

    Returns
    -------
    results : list of dict
        One ``{"tta": setting, "score": float, "seconds": float}`` per setting, in
        order; ``seconds`` is the wall time of the scoring call.
    """
    import copy
    import time

    results = []
    for setting in settings:
        candidate = copy.copy(estimator)
        candidate.set_params(tta=setting, **({} if merge is None else {"tta_merge": merge}))
        start = time.perf_counter()
        score = candidate.score(X, y)
        results.append({"tta": setting, "score": float(score),
                        "seconds": time.perf_counter() - start})
    return results
