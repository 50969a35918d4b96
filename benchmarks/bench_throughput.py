"""CPU throughput of skunetseg: training against bare scripts, bfloat16, tracing, TTA.

Prints, as ratios, in one run (``--parts`` picks some):

* ``train``: training images/s of ``UNetSegmenter.fit`` against a bare
  ``segmentation_models`` script on tf-keras (``TF_USE_LEGACY_KERAS=1``, needs
  ``pip install tf-keras``) and on Keras 3: same ``sm.Unet`` (``--backbone``,
  default efficientnetb2), plain BCE, Adam, batch 8, membrane tiles of
  ``--size`` px, float32, no validation. A process holds one Keras, so each
  run is its own subprocess; the sides alternate, each repeat, and the first
  epoch (tracing) is left out. ``--train-sides`` adds the profiling variants
  ``keras3_metrics`` (bare Keras 3 plus skunetseg's in-graph metrics) and
  ``skunetseg_nometrics`` (the estimator without them), ``keras3_fused``
  (bare Keras 3 whose BatchNormalization trains through the fused kernel),
  ``skunetseg_malloc`` (the estimator with TensorFlow's default CPU allocator,
  ``TF_CPU_ALLOCATOR_USE_BFC=false``) and ``tfkeras_bfc`` / ``keras3_bfc`` (the
  bare scripts with the caching allocator skunetseg turns on). The bare sides
  run with TensorFlow's default allocator unless named ``_bfc``. Each run also
  reports the page faults per epoch (``ru_minflt``).
* ``bf16``: predict images/s in float32 and in bfloat16 (``mixed_precision``
  False against ``"bfloat16"``; the script says whether the CPU has bfloat16
  units, without which the speed means little) and the Dice
  difference, on membrane and TGS salt, with a small efficientnetb0 fitted for
  a few epochs.
* ``tracing``: seconds of a fit's first epoch beyond a later one (graph
  tracing), and their share of a small fit and of a ``FoldEnsemble(cv=3)``.
* ``tta``: ``tta="flips"`` predict time over 4x a plain predict (cost per view),
  at 64, 128 and 256 px (goal <= 1.10).

Usage::

    python benchmarks/bench_throughput.py --data-home ../shared/data [--quick]
        [--parts train,bf16,tracing,tta]
"""

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
TRAIN_SIDES = ("tfkeras", "keras3", "skunetseg")


# ---------------------------------------------------------------- data
def membrane_tiles(data_home, size, n_images):
    """Non-overlapping size x size tiles of the membrane images (gray as 3 channels)."""
    from skunetseg.datasets import load_membrane

    data = load_membrane(data_home, download_if_missing=False)
    tiles = [(image[r:r + size, c:c + size], mask[r:r + size, c:c + size])
             for image, mask in zip(data.images, data.masks, strict=True)
             for r in range(0, 512 - size + 1, size) for c in range(0, 512 - size + 1, size)]
    images, masks = map(np.stack, zip(*tiles[:n_images], strict=True))
    return np.repeat(images[..., None], 3, axis=-1), (masks > 0).astype(np.uint8)


def tgs_salt(data_home, n_images):
    """The first ``n_images`` TGS salt images (101 x 101 gray) and binary masks."""
    folder = Path(data_home) / "tgs-salt"
    names = sorted(p.name for p in (folder / "images").glob("*.png"))[:n_images]
    images = np.stack([cv2.imread(str(folder / "images" / n), cv2.IMREAD_GRAYSCALE)
                       for n in names])
    masks = np.stack([cv2.imread(str(folder / "masks" / n), cv2.IMREAD_UNCHANGED) > 0
                      for n in names])
    return images, masks.astype(np.uint8)


