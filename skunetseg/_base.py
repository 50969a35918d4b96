"""The one predict engine of the skunetseg segmenters: chunked predict_proba, predict, score.

Every segmenter of the package (:class:`~skunetseg.UNetSegmenter`,
:class:`~skunetseg.FoldEnsemble`, :class:`~skunetseg.FalsePositiveFilter`)
gets ``predict_proba``, ``predict`` and ``score`` from :class:`SegmenterMixin`
and supplies only how to predict the probabilities of one chunk of images.
The images (an array, or a list of image files of any sizes) are taken a chunk
at a time, never all at once; the probabilities of a chunk are one
``(m, H, W, K)`` array, or a list of ``(H_i, W_i, K)`` maps when the images
differ in size. Post-processing and decoding go through the fitted value
objects ``postprocessing_`` (:class:`skunetseg.postprocess.PostProcessing`) and
``encoding_`` (:class:`skunetseg.TargetEncoding`), the public contract that a
wrapped segmenter meets too (docs/contract.md).

The helpers below (:func:`as_rows`, :func:`take_rows`, :func:`read_truth`,
:func:`pair_dice`, :func:`presence`) are shared with the cross-fitting engine
(:mod:`skunetseg._crossfit`).
"""

import contextlib
import copy
import functools
import warnings

import numpy as np
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import check_is_fitted

from ._checks import check_array_like, is_array_like
from ._images import DecodedImages, check_images, is_paths, reject_single_path
from .io import binarize_mask, check_paths, read_mask
from .metrics import dice_per_pair

__all__ = ["SegmenterMixin", "assemble", "as_rows", "as_mask_rows", "take_rows", "read_truth",
           "pair_dice", "presence", "row_chunks", "binarizes_masks", "restore_on_failure",
           "restores_on_failure", "check_validation_data", "SharedChunk"]

#: Images per chunk of an estimator that does not say (meta-estimators ask their model).
DEFAULT_CHUNK = 64


_TABLE = "builds a 2-D table (n_samples, n_features), which the estimators refuse for its shape"
_TWIN = _TABLE + "; the property is tested on images by tests/test_image_checks.py::{}"
_NO_FEATURES = (_TABLE + "; n_features_in_ is a table's column count, and an image stack has no "
                "feature axis")
_WORDING = ("expects the wording of a tabular estimator ({}); the estimator's ValueError "
            "speaks of images instead")
_FIT_TRANSFORM = ("calls fit_transform: FalsePositiveFilter.transform gives its probability "
                  "maps for use in a pipeline, but the filter is a segmenter, not a transformer "
                  "with fit_transform")
_SPARSE = _TABLE + " (sparse matrices are 2-D tables)"

