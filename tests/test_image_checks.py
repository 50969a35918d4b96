"""scikit-learn's estimator checks that build tables, rewritten for image input (issue 24).

``parametrize_with_checks`` (tests/test_sklearn_compat.py) cannot run these checks on
the four estimators: each builds a 2-D table, which the estimators refuse. The
properties they test hold for images too, so each has its image-input twin here, run
over all four estimators with tiny models. Every estimator is fitted once (on read-only
memory-mapped images) by a module fixture that records what the fit-time checks need;
the last test refits it, in a pipeline, for the two checks that need a second fit.

====================================  ==============================================
scikit-learn check                    twin here
====================================  ==============================================
check_estimators_fit_returns_self     test_fit_returns_self_on_read_only_memmaps
check_readonly_memmap_input           test_fit_returns_self_on_read_only_memmaps
check_fit_check_is_fitted             test_check_is_fitted_fails_before_fit_only
check_estimators_overwrite_params     test_fit_leaves_the_parameters_as_they_were
check_dont_overwrite_parameters       test_fit_sets_only_trailing_underscore_attributes
check_dict_unchanged                  test_predicting_leaves_the_estimator_unchanged
check_methods_subset_invariance       test_predictions_do_not_depend_on_the_batch
check_methods_sample_order_invariance test_predictions_do_not_depend_on_the_order
check_estimators_pickle               test_pickle_round_trip_predicts_the_same
check_fit_idempotent                  test_refit_in_a_pipeline_predicts_the_same
check_pipeline_consistency            test_refit_in_a_pipeline_predicts_the_same
====================================  ==============================================
"""

import copy
import pickle
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
from conftest import SMALL, synthetic_images
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.utils._testing import create_memmap_backed_data
from sklearn.utils.validation import check_is_fitted

from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter

_TINY = dict(SMALL, random_state=0)


def data(name):
    """8 images of 32x32 px on read-only memory maps; masks, or presence labels."""
    X, masks = synthetic_images(n=8, height=32, width=32, seed=1)
    y = masks.any(axis=(1, 2)) if name == "PresenceClassifier" else masks
    return create_memmap_backed_data([X, y])


@pytest.fixture(scope="module")
def frozen_segmenter(fitted_small):
    """A tiny fitted UNetSegmenter (the session's, conftest.py), frozen: the fold model of
    the meta-estimators below, so that their fits test their own logic without training
    a network per fold."""
    return FrozenEstimator(fitted_small)


#: The four estimators, tiny. Each Keras estimator's fit is one network fit; the
#: meta-estimators wrap a frozen fitted U-Net (every fold "fits" it as it is, and the
#: filter reuses the ensemble's folds and out-of-fold maps), so theirs train nothing.
ESTIMATORS = {
    "UNetSegmenter": lambda frozen: UNetSegmenter(**_TINY),
    "PresenceClassifier": lambda frozen: PresenceClassifier(
        "vgg16", epochs=1, batch_size=4, validation_fraction=0, augment=None,
        random_state=0),
    "FoldEnsemble": lambda frozen: FoldEnsemble(frozen, cv=2, random_state=0),
    "FalsePositiveFilter": lambda frozen: FalsePositiveFilter(
        FoldEnsemble(frozen, cv=2, random_state=0), "features", random_state=0),
}


def methods(estimator):
    """The prediction methods that scikit-learn's checks call, which the estimator has."""
    return [name for name in ("predict", "predict_proba", "transform")
            if hasattr(estimator, name)]


def identities(estimator):
    """Every attribute by identity: an unchanged estimator holds the very same objects."""
    return {name: id(value) for name, value in vars(estimator).items()}


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def fitted(request):
    """One fit of the estimator on read-only memmapped images, with what it changed."""
    X, y = data(request.param)
    assert not X.flags.writeable and not y.flags.writeable
    frozen = None if request.param in ("UNetSegmenter", "PresenceClassifier") else (
        request.getfixturevalue("frozen_segmenter"))
    estimator = ESTIMATORS[request.param](frozen)
    record = SimpleNamespace(estimator=estimator, X=X, y=y)
    try:
        check_is_fitted(estimator)
        record.fitted_before = True
    except NotFittedError:
        record.fitted_before = False
    record.params = copy.deepcopy(estimator.get_params())
    record.before = dict(vars(estimator))
    record.returned = estimator.fit(X, y)
    record.results = {name: getattr(estimator, name)(X) for name in methods(estimator)}
    record.score = estimator.score(X, y)
    return record


def test_fit_returns_self_on_read_only_memmaps(fitted):
    assert fitted.returned is fitted.estimator


def test_check_is_fitted_fails_before_fit_only(fitted):
    assert not fitted.fitted_before
    check_is_fitted(fitted.estimator)


def test_fit_leaves_the_parameters_as_they_were(fitted):
    params = fitted.estimator.get_params()
    assert params.keys() == fitted.params.keys()
    for name, value in fitted.params.items():  # nested estimators' parameters included
        assert joblib.hash(params[name]) == joblib.hash(value), name


def test_fit_sets_only_trailing_underscore_attributes(fitted):
    after = vars(fitted.estimator)
    public = [name for name in after if not name.startswith("_") and not name.endswith("_")]
    assert sorted(public) == sorted(fitted.estimator.get_params(deep=False))
    assert all(after[name] is fitted.before[name] for name in public)


def test_predicting_leaves_the_estimator_unchanged(fitted):
    estimator, X = fitted.estimator, fitted.X
    for name in [*methods(estimator), "score"]:
        before = identities(estimator)
        getattr(estimator, name)(*((X, fitted.y) if name == "score" else (X,)))
        assert identities(estimator) == before, name


def assert_same(result, expected, name, atol=1e-6):
    if np.issubdtype(np.asarray(expected).dtype, np.floating):
        np.testing.assert_allclose(result, expected, atol=atol, err_msg=name)
    else:
        np.testing.assert_array_equal(result, expected, err_msg=name)


def test_predictions_do_not_depend_on_the_batch(fitted):
    estimator, X = fitted.estimator, fitted.X
    for name, expected in fitted.results.items():  # batches of 3 and 5 images
        parts = [getattr(estimator, name)(X[rows]) for rows in (slice(0, 3), slice(3, None))]
        assert_same(np.concatenate(parts), expected, name, atol=1e-5)


def test_predictions_do_not_depend_on_the_order(fitted):
    estimator, X = fitted.estimator, fitted.X
    order = np.random.default_rng(0).permutation(len(X))
    for name, expected in fitted.results.items():
        assert_same(getattr(estimator, name)(X[order]), expected[order], name, atol=1e-5)


def test_pickle_round_trip_predicts_the_same(fitted):
    copy_ = pickle.loads(pickle.dumps(fitted.estimator))
    for name, expected in fitted.results.items():
        assert_same(getattr(copy_, name)(fitted.X), expected, name)


def test_refit_in_a_pipeline_predicts_the_same(fitted):
    # last: it refits the fixture's estimator (a Pipeline fits its steps, not clones), so
    # that one more fit checks both that fitting twice is fitting once
    # (check_fit_idempotent) and that the pipeline predicts as the estimator did
    # (check_pipeline_consistency)
    pipeline = make_pipeline(fitted.estimator).fit(fitted.X, fitted.y)
    for name, expected in fitted.results.items():
        assert_same(getattr(pipeline, name)(fitted.X), expected, name)
    assert pipeline.score(fitted.X, fitted.y) == pytest.approx(fitted.score, abs=1e-6)
