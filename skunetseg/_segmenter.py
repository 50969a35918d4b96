"""UNetSegmenter: a segmentation-models U-Net as a scikit-learn estimator."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._backbones import LOSS_NAMES, check_backbone
from ._base import (
    SegmenterMixin,
    check_validation_data,
    pair_dice,
    read_truth,
    restore_on_failure,
    take_rows,
)
from ._export import ExportMixin
from ._images import (
    ArrayImages,
    check_input_size,
    image_source,
    is_paths,
    load_labels,
    mask_row_names,
    pad_to_multiple,
    resize_images,
    restore_sizes,
)
from ._keras_estimator import KerasModelMixin, _keras_side
from ._targets import empty_images, encode_targets, fit_target_encoding
from ._worker import run_in_worker
from .augment import resolve_augmenter
from .postprocess import PostProcessing, tune_unset
from .tta import MERGE_METHODS, TTA_PRESETS, predict_with_tta, resolve_tta

__all__ = ["UNetSegmenter"]


#: Images are read and predicted in chunks of this many batches (times the TTA views).
_CHUNK_BATCHES = 8

#: The parameters predict_proba, predict and score use, validated by them too.
_PREDICT_PARAMS = ("batch_size", "threshold", "min_area", "min_component_area", "tta",
                   "tta_merge", "mixed_precision", "verbose", "binarize_masks")


def _unchanged(images):
    return images


def _in_memory(images):
    """An in-memory source resized once to its ``input_size``; files stay files."""
    return images.resized() if isinstance(images, ArrayImages) else images


def _train_network(estimator, train, valid):
    """Train ``estimator``'s network in a worker; return what ``fit`` keeps of it."""
    model, history, best_epoch, momentum = estimator._train(train, valid)
    return model.get_weights(), history, best_epoch, momentum


