"""FalsePositiveFilter: held-out predictions, thresholds, diagnostics, scikit-learn use.

Most tests use two instant stand-ins: a segmenter whose pixel probability is the
pixel's brightness and a presence classifier that looks probabilities up by
image id (pixel (0, 0) of each image holds its id). Both log which images they
were fitted on and asked to predict. The last tests fit the real networks (three
small fits).
"""


import numpy as np
import pytest
from conftest import SMALL, predict_in_fresh_process, synthetic_images
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.validation import check_is_fitted

from skunetseg import (
    FoldEnsemble,
    PresenceClassifier,
    TargetEncoding,
    UNetSegmenter,
    dice_score,
    dice_scorer,
)
from skunetseg._false_positive import (
    FEATURE_NAMES,
    FalsePositiveFilter,
    best_threshold,
    probability_features,
)
from skunetseg.postprocess import PostProcessing

#: (event, model, image ids) for every fit and predict of the stand-ins.
EVENTS = []

SIZE = 8
OBJECT, STRAY, FAINT = 230, 200, 100  # pixel values: a salt square, a stray pixel, a miss


def image_ids(X):
    return frozenset(np.asarray(X)[:, 0, 0].reshape(len(X), -1)[:, 0].tolist())


def brightness(X):
    """uint8 images as float32 ``(n, H, W, C)`` in [0, 1]."""
    X = np.asarray(X)
    return (X[..., np.newaxis] if X.ndim == 3 else X).astype(np.float32) / 255


class BrightnessSegmenter(BaseEstimator):
    """Instant stand-in for UNetSegmenter: a pixel's probability is its brightness.

    It meets the public segmenter contract (docs/contract.md) and nothing more.
    """

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def fit(self, X, y, validation_data=None):
        self.encoding_ = TargetEncoding.from_targets(y)
        self.postprocessing_ = PostProcessing.from_params(
            self.encoding_.n_outputs, threshold=self.threshold,
            activation=self.encoding_.activation)
        self.classes_ = self.encoding_.classes
        self.n_classes_ = len(self.classes_)
        self.target_type_ = self.encoding_.target_type
        EVENTS.append(("fit", self, image_ids(X)))
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        EVENTS.append(("predict", self, image_ids(X)))
        proba = brightness(X)[..., :self.encoding_.n_outputs]
        if self.target_type_ == "multiclass":
            proba = proba / proba.sum(axis=-1, keepdims=True)
        return proba

    def predict(self, X):
        return self.encoding_.decode(self.postprocessing_.apply(self.predict_proba(X)))


