"""skunetseg.io: reading image files, pairing folders, writing masks, predicting to a folder.

Files are written with OpenCV (which takes colour in BGR order) into tmp_path; the
one TensorFlow model is the shared ``fitted_binary`` fixture.
"""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_data_home

from skunetseg.io import (
    check_paths,
    is_path_sequence,
    load_image_folder,
    predict_to_dir,
    read_image,
    read_images,
    read_mask,
    write_mask,
)


def _random(shape, dtype, seed=0):
    high = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, high, size=shape, endpoint=True, dtype=dtype)


def _write(path, rgb):
    """Write an RGB (or gray) array with OpenCV, which stores colour given in BGR order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1] if rgb.ndim == 3 else rgb)
    return path


# --- reading one file -------------------------------------------------------------------------

@pytest.mark.parametrize("ext, dtype, channels", [
    (".png", np.uint8, 0), (".png", np.uint16, 0), (".png", np.uint8, 3),
    (".png", np.uint16, 3), (".tif", np.uint16, 0), (".tiff", np.uint8, 3),
    (".tif", np.uint16, 3),
])
def test_lossless_files_read_back_exactly_in_rgb_order(tmp_path, ext, dtype, channels):
    image = _random((9, 13, channels) if channels else (9, 13), dtype)
    path = _write(tmp_path / f"image{ext}", image)
    for given in (path, str(path)):
        read = read_image(given)
        assert read.dtype == dtype and read.shape == image.shape
        np.testing.assert_array_equal(read, image)


def test_colour_comes_in_rgb_order(tmp_path):
    path = tmp_path / "bgr.png"
    cv2.imwrite(str(path), np.full((2, 2, 3), (10, 20, 30), np.uint8))  # OpenCV order: B, G, R
    assert read_image(path)[0, 0].tolist() == [30, 20, 10]


def test_jpeg_reads_close_to_what_was_written(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    image = np.stack([2 * xx, 3 * yy, xx + yy], axis=-1).astype(np.uint8)  # smooth: JPEG-friendly
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    read = read_image(path)
    assert read.shape == image.shape and read.dtype == np.uint8
    assert np.abs(read.astype(int) - image).mean() < 3


def test_alpha_is_dropped_and_equal_channels_stay_three(tmp_path):
    rgba = _random((5, 6, 4), np.uint8)
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), rgba[..., [2, 1, 0, 3]])  # OpenCV order: B, G, R, A
    np.testing.assert_array_equal(read_image(path), rgba[..., :3])

    gray = _random((5, 6), np.uint8)
    path = _write(tmp_path / "gray_as_rgb.png", np.repeat(gray[..., None], 3, axis=-1))
    assert read_image(path).shape == (5, 6, 3)  # not guessed to be gray
    np.testing.assert_array_equal(read_mask(path), gray)  # a mask is one channel


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="garbage.png"):
        read_image(tmp_path / "garbage.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png"):
        read_mask(tmp_path / "empty.png")
    with pytest.raises(TypeError, match="str or os.PathLike"):
        read_image(3)


def test_masks_keep_their_stored_values(tmp_path):
    salt = np.zeros((4, 5), np.uint16)
    salt[1:3, 2:] = 65535
    np.testing.assert_array_equal(read_mask(_write(tmp_path / "salt.png", salt)), salt)
    assert read_mask(tmp_path / "salt.png").dtype == np.uint16

    colours = np.zeros((4, 5, 3), np.uint8)
    colours[0, 0] = (255, 0, 0)
    with pytest.raises(ValueError, match="colour.png.*channels that differ"):
        read_mask(_write(tmp_path / "colour.png", colours))


# --- sequences of paths ---------------------------------------------------------------------

@pytest.mark.parametrize("X, expected", [
    (["a.png", "b.png"], True),
    ((Path("a.png"),), True),
    (np.array(["a.png", "b.png"]), True),
    (np.array([Path("a.png"), "b.png"], dtype=object), True),
    ([], False),
    ("a.png", False),
    (Path("a.png"), False),
    (np.zeros((2, 4, 4)), False),
    (["a.png", 3], False),
    (np.array([["a.png"]]), False),
])
def test_is_path_sequence(X, expected):
    assert is_path_sequence(X) is expected


def test_check_paths(tmp_path):
    paths = [_write(tmp_path / f"{i}.png", np.zeros((2, 2), np.uint8)) for i in range(3)]
    assert check_paths([str(p) for p in paths]) == paths
    with pytest.raises(TypeError, match="single path.*pass a list"):
        check_paths(str(paths[0]))
    with pytest.raises(TypeError, match="item 1 is 7"):
        check_paths([paths[0], 7])
    with pytest.raises(ValueError, match="y holds no file paths"):
        check_paths([], name="y")
    with pytest.raises(FileNotFoundError,
                       match=r"7 of the 10 files of X.*gone0.png'.*\(and 2 more\)"):
        check_paths(paths + [tmp_path / f"gone{i}.png" for i in range(7)])


# --- reading many files -----------------------------------------------------------------------

def test_read_images_stacks_in_the_given_order(tmp_path):
    images = [_random((6, 7, 3), np.uint8, seed) for seed in range(3)]
    paths = [_write(tmp_path / f"{name}.png", image)
             for name, image in zip("cab", images, strict=True)]
    stack = read_images(paths)
    assert stack.shape == (3, 6, 7, 3) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack, np.stack(images))


def test_files_that_cannot_be_stacked_are_named(tmp_path):
    small = _write(tmp_path / "small.png", np.zeros((4, 4), np.uint8))
    large = _write(tmp_path / "large.png", np.zeros((5, 4), np.uint8))
    colour = _write(tmp_path / "colour.png", np.zeros((4, 4, 3), np.uint8))
    deep = _write(tmp_path / "deep.png", np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match=r"X: .*small.png.*4x4.*large.png.*5x4.*differ in size"
                                         r".*size=\(height, width\).*input_size"):
        read_images([small, large])
    with pytest.raises(ValueError, match="small.png.*colour.png.*differ in channel count"):
        read_images([small, colour], size=(4, 4))
    with pytest.raises(ValueError, match="small.png.*deep.png.*differ in dtype"):
        read_images([small, deep])


def test_masks_of_two_bit_depths_stack_with_their_values(tmp_path):
    # the TGS salt layout: empty masks stored as 8-bit zeros, the others as 16-bit 0/65535
    salt = np.zeros((4, 4), np.uint16)
    salt[:2] = 65535
    paths = [_write(tmp_path / "empty.png", np.zeros((4, 4), np.uint8)),
             _write(tmp_path / "salt.png", salt)]
    stack = read_images(paths, kind="mask")
    assert stack.dtype == np.uint16
    np.testing.assert_array_equal(stack, [np.zeros((4, 4)), salt])


def test_images_shrink_by_area_and_grow_bilinearly(tmp_path):
    row = _write(tmp_path / "row.png", np.array([[0, 30, 90, 120, 150, 240]], np.uint8))
    # area: means of 3 pixels; bilinear would sample pixels 1 and 4 (30, 150)
    assert read_images([row], size=(1, 2)).tolist() == [[[40, 170]]]
    pair = _write(tmp_path / "pair.png", np.array([[0, 100]], np.uint8))
    # bilinear from pixel centres; area would repeat pixels (0, 0, 100, 100)
    assert read_images([pair], size=(1, 4)).tolist() == [[[0, 25, 75, 100]]]
    colour = _write(tmp_path / "colour.png", _random((10, 20, 3), np.uint8))
    assert read_images([colour, colour], size=(3, 5)).shape == (2, 3, 5, 3)  # (height, width)


def test_masks_resize_by_nearest_neighbour(tmp_path):
    labels = np.random.default_rng(0).choice(np.array([0, 3, 7], np.uint8), size=(37, 41))
    path = _write(tmp_path / "labels.png", labels)
    for size in ((20, 50), (64, 64), (5, 3)):
        resized = read_images([path], kind="mask", size=size)
        assert resized.shape == (1, *size)
        assert np.isin(resized, [0, 3, 7]).all()
    # the nearest pixel to the output pixel's centre, as the images' resize aligns them
    centre = _write(tmp_path / "three.png", np.array([[2, 7, 4]], np.uint8))
    assert read_images([centre], kind="mask", size=(1, 1)).tolist() == [[[7]]]
    pair = _write(tmp_path / "pair.png", np.array([[0, 5]], np.uint8))
    assert read_images([pair], kind="mask", size=(1, 4)).tolist() == [[[0, 0, 5, 5]]]
    with pytest.raises(ValueError, match="nearest neighbour only"):
        read_images([path], kind="mask", size=(4, 4), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="label"), "kind must be 'image' or 'mask'"),
    (dict(size=(0, 4)), "size must be a pair"),
    (dict(size=32), "size must be a pair"),
])
def test_read_images_rejects_bad_arguments(tmp_path, kwargs, match):
    path = _write(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=match):
        read_images([path], **kwargs)


# --- pairing folders --------------------------------------------------------------------------

def test_folders_pair_by_name_whatever_the_extensions(tmp_path):
    images = {"0002": ".jpg", "0001": ".png", "0003": ".TIF"}
    for stem, ext in images.items():
        _write(tmp_path / "images" / f"{stem}{ext}", np.full((4, 4), int(stem), np.uint8))
        _write(tmp_path / "masks" / f"{stem}_mask.png", np.full((4, 4), int(stem), np.uint8))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "._0001.png").write_bytes(b"macOS resource fork, not an image")

    image_paths, mask_paths = load_image_folder(tmp_path / "images", tmp_path / "masks",
                                                mask_suffix="_mask")
    assert [p.name for p in image_paths] == ["0001.png", "0002.jpg", "0003.TIF"]
    assert [p.name for p in mask_paths] == ["0001_mask.png", "0002_mask.png", "0003_mask.png"]
    assert all(isinstance(p, Path) for p in image_paths + mask_paths)

    X, y = load_image_folder(tmp_path / "images", str(tmp_path / "masks"), mask_suffix="_mask",
                             as_arrays=True)
    assert X.shape == y.shape == (3, 4, 4)
    np.testing.assert_array_equal(y[:, 0, 0], [1, 2, 3])
    assert abs(int(X[1, 0, 0]) - 2) <= 1  # the JPEG, lossy

    only_images, none = load_image_folder(tmp_path / "images", extensions=(".png",))
    assert [p.name for p in only_images] == ["0001.png"] and none is None


def test_unpaired_files_are_listed(tmp_path):
    for stem in ("a", "b", "c"):
        _write(tmp_path / "images" / f"{stem}.png", np.zeros((2, 2), np.uint8))
    for stem in ("a", "x", *(f"extra{i}" for i in range(6))):
        _write(tmp_path / "masks" / f"{stem}.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"2 image\(s\) without a mask.*'b.png', 'c.png'.*"
                                         r"7 mask\(s\) without an image.*\(and 2 more\)"):
        load_image_folder(tmp_path / "images", tmp_path / "masks")
    # a mask name without the suffix does not pair
    with pytest.raises(ValueError, match="'a.png', 'b.png', 'c.png'"):
        load_image_folder(tmp_path / "images", tmp_path / "masks", mask_suffix="_mask")


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="images_dir.*nowhere"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="images_dir.*holds no files"):
        load_image_folder(tmp_path / "empty")
    _write(tmp_path / "images" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="masks_dir.*holds no files"):
        load_image_folder(tmp_path / "images", tmp_path / "empty")
    _write(tmp_path / "images" / "a.tif", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="'a.png' and 'a.tif'.*same name"):
        load_image_folder(tmp_path / "images")
    with pytest.raises(ValueError, match="extensions must"):
        load_image_folder(tmp_path / "images", extensions=("png",))


# --- writing masks ----------------------------------------------------------------------------

@pytest.mark.parametrize("mask, dtype, values", [
    (np.array([[0, 1], [1, 0]], np.uint8), np.uint8, [[0, 1], [1, 0]]),
    (np.array([[0, 1], [1, 0]], np.uint16), np.uint8, [[0, 1], [1, 0]]),
    (np.array([[0, 255], [300, 65535]], np.int64), np.uint16, [[0, 255], [300, 65535]]),
    (np.array([[True, False], [False, True]]), np.uint8, [[255, 0], [0, 255]]),
    (np.array([[0.0, 2.0], [2.0, 0.0]]), np.uint8, [[0, 2], [2, 0]]),
    (np.array([[[0], [9]], [[9], [0]]], np.int32), np.uint8, [[0, 9], [9, 0]]),
])
def test_masks_are_written_in_the_smallest_bit_depth(tmp_path, mask, dtype, values):
    path = write_mask(tmp_path / "deep" / "folder" / "mask.png", mask)
    assert path == tmp_path / "deep" / "folder" / "mask.png"
    read = read_mask(path)
    assert read.dtype == dtype
    assert read.tolist() == values


@pytest.mark.parametrize("mask, match", [
    (np.array([[0, -1]]), "from -1 to 0"),
    (np.array([[0, 65536]]), "from 0 to 65536"),
    (np.array([[0.0, 0.5]]), "non-integer"),
    (np.zeros((2, 2, 2), np.uint8), r"shape \(height, width\).*one file per class"),
])
def test_masks_a_png_cannot_hold_are_rejected(tmp_path, mask, match):
    with pytest.raises(ValueError, match=match):
        write_mask(tmp_path / "mask.png", mask)
    assert not (tmp_path / "mask.png").exists()


def test_write_mask_never_overwrites_unless_asked(tmp_path):
    path = write_mask(tmp_path / "mask.png", np.ones((3, 3), np.uint8))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="mask.png.*overwrite=True"):
        write_mask(path, np.full((3, 3), 2, np.uint8))
    assert path.read_bytes() == before
    write_mask(str(path), np.full((3, 3), 2, np.uint8), overwrite=True)
    assert read_mask(path).tolist() == [[2] * 3] * 3
    with pytest.raises(ValueError, match="must end with '.png'"):
        write_mask(tmp_path / "mask.jpg", np.ones((3, 3), np.uint8))


# --- predicting to a folder -------------------------------------------------------------------

class LevelStub:
    """Predicts ``image > level`` for each level (a channel each when several); logs calls."""

    def __init__(self, levels=(100,)):
        self.levels = levels
        self.calls = []

    def predict(self, X):
        X = np.asarray(X)
        self.calls.append(X.shape)
        masks = np.stack([X > level for level in self.levels], axis=-1).astype(np.uint8)
        return masks[..., 0] if len(self.levels) == 1 else masks


def _image_files(folder, shapes, seed=0):
    """Gray uint8 files ``img00.png`` ... of the given (height, width) shapes."""
    return [_write(folder / f"img{i:02d}.png", _random(shape, np.uint8, seed + i))
            for i, shape in enumerate(shapes)]


def test_predict_to_dir_writes_what_predict_gives(fitted_binary, binary_data, tmp_path):
    X, _ = binary_data
    paths = [_write(tmp_path / "images" / f"img{i:02d}.png", image) for i, image in enumerate(X)]
    expected = fitted_binary.predict(X)

    written = predict_to_dir(fitted_binary, [str(p) for p in paths], tmp_path / "out",
                             batch_size=5)
    assert [p.name for p in written] == [p.name for p in paths]
    np.testing.assert_array_equal(np.stack([read_mask(p) for p in written]), expected)

    written = predict_to_dir(fitted_binary, X, tmp_path / "from_array", batch_size=5)
    assert [p.name for p in written] == [f"{i:05d}.png" for i in range(len(X))]
    np.testing.assert_array_equal(np.stack([read_mask(p) for p in written]), expected)


def test_predict_to_dir_leaves_existing_files_alone(tmp_path):
    paths = _image_files(tmp_path / "images", [(6, 6)] * 5)
    out = tmp_path / "out"
    existing = write_mask(out / "img03.png", np.full((6, 6), 9, np.uint8))
    before = existing.read_bytes()
    stub = LevelStub()
    with pytest.raises(FileExistsError, match=r"1 mask file.*'img03.png'.*overwrite=True"):
        predict_to_dir(stub, paths, out, batch_size=2)
    assert stub.calls == []  # checked before predicting anything
    assert os.listdir(out) == ["img03.png"] and existing.read_bytes() == before

    written = predict_to_dir(stub, paths, out, batch_size=2, overwrite=True)
    assert len(written) == 5 and stub.calls == [(2, 6, 6), (2, 6, 6), (1, 6, 6)]
    np.testing.assert_array_equal(read_mask(existing), read_image(paths[3]) > 100)

    # a file of the per-class naming blocks too: the layout is unknown before predicting
    write_mask(tmp_path / "other" / "img00_1.png", np.zeros((6, 6), np.uint8))
    with pytest.raises(FileExistsError, match="img00_1.png"):
        predict_to_dir(stub, paths, tmp_path / "other")


def test_multilabel_predictions_give_one_file_per_class(tmp_path):
    paths = _image_files(tmp_path / "images", [(5, 7)] * 3)
    written = predict_to_dir(LevelStub(levels=(50, 100, 200)), paths, tmp_path / "out",
                             suffix="_pred.png")
    assert [p.name for p in written] == [f"img{i:02d}_{k}_pred.png"
                                         for i in range(3) for k in range(3)]
    for i, path in enumerate(paths):
        for k, level in enumerate((50, 100, 200)):
            np.testing.assert_array_equal(read_mask(written[3 * i + k]), read_image(path) > level)


def test_images_of_different_sizes_are_predicted_in_same_size_runs(tmp_path):
    shapes = [(6, 6), (6, 6), (8, 5), (6, 6), (8, 5)]
    paths = _image_files(tmp_path / "images", shapes)
    stub = LevelStub()
    written = predict_to_dir(stub, paths, tmp_path / "out", batch_size=4)
    assert stub.calls == [(2, 6, 6), (1, 8, 5), (1, 6, 6), (1, 8, 5)]
    for path, mask_path in zip(paths, written, strict=True):
        np.testing.assert_array_equal(read_mask(mask_path), read_image(path) > 100)


def test_predict_to_dir_prints_a_line_per_chunk(tmp_path, capsys):
    paths = _image_files(tmp_path / "images", [(4, 4)] * 5)
    predict_to_dir(LevelStub(), paths, tmp_path / "out", batch_size=2, verbose=1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("predict_to_dir: 5/5 images, 5 mask files")


def test_predict_to_dir_checks_before_it_starts(tmp_path):
    paths = _image_files(tmp_path / "a", [(4, 4)] * 2)
    twin = _image_files(tmp_path / "b", [(4, 4)])[0]  # b/img00.png: the name of a/img00.png
    out = tmp_path / "out"
    stub = LevelStub()
    with pytest.raises(ValueError, match="same name.*'img00'"):
        predict_to_dir(stub, paths + [twin], out)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        predict_to_dir(stub, paths + [tmp_path / "gone.png"], out)
    with pytest.raises(TypeError, match="pass a list"):
        predict_to_dir(stub, str(paths[0]), out)
    with pytest.raises(ValueError, match="suffix must end with '.png'"):
        predict_to_dir(stub, paths, out, suffix=".jpg")
    with pytest.raises(TypeError, match="must have a predict method"):
        predict_to_dir(object(), paths, out)
    with pytest.raises(ValueError, match=r"shape \(n_images, height, width"):
        predict_to_dir(stub, np.zeros((4, 4)), out)
    assert stub.calls == [] and not out.exists()

    class OneMaskShort(LevelStub):
        def predict(self, X):
            return super().predict(X)[1:]

    with pytest.raises(ValueError, match="one mask per image.*for 2 image"):
        predict_to_dir(OneMaskShort(), paths, out)


# --- real data --------------------------------------------------------------------------------

def _real_folder(name):
    folder = shared_data_home() / name
    if not (folder / "images").is_dir():
        pytest.skip(f"the {name} data is not in {folder.parent}")
    return folder


def test_membrane_folder_reads_as_load_membrane(membrane):
    folder = _real_folder("membrane")
    images, masks = load_image_folder(folder / "images", folder / "masks", as_arrays=True)
    np.testing.assert_array_equal(images, membrane.images)
    np.testing.assert_array_equal(masks == 0, membrane.masks)  # raw files: 255 = cell interior


def test_tgs_salt_folder_pairs_and_stacks_its_mixed_masks():
    folder = _real_folder("tgs-salt")
    images, masks = load_image_folder(folder / "images", folder / "masks")
    assert len(images) == len(masks) == 4000
    assert [p.stem for p in images] == [p.stem for p in masks]
    sample = masks[:60]
    one_by_one = [read_mask(path) for path in sample]
    assert {mask.dtype for mask in one_by_one} == {np.dtype(np.uint8), np.dtype(np.uint16)}
    stack = read_images(sample, kind="mask")
    assert stack.dtype == np.uint16 and np.isin(stack, [0, 65535]).all()
    np.testing.assert_array_equal(stack, one_by_one)
