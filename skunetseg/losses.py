"""Segmentation losses as serializable Keras 3 ``Loss`` classes.

Importing this module loads TensorFlow. Every class is registered with Keras
under the ``skunetseg`` package, so a saved model that uses one loads without
``custom_objects``. Losses combine with ``+`` and ``*``::

    from skunetseg.losses import DiceLoss, JaccardLoss
    import keras
    loss = keras.losses.BinaryCrossentropy() + 0.5 * JaccardLoss()  # doctest: +SKIP

(``+`` needs a skunetseg loss on one side; :class:`CombinedLoss` takes any.)
"""

from ._backbones import LOSS_NAMES
from ._backend import keras, ops

__all__ = ["JaccardLoss", "DiceLoss", "BinaryFocalLoss", "CombinedLoss", "get_loss", "LOSS_NAMES"]

_register = keras.saving.register_keras_serializable(package="skunetseg")
_SPATIAL_AXES = (1, 2)


def soft_overlap(y_true, y_pred, per_image):
    """Return (intersection, sum of both) of soft masks, per image or for the batch.

    Both are summed over the spatial axes, and over the batch too unless
    ``per_image``; the class axis is kept.
    """
    axes = _SPATIAL_AXES if per_image else (0, *_SPATIAL_AXES)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return intersection, total


class _LossAlgebra:
    """``loss_a + loss_b`` and ``weight * loss`` build a :class:`CombinedLoss`."""

    def __add__(self, other):
        return CombinedLoss([self, other])

    def __radd__(self, other):
        return CombinedLoss([other, self])

    def __mul__(self, weight):
        return CombinedLoss([self], weights=[float(weight)])

    __rmul__ = __mul__


class _OverlapLoss(_LossAlgebra, keras.losses.Loss):
    """Base of the soft-overlap losses: ``1 - score(intersection, total)``."""

    def __init__(self, smooth=1e-5, per_image=False, name=None, reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = smooth
        self.per_image = per_image

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        intersection, total = soft_overlap(y_true, y_pred, self.per_image)
        score = self._score(intersection, total)
        # mean over classes (and images): one value per batch or per image
        return 1.0 - ops.mean(score, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth, "per_image": self.per_image}


@_register
class JaccardLoss(_OverlapLoss):
    """Soft Jaccard (intersection over union) loss, ``1 - |X∩Y| / |X∪Y|``.

    Parameters
    ----------
    smooth : float, default=1e-5
        Added to numerator and denominator; keeps empty masks defined.
    per_image : bool, default=False
        Score each image on its own and average, instead of the whole batch at once.
    name : str, default="jaccard_loss"
    """

    def __init__(self, smooth=1e-5, per_image=False, name="jaccard_loss", **kwargs):
        super().__init__(smooth=smooth, per_image=per_image, name=name, **kwargs)

    def _score(self, intersection, total):
        return (intersection + self.smooth) / (total - intersection + self.smooth)


@_register
class DiceLoss(_OverlapLoss):
    """Soft Dice loss, ``1 - 2|X∩Y| / (|X| + |Y|)``.

    Parameters are those of :class:`JaccardLoss`; the default name is ``"dice_loss"``.
    """

    def __init__(self, smooth=1e-5, per_image=False, name="dice_loss", **kwargs):
        super().__init__(smooth=smooth, per_image=per_image, name=name, **kwargs)

    def _score(self, intersection, total):
        return (2.0 * intersection + self.smooth) / (total + self.smooth)


@_register
class BinaryFocalLoss(_LossAlgebra, keras.losses.Loss):
    """Binary focal loss (Lin et al., 2017) on sigmoid outputs.

    ``-alpha (1-p)^gamma log(p)`` on object pixels and
    ``-(1-alpha) p^gamma log(1-p)`` on background pixels, averaged.

    Parameters
    ----------
    alpha : float, default=0.25
        Weight of the object pixels.
    gamma : float, default=2.0
        Focusing exponent; 0 gives a weighted cross-entropy.
    name : str, default="binary_focal_loss"
    """

    def __init__(self, alpha=0.25, gamma=2.0, name="binary_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = alpha
        self.gamma = gamma

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, keras.config.epsilon(), 1.0 - keras.config.epsilon())
        positive = -self.alpha * ops.power(1.0 - p, self.gamma) * ops.log(p)
        negative = -(1.0 - self.alpha) * ops.power(p, self.gamma) * ops.log(1.0 - p)
        return ops.mean(y_true * positive + (1.0 - y_true) * negative, axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@_register
class CombinedLoss(_LossAlgebra, keras.losses.Loss):
    """A weighted sum of losses, for example cross-entropy plus Jaccard.

    Parameters
    ----------
    losses : list of keras.losses.Loss
        The terms; any serializable Keras loss.
    weights : list of float, default=None
        One weight per term; all 1 by default.
    name : str, default=None
        Defaults to the terms' names joined by ``"_plus_"``.
    """

    def __init__(self, losses, weights=None, name=None, **kwargs):
        losses = [keras.losses.deserialize(loss) if isinstance(loss, dict) else loss
                  for loss in losses]
        terms, term_weights = [], []
        for loss, weight in zip(losses, weights or [1.0] * len(losses), strict=True):
            if isinstance(loss, CombinedLoss):  # flatten (a + b) + c
                terms += loss.losses
                term_weights += [weight * w for w in loss.weights]
            else:
                terms.append(loss)
                term_weights.append(float(weight))
        if name is None:
            name = "_plus_".join(getattr(loss, "name", type(loss).__name__) for loss in terms)
        super().__init__(name=name, **kwargs)
        self.losses = terms
        self.weights = term_weights

    def call(self, y_true, y_pred):
        terms = zip(self.losses, self.weights, strict=True)
        return sum(weight * loss(y_true, y_pred) for loss, weight in terms)

    def get_config(self):
        return {
            **super().get_config(),
            "losses": [keras.losses.serialize(loss) for loss in self.losses],
            "weights": self.weights,
        }


def get_loss(loss, activation="sigmoid"):
    """Return the Keras loss for a name of :data:`LOSS_NAMES` or pass a loss through.

    For a softmax output ``"bce"`` means categorical cross-entropy and ``"focal"``
    categorical focal cross-entropy.
    """
    if not isinstance(loss, str):
        return loss
    softmax = activation == "softmax"

    def crossentropy():
        if softmax:
            return keras.losses.CategoricalCrossentropy(name="crossentropy")
        return keras.losses.BinaryCrossentropy(name="crossentropy")

    builders = {
        "jaccard": JaccardLoss,
        "dice": DiceLoss,
        "bce": crossentropy,
        "focal": (keras.losses.CategoricalFocalCrossentropy if softmax else BinaryFocalLoss),
        "bce_jaccard": lambda: CombinedLoss([crossentropy(), JaccardLoss()]),
        "bce_dice": lambda: CombinedLoss([crossentropy(), DiceLoss()]),
    }
    if loss not in builders:
        raise ValueError(f"The 'loss' parameter must be one of {list(LOSS_NAMES)} or a "
                         f"Keras loss; got {loss!r}.")
    return builders[loss]()
