"""Run-length encoding of masks in the Kaggle convention, and Kaggle mask CSV files.

The Kaggle segmentation competitions (salt, clouds, steel, ...) store a binary
mask as a string of ``"start length start length ..."`` pairs:

* pixels are numbered column by column (top to bottom, then left to right; the
  Fortran order of NumPy), starting from 1;
* each pair marks ``length`` object pixels, beginning at pixel ``start``;
* an empty mask is the empty string.

:func:`rle_encode` and :func:`rle_decode` convert one mask; :func:`masks_from_csv`
and :func:`masks_to_csv` read and write the multi-label CSV files of the clouds
and steel competitions, with the columns ``Image_Label`` (``"<image_id>_<label>"``)
and ``EncodedPixels``.
"""

import csv
import io
import math
import numbers
import os

import numpy as np

from . import _atomic
from ._checks import check_height_width

__all__ = ["rle_encode", "rle_decode", "masks_from_csv", "masks_to_csv"]

_ID_COLUMN = "Image_Label"
_RLE_COLUMN = "EncodedPixels"


def _check_labels(labels):
    """Return ``labels`` as a list of unique strings without underscores."""
    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of strings, not the string {labels!r}.")
    labels = list(labels)
    if not labels:
        raise ValueError("labels must hold at least one label; got an empty sequence.")
    for label in labels:
        if not isinstance(label, str):
            raise TypeError(
                f"labels must be strings (as they appear in {_ID_COLUMN}); got {label!r} of "
                f"type {type(label).__name__}. Pass [str(label) for label in labels]."
            )
        if not label or "_" in label:
            raise ValueError(
                f"Each label must be a non-empty string without '_', since {_ID_COLUMN} "
                f"is split on its last underscore; got {label!r}."
            )
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"labels must be unique; {duplicates} appear more than once.")
    return labels


def _check_text_file(file):
    """Raise a TypeError when the file object ``file`` was opened in binary mode."""
    if isinstance(file, (io.RawIOBase, io.BufferedIOBase)) or "b" in getattr(file, "mode", ""):
        raise TypeError("path_or_file must be a path or a file object opened in text mode; "
                        f"got the binary file object {file!r}.")


def _is_missing(rle):
    """Whether ``rle`` is an empty value: None or a float NaN (an empty cell read by pandas)."""
    return rle is None or (isinstance(rle, numbers.Real) and not isinstance(rle, numbers.Integral)
                           and math.isnan(rle))


def rle_encode(mask):
    """Encode a 2-D mask as a Kaggle run-length string.

    Pixels are numbered column by column (top to bottom, then left to right),
    starting from 1; each run is written as ``"start length"``, and the runs are
    separated by single spaces, in increasing order and never touching.

    Parameters
    ----------
    mask : array-like of shape (height, width)
        Boolean or numeric mask; non-zero pixels belong to the object.

    Returns
    -------
    rle : str
        The run-length string, empty for a mask without object pixels.

    Raises
    ------
    TypeError
        If ``mask`` is neither boolean nor numeric.
    ValueError
        If ``mask`` is not 2-D or holds NaN.

    See Also
    --------
    rle_decode : The inverse conversion.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.rle import rle_encode
    >>> mask = np.array([[0, 1, 0],
    ...                  [0, 1, 1],
    ...                  [0, 0, 0]])
    >>> rle_encode(mask)  # column 2 holds pixels 4-6, column 3 pixels 7-9
    '4 2 8 1'
    >>> rle_encode(np.zeros((2, 2), dtype=bool))
    ''
    """
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"mask must hold booleans or real numbers; got dtype {mask.dtype}.")
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, of shape (height, width); got shape {mask.shape}.")
    if mask.dtype.kind == "f" and np.isnan(mask).any():
        raise ValueError("mask holds NaN; it must be 0 off the object and non-zero on it.")
    pixels = mask.ravel(order="F") != 0
    padded = np.concatenate(([False], pixels, [False]))
    # 1-indexed pixel numbers where a run starts, then where the pixel after a run is
    boundaries = np.flatnonzero(np.diff(padded)) + 1
    boundaries[1::2] -= boundaries[::2]
    return " ".join(map(str, boundaries.tolist()))


