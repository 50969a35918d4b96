"""Bad input: a clear ValueError/TypeError naming the argument, never a TensorFlow trace."""

import traceback

import numpy as np
import pytest
from conftest import SMALL

from skunetseg import UNetSegmenter

X = np.zeros((4, 32, 32), dtype=np.uint8)
Y = np.zeros((4, 32, 32), dtype=np.uint8)


def raises_cleanly(error, match, call, *args, **kwargs):
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    trace = "".join(traceback.format_exception(info.value))
    # no frame of TensorFlow or Keras (skunetseg's own _keras_estimator.py may appear)
    assert "tensorflow" not in trace and "/keras/" not in trace and "keras.src" not in trace
    return info.value


@pytest.mark.parametrize("X_bad, y_bad, error, match", [
    (X[:3], Y, ValueError, "X and y must hold the same number of images; got 3 and 4"),
    (X, Y[:, :16], ValueError, r"height and width .* got \(16, 32\) and \(32, 32\)"),
    (np.where(np.eye(32, dtype=bool), np.nan, 0.0)[None].repeat(4, 0), Y, ValueError,
     "X contains NaN or infinity"),
    (np.full((4, 32, 32), np.inf), Y, ValueError, "X contains NaN or infinity"),
    (X[:0], Y[:0], ValueError, "X holds no images"),
    (np.zeros(32), Y, ValueError, r"X must have shape .* 1 dimension"),
    (np.zeros((4, 32, 32, 1, 1)), Y, ValueError, r"X must have shape .* 5 dimension"),
    (X.astype(object), Y, TypeError, "X must have a real numeric dtype"),
    ("images/", Y, TypeError, "X must be an array of images"),
    (X, np.full((4, 32, 32), 0.5), ValueError, "y holds non-integer values"),
    (X, np.full((4, 32, 32, 2), 3), ValueError, "multilabel .* only 0 and 1"),
    (X, Y.astype(object), TypeError, "y must hold integer or boolean labels"),
])
def test_bad_fit_input(X_bad, y_bad, error, match):
    raises_cleanly(error, match, UNetSegmenter(**SMALL).fit, X_bad, y_bad)


@pytest.mark.parametrize("params, error, match", [
    ({"backbone": "resnet9"}, ValueError, "'backbone' parameter must be one of"),
    ({"backbone": "densenet121"}, ValueError, "'densenet121' is not supported: its layer names"),
    ({"loss": "hinge"}, ValueError, "'loss' parameter of UNetSegmenter must be"),
    ({"learning_rate": -1.0}, ValueError, "'learning_rate' parameter"),
    ({"batch_size": 0}, ValueError, "'batch_size' parameter"),
    ({"threshold": 1.5}, ValueError, "'threshold' parameter"),
    ({"threshold": [0.4, 0.6]}, ValueError,
     r"threshold must be a number or a sequence of one value per class \(1\); got 2"),
    ({"threshold": [1.2]}, ValueError, "threshold must lie strictly between 0 and 1"),
    ({"min_area": -1}, ValueError, "'min_area' parameter"),
    ({"min_component_area": [1, 2]}, ValueError, "min_component_area must be a number or a"),
    ({"validation_fraction": 1.0}, ValueError, "'validation_fraction' parameter"),
    ({"decoder_filters": (16, 8)}, ValueError, "'decoder_filters' parameter must be 5"),
    ({"encoder_weights": "/no/such/file.h5"}, ValueError, "'encoder_weights' parameter"),
    ({"mixed_precision": "yes"}, ValueError, "'mixed_precision' parameter"),
    ({"distribute": "multi"}, ValueError, "'distribute' parameter"),
    ({"validation_fraction": 0.8}, ValueError,
     "validation_fraction=0.8 holds out 4 of the 4 images and leaves none"),
])
def test_bad_parameter_values(params, error, match):
    raises_cleanly(error, match, UNetSegmenter(**{**SMALL, **params}).fit, X, Y)


def test_unknown_parameter_name():
    with pytest.raises(TypeError, match="unexpected keyword argument 'treshold'"):
        UNetSegmenter(treshold=0.5)


def test_bad_validation_data():
    model = UNetSegmenter(**SMALL)
    raises_cleanly(TypeError, "validation_data must be a tuple", model.fit, X, Y,
                   validation_data=X)
    raises_cleanly(ValueError, r"validation_data\[1\] holds values \[2\]", model.fit, X, Y,
                   validation_data=(X, np.full_like(Y, 2)))


def test_bad_predict_and_score_input(fitted_binary, binary_data):
    images, masks = binary_data
    raises_cleanly(ValueError, "X has 3 channel.* fitted on images with 1 channel",
                   fitted_binary.predict, np.zeros((2, 32, 32, 3)))
    raises_cleanly(ValueError, r"y holds values \[7\] that are not among the classes \[0, 1\]",
                   fitted_binary.score, images, np.full_like(masks, 7))
    raises_cleanly(ValueError, "X and y must hold the same number of images; got 12 and 2",
                   fitted_binary.score, images, masks[:2])
