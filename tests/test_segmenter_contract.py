"""The public segmenter contract, the chunked predict engine and the cross-fitting engine.

The last tests rerun the table of issue 11 on a folder of PNG images of three sizes
with PNG masks, every estimator given ``input_size``.
"""

import cv2
import numpy as np
import pytest
from conftest import SMALL, synthetic_images
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    ShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
)

from skunetseg import (
    FalsePositiveFilter,
    FoldEnsemble,
    PresenceClassifier,
    TargetEncoding,
    UNetSegmenter,
    dice_score,
)
from skunetseg._crossfit import make_folds
from skunetseg._images import image_source
from skunetseg.postprocess import PostProcessing, postprocess, tune_postprocessing


class Thresholded(BaseEstimator):
    """A user's own segmenter: public contract only. Its probability is the image's
    brightness; it logs how many images each ``predict_proba`` call gets."""

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def fit(self, X, y, validation_data=None):
        self.encoding_ = TargetEncoding.from_targets(y)
        self.postprocessing_ = PostProcessing.from_params(
            self.encoding_.n_outputs, threshold=self.threshold,
            activation=self.encoding_.activation)
        self.classes_ = self.encoding_.classes
        self.n_classes_, self.target_type_ = len(self.classes_), self.encoding_.target_type
        self.calls_ = []
        return self

    def predict_proba(self, X):
        self.calls_.append(len(X))
        return np.asarray(X, dtype=np.float32)[..., np.newaxis] / 255


# ------------------------------------------------------------------ value objects
def test_postprocessing_applies_itself_like_postprocess_and_per_image_to_lists():
    rng = np.random.default_rng(0)
    proba = rng.uniform(size=(3, 10, 12, 2)).astype(np.float32)
    settings = PostProcessing.from_params(2, threshold=[0.4, 0.6], min_area=[0, 20],
                                          min_component_area=2)
    expected = postprocess(proba, threshold=[0.4, 0.6], min_area=[0, 20], min_component_area=2)
    np.testing.assert_array_equal(settings.apply(proba), expected)
    maps = [proba[0], proba[1, :8, :9]]  # two sizes: each image at its own size
    per_image = settings.apply(maps)
    np.testing.assert_array_equal(per_image[0], expected[0])
    np.testing.assert_array_equal(per_image[1], settings.apply(proba[1:2, :8, :9])[0])
    assert PostProcessing.from_params(3, threshold=0.3, activation="softmax").threshold is None
    with pytest.raises(ValueError, match="min_area must be a number or a sequence of one"):
        PostProcessing.from_params(2, min_area=[1, 2, 3])


def test_target_encoding_encodes_and_decodes_arrays_and_lists():
    y = np.array([[[0, 255], [255, 0]]], dtype=np.uint8)
    encoding = TargetEncoding.from_targets(y)
    assert encoding.target_type == "binary" and encoding.classes.tolist() == [0, 255]
    masks = encoding.encode(y) > 0.5
    np.testing.assert_array_equal(encoding.decode(masks), y)
    decoded = encoding.decode([masks[0], masks[0, :1]])
    assert isinstance(decoded, list) and decoded[1].shape == (1, 2)
    np.testing.assert_array_equal(decoded[0], y[0])


def test_tune_postprocessing_over_maps_of_several_sizes_counts_every_image_once():
    rng = np.random.default_rng(1)
    proba = [rng.uniform(size=(h, w, 1)).astype(np.float32) * s
             for h, w, s in [(8, 8, 1), (8, 8, 0.3), (12, 10, 1), (12, 10, 0.3)]]
    truth = [p > 0.45 for p in proba]
    search = tune_postprocessing(proba, truth)
    chosen = PostProcessing.from_params(1, threshold=search.thresholds, min_area=search.min_areas)
    by_hand = np.mean([dice_score(t[None], m[None])
                       for t, m in zip(truth, chosen.apply(proba), strict=True)])
    assert search.score_after == pytest.approx(by_hand)
    assert search.thresholds == (0.45,) and search.score_after == pytest.approx(1.0)
    # maps of one size give the same search as a list or as an array
    same = tune_postprocessing(np.stack(proba[:2]), np.stack(truth[:2]))
    assert tune_postprocessing(proba[:2], truth[:2]) == same


# --------------------------------------------------------- the engines, with stubs
def test_meta_estimators_predict_a_chunk_at_a_time():
    X, y = synthetic_images(n=140, height=8, width=8)
    ensemble = FoldEnsemble(Thresholded(), cv=2, tune_postprocessing=False,
                            random_state=0).fit(X, y)
    for model in ensemble.estimators_:
        model.calls_.clear()
    ensemble.predict(X)
    assert all(model.calls_ == [64, 64, 12] for model in ensemble.estimators_)
    assert ensemble.score(X, y) == pytest.approx(dice_score(y, X > 127.5))