#: scikit-learn's estimator checks that cannot run on image input, each with its reason:
#: what every estimator's ``_expected_failed_checks`` returns (tests/test_sklearn_compat.py).
#: The checks of properties that hold for images name their image-input twin.
IMAGE_INPUT_FAILED_CHECKS = {
    # properties of every estimator, tested on images instead
    "check_estimators_fit_returns_self": _TWIN.format(
        "test_fit_returns_self_on_read_only_memmaps"),
    "check_readonly_memmap_input": _TWIN.format("test_fit_returns_self_on_read_only_memmaps"),
    "check_fit_check_is_fitted": _TWIN.format("test_check_is_fitted_fails_before_fit_only"),
    "check_estimators_overwrite_params": _TWIN.format(
        "test_fit_leaves_the_parameters_as_they_were"),
    "check_dont_overwrite_parameters": _TWIN.format(
        "test_fit_sets_only_trailing_underscore_attributes"),
    "check_dict_unchanged": _TWIN.format("test_predicting_leaves_the_estimator_unchanged"),
    "check_methods_subset_invariance": _TWIN.format(
        "test_predictions_do_not_depend_on_the_batch"),
    "check_methods_sample_order_invariance": _TWIN.format(
        "test_predictions_do_not_depend_on_the_order"),
    "check_estimators_pickle": _TWIN.format("test_pickle_round_trip_predicts_the_same"),
    "check_fit_idempotent": _TWIN.format("test_refit_in_a_pipeline_predicts_the_same"),
    "check_pipeline_consistency": _TWIN.format("test_refit_in_a_pipeline_predicts_the_same"),
    # tabular properties
    "check_n_features_in": _NO_FEATURES,
    "check_n_features_in_after_fitting": _NO_FEATURES,
    "check_fit_score_takes_y": (_TABLE + "; fit(X, y) and score(X, y) do take y, as the "
                                "signatures show"),
    "check_positive_only_tag_during_fit": (_TABLE + " of negative values, for the "
                                           "positive_only tag, which images do not set"),
    "check_estimators_dtypes": (_TABLE + " of float32, int32 and int64; image dtypes are "
                                "tested by tests/test_targets_and_images.py"),
    "check_estimators_nan_inf": (_TABLE + " holding NaN and inf; images holding them are "
                                 "refused by name in tests/test_input_errors.py"),
    "check_f_contiguous_array_estimator": _TABLE + " in Fortran order",
    "check_fit2d_predict1d": _TABLE + ", before the 1-D prediction that the check is about",
    "check_requires_y_none": (_TABLE + ", to compare the error of fit(X, None) with a "
                              "tabular estimator's"),
    "check_supervised_y_2d": (_TABLE + " with y as a column and expects a "
                              "DataConversionWarning; masks are 2-D per image"),
    # classifiers (PresenceClassifier): tables of labelled points
    "check_classifier_data_not_an_array": (_TABLE + " given as a list; a list X is image "
                                           "files here"),
    "check_classifiers_one_label": _TABLE + " with a single label",
    "check_classifiers_classes": (_TABLE + " of string and integer classes; labels of any "
                                  "values are tested on images by tests/test_presence.py"),
    "check_classifiers_train": (_TABLE + " of blobs and expects near-perfect accuracy of "
                                "the default network after the default training"),
    "check_classifiers_regression_target": _TABLE + " with a continuous y",
    "check_classifiers_multilabel_representation_invariance": _TABLE + " with multilabel y",
    "check_classifiers_multilabel_output_format_predict": _TABLE + " with multilabel y",
    "check_classifiers_multilabel_output_format_predict_proba": (_TABLE + " with multilabel "
                                                                 "y"),
    "check_classifiers_multilabel_output_format_decision_function": (_TABLE + " with "
                                                                     "multilabel y"),
    # transformers (FalsePositiveFilter.transform)
    "check_transformer_general": _FIT_TRANSFORM,
    "check_transformer_data_not_an_array": _FIT_TRANSFORM,
    "check_transformer_preserve_dtypes": _FIT_TRANSFORM,
    # input that is not images at all
    "check_estimator_sparse_tag": _SPARSE,
    "check_estimator_sparse_array": _SPARSE,
    "check_estimator_sparse_matrix": _SPARSE,
    "check_complex_data": ("a complex X is refused with a TypeError naming its dtype (the "
                           "package's rule for a wrong dtype); the check wants a ValueError"),
    "check_dtype_object": ("an object X is refused with a TypeError naming its dtype (the "
                           "package's rule for a wrong dtype); the check wants it converted"),
    "check_estimators_empty_data_messages": _WORDING.format("'0 feature(s)'"),
    "check_fit2d_1sample": _WORDING.format("'1 sample'"),
    "check_fit2d_1feature": _WORDING.format("'1 feature(s)'"),
}


def check_params_now(estimator, names):
    """Validate the parameters ``names`` as they are now (``set_params`` after fit skips
    fit's check), against the estimator's ``_parameter_constraints``."""
    from sklearn.utils._param_validation import validate_parameter_constraints

    validate_parameter_constraints(
        {name: estimator._parameter_constraints[name] for name in names},
        {name: getattr(estimator, name) for name in names},
        caller_name=type(estimator).__name__,
    )


def record_fit_params(estimator, names):
    """Remember the values the parameters ``names`` had at fit (see :func:`changed_after_fit`)."""
    estimator._params_at_fit = {name: copy.deepcopy(getattr(estimator, name)) for name in names}


def _same(a, b):
    if a is None or b is None:
        return a is b
    try:
        return bool(np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))
    except (TypeError, ValueError):
        return a == b