class PresenceLookup(ClassifierMixin, BaseEstimator):
    """Instant image classifier: presence per class from ``table[image id]``, else from
    the image's brightest pixel."""

    def __init__(self, table=None):
        self.table = table

    def fit(self, X, y):
        EVENTS.append(("fit", self, image_ids(X)))
        self.classes_ = np.arange(np.shape(y)[1])
        return self

    def predict_proba(self, X):
        EVENTS.append(("predict", self, image_ids(X)))
        X = np.asarray(X)
        if self.table is None:
            return brightness(X).max(axis=(1, 2))[:, :len(self.classes_)]
        return np.array([self.table[i] for i in X[:, 0, 0].reshape(len(X), -1)[:, 0]],
                        dtype=float).reshape(len(X), -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


@pytest.fixture(autouse=True)
def clear_events():
    EVENTS.clear()
    yield
    EVENTS.clear()


def assert_never_predicted_own_training_images():
    """No model of the log was asked to predict an image it was fitted on."""
    trained = {}
    for event, model, ids in EVENTS:
        if event == "fit":
            trained[id(model)] = trained.get(id(model), frozenset()) | ids
    predictions = [(model, ids) for event, model, ids in EVENTS if event == "predict"]
    assert predictions  # the check below has something to check
    for model, ids in predictions:
        assert not ids & trained.get(id(model), frozenset()), type(model).__name__


def make_images(kinds, first_id=0):
    """Images and masks, one per letter of ``kinds``.

    ``o``: a bright 3x3 square, in the mask and predicted; ``f``: an empty mask with a
    stray bright pixel (a false positive); ``m``: a faint square the segmenter misses;
    ``e``: empty and dark.
    """
    X = np.full((len(kinds), SIZE, SIZE), 20, dtype=np.uint8)
    y = np.zeros(X.shape, dtype=np.uint8)
    for i, kind in enumerate(kinds):
        if kind in "om":
            X[i, 3:6, 3:6] = OBJECT if kind == "o" else FAINT
            y[i, 3:6, 3:6] = 1
        elif kind == "f":
            X[i, 6, 2] = STRAY
    X[:, 0, 0] = np.arange(first_id, first_id + len(kinds))
    return X, y


def salt_like(n, seed=0):
    """A random mix of the four kinds of image, like a data set with empty masks."""
    kinds = np.random.default_rng(seed).choice(list("ofme"), size=n, p=[0.45, 0.3, 0.1, 0.15])
    return make_images("".join(kinds))


# ------------------------------------------------------------------ pure helpers
def test_probability_features_by_hand():
    proba = np.zeros((1, 10, 10, 1), dtype=np.float32)
    proba[0, 0, :4, 0] = [1.0, 0.8, 0.6, 0.95]
    masks = proba > 0.5
    features = dict(zip(FEATURE_NAMES, probability_features(proba, masks)[0, 0], strict=True))
    assert features["max"] == pytest.approx(1.0)
    assert features["mean"] == pytest.approx(3.35 / 100)
    assert features["top_mean"] == pytest.approx(1.0)  # the top 1 % of 100 pixels: 1 pixel
    assert features["mask_area"] == pytest.approx(4 / 100)
    assert features["confident_area"] == pytest.approx(2 / 100)
    assert features["mask_mean"] == pytest.approx(3.35 / 4)
    empty = probability_features(np.zeros_like(proba), np.zeros_like(masks))
    np.testing.assert_array_equal(empty, 0)


def test_best_threshold_by_hand():
    presence = np.array([0.1, 0.1, 0.2, 0.3, 0.8, 0.9, 0.95])
    kept = np.array([1, 0, 0, 1, 1, 0, 1], dtype=float)
    blanked = np.array([1, 0, 1, 0, 0, 1, 0], dtype=float)
    # blanking the three lowest gains one pair; the cut falls between 0.2 and 0.3
    assert best_threshold(presence, kept, blanked) == pytest.approx(0.25)
    # when blanking never helps, nothing is blanked: the cut lies below every score
    assert best_threshold(presence, np.ones(7), np.zeros(7)) == pytest.approx(0.05)
    # when it always helps, everything is
    assert best_threshold(presence, np.zeros(7), np.ones(7)) == pytest.approx(0.975)
    # ties between equal scores cannot be split: 0.1 and 0.1 go together
    assert best_threshold(np.array([0.1, 0.1, 0.5]), np.array([0.0, 1, 1]),
                          np.array([1.0, 0, 0])) == pytest.approx(0.05)


def test_best_threshold_within_a_blanking_budget_by_hand():
    presence = np.array([0.1, 0.2, 0.3, 0.4])
    kept, blanked = np.array([0.0, 0, 0, 1]), np.array([1.0, 0, 1, 0])  # objects: 1 and 3
    shown = np.array([True, True, True, True])
    # free: blanking the three lowest gains 2 pairs, and blanks object 1 (half the objects)
    assert best_threshold(presence, kept, blanked) == pytest.approx(0.35)
    assert best_threshold(presence, kept, blanked, shown=shown,
                          max_blanked=0.5) == pytest.approx(0.35)
    # within a quarter, object 1 must stay: only the lowest pair is blanked
    assert best_threshold(presence, kept, blanked, shown=shown,
                          max_blanked=0.25) == pytest.approx(0.15)
    # an object whose mask was not shown anyway costs nothing to blank
    assert best_threshold(presence, kept, blanked, shown=np.array([True, False, True, True]),
                          max_blanked=0.0) == pytest.approx(0.35)


def test_max_blanked_budgets_the_tuned_threshold():
    X, y = salt_like(20)
    X_val, y_val = make_images("ffffoo", first_id=60)
    table = {60: 0.1, 61: 0.2, 62: 0.4, 63: 0.45, 64: 0.3, 65: 0.9}

    def fit(**params):
        model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(table),
                                    tune_threshold=True, cv=None, **params)
        return model.fit(X, y, validation_data=(X_val, y_val))

    free = fit()  # blanks the four false positives and object 64
    np.testing.assert_allclose(free.presence_thresholds_, [0.675])
    assert free.fp_rate_ == 0 and free.blanked_rate_ == 0.5
    budgeted = fit(max_blanked=0.4)  # keeps 64, and so the false positives above it
    np.testing.assert_allclose(budgeted.presence_thresholds_, [0.25])
    assert budgeted.fp_rate_ == 0.5 and budgeted.blanked_rate_ == 0


