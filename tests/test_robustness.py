"""Robustness: gray-level masks, interrupted fits, input scale, changed parameters, damaged
files, crash-safe writes, thread-safe loading (issue 12). Each test reproduces one failure."""

import copy
import json
import os
import pickle
import shutil
import threading
import time
import warnings
import zipfile

import cv2
import joblib
import numpy as np
import pytest
from conftest import SMALL
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from skunetseg import UNetSegmenter, load
from skunetseg._targets import encode_targets, fit_target_encoding
from skunetseg.io import read_images, read_mask, write_mask


# ------------------------------------------------------------------ 1. gray-level masks
def _jpeg_masks(masks, folder, quality=75):
    """Write 0/255 masks as JPEG files (compression noise) and as PNG; return both lists."""
    folder.mkdir(exist_ok=True)
    jpegs, pngs = [], []
    for index, mask in enumerate(masks):
        jpegs.append(folder / f"{index}.jpg")
        pngs.append(folder / f"{index}.png")
        assert cv2.imwrite(str(jpegs[-1]), mask * np.uint8(255),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert cv2.imwrite(str(pngs[-1]), mask * np.uint8(255))
    return jpegs, pngs


def test_jpeg_masks_are_refused_with_the_files_named(binary_data, tmp_path):
    _, masks = binary_data
    jpegs, _ = _jpeg_masks(masks, tmp_path / "masks")
    labels = read_images(jpegs, name="y", kind="mask")
    assert len(np.unique(labels)) > 2  # the noise the issue describes
    with pytest.raises(ValueError,
                       match=r"gray-level.*distinct values.*binarize_masks=True") as info:
        fit_target_encoding(labels, name="y", row_names=[str(p) for p in jpegs])
    assert "0.jpg" in str(info.value) or "1.jpg" in str(info.value)
    # the estimator refuses before building a network
    with pytest.raises(ValueError, match="binarize_masks=True"):
        UNetSegmenter(**SMALL).fit(binary_data[0], jpegs)


def test_anti_aliased_array_masks_are_refused_naming_rows():
    masks = np.zeros((3, 32, 32), np.uint8)
    cv2.circle(masks[1], (16, 16), 9, 255, -1, lineType=cv2.LINE_AA)  # gray edges
    with pytest.raises(ValueError, match=r"rows 1\b"):
        fit_target_encoding(masks)


@pytest.mark.parametrize("quality", [75, 90])
def test_jpeg_masks_of_thin_structures_are_refused(tmp_path, quality):
    """Cracks saved as JPEG: ringing spreads the pixels over many values near 0 and 255, so
    the two most frequent values hold under 80 % of the pixels (at quality 90 they are
    both near black); the values still cluster near two far-apart levels (issue 23)."""
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 32, 32), np.uint8)
    for mask in masks:
        for _ in range(4):
            ends = rng.integers(0, 32, 4).tolist()
            cv2.line(mask, ends[:2], ends[2:], 1, 1)
    jpegs, _ = _jpeg_masks(masks, tmp_path / "masks", quality=quality)
    labels = read_images(jpegs, name="y", kind="mask")
    values, counts = np.unique(labels, return_counts=True)
    assert len(values) > 16 and np.sort(counts)[-2:].sum() / counts.sum() < 0.8
    with pytest.raises(ValueError, match="looks like gray-level images") as caught:
        fit_target_encoding(labels, name="y", row_names=[str(p) for p in jpegs])
    assert str(jpegs[0]) in str(caught.value) and "binarize_masks=True" in str(caught.value)


@pytest.mark.parametrize("labels", [
    np.arange(5, dtype=np.uint8).repeat(100).reshape(1, 20, 25),           # small consecutive
    np.array([0, 64, 128, 192, 255], np.uint8).repeat(100).reshape(1, 20, 25),  # a few values
    np.r_[np.zeros(900), np.ones(60), np.full(40, 2)].astype(np.uint8).reshape(1, 20, 50),
])
def test_genuine_label_maps_still_train_as_multiclass(labels):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_target_encoding(labels).target_type == "multiclass"


def test_many_labels_warn():
    labels = np.arange(40, dtype=np.uint8).repeat(10).reshape(1, 20, 20)
    with pytest.warns(UserWarning, match="40 distinct labels"):
        fit_target_encoding(labels)


