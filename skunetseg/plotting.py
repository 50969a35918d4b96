"""Plots of a training history and of predicted masks (matplotlib).

matplotlib is an optional dependency: ``pip install skunetseg[plot]``. It is
imported by the plotting functions, not by ``import skunetseg`` nor by
``import skunetseg.plotting``.

The figures are built as :class:`matplotlib.figure.Figure` objects, without
:mod:`matplotlib.pyplot`: saving them uses matplotlib's Agg renderer and needs no
display, so the functions work the same in scripts, on servers and in notebooks
(where a returned figure is shown as an image). Pass ``ax`` to draw into axes of
your own figure instead.
"""

import numbers
import os
from collections.abc import Mapping

import numpy as np

from . import _atomic
from ._images import check_images
from .metrics import _check_pair, dice_per_pair

__all__ = ["plot_history", "plot_predictions"]

#: The panels of :func:`plot_history`: title, then (history key, legend label) pairs.
_HISTORY_PANELS = (
    ("loss", (("loss", "training"), ("val_loss", "validation"))),
    ("Dice", (("dice", "training"), ("val_dice", "validation"))),
    ("learning rate", (("learning_rate", "learning rate"),)),
)

#: Width and height of one image panel of :func:`plot_predictions`, in inches.
_PANEL_INCHES = 3.0


