"""Predict time of the ladder from files: how often each file is decoded (issue 24).

``FalsePositiveFilter(FoldEnsemble(UNetSegmenter, cv=k), PresenceClassifier)`` predicting
a list of image files. Before issue 24 every fold model and the presence classifier read
each chunk's files themselves (k + 1 decodes of every file, plus the first file of the
chunk once more per model); since, the filter decodes each chunk once and hands the
decoded images down. The script writes ``--n`` synthetic PNG images of ``--size`` px,
fits the ladder on them (tiny networks at ``--input-size``, from scratch), then times
``predict(paths)`` (median of ``--repeats``) and counts the decodes. Run it against two
checkouts to compare::

    PYTHONPATH=<checkout> python benchmarks/bench_decode_once.py --n 48 --size 512

The networks are tiny so that the run fits a CPU budget: the decoding share of the
predict time is larger here than with real networks.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from _timing import timed

import skunetseg
import skunetseg._images as images_module
from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter


def write_files(folder, n, size, seed):
    """``n`` noisy gray images of bright discs as PNG files, and their masks as arrays."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    paths, masks = [], []
    for index in range(n):
        mask = np.zeros((size, size), dtype=np.uint8)
        for _ in range(rng.integers(0, 3)):  # some images hold no object
            cy, cx, radius = rng.integers(0, size, 2).tolist() + [size // rng.integers(6, 12)]
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 1
        image = np.clip(60 + 120 * mask + rng.normal(0, 20, mask.shape), 0, 255)
        path = folder / f"i{index:03d}.png"
        cv2.imwrite(str(path), image.astype(np.uint8))
        paths.append(str(path))
        masks.append(mask)
    return paths, np.stack(masks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="image files")
    parser.add_argument("--size", type=int, default=512, help="side of the images, px")
    parser.add_argument("--input-size", type=int, default=64, help="the networks' side")
    parser.add_argument("--cv", type=int, default=3, help="folds of the ensemble")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tiny = dict(input_size=(args.input_size, args.input_size), batch_size=8, epochs=1,
                validation_fraction=0, augment=None, random_state=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        paths, masks = write_files(Path(folder), args.n, args.size, args.seed)
        ladder = FalsePositiveFilter(
            FoldEnsemble(UNetSegmenter("vgg16", decoder_filters=(16, 8, 8, 4, 4), **tiny),
                         cv=args.cv, random_state=args.seed),
            PresenceClassifier("vgg16", **tiny), random_state=args.seed)
        _, fit_seconds = timed(ladder.fit, paths, masks)
        ladder.predict(paths[:2])  # traces the prediction graphs: not timed

        decoded, read_image = [], images_module.read_image
        images_module.read_image = lambda path, **kw: decoded.append(path) or read_image(
            path, **kw)
        seconds = []
        for _ in range(args.repeats):
            decoded.clear()
            predicted, elapsed = timed(ladder.predict, paths)
            seconds.append(elapsed)
        images_module.read_image = read_image
    row = {"skunetseg": str(Path(skunetseg.__file__).parent), "n": args.n, "size": args.size,
           "input_size": args.input_size, "cv": args.cv, "fit_s": round(fit_seconds, 1),
           "decodes_per_image": len(decoded) / args.n,
           "predict_ms_per_image": round(1000 * statistics.median(seconds) / args.n, 2),
           "predict_s_runs": [round(s, 3) for s in seconds],
           "n_predicted": len(predicted)}
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main() and 0)
