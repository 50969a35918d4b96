"""The membrane data at a chosen resolution, shared by the benchmark scripts."""

import cv2
import numpy as np

from skunetseg.datasets import load_membrane


def resize_stack(stack, size, interpolation):
    """Resize every image of ``stack`` to ``size`` x ``size``."""
    return np.stack([cv2.resize(item, (size, size), interpolation=interpolation)
                     for item in stack])


def membrane_at(data_home, size):
    """(data, images, masks): the membrane set and its images/masks resized to ``size``.

    Images are resized with area averaging, masks with nearest neighbour.
    """
    data = load_membrane(data_home)
    return (data, resize_stack(data.images, size, cv2.INTER_AREA),
            resize_stack(data.masks, size, cv2.INTER_NEAREST))