def rle_decode(rle, shape):
    """Decode a Kaggle run-length string into a mask.

    Parameters
    ----------
    rle : str or None
        ``"start length start length ..."`` with 1-indexed starts and pixels
        numbered column by column (top to bottom, then left to right); the values
        may be separated by any whitespace. An empty or blank string, ``None`` or
        a float NaN (how pandas reads an empty CSV cell) is an empty mask.

        The runs must be in increasing order and must not overlap; a run may
        begin right after the previous one (the string then decodes, but
        :func:`rle_encode` gives back the two runs merged into one).
    shape : tuple of int
        ``(height, width)`` of the mask.

    Returns
    -------
    mask : ndarray of shape (height, width), dtype uint8
        1 on the object pixels, 0 elsewhere.

    Raises
    ------
    TypeError
        If ``rle`` is neither a string nor an empty value.
    ValueError
        If ``shape`` is not a pair of non-negative integers, or ``rle`` is
        malformed: an odd number of values, a value that is not a non-negative
        integer, a start of 0, a length of 0, a run past the last pixel, or runs
        out of order or overlapping.

    See Also
    --------
    rle_encode : The inverse conversion.

    Examples
    --------
    >>> from skunetseg.rle import rle_decode
    >>> rle_decode("4 2 8 1", (3, 3))
    array([[0, 1, 0],
           [0, 1, 1],
           [0, 0, 0]], dtype=uint8)
    >>> rle_decode("", (1, 2))
    array([[0, 0]], dtype=uint8)
    """
    height, width = check_height_width(shape, name="shape", positive=False)
    n_pixels = height * width
    if _is_missing(rle):
        rle = ""
    if not isinstance(rle, str):
        raise TypeError(f"rle must be a string (or None or NaN for an empty mask); got {rle!r} "
                        f"of type {type(rle).__name__}.")
    starts, lengths = _parse_runs(rle, n_pixels, (height, width))
    # +1 where a run starts, -1 on the pixel after it; the running sum is the mask
    ends = starts + lengths
    steps = (np.bincount(starts, minlength=n_pixels + 1)
             - np.bincount(ends, minlength=n_pixels + 1))
    pixels = np.cumsum(steps[:n_pixels]).astype(np.uint8)
    return np.ascontiguousarray(pixels.reshape((height, width), order="F"))


def _parse_runs(rle, n_pixels, shape):
    """Check a run-length string; return the 0-indexed starts and the lengths of its runs."""
    tokens = rle.split()
    for position, token in enumerate(tokens):
        if not (token.isascii() and token.isdigit()):
            raise ValueError(f"rle must hold non-negative integers separated by spaces; "
                             f"value {position + 1} of {len(tokens)} is {token!r}.")
    if len(tokens) % 2:
        raise ValueError(f"rle must hold pairs of values (start length); got {len(tokens)} "
                         "values, an odd number.")
    values = [int(token) for token in tokens]
    too_large = [value for value in values if value > n_pixels]
    if too_large:
        raise ValueError(f"rle holds the value {too_large[0]}, beyond the {n_pixels} pixels of "
                         f"a mask of shape {shape}.")
    values = np.array(values, dtype=np.int64).reshape(-1, 2)
    starts, lengths = values[:, 0], values[:, 1]
    problems = [
        (starts < 1, "starts are 1-indexed, so 0 is not a valid start"),
        (lengths < 1, "run lengths must be positive"),
        (starts + lengths - 1 > n_pixels,
         f"runs must end within the {n_pixels} pixels of a mask of shape {shape}"),
        (np.concatenate(([False], starts[1:] < starts[:-1] + lengths[:-1])),
         "runs must be in increasing order and must not overlap"),
    ]
    for is_bad, rule in problems:
        if is_bad.any():
            run = int(np.flatnonzero(is_bad)[0])
            raise ValueError(f"Malformed rle: {rule}; run {run + 1} of {len(starts)} is "
                             f"'{starts[run]} {lengths[run]}'.")
    return starts - 1, lengths


