"""Defaults that win: ``UNetSegmenter()`` against the bare segmentation-models script.

On each data set, resized to ``--size`` pixels, split 80/20 with a fixed seed, and
for each seed, trains with the same epoch budget:

* ``bare``: the script a user writes with segmentation-models alone:
  ``sm.Unet("efficientnetb0", encoder_weights=None, classes=K, activation="sigmoid")``,
  BatchNormalization momentum 0.9 on every layer, binary cross-entropy, Adam 1e-3,
  all training images, batch 8, ``--epochs`` epochs, the final weights;
* ``default``: ``UNetSegmenter(backbone="efficientnetb0", epochs=N, batch_size=8,
  learning_rate=1e-3, random_state=seed)`` with everything else at its default;
* the candidates of :data:`CANDIDATES`: the same with some parameters changed
  (``old`` spells out the defaults before issue 15).

and prints, per data set and setting, the test Kaggle Dice
(:func:`skunetseg.metrics.dice_score`) as mean ± spread (half the max - min) over
the seeds, the Dice of the non-empty (image, class) pairs, the share of empty pairs
given a mask (false positives) and the fit time. Every run is appended to
``--out`` (JSON lines) as it ends; runs already there are not repeated, so an
interrupted benchmark resumes. Usage::

    python benchmarks/bench_defaults.py --data-home ../shared/data \\
        --extra-home /work/data-extra --sets membrane:40:128 tgs nuclei nuclei4 \\
        --size 64 --epochs 10 --n-train 320 --seeds 0 1 2 \\
        --candidates bare default old --out defaults.jsonl

A set is ``name`` or ``name:epochs`` or ``name:epochs:size``. Sets: ``membrane``
(30 ISBI images, :func:`skunetseg.datasets.load_membrane`), ``tgs`` (TGS salt,
4,000 101x101 images, 39 % empty masks), ``nuclei`` (Data Science Bowl 2018 stage 1
train, 664 images of nuclei, fixed masks by lopuhin; folder
``<extra-home>/dsb2018/stage1_train``) and ``nuclei4``, a multilabel set built from
the same nuclei images (see :func:`load_nuclei4`), and ``drive`` (DRIVE retina vessels,
40 colour photographs cut into 16 tiles each, split by photograph; folder
``<extra-home>/drive/DRIVE``, see :func:`load_drive`). Results are recorded in
docs/benchmarks.md and docs/design.md.
"""

import argparse
import json
import os
import time

import cv2
import numpy as np

from skunetseg import UNetSegmenter
from skunetseg.augment import Augmenter
from skunetseg.datasets import load_membrane
from skunetseg.metrics import dice_per_pair

#: Settings compared with the bare script: UNetSegmenter parameters over the defaults.
OLD = dict(loss="jaccard", validation_fraction=0.1, early_stopping_patience=10,
           reduce_lr_patience=5, bn_momentum="auto", augment=None)
CANDIDATES = {
    "default": {},
    "bce": {"loss": "bce"},
    "bn0.9": {"bn_momentum": 0.9},
    "noaug": {"augment": None},  # the default since the fifth session (flips before)
    "flips": {"augment": "flips"},  # the default from the second to the fourth session
    "hflip": {"augment": Augmenter(vflip_p=0.0)},
    "identity": {"augment": Augmenter(hflip_p=0.0, vflip_p=0.0)},  # the augment path, no change
    "old": OLD,
    "old+bce": {**OLD, "loss": "bce"},
    "old+bce_jaccard": {**OLD, "loss": "bce_jaccard"},
    "old+bce_dice": {**OLD, "loss": "bce_dice"},
    "old+bn0.9": {**OLD, "bn_momentum": 0.9},
    "old+flips": {**OLD, "augment": "flips"},
    "bce_jaccard+all": {**OLD, "loss": "bce_jaccard", "validation_fraction": 0.0},
    "bce_jaccard+all+fixed": {**OLD, "loss": "bce_jaccard", "validation_fraction": 0.0,
                              "early_stopping_patience": None, "reduce_lr_patience": None},
    "bce_jaccard+all+flips": {**OLD, "loss": "bce_jaccard", "validation_fraction": 0.0,
                              "augment": "flips"},
    "bce_dice+all+flips": {**OLD, "loss": "bce_dice", "validation_fraction": 0.0,
                           "augment": "flips"},
    "bce_jaccard+flips": {**OLD, "loss": "bce_jaccard", "augment": "flips"},
    "bce_jaccard+all+d4": {**OLD, "loss": "bce_jaccard", "validation_fraction": 0.0,
                           "augment": "d4"},
}