def _matplotlib():
    """Import matplotlib's Figure class, with an install hint when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "skunetseg.plotting needs matplotlib, an optional dependency: "
            "pip install skunetseg[plot]"
        ) from error
    return Figure


def _save(figure, path):
    """Save ``figure`` to ``path`` (its format from the extension) through the atomic writer."""
    if path is not None:
        save_figure(figure, path, overwrite=True)


def save_figure(figure, path, *, overwrite=False, **kwargs):
    """Write ``figure`` to the file ``path`` complete or not at all (see ``_atomic``)."""
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    with _atomic.open_for_writing(path, "wb", overwrite=overwrite) as file:
        figure.savefig(file, format=extension or None, **kwargs)


def _history_and_best_epoch(estimator_or_history):
    """Return (list of dict, best epoch or None) from an estimator or a history list."""
    history = getattr(estimator_or_history, "history_", estimator_or_history)
    best_epoch = getattr(estimator_or_history, "best_epoch_", None)
    if (isinstance(history, (str, bytes, Mapping)) or not hasattr(history, "__len__")
            or len(history) == 0 or not all(isinstance(row, Mapping) for row in history)):
        raise TypeError(
            "estimator_or_history must be a fitted estimator with a history_ attribute or a "
            "non-empty list of dicts, one per epoch; got "
            f"{type(estimator_or_history).__name__}."
        )
    if not any(key in row for row in history for _, series in _HISTORY_PANELS
               for key, _ in series):
        raise ValueError(
            "The history holds none of the keys 'loss', 'val_loss', 'dice', 'val_dice' and "
            f"'learning_rate'; its first epoch has {sorted(history[0])}."
        )
    return list(history), best_epoch


def plot_history(estimator_or_history, *, ax=None, path=None):
    """Plot the losses, the Dice and the learning rate of each training epoch.

    Three panels: the training and validation loss (``loss``, ``val_loss``), the
    training and validation Kaggle Dice (``dice``, ``val_dice``), and the learning
    rate (log scale), against the epoch. A dashed vertical line marks the best
    epoch, whose weights the estimator kept. Keys missing from the history are
    left out, so a fit without validation shows training curves only.

    Parameters
    ----------
    estimator_or_history : estimator or list of dict
        A fitted :class:`~skunetseg.UNetSegmenter` (its ``history_`` and
        ``best_epoch_``), or a history list in the format of ``history_``: one
        dict per epoch, with the keys ``epoch`` (counted from 1; the position in
        the list when absent), ``loss``, ``dice``, their ``val_`` twins and
        ``learning_rate``. A bare list marks no best epoch.
    ax : sequence of 3 matplotlib Axes, default=None
        The axes for the loss, the Dice and the learning rate. When None, a new
        figure with three panels side by side is made.
    path : str or os.PathLike, default=None
        Save the figure there; the format follows the extension (``.png``,
        ``.pdf``, ``.svg``, ...).

    Returns
    -------
    figure : matplotlib.figure.Figure
        The figure drawn into.

    Examples
    --------
    >>> from skunetseg.plotting import plot_history
    >>> history = [{"epoch": 1, "loss": 0.8, "dice": 0.3, "learning_rate": 1e-3},
    ...            {"epoch": 2, "loss": 0.6, "dice": 0.5, "learning_rate": 1e-3}]
    >>> figure = plot_history(history)
    >>> [axes.get_title() for axes in figure.axes]
    ['loss', 'Dice', 'learning rate']
    """
    history, best_epoch = _history_and_best_epoch(estimator_or_history)
    Figure = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        figure = Figure(figsize=(12, 3.5), layout="constrained")
        axes = figure.subplots(1, len(_HISTORY_PANELS))
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != len(_HISTORY_PANELS) or not all(hasattr(a, "plot") for a in axes):
            raise ValueError(
                "ax must be a sequence of 3 matplotlib Axes (loss, Dice, learning rate); got "
                f"{len(axes)} object(s)."
            )
        figure = axes[0].figure
    epochs = [row.get("epoch", position) for position, row in enumerate(history, start=1)]
    for axes_, (title, series) in zip(axes, _HISTORY_PANELS, strict=True):
        for key, label in series:
            values = np.array([row.get(key, np.nan) for row in history], dtype=float)
            if np.all(np.isnan(values)):
                continue
            # a learning rate holds for a whole epoch: draw it as steps
            style = "steps-post" if key == "learning_rate" else "default"
            axes_.plot(epochs, values, marker=".", drawstyle=style, label=label)
            if key == "learning_rate" and np.all(values > 0):
                axes_.set_yscale("log")
        if best_epoch is not None:
            axes_.axvline(best_epoch, color="gray", linestyle="--",
                          label=f"best epoch ({best_epoch})")
        axes_.set_title(title)
        axes_.set_xlabel("epoch")
        axes_.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes_.get_legend_handles_labels()[0]:
            axes_.legend()
    _save(figure, path)
    return figure


def _display_images(X):
    """Images as float (n, H, W) gray or (n, H, W, 3) RGB values in [0, 1], for imshow."""
    raw_dtype = np.asarray(X).dtype
    images = check_images(X, name="X")  # uint8 and uint16 scaled to [0, 1]
    if images.shape[-1] != 3:
        images = images[..., 0]
    if raw_dtype not in (np.uint8, np.uint16, bool):
        # any other scale: stretch each image's own range to [0, 1]
        axes = tuple(range(1, images.ndim))
        low = images.min(axis=axes, keepdims=True)
        span = images.max(axis=axes, keepdims=True) - low
        images = (images - low) / np.where(span > 0, span, 1)
    return images


def _class_names(kind, n_classes, labels):
    if kind == "multiclass":
        return [f"label {label}" for label in labels]
    return [f"class {index}" for index in range(n_classes)]


def _overlay(masks, colours, alpha):
    """RGBA (H, W, 4) overlay painting each channel of bool masks (H, W, k) in its colour."""
    overlay = np.zeros((*masks.shape[:2], 4))
    for channel, colour in enumerate(colours):
        overlay[masks[..., channel]] = (*colour[:3], alpha)
    return overlay


def plot_predictions(X, y_true, y_pred, *, n_images=None, class_index=None, labels=None,
                     alpha=0.5, path=None):
    """Plot images with their true and predicted masks, one row per image.

    Each row shows the image, the image overlaid with the true mask, and the
    image overlaid with the predicted mask, titled with the image's Kaggle Dice
    (:func:`skunetseg.metrics.dice_score` of that image: the mean over its
    classes, a class whose masks are both empty scoring 1).

    Parameters
    ----------
    X : array-like of shape (n_images, H, W) or (n_images, H, W, C)
        The images. Three channels are shown as RGB, any other count as the gray
        image of the first channel. ``uint8``, ``uint16`` and bool images are
        shown on their dtype's full range, other dtypes stretched from each
        image's minimum to its maximum.
    y_true, y_pred : array-like of shape (n_images, H, W) or (n_images, H, W, K)
        Masks in one of the formats of :class:`~skunetseg.UNetSegmenter`, as its
        ``predict`` returns them (not probabilities): binary masks (two values,
        one of them 0), multilabel 0/1 masks with one channel per class, or
        integer label maps of a multiclass problem.
    n_images : int, default=None
        Plot the first ``n_images`` images; None plots them all.
    class_index : int, default=None
        Show and score one class only: a channel of multilabel masks, or the
        position in ``labels`` of a multiclass label. None overlays every class
        (for label maps, every label but the first, the background) and scores
        the mean over all classes, background included, as
        :meth:`UNetSegmenter.score <skunetseg.UNetSegmenter.score>` does.
    labels : array-like, default=None
        The labels of multiclass label maps, as in
        :func:`~skunetseg.metrics.dice_score`. None takes the sorted values
        found in ``y_true`` and ``y_pred`` when label maps hold more than two
        integer values, and reads them as binary masks otherwise.
    alpha : float, default=0.5
        Opacity of the mask colours, in [0, 1].
    path : str or os.PathLike, default=None
        Save the figure there; the format follows the extension.

    Returns
    -------
    figure : matplotlib.figure.Figure
        A grid of ``n_images`` rows and 3 columns of axes.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.plotting import plot_predictions
    >>> images = np.zeros((1, 4, 4), dtype=np.uint8)
    >>> truth = np.zeros((1, 4, 4), dtype=np.uint8)
    >>> truth[0, :2, :2] = 1
    >>> predicted = np.zeros_like(truth)
    >>> predicted[0, :2, :] = 1
    >>> figure = plot_predictions(images, truth, predicted)
    >>> figure.axes[2].get_title()  # 2*4 / (4 + 8)
    'prediction, Dice 0.667'
    """
    y_true_array, y_pred_array = np.asarray(y_true), np.asarray(y_pred)
    images = _display_images(X)
    for name, masks in (("y_true", y_true_array), ("y_pred", y_pred_array)):
        if masks.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold boolean or numeric masks; got dtype {masks.dtype}.")
        if masks.ndim in (3, 4) and masks.shape[:3] != images.shape[:3]:
            raise ValueError(
                f"{name} must hold one mask per image of X, of the images' size: shape "
                f"({', '.join(map(str, images.shape[:3]))}) or with a class axis; got "
                f"shape {masks.shape}."
            )
    label_maps = y_true_array.ndim == 3 or (y_true_array.ndim == 4
                                            and y_true_array.shape[-1] == 1)
    if labels is None and label_maps:
        found = np.union1d(np.unique(y_true_array), np.unique(y_pred_array))
        # integer label maps of more than two labels; anything else is left to
        # dice_score to accept as binary masks or to reject
        labels = found if found.size > 2 and np.array_equal(found, np.round(found)) else None
    true, pred = _check_pair(y_true_array, y_pred_array, labels)  # bool (n, H, W, K)
    scores = dice_per_pair(true, pred)
    kind = "multiclass" if labels is not None else (
        "binary" if true.shape[-1] == 1 else "multilabel")
    n_classes = true.shape[-1]

    if class_index is None:
        shown = list(range(1 if kind == "multiclass" else 0, n_classes))
        image_scores = scores.mean(axis=1)
    elif (isinstance(class_index, numbers.Integral) and not isinstance(class_index, bool)
          and 0 <= class_index < n_classes):
        shown = [int(class_index)]
        image_scores = scores[:, class_index]
    else:
        raise ValueError(
            f"class_index must be None or an integer from 0 to {n_classes - 1} (the masks hold "
            f"{n_classes} {kind} class(es)); got {class_index!r}."
        )
    n_total = len(images)
    if n_images is None:
        n_images = n_total
    elif (isinstance(n_images, bool) or not isinstance(n_images, numbers.Integral)
          or not 1 <= n_images <= n_total):
        raise ValueError(
            f"n_images must be None or an integer from 1 to {n_total}, the number of images; "
            f"got {n_images!r}."
        )
    if not (isinstance(alpha, numbers.Real) and 0 <= alpha <= 1):
        raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}.")

    Figure = _matplotlib()
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    palette = colormaps["tab10"]
    colours = [palette(position % palette.N) for position in range(len(shown))]
    figure = Figure(figsize=(3 * _PANEL_INCHES, n_images * _PANEL_INCHES), layout="constrained")
    grid = figure.subplots(n_images, 3, squeeze=False)
    for row in range(n_images):
        image_axes, truth_axes, pred_axes = grid[row]
        panels = ((image_axes, None, f"image {row}"), (truth_axes, true, "truth"),
                  (pred_axes, pred, f"prediction, Dice {image_scores[row]:.3f}"))
        for axes, masks, title in panels:
            axes.imshow(images[row], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if masks is not None:
                axes.imshow(_overlay(masks[row][..., shown], colours, alpha),
                            interpolation="nearest")
            axes.set_title(title)
            axes.set_axis_off()
    if shown and (len(shown) > 1 or kind != "binary"):
        names = _class_names(kind, n_classes, labels)
        figure.legend(handles=[Patch(color=colour, label=names[index])
                               for index, colour in zip(shown, colours, strict=True)],
                      loc="outside lower center", ncols=min(len(shown), 5))
    _save(figure, path)
    return figure