def masks_from_csv(path_or_file, labels, shape):
    """Read the masks of a Kaggle multi-label CSV file (clouds and steel style).

    Each row holds ``Image_Label`` (``"<image_id>_<label>"``, split on its last
    underscore, so image ids may contain underscores but labels may not) and
    ``EncodedPixels`` (a run-length string, see :func:`rle_decode`). Other
    columns are ignored. A label without a row for an image is an empty mask.

    Parameters
    ----------
    path_or_file : str, os.PathLike or file object
        Path of the CSV file, or a file object opened in text mode (for a real
        file, with ``newline=""``).
    labels : sequence of str
        The labels, in the order of the channels of the returned masks; each
        label of the file must be one of them.
    shape : tuple of int
        ``(height, width)`` of the masks.

    Returns
    -------
    image_ids : list of str
        The image ids, in the order they first appear in the file.
    masks : ndarray of shape (n_images, height, width, n_labels), dtype uint8
        1 on the object pixels of each label, 0 elsewhere.

    Raises
    ------
    ValueError
        If the file lacks a column, a row names a label not in ``labels`` or the
        same (image, label) pair twice, ``Image_Label`` has no underscore, or a
        run-length string is malformed.

    See Also
    --------
    masks_to_csv : Write such a file.

    Examples
    --------
    >>> import io
    >>> from skunetseg.rle import masks_from_csv
    >>> text = "Image_Label,EncodedPixels\\na.jpg_Fish,1 2\\na.jpg_Sugar,\\nb.jpg_Sugar,3 1\\n"
    >>> image_ids, masks = masks_from_csv(io.StringIO(text), ["Fish", "Sugar"], (2, 2))
    >>> image_ids
    ['a.jpg', 'b.jpg']
    >>> masks.shape
    (2, 2, 2, 2)
    >>> masks[0, :, :, 0]
    array([[1, 0],
           [1, 0]], dtype=uint8)
    >>> masks[1, :, :, 1]
    array([[0, 1],
           [0, 0]], dtype=uint8)
    """
    labels = _check_labels(labels)
    shape = check_height_width(shape, name="shape", positive=False)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, newline="", encoding="utf-8") as file:
            rows = _read_rows(file, labels)
    else:
        _check_text_file(path_or_file)
        rows = _read_rows(path_or_file, labels)

    image_ids = list(dict.fromkeys(image_id for image_id, _, _, _ in rows))
    image_index = {image_id: index for index, image_id in enumerate(image_ids)}
    label_index = {label: index for index, label in enumerate(labels)}
    masks = np.zeros((len(image_ids), *shape, len(labels)), dtype=np.uint8)
    for image_id, label, rle, line in rows:
        try:
            mask = rle_decode(rle, shape)
        except ValueError as error:
            raise ValueError(f"Line {line} ({_ID_COLUMN}={image_id}_{label}): {error}") from None
        masks[image_index[image_id], :, :, label_index[label]] = mask
    return image_ids, masks


def _read_rows(file, labels):
    """Return ``(image_id, label, rle, line_number)`` for each row of a mask CSV file."""
    reader = csv.DictReader(file)
    missing = [column for column in (_ID_COLUMN, _RLE_COLUMN)
               if column not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"The CSV file must have the columns {_ID_COLUMN!r} and "
                         f"{_RLE_COLUMN!r}; it lacks {missing} (header: {reader.fieldnames}).")
    known_labels = set(labels)
    seen = set()
    rows = []
    for row in reader:
        line = reader.line_num
        image_id, _, label = (row[_ID_COLUMN] or "").rpartition("_")
        if not image_id or not label:
            raise ValueError(f"Line {line}: {_ID_COLUMN} must be '<image_id>_<label>'; "
                             f"got {row[_ID_COLUMN]!r}.")
        if label not in known_labels:
            raise ValueError(f"Line {line}: unknown label {label!r} (in {_ID_COLUMN}="
                             f"{row[_ID_COLUMN]!r}); labels are {labels}.")
        if (image_id, label) in seen:
            raise ValueError(f"Line {line}: a second row for image {image_id!r} and label "
                             f"{label!r}.")
        seen.add((image_id, label))
        rows.append((image_id, label, row[_RLE_COLUMN], line))
    return rows


