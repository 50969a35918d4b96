"""UNetSegmenter with scikit-learn's own tools, on real (tiny) fits."""

import pytest
from conftest import SMALL
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import get_tags

from skunetseg import ImagePreprocessor, UNetSegmenter, dice_scorer


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


def test_cross_val_score_with_dice_scorer_in_two_processes(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**SMALL, random_state=0)
    scores = cross_val_score(model, X, y, cv=KFold(3), scoring=dice_scorer, n_jobs=2)
    assert scores.shape == (3,)
    assert ((scores >= 0) & (scores <= 1)).all()
    # each worker process built its own model: the first fold, redone here, agrees
    first = clone(model).fit(X[4:], y[4:])
    assert scores[0] == pytest.approx(dice_scorer(first, X[:4], y[:4]), abs=1e-6)


def test_grid_search_over_two_parameters_in_two_processes_refits_the_best(binary_data):
    X, y = binary_data
    # tta is one of the two: TTA settings are compared like any other parameter
    search = GridSearchCV(
        UNetSegmenter(**SMALL, random_state=0),
        param_grid={"tta": [None, "flips"], "learning_rate": [1e-2, 1e-3]},
        cv=KFold(2), scoring=dice_scorer, refit=True, n_jobs=2,
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
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
