"""Export a fitted segmenter for serving: the network wrapped in what ``predict_proba`` does.

:class:`ExportMixin` gives :class:`~skunetseg.UNetSegmenter` and
:class:`~skunetseg.FoldEnsemble` an ``export(path, format=...)`` method. The
exported graph takes a float32 batch ``(n, H, W, C)`` holding the values a user
passes to ``predict_proba`` and returns the probabilities ``(n, H, W, K)``; in
between it does what ``predict_proba`` (without TTA) does around the network:

1. scaling: divided by 255 (65535) when the values are those of ``uint8``
   (``uint16``) images, as :func:`skunetseg._images.check_images` does;
2. resizing to ``input_size`` when it is set: area interpolation when shrinking
   both sides, bilinear otherwise, as :func:`skunetseg.io._resize` does with cv2;
3. repeating a gray channel three times for a 3-channel (pretrained) encoder;
4. reflect padding to a multiple of 32, the network, cropping back;
5. resizing the probabilities back to the image size (bilinear);
6. for a fold ensemble, the mean of the fold networks' probabilities.

TensorFlow is imported only when ``export`` is called.
"""

import os
import shutil
import tempfile

import numpy as np
from sklearn.utils.validation import check_is_fitted

from . import _atomic
from ._images import SIZE_MULTIPLE

__all__ = ["EXPORT_FORMATS", "ExportMixin", "export_estimator"]

#: The formats ``export`` writes, named as ``keras.Model.export`` names them.
EXPORT_FORMATS = ("tf_saved_model", "onnx")


def _divisor(input_dtype):
    """The number ``predict_proba`` divides images of ``input_dtype`` by, or None."""
    try:
        dtype = np.dtype(input_dtype)
    except TypeError as error:
        raise ValueError(f"input_dtype must be a NumPy dtype such as 'uint8', 'uint16' or "
                         f"'float32'; got {input_dtype!r}.") from error
    if dtype in (np.uint8, np.uint16):
        return float(np.iinfo(dtype).max)
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b") or np.issubdtype(
            dtype, np.complexfloating):
        raise ValueError(f"input_dtype must be a real numeric dtype; got {dtype}.")
    return None


def _segmenters(estimator):
    """The fitted one-network segmenters (:class:`UNetSegmenter`) whose networks the
    export averages: the estimator itself, or the fold models of an ensemble.

    A one-network segmenter is an :class:`ExportMixin` without fold models of its
    own; asking that, rather than naming the class, keeps this module free of an
    import of ``_segmenter``, which imports it.
    """
    members = getattr(estimator, "estimators_", None)
    members = [estimator] if members is None else list(members)
    for member in members:
        if not isinstance(member, ExportMixin) or hasattr(member, "estimators_"):
            raise TypeError(
                f"export needs fold models that are UNetSegmenter; this "
                f"{type(estimator).__name__} holds a {type(member).__name__}, whose "
                "prediction (a false-positive filter, ...) is not one network. Export its "
                "segmenter instead."
            )
    first = members[0]
    layout = (first.n_channels_in_, first._network_channels(), first._input_size())
    for member in members[1:]:
        if (member.n_channels_in_, member._network_channels(), member._input_size()) != layout:
            raise ValueError("export needs fold models with one input layout (channels and "
                             "input_size); these differ.")
    return members


def _input_dtype(estimator, members, input_dtype):
    if input_dtype is not None:
        return input_dtype
    for source in (estimator, members[0]):
        fitted = getattr(source, "input_dtype_", None)
        if fitted is not None:
            return fitted
    raise ValueError(
        "export needs input_dtype: the dtype of the images the served model will get values "
        "of (their scaling depends on it), e.g. input_dtype='uint8' for 0-255 images, "
        "'uint16' for 0-65535, 'float32' for values used as they are."
    )


