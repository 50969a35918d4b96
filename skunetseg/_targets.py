"""Segmentation targets: recognising their type, one-hot encoding, decoding.

Three kinds of target are understood, and ``predict`` returns the kind it was
fitted on:

``"binary"``
    ``(n, H, W)`` or ``(n, H, W, 1)`` masks with at most two values (bool,
    {0, 1}, {0, 255}, ...). The model has one sigmoid output for the larger value.
``"multilabel"``
    ``(n, H, W, K)`` masks of 0/1 with K > 1; classes may overlap. K sigmoid outputs.
``"multiclass"``
    ``(n, H, W)`` (or ``(n, H, W, 1)``) integer label maps with more than two
    labels. One softmax output per label.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from ._checks import check_array_like

#: A multiclass target with more labels than this gets a warning (gray levels read as labels?).
MAX_CLASSES = 32

_BINARIZE_ADVICE = ("Pass binarize_masks=True to the estimator (or binarize=True to "
                    "skunetseg.io.read_mask / read_images) to binarise them: a pixel is "
                    "foreground when its value is above half of the dtype's maximum (uint8 > "
                    "127, uint16 > 32767). Or save the masks losslessly (PNG) with label values "
                    "only.")


@dataclass(frozen=True)
class TargetEncoding:
    """How a fitted segmenter maps its masks to probability channels and back.

    The ``encoding_`` attribute of every fitted skunetseg segmenter, and part
    of the contract a wrapped segmenter meets (see the user guide's page "How
    to wrap your own segmenter"). Build one from training masks with
    :meth:`from_targets`.

    Attributes
    ----------
    target_type : {"binary", "multilabel", "multiclass"}
        How the masks were read (see :mod:`skunetseg._targets`).
    classes : ndarray
        The labels (binary, multiclass) or channel indices (multilabel).
    channel_axis : bool
        Whether the fitted masks had a trailing channel axis.
    """

    target_type: str
    classes: np.ndarray
    channel_axis: bool  # whether the fitted targets had a trailing channel axis

    @classmethod
    def from_targets(cls, y, name="y"):
        """The encoding of the masks ``y`` (an array, as given to ``fit``)."""
        return fit_target_encoding(y, name=name)

    def encode(self, y, name="y"):
        """Masks ``y`` like the fitted ones as float32 ``(n, H, W, n_outputs)`` 0/1 channels.

        Parameters
        ----------
        y : array-like of shape (n, H, W) or (n, H, W, C)
        name : str, default="y"
            The argument's name, used in error messages.

        Returns
        -------
        targets : ndarray of shape (n, H, W, n_outputs), float32
        """
        return encode_targets(y, self, name=name)

    def decode(self, masks):
        """Bool channel masks (as :meth:`PostProcessing.apply` gives) as masks like ``y``.

        Parameters
        ----------
        masks : ndarray of shape (n, H, W, n_outputs), bool, or list of (H_i, W_i, n_outputs)
            A list (images of different sizes) gives a list, one mask per image.

        Returns
        -------
        masks : ndarray or list of ndarray
            Binary masks with the values of ``classes``, multiclass label maps or
            multilabel 0/1 masks, shaped like the fitted ``y``.
        """
        if isinstance(masks, list):
            return [decode_masks(mask[np.newaxis], self)[0] for mask in masks]
        return decode_masks(masks, self)

    @property
    def n_outputs(self):
        """Number of network output channels."""
        return 1 if self.target_type == "binary" else len(self.classes)

    @property
    def background(self):
        """Encoded value of a pixel that belongs to no object (the first label for softmax)."""
        if self.target_type == "multiclass":
            return np.eye(self.n_outputs, dtype=np.float32)[0]
        return np.zeros(self.n_outputs, dtype=np.float32)

    @property
    def activation(self):
        """The output activation the network needs."""
        return "softmax" if self.target_type == "multiclass" else "sigmoid"


def _as_label_array(y, name):
    check_array_like(y, name=name, what="an array of masks")
    y = np.asarray(y)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise TypeError(
            f"{name} must hold integer or boolean labels; got dtype {y.dtype}."
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or infinity; masks must hold class labels.")
        if not np.array_equal(y, np.round(y)):
            raise ValueError(
                f"{name} holds non-integer values; masks must hold class labels "
                "(bool, 0/1, 0/255 or integer label maps). Soft or anti-aliased masks: "
                + _BINARIZE_ADVICE
            )
    if y.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (n_images, height, width) or "
            f"(n_images, height, width, n_classes); got shape {y.shape}."
        )
    return y


def _check_label_like(y, values, counts, name, row_names):
    """Raise when ``y``'s values look like the gray levels of an image, not labels.

    The signature of a black-and-white mask saved as JPEG (compression noise)
    or drawn anti-aliased (gray edges): pixels cluster near two far-apart
    levels (the most frequent value of the lower and of the upper half of the
    values), with other values close to those levels. Either the two levels
    hold 80 % of the pixels, or the two clusters (values within an eighth of
    the levels' distance) hold 95 %: JPEG ringing around thin objects (cracks,
    vessels, membranes) spreads the pixels over many values near 0 and 255, so
    that the two most frequent values may hold as little as 60 %. Label maps
    (small consecutive labels, or a few distinct values) never match: their
    labels are either close together or far from each other.
    """
    middle = (float(values.min()) + float(values.max())) / 2
    lower, upper = values <= middle, values > middle
    if not upper.any():
        return
    low = values[lower][np.argmax(counts[lower])]
    high = values[upper][np.argmax(counts[upper])]
    low, high = float(low), float(high)
    share = (counts[values == low].sum() + counts[values == high].sum()) / counts.sum()
    floats = values.astype(np.float64)  # no unsigned wrap-around
    others = np.setdiff1d(floats, (low, high))
    near = (high - low) / 8
    in_clusters = (np.abs(floats - low) <= near) | (np.abs(floats - high) <= near)
    clustered = counts[in_clusters].sum() / counts.sum()
    close = others[(np.abs(others - low) <= near) | (np.abs(others - high) <= near)]
    if high - low < 32 or close.size == 0 or (share < 0.8 and clustered < 0.95):
        return
    flat = y.reshape(len(y), -1)
    rows = np.flatnonzero(~np.isin(flat, (low, high)).all(axis=1))
    if row_names is not None:
        from .io import _listing

        files = _listing([row_names[r] for r in rows])
        where = f"in {len(rows)} of the {len(y)} mask files: {files}"
    else:
        shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
        where = f"in {len(rows)} of the {len(y)} masks (rows {shown})"
    raise ValueError(
        f"{name} looks like gray-level images rather than label maps: {len(values)} distinct "
        f"values, {clustered:.1%} of the pixels near {low:g} or {high:g} ({share:.1%} "
        f"exactly), with {len(others)} other values, some close to them "
        f"({close[:8].tolist()}), {where}. "
        "That is what masks saved as JPEG (compression noise) or drawn anti-aliased (gray "
        f"edges) look like; they would train as a {len(values)}-class problem. "
        + _BINARIZE_ADVICE
    )


def fit_target_encoding(y, name="y", row_names=None):
    """Recognise the type of ``y`` and return its :class:`TargetEncoding`.

    ``row_names`` (the mask files, when ``y`` was read from files) name the
    offending masks in errors.
    """
    y = _as_label_array(y, name)
    classes, counts = np.unique(y, return_counts=True)
    if y.ndim == 4 and y.shape[-1] > 1:
        if not np.isin(classes, (0, 1)).all():
            raise ValueError(
                f"{name} of shape {y.shape} is read as multilabel masks (one channel per "
                f"class), which must hold only 0 and 1; found values {classes[:10].tolist()}."
            )
        return TargetEncoding("multilabel", np.arange(y.shape[-1]), True)
    channel_axis = y.ndim == 4
    if len(classes) > 2:
        _check_label_like(y, classes, counts, name, row_names)
        if len(classes) > MAX_CLASSES:
            warnings.warn(
                f"{name} holds {len(classes)} distinct labels and is read as a "
                f"{len(classes)}-class multiclass target (one softmax output per label). If "
                "these values are gray levels rather than class labels, " + _BINARIZE_ADVICE,
                UserWarning, stacklevel=3,
            )
        return TargetEncoding("multiclass", classes, channel_axis)
    if len(classes) == 1:  # every mask empty (or full): assume the usual 0/1 labels
        value = classes[0]
        if y.dtype == bool:
            classes = np.array([False, True])
        else:
            classes = np.array([0, value if value != 0 else 1], dtype=y.dtype)
    return TargetEncoding("binary", classes, channel_axis)


def encode_targets(y, encoding, name="y"):
    """One-hot encode ``y`` as float32 ``(n, H, W, n_outputs)`` for the network."""
    y = _as_label_array(y, name)
    unknown = np.setdiff1d(np.unique(y), encoding.classes)
    if encoding.target_type == "multilabel":
        if y.ndim != 4 or y.shape[-1] != len(encoding.classes):
            raise ValueError(
                f"{name} must have shape (n_images, height, width, {len(encoding.classes)}) "
                f"like the multilabel masks seen in fit; got shape {y.shape}."
            )
        unknown = np.setdiff1d(np.unique(y), (0, 1))
    elif y.ndim == 4 and y.shape[-1] != 1:
        raise ValueError(
            f"{name} must have shape (n_images, height, width) or "
            f"(n_images, height, width, 1) like the masks seen in fit; got shape {y.shape}."
        )
    if unknown.size:
        advice = (" Masks saved as JPEG or drawn anti-aliased hold such gray levels: "
                  + _BINARIZE_ADVICE) if encoding.target_type == "binary" else ""
        raise ValueError(
            f"{name} holds values {unknown[:10].tolist()} that are not among the classes "
            f"{encoding.classes.tolist()}.{advice}"
        )
    if encoding.target_type == "multilabel":
        return y.astype(np.float32)
    labels = y[..., 0] if y.ndim == 4 else y
    if encoding.target_type == "binary":
        return (labels == encoding.classes[1]).astype(np.float32)[..., np.newaxis]
    index = np.searchsorted(encoding.classes, labels)
    return np.eye(len(encoding.classes), dtype=np.float32)[index]


def decode_masks(masks, encoding):
    """Turn bool ``(n, H, W, K)`` masks of the predicted classes into masks like the fitted ``y``.

    ``masks`` come from :func:`skunetseg.postprocess.postprocess`: one channel per
    network output, one-hot for multiclass targets.
    """
    if encoding.target_type == "multilabel":
        return masks.astype(np.uint8)
    if encoding.target_type == "binary":
        labels = np.where(masks[..., 0], encoding.classes[1], encoding.classes[0])
    else:
        labels = encoding.classes[np.argmax(masks, axis=-1)]
    labels = labels.astype(encoding.classes.dtype, copy=False)
    return labels[..., np.newaxis] if encoding.channel_axis else labels


def empty_images(targets, mask_fill):
    """Which rows of ``targets`` ``(n, H, W, K)`` hold only ``mask_fill`` pixels (bool)."""
    fill = np.asarray(mask_fill, dtype=targets.dtype)
    return np.array([bool((row == fill).all()) for row in targets], dtype=bool)


def balances(empty, max_empty_share):
    """Whether epochs are object-balanced for images whose emptiness is ``empty`` (bool):
    the empty images are more than ``max_empty_share`` of all, and some hold an object."""
    return max_empty_share is not None and empty.mean() > max_empty_share and not empty.all()