# ------------------------------------------------------------------ data sets
def _resize(stack, size, interpolation):
    return np.stack([cv2.resize(item, (size, size), interpolation=interpolation)
                     for item in stack])


def _resize_masks(masks, size):
    if masks.ndim == 4:  # multilabel: channel by channel
        return np.stack([_resize(masks[..., k], size, cv2.INTER_NEAREST)
                         for k in range(masks.shape[-1])], axis=-1)
    return _resize(masks, size, cv2.INTER_NEAREST)


def load_membrane_set(data_home, extra_home, size):
    """Membrane: gray, 1 = membrane (as :func:`~skunetseg.datasets.load_membrane`)."""
    data = load_membrane(data_home)
    return _resize(data.images, size, cv2.INTER_AREA), _resize_masks(data.masks, size)


def load_tgs(data_home, extra_home, size):
    """TGS salt: 4,000 gray 101x101 images, masks 16-bit 0/65535 → 0/1."""
    folder = os.path.join(data_home, "tgs-salt")
    names = sorted(os.listdir(os.path.join(folder, "images")))
    images = np.stack([cv2.imread(os.path.join(folder, "images", name), cv2.IMREAD_GRAYSCALE)
                       for name in names])
    masks = np.stack([cv2.imread(os.path.join(folder, "masks", name), cv2.IMREAD_UNCHANGED)
                      for name in names])
    return _resize(images, size, cv2.INTER_AREA), _resize_masks((masks > 0).astype(np.uint8),
                                                                size)


def _nuclei_raw(extra_home, size):
    """Colour images, the union of the nucleus masks, and the per-class masks of nuclei4.

    Cached as ``<extra-home>/dsb2018/cache_<size>.npz`` (reading ~29,000 mask files
    takes a minute).
    """
    folder = os.path.join(extra_home, "dsb2018")
    cache = os.path.join(folder, f"cache_{size}.npz")
    if os.path.isfile(cache):
        with np.load(cache) as stored:
            return stored["images"], stored["masks"], stored["classes"]
    root = os.path.join(folder, "stage1_train")
    images, masks, classes = [], [], []
    all_shares, per_image = [], []
    for name in sorted(os.listdir(root)):
        image = cv2.imread(os.path.join(root, name, "images", f"{name}.png"), cv2.IMREAD_COLOR)
        instances = [cv2.imread(os.path.join(root, name, "masks", file), cv2.IMREAD_GRAYSCALE) > 0
                     for file in sorted(os.listdir(os.path.join(root, name, "masks")))]
        shares = [item.mean() for item in instances]
        all_shares += shares
        per_image.append((image, instances, shares))
    median_share = float(np.median(all_shares))
    for image, instances, shares in per_image:
        light = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean() > 100  # bright background
        small = np.zeros(image.shape[:2], bool)
        large = np.zeros(image.shape[:2], bool)
        for item, share in zip(instances, shares, strict=True):
            (large if share > median_share else small)[item] = True
        empty = np.zeros_like(small)
        channels = ([empty, empty, small, large] if light else [small, large, empty, empty])
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        masks.append(cv2.resize((small | large).astype(np.uint8), (size, size),
                                interpolation=cv2.INTER_NEAREST))
        classes.append(np.stack([cv2.resize(c.astype(np.uint8), (size, size),
                                            interpolation=cv2.INTER_NEAREST)
                                 for c in channels], axis=-1))
    images, masks, classes = np.stack(images), np.stack(masks), np.stack(classes)
    np.savez_compressed(cache, images=images, masks=masks, classes=classes)
    return images, masks, classes


def load_nuclei(data_home, extra_home, size):
    """DSB 2018 nuclei: 664 colour images (fluorescence, bright-field, stained), binary."""
    images, masks, _ = _nuclei_raw(extra_home, size)
    return images, masks


def load_nuclei4(data_home, extra_home, size):
    """Multilabel, mostly empty pairs, built from the DSB 2018 nuclei.

    Four classes: small and large nuclei (instance area below or above the median
    share of its image, over all nuclei of the set) on dark-background
    (fluorescence) images, and the same two on bright-background images (bright
    field, stained tissue). Each image has at most two of the four classes.
    """
    images, _, classes = _nuclei_raw(extra_home, size)
    return images, classes


