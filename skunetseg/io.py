"""Images and masks on disk: reading, pairing folders, writing predicted masks (OpenCV).

Data sets too large for memory come as files. These functions read them as the
NumPy arrays the estimators take, a batch at a time, and write predictions back:

* :func:`read_image` and :func:`read_mask` read one file (PNG, JPEG, TIFF, BMP,
  ... whatever OpenCV decodes), keeping its dtype (``uint8``, ``uint16``);
* :func:`binarize_mask` turns gray-level masks (JPEG-saved, anti-aliased) into 0/255;
* :func:`is_path_sequence` and :func:`check_paths` recognise and validate a
  sequence of file paths given as ``X`` or ``y``; :func:`check_image_files` also
  checks that each file starts like an image file;
* :func:`read_images` reads paths into one stacked array, optionally resizing
  every image (area or bilinear interpolation) or mask (nearest neighbour);
* :func:`load_image_folder` pairs an image folder with a mask folder by file name;
* :func:`write_mask` writes one mask as a PNG file, never overwriting unless asked;
* :func:`predict_to_dir` predicts image files (or an array) chunk by chunk and
  writes one mask file per image, so memory does not grow with the number of images.

Errors about a file name the file.
"""

import os
import re
import struct
from numbers import Integral
from pathlib import Path

import cv2
import numpy as np

from . import _atomic
from ._checks import check_array_like, check_height_width

__all__ = [
    "read_image",
    "read_mask",
    "binarize_mask",
    "is_path_sequence",
    "check_image_files",
    "check_paths",
    "read_images",
    "load_image_folder",
    "write_mask",
    "predict_to_dir",
]

#: File extensions :func:`load_image_folder` looks for by default.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: How many offending files an error message lists.
_LISTED = 5

_KINDS = ("image", "mask")


def _listing(items, total=None):
    """``'a', 'b', 'c' (and 7 more)``: the first few of ``items`` for an error message."""
    items = list(items)
    total = len(items) if total is None else total
    text = ", ".join(repr(str(item)) for item in items[:_LISTED])
    return text + (f" (and {total - _LISTED} more)" if total > _LISTED else "")


