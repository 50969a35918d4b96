"""A fit that raises midway leaves every estimator as it was (issue 24, item 3).

An unfitted estimator stays unfitted (no ``folds_``, ``kind_`` or ``classes_`` alone);
a fitted one keeps every attribute of its earlier fit. The meta-estimators are driven
by instant stub segmenters that raise on a chosen fit; the Keras estimators by a
training step that raises.
"""

import numpy as np
import pytest
from conftest import SMALL, synthetic_images
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted
from test_segmenter_contract import Thresholded

from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter

#: Fits of FailingSegmenter so far, over all its clones.
FITS = []


class FailingSegmenter(Thresholded):
    """``Thresholded`` that raises on the ``fail_at``-th fit of any of its clones."""

    def __init__(self, threshold=0.5, fail_at=None):
        super().__init__(threshold)
        self.fail_at = fail_at

    def fit(self, X, y, validation_data=None):
        FITS.append(len(X))
        if len(FITS) == self.fail_at:
            raise RuntimeError(f"fit {self.fail_at} failed")
        return super().fit(X, y, validation_data)


@pytest.fixture(autouse=True)
def count_fits():
    FITS.clear()
    yield
    FITS.clear()


def data(seed=0):
    return synthetic_images(n=12, height=8, width=8, seed=seed)


def snapshot(estimator):
    """Every attribute, by identity: a restored estimator holds the very same objects."""
    return {name: id(value) for name, value in vars(estimator).items()}


#: (the meta-estimator around a segmenter, how many segmenter fits its fit makes)
META = [
    pytest.param(lambda segmenter: FoldEnsemble(segmenter, cv=3), 3, id="FoldEnsemble"),
    pytest.param(lambda segmenter: FalsePositiveFilter(segmenter, "features", cv=KFold(3)),
                 4, id="FalsePositiveFilter"),
    pytest.param(lambda segmenter: FalsePositiveFilter(FoldEnsemble(segmenter, cv=3),
                                                       "features"),
                 3, id="FalsePositiveFilter(FoldEnsemble)"),
]


@pytest.mark.parametrize(("make", "n_fits"), META)
@pytest.mark.parametrize("last", [False, True], ids=["2nd fit fails", "last fit fails"])
def test_a_failed_fit_leaves_an_unfitted_meta_estimator_unfitted(make, n_fits, last):
    X, y = data()
    fail_at = n_fits if last else 2
    model = make(FailingSegmenter(fail_at=fail_at))
    params = dict(vars(model))
    with pytest.raises(RuntimeError, match=f"fit {fail_at} failed"):
        model.fit(X, y)
    assert len(FITS) == fail_at  # it did fail midway
    assert vars(model) == params
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


class RaisingImageClassifier(ClassifierMixin, BaseEstimator):
    """An image presence classifier whose fit raises."""

    def fit(self, X, y):
        raise RuntimeError("classifier fit failed")

    def predict_proba(self, X):
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


@pytest.mark.parametrize(("make", "n_fits"), META)
def test_a_failed_refit_leaves_a_fitted_meta_estimator_with_its_earlier_fit(make, n_fits):
    X, y = data()
    model = make(FailingSegmenter()).fit(X, y)
    assert len(FITS) == n_fits
    expected = model.predict_proba(X)
    if isinstance(model, FoldEnsemble):  # the 2nd fold of the refit fails, after folds_
        model.set_params(estimator__fail_at=n_fits + 2)
    else:  # the image classifier fails, after kind_ (and, around an ensemble, segmenter_)
        model.set_params(classifier=RaisingImageClassifier())
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="failed"):
        model.fit(*data(seed=1))
    assert snapshot(model) == before
    np.testing.assert_array_equal(model.predict_proba(X), expected)


@pytest.mark.parametrize("estimator", [UNetSegmenter(**SMALL),
                                       PresenceClassifier("vgg16", epochs=1)],
                         ids=["UNetSegmenter", "PresenceClassifier"])
def test_a_failed_fit_leaves_an_unfitted_keras_estimator_unfitted(estimator, monkeypatch):
    # a fitted one keeping its earlier fit: test_robustness.py
    from skunetseg._keras_estimator import KerasModelMixin

    def failing(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(KerasModelMixin, "_build_and_train", failing)
    X, y = synthetic_images(n=4, height=32, width=32)
    params = dict(vars(estimator))
    with pytest.raises(RuntimeError, match="training failed"):
        estimator.fit(X, y if isinstance(estimator, UNetSegmenter)
                      else y.reshape(len(y), -1).any(axis=1))
    assert vars(estimator) == params
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
