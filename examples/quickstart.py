"""Quickstart: train a U-Net from scratch on 20 membrane images, test on the other 10.

Prints the test Dice of the membrane class (the Kaggle Dice, at the images' full
512×512 resolution) and writes an overlay of one test image, its truth and the
prediction to ``quickstart_overlay.png``.

    python examples/quickstart.py --data-home ../shared/data

The network trains at half resolution (256×256) to finish in a few minutes on a
2-core CPU; the predicted probabilities are resized back to 512×512 for scoring.
``--quick`` trains 2 epochs at 64×64 instead (a smoke run, as the tests do).
"""

import argparse
import time

import cv2
import numpy as np

from skunetseg import UNetSegmenter, dice_score
from skunetseg.datasets import load_membrane


def resize_stack(stack, size, interpolation):
    return np.stack([cv2.resize(item, (size, size), interpolation=interpolation)
                     for item in stack])


def write_overlay(path, image, truth, predicted):
    """Image | truth in green | prediction in red, side by side."""
    def tint(mask, channel):
        colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        colour[mask.astype(bool), channel] = 255
        return colour

    panel = np.hstack([cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), tint(truth, 1),
                       tint(predicted, 2)])
    cv2.imwrite(path, panel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None,
                        help="folder holding membrane/ (default: $SKUNETSEG_DATA or "
                             "~/skunetseg_data, downloaded when missing)")
    parser.add_argument("--size", type=int, default=256, help="training resolution")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--backbone", default="efficientnetb0")
    parser.add_argument("--augment", default="flips",
                        help="training augmentation preset, or none (default: %(default)s)")
    parser.add_argument("--overlay", default="quickstart_overlay.png")
    parser.add_argument("--quick", action="store_true",
                        help="2 epochs at 64x64: checks that everything runs, in seconds")
    args = parser.parse_args()
    if args.quick:
        args.size, args.epochs = 64, 2

    data = load_membrane(args.data_home)
    X = resize_stack(data.images, args.size, cv2.INTER_AREA)
    y = resize_stack(data.masks, args.size, cv2.INTER_NEAREST)  # 1 = membrane
    train, test = slice(0, 20), slice(20, 30)

    augment = None if args.augment == "none" else args.augment
    model = UNetSegmenter(args.backbone, epochs=args.epochs, batch_size=4, augment=augment,
                          early_stopping_patience=15, reduce_lr_patience=6, random_state=0)
    start = time.perf_counter()
    model.fit(X[train], y[train])
    best = model.history_[model.best_epoch_ - 1]
    print(f"trained {len(model.history_)} epochs in {time.perf_counter() - start:.0f} s "
          f"(best epoch {model.best_epoch_}, training Dice {best['dice']:.3f})")

    proba = model.predict_proba(X[test])[..., 0]
    full = resize_stack(proba, 512, cv2.INTER_LINEAR) > model.threshold
    score = dice_score(data.masks[test], full)
    trivial = dice_score(data.masks[test], np.ones_like(data.masks[test]))
    print(f"test Dice, membrane class, 512x512: {score:.3f} "
          f"(predicting all membrane: {trivial:.3f})")
    write_overlay(args.overlay, data.images[20], data.masks[20], full[0])
    print(f"overlay written to {args.overlay}")


if __name__ == "__main__":
    main()
