"""Overhead of UNetSegmenter against bare Keras on the same data and model.

In one run, alternating the two so that machine noise hits both alike:

* fit: seconds per epoch after the first (the first epoch traces the graph),
  ``UNetSegmenter.fit`` against ``model.fit`` of an identically configured
  ``sm.Unet`` (same loss, metrics, optimizer, batch size and validation images);
* predict: ``UNetSegmenter.predict_proba`` against ``model.predict``.

Prints the ratios (goal: <= 1.05). Usage::

    python benchmarks/bench_overhead.py --data-home ../shared/data [--backbone efficientnetb2]
"""

import argparse
import statistics
import time

import numpy as np

from skunetseg import UNetSegmenter
from skunetseg.datasets import load_membrane


def membrane_tiles(data_home, size, n_images):
    """Non-overlapping size×size tiles of the membrane images, with their masks."""
    data = load_membrane(data_home)
    tiles = [(image[r:r + size, c:c + size], mask[r:r + size, c:c + size])
             for image, mask in zip(data.images, data.masks, strict=True)
             for r in range(0, 512, size) for c in range(0, 512, size)]
    images, masks = map(np.stack, zip(*tiles[:n_images], strict=True))
    return images, masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--backbone", default="efficientnetb2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from skunetseg import _model
    from skunetseg._backend import keras, sm

    images, masks = membrane_tiles(args.data_home, args.size, args.images)
    n_valid = len(images) // 8
    X, y = images[n_valid:], masks[n_valid:]
    X_valid, y_valid = images[:n_valid], masks[:n_valid]
    batch_size = 8

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self, times):
            super().__init__()
            self.times = times

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if epoch > 0:
                self.times.append(time.perf_counter() - self.start)

    def as_network_arrays(images, masks):
        return ((images[..., None] / 255.0).repeat(3, -1).astype("float32"),
                masks[..., None].astype("float32"))

    def bare_run(fit_times, predict_times):
        _model.release_memory()
        keras.utils.set_random_seed(0)
        model = sm.Unet(args.backbone, encoder_weights=None, input_shape=(None, None, 3))
        _model.compile_model(model, loss="jaccard", activation="sigmoid", learning_rate=1e-3,
                             accumulate_steps=1, threshold=0.5)
        x, t = as_network_arrays(X, y)
        model.fit(x, t, batch_size=batch_size, epochs=args.epochs, verbose=0,
                  validation_data=as_network_arrays(X_valid, y_valid),
                  callbacks=[EpochTimer(fit_times)])
        model.predict(x, batch_size=batch_size, verbose=0)  # warm up
        start = time.perf_counter()
        model.predict(x, batch_size=batch_size, verbose=0)
        predict_times.append(time.perf_counter() - start)

    def estimator_run(fit_times, predict_times):
        model = UNetSegmenter(args.backbone, epochs=args.epochs, batch_size=batch_size,
                              early_stopping_patience=None, reduce_lr_patience=None,
                              callbacks=[EpochTimer(fit_times)], random_state=0)
        model.fit(X, y, validation_data=(X_valid, y_valid))
        model.predict_proba(X)  # warm up
        start = time.perf_counter()
        model.predict_proba(X)
        predict_times.append(time.perf_counter() - start)

    bare = {"fit": [], "predict": []}
    ours = {"fit": [], "predict": []}
    for _ in range(args.repeats):
        bare_run(bare["fit"], bare["predict"])
        estimator_run(ours["fit"], ours["predict"])

    print(f"backbone={args.backbone} size={args.size} train_images={len(X)} "
          f"valid_images={len(X_valid)} epochs={args.epochs} repeats={args.repeats}")
    for what in ("fit", "predict"):
        b, o = statistics.median(bare[what]), statistics.median(ours[what])
        unit = "s/epoch" if what == "fit" else "s/call"
        print(f"{what:8s} bare keras {b:.3f} {unit}  UNetSegmenter {o:.3f} {unit}  "
              f"ratio {o / b:.3f}")


if __name__ == "__main__":
    main()