# ------------------------------------------------------- diagnostics by hand
VALIDATION_KINDS = "ffeoomo"  # ids 50..56
TABLE = {50: 0.9, 51: 0.2, 52: 0.1, 53: 0.8, 54: 0.3, 55: 0.1, 56: 0.95}


def fit_lookup_filter(**params):
    X, y = salt_like(20)
    X_val, y_val = make_images(VALIDATION_KINDS, first_id=50)
    model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(TABLE), cv=None, **params)
    return model.fit(X, y, validation_data=(X_val, y_val)), X_val, y_val


def test_diagnostics_by_hand_on_the_validation_data():
    model, X_val, y_val = fit_lookup_filter()
    # empty truths 50, 51, 52: the segmenter shows 50 and 51, the filter blanks 51 and 52
    assert model.fp_rate_before_ == pytest.approx(2 / 3)
    assert model.fp_rate_ == pytest.approx(1 / 3)
    # salt in 53, 54, 55 (missed anyway), 56: 54 is wrongly blanked
    assert model.blanked_rate_ == pytest.approx(1 / 4)
    assert model.dice_before_ == pytest.approx(4 / 7)  # 52, 53, 54, 56 score 1
    assert model.dice_ == pytest.approx(4 / 7)  # 51, 52, 53, 56 score 1
    assert model.n_held_out_ == 7 and model.kind_ == "image"
    np.testing.assert_array_equal(model.presence_thresholds_, [0.5])
    expected = model.segmenter_.predict(X_val)
    expected[[1, 2, 4, 5]] = 0
    np.testing.assert_array_equal(model.predict(X_val), expected)
    assert model.score(X_val, y_val) == pytest.approx(4 / 7)


def test_tuned_threshold_maximises_the_held_out_dice():
    model, X_val, y_val = fit_lookup_filter(tune_threshold=True)
    # blanking the scores 0.1, 0.1 and 0.2 gains 51 without losing 54 (0.3)
    np.testing.assert_allclose(model.presence_thresholds_, [0.25])
    assert model.dice_ == pytest.approx(5 / 7)
    assert model.fp_rate_ == pytest.approx(1 / 3) and model.blanked_rate_ == 0
    for threshold in np.linspace(0, 1, 21):
        fixed, _, _ = fit_lookup_filter(presence_threshold=threshold)
        assert fixed.dice_ <= model.dice_ + 1e-12


def test_frozen_segmenter_is_used_as_it_is():
    X, y = salt_like(20)
    segmenter = BrightnessSegmenter().fit(X, y)
    X_val, y_val = make_images(VALIDATION_KINDS, first_id=50)
    EVENTS.clear()
    model = FalsePositiveFilter(FrozenEstimator(segmenter), PresenceLookup(TABLE), cv=None)
    model.fit(X, y, validation_data=(X_val, y_val))
    assert model.segmenter_.estimator is segmenter
    assert not [m for event, m, _ in EVENTS if event == "fit" and m is segmenter]
    # out-of-fold maps come from fresh clones of the segmenter the frozen one wraps
    EVENTS.clear()
    model.set_params(classifier="features", cv=2).fit(X, y)
    fits = [m for event, m, _ in EVENTS if event == "fit"]
    assert len(fits) == 2 and segmenter not in fits
    assert all(isinstance(m, BrightnessSegmenter) for m in fits)


# ------------------------------------------------ never on the training images
@pytest.mark.parametrize("classifier", ["features", PresenceLookup()])
def test_held_out_predictions_never_come_from_a_model_fitted_on_the_image(classifier):
    X, y = salt_like(30, seed=1)
    model = FalsePositiveFilter(BrightnessSegmenter(), classifier, tune_threshold=True,
                                cv=KFold(3, shuffle=True, random_state=0))
    model.fit(X, y)
    assert_never_predicted_own_training_images()
    assert model.n_held_out_ == len(X)
    # cv segmenters on the folds, then one on all images
    fits = [ids for event, m, ids in EVENTS
            if event == "fit" and isinstance(m, BrightnessSegmenter)]
    assert len(fits) == 4 and fits[-1] == image_ids(X)


