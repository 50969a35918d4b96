import numpy as np
import pytest

from skunetseg import ImagePreprocessor
from skunetseg._backbones import ALL_BACKBONES, PREPROCESSING_MODES


def test_backbone_table_matches_segmentation_models():
    from skunetseg._backend import sm

    assert sorted(ALL_BACKBONES) == sorted(sm.Backbones.models_names())


@pytest.mark.parametrize("backbone", ["efficientnetb2", "vgg16", "mobilenetv2", "resnet34"])
def test_preprocessor_matches_segmentation_models(backbone):
    from skunetseg._backend import sm

    images = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    expected = sm.get_preprocessing(backbone)(images.astype("float32"))
    result = ImagePreprocessor(backbone).fit_transform(images)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-4)


def test_preprocessor_repeats_gray_images_for_colour_normalisation():
    gray = np.full((1, 2, 2), 128, np.uint8)
    out = ImagePreprocessor("efficientnetb0").fit_transform(gray)
    assert out.shape == (1, 2, 2, 3)
    assert PREPROCESSING_MODES["efficientnetb0"] == "torch"


def test_preprocessor_rejects_unknown_backbone():
    with pytest.raises(ValueError, match="'backbone' parameter"):
        ImagePreprocessor("resnet9").fit(np.zeros((1, 2, 2)))