# ---------------------------------------------------------------- part (a): training
def train_worker(side, args):
    """Train one side in this process; print a JSON line of its epoch seconds."""
    images, masks = membrane_tiles(args.data_home, args.size, args.images)
    x = (images / 255.0).astype("float32")
    y = masks[..., None].astype("float32")
    times = []

    faults = []

    def timer(callback_base):
        class EpochTimer(callback_base):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()
                self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.start)
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults)
        return EpochTimer()

    start = time.perf_counter()
    if side.startswith("tfkeras"):
        import segmentation_models as sm
        import tensorflow as tf

        assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
        tf.keras.utils.set_random_seed(0)
        model = sm.Unet(args.backbone, encoder_weights=None, input_shape=(None, None, 3))
        model.compile(tf.keras.optimizers.Adam(1e-3), tf.keras.losses.BinaryCrossentropy())
        model.fit(x, y, batch_size=8, epochs=args.epochs, verbose=0,
                  callbacks=[timer(tf.keras.callbacks.Callback)])
    elif side.startswith("keras3"):
        from skunetseg._backend import keras, sm, tf
        from skunetseg._keras_metrics import KaggleDice, MaskAccuracy

        keras.utils.set_random_seed(0)
        model = sm.Unet(args.backbone, encoder_weights=None, input_shape=(None, None, 3))
        metrics = [KaggleDice(), MaskAccuracy()] if side == "keras3_metrics" else None
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(),
                      metrics=metrics)
        with (fused_batchnorm(model, keras, tf) if side == "keras3_fused"
              else contextlib.nullcontext()):
            model.fit(x, y, batch_size=8, epochs=args.epochs, verbose=0,
                      callbacks=[timer(keras.callbacks.Callback)])
    else:
        import functools

        from skunetseg import UNetSegmenter, _model
        from skunetseg._backend import keras

        if side == "skunetseg_nometrics":
            _model.compile_model = functools.partial(_model.compile_model, metrics=[])
        UNetSegmenter(args.backbone, encoder_weights=None, loss="bce", batch_size=8,
                      learning_rate=1e-3, epochs=args.epochs, validation_fraction=0,
                      early_stopping_patience=None, reduce_lr_patience=None,
                      mixed_precision=False, callbacks=[timer(keras.callbacks.Callback)],
                      random_state=0).fit(images, masks)
    print(json.dumps({"side": side, "epochs": times, "faults": faults,
                      "total": time.perf_counter() - start, "images": len(images)}))


def fused_batchnorm(model, keras, tf):
    """Train ``model``'s BatchNormalization layers through TensorFlow's fused kernel
    (as tf-keras does; Keras 3 uses separate moments and normalisation ops)."""

    class FusedBatchNormalization(keras.layers.BatchNormalization):
        def call(self, inputs, training=None, mask=None):
            if not (training and self.trainable) or inputs.dtype != "float32":
                return super().call(inputs, training=training, mask=mask)
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
            n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
            variance = variance * (n - 1.0) / n  # the kernel's is unbiased; Keras' biased
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum
                                        + variance * (1 - momentum))
            return outputs

    for layer in model.layers:
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization
    return contextlib.nullcontext()


