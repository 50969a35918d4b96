"""Per-encoder input normalisation, as a scikit-learn transformer (NumPy only)."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._backbones import PREPROCESSING_MODES, check_backbone
from ._images import check_images

__all__ = ["ImagePreprocessor"]

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)


class ImagePreprocessor(TransformerMixin, BaseEstimator):
    """Normalise images the way an ImageNet-trained encoder expects.

    The NumPy twin of ``segmentation_models.get_preprocessing(backbone)``: it
    applies the same arithmetic without loading TensorFlow, so it can be the
    first step of a :class:`~sklearn.pipeline.Pipeline` ending in
    :class:`~skunetseg.UNetSegmenter`. It matters when the encoder starts from
    pretrained weights; a model trained from scratch learns any scale.

    Parameters
    ----------
    backbone : str, default="efficientnetb2"
        The encoder whose normalisation to apply: ``"torch"`` style (scale to
        [0, 1], subtract the ImageNet mean, divide by its standard deviation) for
        EfficientNets and SE-ResNets, ``"caffe"`` style (RGB to BGR, subtract the
        ImageNet mean in 0-255) for VGG, ``"tf"`` style (scale to [-1, 1]) for
        MobileNets and Inceptions, and none for ResNets and ResNeXts.

    Attributes
    ----------
    mode_ : str or None
        The normalisation applied.
    n_channels_in_ : int
        Channels of the images seen in ``fit``.

    Notes
    -----
    Input images are taken on the 0-255 scale: ``uint8`` as they are, ``uint16``
    divided by 257, floats as they are. Gray images are repeated to three
    channels for the modes that normalise each colour channel. The output is
    float32 of shape ``(n, H, W, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg import ImagePreprocessor
    >>> X = np.full((1, 2, 2, 3), 255, dtype=np.uint8)
    >>> ImagePreprocessor(backbone="mobilenetv2").fit_transform(X).max()
    np.float32(1.0)
    """

    def __init__(self, backbone="efficientnetb2"):
        self.backbone = backbone

    def fit(self, X, y=None):
        """Check the backbone and remember the channel count of ``X``."""
        check_backbone(self.backbone)
        X = np.asarray(X)
        self._check(X)
        self.mode_ = PREPROCESSING_MODES[self.backbone]
        self.n_channels_in_ = 1 if X.ndim == 3 else X.shape[-1]
        return self

    @staticmethod
    def _check(X):
        if X.ndim not in (3, 4):
            raise ValueError(
                "X must have shape (n_images, height, width) or "
                f"(n_images, height, width, channels); got shape {X.shape}."
            )

    def transform(self, X):
        """Return the normalised images as float32 ``(n, H, W, C)``."""
        check_is_fitted(self)
        X = np.asarray(X)
        self._check(X)
        scale = np.float32(257 if X.dtype == np.uint16 else 1)
        images = check_images(X.astype(np.float32) / scale)  # floats: check_images keeps 0-255
        if self.mode_ is None:
            return images
        if self.mode_ == "tf":
            return images / np.float32(127.5) - np.float32(1)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if images.shape[-1] != 3:
            raise ValueError(
                f"ImagePreprocessor for {self.backbone!r} needs 1 or 3 channels; "
                f"got {images.shape[-1]}."
            )
        if self.mode_ == "torch":
            return (images / np.float32(255) - _IMAGENET_MEAN) / _IMAGENET_STD
        return images[..., ::-1] - _CAFFE_BGR_MEAN  # caffe

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
