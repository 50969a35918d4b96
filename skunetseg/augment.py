"""Random augmentation of training images and their masks (NumPy and OpenCV).

:class:`Augmenter` draws one random transform per image and applies the same
geometric transform to the image and to its mask, so that the pair stays aligned:

* images are interpolated bilinearly and their borders reflected
  (``cv2.BORDER_REFLECT_101``);
* masks are interpolated by nearest neighbour, so they keep only the values they
  had, and the area a transform uncovers is filled with ``mask_fill`` (the
  background label).

:func:`resolve_augmenter` turns the ``augment`` parameter of a segmenter (``None``,
a preset name from :data:`AUGMENT_PRESETS` or an :class:`Augmenter`) into an
:class:`Augmenter` or ``None``.
"""

import copy
import numbers

import cv2
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

__all__ = ["AUGMENT_PRESETS", "Augmenter", "PipelineAugmenter", "resolve_augmenter"]

#: Channels given to one ``cv2.warpAffine`` call: its border value has four entries.
_MAX_WARP_CHANNELS = 4

#: The numeric parameters of :class:`Augmenter`: (lowest, highest, highest allowed).
_PARAMETER_RANGES = {
    "hflip_p": (0.0, 1.0, True),
    "vflip_p": (0.0, 1.0, True),
    "rotate90_p": (0.0, 1.0, True),
    "shift_scale_rotate_p": (0.0, 1.0, True),
    "rotate_limit": (0.0, 180.0, True),
    "scale_limit": (0.0, 1.0, False),
    "shift_limit": (0.0, 1.0, True),
    "brightness_limit": (0.0, np.inf, False),
    "contrast_limit": (0.0, 1.0, True),
    "brightness_contrast_p": (0.0, 1.0, True),
}