def changed_after_fit(estimator, names, *, tuning, tuned):
    """Validate the predict-time parameters ``names`` and say which changed since fit.

    A meta-estimator's ``predict`` applies its parameters as they are now, as
    :class:`~skunetseg.UNetSegmenter` does, except those that ``fit`` tuned:

    * ``names`` (and the boolean ``tuning``) are validated as they are now;
    * ``tuning`` changed after fit raises a ValueError (tuning happens in fit);
    * with ``tuning`` on, a changed parameter of ``tuned`` is not applied, and
      a warning says that the tuned value wins.

    Returns the names that changed since fit (none for an estimator fitted
    before fit recorded them).
    """
    check_params_now(estimator, (*names, tuning))
    at_fit = estimator.__dict__.get("_params_at_fit") or {}
    changed = [name for name in (*names, tuning)
               if name in at_fit and not _same(at_fit[name], getattr(estimator, name))]
    name = type(estimator).__name__
    if tuning in changed:
        raise ValueError(
            f"The parameter {tuning!r} changed from {at_fit[tuning]!r} to "
            f"{getattr(estimator, tuning)!r} after fit; it acts in fit. Refit the {name}, or "
            f"set {tuning}={at_fit[tuning]!r} back.")
    ignored = [param for param in changed if getattr(estimator, tuning) and param in tuned]
    if ignored:
        warnings.warn(
            f"{name}: {', '.join(f'{param}={getattr(estimator, param)!r}' for param in ignored)} "
            f"set after fit is not applied: {tuning}=True, and the values tuned in fit win. "
            f"Set {tuning}=False and refit to choose them yourself.", UserWarning, stacklevel=4)
    return changed


@contextlib.contextmanager
def restore_on_failure(estimator):
    """Run (part of) a fit; if it raises, or is interrupted, put ``estimator`` back as it was.

    A fit that fails midway leaves neither a half-set fitted state (``folds_``
    without ``estimators_``, ``classes_`` without a network) nor a
    half-overwritten earlier fit: an unfitted estimator stays unfitted, a
    fitted one keeps its earlier attributes. Fits replace their attributes,
    never change them in place, so a shallow copy of ``__dict__`` suffices.
    """
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def restores_on_failure(fit):
    """Decorator of a ``fit`` method: the whole fit under :func:`restore_on_failure`."""
    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        with restore_on_failure(self):
            return fit(self, *args, **kwargs)

    return wrapper


def row_chunks(n, step):
    """Slices of ``step`` rows covering ``range(n)``."""
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def assemble(parts, n):
    """One result from the ``(rows, result)`` of every chunk, in order.

    Arrays of one trailing shape fill one preallocated array; otherwise (a
    chunk gave a list, or chunks differ in shape) a list with one entry per
    image, stacked into an array after all when every entry has one shape.
    """
    result, entries = None, None
    for rows, part in parts:
        if entries is None and isinstance(part, np.ndarray) and (
                result is None or result.shape[1:] == part.shape[1:]):
            if result is None:
                result = np.empty((n, *part.shape[1:]), dtype=part.dtype)
            result[rows] = part
            continue
        if entries is None:
            entries = [] if result is None else list(result[:rows.start])
            result = None
        entries.extend(part)
    if entries is None:
        return result
    if len({(entry.shape, entry.dtype) for entry in entries}) == 1:
        return np.stack(entries)
    return entries


def as_rows(X, *, name="X"):
    """``X`` checked as images, without copying: a list of paths or an array.

    Arrays are checked (dtype, dimensions) on their first image only; each
    chunk is checked in full by the estimator that predicts it. Files decoded
    by a meta-estimator (:class:`~skunetseg._images.DecodedImages`) pass as
    they are.
    """
    if isinstance(X, DecodedImages):
        return X
    reject_single_path(X, name=name)
    if is_paths(X):
        return check_paths(X, name=name)
    if not is_array_like(X):
        check_images(X, name=name)  # raises its TypeError
    X = np.asarray(X)
    check_images(X[:1] if X.ndim in (3, 4) else X, name=name)
    return X


def as_mask_rows(y, *, name="y"):
    """``y`` as a list of mask files or an array, without reading or copying it."""
    reject_single_path(y, name=name, kind="mask")
    if is_paths(y):
        return check_paths(y, name=name)
    check_array_like(y, name=name, what="an array of masks or a list of mask files")
    return np.asarray(y)