class UNetSegmenter(KerasModelMixin, ExportMixin, SegmenterMixin, BaseEstimator):
    """U-Net image segmentation (segmentation-models on Keras 3) as a scikit-learn estimator.

    Trains a U-Net with a segmentation-models encoder on a stack of images and
    masks, watching the Dice (of held-out images, when asked) for early
    stopping and learning rate reduction, and predicts masks in the format it
    was fitted on.

    Images and masks are arrays, or lists of image files (PNG, JPEG, TIFF, 8- or
    16-bit, gray or colour) that ``fit``, ``predict_proba``, ``predict`` and
    ``score`` read batch by batch, never all at once (see ``fit``).

    Parameters
    ----------
    %(backbone)s
    %(encoder_weights)s
    decoder_filters : tuple of 5 int, default=(256, 128, 64, 32, 16)
        Filters of the five decoder blocks.
    %(input_size)s
        Masks are resized by nearest neighbour, and the predicted probabilities
        back to each image's own size (bilinear) before post-processing, so
        predictions have the size of their images, which may then differ within
        one data set.
    %(binarize_masks)s
        Masks (files and arrays) become 0/255 ``uint8`` and ``predict`` returns
        0/255 masks. Without it, masks whose values look like gray levels rather
        than labels raise a ValueError that says so.
    loss : str or keras.losses.Loss, default="bce_jaccard"
        ``"bce_jaccard"`` (cross-entropy plus soft Jaccard, as most Kaggle
        solutions), ``"jaccard"``, ``"dice"``, ``"bce"``, ``"focal"``,
        ``"bce_dice"`` or any Keras loss (see :mod:`skunetseg.losses`). The
        cross-entropy term keeps the probabilities low on images and classes
        whose mask is empty, where one false pixel costs the whole pair's Dice.
    %(learning_rate)s
    %(batch_size)s
    %(accumulate_steps)s
    %(epochs)s
    %(max_empty_share)s
        An image holds no object when its mask is empty.
    %(validation_fraction)s
        The watched score on held-out images is the balanced Dice
        (``val_balanced_dice``): the Kaggle Dice with the empty and the
        non-empty (image, class) pairs weighted equally, which an epoch that
        predicts nothing cannot win on mostly-empty data (on data without empty
        pairs it is the Kaggle Dice).
    %(early_stopping_patience)s
    %(reduce_lr_patience)s
    %(reduce_lr_factor)s
    %(bn_momentum)s
    threshold : None, float or sequence of float, default=None
        Probability above which a pixel is predicted as the class (sigmoid
        outputs), one for all classes or one per class; multiclass outputs take
        the most probable label. None: tuned on the held-out images when
        ``fit`` has some (``validation_data``, or ``validation_fraction``),
        else 0.5 (see Notes).
    min_area : None, float or sequence of float, default=None
        Post-processing in ``predict`` and ``score``: on each image, a class whose
        mask covers fewer pixels is erased entirely (a value in (0, 1) is a share
        of the image's pixels, so it holds at any image size; >= 1 counts pixels;
        0 keeps every mask). One for all classes or one per class. None: tuned
        on the held-out images when ``fit`` has some, else 0.
    min_component_area : float or sequence of float, default=0
        Post-processing: connected components smaller than this are erased
        before ``min_area`` is applied; same units as ``min_area``. See
        :mod:`skunetseg.postprocess`.
    %(augment)s
    tta : None, "flips", "d4" or list, default=None
        Test-time augmentation in ``predict_proba``, ``predict`` and ``score``:
        predict flipped (``"flips"``: 4 views), flipped and rotated (``"d4"``: 8
        views, square images only) or listed views (see :mod:`skunetseg.tta`),
        map each back and merge them. Views are predicted in batches.
    tta_merge : {"mean", "gmean", "max"}, default="mean"
        How the views' probabilities are merged.
    %(mixed_precision)s
    distribute : {"auto", "mirrored"} or None, default="auto"
        Data-parallel training through ``tf.distribute``: ``"mirrored"`` trains
        one replica per visible GPU (``tf.distribute.MirroredStrategy``; the CPU
        when there is none), ``"auto"`` does so when more than one GPU is
        visible, None never. ``batch_size`` is the global batch, split across
        the replicas.
    %(callbacks)s
    fit_in_subprocess : bool, default=False
        Train in a fresh worker process that exits after the fit, bringing back
        only the weights and the history. TensorFlow keeps about the size of the
        weights and optimizer state of every model trained in a process (an
        upstream leak, see the design notes); in a worker that memory is freed
        when the fit ends, so many fits in one process (a grid search, a fold
        ensemble) do not grow its memory. Costs a few seconds per fit to start
        the worker and to copy the training images to it (only their paths
        when they are files, with the masks); ``callbacks`` must
        pickle and run in the worker.
    %(random_state)s
        Two fits on the CPU with the same integer give the same model, when
        TensorFlow runs as many threads (it takes one per core it may use;
        oneDNN's float32 sums, and so the model, depend on that number).
    %(verbose)s
        In ``predict_proba``, ``predict`` and ``score``, a progress bar over the
        images (1) or a line when done (2).

    Attributes
    ----------
    classes_ : ndarray
        The labels of ``y`` (binary and multiclass), or the channel indices
        (multilabel).
    n_classes_ : int
        Number of classes.
    target_type_ : {"binary", "multilabel", "multiclass"}
        How ``y`` was read; ``predict`` returns masks of the same kind and shape.
    encoding_ : skunetseg.TargetEncoding
        How the masks map to the output channels and back (``encode``, ``decode``).
    postprocessing_ : skunetseg.postprocess.PostProcessing
        The post-processing ``predict`` and ``score`` apply: ``threshold``,
        ``min_area`` and ``min_component_area`` as they are now (``set_params``
        after fit takes effect), the ones that are None taking ``thresholds_``
        and ``min_areas_``.
    thresholds_ : ndarray of shape (K,), or None
        The threshold of each output channel that ``fit`` settled on: the
        given ``threshold``, the one tuned on the held-out images, or 0.5. None
        for multiclass (softmax) outputs.
    min_areas_ : ndarray of shape (K,)
        The same for ``min_area`` (the given one, the tuned one, or 0).
    validation_score_before_tuning_, validation_score_ : float or None
        Kaggle Dice of the held-out images (``predict``'s masks at their own
        size) with ``threshold`` 0.5 and no area filter, and with the settled
        post-processing; None when nothing was tuned.
    n_channels_in_ : int
        Channels of the images seen in ``fit``.
    history_ : list of dict
        One dict per epoch: ``epoch``, ``loss``, ``dice``, ``balanced_dice``,
        ``mask_accuracy``, their
        ``val_`` twins when validating, and ``learning_rate``.
    best_epoch_ : int
        The epoch whose weights were kept.
    bn_momentum_ : float
        The BatchNormalization momentum used.
    input_dtype_ : str
        The dtype of the training images (``"uint8"``, ``"float32"``, ...).
    input_range_ : tuple (min, max)
        Their value range: the dtype's for ``uint8``/``uint16``, else the
        pixels' own (the first file's for float image files). ``predict`` warns
        when its images cannot be on the same scale.
    model_ : keras.Model
        The trained network (rebuilt from its weights after unpickling).

    See Also
    --------
    skunetseg.ImagePreprocessor : ImageNet input normalisation for pretrained encoders.
    skunetseg.metrics.dice_score : The Kaggle Dice used by ``score``.

    Notes
    -----
    Images of any size are padded (reflected) to a multiple of 32 and the
    predictions cropped back (after resizing to ``input_size`` when it is set).
    ``uint8`` and ``uint16`` images are scaled to [0, 1]; other dtypes are used
    as they are. TensorFlow is imported on the
    first ``fit``, ``predict`` or load, never by ``import skunetseg``.

    Post-processing tuned by default: the ``threshold`` and ``min_area`` left
    None are chosen per class on the images ``fit`` holds out (the
    ``validation_data``, or the ``validation_fraction`` drawn from ``X``, which
    by default holds out 10 % of mostly-empty data), by
    :func:`skunetseg.postprocess.tune_postprocessing`: the least aggressive
    settings within one standard error of the best held-out Kaggle Dice. On
    mostly-empty data that is what keeps a single model from painting the empty
    images: the share of empty KolektorSDD test images an untuned model gave a
    mask swung from 1.7 % to 50.8 % between fits; see the user guide's page
    "Mostly-empty data". A class no held-out mask holds keeps 0.5 and 0. Give
    both a value (``threshold=0.5, min_area=0``) to turn the tuning off.

    Pickling (``joblib.dump``) stores the parameters and the weights, never the
    compiled Keras model; loading rebuilds the network. Pickle files run code
    when loaded: load only files you trust, or use :meth:`save` and
    :func:`skunetseg.load`.

    Examples
    --------
    >>> from skunetseg import UNetSegmenter
    >>> from skunetseg.datasets import load_membrane
    >>> data = load_membrane()  # doctest: +SKIP
    >>> model = UNetSegmenter(backbone="efficientnetb0", epochs=40, random_state=0)
    >>> model.fit(data.images[:20], data.masks[:20])  # doctest: +SKIP
    >>> model.score(data.images[20:], data.masks[20:])  # doctest: +SKIP

    Image and mask files, of any sizes, trained on at 256x256:

    >>> from skunetseg.io import load_image_folder
    >>> images, masks = load_image_folder("train/images", "train/masks")  # doctest: +SKIP
    >>> model = UNetSegmenter("efficientnetb0", input_size=(256, 256), epochs=40)
    >>> model.fit(images, masks)  # doctest: +SKIP
    """

    #: What the post-processing parameters left None are when not tuned: cross-fitting
    #: (``FoldEnsemble``, ``FalsePositiveFilter``) sets them on its fold models, whose
    #: probabilities alone it uses, so that none tunes on the images held out from it.
    _untuned_postprocessing = {"threshold": 0.5, "min_area": 0}

    _parameter_constraints = {
        **KerasModelMixin._parameter_constraints,
        "decoder_filters": ["array-like"],
        "loss": [StrOptions(set(LOSS_NAMES)), HasMethods("__call__")],
        "threshold": [None, Interval(Real, 0, 1, closed="neither"), "array-like"],
        "min_area": [None, Interval(Real, 0, None, closed="left"), "array-like"],
        "min_component_area": [Interval(Real, 0, None, closed="left"), "array-like"],
        "tta": [None, StrOptions(set(TTA_PRESETS)), list, tuple],
        "tta_merge": [StrOptions(set(MERGE_METHODS))],
        "distribute": [StrOptions({"auto", "mirrored"}), None],
        "fit_in_subprocess": ["boolean"],
    }

    def __init__(
        self,
        backbone="efficientnetb2",
        *,
        encoder_weights=None,
        decoder_filters=(256, 128, 64, 32, 16),
        input_size=None,
        binarize_masks=False,
        loss="bce_jaccard",
        learning_rate=1e-3,
        batch_size=8,
        accumulate_steps=1,
        epochs=50,
        max_empty_share=0.5,
        validation_fraction="auto",
        early_stopping_patience=10,
        reduce_lr_patience=5,
        reduce_lr_factor=0.5,
        bn_momentum="auto",
        threshold=None,
        min_area=None,
        min_component_area=0,
        augment=None,
        tta=None,
        tta_merge="mean",
        mixed_precision="auto",
        distribute="auto",
        callbacks=None,
        fit_in_subprocess=False,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.encoder_weights = encoder_weights
        self.decoder_filters = decoder_filters
        self.input_size = input_size
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
        self.min_area = min_area
        self.min_component_area = min_component_area
        self.augment = augment
        self.tta = tta
        self.tta_merge = tta_merge
        self.mixed_precision = mixed_precision
        self.distribute = distribute
        self.callbacks = callbacks
        self.fit_in_subprocess = fit_in_subprocess
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, validation_data=None):
        """Train the U-Net on images ``X`` and masks ``y``.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images of any real dtype and any size, or their files (read with
            :func:`skunetseg.io.read_image`: 8- or 16-bit, gray or colour, all
            of one kind). Files are read batch by batch while training, on
            worker threads: the images are never all in memory. Without
            ``input_size`` all images must have one size.
        y : array-like of shape (n_images, H, W), (n_images, H, W, 1) or (n_images, H, W, K), \
or list of paths
            Binary masks, multiclass label maps, or multilabel 0/1 masks; or
            mask files (label maps, read with :func:`skunetseg.io.read_mask`),
            which are read once, one at a time, into memory (resized to
            ``input_size`` when it is set): masks are small next to images.
        validation_data : tuple (X_val, y_val), default=None
            Images and masks (arrays or paths) to watch ``val_dice`` on and to
            tune the post-processing left None on; when None,
            ``validation_fraction`` of ``X`` is held out.

        Returns
        -------
        self : UNetSegmenter
        """
        self._check_params()
        images = image_source(X, name="X", size=self._input_size())
        encoding, targets = self._targets(images, y, "X", "y")
        self._postprocessing(encoding)
        train, valid, held_out = self._split(X, y, images, targets, validation_data, encoding)
        resolve_augmenter(self.augment)  # validate it here, before any worker starts
        with restore_on_failure(self):  # a failed or interrupted fit changes nothing
            self._forget_model()
            self._set_target_layout(encoding, images.n_channels)
            if self.fit_in_subprocess:
                weights, self.history_, self.best_epoch_, self.bn_momentum_ = run_in_worker(
                    _train_network, self, train, valid)
                self._weights = weights  # model_ rebuilds the network on first use
            else:
                model, self.history_, self.best_epoch_, self.bn_momentum_ = self._train(
                    train, valid)
                self._model = model
            self._record_input(images.dtype, images.value_range)
            self._record_architecture()
            self._settle_postprocessing(held_out)
        return self

    def _train(self, train, valid):
        """Build, compile and train the network (the Keras half of fit).

        ``train`` and ``valid`` (or None) are pairs (image source, encoded targets)
        at the network's input size. Training batches always come from
        :class:`~skunetseg._batches.AugmentedBatches`, in-memory or not, so that
        arrays and their files give the same batches and the same model;
        validation images in memory go to Keras as arrays.

        Returns
        -------
        model, history, best_epoch, bn_momentum
        """
        augmenter = resolve_augmenter(self.augment)
        seed = self._seed()

        def feed(images, targets, augmenter, shuffle):
            prepare = self._network_input
            if augmenter is None and isinstance(images, ArrayImages):
                # in memory: made network-ready once, then each batch is a row selection
                ready = self._network_input(images.images), pad_to_multiple(targets)
                if not shuffle:
                    return ready  # validation: Keras batches the arrays in order
                images, targets, prepare = ArrayImages(ready[0]), ready[1], _unchanged
            return _keras_side().AugmentedBatches(
                images, targets, augmenter=augmenter, batch_size=self.batch_size,
                prepare_images=prepare, mask_fill=self._encoding.background,
                seed=seed, shuffle=shuffle, max_empty_share=self.max_empty_share)

        training = feed(*train, augmenter, shuffle=True)
        return self._build_and_train(
            training, None if valid is None else feed(*valid, None, shuffle=False),
            n_train=len(training.order),  # an epoch's images
            seed=seed, activation=self._encoding.activation,
            threshold=self._graph_threshold(), distribute=self.distribute,
            monitor="balanced_dice")

    def _set_target_layout(self, encoding, n_channels):
        """Set the fitted attributes that describe the targets and the input channels."""
        self.encoding_ = encoding
        self.target_type_ = encoding.target_type
        self.classes_ = encoding.classes
        self.n_classes_ = len(encoding.classes)
        self.n_channels_in_ = n_channels

    def _check_params(self):
        check_backbone(self.backbone)
        filters = self.decoder_filters
        if (isinstance(filters, str) or len(filters) != 5
                or not all(isinstance(f, Integral) and f > 0 for f in filters)):
            raise ValueError("The 'decoder_filters' parameter must be 5 positive integers, "
                             f"one per decoder block; got {filters!r}.")
        self._check_encoder_weights()
        self._input_size()

    def _input_size(self):
        """``input_size`` as a tuple (height, width) of ints, or None."""
        return check_input_size(self.input_size)

    def _targets(self, images, y, images_name, targets_name, encoding=None):
        """The encoding (learnt from ``y`` unless given) and the encoded targets of ``y``.

        ``y`` holds arrays or mask files, one per image of the source ``images``;
        the targets come at the size the images are taken at (``input_size``).
        """
        size = self._input_size()
        from_files = is_paths(y)
        labels = load_labels(y, name=targets_name, size=size, binarize=self.binarize_masks)
        if encoding is None:
            encoding = fit_target_encoding(labels, name=targets_name,
                                           row_names=mask_row_names(y))
        targets = encode_targets(labels, encoding, name=targets_name)
        if len(images) != len(targets):
            raise ValueError(
                f"{images_name} and {targets_name} must hold the same number of images; got "
                f"{len(images)} and {len(targets)}."
            )
        # files come resized already; arrays are compared at their own size, then resized
        expected = images.image_size if from_files else images.own_size
        if expected is not None and targets.shape[1:3] != expected:
            raise ValueError(
                f"The masks in {targets_name} must have the height and width of the images in "
                f"{images_name}; got {targets.shape[1:3]} and {expected}."
            )
        if not from_files:
            targets = resize_images(targets, size, kind="mask")
        return encoding, targets

    def _split(self, X, y, images, targets, validation_data, encoding):
        """Return ``((images, targets), (valid_images, valid_targets) or None, held_out)``.

        The images are image sources (in-memory ones already at ``input_size``);
        ``held_out`` is the validation images and masks as given (``(X_val, y_val)``,
        rows of ``X`` and ``y``), or None.
        """
        if validation_data is not None:
            check_validation_data(validation_data)
            valid_images = image_source(validation_data[0], name="validation_data[0]",
                                        size=self._input_size(), n_channels=images.n_channels)
            _, valid_targets = self._targets(valid_images, validation_data[1],
                                             "validation_data[0]", "validation_data[1]",
                                             encoding=encoding)
            return ((_in_memory(images), targets), (_in_memory(valid_images), valid_targets),
                    tuple(validation_data))
        train, valid = self._validation_rows(empty_images(targets, encoding.background))
        images = _in_memory(images)
        if valid is None:
            return (images, targets), None, None
        return ((images.subset(train), targets[train]),
                (images.subset(valid), targets[valid]),
                (take_rows(X, valid), take_rows(y, valid)))

    _architecture_params = ("backbone", "encoder_weights", "decoder_filters")

    def _build_model(self, keras_side, encoder_weights, policy=None):
        return keras_side.build_unet(
            backbone=self.backbone, encoder_weights=encoder_weights,
            n_channels=self._network_channels(), n_outputs=self._encoding.n_outputs,
            activation=self._encoding.activation, decoder_filters=self.decoder_filters,
            policy=policy or keras_side.resolve_mixed_precision(self.mixed_precision),
        )

    # -------------------------------------------------------------- predict
    # predict_proba, predict and score: the chunked engine of SegmenterMixin (_base.py)
    def _prediction_source(self, X):
        self._check_predict_params(_PREDICT_PARAMS)
        images = image_source(X, name="X", size=self._input_size(),
                              n_channels=self.n_channels_in_)
        self._check_input_scale(images.dtype, images.value_range)
        return images

    def _chunk_size(self):
        """Images are read and predicted ``8 * batch_size`` at a time (times the TTA views)."""
        return _CHUNK_BATCHES * self.batch_size

    def _progress(self, n_images):
        return _keras_side().progress_bar(n_images, self.verbose) if self.verbose else None

    def _chunk_proba(self, images, rows):
        """Probabilities of the images ``rows`` of the source: network, TTA, own sizes."""
        ready, sizes = images.read(rows)
        if self.tta is None:
            proba = self._predict_views(ready)
        else:
            proba = predict_with_tta(self._predict_views, ready,
                                     resolve_tta(self.tta, *images.image_size),
                                     merge=self.tta_merge, batch_images=self._chunk_size())
        return restore_sizes(proba, sizes)

    def _predict_views(self, images):
        """Network probabilities of ready images, padded for the network and cropped back."""
        height, width = images.shape[1:3]
        proba = _keras_side().predict(self._predict_network(), self._network_input(images),
                                     self.batch_size)
        return proba[:, :height, :width]

    def _postprocessing(self, encoding, settled=(None, None)):
        """The validated :class:`~skunetseg.postprocess.PostProcessing` of the parameters,
        a None ``threshold`` or ``min_area`` taking its ``settled`` value (or 0.5 and 0)."""
        threshold, min_area = self.threshold, self.min_area
        if threshold is None:
            threshold = 0.5 if settled[0] is None else settled[0]
        if min_area is None:
            min_area = 0 if settled[1] is None else settled[1]
        return PostProcessing.from_params(
            encoding.n_outputs, threshold=threshold, min_area=min_area,
            min_component_area=self.min_component_area, activation=encoding.activation)

    @property
    def postprocessing_(self):
        """The post-processing ``predict`` and ``score`` apply: ``threshold``, ``min_area``
        and ``min_component_area`` as they are now, the None ones taking the values fit
        settled on (``thresholds_``, ``min_areas_``)."""
        check_is_fitted(self)
        # a model saved before these attributes existed had its parameters set
        return self._postprocessing(self.encoding_, (self.__dict__.get("thresholds_"),
                                                     self.__dict__.get("min_areas_")))

    def _settle_postprocessing(self, held_out):
        """Set ``thresholds_``, ``min_areas_`` and the validation scores: a ``threshold``
        or ``min_area`` left None is tuned on the held-out images and masks ``held_out``
        (``(X_val, y_val)`` as given, or None: nothing is tuned)."""
        encoding = self.encoding_
        settings = self._postprocessing(encoding)
        threshold, min_area = settings.threshold, settings.min_area
        self.validation_score_before_tuning_ = self.validation_score_ = None
        if held_out is not None and (self.threshold is None or self.min_area is None):
            proba = self.predict_proba(held_out[0])
            truth = read_truth(held_out[1], slice(None), encoding, name="validation_data[1]",
                               binarize=self.binarize_masks)
            if isinstance(truth, list) != isinstance(proba, list):
                truth, proba = list(truth), list(proba)
            tuned_threshold, tuned_min_area, search = tune_unset(
                proba, truth, threshold=self.threshold, min_area=self.min_area,
                activation=encoding.activation)
            threshold = threshold if tuned_threshold is None else tuned_threshold
            min_area = min_area if tuned_min_area is None else tuned_min_area
            settings = self._postprocessing(encoding, (threshold, min_area))
            self.validation_score_before_tuning_ = search.score_before
            self.validation_score_ = float(pair_dice(truth, settings.apply(proba)).mean())
        self.thresholds_ = None if threshold is None else np.asarray(threshold, dtype=float)
        self.min_areas_ = np.asarray(min_area, dtype=float)

    def _graph_threshold(self):
        """The threshold(s) of the in-graph Dice that training watches."""
        threshold = self._postprocessing(self.encoding_).threshold
        return [0.5] * self.encoding_.n_outputs if threshold is None else list(threshold)

    def _network_outputs(self):
        return self.encoding_.n_outputs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.non_deterministic = self.random_state is None
        return tags