def _read_unchanged(path):
    """The pixels of one file as OpenCV decodes them with ``IMREAD_UNCHANGED`` (BGR order)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    path = os.fspath(path)
    try:
        # read the bytes ourselves: a missing file and an undecodable one give different
        # errors, and paths that cv2.imread cannot open (non-ASCII on Windows) work
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"The image file {path!r} does not exist.") from None
    pixels = None
    if data:  # cv2.imdecode raises on an empty buffer
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(
            f"Could not read the image file {path!r}: it is empty, damaged or in a format "
            "OpenCV cannot decode (PNG, JPEG, TIFF, BMP, ... are supported)."
        )
    return pixels


def read_image(path):
    """Read one image file as stored: gray ``(H, W)`` or colour ``(H, W, C)`` in RGB order.

    Parameters
    ----------
    path : str or os.PathLike
        An image file in any format OpenCV decodes (PNG, JPEG, TIFF, BMP, ...).

    Returns
    -------
    image : ndarray of shape (H, W) or (H, W, C)
        The pixels with the dtype they are stored in (``uint8``, ``uint16``, or
        ``float32`` for floating-point TIFF files). Colour images come in RGB
        order (OpenCV decodes BGR). An alpha channel is dropped, so that an RGBA
        PNG and an RGB JPEG of one data set give the same 3 channels. A colour
        image whose channels are equal keeps its 3 channels (gray content is not
        guessed). Images with more than 4 channels (multispectral TIFF) keep their
        channels as stored.

    Raises
    ------
    FileNotFoundError
        If the file does not exist; the message names it.
    ValueError
        If the file is empty or cannot be decoded; the message names it.

    Notes
    -----
    The file is decoded with ``cv2.IMREAD_UNCHANGED``: no conversion of the bit
    depth and no rotation by an EXIF orientation tag (pixels as stored, like the
    masks drawn on them). Palette PNGs are decoded to their RGB colours.

    Examples
    --------
    >>> from skunetseg.io import read_image
    >>> read_image("images/0001.png").shape  # doctest: +SKIP
    (512, 512)
    """
    image = _read_unchanged(path)
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[..., 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return image


def read_mask(path, *, binarize=False):
    """Read one mask file as a label array ``(H, W)`` with the values as stored.

    Parameters
    ----------
    path : str or os.PathLike
        A mask file (lossless formats: PNG, TIFF, ...; a JPEG blurs label values).
    binarize : bool, default=False
        Binarise the mask with :func:`binarize_mask`: for masks saved as JPEG or
        drawn anti-aliased, whose gray levels are not labels. A colour mask is
        converted to gray first.

    Returns
    -------
    mask : ndarray of shape (H, W)
        The stored values and dtype (a 1-bit PNG reads as 0/255 ``uint8``, the
        TGS salt masks as 0/65535 ``uint16``). A colour mask whose channels are
        all equal (a gray mask saved as RGB) gives its one channel; an alpha
        channel is ignored. With ``binarize``, 0/255 ``uint8``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it cannot be decoded, or is a colour mask whose channels differ
        (without ``binarize``).
    """
    mask = read_image(path)
    if mask.ndim == 3:
        if binarize:
            mask = cv2.cvtColor(np.ascontiguousarray(mask[..., :3]), cv2.COLOR_RGB2GRAY)
        elif not (mask == mask[..., :1]).all():
            raise ValueError(
                f"The mask file {os.fspath(path)!r} has {mask.shape[2]} channels that differ; "
                "masks must be label maps of shape (height, width). Convert colour-coded "
                "masks to label values first (or pass binarize=True / binarize_masks=True "
                "for a black-and-white mask saved as a colour JPEG)."
            )
        else:
            mask = mask[..., 0]
    return binarize_mask(mask) if binarize else mask


def binarize_mask(mask, *, name="mask"):
    """Binarise masks whose values are gray levels: 0/255 ``uint8`` (255 = object).

    A pixel is foreground when its value is above half of the scale's maximum:
    ``uint8`` > 127, ``uint16`` > 32767; for other dtypes (float, int, bool) the
    scale is the smallest of 1, 255 and 65535 that holds the largest value
    (> 0.5, > 127, > 32767). Masks holding only 0 and 1 keep 1 as foreground,
    at any dtype. This recovers the labels of black-and-white masks saved as
    JPEG (compression noise near 0 and 255) or drawn anti-aliased (gray edges).

    Parameters
    ----------
    mask : array-like
        One mask or a stack of masks, of any real or boolean dtype.
    name : str, default="mask"
        The argument's name, used in error messages.

    Returns
    -------
    binary : ndarray of the same shape, dtype uint8
        0 for background, 255 for foreground.
    """
    mask = np.asarray(mask)
    if mask.dtype == object or not (np.issubdtype(mask.dtype, np.number) or mask.dtype == bool):
        raise TypeError(f"{name} must hold numbers to binarise; got dtype {mask.dtype}.")
    if mask.size == 0:
        return mask.astype(np.uint8)
    if mask.dtype == bool:
        foreground = mask
    elif mask.dtype == np.uint8 and mask.max() > 1:
        foreground = mask > 127
    elif mask.dtype == np.uint16 and mask.max() > 1:
        foreground = mask > 32767
    else:
        if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all():
            raise ValueError(f"{name} contains NaN or infinity.")
        high = float(mask.max())
        scale = next((top for top in (1, 255, 65535) if high <= top), high)
        if high <= 1 and np.isin(mask, (0, 1)).all():
            scale = 1
        foreground = mask > scale / 2
    return foreground.astype(np.uint8) * np.uint8(255)


def is_path_sequence(X):
    """Whether ``X`` is a non-empty 1-D sequence of file paths.

    Parameters
    ----------
    X : object
        Typically the ``X`` or ``y`` given to an estimator.

    Returns
    -------
    bool
        True for a non-empty list, tuple or 1-D array (a NumPy array of strings or
        objects, a pandas Series) whose items are all ``str`` or ``os.PathLike``;
        False for arrays of numbers and for a single path (which
        :func:`check_paths` rejects with a TypeError).
    """
    if isinstance(X, (list, tuple)):
        items = X
    elif hasattr(X, "__array__"):
        dtype = getattr(X, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind not in "UO":
            return False  # numbers: not converted, not looked at one by one
        items = np.asarray(X)
        if items.ndim != 1:
            return False
    else:
        return False
    return len(items) > 0 and all(isinstance(item, (str, os.PathLike)) for item in items)


def check_paths(X, *, name="X"):
    """Validate a sequence of existing file paths and return it as a list of Path.

    Parameters
    ----------
    X : list, tuple or 1-D array of str or os.PathLike
        The file paths.
    name : str, default="X"
        The argument's name, used in error messages.

    Returns
    -------
    paths : list of pathlib.Path

    Raises
    ------
    TypeError
        If ``X`` is a single path ("pass a list") or holds something other than paths.
    ValueError
        If ``X`` is empty or not one-dimensional.
    FileNotFoundError
        If files are missing; the message lists (the first few of) them.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} is the single path {os.fsdecode(X)!r}; pass a list of paths, "
                        f"e.g. [{os.fsdecode(X)!r}].")
    if not isinstance(X, (list, tuple)) and not hasattr(X, "__array__"):
        raise TypeError(f"{name} must be a list of file paths; got {type(X).__name__}.")
    items = list(X) if isinstance(X, (list, tuple)) else np.asarray(X)
    if isinstance(items, np.ndarray) and items.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of file paths; got shape {items.shape}.")
    if len(items) == 0:
        raise ValueError(f"{name} holds no file paths; at least 1 is required.")
    for index, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"{name} must hold only file paths (str or os.PathLike); item "
                            f"{index} is {item!r} of type {type(item).__name__}.")
    paths = [Path(item) for item in items]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the {len(paths)} files of {name} do not "
                                f"exist (or are not files): {_listing(missing)}.")
    return paths