def test_folds_are_checked_before_any_fold_trains():
    X, y = synthetic_images(n=8, height=8, width=8)
    y[:] = 0
    y[0, 0, 0] = 1  # only image 0 holds an object: the fold without it cannot see class 1
    with pytest.raises(ValueError, match=r"training part of fold 0 holds the mask values "
                                         r"\[0\] but y holds \[0, 1\]"):
        FoldEnsemble(Thresholded(), cv=KFold(2)).fit(X, y)
    with pytest.raises(ValueError, match=r"training part of fold 0"):
        FalsePositiveFilter(Thresholded(), "features", cv=KFold(2)).fit(X, y)


def test_int_cv_means_the_same_stratified_shuffled_folds_in_both_meta_estimators(
        monkeypatch):
    import skunetseg._crossfit as crossfit
    X, y = synthetic_images(n=12, height=8, width=8, seed=3)
    has_object = y.reshape(len(y), -1).any(axis=1)
    assert 3 <= has_object.sum() <= 9  # two patterns, each in 3 images or more
    expected = [test.tolist() for _, test in
                StratifiedKFold(3, shuffle=True, random_state=4).split(X, has_object)]
    ensemble = FoldEnsemble(Thresholded(), cv=3, random_state=4).fit(X, y)
    assert [test.tolist() for _, test in ensemble.folds_] == expected
    made = []
    monkeypatch.setattr(crossfit, "make_folds",
                        lambda *args, **kwargs: made.append(make_folds(*args, **kwargs))
                        or made[-1])
    fp_filter = FalsePositiveFilter(Thresholded(), "features", cv=3, random_state=4).fit(X, y)
    assert [test.tolist() for _, test in made[0]] == expected
    assert fp_filter.n_held_out_ == 12


def held_out_rows(folds):
    return [sorted(test.tolist()) for _, test in folds]


@pytest.mark.parametrize("splitter", [StratifiedKFold(3, shuffle=True, random_state=2),
                                      GroupKFold(3), StratifiedGroupKFold(3)],
                         ids=lambda splitter: type(splitter).__name__)
def test_any_splitter_gets_the_class_pattern_as_y_and_groups_in_both_meta_estimators(
        splitter, monkeypatch):
    import skunetseg._crossfit as crossfit
    X, y = synthetic_images(n=12, height=8, width=8, seed=3)
    has_object = y.reshape(len(y), -1).any(axis=1)
    grouped = not isinstance(splitter, StratifiedKFold)
    groups = np.arange(12) // 2 if grouped else None  # six groups of two images
    expected = held_out_rows(splitter.split(X, has_object, groups))
    made = []
    monkeypatch.setattr(crossfit, "make_folds",
                        lambda *args, **kwargs: made.append(make_folds(*args, **kwargs))
                        or made[-1])
    ensemble = FoldEnsemble(Thresholded(), cv=splitter).fit(X, y, groups=groups)
    FalsePositiveFilter(Thresholded(), "features", cv=splitter).fit(X, y, groups=groups)
    around_ensemble = FalsePositiveFilter(FoldEnsemble(Thresholded(), cv=splitter),
                                          "features").fit(X, y, groups=groups)
    assert held_out_rows(ensemble.folds_) == expected
    assert held_out_rows(made[1]) == expected  # the filter's own cross-fitting
    assert held_out_rows(around_ensemble.segmenter_.folds_) == expected
    for folds in (ensemble.folds_, made[1], around_ensemble.segmenter_.folds_):
        for train, test in folds:
            if grouped:  # groups stay on one side
                assert not set(groups[train]) & set(groups[test])
            assert has_object[train].any() and not has_object[train].all()


class FileBrightness(Thresholded):
    """``Thresholded`` that reads its images as the package's estimators do, files and
    decoded chunks included (``_takes_decoded_images``); it logs the type it was given."""

    _takes_decoded_images = True

    def predict_proba(self, X):
        self.calls_.append(type(X).__name__)
        return image_source(X).take(slice(None))[..., :1]


class PathsOnly(FileBrightness):
    """The same, as a user's segmenter that knows nothing of decoded chunks."""

    _takes_decoded_images = False


class FileBrightest(ClassifierMixin, BaseEstimator):
    """An image presence classifier reading as the package does: the brightest pixel."""

    _takes_decoded_images = True

    def fit(self, X, y):
        self.classes_ = np.arange(np.shape(y)[1])
        return self

    def predict_proba(self, X):
        return image_source(X).take(slice(None)).max(axis=(1, 2))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