class Augmenter(BaseEstimator):
    """Random flips, rotations, shift-scale-rotate, crops and brightness-contrast.

    Each image of a batch gets its own random transform, applied in this order:
    random crop (``crop_size``), horizontal flip, vertical flip, rotation by a
    multiple of 90 degrees, shift-scale-rotate, brightness-contrast. The geometric
    steps are applied identically to the image and its mask; brightness-contrast
    changes the image only.

    Parameters
    ----------
    hflip_p : float, default=0.5
        Probability of flipping an image left-right.
    vflip_p : float, default=0.5
        Probability of flipping an image upside down.
    rotate90_p : float, default=0.0
        Probability of rotating an image by 90, 180 or 270 degrees (drawn
        uniformly). Applied only to square images (height == width, after the
        crop); ignored otherwise.
    shift_scale_rotate_p : float, default=0.0
        Probability of applying a random affine transform: a rotation about the
        image centre by an angle drawn in ``[-rotate_limit, rotate_limit]``, a
        zoom by a factor drawn in ``[1 - scale_limit, 1 + scale_limit]`` and a
        shift drawn in ``[-shift_limit, shift_limit]`` times the height and width.
    rotate_limit : float, default=30
        Largest rotation of shift-scale-rotate, in degrees, in [0, 180].
    scale_limit : float, default=0.1
        Largest relative zoom of shift-scale-rotate, in [0, 1).
    shift_limit : float, default=0.0625
        Largest shift of shift-scale-rotate, as a fraction of the image size, in
        [0, 1].
    crop_size : tuple of (int, int) or None, default=None
        ``(height, width)`` of a random crop taken from each image (and its mask)
        before the other transforms; ``None`` keeps the whole image. It must not
        exceed the image size.
    brightness_limit : float, default=0.0
        Largest brightness change: a shift drawn in
        ``[-brightness_limit, brightness_limit]`` times the image's value range
        (its maximum minus its minimum), so that it means the same for images on
        the 0-1 and 0-255 scales and for standardised images.
    contrast_limit : float, default=0.0
        Largest contrast change, in [0, 1]: the image is scaled about its mean by
        a factor drawn in ``[1 - contrast_limit, 1 + contrast_limit]``.
    brightness_contrast_p : float, default=0.0
        Probability of applying the brightness-contrast change to an image.

    See Also
    --------
    resolve_augmenter : Build an augmenter from a preset name.

    Notes
    -----
    The parameters are checked when :meth:`augment_batch` is called, so that the
    augmenter can be cloned and its parameters searched like any estimator's.
    Brightness-contrast does not clip the result, since the value range of the
    images is not known.

    Examples
    --------
    >>> import numpy as np
    >>> from skunetseg.augment import Augmenter
    >>> images = np.zeros((2, 32, 32, 3), dtype=np.float32)
    >>> masks = np.zeros((2, 32, 32, 1), dtype=np.float32)
    >>> augmenter = Augmenter(shift_scale_rotate_p=0.5, crop_size=(24, 24))
    >>> new_images, new_masks = augmenter.augment_batch(images, masks, random_state=0)
    >>> new_images.shape, new_masks.shape
    ((2, 24, 24, 3), (2, 24, 24, 1))
    """

    def __init__(
        self,
        hflip_p=0.5,
        vflip_p=0.5,
        rotate90_p=0.0,
        shift_scale_rotate_p=0.0,
        rotate_limit=30,
        scale_limit=0.1,
        shift_limit=0.0625,
        crop_size=None,
        brightness_limit=0.0,
        contrast_limit=0.0,
        brightness_contrast_p=0.0,
    ):
        self.hflip_p = hflip_p
        self.vflip_p = vflip_p
        self.rotate90_p = rotate90_p
        self.shift_scale_rotate_p = shift_scale_rotate_p
        self.rotate_limit = rotate_limit
        self.scale_limit = scale_limit
        self.shift_limit = shift_limit
        self.crop_size = crop_size
        self.brightness_limit = brightness_limit
        self.contrast_limit = contrast_limit
        self.brightness_contrast_p = brightness_contrast_p

    def augment_batch(self, images, masks, random_state, mask_fill=None):
        """Return a randomly transformed copy of a batch of images and masks.

        Parameters
        ----------
        images : array-like of shape (n, H, W, C)
            The images, of any real dtype (converted to float32).
        masks : array-like of shape (n, H, W, K)
            Their masks as 0/1 channels (one-hot or multilabel).
        random_state : int, RandomState instance, Generator instance or None
            Source of the random draws. An int gives the same transforms on every
            call; a ``RandomState`` or ``Generator`` advances, so that successive
            calls (epochs) get new transforms; ``None`` draws from NumPy's global
            random state.
        mask_fill : array-like of shape (K,), default=None
            The mask value given to the pixels that shift-scale-rotate brings in
            from outside the image. ``None`` means zeros, right for multilabel
            masks; for one-hot (softmax) masks pass the one-hot vector of the
            background class, so that every pixel keeps exactly one class.

        Returns
        -------
        images : ndarray of shape (n, H', W', C), dtype float32
            The transformed images; ``(H', W')`` is ``crop_size`` when it is set
            and ``(H, W)`` otherwise.
        masks : ndarray of shape (n, H', W', K), dtype float32
            The masks transformed the same way; they hold only values found in
            ``masks`` or ``mask_fill``.
        """
        self._check_params()
        images = _as_float32_batch(images, "images")
        masks = _as_float32_batch(masks, "masks")
        if masks.shape[:3] != images.shape[:3]:
            raise ValueError(
                "images and masks must have the same number of images, height and width; "
                f"got images of shape {images.shape} and masks of shape {masks.shape}."
            )
        mask_fill = _check_mask_fill(mask_fill, masks.shape[-1])
        rng = _as_generator(random_state)

        if self.crop_size is not None:
            images, masks = _random_crop(images, masks, tuple(self.crop_size), rng)
        n_images, height, width = images.shape[:3]

        _flip(images, masks, rng.random(n_images) < self.hflip_p, axis=2)
        _flip(images, masks, rng.random(n_images) < self.vflip_p, axis=1)
        if height == width:
            quarter_turns = rng.integers(1, 4, size=n_images)
            quarter_turns[rng.random(n_images) >= self.rotate90_p] = 0
            _rotate90(images, masks, quarter_turns)

        for index in np.flatnonzero(rng.random(n_images) < self.shift_scale_rotate_p):
            matrix = self._draw_affine_matrix(rng, height, width)
            images[index] = _warp(
                images[index], matrix, interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REFLECT_101, border_value=np.zeros(images.shape[-1]),
            )
            masks[index] = _warp(
                masks[index], matrix, interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT, border_value=mask_fill,
            )

        selected = rng.random(n_images) < self.brightness_contrast_p
        if selected.any():
            images[selected] = self._change_brightness_contrast(images[selected], rng)
        return images, masks

    def _check_params(self):
        """Raise a ValueError naming the first parameter with an invalid value."""
        for name, (lowest, highest, highest_allowed) in _PARAMETER_RANGES.items():
            value = getattr(self, name)
            closing = "]" if highest_allowed else ")"
            in_range = (
                not isinstance(value, bool)
                and isinstance(value, numbers.Real)
                and lowest <= value
                and (value <= highest if highest_allowed else value < highest)
            )
            if not in_range:
                raise ValueError(
                    f"The '{name}' parameter of Augmenter must be a number in "
                    f"[{lowest:g}, {highest:g}{closing}; got {value!r}."
                )
        crop_size = self.crop_size
        if crop_size is not None and not (
            isinstance(crop_size, (tuple, list, np.ndarray))
            and len(crop_size) == 2
            and all(
                isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1
                for size in crop_size
            )
        ):
            raise ValueError(
                "The 'crop_size' parameter of Augmenter must be None or a pair of positive "
                f"integers (height, width); got {crop_size!r}."
            )

    def _draw_affine_matrix(self, rng, height, width):
        """Draw a shift-scale-rotate transform as a 2x3 matrix for ``cv2.warpAffine``."""
        angle = rng.uniform(-self.rotate_limit, self.rotate_limit)
        scale = rng.uniform(1 - self.scale_limit, 1 + self.scale_limit)
        shift_y, shift_x = rng.uniform(-self.shift_limit, self.shift_limit, size=2)
        centre = ((width - 1) / 2, (height - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, float(angle), float(scale))
        matrix[0, 2] += shift_x * width
        matrix[1, 2] += shift_y * height
        return matrix

    def _change_brightness_contrast(self, images, rng):
        """Scale each image about its mean and shift it by a share of its value range."""
        shape = (len(images), 1, 1, 1)
        contrast = rng.uniform(1 - self.contrast_limit, 1 + self.contrast_limit, size=shape)
        brightness = rng.uniform(-self.brightness_limit, self.brightness_limit, size=shape)
        mean = images.mean(axis=(1, 2, 3), keepdims=True)
        value_range = np.ptp(images, axis=(1, 2, 3), keepdims=True)
        changed = (images - mean) * contrast + mean + brightness * value_range
        return changed.astype(np.float32)


def _as_float32_batch(array, name):
    """Return a float32 copy of a ``(n, H, W, channels)`` array, or raise naming it."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.issubdtype(
        array.dtype, np.complexfloating
    ):
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}.")
    if array.ndim != 4:
        raise ValueError(
            f"{name} must have shape (n_images, height, width, channels); got shape {array.shape}."
        )
    return np.array(array, dtype=np.float32)


def _check_mask_fill(mask_fill, n_channels):
    """Return ``mask_fill`` as a float32 vector of ``n_channels`` values (zeros for None)."""
    if mask_fill is None:
        return np.zeros(n_channels, dtype=np.float32)
    fill = np.asarray(mask_fill)
    if (
        fill.shape != (n_channels,)
        or (not np.issubdtype(fill.dtype, np.number) and fill.dtype != bool)
        or not np.isfinite(fill).all()
    ):
        raise ValueError(
            f"mask_fill must be None or {n_channels} finite numbers, one per mask channel; "
            f"got {mask_fill!r}."
        )
    return fill.astype(np.float32)


def _as_generator(random_state):
    """Return a NumPy Generator for ``random_state`` (None, int, RandomState or Generator)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    try:
        state = check_random_state(random_state)
    except ValueError as error:
        raise ValueError(
            "random_state must be None, an int, a numpy RandomState or a numpy Generator; "
            f"got {random_state!r}."
        ) from error
    if isinstance(random_state, numbers.Integral):
        return np.random.default_rng(int(random_state))
    return np.random.default_rng(state.randint(np.iinfo(np.int32).max))


def _random_crop(images, masks, crop_size, rng):
    """Cut the same random ``crop_size`` window out of each image and its mask."""
    n_images, height, width = images.shape[:3]
    crop_height, crop_width = crop_size
    if crop_height > height or crop_width > width:
        raise ValueError(
            f"The 'crop_size' parameter of Augmenter, {crop_size}, exceeds the image size "
            f"({height}, {width})."
        )
    tops = rng.integers(0, height - crop_height + 1, size=n_images)
    lefts = rng.integers(0, width - crop_width + 1, size=n_images)
    rows = tops[:, None] + np.arange(crop_height)
    columns = lefts[:, None] + np.arange(crop_width)
    index = (np.arange(n_images)[:, None, None], rows[:, :, None], columns[:, None, :])
    return images[index], masks[index]


def _flip(images, masks, selected, axis):
    """Reverse ``axis`` of the selected images and masks, in place."""
    reverse = [slice(None)] * 4
    reverse[axis] = slice(None, None, -1)
    for array in (images, masks):
        array[selected] = array[selected][tuple(reverse)]


def _rotate90(images, masks, quarter_turns):
    """Rotate each square image and mask counter-clockwise by its number of quarter turns."""
    for turns in (1, 2, 3):
        selected = quarter_turns == turns
        if selected.any():
            for array in (images, masks):
                array[selected] = np.rot90(array[selected], turns, axes=(1, 2))


def _warp(array, matrix, *, interpolation, border_mode, border_value):
    """Apply ``cv2.warpAffine`` to an ``(H, W, channels)`` array, a few channels at a time."""
    height, width, n_channels = array.shape
    warped = np.empty_like(array)
    for start in range(0, n_channels, _MAX_WARP_CHANNELS):
        stop = min(start + _MAX_WARP_CHANNELS, n_channels)
        chunk = cv2.warpAffine(
            np.ascontiguousarray(array[:, :, start:stop]), matrix, (width, height),
            flags=interpolation, borderMode=border_mode,
            borderValue=tuple(float(value) for value in border_value[start:stop]),
        )
        warped[:, :, start:stop] = chunk.reshape(height, width, stop - start)
    return warped


#: The named augmentations :func:`resolve_augmenter` accepts, as Augmenter parameters.
AUGMENT_PRESETS = {
    "flips": {"hflip_p": 0.5, "vflip_p": 0.5},
    "d4": {"hflip_p": 0.5, "vflip_p": 0.5, "rotate90_p": 0.5},
    "seed": {
        "hflip_p": 0.5,
        "vflip_p": 0.5,
        "shift_scale_rotate_p": 0.5,
        "rotate_limit": 30,
        "scale_limit": 0.1,
        "shift_limit": 0.0625,
    },
}


class PipelineAugmenter:
    """Augment batches with an albumentations pipeline (or any callable like one).

    ``pipeline(image=image, mask=mask)`` is called on each image ``(H, W, C)``
    float32 and its mask ``(H, W, K)`` float32 (0/1 channels) and must return a
    dict with the transformed ``"image"`` and ``"mask"``, as an albumentations
    ``Compose`` does; every image of a batch must come out with one size.

    Reproducibility: each batch is transformed by its own deep copy of the
    pipeline, seeded through its ``set_random_seed`` method (albumentations >= 2)
    with a seed drawn from the batch's random state. The result depends only on
    the estimator's ``random_state``, the epoch and the batch, never on which
    worker thread ran it, and threads never share a pipeline's random state. A
    callable without ``set_random_seed`` is called as it is: its draws are its
    own, not reproducible.

    Parameters
    ----------
    pipeline : callable
        An ``albumentations.Compose`` or any callable with its protocol.

    Notes
    -----
    Transforms that bring in pixels from outside the image fill masks with their
    own ``fill_mask`` (0 by default): right for binary and multilabel masks; for
    one-hot multiclass masks choose geometric transforms that do not, or crop.
    Values are float32 images as ``predict_proba`` sees them (uint8 and uint16
    images scaled to [0, 1]), which albumentations' pixel transforms expect.
    :meth:`to_json` stores an albumentations pipeline with
    ``albumentations.to_dict`` so that :func:`skunetseg.load` rebuilds it.
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __repr__(self):
        return f"PipelineAugmenter({self.pipeline!r})"

    def augment_batch(self, images, masks, random_state, mask_fill=None):
        """Return the images and masks transformed by the pipeline, one image at a time.

        Parameters and return values are those of :meth:`Augmenter.augment_batch`;
        ``mask_fill`` is not used (see the class notes).
        """
        images = _as_float32_batch(images, "images")
        masks = _as_float32_batch(masks, "masks")
        rng = _as_generator(random_state)
        pipeline = self.pipeline
        if callable(getattr(pipeline, "set_random_seed", None)):
            pipeline = copy.deepcopy(pipeline)
            pipeline.set_random_seed(int(rng.integers(np.iinfo(np.int32).max)))
        new_images, new_masks = [], []
        for image, mask in zip(images, masks, strict=True):
            result = pipeline(image=image, mask=mask)
            if not isinstance(result, dict) or "image" not in result or "mask" not in result:
                raise TypeError("An augment pipeline must return a dict with 'image' and "
                                f"'mask', as albumentations.Compose does; got "
                                f"{type(result).__name__}.")
            new_images.append(np.asarray(result["image"], dtype=np.float32).reshape(
                *np.shape(result["image"])[:2], image.shape[-1]))
            new_masks.append(np.asarray(result["mask"], dtype=np.float32).reshape(
                *np.shape(result["mask"])[:2], mask.shape[-1]))
        shapes = {array.shape[:2] for array in new_images + new_masks}
        if len(shapes) > 1:
            raise ValueError("The augment pipeline returned images or masks of different "
                             f"sizes within one batch ({sorted(shapes)}); every image of a "
                             "batch must come out with one size: crop to a fixed size.")
        return np.stack(new_images), np.stack(new_masks)

    def to_json(self):
        """The pipeline as a JSON-ready dict (``albumentations.to_dict``)."""
        try:
            import albumentations
        except ImportError as error:
            raise TypeError("Only albumentations pipelines can be saved; albumentations is "
                            "not installed.") from error
        try:
            return {"albumentations": albumentations.to_dict(self.pipeline)}
        except Exception as error:
            raise TypeError(f"The augment pipeline {self.pipeline!r} cannot be saved: "
                            f"albumentations.to_dict failed ({error}).") from error


def augment_to_json(augment):
    """The ``augment`` parameter as a JSON-ready value for :func:`skunetseg.save_model`."""
    if augment is None or isinstance(augment, str):
        return augment
    if isinstance(augment, Augmenter):
        params = augment.get_params()
        if params["crop_size"] is not None:
            params["crop_size"] = [int(v) for v in params["crop_size"]]
        return {"augmenter": params}
    augmenter = augment if isinstance(augment, PipelineAugmenter) else resolve_augmenter(augment)
    if not isinstance(augmenter, PipelineAugmenter):
        raise TypeError(f"The augment parameter {augment!r} cannot be saved without pickle.")
    return augmenter.to_json()


def augment_from_json(value):
    """The ``augment`` parameter that :func:`augment_to_json` stored."""
    if not isinstance(value, dict):
        return value
    if "augmenter" in value:
        params = value["augmenter"]
        if params.get("crop_size") is not None:
            params["crop_size"] = tuple(params["crop_size"])
        return Augmenter(**params)
    import albumentations

    return albumentations.from_dict(value["albumentations"])


def resolve_augmenter(augment):
    """Return the :class:`Augmenter` an ``augment`` parameter names, or None.

    Parameters
    ----------
    augment : None, str, Augmenter or callable
        What to augment training images with:

        - ``None``: nothing (returns ``None``);
        - ``"flips"``: left-right and upside-down flips, each with probability 0.5;
        - ``"d4"``: the flips plus a rotation by 90, 180 or 270 degrees with
          probability 0.5, which together reach all eight symmetries of the
          square. The rotations are applied only to square images (height ==
          width); other images get the flips only;
        - ``"seed"``: the recipe of the Kaggle seed-segmentation solutions: the
          flips, and with probability 0.5 a shift-scale-rotate of at most 30
          degrees, 10 % zoom and 6.25 % shift;
        - an :class:`Augmenter` (or any object with its ``augment_batch``
          method): returned as it is;
        - an albumentations pipeline, or any callable with its protocol
          ``pipeline(image=image, mask=mask) -> {"image": ..., "mask": ...}``:
          wrapped in a :class:`PipelineAugmenter`.

    Returns
    -------
    augmenter : Augmenter, PipelineAugmenter or None
        A new augmenter for a preset name or a pipeline.

    Examples
    --------
    >>> from skunetseg.augment import resolve_augmenter
    >>> resolve_augmenter("d4")
    Augmenter(rotate90_p=0.5)
    """
    if augment is None or callable(getattr(augment, "augment_batch", None)):
        return augment
    if isinstance(augment, str) and augment in AUGMENT_PRESETS:
        return Augmenter(**AUGMENT_PRESETS[augment])
    if callable(augment) and not isinstance(augment, type):
        return PipelineAugmenter(augment)
    raise ValueError(
        f"The 'augment' parameter must be None, one of {sorted(AUGMENT_PRESETS)}, an "
        f"Augmenter instance or an albumentations pipeline; got {augment!r}."
    )