class RecordingFeatureClassifier(DecisionTreeClassifier):
    """A tree that logs the feature rows it is fitted on and asked about."""

    def fit(self, X, y, sample_weight=None, check_input=True):
        EVENTS.append(("fit", self, frozenset(map(tuple, np.asarray(X).tolist()))))
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)

    def predict_proba(self, X, check_input=True):
        EVENTS.append(("predict", self, frozenset(map(tuple, np.asarray(X).tolist()))))
        return super().predict_proba(X, check_input=check_input)


def test_features_classifiers_never_predict_their_training_rows():
    rng = np.random.default_rng(2)
    X, y = salt_like(30, seed=2)
    X[:, 1:, 1:] += rng.integers(0, 20, size=(30, SIZE - 1, SIZE - 1), dtype=np.uint8)
    model = FalsePositiveFilter(BrightnessSegmenter(), RecordingFeatureClassifier(), cv=3)
    model.fit(X, y)
    assert_never_predicted_own_training_images()
    tree_predictions = [ids for event, m, ids in EVENTS
                        if event == "predict" and isinstance(m, DecisionTreeClassifier)]
    assert len(tree_predictions) == 3 and sum(map(len, tree_predictions)) == len(X)
    assert model.kind_ == "features" and len(model.classifiers_) == 1


# ------------------------------------------------------- the classifier kinds
def test_features_filter_removes_stray_false_positives():
    X, y = salt_like(60, seed=3)
    model = FalsePositiveFilter(BrightnessSegmenter(), "features", tune_threshold=True)
    model.fit(X, y)
    empty = ~y.any(axis=(1, 2))
    shown = X.max(axis=(1, 2)) > 127  # the stray pixels are shown
    assert model.fp_rate_before_ == pytest.approx(shown[empty].mean())
    assert model.fp_rate_before_ > 0.5
    assert model.fp_rate_ == 0.0 and model.blanked_rate_ == 0.0
    assert model.dice_ > model.dice_before_
    X_test, y_test = salt_like(40, seed=4)
    segmenter_alone = dice_score(y_test, model.segmenter_.predict(X_test))
    assert model.score(X_test, y_test) > segmenter_alone


def test_auto_picks_the_image_classifier():
    # the choice that docs/false_positives.md reports and explains
    model = FalsePositiveFilter(UNetSegmenter("vgg16", epochs=3))
    kind, classifier = model._get_classifier()
    assert kind == "image" and isinstance(classifier, PresenceClassifier)
    assert classifier.backbone == "vgg16"
    assert model.classifier == "auto"  # the parameter is left alone


def test_image_kind_takes_only_the_documented_parameters_from_the_segmenter():
    segmenter = UNetSegmenter("resnet18", encoder_weights="imagenet", input_size=(64, 64),
                              epochs=7, batch_size=4, augment="flips", threshold=0.3,
                              fit_in_subprocess=True, random_state=3)
    kind, classifier = FalsePositiveFilter(segmenter, "image")._get_classifier()
    assert kind == "image" and isinstance(classifier, PresenceClassifier)
    changed = {name: value for name, value in classifier.get_params().items()
               if value != PresenceClassifier().get_params()[name]}
    assert changed == {"backbone": "resnet18", "encoder_weights": "imagenet",
                       "input_size": (64, 64), "random_state": 3}
    # from the model inside a fold ensemble too
    ensemble = FoldEnsemble(UNetSegmenter("vgg16", input_size=(32, 32)), random_state=1)
    _, inner = FalsePositiveFilter(ensemble, "image")._get_classifier()
    assert (inner.backbone, inner.input_size) == ("vgg16", (32, 32))


def test_a_class_present_in_every_image_is_never_blanked():
    X, y = make_images("oooooooo")
    model = FalsePositiveFilter(BrightnessSegmenter(), DecisionTreeClassifier(), cv=2)
    model.fit(X, y)
    assert isinstance(model.classifiers_[0], DummyClassifier)
    assert np.isnan(model.fp_rate_before_) and np.isnan(model.fp_rate_)  # no empty truth
    np.testing.assert_array_equal(model.predict(X), model.segmenter_.predict(X))