def test_binarize_recovers_the_clean_targets(binary_data, tmp_path):
    _, masks = binary_data
    jpegs, pngs = _jpeg_masks(masks, tmp_path / "masks")
    clean = read_images(pngs, kind="mask")
    recovered = read_images(jpegs, kind="mask", binarize=True)
    encoding = fit_target_encoding(clean)
    assert fit_target_encoding(recovered).classes.tolist() == [0, 255]
    np.testing.assert_array_equal(encode_targets(recovered, encoding),
                                  encode_targets(clean, encoding))
    # one mask, colour JPEG, and arrays of every dtype
    rgb = tmp_path / "rgb.jpg"
    cv2.imwrite(str(rgb), np.repeat(masks[1][..., None] * np.uint8(255), 3, axis=-1))
    np.testing.assert_array_equal(read_mask(rgb, binarize=True), masks[1] * 255)
    from skunetseg.io import binarize_mask

    for mask in (masks, masks.astype(bool), masks * np.uint16(65535), masks.astype(float)):
        np.testing.assert_array_equal(binarize_mask(mask), masks * 255)


def test_a_model_fitted_on_binarized_jpeg_masks_is_the_one_fitted_on_clean_masks(
        fitted_binary, binary_data, tmp_path):
    X, masks = binary_data
    jpegs, pngs = _jpeg_masks(masks, tmp_path / "masks")
    # fitted_binary was fitted with these parameters on the clean 0/1 masks
    on_jpeg = UNetSegmenter(**{**SMALL, "epochs": 2, "validation_fraction": 0.2},
                            binarize_masks=True, random_state=0).fit(X, jpegs)
    assert on_jpeg.target_type_ == "binary" and on_jpeg.classes_.tolist() == [0, 255]
    np.testing.assert_allclose(on_jpeg.predict_proba(X[:4]), fitted_binary.predict_proba(X[:4]),
                               atol=1e-4)
    assert on_jpeg.score(X, jpegs) == pytest.approx(fitted_binary.score(X, masks), abs=1e-4)
    assert on_jpeg.score(X, jpegs) == pytest.approx(on_jpeg.score(X, pngs), abs=1e-6)


# ------------------------------------------------------------ 2. Ctrl-C before an epoch
def _interrupting_callback():
    from skunetseg._backend import keras

    class Interrupt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # inside Keras' fit, before any epoch
            raise KeyboardInterrupt

    return Interrupt()


def test_ctrl_c_before_the_first_epoch_leaves_the_estimator_unfitted(binary_data):
    X, y = binary_data
    model = UNetSegmenter(**SMALL, callbacks=[_interrupting_callback()])
    with pytest.raises(KeyboardInterrupt, match="before the first epoch"):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    assert not hasattr(model, "classes_")


