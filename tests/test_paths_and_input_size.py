"""File paths as X / y in UNetSegmenter (read batch by batch), and its input_size parameter."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SMALL, synthetic_images
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from skunetseg import FoldEnsemble, TargetEncoding, UNetSegmenter, dice_score, dice_scorer
from skunetseg._images import (
    ArrayImages,
    PathImages,
    check_images,
    load_labels,
    resize_images,
    restore_sizes,
)
from skunetseg.io import read_images
from skunetseg.postprocess import PostProcessing

#: One batch of 12 images and no validation split: the fastest tiny fit.
ONE_BATCH = {**SMALL, "batch_size": 12, "random_state": 0}


def write_pngs(folder, stack, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}{index:02d}.png" for index in range(len(stack))]
    for path, item in zip(paths, stack, strict=True):
        assert cv2.imwrite(str(path), np.ascontiguousarray(item))
    return paths


@pytest.fixture(scope="module")
def disc_files(tmp_path_factory):
    """The synthetic discs as arrays and as PNG files: (X, y, image paths, mask paths)."""
    folder = tmp_path_factory.mktemp("discs")
    X, y = synthetic_images(n=12)
    return X, y, write_pngs(folder / "images", X, "i"), write_pngs(folder / "masks", y, "m")


@pytest.fixture(scope="module")
def fitted_on_arrays_and_files(disc_files):
    X, y, image_paths, mask_paths = disc_files
    return (UNetSegmenter(**ONE_BATCH).fit(X, y),
            UNetSegmenter(**ONE_BATCH).fit(image_paths, mask_paths))


# ------------------------------------------------------------- image sources (no fit)
def test_path_images_read_like_the_arrays_they_hold(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (3, 20, 24, 3), dtype=np.uint16)
    paths = write_pngs(tmp_path, rgb[..., ::-1], "c")  # cv2 writes BGR
    source = PathImages([str(path) for path in paths], name="X")
    assert (len(source), source.n_channels, source.own_size) == (3, 3, (20, 24))
    np.testing.assert_array_equal(source.take([2, 0]), check_images(rgb)[[2, 0]])
    # resized on reading exactly as the same images resized in memory
    images, sizes = PathImages(paths, size=(11, 30)).read(slice(None))
    np.testing.assert_array_equal(images, ArrayImages(check_images(rgb), (11, 30)).take(
        slice(None)))
    assert images.shape == (3, 11, 30, 3) and sizes == [(20, 24)] * 3


def test_resizing_keeps_constants_and_restores_each_size():
    images = np.full((2, 8, 10, 3), 0.25, np.float32)
    assert resize_images(images, (8, 10)) is images
    assert resize_images(images, None) is images
    np.testing.assert_array_equal(resize_images(images, (5, 17)),
                                  np.full((2, 5, 17, 3), 0.25, np.float32))
    labels = np.zeros((1, 4, 4, 1), np.float32)
    labels[0, :2, :2] = 1  # the top-left quarter stays the top-left quarter
    np.testing.assert_array_equal(resize_images(labels, (8, 8), kind="mask")[0, ..., 0],
                                  np.kron(labels[0, ..., 0], np.ones((2, 2))))
    proba = np.stack([np.full((6, 6, 1), 0.2, np.float32), np.full((6, 6, 1), 0.7, np.float32)])
    same = restore_sizes(proba, [(9, 4), (9, 4)])
    assert isinstance(same, np.ndarray) and same.shape == (2, 9, 4, 1)
    different = restore_sizes(proba, [(9, 4), (3, 12)])
    assert [p.shape for p in different] == [(9, 4, 1), (3, 12, 1)]
    np.testing.assert_allclose(different[1], 0.7)


def test_mask_files_are_read_once_into_labels(disc_files):
    _, y, _, mask_paths = disc_files
    np.testing.assert_array_equal(load_labels(mask_paths), y)
    assert load_labels(y) is y
    assert load_labels(mask_paths, size=(20, 22)).shape == (12, 20, 22)


# ------------------------------------------------------------- errors (before any fit)
def test_a_missing_file_is_named(disc_files):
    _, _, image_paths, mask_paths = disc_files
    missing = image_paths[:-1] + [image_paths[0].parent / "nope.png"]
    with pytest.raises(FileNotFoundError, match=r"1 of the 12 files of X .*nope\.png"):
        UNetSegmenter(**SMALL).fit(missing, mask_paths)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        UNetSegmenter(**SMALL).fit(image_paths, mask_paths[:-1] + [missing[-1]])


def test_a_single_path_is_not_a_data_set(disc_files, fitted_on_arrays_and_files):
    X, y, image_paths, mask_paths = disc_files
    _, model = fitted_on_arrays_and_files
    with pytest.raises(TypeError, match=r"y must be an array of masks or a list of mask file "
                                        r"paths; got the single path '.*m00\.png'"):
        UNetSegmenter(**SMALL).fit(image_paths, mask_paths[0])
    with pytest.raises(TypeError, match=r"X must be an array of images or a list .* single"):
        model.score(str(image_paths[0]), y[:1])
    with pytest.raises(TypeError, match="pass a list|Pass"):
        model.predict(image_paths[0])


def test_an_unreadable_mask_file_is_named(disc_files, tmp_path):
    _, _, image_paths, mask_paths = disc_files
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Could not read the image file .*broken\.png"):
        UNetSegmenter(**SMALL).fit(image_paths, mask_paths[:-1] + [broken])


def test_files_of_different_sizes_need_input_size(disc_files, tmp_path):
    _, y, image_paths, mask_paths = disc_files
    bigger = write_pngs(tmp_path, np.zeros((1, 50, 44), np.uint8), "big")
    with pytest.raises(ValueError, match=r"big00\.png.* differ in size.*input_size="):
        UNetSegmenter(**SMALL).fit(image_paths, mask_paths[:-1] + bigger)
    with pytest.raises(ValueError, match=r"masks in y must have the height and width"):
        UNetSegmenter(**SMALL).fit(image_paths, y[:, :30])


@pytest.mark.parametrize("size", [(0, 32), (32,), "64x64", (32.0, 32), (True, 32)])
def test_input_size_is_validated_in_fit(binary_data, size):
    X, y = binary_data
    model = UNetSegmenter(**SMALL, input_size=size)
    with pytest.raises(ValueError, match="'input_size' parameter"):
        model.fit(X, y)


# ------------------------------------------------------------- same results as arrays
def test_files_train_and_predict_exactly_like_arrays(disc_files, fitted_on_arrays_and_files):
    X, y, image_paths, mask_paths = disc_files
    on_arrays, on_files = fitted_on_arrays_and_files
    proba = on_arrays.predict_proba(X)
    np.testing.assert_allclose(on_files.predict_proba(X), proba, atol=1e-6)
    # the same model, given files or arrays, predicts the same
    np.testing.assert_array_equal(on_files.predict_proba([str(p) for p in image_paths]),
                                  on_files.predict_proba(X))
    np.testing.assert_array_equal(on_files.predict(np.array(image_paths, dtype=str)),
                                  on_files.predict(X))
    assert on_files.classes_.tolist() == on_arrays.classes_.tolist() == [0, 1]
    assert on_files.n_channels_in_ == 1
    assert on_files.score(image_paths, mask_paths) == pytest.approx(on_files.score(X, y),
                                                                    abs=1e-12)
    assert on_files.score(X, mask_paths) == pytest.approx(on_files.score(image_paths, y),
                                                          abs=1e-12)


def test_files_are_predicted_chunk_by_chunk(disc_files, fitted_on_arrays_and_files,
                                            monkeypatch):
    X, _, image_paths, _ = disc_files
    _, model = fitted_on_arrays_and_files
    seen = []
    predict_views = model._predict_views
    monkeypatch.setattr(model, "batch_size", 1)  # chunks of 8 images
    monkeypatch.setattr(model, "_predict_views", lambda x: seen.append(len(x)) or
                        predict_views(x))
    np.testing.assert_allclose(model.predict_proba(image_paths), model.predict_proba(X),
                               atol=1e-6)
    assert seen == [8, 4, 8, 4]


def test_mixed_gray_and_colour_files_are_named(disc_files, fitted_on_arrays_and_files,
                                               tmp_path):
    X, _, image_paths, _ = disc_files
    _, model = fitted_on_arrays_and_files
    colour = write_pngs(tmp_path, np.repeat(X[:1, ..., None], 3, axis=-1), "rgb")
    with pytest.raises(ValueError, match=r"i00\.png.*1 channel.*rgb00\.png.*3 channel\(s\).* "
                                         r"differ in channel count \(gray and colour"):
        model.predict_proba(image_paths[:1] + colour)
    with pytest.raises(ValueError, match=r"X has 3 channel\(s\) \(file .*rgb00\.png.*fitted "
                                         r"on images with 1"):
        model.predict(colour)


@pytest.mark.slow
def test_fit_in_subprocess_sends_the_paths(disc_files, fitted_on_arrays_and_files):
    X, _, image_paths, mask_paths = disc_files
    _, on_files = fitted_on_arrays_and_files
    model = UNetSegmenter(**ONE_BATCH, fit_in_subprocess=True).fit(image_paths, mask_paths)
    np.testing.assert_allclose(model.predict_proba(X), on_files.predict_proba(X), atol=1e-6)


@pytest.mark.slow
def test_cross_val_score_over_paths_equals_over_arrays(disc_files):
    # augmented, several batches an epoch: files and arrays go through the same feed
    X, y, image_paths, mask_paths = disc_files
    model = UNetSegmenter(**{**SMALL, "augment": "flips"}, random_state=0)
    cv = KFold(2, shuffle=True, random_state=0)
    on_files = cross_val_score(model, image_paths, mask_paths, cv=cv)
    on_arrays = cross_val_score(model, X, y, cv=cv)
    assert on_files.shape == (2,) and np.all((0 <= on_files) & (on_files <= 1))
    np.testing.assert_allclose(on_files, on_arrays, atol=1e-6)


# ------------------------------------------------------------- input_size
def test_input_size_predicts_each_image_at_its_own_size(tmp_path):
    sizes = [(40, 44), (56, 48), (33, 70), (40, 44), (64, 30), (45, 45)]
    images, masks = [], []
    for seed, (height, width) in enumerate(sizes):
        image, mask = synthetic_images(n=1, height=height, width=width, seed=seed)
        images.append(image[0])
        masks.append(mask[0] * 255)  # labels 0 / 255
    image_paths = [write_pngs(tmp_path / f"x{i}", [image], "x")[0]
                   for i, image in enumerate(images)]
    mask_paths = [write_pngs(tmp_path / f"y{i}", [mask], "y")[0] for i, mask in enumerate(masks)]
    model = UNetSegmenter(**{**SMALL, "validation_fraction": 0.34}, input_size=(32, 48),
                          random_state=0).fit(image_paths, mask_paths)
    assert model.classes_.tolist() == [0, 255] and "val_dice" in model.history_[0]

    proba = model.predict_proba(image_paths)
    assert isinstance(proba, list) and [p.shape for p in proba] == [(*s, 1) for s in sizes]
    predicted = model.predict(image_paths)
    assert [m.shape for m in predicted] == sizes
    assert set(np.unique(np.concatenate([m.ravel() for m in predicted]))) <= {0, 255}
    for image, image_proba in zip(images, proba, strict=True):
        # an array of one size comes back as an array, predicted as its file was
        np.testing.assert_allclose(model.predict_proba(image[np.newaxis])[0], image_proba,
                                   atol=1e-6)
    expected = np.mean([dice_score(mask[None], (m == 255)[None]) for mask, m in
                        zip(masks, predicted, strict=True)])
    assert model.score(image_paths, mask_paths) == pytest.approx(expected)
    # files of one size give back an ndarray
    assert model.predict_proba(image_paths[:1] + image_paths[3:4]).shape == (2, 40, 44, 1)


# ------------------------------------------------------------- meta-estimators (stubs)
class ImageEcho(BaseEstimator):
    """Stub segmenter whose probability map is the image itself; the public contract only."""

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def fit(self, X, y, validation_data=None):
        self.fit_files_ = [str(path) for path in X]
        self.valid_files_ = None if validation_data is None else [
            str(path) for path in validation_data[0]]
        masks = read_images(y, kind="mask") if isinstance(y[0], (str, Path)) else y
        self.encoding_ = TargetEncoding.from_targets(masks)
        self.postprocessing_ = PostProcessing.from_params(1, threshold=self.threshold)
        self.classes_ = self.encoding_.classes
        self.n_classes_, self.target_type_ = len(self.classes_), self.encoding_.target_type
        return self

    def predict_proba(self, X):
        return read_images(X)[..., np.newaxis] / 255

    def predict(self, X):
        return self.encoding_.decode(self.postprocessing_.apply(self.predict_proba(X)))


def test_fold_ensemble_and_grid_search_index_paths(disc_files):
    X, y, image_paths, mask_paths = disc_files
    paths = [str(path) for path in image_paths]
    ensemble = FoldEnsemble(ImageEcho(), cv=KFold(3), threshold=0.5,
                            tune_postprocessing=False).fit(paths, y)
    np.testing.assert_array_equal(ensemble.oof_proba_, check_images(X))
    # masks as files too: the same out-of-fold score, and the same test score
    on_files = FoldEnsemble(ImageEcho(), cv=KFold(3), threshold=0.5,
                            tune_postprocessing=False).fit(paths, mask_paths)
    assert on_files.oof_score_ == ensemble.oof_score_
    assert on_files.score(paths, mask_paths) == ensemble.score(paths, y)
    for model, (train, test) in zip(ensemble.estimators_, ensemble.folds_, strict=True):
        assert model.fit_files_ == [paths[i] for i in train]
        assert model.valid_files_ == [paths[i] for i in test]
    np.testing.assert_array_equal(ensemble.predict(np.array(paths)), X > 127.5)

    search = GridSearchCV(ImageEcho(), {"threshold": [0.3, 0.6]}, cv=KFold(2),
                          scoring=dice_scorer).fit(paths, y)
    for index, threshold in enumerate([0.3, 0.6]):
        folds = [dice_score(y[test], X[test] / 255 > threshold)
                 for _, test in KFold(2).split(X)]
        assert search.cv_results_["mean_test_score"][index] == pytest.approx(np.mean(folds))
