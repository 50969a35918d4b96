"""Real segmentation data sets: where to find them, how to fetch them."""

import hashlib
import os
import urllib.error
import urllib.request

import numpy as np
from sklearn.utils import Bunch

__all__ = ["load_membrane", "get_data_home"]

_MEMBRANE_SOURCE = "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/train"
# SHA-256 of the decoded pixels of the 30 images and of the 30 masks, in order
# (pixels rather than file bytes, so that a lossless re-encoding still matches).
_MEMBRANE_PIXEL_SHA256 = {
    "images": "200da3d452d726e6c9ca1ce04b869d4edb727320d23b516d01cce707dc8c4760",
    "masks": "a7cb64000a1a7e542682927e19c91339f58f9f178e0bcce4e207371116f0ca36",
}
_MEMBRANE_COUNT = 30


def get_data_home(data_home=None):
    """Return the folder skunetseg reads data sets from.

    ``data_home`` if given, else the ``SKUNETSEG_DATA`` environment variable,
    else ``~/skunetseg_data``.
    """
    if data_home is None:
        data_home = os.environ.get("SKUNETSEG_DATA", os.path.join("~", "skunetseg_data"))
    return os.path.expanduser(os.fspath(data_home))


def _read_gray(path):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise OSError(f"Could not read the image file {path!r}.")
    return image


def _read_stack(folder, kind):
    stack = np.stack([_read_gray(os.path.join(folder, kind, f"{i:02d}.png"))
                      for i in range(_MEMBRANE_COUNT)])
    digest = hashlib.sha256(stack.tobytes()).hexdigest()
    if digest != _MEMBRANE_PIXEL_SHA256[kind]:
        raise OSError(f"The membrane {kind} in {folder!r} do not match the published data "
                      f"(checksum {digest}); delete the folder to download it again.")
    return stack


def _download_membrane(folder):
    for kind, remote in (("images", "image"), ("masks", "label")):
        os.makedirs(os.path.join(folder, kind), exist_ok=True)
        for i in range(_MEMBRANE_COUNT):
            target = os.path.join(folder, kind, f"{i:02d}.png")
            if not os.path.exists(target):
                partial = target + ".part"
                urllib.request.urlretrieve(f"{_MEMBRANE_SOURCE}/{remote}/{i}.png", partial)
                os.replace(partial, target)


def load_membrane(data_home=None, *, download_if_missing=True):
    """Load the ISBI 2012 membrane segmentation set (30 images of 512×512).

    Serial-section electron microscopy of the Drosophila ventral nerve cord with
    hand-made labels (Cardona et al., 2010), as redistributed by the public
    repository zhixuhao/unet (MIT licence).

    Parameters
    ----------
    data_home : str or os.PathLike, default=None
        Folder holding ``membrane/images/NN.png`` and ``membrane/masks/NN.png``;
        see :func:`get_data_home` for the default.
    download_if_missing : bool, default=True
        Download the 60 files from their public source when they are missing;
        their pixels are checked against a SHA-256 checksum.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``images``: uint8 ``(30, 512, 512)``; ``masks``: uint8 ``(30, 512, 512)``,
        1 on membrane pixels (about 22 %) and 0 inside cells (the raw files
        store 255 for cell interior); ``DESCR``.

    Examples
    --------
    >>> from skunetseg.datasets import load_membrane
    >>> data = load_membrane("../shared/data")  # doctest: +SKIP
    >>> data.images.shape
    (30, 512, 512)
    """
    folder = os.path.join(get_data_home(data_home), "membrane")
    if not os.path.isfile(os.path.join(folder, "masks", f"{_MEMBRANE_COUNT - 1:02d}.png")):
        if not download_if_missing:
            raise OSError(f"The membrane data is not in {folder!r} and "
                          "download_if_missing=False.")
        try:
            _download_membrane(folder)
        except (urllib.error.URLError, OSError) as error:
            raise OSError(
                f"The membrane data is not in {folder!r} and could not be downloaded from "
                f"{_MEMBRANE_SOURCE} ({error}). Pass data_home= (or set SKUNETSEG_DATA to) a "
                "folder that holds membrane/images and membrane/masks."
            ) from None
    images = _read_stack(folder, "images")
    raw_masks = _read_stack(folder, "masks")
    return Bunch(
        images=images,
        masks=(raw_masks == 0).astype(np.uint8),
        DESCR=load_membrane.__doc__.split("\n\n")[1],
    )