def run_side(side, args):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPU_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    if side.startswith("tfkeras"):
        env.update(TF_USE_LEGACY_KERAS="1", SM_FRAMEWORK="tf.keras")
    if side.endswith("_bfc"):
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    elif side.startswith(("tfkeras", "keras3")) or side == "skunetseg_malloc":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "false"  # TensorFlow's own default
    command = [sys.executable, __file__, "--worker", side, "--backbone", args.backbone,
               "--size", str(args.size), "--images", str(args.images),
               "--epochs", str(args.epochs)]
    if args.data_home:
        command += ["--data-home", str(args.data_home)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def part_train(args):
    sides = args.train_sides.split(",")
    runs = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side in (sides if repeat % 2 == 0 else sides[::-1]):
            runs[side].append(run_side(side, args))
            print(json.dumps(runs[side][-1]), flush=True)
    print(f"\n## train: {args.backbone} {args.size}px batch 8 BCE fp32, {args.images} images, "
          f"{args.epochs} epochs (first left out), {args.repeats} alternating repeats")
    rate = {}
    for side in sides:
        per_run = [run["images"] / statistics.median(run["epochs"][1:]) for run in runs[side]]
        rate[side] = statistics.median(per_run)
        first = statistics.median(run["epochs"][0] - statistics.median(run["epochs"][1:])
                                  for run in runs[side])
        faults = statistics.median(statistics.median(run["faults"][1:]) / run["images"]
                                   for run in runs[side])
        print(f"{side:20s} {rate[side]:6.2f} images/s (runs: "
              f"{', '.join(f'{r:.2f}' for r in per_run)})  first epoch +{first:.1f} s  "
              f"{faults / 1000:.0f}k page faults per image")
    base = rate.get("tfkeras") or rate[sides[0]]
    for side in sides:
        print(f"ratio {side}/tfkeras = {rate[side] / base:.3f}")


# ---------------------------------------------------------------- part (b): bfloat16
def fitted(X, y, *, size_epochs, seed=0):
    from skunetseg import UNetSegmenter

    model = UNetSegmenter("efficientnetb0", encoder_weights=None, batch_size=8,
                          epochs=size_epochs, learning_rate=1e-3, validation_fraction=0,
                          early_stopping_patience=None, reduce_lr_patience=None,
                          augment="flips", random_state=seed)
    start = time.perf_counter()
    model.fit(X, y)
    return model, time.perf_counter() - start


def compare_precisions(name, model, X, y, repeats):
    from skunetseg._backend import cpu_supports_bfloat16

    fp32 = copy.copy(model).set_params(mixed_precision=False)
    bf16 = copy.copy(model).set_params(mixed_precision="bfloat16")
    assert bf16._predict_network().layers[1].compute_dtype == "bfloat16"
    for m in (fp32, bf16):
        m.predict_proba(X[:8])  # trace
    seconds = {"fp32": [], "bf16": []}
    scores = {}
    for repeat in range(repeats):
        for label, m in (("fp32", fp32), ("bf16", bf16))[::1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            proba = m.predict_proba(X)
            seconds[label].append(time.perf_counter() - start)
            scores[label] = m.score(X, y) if repeat == 0 else scores[label]
            if repeat == 0:
                scores[label + "_proba"] = proba
    fp, bf = (statistics.median(seconds[k]) for k in ("fp32", "bf16"))
    diff = np.abs(scores["fp32_proba"] - scores["bf16_proba"])
    print(f"{name:10s} fp32 {len(X) / fp:6.1f} img/s  bf16 {len(X) / bf:6.1f} img/s  "
          f"speed ratio bf16/fp32 {fp / bf:.2f}  Dice fp32 {scores['fp32']:.4f} "
          f"bf16 {scores['bf16']:.4f} diff {scores['bf16'] - scores['fp32']:+.4f}  "
          f"max|dp| {diff.max():.3f} mean|dp| {diff.mean():.4f}  "
          f"(CPU bf16 units: {cpu_supports_bfloat16()})")


def part_bf16(args, membrane_model):
    from skunetseg._backend import cpu_supports_bfloat16

    print(f"\n## bf16 prediction (efficientnetb0, {args.repeats} alternating repeats; this CPU "
          f"{'has' if cpu_supports_bfloat16() else 'LACKS'} avx512_bf16/amx_bf16)")
    model, X_test, y_test = membrane_model[:3]
    compare_precisions("membrane", model, X_test, y_test, args.repeats)
    n_train = n_test = args.tgs_images or (96 if args.quick else 400)
    images, masks = tgs_salt(args.data_home, n_train + n_test)
    salt, seconds = fitted(images[:n_train], masks[:n_train], size_epochs=args.fit_epochs)
    print(f"TGS salt model: {n_train} images, {args.fit_epochs} epochs, fit {seconds:.0f} s")
    compare_precisions("tgs-salt", salt, images[n_train:], masks[n_train:], args.repeats)


# ---------------------------------------------------------------- part (c): tracing
def part_tracing(args, membrane_model):
    from skunetseg import FoldEnsemble, UNetSegmenter
    from skunetseg._backend import keras

    print("\n## tracing (efficientnetb0, membrane 128 px)")
    report_tracing("one fit", [membrane_model[3]], membrane_model[4])

    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            times.append([])

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times[-1].append(time.perf_counter() - self.start)

    _, X, y = membrane_model[5]
    estimator = UNetSegmenter("efficientnetb0", encoder_weights=None, batch_size=8,
                              epochs=args.fit_epochs, validation_fraction=0,
                              early_stopping_patience=None, reduce_lr_patience=None,
                              callbacks=[EpochTimer()], random_state=0)
    start = time.perf_counter()
    FoldEnsemble(estimator, cv=3).fit(X, y)
    report_tracing("FoldEnsemble(cv=3)", times, time.perf_counter() - start)


def report_tracing(name, fits, total):
    """Tracing of each fit: its first epoch's seconds beyond the median later epoch."""
    tracing = [fit[0] - statistics.median(fit[1:]) for fit in fits]
    print(f"{name:20s} fits {len(fits)}  tracing {statistics.median(tracing):.1f} s per fit  "
          f"total {total:.0f} s  tracing share {sum(tracing) / total:.2f}")


# ---------------------------------------------------------------- part (d): TTA
def part_tta(args, membrane_model):
    from _membrane import resize_stack

    model = copy.copy(membrane_model[0]).set_params(mixed_precision=False)
    _, images, _ = membrane_model[5]
    # the same number of pixels at every size (the membrane images repeated), so that
    # each plain predict takes a second or more: shorter runs vary by +-30 % here
    repeats = max(args.repeats, 4)
    print(f"\n## TTA cost per view (tta='flips', 4 views; median of {repeats + 1} "
          "alternating repeats)")
    for size, n in ((64, 256), (128, 64), (256, 16)):
        X = resize_stack(np.resize(images, (n, *images.shape[1:])), size, cv2.INTER_AREA)
        plain, flips = copy.copy(model), copy.copy(model).set_params(tta="flips")
        for m in (plain, flips):
            m.predict_proba(X)  # trace this size
        seconds = {"plain": [], "flips": []}
        for repeat in range(repeats + 1):
            for label, m in (("plain", plain), ("flips", flips))[::1 if repeat % 2 else -1]:
                start = time.perf_counter()
                m.predict_proba(X)
                seconds[label].append(time.perf_counter() - start)
        p, f = statistics.median(seconds["plain"]), statistics.median(seconds["flips"])
        print(f"{size:4d} px  {n} images  plain {p:.2f} s  flips {f:.2f} s  "
              f"per view {f / (4 * p):.3f}")


# ---------------------------------------------------------------- main
def membrane_setup(args):
    """A small efficientnetb0 fitted on membrane (128 px): (model, X_test, y_test, epoch
    seconds, fit seconds, (data, X, y))."""
    from _membrane import membrane_at

    from skunetseg._backend import keras

    data = membrane_at(args.data_home, 128)
    _, X, y = data
    epoch_times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    from skunetseg import UNetSegmenter

    model = UNetSegmenter("efficientnetb0", encoder_weights=None, batch_size=8,
                          epochs=args.membrane_epochs, learning_rate=1e-3,
                          validation_fraction=0, early_stopping_patience=None,
                          reduce_lr_patience=None, augment="flips",
                          callbacks=[EpochTimer()], random_state=0)
    start = time.perf_counter()
    model.fit(X[:20], y[:20])
    seconds = time.perf_counter() - start
    print(f"membrane model: 20 images 128 px, {len(epoch_times)} epochs, fit {seconds:.0f} s, "
          f"train Dice {model.history_[-1]['dice']:.3f}")
    return model, X[20:], y[20:], epoch_times, seconds, data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--parts", default="train,bf16,tracing,tta")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images, epochs and repeats (a smoke run)")
    parser.add_argument("--backbone", default="efficientnetb2")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--fit-epochs", type=int, default=None)
    parser.add_argument("--membrane-epochs", type=int, default=None,
                        help="epochs of the membrane model of the bf16, tracing and tta parts")
    parser.add_argument("--tgs-images", type=int, default=None,
                        help="TGS salt images to fit on, and as many to test on (bf16 part)")
    parser.add_argument("--train-sides", default=",".join(TRAIN_SIDES))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.images = args.images or (16 if args.quick else 32)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.fit_epochs = args.fit_epochs or (2 if args.quick else 4)
    args.membrane_epochs = args.membrane_epochs or (3 if args.quick else 3 * args.fit_epochs)
    if args.data_home is None:
        args.data_home = str(HERE.parents[1] / "shared" / "data")
    if args.worker:
        return train_worker(args.worker, args)

    parts = args.parts.split(",")
    if "train" in parts:
        part_train(args)
    if {"bf16", "tracing", "tta"} & set(parts):
        membrane_model = membrane_setup(args)
        for name, part in (("bf16", part_bf16), ("tracing", part_tracing), ("tta", part_tta)):
            if name in parts:
                part(args, membrane_model)
    return None


if __name__ == "__main__":
    main()