def test_holdout_cv_holds_out_only_its_test_images():
    X, y = salt_like(20)
    model = FalsePositiveFilter(BrightnessSegmenter(), "features",
                                cv=ShuffleSplit(n_splits=1, test_size=8, random_state=0))
    assert model.fit(X, y).n_held_out_ == 8


# ------------------------------------------- per-class thresholds, multiclass
def two_class_images():
    X0, y0 = make_images("ofoeofmo")
    X1, y1 = make_images("oofeomoe")
    return np.stack([X0, X1], axis=-1), np.stack([y0, y1], axis=-1)


def test_per_class_thresholds_blank_each_class_on_its_own():
    X, y = two_class_images()
    table = {i: (0.1 * i, 1 - 0.1 * i) for i in range(8)}
    model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(table),
                                presence_threshold=[0.25, 0.45], cv=2).fit(X, y)
    proba, plain = model.predict_proba(X), model.segmenter_.predict_proba(X)
    for i in range(8):
        for k, kept in enumerate((0.1 * i > 0.25, 1 - 0.1 * i > 0.45)):
            np.testing.assert_array_equal(proba[i, ..., k], plain[i, ..., k] if kept else 0)
    assert model.predict(X).shape == y.shape
    np.testing.assert_array_equal(model.transform(X), proba)


def test_multiclass_moves_a_blanked_class_onto_the_background():
    rng = np.random.default_rng(0)
    X = rng.integers(1, 255, size=(6, SIZE, SIZE, 3), dtype=np.uint8)
    X[:, 0, 0, 0] = np.arange(6)
    y = rng.integers(0, 3, size=(6, SIZE, SIZE))
    table = {i: (0.9, 0.9) if i % 2 else (0.1, 0.9) for i in range(6)}  # even: class 1 absent
    model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(table), cv=2).fit(X, y)
    assert model.presence_thresholds_.shape == (2,)  # no threshold for the background
    proba, plain = model.predict_proba(X), model.segmenter_.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=-1), 1, rtol=1e-6)
    np.testing.assert_array_equal(proba[0::2, ..., 1], 0)
    np.testing.assert_allclose(proba[0::2, ..., 0], plain[0::2, ..., 0] + plain[0::2, ..., 1])
    np.testing.assert_array_equal(proba[1::2], plain[1::2])
    assert not (model.predict(X)[0::2] == 1).any()


# ---------------------------------------------------------- scikit-learn use
def test_clone_and_nested_params():
    model = FalsePositiveFilter(BrightnessSegmenter(threshold=0.4), "features", cv=5)
    params = model.get_params()
    assert params["segmenter__threshold"] == 0.4 and params["cv"] == 5
    model.set_params(segmenter__threshold=0.6, presence_threshold=[0.7])
    copy = clone(model)
    assert copy.segmenter.threshold == 0.6 and copy.presence_threshold == [0.7]
    X, y = salt_like(20)
    model.fit(X, y)
    assert not hasattr(clone(model), "segmenter_")


def test_cross_val_score_with_the_dice_scorer_scores_each_fold():
    X, y = salt_like(30)
    model = FalsePositiveFilter(BrightnessSegmenter(), "features", tune_threshold=True, cv=2)
    scores = cross_val_score(model, X, y, cv=KFold(3), scoring=dice_scorer)
    for score, (train, test) in zip(scores, KFold(3).split(X), strict=True):
        fitted = clone(model).fit(X[train], y[train])
        assert score == pytest.approx(dice_score(y[test], fitted.predict(X[test])))


def test_pipeline_last_step_and_grid_search():
    X, y = salt_like(30)
    pipeline = make_pipeline(FunctionTransformer(), FalsePositiveFilter(BrightnessSegmenter(),
                                                                        "features", cv=2))
    pipeline.fit(X, y)
    assert pipeline.predict(X).shape == y.shape
    assert pipeline.score(X, y) == pytest.approx(dice_score(y, pipeline.predict(X)))
    search = GridSearchCV(pipeline, {"falsepositivefilter__presence_threshold": [0.0, 0.5, 1.0]},
                          cv=KFold(2), scoring=dice_scorer).fit(X, y)
    assert search.best_params_["falsepositivefilter__presence_threshold"] in (0.0, 0.5, 1.0)


