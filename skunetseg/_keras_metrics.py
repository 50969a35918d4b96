"""Keras 3 metrics that compute the Kaggle metrics of :mod:`skunetseg.metrics` in graph.

They let ``fit`` watch the validation Dice (``val_dice``) without a second pass
over the validation images. A test checks them against the NumPy definitions.
"""

from ._backend import keras, ops

_register = keras.saving.register_keras_serializable(package="skunetseg")


class _PairMetric(keras.metrics.Metric):
    """Mean of a per-(image, class) score over every pair seen."""

    def __init__(self, threshold=0.5, multiclass=False, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = threshold
        self.multiclass = multiclass
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _masks(self, y_true, y_pred):
        true = ops.cast(y_true > 0.5, "float32")
        if self.multiclass:
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), ops.shape(y_pred)[-1])
        else:
            pred = ops.cast(y_pred > self.threshold, "float32")
        return true, ops.cast(pred, "float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true, pred = self._masks(y_true, y_pred)
        scores = self._pair_scores(true, pred)
        self.total.assign_add(ops.cast(ops.sum(scores), self.dtype))
        self.count.assign_add(ops.cast(ops.size(scores), self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "multiclass": self.multiclass}


@_register
class KaggleDice(_PairMetric):
    """Mean Dice over (image, class) pairs; both masks empty scores 1."""

    def __init__(self, threshold=0.5, multiclass=False, name="dice", dtype=None):
        super().__init__(threshold=threshold, multiclass=multiclass, name=name, dtype=dtype)

    @staticmethod
    def _pair_scores(true, pred):
        intersection = ops.sum(true * pred, axis=(1, 2))
        total = ops.sum(true, axis=(1, 2)) + ops.sum(pred, axis=(1, 2))
        return ops.where(total > 0, 2.0 * intersection / ops.maximum(total, 1.0), 1.0)


@_register
class MaskAccuracy(_PairMetric):
    """Share of (image, class) pairs where "mask present" is predicted right."""

    def __init__(self, threshold=0.5, multiclass=False, name="mask_accuracy", dtype=None):
        super().__init__(threshold=threshold, multiclass=multiclass, name=name, dtype=dtype)

    @staticmethod
    def _pair_scores(true, pred):
        present_true = ops.max(true, axis=(1, 2)) > 0
        present_pred = ops.max(pred, axis=(1, 2)) > 0
        return ops.cast(ops.equal(present_true, present_pred), "float32")


@_register
class BalancedDice(KaggleDice):
    """Kaggle Dice with the empty and the non-empty (image, class) pairs weighted equally.

    The mean of two means: the Dice of the pairs whose true mask holds an object,
    and the share of the empty pairs predicted empty (their Kaggle Dice); where
    only one kind of pair has been seen, its mean alone. Predicting nothing
    scores at most 0.5 however many pairs are empty, so an epoch that has
    learnt to stay silent cannot win model selection on mostly-empty data,
    while on data without empty pairs it equals :class:`KaggleDice`.
    """

    def __init__(self, threshold=0.5, multiclass=False, name="balanced_dice", dtype=None):
        super().__init__(threshold=threshold, multiclass=multiclass, name=name, dtype=dtype)
        self.empty_total = self.add_variable(shape=(), initializer="zeros", name="empty_total")
        self.empty_count = self.add_variable(shape=(), initializer="zeros", name="empty_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true, pred = self._masks(y_true, y_pred)
        scores = self._pair_scores(true, pred)
        empty = ops.cast(ops.sum(true, axis=(1, 2)) == 0, self.dtype)
        scores = ops.cast(scores, self.dtype)
        self.total.assign_add(ops.sum(scores * (1.0 - empty)))
        self.count.assign_add(ops.sum(1.0 - empty))
        self.empty_total.assign_add(ops.sum(scores * empty))
        self.empty_count.assign_add(ops.sum(empty))

    def result(self):
        objects = ops.divide_no_nan(self.total, self.count)
        empties = ops.divide_no_nan(self.empty_total, self.empty_count)
        kinds = ops.cast(self.count > 0, self.dtype) + ops.cast(self.empty_count > 0, self.dtype)
        return ops.divide_no_nan(objects + empties, kinds)

    def reset_state(self):
        super().reset_state()
        self.empty_total.assign(0.0)
        self.empty_count.assign(0.0)
