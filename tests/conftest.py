"""Shared fixtures: tiny synthetic data, small fitted models, the real data folder."""

import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

# albumentations looks online for a newer release on import; this machine (and CI) has no
# internet beyond the package registries, so the look-up only waits for its time-out
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

#: A small, fast U-Net configuration for unit tests. Tracing the Keras graphs dominates
#: a tiny fit; VGG16 traces fastest (about 9 s a fit on 2 CPU cores, against 12 s for
#: resnet18), and skipping the validation split saves tracing the validation graph.
SMALL = dict(backbone="vgg16", decoder_filters=(16, 8, 8, 4, 4), batch_size=4, epochs=1,
             learning_rate=1e-2, validation_fraction=0, augment=None)


def synthetic_images(n=12, height=40, width=44, channels=1, seed=0):
    """Noisy images of bright discs, with the discs as binary masks (uint8 0/1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((n, height, width), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):  # some images hold no object
            cy, cx = rng.integers(0, height), rng.integers(0, width)
            radius = rng.integers(4, 10)
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    noise = rng.normal(0, 20, size=masks.shape)
    images = np.clip(60 + 120 * masks + noise, 0, 255).astype(np.uint8)
    if channels > 1:
        images = np.repeat(images[..., None], channels, axis=-1)
    return images, masks


@pytest.fixture(scope="session")
def binary_data():
    return synthetic_images()


@pytest.fixture(scope="session")
def fitted_binary(binary_data):
    from skunetseg import UNetSegmenter

    X, y = binary_data
    return UNetSegmenter(**{**SMALL, "epochs": 2, "validation_fraction": 0.2},
                         random_state=0).fit(X, y)


@pytest.fixture(scope="session")
def fitted_small(binary_data):
    """``UNetSegmenter(**SMALL, random_state=0)`` fitted on ``binary_data``: the plainest
    fit (no validation images, one epoch), shared by the tests that only read such a
    model. Do not change it (set_params, refit); fit your own for that."""
    from skunetseg import UNetSegmenter

    return UNetSegmenter(**SMALL, random_state=0).fit(*binary_data)


def predict_in_fresh_process(model, X, folder, methods=("predict_proba",),
                             tensorflow_loads_lazily=False):
    """``joblib.dump`` the fitted ``model``, load it in a fresh Python process and return
    ``{method: model.method(X)}`` computed there. With ``tensorflow_loads_lazily``, the
    child also asserts that loading the model did not import TensorFlow."""
    np.save(folder / "X.npy", X)
    joblib.dump(model, folder / "model.joblib")
    code = ("import sys, joblib, numpy as np\n"
            "model = joblib.load(sys.argv[1] + '/model.joblib')\n")
    if tensorflow_loads_lazily:
        code += "assert 'tensorflow' not in sys.modules  # the network is rebuilt on first use\n"
    code += "".join(f"np.save(sys.argv[1] + '/{name}.npy', model.{name}("
                    "np.load(sys.argv[1] + '/X.npy')))\n" for name in methods)
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, timeout=300)
    return {name: np.load(folder / f"{name}.npy") for name in methods}


def shared_data_home():
    """The team's data folder: $SKUNETSEG_SHARED_DATA, else ../shared/data beside the repo."""
    root = os.environ.get("SKUNETSEG_SHARED_DATA")
    return Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def membrane():
    from skunetseg.datasets import load_membrane

    home = shared_data_home()
    if not (home / "membrane").is_dir():
        pytest.skip(f"the membrane data is not in {home}")
    return load_membrane(home, download_if_missing=False)
