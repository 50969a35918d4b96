"""Test-time augmentation on membrane: Dice and cost of one trained model.

Trains one ``UNetSegmenter`` on membrane images 0-19 (``--augment`` for training
augmentation), then scores images 20-29 with ``tta=None``, ``"flips"`` and
``"d4"`` via :func:`skunetseg.tta.evaluate_tta` (no refitting), and prints each
setting's Dice, its predict time, and that time divided by k times the plain
predict time (goal: at most 1.10). Usage::

    python benchmarks/bench_tta.py --data-home ../shared/data [--size 256]
"""

import argparse
import time

import numpy as np
from _membrane import membrane_at

from skunetseg import UNetSegmenter
from skunetseg.tta import TTA_PRESETS, evaluate_tta


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--backbone", default="efficientnetb0")
    parser.add_argument("--augment", default="flips")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    _, X, y = membrane_at(args.data_home, args.size)
    model = UNetSegmenter(args.backbone, epochs=args.epochs, batch_size=4,
                          augment=None if args.augment == "none" else args.augment,
                          early_stopping_patience=15, reduce_lr_patience=6, random_state=0)
    start = time.perf_counter()
    model.fit(X[:20], y[:20])
    print(f"backbone={args.backbone} size={args.size} augment={args.augment} "
          f"epochs={len(model.history_)} (best {model.best_epoch_}) "
          f"fit={time.perf_counter() - start:.0f}s")

    settings = (None, "flips", "d4")
    evaluate_tta(model, X[20:], y[20:], settings)  # warm up: trace the predict graph
    runs = [evaluate_tta(model, X[20:], y[20:], settings) for _ in range(args.repeats)]
    plain = np.median([run[0]["seconds"] for run in runs])
    for i, setting in enumerate(settings):
        seconds = np.median([run[i]["seconds"] for run in runs])
        views = 1 if setting is None else len(TTA_PRESETS[setting])
        print(f"tta={str(setting):5s} views={views} dice={runs[0][i]['score']:.4f} "
              f"predict+score={seconds:.2f}s ratio_to_{views}x_plain="
              f"{seconds / (views * plain):.3f}")


if __name__ == "__main__":
    main()
