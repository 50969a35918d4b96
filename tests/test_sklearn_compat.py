"""The estimators with scikit-learn's own tools and estimator checks, on real (tiny) fits."""

import inspect
import re

import pytest
from conftest import SMALL
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from skunetseg import (
    FalsePositiveFilter,
    FoldEnsemble,
    ImagePreprocessor,
    PresenceClassifier,
    UNetSegmenter,
    dice_scorer,
)


def checked(cls):
    """``cls`` with the tag "takes 2-D input" set, for scikit-learn's estimator checks.

    scikit-learn generates no check at all for an estimator without 2-D input (it warns
    "Can't test estimator" and yields nothing). With the tag set, every check is
    generated and run; those that build tabular data fail on the image estimators and
    are the expected failures that each estimator lists, with the reason, in its own
    ``_expected_failed_checks``. Everything else (cloning, tags, repr, parameters,
    ``set_params``, errors before fit, mixin order, 1-D input refused) really runs.
    """
    class Checked(cls):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.two_d_array = True
            return tags

    Checked.__name__ = Checked.__qualname__ = cls.__name__
    return Checked


_TINY = dict(SMALL, random_state=0)


@parametrize_with_checks(
    [checked(UNetSegmenter)(**_TINY),
     checked(PresenceClassifier)("vgg16", epochs=1, random_state=0),
     checked(FoldEnsemble)(UNetSegmenter(**_TINY), cv=2, random_state=0),
     checked(FalsePositiveFilter)(UNetSegmenter(**_TINY), cv=2, random_state=0)],
    expected_failed_checks=lambda estimator: estimator._expected_failed_checks(),
    xfail_strict=True,  # a listed check that passes is an error: the list stays exact
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_keras_estimators_share_one_declaration_of_their_training_parameters():
    import skunetseg._keras_estimator as keras_estimator

    shared = keras_estimator.KerasModelMixin._parameter_constraints
    read = set(re.findall(r"self\.([a-z][a-z_]*[a-z])\b", inspect.getsource(keras_estimator)))
    for cls in (UNetSegmenter, PresenceClassifier):
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert set(cls._parameter_constraints) == params  # every parameter, declared once
        assert all(cls._parameter_constraints[name] is shared[name] for name in shared)
        # the mixin reads only parameters it declares (loss: each class its own losses)
        assert read & params <= set(shared) | {"loss"}


def test_clone_copies_parameters_not_the_fit(fitted_binary):
    copy = clone(fitted_binary)
    assert copy.get_params() == fitted_binary.get_params()
    assert not hasattr(copy, "history_")


def test_get_and_set_params():
    model = UNetSegmenter()
    assert model.get_params()["backbone"] == "efficientnetb2"
    assert model.set_params(threshold=0.3, epochs=3) is model
    assert (model.threshold, model.epochs) == (0.3, 3)
    with pytest.raises(ValueError, match="Invalid parameter 'treshold'"):
        model.set_params(treshold=0.3)


def test_init_stores_parameters_untouched():
    filters = [8, 8, 8, 8, 8]
    model = UNetSegmenter(decoder_filters=filters, loss="dice")
    assert model.decoder_filters is filters and model.loss == "dice"


def test_tags_say_images_not_tables():
    tags = get_tags(UNetSegmenter())
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array
    assert tags.target_tags.required


def test_repr_shows_only_changed_parameters():
    assert repr(UNetSegmenter("resnet18", epochs=3)) == \
        "UNetSegmenter(backbone='resnet18', epochs=3)"


@pytest.mark.slow
def test_cross_val_score_with_dice_scorer_in_two_processes(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**SMALL, random_state=0)
    scores = cross_val_score(model, X, y, cv=KFold(2), scoring=dice_scorer, n_jobs=2)
    assert scores.shape == (2,)
    assert ((scores >= 0) & (scores <= 1)).all()
    # each worker process built its own model: the first fold, redone here, agrees
    first = clone(model).fit(X[6:], y[6:])
    assert scores[0] == pytest.approx(dice_scorer(first, X[:6], y[:6]), abs=1e-6)


@pytest.mark.slow
def test_grid_search_over_tta_in_two_processes_refits_the_best(binary_data):
    X, y = binary_data
    # TTA settings are compared like any other parameter (two candidates keep it cheap:
    # every candidate costs a fit per fold)
    search = GridSearchCV(
        UNetSegmenter(**SMALL, random_state=0),
        param_grid={"tta": [None, "flips"]},
        cv=KFold(2), scoring=dice_scorer, refit=True, n_jobs=2,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 2
    assert search.best_estimator_.tta == search.best_params_["tta"]
    assert search.predict(X).shape == y.shape
    assert search.score(X, y) == pytest.approx(dice_scorer(search.best_estimator_, X, y))


def test_pipeline_with_preprocessor_then_segmenter(binary_data):
    X, y = binary_data
    pipeline = make_pipeline(ImagePreprocessor("efficientnetb0"),
                             UNetSegmenter(**SMALL, random_state=0))
    pipeline.fit(X, y)
    segmenter = pipeline[-1]
    assert segmenter.n_channels_in_ == 3  # the preprocessor repeated the gray channel
    assert pipeline.predict(X).shape == y.shape
    assert 0 <= pipeline.score(X, y) <= 1