def test_a_failed_refit_leaves_the_earlier_fit_intact(fitted_binary, binary_data,
                                                      monkeypatch):
    from skunetseg._keras_estimator import KerasModelMixin

    X, y = binary_data
    model = copy.copy(fitted_binary)
    expected = fitted_binary.predict_proba(X[:2])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(KerasModelMixin, "_build_and_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y * 3)  # classes 0/3: they must not replace the fitted [0, 1]
    assert model.classes_.tolist() == [0, 1] and model.history_ == fitted_binary.history_
    np.testing.assert_allclose(model.predict_proba(X[:2]), expected, atol=1e-6)


# ------------------------------------------------------------ 3. another dtype at predict
def test_predicting_another_scale_warns_naming_both(fitted_binary, binary_data):
    X, _ = binary_data
    assert fitted_binary.input_dtype_ == "uint8"
    assert fitted_binary.input_range_ == (0.0, 255.0)
    with pytest.warns(UserWarning, match=r"float32 with values in \[.*uint8"):
        fitted_binary.predict_proba(X[:2].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted_binary.predict_proba(X[:2])  # the fitted dtype
        fitted_binary.predict_proba(X[:2].astype(np.float32) / 255)  # the same scale
    # fitted on floats up to 255, predicted on uint8 (scaled to [0, 1])
    model = copy.copy(fitted_binary)
    model._record_input("float32", (0.0, 255.0))
    with pytest.warns(UserWarning, match="uint8"):
        model.predict_proba(X[:2])


def test_models_pickled_before_the_input_was_recorded_load_and_do_not_warn(
        fitted_binary, binary_data):
    state = fitted_binary.__getstate__()
    for name in ("input_dtype_", "input_range_", "_fit_architecture", "binarize_masks",
                 "_weights_sha256"):
        state.pop(name, None)
    old = UNetSegmenter.__new__(UNetSegmenter)
    old.__setstate__(state)
    assert old.binarize_masks is False  # a parameter added later takes its default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old.predict_proba(binary_data[0][:2].astype(np.float32))


# ------------------------------------------------------- 4. architecture changed after fit
def test_changing_an_architecture_parameter_after_fit_refuses_to_predict(
        fitted_binary, binary_data):
    X, _ = binary_data
    model = copy.copy(fitted_binary)
    model.set_params(decoder_filters=(32, 16, 8, 8, 4))
    with pytest.raises(ValueError, match=r"'decoder_filters' changed from .* after fit.*Refit"):
        model.predict_proba(X[:1])
    unpickled = pickle.loads(pickle.dumps(model))
    with pytest.raises(ValueError, match="'decoder_filters' changed"):
        unpickled.predict(X[:1])
    model.set_params(decoder_filters=[16, 8, 8, 4, 4])  # the fitted value again (as a list)
    model.predict_proba(X[:1])


# ------------------------------------------------------------- 5. corrupted joblib file
def test_a_corrupted_joblib_file_is_refused_naming_it(fitted_binary, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted_binary, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(255 - b for b in data[middle:middle + 4096])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.joblib.*SHA-256.*corrupted"):
        joblib.load(path)


# ----------------------------------------------------------------- 6. crash-safe save
def _saved_model_is_complete(path):
    return (path / "model.keras").is_file() and (path / "skunetseg.json").is_file()


def test_save_over_a_model_keeps_one_complete_model_at_every_step(
        fitted_binary, binary_data, tmp_path, monkeypatch):
    from skunetseg import _atomic

    X, _ = binary_data
    path = tmp_path / "model"
    # a crash while Keras writes the archive: no model, no staging folder left
    with monkeypatch.context() as patch:
        patch.setattr(type(fitted_binary.model_), "save",
                      lambda self, *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            fitted_binary.save(path)
        assert os.listdir(tmp_path) == []
        # and over an existing model: the old model untouched
        patch.undo()
        fitted_binary.save(path)
        before = sorted(os.listdir(tmp_path))
        patch.setattr(type(fitted_binary.model_), "save",
                      lambda self, *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            fitted_binary.save(path, overwrite=True)
        assert sorted(os.listdir(tmp_path)) == before and _saved_model_is_complete(path)

    # a crash between the two renames: the old model is the backup, and load finds it
    real_replace, calls = os.replace, []

    def crash_on_second_rename(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(_atomic.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        fitted_binary.save(path, overwrite=True)
    monkeypatch.undo()
    assert _saved_model_is_complete(path)  # the failed swap put the old model back
    assert not any(".staging" in name for name in os.listdir(tmp_path))

    # a process killed between the renames (no exception handler runs): load the backup
    shutil.move(str(path), _atomic.backup_path(path))
    with pytest.warns(UserWarning, match="interrupted save"):
        np.testing.assert_allclose(load(path).predict_proba(X[:1]),
                                   fitted_binary.predict_proba(X[:1]), atol=1e-6)
    fitted_binary.save(path)  # the next save completes the swap and drops the backup
    assert _saved_model_is_complete(path) and not os.path.exists(_atomic.backup_path(path))


# ------------------------------------------------------------ 7. crash-safe mask writes
def test_an_interrupted_mask_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from skunetseg import _atomic

    target = tmp_path / "out" / "a.png"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_atomic.os, "link", crash)
    monkeypatch.setattr(_atomic.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_mask(target, np.ones((4, 4), np.uint8))
    assert os.listdir(tmp_path / "out") == []  # neither the final name nor a temporary one
    monkeypatch.undo()
    write_mask(target, np.ones((4, 4), np.uint8))  # a rerun writes it
    np.testing.assert_array_equal(read_mask(target), np.ones((4, 4)))
    with pytest.raises(FileExistsError):
        write_mask(target, np.zeros((4, 4), np.uint8))
    write_mask(target, np.zeros((4, 4), np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_mask(target), np.zeros((4, 4)))
    assert os.listdir(tmp_path / "out") == ["a.png"]


# -------------------------------------------------- 8. concurrent first predict_proba
def test_concurrent_first_predictions_after_unpickling(fitted_binary, binary_data):
    X, _ = binary_data
    model = pickle.loads(pickle.dumps(fitted_binary))
    build = model._build_model

    def slow_build(*args, **kwargs):  # widen the window in which both threads rebuild
        time.sleep(0.5)
        return build(*args, **kwargs)

    model._build_model = slow_build
    results, errors = [None, None], []

    def run(index):
        try:
            results[index] = model.predict_proba(X[:2])
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    np.testing.assert_allclose(results[0], results[1])
    del model._build_model
    copy.deepcopy(model).predict_proba(X[:1])  # the lock is not pickled, copies still work


# --------------------------------------------------- 9. predict validates its parameters
def test_predict_validates_the_parameters_it_uses(fitted_binary, binary_data):
    model = copy.copy(fitted_binary).set_params(batch_size=0)
    with pytest.raises(ValueError, match="'batch_size' parameter of UNetSegmenter"):
        model.predict(binary_data[0][:1])


# --------------------------------------------------------------- 10. damaged saves
@pytest.mark.parametrize("damage", ["truncated archive", "corrupted archive",
                                    "truncated json", "json disagrees"])
def test_loading_a_damaged_save_names_the_file(fitted_binary, tmp_path, damage):
    path = tmp_path / "model"
    fitted_binary.save(path)
    archive, params = path / "model.keras", path / "skunetseg.json"
    if damage == "truncated archive":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        expected = "model.keras.*truncated or corrupted"
    elif damage == "corrupted archive":
        data = bytearray(archive.read_bytes())
        with zipfile.ZipFile(archive) as bundle:
            info = bundle.getinfo("model.weights.h5")
        start = info.header_offset + 100
        data[start:start + 64] = bytes(255 - b for b in data[start:start + 64])
        archive.write_bytes(bytes(data))
        expected = "model.keras"
    elif damage == "truncated json":
        params.write_text(params.read_text()[:100])
        expected = "skunetseg.json.*not valid JSON"
    else:
        document = json.loads(params.read_text())
        document["fitted"]["n_channels_in_"] = 3
        params.write_text(json.dumps(document))
        expected = "1 input .* describes 3"
    with pytest.raises(ValueError, match=expected) as info:
        load(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------- 11. unreadable files before fit
def test_a_bad_image_file_is_found_before_training(binary_data, tmp_path, monkeypatch):
    X, y = binary_data
    paths = []
    for index, image in enumerate(X[:6]):
        paths.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(paths[-1]), image)
    paths[4].write_bytes(paths[4].read_bytes()[:200])  # truncated
    (tmp_path / "notes.png").write_text("not an image")
    paths.append(tmp_path / "notes.png")
    from skunetseg import _keras_estimator

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(_keras_estimator.KerasModelMixin, "_build_and_train", never)
    with pytest.raises(ValueError, match=r"2 of the 7 files of X.*4\.png.*notes\.png"):
        UNetSegmenter(**SMALL).fit(paths, np.concatenate([y[:6], y[:1]]))


# ------------------------------------------------- files checked before any network
def _image_files(folder, sizes, suffix=".png"):
    """Noisy gray images of ``sizes`` and their blob masks, as files; returns both lists."""
    from skunetseg.io import write_mask

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    images, masks = [], []
    for index, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), np.uint8)
        mask[5:15, 5:15] = 1
        image = np.clip(60 + 120 * mask + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)
        images.append(folder / "images" / f"{index}{suffix}")
        assert cv2.imwrite(str(images[-1]), image)
        masks.append(write_mask(folder / "masks" / f"{index}.png", mask))
    return images, masks


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if a network gets built."""
    def build(*args, **kwargs):
        raise AssertionError("a network was built before the files were checked")

    monkeypatch.setattr(UNetSegmenter, "_build_model", build)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_images_of_mixed_sizes_are_refused_before_any_network_is_built(
        tmp_path, no_network, suffix):
    images, masks = _image_files(tmp_path, [(32, 32)] * 5 + [(48, 32)] + [(32, 32)] * 2,
                                 suffix)
    with pytest.raises(ValueError, match="differ in size; pass input_size") as caught:
        UNetSegmenter(**SMALL).fit(images, masks)
    assert str(images[5]) in str(caught.value) and str(images[0]) in str(caught.value)


def test_a_jpeg_cut_short_after_its_header_is_refused_before_any_network_is_built(
        tmp_path, no_network):
    images, masks = _image_files(tmp_path, [(32, 32)] * 8, ".jpg")
    data = images[6].read_bytes()
    images[6].write_bytes(data[:len(data) // 3])  # the header and a part of the scan
    with pytest.raises(ValueError, match="cannot be read as images") as caught:
        UNetSegmenter(**SMALL).fit(images, masks)
    assert str(images[6]) in str(caught.value)


def test_header_sizes_are_the_decoded_sizes(tmp_path):
    from skunetseg.io import header_size, read_image

    for suffix in (".png", ".jpg", ".bmp", ".tif"):
        for size in ((32, 48), (7, 5)):
            path = tmp_path / f"{size[0]}x{size[1]}{suffix}"
            assert cv2.imwrite(str(path), np.zeros((*size, 3), np.uint8))
            expected = None if suffix == ".tif" else size  # TIFF: decoded instead
            assert header_size(path) == expected
            assert read_image(path).shape[:2] == size
