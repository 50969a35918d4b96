"""augment= with an albumentations pipeline: joint transforms, reproducibility, persistence."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import SMALL, synthetic_images

from skunetseg.augment import (
    PipelineAugmenter,
    augment_from_json,
    augment_to_json,
    resolve_augmenter,
)

A = pytest.importorskip("albumentations")


def pipeline():
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
                      A.RandomRotate90(p=0.5), A.RandomBrightnessContrast(p=0.3)])


def batch(n=6, size=32):
    images, masks = synthetic_images(n=n, height=size, width=size, seed=1)
    return (images[..., None] / 255).astype(np.float32), masks[..., None].astype(np.float32)


def test_pipeline_moves_image_and_mask_together_and_is_seeded():
    images, masks = batch()
    augmenter = resolve_augmenter(pipeline())
    assert isinstance(augmenter, PipelineAugmenter)
    new_images, new_masks = augmenter.augment_batch(images, masks, random_state=0)
    assert new_images.shape == images.shape and new_masks.shape == masks.shape
    assert new_images.dtype == new_masks.dtype == np.float32
    assert not np.array_equal(new_images, images)  # something happened
    # the discs are where the images are bright: the geometry moved both alike
    for image, mask in zip(new_images, new_masks, strict=True):
        inside, outside = image[mask > 0.5], image[mask < 0.5]
        if inside.size:
            assert inside.mean() > outside.mean() + 0.2
    assert set(np.unique(new_masks)) <= {0.0, 1.0}
    again = augmenter.augment_batch(images, masks, random_state=0)
    np.testing.assert_array_equal(again[0], new_images)
    np.testing.assert_array_equal(again[1], new_masks)
    other = augmenter.augment_batch(images, masks, random_state=1)
    assert not np.array_equal(other[0], new_images)


def test_batches_do_not_depend_on_the_worker_threads():
    from skunetseg._batches import AugmentedBatches
    from skunetseg._images import pad_to_multiple

    images, masks = batch(n=16)

    def epoch(workers, order):
        batches = AugmentedBatches(images, masks, augmenter=resolve_augmenter(pipeline()),
                                   batch_size=2, prepare_images=pad_to_multiple,
                                   mask_fill=np.zeros(1, np.float32), seed=7)
        with ThreadPoolExecutor(workers) as pool:
            results = dict(zip(order, pool.map(batches.__getitem__, order), strict=True))
        return [results[index] for index in range(len(batches))]

    serial = epoch(1, list(range(8)))
    threaded = epoch(4, list(range(8))[::-1])
    for (a_images, a_masks), (b_images, b_masks) in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_masks, b_masks)


def test_a_plain_callable_and_bad_outputs():
    images, masks = batch(n=2)

    def flip(image, mask):
        return {"image": image[:, ::-1], "mask": mask[:, ::-1]}

    new_images, new_masks = resolve_augmenter(flip).augment_batch(images, masks, 0)
    np.testing.assert_array_equal(new_images, images[:, :, ::-1])
    np.testing.assert_array_equal(new_masks, masks[:, :, ::-1])
    with pytest.raises(TypeError, match="dict with 'image' and 'mask'"):
        PipelineAugmenter(lambda image, mask: image).augment_batch(images, masks, 0)
    with pytest.raises(TypeError, match="cannot be saved"):
        augment_to_json(flip)


def test_json_round_trip():
    stored = augment_to_json(pipeline())
    import json

    rebuilt = augment_from_json(json.loads(json.dumps(stored)))
    assert A.to_dict(rebuilt) == A.to_dict(pipeline())
    images, masks = batch(n=3)
    expected = PipelineAugmenter(pipeline()).augment_batch(images, masks, 5)
    result = PipelineAugmenter(rebuilt).augment_batch(images, masks, 5)
    np.testing.assert_array_equal(result[0], expected[0])


def test_segmenter_trains_with_a_pipeline_saves_and_pickles_it(tmp_path):
    import skunetseg
    from skunetseg import UNetSegmenter

    X, y = synthetic_images(n=8, height=32, width=32)
    model = UNetSegmenter(**{**SMALL, "augment": pipeline()}, random_state=0).fit(X, y)
    model.save(tmp_path / "model")
    loaded = skunetseg.load(tmp_path / "model")
    assert A.to_dict(loaded.augment) == A.to_dict(model.augment)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)
    unpickled = pickle.loads(pickle.dumps(model))
    assert A.to_dict(unpickled.augment) == A.to_dict(model.augment)


def test_save_stores_a_built_in_augmenter_as_its_parameters(fitted_binary, tmp_path):
    import copy

    import skunetseg
    from skunetseg.augment import Augmenter

    model = copy.copy(fitted_binary)
    model.augment = Augmenter(crop_size=(16, 24), shift_scale_rotate_p=0.25)
    model.save(tmp_path / "model")
    loaded = skunetseg.load(tmp_path / "model").augment
    assert isinstance(loaded, Augmenter)
    assert loaded.get_params() == model.augment.get_params()