def masks_to_csv(path_or_file, image_ids, masks, labels, *, overwrite=False):
    """Write masks to a Kaggle multi-label CSV file (clouds and steel style).

    The file has the header ``Image_Label,EncodedPixels`` and one row per image
    and label, images in the order of ``image_ids`` and, for each, labels in the
    order of ``labels``; an empty mask gets an empty ``EncodedPixels``. Lines end
    with ``"\\n"``.

    Parameters
    ----------
    path_or_file : str, os.PathLike or file object
        Path of the CSV file, or a file object opened in text mode (for a real
        file, with ``newline=""``), which is written to and left open.
    image_ids : sequence of str
        One unique id per image.
    masks : array-like of shape (n_images, height, width, n_labels)
        Boolean or numeric masks; non-zero pixels belong to the object.
    labels : sequence of str
        One label per channel of ``masks``; unique, non-empty and without
        underscores, so that ``Image_Label`` can be split on its last underscore.
    overwrite : bool, default=False
        Whether to replace an existing file at ``path_or_file``. When it does,
        the new file is written aside first, so the old one is only replaced by
        a complete new one.

    Returns
    -------
    None

    Raises
    ------
    FileExistsError
        If ``path_or_file`` names an existing file and ``overwrite`` is False.
    ValueError
        If ``masks`` is not 4-D, or ``image_ids`` or ``labels`` do not match its
        first or last dimension or are not unique.
    TypeError
        If an image id or label is not a string, or ``masks`` is not numeric.

    See Also
    --------
    masks_from_csv : Read such a file.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> from skunetseg.rle import masks_to_csv
    >>> masks = np.zeros((1, 2, 2, 2), dtype=np.uint8)
    >>> masks[0, :, 0, 0] = 1
    >>> buffer = io.StringIO()
    >>> masks_to_csv(buffer, ["a.jpg"], masks, ["Fish", "Sugar"])
    >>> print(buffer.getvalue(), end="")
    Image_Label,EncodedPixels
    a.jpg_Fish,1 2
    a.jpg_Sugar,
    """
    labels = _check_labels(labels)
    masks = np.asarray(masks)
    if masks.ndim != 4:
        raise ValueError(f"masks must be 4-D, of shape (n_images, height, width, n_labels); "
                         f"got shape {masks.shape}. For one label, pass masks[..., np.newaxis].")
    if isinstance(image_ids, str):
        raise TypeError(f"image_ids must be a sequence of strings, not the string {image_ids!r}.")
    image_ids = list(image_ids)
    if len(image_ids) != masks.shape[0]:
        raise ValueError(f"image_ids must hold one id per image; got {len(image_ids)} ids for "
                         f"masks of shape {masks.shape}.")
    if len(labels) != masks.shape[3]:
        raise ValueError(f"labels must hold one label per channel; got {len(labels)} labels for "
                         f"masks of shape {masks.shape}.")
    for image_id in image_ids:
        if not isinstance(image_id, str) or not image_id:
            raise TypeError(f"image_ids must be non-empty strings; got {image_id!r}.")
    if len(set(image_ids)) != len(image_ids):
        duplicates = sorted({image_id for image_id in image_ids if image_ids.count(image_id) > 1})
        raise ValueError(f"image_ids must be unique; {duplicates[:10]} appear more than once.")

    # encode everything before touching the file, so that a bad mask leaves it as it was
    rows = [(f"{image_id}_{label}", rle_encode(masks[index, :, :, channel]))
            for index, image_id in enumerate(image_ids)
            for channel, label in enumerate(labels)]

    if not isinstance(path_or_file, (str, os.PathLike)):
        _check_text_file(path_or_file)
        _write_rows(path_or_file, rows)
        return
    path = os.fspath(path_or_file)
    if os.path.isdir(path):
        raise IsADirectoryError(f"path_or_file must name a file; {path!r} is a folder.")
    # written aside and renamed into place: a full disk leaves no half-written file
    try:
        with _atomic.open_for_writing(path, overwrite=overwrite, newline="",
                                      encoding="utf-8") as file:
            _write_rows(file, rows)
    except FileExistsError:
        raise FileExistsError(f"{path!r} already exists; pass overwrite=True to replace "
                              "it.") from None


def _write_rows(file, rows):
    """Write the header and ``rows`` of a mask CSV file."""
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow((_ID_COLUMN, _RLE_COLUMN))
    writer.writerows(rows)