def _serving_model(networks, *, divisor, repeat_channels, input_size):
    """A Keras model doing ``predict_proba``'s plumbing around the mean of ``networks``."""
    from ._backend import keras, tf

    def area_weights(n_in, n_out):
        """``(n_out, n_in)`` weights of area interpolation: each output pixel averages the
        input pixels its footprint covers, in proportion to the covered part (cv2's
        INTER_AREA when shrinking)."""
        scale = tf.cast(n_in, tf.float32) / tf.cast(n_out, tf.float32)
        starts = tf.cast(tf.range(n_out), tf.float32)[:, None] * scale
        pixels = tf.cast(tf.range(n_in), tf.float32)[None, :]
        overlap = (tf.minimum(starts + scale, pixels + 1.0) - tf.maximum(starts, pixels))
        return tf.maximum(overlap, 0.0) / scale

    def area_resize(images, size):
        # two matrix products with ops every runtime has (tf2onnx cannot convert
        # tf.image.resize's "area" method); tf.image.resize(method="area") also
        # differs from cv2 by up to 1e-3 on non-integer ratios
        rows = area_weights(tf.shape(images)[1], size[0])
        columns = area_weights(tf.shape(images)[2], size[1])
        images = tf.einsum("oh,nhwc->nowc", rows, images)
        return tf.einsum("pw,nowc->nopc", columns, images)

    def resize_like_cv2(images, size, shrink_with_area):
        """Resize choosing the method as skunetseg.io._resize does with cv2."""
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        if not shrink_with_area:
            return tf.image.resize(images, size, method="bilinear")
        shrinks = tf.logical_and(height >= size[0], width >= size[1])
        return tf.cond(shrinks, lambda: area_resize(images, size),
                       lambda: tf.image.resize(images, size, method="bilinear"))

    class ServingModel(keras.Model):
        def __init__(self, networks, **kwargs):
            super().__init__(**kwargs)
            self.networks = networks

        def call(self, images):
            images = tf.cast(images, tf.float32)
            if divisor is not None:
                images = images / tf.constant(divisor, tf.float32)
            height, width = tf.shape(images)[1], tf.shape(images)[2]
            if input_size is not None:
                images = resize_like_cv2(images, input_size, shrink_with_area=True)
            if repeat_channels:
                images = tf.repeat(images, 3, axis=-1)
            inner_height, inner_width = tf.shape(images)[1], tf.shape(images)[2]
            # (m - h % m) % m, not -h % m: tf2onnx turns a modulo of a negative number
            # into ONNX's truncated one, which gives a negative padding
            pad_height = (SIZE_MULTIPLE - inner_height % SIZE_MULTIPLE) % SIZE_MULTIPLE
            pad_width = (SIZE_MULTIPLE - inner_width % SIZE_MULTIPLE) % SIZE_MULTIPLE
            padded = tf.pad(images, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]],
                            mode="REFLECT")
            proba = None
            for network in self.networks:
                out = tf.cast(network(padded, training=False), tf.float32)
                proba = out if proba is None else proba + out
            if len(self.networks) > 1:
                proba = proba / tf.constant(len(self.networks), tf.float32)
            proba = proba[:, :inner_height, :inner_width]
            if input_size is not None:
                proba = resize_like_cv2(proba, tf.stack([height, width]),
                                        shrink_with_area=False)
            return proba

    return ServingModel(networks, name="skunetseg_serving")


