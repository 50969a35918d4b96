"""Repeated fits in one process (a grid search): skunetseg must free what it holds.

TensorFlow 2.21 itself keeps about the size of a model's weights and optimizer state
per ``model.fit`` in graph mode, even after ``clear_session`` and garbage collection
(keras-team/keras#17458; see docs/design.md). This test measures that baseline with
bare Keras in the same process and checks that a fit of UNetSegmenter adds nothing
on top: no kept models, datasets, best-weights copies or histories.
"""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import gc, json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from conftest import SMALL, synthetic_images
from skunetseg import UNetSegmenter
from skunetseg import _model
from skunetseg._backend import keras, sm

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

X, y = synthetic_images(n=12, height=64, width=64)
x = (X[..., None] / 255).astype("float32")
t = y[..., None].astype("float32")

def bare_fit():
    model = sm.Unet(SMALL["backbone"], encoder_weights=None, input_shape=(None, None, 1),
                    decoder_filters=SMALL["decoder_filters"])
    _model.compile_model(model, loss="jaccard", activation="sigmoid", learning_rate=1e-2,
                         accumulate_steps=1, threshold=0.5)
    model.fit(x, t, batch_size=4, epochs=1, verbose=0)
    model.predict(x, verbose=0)

def estimator_fit(i):
    UNetSegmenter(**SMALL, random_state=i).fit(X, y).predict_proba(X)

def growth(fit, n=4):
    fit(0); _model.release_memory()  # warm up: first fit loads kernels, traces
    sizes = []
    for i in range(n):
        fit(i); _model.release_memory(); sizes.append(rss_mib())
    return [b - a for a, b in zip(sizes, sizes[1:])]

print(json.dumps({"bare": growth(lambda i: bare_fit()), "ours": growth(estimator_fit)}))
"""


def test_repeated_fits_free_everything_skunetseg_holds():
    tests_dir = str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", SCRIPT, tests_dir], capture_output=True,
                         text=True, check=True, timeout=900)
    growth = json.loads(out.stdout.strip().splitlines()[-1])
    bare = sorted(growth["bare"])[len(growth["bare"]) // 2]
    ours = sorted(growth["ours"])[len(growth["ours"]) // 2]
    print(f"RSS growth per fit, MiB: bare Keras {growth['bare']}, UNetSegmenter {growth['ours']}")
    assert ours < 1.25 * bare + 40, growth
