"""What skunetseg knows about segmentation-models encoders, without importing them.

The tables below are read from segmentation-models 1.0.1 (pinned); a test checks
them against the installed package so that they cannot drift silently.
"""

#: Input normalisation each encoder was trained with on ImageNet
#: (the ``preprocess_input`` that ``segmentation_models.get_preprocessing`` returns).
PREPROCESSING_MODES = {
    **{name: None for name in (
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "seresnet18", "seresnet34", "resnext50", "resnext101",
    )},
    **{name: "torch" for name in (
        "seresnet50", "seresnet101", "seresnet152", "seresnext50", "seresnext101",
        "senet154", "densenet121", "densenet169", "densenet201",
        *(f"efficientnetb{i}" for i in range(8)),
    )},
    **{name: "caffe" for name in ("vgg16", "vgg19")},
    **{name: "tf" for name in (
        "inceptionresnetv2", "inceptionv3", "mobilenet", "mobilenetv2",
    )},
}

#: Encoders that segmentation-models lists but that do not build under Keras 3.
UNSUPPORTED_BACKBONES = {
    "densenet121": "its layer names contain '/', which Keras 3 rejects",
    "densenet169": "its layer names contain '/', which Keras 3 rejects",
    "densenet201": "its layer names contain '/', which Keras 3 rejects",
}

#: Every encoder name segmentation-models 1.0.1 defines.
ALL_BACKBONES = tuple(PREPROCESSING_MODES)

#: The encoders UNetSegmenter accepts.
SUPPORTED_BACKBONES = tuple(b for b in ALL_BACKBONES if b not in UNSUPPORTED_BACKBONES)


def check_backbone(backbone):
    """Raise a ValueError naming the problem if ``backbone`` cannot be used."""
    if not isinstance(backbone, str):
        raise TypeError(
            f"The 'backbone' parameter must be a str naming an encoder; got {backbone!r}."
        )
    if backbone in UNSUPPORTED_BACKBONES:
        raise ValueError(
            f"The 'backbone' parameter {backbone!r} is not supported: "
            f"{UNSUPPORTED_BACKBONES[backbone]}. Choose another encoder, for example "
            "'efficientnetb2' or 'resnet34'."
        )
    if backbone not in PREPROCESSING_MODES:
        raise ValueError(
            f"The 'backbone' parameter must be one of {sorted(SUPPORTED_BACKBONES)}; "
            f"got {backbone!r}."
        )

#: The loss names ``UNetSegmenter(loss=...)`` accepts (built in :mod:`skunetseg.losses`).
LOSS_NAMES = ("jaccard", "dice", "bce", "focal", "bce_jaccard", "bce_dice")
