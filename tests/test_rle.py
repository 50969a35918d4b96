"""Tests of skunetseg.rle: Kaggle run-length encoding and multi-label mask CSV files."""

import csv
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest

from skunetseg.rle import masks_from_csv, masks_to_csv, rle_decode, rle_encode

ODD_SHAPES = [(1, 1), (1, 7), (7, 1), (1, 101), (101, 1), (2, 3), (3, 2), (5, 5), (13, 7),
              (64, 33), (101, 101)]


def _shared_data_folder():
    """The shared data folder: $SKUNETSEG_SHARED_DATA, else <repo root>/../shared/data."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("SKUNETSEG_SHARED_DATA", default))


def _random_masks(rng, shape, n_masks):
    """Masks of ``shape`` from nearly empty to nearly full, with blobs and single pixels."""
    densities = np.linspace(0.02, 0.98, n_masks)
    return [(rng.random(shape) < density).astype(np.uint8) for density in densities]


# --- hand-computed examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    "mask, expected",
    [
        # column-major: column 1 holds pixels 1-3, column 2 pixels 4-6, column 3 pixels 7-9
        ([[0, 1, 0], [0, 1, 1], [0, 0, 0]], "4 2 8 1"),
        ([[1, 0, 0], [0, 0, 0], [0, 0, 0]], "1 1"),
        ([[0, 0, 0], [0, 0, 0], [0, 0, 1]], "9 1"),
        ([[1, 1, 1], [1, 1, 1], [1, 1, 1]], "1 9"),
        ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], ""),
        # a run continues from the bottom of one column to the top of the next
        ([[0, 1, 0], [0, 0, 0], [1, 0, 0]], "3 2"),
        # a 2x3 mask: rows and columns are not interchangeable
        ([[1, 1, 1], [0, 0, 0]], "1 1 3 1 5 1"),
        ([[1, 0, 0], [1, 0, 0]], "1 2"),
    ],
)
def test_rle_known_strings(mask, expected):
    mask = np.array(mask, dtype=np.uint8)
    assert rle_encode(mask) == expected
    decoded = rle_decode(expected, mask.shape)
    assert decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)


def test_rle_encode_treats_non_zero_as_object():
    values = np.array([[0.0, -2.5], [np.inf, 0.0]])
    assert rle_encode(values) == "2 2"
    assert rle_encode(values != 0) == "2 2"
    assert rle_encode([[0, 255], [65535, 0]]) == "2 2"


def test_rle_encode_empty_sized_mask():
    assert rle_encode(np.zeros((0, 4))) == ""
    assert rle_decode("", (0, 4)).shape == (0, 4)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_rle_round_trip_random_masks(shape):
    rng = np.random.default_rng(sum(shape))
    for mask in _random_masks(rng, shape, n_masks=25):
        rle = rle_encode(mask)
        np.testing.assert_array_equal(rle_decode(rle, shape), mask)
        # canonical: single spaces, no leading or trailing space, increasing runs
        assert rle == " ".join(rle.split())


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_rle_round_trip_special_masks(shape):
    height, width = shape
    special = {"empty": np.zeros(shape, dtype=np.uint8), "full": np.ones(shape, dtype=np.uint8)}
    for row, column in [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1)]:
        corner = np.zeros(shape, dtype=np.uint8)
        corner[row, column] = 1
        special[f"pixel ({row}, {column})"] = corner
    for name, mask in special.items():
        rle = rle_encode(mask)
        np.testing.assert_array_equal(rle_decode(rle, shape), mask, err_msg=name)
    assert rle_encode(special["empty"]) == ""
    assert rle_encode(special["full"]) == f"1 {height * width}"
    assert rle_encode(special[f"pixel ({height - 1}, {width - 1})"]) == f"{height * width} 1"


def test_rle_string_round_trip():
    rng = np.random.default_rng(0)
    for mask in _random_masks(rng, (9, 14), n_masks=20):
        rle = rle_encode(mask)
        assert rle_encode(rle_decode(rle, mask.shape)) == rle


# --- empty values and malformed strings -------------------------------------------------------


@pytest.mark.parametrize("empty", ["", "   ", None, float("nan"), np.float64("nan"),
                                   np.float32("nan")])
def test_rle_decode_empty_values(empty):
    decoded = rle_decode(empty, (3, 4))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.zeros((3, 4), dtype=np.uint8))


def test_rle_decode_accepts_other_whitespace_and_touching_runs():
    np.testing.assert_array_equal(rle_decode(" 1\t1\n 3  1 ", (2, 2)), [[1, 1], [0, 0]])
    # touching runs decode; the encoder merges them
    decoded = rle_decode("1 2 3 1", (2, 2))
    np.testing.assert_array_equal(decoded, [[1, 1], [1, 0]])
    assert rle_encode(decoded) == "1 3"


@pytest.mark.parametrize(
    "rle, message",
    [
        ("1 2 3", "odd number"),
        ("1", "odd number"),
        ("1 2.5", "value 2 of 2 is '2.5'"),
        ("a 2", "value 1 of 2 is 'a'"),
        ("1 -2", "value 2 of 2 is '-2'"),
        ("1,2", "value 1 of 1 is '1,2'"),
        ("0 2", "0 is not a valid start"),
        ("1 0", "run lengths must be positive"),
        ("3 0 5 1", "run lengths must be positive; run 1 of 2 is '3 0'"),
        ("12 1", "beyond the 9 pixels"),
        ("8 3", "runs must end within the 9 pixels"),
        ("1 99999999999999999999999", "beyond the 9 pixels"),
        ("5 1 1 1", "increasing order"),
        ("1 3 2 1", "must not overlap; run 2 of 2 is '2 1'"),
    ],
)
def test_rle_decode_malformed(rle, message):
    with pytest.raises(ValueError, match="rle") as info:
        rle_decode(rle, (3, 3))
    assert message in str(info.value)


@pytest.mark.parametrize("rle", [12, 1.5, b"1 2", ["1", "2"]])
def test_rle_decode_wrong_type(rle):
    with pytest.raises(TypeError, match="rle must be a string"):
        rle_decode(rle, (3, 3))


@pytest.mark.parametrize("shape", [(3,), (3, 3, 1), (-1, 3), (3.0, 3), (True, 3), "ab", 9])
def test_rle_decode_bad_shape(shape):
    with pytest.raises(ValueError, match=r"shape must be a pair \(height, width\)"):
        rle_decode("1 1", shape)


def test_rle_decode_accepts_numpy_shape():
    mask = rle_decode("1 1", np.array([2, 2]))
    np.testing.assert_array_equal(mask, [[1, 0], [0, 0]])


@pytest.mark.parametrize("mask", [np.zeros(4), np.zeros((2, 2, 1)), np.zeros(())])
def test_rle_encode_wrong_dimensions(mask):
    with pytest.raises(ValueError, match=r"mask must be 2-D, of shape \(height, width\)"):
        rle_encode(mask)


def test_rle_encode_wrong_values():
    with pytest.raises(TypeError, match="booleans or real numbers; got dtype <U1"):
        rle_encode(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="got dtype complex128"):
        rle_encode(np.ones((2, 2), dtype=complex))
    with pytest.raises(ValueError, match="mask holds NaN"):
        rle_encode(np.array([[0.0, math.nan]]))


# --- multi-label CSV files --------------------------------------------------------------------

LABELS = ["Fish", "Flower", "Gravel", "Sugar"]


def _random_multilabel(rng, n_images, shape):
    masks = (rng.random((n_images, *shape, len(LABELS))) < rng.random(len(LABELS))).astype(
        np.uint8)
    masks[0] = 0  # an image without any object
    masks[1, ..., 2] = 1  # a full mask
    image_ids = [f"img_{index:03d}.jpg" for index in range(n_images)]  # ids with underscores
    return image_ids, masks


def test_csv_round_trip_path(tmp_path):
    rng = np.random.default_rng(7)
    image_ids, masks = _random_multilabel(rng, n_images=6, shape=(9, 13))
    path = tmp_path / "masks.csv"
    masks_to_csv(path, image_ids, masks, LABELS)

    read_ids, read_masks = masks_from_csv(path, LABELS, (9, 13))
    assert read_ids == image_ids
    assert read_masks.dtype == np.uint8
    np.testing.assert_array_equal(read_masks, masks)

    with open(path, newline="", encoding="utf-8") as file:
        lines = file.read().split("\n")
    assert lines[0] == "Image_Label,EncodedPixels"
    assert lines[1:5] == [f"img_000.jpg_{label}," for label in LABELS]
    assert lines[7] == "img_001.jpg_Gravel,1 117"
    assert len(lines) == 1 + 6 * 4 + 1 and lines[-1] == ""


def test_csv_round_trip_file_objects():
    rng = np.random.default_rng(8)
    image_ids, masks = _random_multilabel(rng, n_images=4, shape=(5, 3))
    buffer = io.StringIO()
    masks_to_csv(buffer, image_ids, masks.astype(bool), LABELS)
    assert not buffer.closed
    buffer.seek(0)
    read_ids, read_masks = masks_from_csv(buffer, LABELS, (5, 3))
    assert read_ids == image_ids
    np.testing.assert_array_equal(read_masks, masks)


def test_csv_strings_match_rle_encode():
    rng = np.random.default_rng(9)
    image_ids, masks = _random_multilabel(rng, n_images=3, shape=(6, 4))
    buffer = io.StringIO()
    masks_to_csv(buffer, image_ids, masks, LABELS)
    buffer.seek(0)
    rows = list(csv.DictReader(buffer))
    expected = [(f"{image_id}_{label}", rle_encode(masks[i, :, :, k]))
                for i, image_id in enumerate(image_ids) for k, label in enumerate(LABELS)]
    assert [(row["Image_Label"], row["EncodedPixels"]) for row in rows] == expected


def test_masks_from_csv_missing_rows_order_and_extra_columns():
    text = ("ImageId,Image_Label,EncodedPixels\n"
            "x,b_2.jpg_Sugar,1 1\n"
            "x,a.jpg_Fish,3 2\n"
            "x,b_2.jpg_Fish,\n")
    image_ids, masks = masks_from_csv(io.StringIO(text), LABELS, (2, 2))
    assert image_ids == ["b_2.jpg", "a.jpg"]  # first appearance, split on the last underscore
    assert masks.shape == (2, 2, 2, 4)
    np.testing.assert_array_equal(masks[0, ..., 3], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(masks[1, ..., 0], [[0, 1], [0, 1]])
    assert masks[0, ..., :3].sum() == 0 and masks[1, ..., 1:].sum() == 0


@pytest.mark.parametrize(
    "body, error, message",
    [
        ("a.jpg_Fishy,1 1\n", ValueError, "unknown label 'Fishy'"),
        ("a_b.jpg,1 1\n", ValueError, "unknown label 'b.jpg' (in Image_Label='a_b.jpg')"),
        ("nounderscore,1 1\n", ValueError, "must be '<image_id>_<label>'"),
        ("_Fish,1 1\n", ValueError, "must be '<image_id>_<label>'"),
        ("a.jpg_Fish,1 1\na.jpg_Fish,\n", ValueError, "a second row for image 'a.jpg'"),
        ("a.jpg_Fish,1 9\n", ValueError, "Line 2 (Image_Label=a.jpg_Fish): rle holds the value 9"),
        ("b_Sugar,\na_Fish,2 4\n", ValueError, "Line 3 (Image_Label=a_Fish): Malformed rle"),
        ("a.jpg_Fish,1\n", ValueError, "Line 2 (Image_Label=a.jpg_Fish): rle must hold pairs"),
    ],
)
def test_masks_from_csv_bad_rows(body, error, message):
    text = "Image_Label,EncodedPixels\n" + body
    with pytest.raises(error) as info:
        masks_from_csv(io.StringIO(text), LABELS, (2, 2))
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "ImageId,EncodedPixels\na,1 1\n", "Image_Label\na_Fish\n"])
def test_masks_from_csv_missing_columns(text):
    with pytest.raises(ValueError, match="must have the columns 'Image_Label' and"):
        masks_from_csv(io.StringIO(text), LABELS, (2, 2))


@pytest.mark.parametrize(
    "labels, error, message",
    [
        ("Fish", TypeError, "not the string 'Fish'"),
        ([], ValueError, "at least one label"),
        ([1, 2], TypeError, "labels must be strings"),
        (["Fish", "Fish"], ValueError, "['Fish'] appear more than once"),
        (["Fish_Big"], ValueError, "without '_'"),
        ([""], ValueError, "without '_'"),
    ],
)
def test_csv_bad_labels(labels, error, message):
    with pytest.raises(error) as info:
        masks_from_csv(io.StringIO("Image_Label,EncodedPixels\n"), labels, (2, 2))
    assert message in str(info.value)
    with pytest.raises(error) as info:
        masks_to_csv(io.StringIO(), ["a"], np.zeros((1, 2, 2, max(len(labels), 1))), labels)
    assert message in str(info.value)


def test_csv_binary_file_objects():
    with pytest.raises(TypeError, match="text mode"):
        masks_from_csv(io.BytesIO(b"Image_Label,EncodedPixels\n"), LABELS, (2, 2))
    with pytest.raises(TypeError, match="text mode"):
        masks_to_csv(io.BytesIO(), ["a"], np.zeros((1, 2, 2, 4)), LABELS)


@pytest.mark.parametrize(
    "image_ids, masks, error, message",
    [
        (["a"], np.zeros((1, 2, 2)), ValueError, "masks must be 4-D"),
        (["a", "b"], np.zeros((1, 2, 2, 4)), ValueError, "got 2 ids for masks of shape"),
        (["a"], np.zeros((1, 2, 2, 3)), ValueError, "got 4 labels for masks of shape"),
        (["a", "a"], np.zeros((2, 2, 2, 4)), ValueError, "['a'] appear more than once"),
        ([7], np.zeros((1, 2, 2, 4)), TypeError, "non-empty strings; got 7"),
        ([""], np.zeros((1, 2, 2, 4)), TypeError, "non-empty strings; got ''"),
        ("ab", np.zeros((2, 2, 2, 4)), TypeError, "not the string 'ab'"),
        (["a"], np.full((1, 2, 2, 4), "x"), TypeError, "booleans or real numbers"),
    ],
)
def test_masks_to_csv_bad_arguments(tmp_path, image_ids, masks, error, message):
    path = tmp_path / "out.csv"
    with pytest.raises(error) as info:
        masks_to_csv(path, image_ids, masks, LABELS)
    assert message in str(info.value)
    assert not path.exists()  # nothing written when the arguments are wrong


def test_masks_to_csv_protects_existing_files(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_text("precious\n")
    masks = np.ones((1, 2, 2, 4), dtype=np.uint8)

    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        masks_to_csv(path, ["a.jpg"], masks, LABELS)
    with pytest.raises(FileExistsError):
        masks_to_csv(str(path), ["a.jpg"], masks, LABELS, overwrite=False)
    assert path.read_text() == "precious\n"

    # a failure while encoding leaves the file untouched, even with overwrite=True
    with pytest.raises(ValueError, match="NaN"):
        masks_to_csv(path, ["a.jpg"], np.full((1, 2, 2, 4), np.nan), LABELS, overwrite=True)
    assert path.read_text() == "precious\n"

    path.chmod(0o640)
    masks_to_csv(path, ["a.jpg"], masks, LABELS, overwrite=True)
    image_ids, read_masks = masks_from_csv(path, LABELS, (2, 2))
    assert image_ids == ["a.jpg"]
    np.testing.assert_array_equal(read_masks, masks)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]  # no leftovers


def test_masks_to_csv_overwrite_new_file_and_folder(tmp_path):
    path = tmp_path / "new.csv"
    masks_to_csv(path, ["a"], np.zeros((1, 2, 2, 4)), LABELS, overwrite=True)
    assert path.read_text().startswith("Image_Label,EncodedPixels\na_Fish,\n")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        masks_to_csv(tmp_path, ["a"], np.zeros((1, 2, 2, 4)), LABELS, overwrite=True)


# --- real data: TGS salt ----------------------------------------------------------------------


def _tgs_salt_folder():
    folder = _shared_data_folder() / "tgs-salt"
    if not (folder / "train.csv").is_file() or not (folder / "masks").is_dir():
        pytest.skip(f"TGS salt data not found at {folder} (needs train.csv and masks/); "
                    "set SKUNETSEG_SHARED_DATA to the folder that holds tgs-salt/.")
    return folder


def test_tgs_salt_csv_matches_png_masks():
    cv2 = pytest.importorskip("cv2")
    folder = _tgs_salt_folder()
    with open(folder / "train.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    sample = rows[::20]  # 200 of the 4000 rows, spread over the file
    assert len(sample) >= 150
    n_with_salt = 0
    for row in sample:
        png = cv2.imread(str(folder / "masks" / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED)
        assert png is not None, row["id"]
        # salt masks are 16-bit (0 and 65535); empty ones are stored as 8-bit zeros
        assert png.shape == (101, 101)
        assert set(np.unique(png).tolist()) <= {0, np.iinfo(png.dtype).max}
        expected = (png != 0).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(row["rle_mask"], png.shape), expected,
                                      err_msg=row["id"])
        assert rle_encode(png) == row["rle_mask"], row["id"]
        n_with_salt += bool(row["rle_mask"])
    assert 0 < n_with_salt < len(sample)  # both empty and non-empty masks were checked


def test_masks_to_csv_under_a_file_size_limit_leaves_no_partial_file(tmp_path):
    """``ulimit -f``: the write fails, and neither a truncated CSV nor a temporary file is
    left; an existing file being replaced stays whole."""
    import subprocess
    import sys
    import textwrap

    existing = tmp_path / "old.csv"
    existing.write_text("ImageId_ClassId,EncodedPixels\nkeep,1 1\n")
    code = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from skunetseg.rle import masks_to_csv
        masks = np.random.default_rng(0).random((20, 64, 64, 1)) > 0.5  # long RLE rows
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        for path, overwrite in ((sys.argv[1] + "/sub.csv", False),
                                (sys.argv[1] + "/old.csv", True)):
            try:
                masks_to_csv(path, [f"i{k}" for k in range(20)], masks, ["a"],
                             overwrite=overwrite)
            except OSError as error:
                print(error.errno)
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["27", "27"]  # EFBIG, twice
    assert sorted(os.listdir(tmp_path)) == ["old.csv"]
    assert existing.read_text() == "ImageId_ClassId,EncodedPixels\nkeep,1 1\n"