def test_inside_a_fold_ensemble():
    X, y = salt_like(30)
    fp_filter = FalsePositiveFilter(BrightnessSegmenter(threshold=0.4), "features",
                                    presence_threshold=0.9, cv=2)
    ensemble = FoldEnsemble(fp_filter, cv=3, tune_postprocessing=False,
                            random_state=0).fit(X, y)
    assert_never_predicted_own_training_images()  # out of fold all the way down
    # the ensemble thresholds pixels as the segmenter does, not at the filter's presence cut
    assert ensemble.thresholds_.tolist() == [0.4]
    expected = np.mean([model.predict_proba(X) for model in ensemble.estimators_], axis=0)
    np.testing.assert_allclose(ensemble.predict_proba(X), expected, rtol=1e-6)
    assert ensemble.predict(X).shape == y.shape and 0 <= ensemble.oof_score_ <= 1


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, error, match", [
    (dict(presence_threshold=1.5), ValueError, "'presence_threshold' parameter"),
    (dict(max_blanked=-0.1), ValueError, "'max_blanked' parameter"),
    (dict(presence_threshold=[0.5, 0.5]), ValueError, r"one such float per class \(1\)"),
    (dict(presence_threshold=[[0.5]]), ValueError, r"one such float per class \(1\)"),
    (dict(cv=None), ValueError, "cv=None takes the held-out predictions from validation_data"),
    (dict(classifier="tree"), ValueError, "'classifier' parameter"),
    (dict(segmenter=object()), ValueError, "'segmenter' parameter"),
    (dict(cv=[(np.arange(10), np.arange(5)), (np.arange(10), np.arange(3, 8))]), ValueError,
     "test folds of cv overlap"),
])
def test_bad_parameters(params, error, match):
    X, y = salt_like(10)
    model = FalsePositiveFilter(BrightnessSegmenter(), "features").set_params(**params)
    with pytest.raises(error, match=match):
        model.fit(X, y)


def test_bad_fit_and_predict_input():
    X, y = salt_like(10)
    model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(), cv=2)
    with pytest.raises(ValueError, match="X and y must hold the same number of images"):
        model.fit(X[:9], y)
    with pytest.raises(TypeError, match=r"validation_data must be a tuple \(X_val, y_val\)"):
        model.fit(X, y, validation_data=[X])
    with pytest.raises(ValueError, match="X must have shape"):
        model.fit(X[0], y)
    with pytest.raises(NotFittedError):
        model.predict(X)
    model.fit(X, y)
    with pytest.raises(ValueError, match="y must hold one mask per image of X"):
        model.score(X, y[:, :4])


def test_segmenter_fitted_on_other_classes_is_refused():
    X, y = salt_like(10)
    frozen = FrozenEstimator(BrightnessSegmenter().fit(X, y * 255))
    X_val, y_val = make_images(VALIDATION_KINDS, first_id=50)
    with pytest.raises(ValueError, match=r"classes \[0, 255\], but y holds binary masks "
                                         r"with classes \[0, 1\]"):
        FalsePositiveFilter(frozen, PresenceLookup(TABLE), cv=None).fit(
            X, y, validation_data=(X_val, y_val))


# ------------------------------------------------------------- real networks
@pytest.fixture(scope="module")
def real_data():
    return synthetic_images(n=16, height=32, width=32, seed=5)


@pytest.fixture(scope="module")
def image_filter(real_data):
    X, y = real_data
    classifier = PresenceClassifier("vgg16", epochs=1, batch_size=4, validation_fraction=0,
                                    random_state=0)
    model = FalsePositiveFilter(UNetSegmenter(**SMALL, random_state=0), classifier,
                                tune_threshold=True, cv=None)
    return model.fit(X[:12], y[:12], validation_data=(X[12:], y[12:]))


def test_real_image_filter_predicts_the_segmenter_or_nothing(image_filter, real_data):
    X, y = real_data
    proba, plain = image_filter.predict_proba(X), image_filter.segmenter_.predict_proba(X)
    presence = image_filter.classifiers_[0].predict_proba(X)[:, 0]
    for i, kept in enumerate(presence > image_filter.presence_thresholds_[0]):
        np.testing.assert_array_equal(proba[i], plain[i] if kept else 0)
    masks = image_filter.predict(X)
    assert masks.shape == y.shape and masks.dtype == y.dtype
    assert image_filter.score(X, y) == pytest.approx(dice_score(y, masks))
    assert image_filter.n_held_out_ == 4 and 0 <= image_filter.presence_thresholds_[0] <= 1
    assert image_filter.classes_.tolist() == [0, 1] and image_filter.target_type_ == "binary"