#: How image files start (the formats OpenCV decodes); see check_image_files.
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",
    b"BM", b"GIF87a", b"GIF89a", b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51",
    b"\x76\x2f\x31\x01", b"#?", b"\x59\xa6\x6a\x95",
) + tuple(f"P{k}".encode() for k in "1234567fF")

#: The last 12 bytes of a complete PNG file: its IEND chunk.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: The last 2 bytes of a complete JPEG file: its end-of-image marker.
_JPEG_END = b"\xff\xd9"


def _looks_complete(path):
    """Whether ``path`` starts like an image file (and a PNG or JPEG ends like one), from a
    few bytes."""
    with open(path, "rb") as file:
        head = file.read(16)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return True
        if not head.startswith(_SIGNATURES):
            return False
        for start, end in ((b"\x89PNG", _PNG_END), (b"\xff\xd8\xff", _JPEG_END)):
            if head.startswith(start):
                file.seek(max(0, os.fstat(file.fileno()).st_size - len(end)))
                return file.read() == end
    return True


#: JPEG start-of-frame markers: they hold the image's height and width.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(path):
    """``(height, width)`` of a PNG, JPEG or BMP file from its header, without decoding it;
    None for other formats or a header that cannot be parsed."""
    try:
        with open(path, "rb") as file:
            head = file.read(26)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return height, width
            if head.startswith(b"BM") and len(head) >= 26:
                width, height = struct.unpack("<ii", head[18:26])
                return abs(height), width
            if head.startswith(b"\xff\xd8"):
                file.seek(2)
                while True:
                    marker = file.read(2)
                    while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
                        marker = marker[1:] + file.read(1)
                    if len(marker) < 2 or marker[0] != 0xFF:
                        return None
                    length = struct.unpack(">H", file.read(2))[0]
                    if marker[1] in _JPEG_FRAMES:
                        height, width = struct.unpack(">xHH", file.read(5))
                        return height, width
                    file.seek(length - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        return None
    return None


def check_image_files(paths, *, name="X"):
    """Check that image files exist and are readable images, without decoding them all.

    Parameters
    ----------
    paths : list, tuple or 1-D array of str or os.PathLike
        The files.
    name : str, default="X"
        The argument's name, used in error messages.

    Returns
    -------
    paths : list of pathlib.Path

    Raises
    ------
    FileNotFoundError
        If files are missing (see :func:`check_paths`).
    ValueError
        If files are empty, unreadable or not images; the message lists (the
        first few of) them.

    Notes
    -----
    Each file's first bytes are compared with the signatures of the formats
    OpenCV decodes (PNG, JPEG, TIFF, BMP, WebP, GIF, PNM, JPEG 2000, EXR, HDR,
    Sun raster), and a PNG's (JPEG's) last bytes with its end chunk (marker),
    which a truncated file lacks. A file that does not pass is decoded in
    full, so a format without a known signature (or a JPEG with bytes after
    its end marker) is still accepted when OpenCV reads it. A TIFF, or a file
    damaged inside but whole in length, is found only when it is read.
    """
    paths = check_paths(paths, name=name)
    bad = []
    for path in paths:
        try:
            if _looks_complete(path):
                continue
            _read_unchanged(path)
        except OSError as error:  # unreadable: permissions, I/O error
            bad.append(f"{str(path)!r} ({error.strerror or error})")
        except ValueError:
            bad.append(f"{str(path)!r} (empty, truncated or not an image)")
    if bad:
        listed = ", ".join(bad[:_LISTED]) + (f" (and {len(bad) - _LISTED} more)"
                                             if len(bad) > _LISTED else "")
        raise ValueError(f"{len(bad)} of the {len(paths)} files of {name} cannot be read as "
                         f"images: {listed}. Remove or replace them.")
    return paths


def _check_kind(kind, interpolation):
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'image' or 'mask'; got {kind!r}.")
    if kind == "mask" and interpolation not in (None, cv2.INTER_NEAREST,
                                                cv2.INTER_NEAREST_EXACT):
        raise ValueError("Masks are resized by nearest neighbour only (interpolation=None, "
                         "cv2.INTER_NEAREST or cv2.INTER_NEAREST_EXACT): interpolating labels "
                         f"would invent new ones; got interpolation={interpolation!r}.")


def _resize(array, size, kind, interpolation):
    """``array`` resized to ``size = (height, width)`` (the array itself when it has that size)."""
    height, width = array.shape[:2]
    if (height, width) == size:
        return array
    if interpolation is None:
        if kind == "mask":
            interpolation = cv2.INTER_NEAREST_EXACT
        elif size[0] <= height and size[1] <= width:
            interpolation = cv2.INTER_AREA
        else:
            interpolation = cv2.INTER_LINEAR
    return cv2.resize(array, (size[1], size[0]), interpolation=interpolation)


def _read_one(path, kind, size=None, interpolation=None, binarize=False):
    """Read one file as an image or a mask, resized to ``size`` when given."""
    array = read_image(path) if kind == "image" else read_mask(path, binarize=binarize)
    return array if size is None else _resize(array, size, kind, interpolation)


def _describe(array):
    channels = 1 if array.ndim == 2 else array.shape[2]
    return f"{array.shape[0]}x{array.shape[1]}, {channels} channel(s), {array.dtype}"


def read_images(paths, *, name="X", kind="image", size=None, interpolation=None,
                binarize=False):
    """Read image (or mask) files into one stacked array.

    Parameters
    ----------
    paths : list, tuple or 1-D array of str or os.PathLike
        The files, read in this order.
    name : str, default="X"
        The argument's name, used in error messages.
    kind : {"image", "mask"}, default="image"
        Read with :func:`read_image` (images) or :func:`read_mask` (label maps).
    size : tuple (height, width), default=None
        Resize every file to this size. None requires all files to have one size.
    interpolation : int, default=None
        OpenCV interpolation flag used when resizing. None chooses by ``kind``:
        images are resized with ``cv2.INTER_AREA`` when shrinking (both sides)
        and ``cv2.INTER_LINEAR`` otherwise; masks by nearest neighbour
        (``cv2.INTER_NEAREST_EXACT``), which keeps their label values. Masks accept
        only nearest-neighbour flags.
    binarize : bool, default=False
        With ``kind="mask"``, binarise each mask as it is read (see
        :func:`read_mask`): 0/255 ``uint8`` masks.

    Returns
    -------
    stack : ndarray of shape (n, H, W) or (n, H, W, C)
        The files' dtype (see :func:`read_image`). Masks of different integer
        dtypes are promoted to the larger one, keeping their values: the TGS
        salt set stores empty masks as 8-bit zeros and the others as 16-bit
        0/65535.

    Raises
    ------
    ValueError
        Without ``size``, if two files differ in size; with or without it, if
        two images differ in channel count, or two images in dtype (8- and
        16-bit images would be scaled differently). The message names both files.
    """
    _check_kind(kind, interpolation)
    if binarize and kind != "mask":
        raise ValueError("binarize=True applies to masks only (kind='mask').")
    size = check_height_width(size, name="size", allow_none=True)
    paths = check_paths(paths, name=name)
    first = _read_one(paths[0], kind, size, interpolation, binarize)
    stack = np.empty((len(paths),) + first.shape, dtype=first.dtype)
    stack[0] = first
    for index in range(1, len(paths)):
        array = _read_one(paths[index], kind, size, interpolation, binarize)
        if array.shape != first.shape:
            if array.shape[:2] != first.shape[:2]:
                problem, advice = "differ in size", (
                    " Pass size=(height, width) to resize them (input_size= in an estimator).")
            else:
                problem, advice = "differ in channel count", (
                    " Convert the data set to one colour mode first.")
            raise ValueError(f"{name}: the files {str(paths[0])!r} ({_describe(first)}) and "
                             f"{str(paths[index])!r} ({_describe(array)}) {problem}.{advice}")
        if array.dtype != stack.dtype:
            if kind == "image" or not (np.issubdtype(array.dtype, np.integer)
                                       and np.issubdtype(stack.dtype, np.integer)):
                reason = "8- and 16-bit images are scaled differently. " if kind == "image" else ""
                raise ValueError(
                    f"{name}: the files {str(paths[0])!r} ({_describe(first)}) and "
                    f"{str(paths[index])!r} ({_describe(array)}) differ in dtype; {reason}"
                    "Convert the data set to one dtype first."
                )
            stack = stack.astype(np.promote_types(stack.dtype, array.dtype))
        stack[index] = array
    return stack


def _check_folder(folder, argument):
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a folder path; got {type(folder).__name__}.")
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{argument}: the folder {str(folder)!r} does not exist.")
    if not folder.is_dir():
        raise NotADirectoryError(f"{argument}: {str(folder)!r} is not a folder.")
    return folder


def _files_by_stem(folder, extensions, argument):
    """``{stem: path}`` of the image files in ``folder`` (hidden files left out)."""
    files = sorted(path for path in folder.iterdir()
                   if path.suffix.lower() in extensions and not path.name.startswith(".")
                   and path.is_file())
    if not files:
        raise ValueError(f"{argument}: the folder {str(folder)!r} holds no files with the "
                         f"extensions {list(extensions)}.")
    by_stem = {}
    for path in files:
        if path.stem in by_stem:
            raise ValueError(f"{argument}: the files {by_stem[path.stem].name!r} and "
                             f"{path.name!r} in {str(folder)!r} have the same name; they "
                             "cannot both be paired by name.")
        by_stem[path.stem] = path
    return by_stem


def load_image_folder(images_dir, masks_dir=None, *, extensions=IMAGE_EXTENSIONS,
                      mask_suffix="", as_arrays=False, binarize_masks=False):
    """List the images of a folder, paired by file name with the masks of another.

    Parameters
    ----------
    images_dir : str or os.PathLike
        Folder of image files (not searched recursively; hidden files are skipped).
    masks_dir : str or os.PathLike, default=None
        Folder of mask files. A mask pairs with the image of the same name
        without extension (``images/0001.jpg`` with ``masks/0001.png``).
    extensions : tuple of str, default=(".png", ".jpg", ".jpeg", ".tif", ".tiff")
        File extensions to list, in either folder (case-insensitive).
    mask_suffix : str, default=""
        What mask names add to the image name: with ``"_mask"``,
        ``images/0001.png`` pairs with ``masks/0001_mask.png``.
    as_arrays : bool, default=False
        Return the read arrays (:func:`read_images`) instead of the paths; the
        images (and the masks) must then have one size.
    binarize_masks : bool, default=False
        With ``as_arrays``, binarise the masks as they are read (see
        :func:`read_mask`); with paths, pass ``binarize_masks=True`` to the
        estimator instead.

    Returns
    -------
    images : list of pathlib.Path or ndarray
        The image paths, sorted by file name, or their stacked pixels.
    masks : list of pathlib.Path, ndarray or None
        The paired mask paths in the same order, their stacked label maps, or
        None when ``masks_dir`` is None.

    Raises
    ------
    FileNotFoundError
        If a folder does not exist.
    ValueError
        If a folder holds no image files, two of its files share a name, or
        images and masks do not pair up one to one (the message lists a few of
        the unpaired files on each side).

    Examples
    --------
    >>> from skunetseg.io import load_image_folder
    >>> images, masks = load_image_folder("data/images", "data/masks")  # doctest: +SKIP
    >>> model.fit(images, masks)  # doctest: +SKIP
    """
    if isinstance(extensions, str):
        extensions = (extensions,)
    extensions = tuple(extension.lower() for extension in extensions)
    bad = [extension for extension in extensions if not extension.startswith(".")]
    if bad or not extensions:
        raise ValueError(f"extensions must be file extensions starting with '.', like "
                         f"('.png', '.tif'); got {extensions!r}.")
    images = _files_by_stem(_check_folder(images_dir, "images_dir"), extensions, "images_dir")
    image_paths = list(images.values())
    if masks_dir is None:
        return (read_images(image_paths, name="images_dir") if as_arrays else image_paths), None

    masks_folder = _check_folder(masks_dir, "masks_dir")
    masks, unmatched = {}, []
    for stem, path in _files_by_stem(masks_folder, extensions, "masks_dir").items():
        if stem.endswith(mask_suffix) and stem[:len(stem) - len(mask_suffix)] in images:
            masks[stem[:len(stem) - len(mask_suffix)]] = path
        else:
            unmatched.append(path.name)
    lonely = [path.name for stem, path in images.items() if stem not in masks]
    if lonely or unmatched:
        problems = []
        if lonely:
            problems.append(f"{len(lonely)} image(s) without a mask named like "
                            f"'<image name>{mask_suffix}.<ext>' in {str(masks_folder)!r}: "
                            f"{_listing(lonely)}")
        if unmatched:
            problems.append(f"{len(unmatched)} mask(s) without an image: {_listing(unmatched)}")
        raise ValueError("The images of images_dir and the masks of masks_dir do not pair up "
                         "by file name; " + "; ".join(problems) + ".")
    mask_paths = [masks[stem] for stem in images]
    if as_arrays:
        return (read_images(image_paths, name="images_dir"),
                read_images(mask_paths, name="masks_dir", kind="mask",
                            binarize=binarize_masks))
    return image_paths, mask_paths


def _check_png_name(path, argument):
    if not os.fspath(path).lower().endswith(".png"):
        raise ValueError(f"{argument} must end with '.png' (masks are written as PNG); "
                         f"got {os.fspath(path)!r}.")


def _as_png_mask(mask):
    """``mask`` as a 2-D uint8 or uint16 array holding the same label values."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(
            f"mask must have shape (height, width) or (height, width, 1); got shape "
            f"{mask.shape}. predict_to_dir writes multilabel masks one file per class."
        )
    if mask.dtype == bool:
        return mask.astype(np.uint8) * np.uint8(255)
    if not np.issubdtype(mask.dtype, np.integer) and not np.issubdtype(mask.dtype, np.floating):
        raise TypeError(f"mask must hold integer or boolean labels; got dtype {mask.dtype}.")
    if np.issubdtype(mask.dtype, np.floating) and not (
            np.isfinite(mask).all() and np.array_equal(mask, np.round(mask))):
        raise ValueError("mask holds non-integer values; a mask file stores integer labels.")
    low, high = mask.min(), mask.max()
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise ValueError(f"mask holds values from {low} to {high}; a PNG mask stores labels "
                         "from 0 to 65535.")
    return mask.astype(np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16, copy=False)


def write_mask(path, mask, *, overwrite=False):
    """Write one mask as a PNG file, 8-bit if its values fit, else 16-bit.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; it must end with ``.png``. Missing parent folders are
        created.
    mask : array-like of shape (H, W) or (H, W, 1)
        Integer labels from 0 to 65535 (floats holding whole numbers are
        accepted), or booleans.
    overwrite : bool, default=False
        Replace an existing file. Otherwise an existing file is left untouched.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is False; the message names it.
    ValueError
        If the mask has another shape, or values that a PNG cannot store.

    Notes
    -----
    The PNG is written under a temporary name in the same folder and renamed
    into place, so an interrupted write leaves no partial file under ``path``.

    Values are written as they are, so :func:`read_mask` gives them back: a 0/1
    mask is written as 0/1 (dark in an image viewer), not stretched to 0/255.
    The file's bit depth is the smallest that holds the values: a ``uint16``
    mask of 0/1 reads back as ``uint8``. Booleans are written as 0/255.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}.")
    path = Path(path)
    _check_png_name(path, "path")
    ok, encoded = cv2.imencode(".png", _as_png_mask(mask))
    if not ok:  # pragma: no cover - OpenCV encodes every 2-D uint8/uint16 array
        raise ValueError(f"OpenCV could not encode the mask for {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # through a temporary file renamed into place: a crash never leaves a truncated
        # PNG under the final name
        _atomic.write_bytes(path, encoded.tobytes(), overwrite=overwrite)
    except FileExistsError:
        raise FileExistsError(f"The file {str(path)!r} exists; pass overwrite=True to "
                              "replace it.") from None
    return path


def _prediction_names(X):
    """(paths or None, images or None, stems) of the ``X`` given to :func:`predict_to_dir`."""
    if isinstance(X, (str, bytes, os.PathLike)) or is_path_sequence(X):
        paths = check_paths(X, name="X")
        stems = [path.stem for path in paths]
        seen, repeated = set(), []
        for stem in stems:
            if stem in seen:
                repeated.append(stem)
            seen.add(stem)
        if repeated:
            raise ValueError(f"X holds files with the same name (without extension), whose "
                             f"masks would have the same name: {_listing(sorted(set(repeated)))}.")
        return paths, None, stems
    check_array_like(X, name="X", what="a list of image paths or an array of images")
    images = np.asarray(X)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"X must be a list of image paths or an array of shape (n_images, "
                         f"height, width[, channels]); got shape {images.shape}.")
    digits = max(5, len(str(len(images) - 1)))
    return None, images, [f"{index:0{digits}d}" for index in range(len(images))]


