"""Throughput of the training augmentation pipeline against the model's training speed.

Measures images/s of :class:`skunetseg._batches.AugmentedBatches` alone (the threads
that augment, pad and batch) for each preset, and images/s of one training epoch of
``UNetSegmenter`` on the same images; the pipeline keeps the model fed when its rate
is well above the model's. An albumentations pipeline doing what the "seed" preset
does (flips, shift-scale-rotate with p=0.5) is measured next to the built-in one when
albumentations is installed. Usage::

    python benchmarks/bench_augment_pipeline.py --data-home ../shared/data [--size 256]
        [--pipeline-only]
"""

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _membrane import membrane_at

from skunetseg import UNetSegmenter
from skunetseg.augment import Augmenter, resolve_augmenter


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backbone", default="efficientnetb2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pipeline-only", action="store_true",
                        help="measure the augmentation threads only, not the model")
    args = parser.parse_args()

    from skunetseg._batches import AugmentedBatches
    from skunetseg._images import pad_to_multiple

    _, X, y = membrane_at(args.data_home, args.size)
    images = (X[..., None] / 255).astype(np.float32).repeat(3, axis=-1)
    targets = y[..., None].astype(np.float32)

    presets = {"flips": resolve_augmenter("flips"), "seed": resolve_augmenter("seed"),
               "seed+crop": Augmenter(shift_scale_rotate_p=0.5,
                                      crop_size=(args.size * 3 // 4, args.size * 3 // 4))}
    try:
        import albumentations as A
    except ImportError:
        print("albumentations is not installed: its pipeline is not measured")
    else:
        presets["albu-seed"] = A.Compose([
            A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
            A.Affine(rotate=(-30, 30), scale=(0.9, 1.1),
                     translate_percent=(-0.0625, 0.0625), border_mode=4, p=0.5)])
        presets["albu-flips"] = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    for name, augmenter in presets.items():
        batches = AugmentedBatches(images, targets, augmenter=resolve_augmenter(augmenter),
                                   batch_size=args.batch_size, prepare_images=pad_to_multiple,
                                   mask_fill=np.zeros(1, np.float32), seed=0)
        epochs = 5
        for workers in (1, batches.workers):
            start = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:  # as Keras' enqueuer does in fit
                for _ in range(epochs):
                    list(pool.map(batches.__getitem__, range(len(batches))))
                    batches.on_epoch_end()
            seconds = time.perf_counter() - start
            print(f"pipeline {name:10s} {epochs * len(images) / seconds:8.1f} images/s "
                  f"({workers} worker thread(s))")

    if args.pipeline_only:
        return
    model = UNetSegmenter(args.backbone, epochs=3, batch_size=args.batch_size,
                          validation_fraction=0, early_stopping_patience=None,
                          reduce_lr_patience=None, random_state=0)
    import keras

    class Timer(keras.callbacks.Callback):
        times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    model.set_params(callbacks=[Timer()]).fit(X, y)
    rate = len(X) / np.median(Timer.times[1:])
    print(f"model    {args.backbone} training {rate:8.1f} images/s at {args.size}x{args.size}")


if __name__ == "__main__":
    main()
