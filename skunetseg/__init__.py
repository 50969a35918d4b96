"""skunetseg: U-Net image segmentation as scikit-learn estimators.

``import skunetseg`` does not load TensorFlow; it loads on the first ``fit``,
``predict`` or :func:`load`, or when :mod:`skunetseg.losses` is imported.
"""

import importlib

from ._ensemble import FoldEnsemble
from ._false_positive import FalsePositiveFilter
from ._persistence import InconsistentVersionWarning, load, save_model
from ._presence import PresenceClassifier
from ._segmenter import UNetSegmenter
from ._targets import TargetEncoding
from ._version import __version__  # noqa: F401  (the package version)
from .metrics import dice_score, dice_scorer, make_dice_scorer, mask_accuracy_score
from .preprocessing import ImagePreprocessor

__all__ = [
    "UNetSegmenter",
    "FoldEnsemble",
    "FalsePositiveFilter",
    "PresenceClassifier",
    "TargetEncoding",
    "ImagePreprocessor",
    "load",
    "save_model",
    "InconsistentVersionWarning",
    "dice_score",
    "dice_scorer",
    "make_dice_scorer",
    "mask_accuracy_score",
    "augment",
    "datasets",
    "io",
    "losses",
    "metrics",
    "plotting",
    "postprocess",
    "rle",
    "tta",
]

_LAZY_SUBMODULES = {"augment", "datasets", "io", "losses", "plotting", "postprocess", "rle", "tta"}


def __getattr__(name):
    # skunetseg.losses imports TensorFlow: load it only when it is asked for
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