@pytest.mark.slow
def test_real_image_filter_joblib_round_trip_in_a_fresh_process(image_filter, real_data,
                                                                 tmp_path):
    X, _ = real_data
    proba = predict_in_fresh_process(image_filter, X, tmp_path)["predict_proba"]
    np.testing.assert_allclose(proba, image_filter.predict_proba(X), atol=1e-6)


@pytest.mark.slow
def test_real_features_filter_on_out_of_fold_maps(image_filter, real_data):
    X, y = real_data
    segmenter = image_filter.segmenter_
    # the frozen segmenter is kept; one clone of it, fitted on 8 images, predicts the
    # other 8 for the logistic regression to learn from
    model = FalsePositiveFilter(FrozenEstimator(segmenter), "features",
                                cv=ShuffleSplit(n_splits=1, test_size=8, random_state=0))
    model.fit(X, y)
    assert model.segmenter_.estimator is segmenter
    assert model.n_held_out_ == 8 and model.kind_ == "features"
    assert isinstance(model.classifiers_[0], (Pipeline, DummyClassifier))
    masks = model.predict(X)
    assert masks.shape == y.shape
    assert model.score(X, y) == pytest.approx(dice_score(y, masks))
    assert all(0 <= rate <= 1 for rate in (model.fp_rate_, model.blanked_rate_)
               if not np.isnan(rate))


def test_mask_files_of_mixed_dtypes_are_read_as_one_encoding(tmp_path):
    # TGS salt stores its empty masks as 8-bit PNGs and the others as 16-bit (0/65535)
    import cv2

    from skunetseg._crossfit import label_values
    from skunetseg._false_positive import _encoding_of

    salt = np.zeros((SIZE, SIZE), dtype=np.uint16)
    salt[2:5, 2:5] = 65535
    paths = [str(tmp_path / "empty.png"), str(tmp_path / "salt.png")]
    cv2.imwrite(paths[0], np.zeros((SIZE, SIZE), dtype=np.uint8))
    cv2.imwrite(paths[1], salt)
    encoding = _encoding_of(paths, label_values(paths))
    assert encoding.target_type == "binary"
    assert encoding.classes.tolist() == [0, 65535]


# ------------------------------------------- parameters set after fit (issue 23)
def test_presence_threshold_set_after_fit_is_validated_and_applied():
    X, y = salt_like(30, seed=1)
    model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(), cv=3).fit(X, y)
    X_test, _ = salt_like(20, seed=5)
    presence_proba = PresenceLookup().fit(X, y[:, :1, :1]).predict_proba(X_test)[:, 0]
    for bad in (2.0, [0.5, 0.5], -0.1):
        with pytest.raises(ValueError, match="presence_threshold"):
            model.set_params(presence_threshold=bad).predict(X_test)
    # a valid value takes effect: at 1.0 every mask is blanked, at 0 none
    model.set_params(presence_threshold=1.0)
    assert not model.predict(X_test).any()
    model.set_params(presence_threshold=0.0)
    shown = model.predict(X_test).any(axis=(1, 2))
    np.testing.assert_array_equal(shown, model.segmenter_.predict(X_test).any(axis=(1, 2))
                                  & (presence_proba > 0))


def test_tuned_presence_thresholds_win_over_a_value_set_after_fit():
    X, y = salt_like(30, seed=1)
    model = FalsePositiveFilter(BrightnessSegmenter(), PresenceLookup(), cv=3,
                                tune_threshold=True).fit(X, y)
    X_test, _ = salt_like(20, seed=5)
    before, tuned = model.predict(X_test), model.presence_thresholds_.copy()
    with pytest.warns(UserWarning, match="presence_threshold=0.99 set after fit is not applied"):
        np.testing.assert_array_equal(model.set_params(presence_threshold=0.99).predict(X_test),
                                      before)
    np.testing.assert_array_equal(model.presence_thresholds_, tuned)
    with pytest.raises(ValueError, match="'tune_threshold' changed from True to False after fit"):
        model.set_params(tune_threshold=False, presence_threshold=0.5).predict(X_test)