def test_the_ladder_decodes_each_file_once_per_predict(tmp_path, monkeypatch):
    import skunetseg._images as images_module
    X, y = synthetic_images(n=10, height=8, width=8, seed=3)
    paths = [write_png(tmp_path / f"i{index}.png", image) for index, image in enumerate(X)]
    ladder = FalsePositiveFilter(FoldEnsemble(FileBrightness(), cv=3, random_state=0),
                                 FileBrightest()).fit(X, y)
    expected = ladder.predict_proba(X)
    decoded, read_image = [], images_module.read_image
    monkeypatch.setattr(images_module, "read_image",
                        lambda path, **kwargs: decoded.append(str(path))
                        or read_image(path, **kwargs))
    np.testing.assert_array_equal(ladder.predict_proba(paths), expected)
    assert sorted(decoded) == sorted(paths)  # not once per fold model and classifier
    # a model that does not say it reads decoded chunks gets the files, as before
    ensemble = FoldEnsemble(PathsOnly(), cv=2, random_state=0).fit(X, y)
    on_arrays = ensemble.predict_proba(X)
    decoded.clear()
    np.testing.assert_array_equal(ensemble.predict_proba(paths), on_arrays)
    assert all(model.calls_[-1] == "list" for model in ensemble.estimators_)
    assert len(decoded) == 2 * (len(paths) + 1)  # each also reads its first file twice


# ------------------------------------------- the table: files of three sizes
def write_png(path, array):
    cv2.imwrite(str(path), array)
    return str(path)


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory):
    """12 PNG images of 64, 72 and 80 px with their PNG masks (0/255)."""
    folder = tmp_path_factory.mktemp("mixed")
    images, masks = [], []
    for index in range(12):
        size = (64, 72, 80)[index % 3]
        X, y = synthetic_images(n=1, height=size, width=size, seed=index)
        if index % 4 == 0:  # some images hold no object
            X, y = np.full_like(X, 60), np.zeros_like(y)
        images.append(write_png(folder / f"i{index:02d}.png", X[0]))
        masks.append(write_png(folder / f"m{index:02d}.png", y[0] * 255))
    return images, masks


SEG = dict(SMALL, input_size=(64, 64), random_state=0)


def own_size_masks(predicted, paths):
    return [m.shape == cv2.imread(p, cv2.IMREAD_UNCHANGED).shape
            for m, p in zip(predicted, paths, strict=True)]


@pytest.fixture(scope="module")
def mixed_ensemble(mixed_files):
    images, masks = mixed_files
    return FoldEnsemble(UNetSegmenter(**SEG), cv=2, tune_postprocessing=True,
                        random_state=0).fit(images, masks)


def test_fold_ensemble_on_files_of_mixed_sizes(mixed_ensemble, mixed_files):
    images, masks = mixed_files
    oof = mixed_ensemble.oof_proba_
    assert isinstance(oof, list) and len(oof) == 12
    assert [p.shape[:2] for p in oof] == [(s, s) for s in (64, 72, 80) * 4]
    predicted = mixed_ensemble.predict(images)
    assert isinstance(predicted, list) and all(own_size_masks(predicted, images))
    assert set(np.unique(np.concatenate([m.ravel() for m in predicted]))) <= {0, 255}
    truth = [cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in masks]
    expected = np.mean([dice_score(t[None] > 0, (m == 255)[None])
                        for t, m in zip(truth, predicted, strict=True)])
    assert mixed_ensemble.score(images, masks) == pytest.approx(expected)
    assert 0 <= mixed_ensemble.oof_score_ <= 1


def test_false_positive_filter_on_files_of_mixed_sizes(mixed_ensemble, mixed_files):
    images, masks = mixed_files
    classifier = PresenceClassifier("vgg16", input_size=(64, 64), epochs=1, batch_size=4,
                                    validation_fraction=0, random_state=0)
    # cv=None: the threshold is tuned on the validation files (one fit, the classifier's,
    # not six: the segmenter is a fold model of the ensemble, trained on these files there;
    # the out-of-fold route of the image classifier is tested in test_false_positive.py)
    model = FalsePositiveFilter(FrozenEstimator(mixed_ensemble.estimators_[0]), classifier,
                                cv=None, tune_threshold=True, random_state=0)
    model.fit(images[:8], masks[:8], validation_data=(images[8:], masks[8:]))
    assert model.n_held_out_ == 4 and model.kind_ == "image"
    proba, plain = model.predict_proba(images), model.segmenter_.predict_proba(images)
    presence = model.classifiers_[0].predict_proba(images)[:, 0]
    for image_proba, image_plain, kept in zip(proba, plain, presence >
                                              model.presence_thresholds_[0], strict=True):
        np.testing.assert_array_equal(image_proba, image_plain if kept else 0)
    predicted = model.predict(images)
    assert all(own_size_masks(predicted, images))
    assert 0 <= model.score(images, masks) <= 1


def test_false_positive_filter_around_a_fold_ensemble_on_files(mixed_ensemble, mixed_files):
    images, masks = mixed_files
    # the fitted ensemble is kept; a clone of it, fitted on 8 images, gives held-out maps
    model = FalsePositiveFilter(FrozenEstimator(mixed_ensemble), "features",
                                cv=ShuffleSplit(n_splits=1, test_size=4, random_state=0))
    model.fit(images, masks)
    assert model.n_held_out_ == 4 and model.postprocessing_ == mixed_ensemble.postprocessing_
    predicted = model.predict(images)
    assert isinstance(predicted, list) and all(own_size_masks(predicted, images))
    assert 0 <= model.score(images, masks) <= 1