def load_drive(data_home, extra_home, size):
    """DRIVE retina vessels: 40 colour fundus photographs, tiled.

    Each 565x584 photograph (training and test folders together) is resized to
    ``4 * size`` pixels a side and cut into 16 tiles of ``size``, so that vessels
    stay one to a few pixels wide; the masks (the first observer's) are resized by
    area and thresholded at half, which keeps thin vessels connected. Returns the
    photograph of each tile as its group, so that :func:`split` keeps the tiles of
    one eye on one side.
    """
    folder = os.path.join(extra_home, "drive", "DRIVE")
    images, masks, groups = [], [], []
    for part in ("training", "test"):
        for name in sorted(os.listdir(os.path.join(folder, part, "images"))):
            number = name.split("_")[0]
            image = cv2.imread(os.path.join(folder, part, "images", name), cv2.IMREAD_COLOR)
            mask = cv2.imread(os.path.join(folder, part, "1st_manual", f"{number}_manual1.gif"),
                              cv2.IMREAD_GRAYSCALE)
            side = 4 * size
            image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
            mask = cv2.resize((mask > 0).astype(np.float32), (side, side),
                              interpolation=cv2.INTER_AREA) >= 0.5
            for top in range(0, side, size):
                for left in range(0, side, size):
                    images.append(image[top:top + size, left:left + size])
                    masks.append(mask[top:top + size, left:left + size].astype(np.uint8))
                    groups.append(f"{part}/{number}")
    return np.stack(images), np.stack(masks), np.array(groups)


LOADERS = {"membrane": load_membrane_set, "tgs": load_tgs, "nuclei": load_nuclei,
           "nuclei4": load_nuclei4, "drive": load_drive}