def check_validation_data(validation_data):
    """``validation_data`` as given, once it is a pair ``(X_val, y_val)``; else a TypeError."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data must be a tuple (X_val, y_val); got "
                        f"{type(validation_data).__name__}"
                        + (f" of {len(validation_data)}" if isinstance(validation_data,
                                                                      (tuple, list)) else "")
                        + ".")
    return validation_data


def take_rows(X, rows):
    """The rows ``rows`` (a slice or indices) of an array, a list of paths or decoded files."""
    if isinstance(rows, slice) or isinstance(X, DecodedImages):
        return X[rows]
    return _safe_indexing(X, np.asarray(rows))


class SharedChunk:
    """One chunk of images that several models predict: its files decoded at most once.

    A meta-estimator wraps each chunk's rows (an array, a list of files, or
    files a wrapping meta-estimator decoded already) and gives each of its
    models ``chunk.for_model(model)``: the files decoded once, for the models
    that read :class:`~skunetseg._images.DecodedImages` (those with the
    ``_takes_decoded_images`` flag: the package's estimators), and the files
    themselves for any other model (a user's segmenter under the contract).
    ``FalsePositiveFilter(FoldEnsemble(UNetSegmenter))`` thus decodes each file
    once per predict call, not once per fold model and once more for the
    presence classifier.
    """

    def __init__(self, rows):
        self.rows = rows
        self._decoded = rows if isinstance(rows, DecodedImages) else None

    def for_model(self, model):
        """The chunk as ``model.predict_proba`` should get it."""
        if not getattr(model, "_takes_decoded_images", False):
            return self.rows.paths if isinstance(self.rows, DecodedImages) else self.rows
        if self._decoded is None and is_paths(self.rows):
            self._decoded = DecodedImages.read(self.rows)
        return self.rows if self._decoded is None else self._decoded


def binarizes_masks(estimator):
    """Whether ``estimator`` reads masks binarised: its ``binarize_masks`` parameter, or
    that of the model it wraps (``estimator`` of a FoldEnsemble or a FrozenEstimator,
    ``segmenter`` of a FalsePositiveFilter); False when none has the parameter."""
    while estimator is not None:
        if hasattr(estimator, "binarize_masks"):
            return bool(estimator.binarize_masks)
        estimator = getattr(estimator, "estimator", None) or getattr(estimator, "segmenter",
                                                                      None)
    return False


def masks_of(y, rows, *, name="y", binarize=False):
    """The masks of ``rows`` of ``y`` (an array or a list of mask files): an array or a list.

    With ``binarize``, every mask is binarised as :func:`skunetseg.io.binarize_mask` does.
    """
    part = take_rows(y, rows)
    if is_paths(part):
        return [read_mask(path, binarize=binarize) for path in check_paths(part, name=name)]
    return binarize_mask(part, name=name) if binarize else part


def read_truth(y, rows, encoding, *, name="y", binarize=False):
    """Bool ``(m, H, W, K)`` encoded truth of ``rows`` of ``y``, or a list per image for files.

    Mask files are read one by one at their own size (a list, which may hold
    several sizes); arrays are encoded at once. ``binarize`` as in :func:`masks_of`.
    """
    masks = masks_of(y, rows, name=name, binarize=binarize)
    if isinstance(masks, list):
        return [encoding.encode(np.asarray(mask)[np.newaxis], name=name)[0] > 0.5
                for mask in masks]
    return encoding.encode(masks, name=name) > 0.5


def _pairs(truth, pred):
    if isinstance(truth, list) or isinstance(pred, list):
        return list(truth), list(pred)
    return None


def pair_dice(truth, masks, *, name="y"):
    """Dice ``(n, K)`` of every (image, class) pair; arrays or per-image lists.

    Raises a ValueError naming ``name`` when a mask is not of its image's size.
    """
    pairs = _pairs(truth, masks)
    if pairs is None:
        if truth.shape[:3] != masks.shape[:3]:
            raise ValueError(f"{name} must hold one mask per image of X, of the images' size; "
                             f"got {truth.shape[:3]} for images {masks.shape[:3]}.")
        return dice_per_pair(truth, masks)
    truths, preds = pairs
    if len(truths) != len(preds):
        raise ValueError(f"{name} must hold one mask per image of X; got {len(truths)} masks "
                         f"for {len(preds)} images.")
    scores = []
    for index, (true, pred) in enumerate(zip(truths, preds, strict=True)):
        if true.shape[:2] != pred.shape[:2]:
            raise ValueError(f"{name} must hold one mask per image of X, of the image's size; "
                             f"mask {index} is {true.shape[:2]} for an image of "
                             f"{pred.shape[:2]}.")
        scores.append(dice_per_pair(true[np.newaxis], pred[np.newaxis]))
    return np.concatenate(scores)


def presence(masks):
    """Whether each (image, channel) mask is non-empty: bool ``(n, K)``; arrays or lists."""
    if isinstance(masks, list):
        return np.array([mask.any(axis=(0, 1)) for mask in masks], dtype=bool).reshape(
            len(masks), -1)
    return masks.any(axis=(1, 2))


class SegmenterMixin:
    """``predict_proba``, ``predict`` and ``score`` of a skunetseg segmenter, chunk by chunk.

    The estimator provides:

    * ``_chunk_proba(source, rows)``: the probabilities of the images ``rows``
      (a slice) of ``source``, an ``(m, H, W, K)`` array or a list of
      ``(H_i, W_i, K)`` maps;
    * optionally ``_prediction_source(X)``: ``X`` checked and made indexable
      by rows (default: :func:`as_rows`, the array or the list of paths);
    * optionally ``_chunk_size()``: images per chunk (default 64);
    * the fitted ``encoding_`` and ``postprocessing_`` of the contract.
    """

    #: ``predict_proba`` reads :class:`~skunetseg._images.DecodedImages` (see SharedChunk).
    _takes_decoded_images = True

    @property
    def _encoding(self):
        # the older private name; the contract's name is encoding_
        return self.encoding_

    def _prediction_source(self, X):
        return as_rows(X, name="X")

    def _expected_failed_checks(self):
        """scikit-learn's checks that cannot apply to image input, with the reason."""
        return IMAGE_INPUT_FAILED_CHECKS

    def _chunk_size(self):
        return DEFAULT_CHUNK

    def _progress(self, n_images):
        """A progress bar with ``update(done)``, or None."""
        return None

    def _proba_chunks(self, X):
        """``(n_images, iterator of (rows, probabilities) of each chunk of X, in order)``."""
        check_is_fitted(self)
        source = self._prediction_source(X)
        n_images = len(source)

        def chunks():
            progress = self._progress(n_images)
            for rows in row_chunks(n_images, self._chunk_size()):
                proba = self._chunk_proba(source, rows)
                if progress is not None:
                    progress.update(rows.stop)
                yield rows, proba

        return n_images, chunks()

    def _decode(self, proba):
        """Post-processed masks in the format of the fitted ``y``; a list for a list."""
        return self.encoding_.decode(self.postprocessing_.apply(proba))

    def predict_proba(self, X):
        """Class probabilities of every pixel.

        Images are read (files), resized to ``input_size`` (when the estimator
        has one) and predicted a chunk at a time, never all at once.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images, or image files, like those given to ``fit``.

        Returns
        -------
        proba : ndarray of shape (n_images, H, W, K), dtype float32, or list of ndarray
            K is 1 for binary targets, else the number of classes. With
            ``input_size`` set and image files of different sizes, a list of
            ``(H_i, W_i, K)`` arrays, one per image at the image's own size.
        """
        n_images, chunks = self._proba_chunks(X)
        return assemble(chunks, n_images)

    def predict(self, X):
        """Predicted masks, post-processed, in the format of the ``y`` given to ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images, or image files, like those given to ``fit``.

        Returns
        -------
        masks : ndarray or list of ndarray
            Binary masks with the two values of ``classes_``, multiclass label
            maps, or multilabel 0/1 masks, shaped like the fitted ``y``; with
            ``input_size`` and image files of different sizes, a list of masks,
            one per image at its own size. Post-processing (``min_area``, ...)
            works at each image's own size.
        """
        n_images, chunks = self._proba_chunks(X)
        return assemble(((rows, self._decode(proba)) for rows, proba in chunks), n_images)

    def score(self, X, y):
        """Mean Kaggle Dice of the post-processed predictions of ``X`` against ``y``.

        Every (image, class) pair counts once, a pair with both masks empty as 1.
        Binary targets score the positive class; multiclass label maps score
        every label, background included. Images and masks are read and scored
        chunk by chunk.

        Parameters
        ----------
        X : array-like of shape (n_images, H, W) or (n_images, H, W, C), or list of paths
            Images, or image files.
        y : array-like or list of paths
            Masks in the format given to ``fit``, or mask files, each of its
            image's size.

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        masks = as_mask_rows(y)
        n_images, chunks = self._proba_chunks(X)
        if len(masks) != n_images:
            raise ValueError(f"X and y must hold the same number of images; got {n_images} "
                             f"and {len(masks)}.")
        binarize = binarizes_masks(self)
        scores = [pair_dice(read_truth(masks, rows, self.encoding_, binarize=binarize),
                            self.postprocessing_.apply(proba))
                  for rows, proba in chunks]
        return float(np.mean(np.concatenate(scores)))