def _existing_targets(out_dir, stems, suffix):
    """Files of ``out_dir`` that a prediction of ``stems`` could write, in either naming."""
    if not out_dir.is_dir():
        return []
    wanted = set(stems)
    per_class = re.compile(r"(.*)_\d+" + re.escape(suffix))
    taken = []
    for entry in os.scandir(out_dir):
        name = entry.name
        if name.endswith(suffix) and name[:len(name) - len(suffix)] in wanted:
            taken.append(name)
        else:
            match = per_class.fullmatch(name)
            if match and match.group(1) in wanted:
                taken.append(name)
    return sorted(taken)


def _same_shape_runs(images):
    """Split a list of arrays into runs of consecutive arrays of one shape and dtype."""
    runs = []
    for image in images:
        if runs and (image.shape, image.dtype) == (runs[-1][0].shape, runs[-1][0].dtype):
            runs[-1].append(image)
        else:
            runs.append([image])
    return [np.stack(run) for run in runs]


def predict_to_dir(estimator, X, out_dir, *, batch_size=32, overwrite=False, suffix=".png",
                   verbose=0):
    """Predict masks of image files (or an array) chunk by chunk and write one file each.

    At most ``batch_size`` images are in memory at a time, with their masks, so
    a data set of any length can be predicted.

    Parameters
    ----------
    estimator : fitted estimator with ``predict``
        A fitted :class:`~skunetseg.UNetSegmenter` or any object whose
        ``predict(images)`` returns one mask per image, shaped ``(n, H, W)``,
        ``(n, H, W, 1)`` or, for multilabel masks, ``(n, H, W, K)``.
    X : list of str or os.PathLike, or array-like of shape (n, H, W) or (n, H, W, C)
        Image files (read with :func:`read_image`) or images.
    out_dir : str or os.PathLike
        Folder for the masks; created when missing.
    batch_size : int, default=32
        Images read and given to ``estimator.predict`` at a time. Within such a
        chunk, consecutive images of one size (and dtype) are predicted together:
        files of different sizes need no resizing here, at the cost of one
        ``predict`` call per run of same-size images.
    overwrite : bool, default=False
        Replace existing mask files. Otherwise, if any file this call could
        write exists, a FileExistsError is raised before anything is predicted
        or written.
    suffix : str, default=".png"
        Appended to each image's name (its file name without extension) to name
        its mask; it must end with ``.png``. With ``"_pred.png"``, ``0001.jpg``
        gives ``0001_pred.png``.
    verbose : int, default=0
        Print a progress line after each chunk when positive.

    Returns
    -------
    paths : list of pathlib.Path
        The files written, in the order of ``X`` (and of the classes).

    Notes
    -----
    Masks are named after the input file's name without extension, or
    ``00000``, ``00001``, ... (zero-padded to at least 5 digits) for an
    array. Multilabel predictions ``(n, H, W, K)`` with ``K > 1`` give one file
    per class, ``<name>_<k><suffix>`` for ``k = 0 .. K - 1``. Masks are written
    with :func:`write_mask`: values as predicted, 8-bit when they fit.

    Input files are checked to exist, and the names of all masks to be written
    to be free (in both namings: ``<name><suffix>`` and ``<name>_<k><suffix>``)
    before the first prediction, so a failed check leaves nothing half-written.

    Examples
    --------
    >>> from skunetseg.io import load_image_folder, predict_to_dir
    >>> images, _ = load_image_folder("test/images")  # doctest: +SKIP
    >>> predict_to_dir(model, images, "test/predicted")  # doctest: +SKIP
    """
    if not callable(getattr(estimator, "predict", None)):
        raise TypeError(f"estimator must have a predict method; got {type(estimator).__name__}.")
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if not isinstance(suffix, str) or os.sep in suffix or (os.altsep and os.altsep in suffix):
        raise ValueError(f"suffix must be a file name ending, like '.png' or '_pred.png'; "
                         f"got {suffix!r}.")
    _check_png_name(suffix, "suffix")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path; got {type(out_dir).__name__}.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {str(out_dir)!r} exists and is not a folder.")
    paths, images, stems = _prediction_names(X)
    if not overwrite:
        taken = _existing_targets(out_dir, stems, suffix)
        if taken:
            raise FileExistsError(
                f"{len(taken)} mask file(s) that this prediction would write already exist in "
                f"{str(out_dir)!r}: {_listing(taken)}. Pass overwrite=True to replace them, "
                "or choose another out_dir or suffix."
            )
    out_dir.mkdir(parents=True, exist_ok=True)

    written = []
    for start in range(0, len(stems), batch_size):
        stop = min(start + batch_size, len(stems))
        if paths is None:
            groups = [images[start:stop]]
        else:
            groups = _same_shape_runs([read_image(path) for path in paths[start:stop]])
        masks = []
        for group in groups:
            predicted = np.asarray(estimator.predict(group))
            if predicted.ndim not in (3, 4) or len(predicted) != len(group):
                raise ValueError(
                    f"{type(estimator).__name__}.predict must return one mask per image, of "
                    f"shape (n, height, width[, n_classes]); got shape {predicted.shape} for "
                    f"{len(group)} image(s)."
                )
            masks.extend(predicted)
        for stem, mask in zip(stems[start:stop], masks, strict=True):
            if mask.ndim == 3 and mask.shape[2] > 1:
                written.extend(write_mask(out_dir / f"{stem}_{k}{suffix}", mask[..., k],
                                          overwrite=overwrite) for k in range(mask.shape[2]))
            else:
                written.append(write_mask(out_dir / f"{stem}{suffix}", mask,
                                          overwrite=overwrite))
        if verbose > 0:
            print(f"predict_to_dir: {stop}/{len(stems)} images, {len(written)} mask files "
                  f"written to {str(out_dir)!r}", flush=True)
    return written