def export_estimator(estimator, path, *, format="tf_saved_model", input_dtype=None,
                     overwrite=False, verbose=False):
    """Write ``estimator``'s network and input plumbing to ``path``; see ``ExportMixin.export``."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}; got {format!r}.")
    check_is_fitted(estimator)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
        _check_replaceable(path, format)
    members = _segmenters(estimator)
    divisor = _divisor(_input_dtype(estimator, members, input_dtype))
    if format == "onnx":
        _check_onnx_converter()
    first = members[0]
    from ._backend import tf

    n_channels = first.n_channels_in_
    model = _serving_model([member.model_ for member in members], divisor=divisor,
                           repeat_channels=first._network_channels() != n_channels,
                           input_size=first._input_size())
    model(np.zeros((1, SIZE_MULTIPLE, SIZE_MULTIPLE, n_channels), np.float32))  # builds it
    signature = [tf.TensorSpec((None, None, None, n_channels), tf.float32, name="images")]
    staging = tempfile.mkdtemp(prefix=".skunetseg-export-", dir=os.path.dirname(path))
    try:
        target = os.path.join(staging, "export")
        model.export(target, format=format, input_signature=signature, verbose=verbose)
        if format == "tf_saved_model":  # swapped as save swaps: the old one kept until then
            _atomic.replace_folder(target, path, overwrite=overwrite,
                                   check=lambda old: _check_replaceable(old, format))
        else:  # one file: one rename replaces it
            _atomic.publish(target, path, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _check_replaceable(path, format):
    """Raise FileExistsError unless ``path`` holds an export of ``format`` that
    ``overwrite=True`` may replace: a SavedModel folder, or an ``.onnx`` file."""
    if format == "tf_saved_model":
        fine = (os.path.isdir(path) and not os.path.islink(path)
                and os.path.isfile(os.path.join(path, "saved_model.pb")))
        what = "a TensorFlow SavedModel folder (with saved_model.pb)"
    else:
        fine = os.path.isfile(path) and not os.path.islink(path)
        what = "a file"
    if not fine:
        raise FileExistsError(f"{path!r} is not {what}; overwrite=True replaces only an earlier "
                              "export of this format. Remove it yourself or choose another path.")


def _check_onnx_converter():
    import importlib.util

    missing = [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"format='onnx' needs {' and '.join(missing)}: "
                          "pip install 'skunetseg[onnx]'.")


class ExportMixin:
    """The ``export`` method of the segmenters whose prediction is one graph."""

    def export(self, path, format="tf_saved_model", *, input_dtype=None, overwrite=False,
               verbose=False):
        """Write the network with ``predict_proba``'s input plumbing, for serving.

        The exported model's one input is a float32 batch ``(n, H, W, C)`` holding
        the values you would pass to ``predict_proba`` (images of one size, at
        least 17 pixels on each side unless ``input_size`` is set); its one
        output the probabilities ``(n, H, W, K)``, equal to ``predict_proba``'s
        without TTA to within about 1e-5 (see the "Export and serving" page).
        Scaling, resizing to ``input_size`` and back, padding to a multiple of 32
        and, for a :class:`FoldEnsemble`, the mean of the fold networks are in
        the graph; TTA, thresholds, post-processing and any false-positive
        filter stay in Python.

        Parameters
        ----------
        path : str or os.PathLike
            The SavedModel folder (``"tf_saved_model"``: load it with
            ``tf.saved_model.load(path).serve(images)`` or TF Serving) or the
            ``.onnx`` file (``"onnx"``: run it with onnxruntime; needs the
            ``onnx`` extra). It must not exist unless ``overwrite=True``.
        format : {"tf_saved_model", "onnx"}, default="tf_saved_model"
        input_dtype : dtype, default=None
            The dtype of the images whose values the float32 input carries:
            ``"uint8"`` (values 0-255, divided by 255 in the graph, as
            ``predict_proba`` does with uint8 arrays), ``"uint16"`` (0-65535) or
            a float dtype (used as they are). None takes the fitted
            ``input_dtype_`` when the estimator has one, else raises.
        overwrite : bool, default=False
            Replace an existing ``path``; the export is written aside first, so
            a failed export leaves it as it was.
        verbose : bool, default=False
            Let Keras print what it exports.

        Returns
        -------
        path : str
            The absolute path written.
        """
        return export_estimator(self, path, format=format, input_dtype=input_dtype,
                                overwrite=overwrite, verbose=verbose)
