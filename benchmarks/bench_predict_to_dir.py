"""Peak memory of predict_to_dir does not grow with the number of image files.

Fits a tiny ``UNetSegmenter`` on synthetic 64x64 images and saves it, writes
synthetic gray image files (256x256 by default), then for each count N
(100 and 1,000 by default) runs :func:`skunetseg.io.predict_to_dir` on the
first N files in a fresh Python process. Each child reports its peak resident
memory (``VmHWM`` of ``/proc/self/status``) and its resident memory once the
model is loaded. Prints both peaks and their ratio (goal: within 10 %, i.e.
at most 1.10).

``VmHWM`` rather than ``resource.getrusage(...).ru_maxrss``: Linux carries the
peak of the process that forked into the ``ru_maxrss`` of the new program, so
a child of this script (which has fitted a model) would report this script's
peak. ``VmHWM`` belongs to the child's own address space. Usage::

    python benchmarks/bench_predict_to_dir.py [--counts 100 1000] [--size 256]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def synthetic_images(n, size, seed):
    """Noisy gray uint8 images of bright discs, with the discs as 0/1 masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for mask in masks:
        for _ in range(rng.integers(1, 4)):
            cy, cx, radius = rng.integers(0, size), rng.integers(0, size), size // 8
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    images = np.clip(60 + 120 * masks + rng.normal(0, 20, masks.shape), 0, 255)
    return images.astype(np.uint8), masks


def memory_mib(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def child(model_dir, images_dir, count, out_dir, batch_size):
    """Predict the first ``count`` files into ``out_dir``; print a JSON line of measurements."""
    import skunetseg
    from skunetseg.io import predict_to_dir

    model = skunetseg.load(model_dir)
    paths = sorted(Path(images_dir).glob("*.png"))[:count]
    loaded = memory_mib("VmRSS")
    start = time.perf_counter()
    written = predict_to_dir(model, paths, out_dir, batch_size=batch_size)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "files": len(written), "seconds": seconds, "rss_loaded_mib": loaded,
        "peak_mib": memory_mib("VmHWM"),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backbone", default="efficientnetb0")
    parser.add_argument("--batch-size", type=int, default=32, help="predict_to_dir chunk")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_dir, images_dir, count, out_dir, batch_size = args.child
        child(model_dir, images_dir, int(count), out_dir, int(batch_size))
        return

    from skunetseg import UNetSegmenter, save_model

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        X, y = synthetic_images(16, 64, seed=0)
        model = UNetSegmenter(args.backbone, decoder_filters=(32, 16, 16, 8, 8), batch_size=4,
                              epochs=1, validation_fraction=0, random_state=0).fit(X, y)
        save_model(model, work / "model")
        images_dir = work / "images"
        images_dir.mkdir()
        for start in range(0, max(args.counts), 100):  # a hundred in memory at a time
            images, _ = synthetic_images(min(100, max(args.counts) - start), args.size, start)
            for i, image in enumerate(images):
                cv2.imwrite(str(images_dir / f"{start + i:05d}.png"), image)

        results = {}
        for count in args.counts:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(work / "model"), str(images_dir),
                 str(count), str(work / f"masks_{count}"), str(args.batch_size)],
                capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"the child for {count} files failed:\n{out.stderr[-3000:]}")
            results[count] = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"backbone={args.backbone} (estimator batch_size=4) images={args.size}x{args.size} "
          f"gray uint8 PNG, predict_to_dir batch_size={args.batch_size}")
    for count, result in results.items():
        print(f"N={count:5d} files={result['files']:5d} peak_rss={result['peak_mib']:7.1f} MiB "
              f"rss_after_load={result['rss_loaded_mib']:7.1f} MiB "
              f"predict_to_dir={result['seconds']:6.1f} s "
              f"({1000 * result['seconds'] / count:.0f} ms/image)")
    low, high = min(args.counts), max(args.counts)
    print(f"peak ratio N={high} / N={low}: "
          f"{results[high]['peak_mib'] / results[low]['peak_mib']:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