def split(n_images, n_train, n_test, seed=0, groups=None):
    """Fixed 80/20 split; ``n_train`` / ``n_test`` rows drawn from each part.

    With ``groups``, the groups (not the rows) are split, so that rows of one group
    (the tiles of one photograph) never fall on both sides.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n_images)
        cut = int(round(0.8 * n_images))
        train, test = order[:cut], order[cut:]
    else:
        names = rng.permutation(np.unique(groups))
        cut = int(round(0.8 * len(names)))
        train = rng.permutation(np.flatnonzero(np.isin(groups, names[:cut])))
        test = rng.permutation(np.flatnonzero(np.isin(groups, names[cut:])))
    return (np.sort(train[:n_train] if n_train else train),
            np.sort(test[:n_test] if n_test else test))


# ------------------------------------------------------------------ training
def as_channels(masks):
    return masks[..., np.newaxis] if masks.ndim == 3 else masks


def fit_bare(X, y, epochs, seed):
    """The bare segmentation-models script; returns a predict function."""
    from skunetseg._backend import keras, sm

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    images = (X.astype("float32") / 255.0)
    images = images[..., np.newaxis] if images.ndim == 3 else images
    targets = as_channels(y).astype("float32")
    model = sm.Unet("efficientnetb0", encoder_weights=None, classes=targets.shape[-1],
                    activation="sigmoid", input_shape=(None, None, images.shape[-1]))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(images, targets, batch_size=8, epochs=epochs, shuffle=True, verbose=0)

    def predict(X_test):
        test = X_test.astype("float32") / 255.0
        test = test[..., np.newaxis] if test.ndim == 3 else test
        return model.predict(test, batch_size=8, verbose=0) > 0.5

    return predict, {"epochs_run": epochs, "best_epoch": epochs}


def fit_segmenter(X, y, epochs, seed, params):
    model = UNetSegmenter(backbone="efficientnetb0", epochs=epochs, batch_size=8,
                          learning_rate=1e-3, random_state=seed, **params)
    model.fit(X, y)
    return (lambda X_test: as_channels(model.predict(X_test)) > 0,
            {"epochs_run": len(model.history_), "best_epoch": int(model.best_epoch_)})


def test_scores(truth, predicted):
    """Kaggle Dice, Dice of the non-empty pairs, share of empty pairs given a mask."""
    truth = as_channels(truth) > 0
    scores = dice_per_pair(truth, predicted)
    present = truth.any(axis=(1, 2))
    shown = predicted.any(axis=(1, 2))
    return {"dice": float(scores.mean()),
            "dice_nonempty": float(scores[present].mean()) if present.any() else float("nan"),
            "fp_empty": float(shown[~present].mean()) if (~present).any() else float("nan")}


# ------------------------------------------------------------------ report
def read_runs(path):
    if not os.path.isfile(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def print_table(runs, sets, candidates):
    print("| set | setting | seeds | test Dice | non-empty Dice | FP on empty | epochs (best) "
          "| fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sets:
        for candidate in candidates:
            rows = [r for r in runs if r["set"] == name and r["setting"] == candidate]
            if not rows:
                continue

            def stat(key, digits=3, rows=rows):
                values = np.array([r[key] for r in rows], dtype=float)
                if np.isnan(values).all():  # e.g. no empty pair in the test images
                    return "-"
                spread = (np.nanmax(values) - np.nanmin(values)) / 2
                return (f"{np.nanmean(values):.{digits}f}" if len(values) == 1 else
                        f"{np.nanmean(values):.{digits}f} ± {spread:.{digits}f}")

            epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in rows)
            print(f"| {name} | {candidate} | {len(rows)} | {stat('dice')} | "
                  f"{stat('dice_nonempty')} | {stat('fp_empty', 2)} | {epochs} | "
                  f"{np.mean([r['fit_s'] for r in rows]):.0f} |")


def parse_set(text, epochs, size):
    name, *rest = text.split(":")
    if name not in LOADERS:
        raise SystemExit(f"unknown set {name!r}; choose from {sorted(LOADERS)}")
    return (name, int(rest[0]) if rest else epochs, int(rest[1]) if len(rest) > 1 else size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None, help="folder with membrane/, tgs-salt/")
    parser.add_argument("--extra-home", default="/work/data-extra",
                        help="folder with dsb2018/stage1_train (nuclei, nuclei4) and drive/DRIVE")
    parser.add_argument("--sets", nargs="+", default=["membrane:40:128", "tgs", "nuclei",
                                                      "nuclei4"])
    parser.add_argument("--size", type=int, default=64, help="a multiple of 32")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=320, help="0: all training images")
    parser.add_argument("--n-test", type=int, default=400, help="0: all test images")
    parser.add_argument("--candidates", nargs="+", default=["bare", "default", "old"],
                        help=f"bare and any of {sorted(CANDIDATES)}")
    parser.add_argument("--out", default="bench_defaults.jsonl")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    sets = [parse_set(text, args.epochs, args.size) for text in args.sets]
    for candidate in args.candidates:
        if candidate != "bare" and candidate not in CANDIDATES:
            raise SystemExit(f"unknown candidate {candidate!r}")

    if not args.table_only:
        for name, epochs, size in sets:
            if size % 32:
                raise SystemExit(f"size {size} of {name} is not a multiple of 32")
            images, masks, *groups = LOADERS[name](args.data_home, args.extra_home, size)
            train, test = split(len(images), args.n_train, args.n_test,
                                groups=groups[0] if groups else None)
            empty = 1 - (as_channels(masks[train]) > 0).any(axis=(1, 2)).mean()
            print(f"{name}: {len(train)} training, {len(test)} test images of {size}x{size}, "
                  f"{as_channels(masks).shape[-1]} class(es), {empty:.0%} of the training "
                  f"(image, class) pairs empty; {epochs} epochs", flush=True)
            for seed in args.seeds:
                for candidate in args.candidates:
                    key = dict(set=name, setting=candidate, seed=seed, epochs=epochs, size=size,
                               n_train=len(train))
                    if any(all(r.get(k) == v for k, v in key.items())
                           for r in read_runs(args.out)):
                        continue
                    start = time.perf_counter()
                    if candidate == "bare":
                        predict, info = fit_bare(images[train], masks[train], epochs, seed)
                    else:
                        predict, info = fit_segmenter(images[train], masks[train], epochs,
                                                      seed, CANDIDATES[candidate])
                    fit_s = time.perf_counter() - start
                    run = {**key, **info, "fit_s": round(fit_s, 1),
                           **test_scores(masks[test], predict(images[test]))}
                    print(json.dumps(run), flush=True)
                    with open(args.out, "a") as file:
                        file.write(json.dumps(run) + "\n")
    print_table(read_runs(args.out), [s[0] for s in sets], args.candidates)


if __name__ == "__main__":
    main()
