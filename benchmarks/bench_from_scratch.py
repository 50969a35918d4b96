"""Training from scratch on membrane: BatchNormalization momentum and resolution.

Trains ``UNetSegmenter(encoder_weights=None)`` on 20 membrane images (2 of them held
out for validation) and scores the other 10, at the training resolution and at the
full 512×512 resolution, for each configuration given. Usage::

    python benchmarks/bench_from_scratch.py --data-home ../shared/data \
        --size 128 --bn-momentum auto 0.99

Results are recorded in docs/design.md and docs/benchmarks.md.
"""

import argparse
import time

import cv2
import numpy as np
from _membrane import membrane_at, resize_stack

from skunetseg import UNetSegmenter, dice_score
from skunetseg.datasets import load_membrane


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--size", type=int, nargs="+", default=[128])
    parser.add_argument("--bn-momentum", nargs="+", default=["auto", "0.99"])
    parser.add_argument("--loss", default="jaccard")
    parser.add_argument("--backbone", default="efficientnetb0")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()

    data = load_membrane(args.data_home)
    trivial = dice_score(data.masks[20:], np.ones_like(data.masks[20:]))
    print(f"predicting all membrane scores {trivial:.3f}")
    for size in args.size:
        _, X, y = membrane_at(args.data_home, size)
        for momentum in args.bn_momentum:
            model = UNetSegmenter(args.backbone, loss=args.loss, epochs=args.epochs,
                                  batch_size=4, early_stopping_patience=15,
                                  reduce_lr_patience=6, random_state=0,
                                  bn_momentum=momentum if momentum == "auto" else float(momentum))
            start = time.perf_counter()
            model.fit(X[:20], y[:20])
            seconds = time.perf_counter() - start
            proba = model.predict_proba(X[20:])[..., 0]
            full = resize_stack(proba, 512, cv2.INTER_LINEAR) > model.threshold
            print(f"size={size} bn_momentum={momentum} ({model.bn_momentum_:.3f}) "
                  f"backbone={args.backbone} loss={args.loss} "
                  f"epochs={len(model.history_)} (best {model.best_epoch_}) fit={seconds:.0f}s "
                  f"test_dice@{size}={model.score(X[20:], y[20:]):.3f} "
                  f"test_dice@512={dice_score(data.masks[20:], full):.3f} "
                  f"train_dice={model.score(X[:20], y[:20]):.3f}", flush=True)


if __name__ == "__main__":
    main()
