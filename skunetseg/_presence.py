"""PresenceClassifier: "is there an object of this class in the image?" from pixels."""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._backbones import check_backbone
from ._base import (
    IMAGE_INPUT_FAILED_CHECKS,
    assemble,
    check_validation_data,
    restore_on_failure,
    row_chunks,
)
from ._checks import check_array_like
from ._images import check_input_size, image_source
from ._keras_estimator import KerasModelMixin, _keras_side
from .augment import resolve_augmenter

__all__ = ["PresenceClassifier"]


class PresenceClassifier(KerasModelMixin, ClassifierMixin, BaseEstimator):
    """Image classifier network: a segmentation-models encoder, global pooling, sigmoids.

    Predicts, per image, whether each class is present. It is the image kind of
    presence classifier of :class:`~skunetseg.FalsePositiveFilter`, and a
    scikit-learn classifier of its own, trained like
    :class:`~skunetseg.UNetSegmenter`: the same encoders, augmentation, early
    stopping (on the validation cross-entropy), learning-rate reduction,
    BatchNormalization momentum and persistence.

    Parameters
    ----------
    %(backbone)s
        Its deepest feature map is pooled.
    %(encoder_weights)s
    %(input_size)s
    pooling : {"avg", "max"}, default="avg"
        Global pooling of the encoder's output.
    dropout : float, default=0.0
        Dropout rate between the pooling and the output layer.
    %(binarize_masks)s
        ``fit`` itself takes labels, not masks:
        :class:`~skunetseg.FalsePositiveFilter` passes its segmenter's setting
        on and reads the presence labels from masks binarised this way.
    loss : "bce" or keras.losses.Loss, default="bce"
        Binary cross-entropy, or any Keras loss on ``(n_images, n_outputs)``.
    %(learning_rate)s
    %(batch_size)s
    %(accumulate_steps)s
    %(epochs)s
    %(max_empty_share)s
        An image holds no object when no class is present in it.
    %(validation_fraction)s
        The watched score on held-out images is their loss (``val_loss``).
    %(early_stopping_patience)s
    %(reduce_lr_patience)s
    %(reduce_lr_factor)s
    %(bn_momentum)s
    threshold : float, default=0.5
        Probability above which :meth:`predict` says "present".
    %(augment)s
        Every transform keeps the image's labels.
    %(mixed_precision)s
    %(callbacks)s
    %(random_state)s
    %(verbose)s

    Attributes
    ----------
    classes_ : ndarray
        The two labels of a 1-D ``y``, or ``arange(n_classes)`` for an indicator
        matrix ``y``.
    n_outputs_ : int
        Sigmoid outputs of the network: 1 for a 1-D ``y``, else ``n_classes``.
    n_channels_in_ : int
        Channels of the images seen in ``fit``.
    history_ : list of dict
        One dict per epoch: ``loss``, ``accuracy``, ``auc``, their ``val_`` twins
        when validating, and ``learning_rate``.
    best_epoch_ : int
        The epoch whose weights were kept.
    bn_momentum_ : float
        The BatchNormalization momentum used.
    input_dtype_ : str
        The dtype of the training images.
    input_range_ : tuple (min, max)
        Their value range (the dtype's for ``uint8``/``uint16``); ``predict``
        warns when its images cannot be on the same scale.
    model_ : keras.Model
        The trained network (rebuilt from its weights after unpickling).

    See Also
    --------
    skunetseg.FalsePositiveFilter : Blanks a segmenter's masks where a presence
        classifier says "absent".

    Notes
    -----
    Images of any size are padded (reflected) to a multiple of 32, which leaves
    the presence of every class unchanged. ``uint8`` and ``uint16`` images are
    scaled to [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg import PresenceClassifier
    >>> X = np.random.default_rng(0).integers(0, 255, (16, 32, 32), dtype=np.uint8)
    >>> y = (X.mean(axis=(1, 2)) > 127).astype(int)
    >>> model = PresenceClassifier("vgg16", epochs=1, random_state=0)
    >>> model.fit(X, y).predict_proba(X).shape  # doctest: +SKIP
    (16, 2)
    """

    _parameter_constraints = {
        **KerasModelMixin._parameter_constraints,
        "pooling": [StrOptions({"avg", "max"})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "loss": [StrOptions({"bce"}), HasMethods("__call__")],
        "threshold": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        backbone="efficientnetb0",
        *,
        encoder_weights=None,
        input_size=None,
        pooling="avg",
        dropout=0.0,
        binarize_masks=False,
        loss="bce",
        learning_rate=1e-3,
        batch_size=8,
        accumulate_steps=1,
        epochs=50,
        max_empty_share=0.5,
        validation_fraction=0.1,
        early_stopping_patience=10,
        reduce_lr_patience=5,
        reduce_lr_factor=0.5,
        bn_momentum="auto",
        threshold=0.5,
        augment=None,
        mixed_precision="auto",
        callbacks=None,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.encoder_weights = encoder_weights
        self.input_size = input_size
        self.pooling = pooling
        self.dropout = dropout
        self.binarize_masks = binarize_masks
        self.loss = loss
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.accumulate_steps = accumulate_steps
        self.epochs = epochs
        self.max_empty_share = max_empty_share
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.reduce_lr_patience = reduce_lr_patience
        self.reduce_lr_factor = reduce_lr_factor
        self.bn_momentum = bn_momentum
        self.threshold = threshold
        self.augment = augment
        self.mixed_precision = mixed_precision
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, validation_data=None):
        """Train the network on images ``X`` and their labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images of any real dtype and any size, or image files (of any sizes
            with ``input_size``). The training images are held in memory at
            ``input_size``.
        y : array-like of shape (n_images,) or (n_images, n_classes)
            Two labels (any values), or a 0/1 indicator matrix with one column
            per class (multilabel; one column is allowed).
        validation_data : tuple (X_val, y_val), default=None
            Images and labels to watch ``val_loss`` on; when None,
            ``validation_fraction`` of ``X`` is held out.

        Returns
        -------
        self : PresenceClassifier
        """
        with restore_on_failure(self):  # a failed or interrupted fit changes nothing
            return self._fit(X, y, validation_data)

    def _fit(self, X, y, validation_data):
        check_backbone(self.backbone)
        self._check_encoder_weights()
        size = check_input_size(self.input_size)
        source = image_source(X, name="X", size=size)
        images = source.take(slice(None))
        labels = self._fit_labels(y, len(images))
        if validation_data is not None:
            check_validation_data(validation_data)
            valid_images = image_source(validation_data[0], name="validation_data[0]",
                                        size=size, n_channels=images.shape[-1]).take(slice(None))
            valid = (valid_images, self._encode_labels(validation_data[1], len(valid_images),
                                                       "validation_data[1]"))
            train = (images, labels)
        else:
            train_rows, valid_rows = self._validation_rows(~labels.any(axis=1))
            train = (images[train_rows], labels[train_rows])
            valid = None if valid_rows is None else (images[valid_rows], labels[valid_rows])
        augmenter = resolve_augmenter(self.augment)

        self._forget_model()
        self.n_channels_in_ = images.shape[-1]
        seed = self._seed()
        from ._targets import balances

        absent = ~train[1].any(axis=1)  # images with no class present
        if augmenter is None and not balances(absent, self.max_empty_share):
            training, n_epoch = (self._network_input(train[0]), train[1]), len(train[0])
        else:
            from ._presence_model import PresenceBatches

            training = PresenceBatches(*train, augmenter=augmenter, batch_size=self.batch_size,
                                       prepare_images=self._network_input, seed=seed,
                                       max_empty_share=self.max_empty_share)
            n_epoch = len(training.order)
        model, self.history_, self.best_epoch_, momentum = self._build_and_train(
            training, None if valid is None else (self._network_input(valid[0]), valid[1]),
            n_train=n_epoch, seed=seed, activation="sigmoid", threshold=self.threshold,
            metrics=_keras_side().presence_metrics(self.threshold), monitor="loss", mode="min")
        self.bn_momentum_ = momentum
        self._model = model
        self._record_input(source.dtype, source.value_range)
        self._record_architecture()
        return self

    def _fit_labels(self, y, n_images):
        """Set ``classes_`` and ``n_outputs_`` from ``y``; return float32 ``(n, n_outputs)``."""
        y = self._check_label_array(y, n_images, "y")
        if y.ndim == 1:
            classes = np.unique(y)
            if len(classes) != 2:
                raise ValueError(
                    f"A 1-D y must hold exactly two labels; got {classes[:10].tolist()}. "
                    "Pass a 0/1 indicator matrix of shape (n_images, n_classes) for "
                    "several classes."
                )
            self.classes_, self.n_outputs_ = classes, 1
        else:
            self.classes_, self.n_outputs_ = np.arange(y.shape[1]), y.shape[1]
        return self._encode_labels(y, n_images, "y")

    def _encode_labels(self, y, n_images, name):
        """Labels as float32 ``(n, n_outputs)`` 0/1, checked against the fitted layout."""
        y = self._check_label_array(y, n_images, name)
        if self._one_dimensional() and y.ndim == 1:
            unknown = np.setdiff1d(y, self.classes_)
            if unknown.size:
                raise ValueError(f"{name} holds labels {unknown[:10].tolist()} that are not "
                                 f"among the classes {self.classes_.tolist()}.")
            return (y == self.classes_[1]).astype(np.float32)[:, np.newaxis]
        if y.ndim != 2 or y.shape[1] != self.n_outputs_:
            expected = "(n_images,)" if self.n_outputs_ == 1 else f"(n_images, {self.n_outputs_})"
            raise ValueError(f"{name} must have shape {expected} like the y seen in fit; got "
                             f"shape {y.shape}.")
        return y.astype(np.float32)

    @staticmethod
    def _check_label_array(y, n_images, name):
        check_array_like(y, name=name, what="an array of labels")
        y = np.asarray(y)
        if y.ndim not in (1, 2):
            raise ValueError(f"{name} must have shape (n_images,) or (n_images, n_classes); "
                             f"got shape {y.shape}.")
        if len(y) != n_images:
            raise ValueError(f"{name} must hold one label per image; got {len(y)} labels for "
                             f"{n_images} images.")
        if y.ndim == 2 and not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name} of shape {y.shape} is read as an indicator matrix (one "
                             "column per class), which must hold only 0 and 1.")
        return y

    _architecture_params = ("backbone", "encoder_weights", "pooling", "dropout")

    def _build_model(self, keras_side, encoder_weights, policy=None):
        return keras_side.build_classifier(
            backbone=self.backbone, encoder_weights=encoder_weights,
            n_channels=self._network_channels(), n_outputs=self.n_outputs_,
            pooling=self.pooling, dropout=self.dropout,
            policy=policy or keras_side.resolve_mixed_precision(self.mixed_precision),
        )

    def _network_outputs(self):
        return self.n_outputs_

    # -------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Probability that each class is present in each image.

        Images are read (files), resized to ``input_size`` (when set) and
        predicted ``8 * batch_size`` at a time, never all at once.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths

        Returns
        -------
        proba : ndarray of shape (n_images, 2) or (n_images, n_classes), float32
            For a 1-D ``y``, the probabilities of ``classes_[0]`` and
            ``classes_[1]``; for an indicator matrix, one column per class.
        """
        check_is_fitted(self)
        self._check_predict_params(("batch_size", "threshold", "mixed_precision", "verbose"))
        images = image_source(X, name="X", size=check_input_size(self.input_size),
                              n_channels=self.n_channels_in_)
        self._check_input_scale(images.dtype, images.value_range)
        keras_side = _keras_side()
        network = self._predict_network()
        proba = assemble(
            ((rows, keras_side.predict(network, self._network_input(images.take(rows)),
                                       self.batch_size))
             for rows in row_chunks(len(images), 8 * self.batch_size)), len(images))
        if self._one_dimensional():
            return np.column_stack([1 - proba[:, 0], proba[:, 0]])
        return proba

    def _one_dimensional(self):
        """Whether ``fit`` got a 1-D ``y`` of two labels (else an indicator matrix)."""
        return self.n_outputs_ == 1 and len(self.classes_) == 2

    def predict(self, X):
        """Predicted labels: ``classes_`` values, or a 0/1 indicator matrix.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths

        Returns
        -------
        labels : ndarray of shape (n_images,) or (n_images, n_classes)
        """
        proba = self.predict_proba(X)
        if self._one_dimensional():
            return self.classes_[(proba[:, 1] > self.threshold).astype(int)]
        return (proba > self.threshold).astype(int)

    def _expected_failed_checks(self):
        """scikit-learn's checks that cannot apply to image input, with the reason."""
        return IMAGE_INPUT_FAILED_CHECKS

    #: ``predict_proba`` reads :class:`~skunetseg._images.DecodedImages` (see
    #: skunetseg._base.SharedChunk).
    _takes_decoded_images = True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        tags.classifier_tags.multi_label = True
        tags.non_deterministic = self.random_state is None
        return tags
