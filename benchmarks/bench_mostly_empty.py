"""The ladder on mostly-empty data: KolektorSDD (87 % empty) or TGS salt, from the files.

One seeded split of the files into train and test; on KolektorSDD the images of one
physical part (``kosNN``) are never on both sides, and the fold ensemble splits the
training images by part too (``GroupKFold``). Every network is trained from scratch
with ``--backbone`` / ``--decoder-filters`` at ``--input-size``, for ``--epochs``,
batch ``--batch-size``, Adam 1e-3; everything else is the estimators' defaults. Rows:

* **predict nothing**: every mask empty (no fit);
* **bare sm.Unet script**: what a user writes without skunetseg: the same images
  resized to the input size, ``sm.Unet(backbone, encoder_weights=None,
  decoder_filters=...)``, binary cross-entropy, Adam 1e-3, batch size and epochs as
  above, all training images, the last epoch's weights; its probabilities are resized
  back to each image's size and thresholded at 0.5, as the estimator does;
* **UNetSegmenter**: the defaults, from files: object-balanced epochs and, on
  mostly-empty data (KolektorSDD; not TGS, 39 % empty), 10 % of the files held out,
  the kept epoch chosen by their balanced Dice and the threshold and ``min_area``
  tuned on them; on such data a second row gives the same model untuned (threshold
  0.5, no area filter);
* **+ TTA**: the same model with ``tta`` set after fit (``--tta``: ``flips``, the
  default: the image, its two flips and its half turn; ``hflip``: the image and its
  left-right flip; ``none`` leaves this row out);
* **FoldEnsemble(cv=3), untuned**: the fold models (``--tta`` views), averaged, thresholded
  at 0.5 without area filter;
* **+ tuned post-processing**: the same ensemble with the threshold and ``min_area``
  tuned on its out-of-fold maps (the default);
* **+ false-positive filter**: ``FalsePositiveFilter(ensemble, --classifier,
  tune_threshold=True)``, which reuses the ensemble's folds and out-of-fold maps (the
  ensemble rows above are this filter's ensemble: one fit for the three rows).

Columns, on the test files at their own size: Kaggle Dice (mean over images; an empty
truth scores 1 only for an empty prediction), the Dice of the images that hold an
object, the share of empty images given a mask, the share of object images left
empty, and the fit time. Each row is appended to ``--out`` (JSON lines). Usage::

    python benchmarks/bench_mostly_empty.py --data-home ../shared/data --set kolektor
    python benchmarks/bench_mostly_empty.py --set tgs --input-size 64 64 --n-train 800
"""

import argparse
import copy
import csv
import json
import os
import time

import cv2
import numpy as np
from _timing import timed
from sklearn.model_selection import GroupKFold

from skunetseg import FalsePositiveFilter, FoldEnsemble, UNetSegmenter
from skunetseg.io import load_image_folder, read_image, read_mask

# ------------------------------------------------------------------ data
#: ``--tta``: the views averaged (None: the image as it is).
TTA_CHOICES = {"flips": "flips", "hflip": ["identity", "hflip"], "none": None}


def kolektor_split(data_home, test_share, seed):
    """Train and test files of KolektorSDD, split by part; and the parts of the train files."""
    folder = os.path.join(data_home, "kolektorsdd")
    with open(os.path.join(folder, "manifest.csv"), newline="") as handle:
        stems = [row["stem"] for row in csv.DictReader(handle)]
    parts = sorted({stem.split("_")[0] for stem in stems})
    order = np.random.default_rng(seed).permutation(len(parts))
    test_parts = {parts[i] for i in order[:round(test_share * len(parts))]}

    def files(chosen):
        return ([os.path.join(folder, "images", f"{stem}.jpg") for stem in chosen],
                [os.path.join(folder, "masks", f"{stem}.png") for stem in chosen])

    train = [stem for stem in stems if stem.split("_")[0] not in test_parts]
    test = [stem for stem in stems if stem.split("_")[0] in test_parts]
    groups = np.array([stem.split("_")[0] for stem in train])
    return (*files(train), *files(test), groups)


def tgs_split(data_home, n_train, n_test, seed):
    """Disjoint, seeded train and test files of TGS salt (no groups)."""
    folder = os.path.join(data_home, "tgs-salt")
    images, masks = load_image_folder(os.path.join(folder, "images"),
                                      os.path.join(folder, "masks"))
    order = np.random.default_rng(seed).permutation(len(images))
    train, test = order[:n_train], order[n_train:n_train + n_test]
    return ([images[i] for i in train], [masks[i] for i in train],
            [images[i] for i in test], [masks[i] for i in test], None)


def scores(truth, predicted):
    """Kaggle Dice, Dice of object images, empty images given a mask, object images missed."""
    dice, holds, shown = [], [], []
    for true, pred in zip(truth, predicted, strict=True):
        true, pred = np.asarray(true) > 0, np.asarray(pred) > 0
        total = true.sum() + pred.sum()
        dice.append(1.0 if total == 0 else 2.0 * (true & pred).sum() / total)
        holds.append(true.any())
        shown.append(pred.any())
    dice, holds, shown = np.array(dice), np.array(holds), np.array(shown)
    return {"dice": float(dice.mean()), "dice_objects": float(dice[holds].mean()),
            "fp_empty": float(shown[~holds].mean()), "missed": float((~shown[holds]).mean())}


def masks_of(proba_list, postprocessing):
    """Post-processed 2-D masks of per-image ``(H, W, 1)`` probability maps."""
    return [postprocessing.apply(proba[np.newaxis])[0, ..., 0] for proba in proba_list]


# ------------------------------------------------------------ the bare script
def bare_script(X_train, y_train, X_test, *, size, backbone, decoder_filters, epochs,
                batch_size, seed):
    """The bare segmentation-models script; returns the test masks at their own size."""
    from skunetseg._backend import keras, sm

    def load(paths, kind):
        out = []
        for path in paths:
            array = read_mask(path) > 0 if kind == "mask" else read_image(path)
            if array.ndim == 3:  # TGS: three equal channels
                array = array[..., 0]
            interpolation = cv2.INTER_NEAREST if kind == "mask" else cv2.INTER_AREA
            out.append(cv2.resize(array.astype(np.uint8), size[::-1],
                                  interpolation=interpolation))
        stack = np.stack(out).astype("float32")
        return stack[..., np.newaxis] / (1.0 if kind == "mask" else 255.0)

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    images, targets = load(X_train, "image"), load(y_train, "mask")
    model = sm.Unet(backbone, encoder_weights=None, classes=1, activation="sigmoid",
                    decoder_filters=decoder_filters, input_shape=(None, None, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(images, targets, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    proba = model.predict(load(X_test, "image"), batch_size=batch_size, verbose=0)[..., 0]
    sizes = [read_mask(path).shape for path in X_test]
    return [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
            for p, (h, w) in zip(proba, sizes, strict=True)]


# ------------------------------------------------------------------ main
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--set", choices=["kolektor", "tgs"], default="kolektor")
    parser.add_argument("--test-share", type=float, default=1 / 3, help="KolektorSDD parts")
    parser.add_argument("--n-train", type=int, default=800, help="TGS")
    parser.add_argument("--n-test", type=int, default=400, help="TGS")
    parser.add_argument("--input-size", type=int, nargs=2, default=[256, 96])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--decoder-filters", type=int, nargs=5, default=[64, 32, 16, 16, 8])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classifier", default="features",
                        help="the filter's presence classifier: features, image or auto")
    parser.add_argument("--rows", nargs="+", default=["bare", "single", "ladder"],
                        choices=["bare", "single", "ladder"])
    parser.add_argument("--tta", choices=sorted(TTA_CHOICES), default="flips",
                        help="the views of the +TTA row and of the fold ensemble")
    parser.add_argument("--save", default=None,
                        help="save the fitted ladder (FalsePositiveFilter) to this folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segmenter-params", type=json.loads, default={},
                        help="UNetSegmenter parameters of the single-model rows, as JSON, "
                             "e.g. '{\"validation_fraction\": 0, \"threshold\": 0.5, "
                             "\"min_area\": 0}' (the defaults before the held-out tuning)")
    parser.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    args = parser.parse_args()

    if args.set == "kolektor":
        X_train, y_train, X_test, y_test, groups = kolektor_split(
            args.data_home, args.test_share, args.seed)
    else:
        X_train, y_train, X_test, y_test, groups = tgs_split(
            args.data_home, args.n_train, args.n_test, args.seed)
    truth = [read_mask(path) > 0 for path in y_test]
    train_objects = np.array([read_mask(path).any() for path in y_train])
    size = tuple(args.input_size)
    print(f"{args.set}, seed {args.seed}: {len(X_train)} train files "
          f"({1 - train_objects.mean():.1%} empty), {len(X_test)} test files "
          f"({1 - np.mean([t.any() for t in truth]):.1%} empty); {args.backbone} from "
          f"scratch, decoder {args.decoder_filters}, input {size}, {args.epochs} epochs, "
          f"batch {args.batch_size}", flush=True)
    common = dict(backbone=args.backbone, decoder_filters=tuple(args.decoder_filters),
                  encoder_weights=None, input_size=size, epochs=args.epochs,
                  batch_size=args.batch_size, random_state=args.seed)

    tta = TTA_CHOICES[args.tta]
    rows = []

    def report(name, predicted, seconds, note=""):
        row = {"set": args.set, "seed": args.seed, "row": name, **scores(truth, predicted),
               "fit_s": round(seconds), "note": note, "epochs": args.epochs,
               "input_size": list(size), "backbone": args.backbone}
        rows.append(row)
        print(f"| {name} | {row['dice']:.4f} | {row['dice_objects']:.3f} | "
              f"{row['fp_empty']:.1%} | {row['missed']:.1%} | {row['fit_s']} s | {note} |",
              flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")

    print("| row | Kaggle Dice | Dice, object images | empty images given a mask | "
          "object images left empty | fit | note |\n|---|---|---|---|---|---|---|", flush=True)
    report("predict nothing", [np.zeros_like(t) for t in truth], 0.0)

    if "bare" in args.rows:
        predicted, seconds = timed(bare_script, X_train, y_train, X_test, size=size,
                                   backbone=args.backbone,
                                   decoder_filters=tuple(args.decoder_filters),
                                   epochs=args.epochs, batch_size=args.batch_size,
                                   seed=args.seed)
        report("bare sm.Unet script", predicted, seconds)

    if "single" in args.rows:
        single, seconds = timed(UNetSegmenter(**common, **args.segmenter_params).fit,
                                X_train, y_train)
        tuned = single.validation_score_ is not None
        name = "UNetSegmenter" + "".join(f", {key}={value!r}"
                                         for key, value in args.segmenter_params.items())
        report(name, single.predict(X_test), seconds,
               f"{len(single.history_)} epochs; threshold {single.postprocessing_.threshold}, "
               f"min_area {single.postprocessing_.min_area}"
               + (f" tuned on the held-out images (their Dice "
                  f"{single.validation_score_before_tuning_:.4f} -> "
                  f"{single.validation_score_:.4f})" if tuned else ""))
        if tuned:
            untuned = copy.copy(single).set_params(threshold=0.5, min_area=0)
            report("  its post-processing untuned", untuned.predict(X_test), 0.0,
                   "the same model, threshold 0.5, no area filter")
        if tta is not None:
            single.set_params(tta=tta)
            report(f"+ TTA ({args.tta})", single.predict(X_test), 0.0, "the same model")

    if "ladder" in args.rows:
        ensemble = FoldEnsemble(UNetSegmenter(**common, tta=tta), cv=(
            3 if groups is None else GroupKFold(3)), random_state=args.seed)
        fp_filter = FalsePositiveFilter(ensemble, args.classifier, tune_threshold=True,
                                        random_state=args.seed)
        start = time.perf_counter()
        fp_filter.fit(X_train, y_train, groups=groups)
        seconds = time.perf_counter() - start
        if args.save:
            fp_filter.save(args.save)
        fitted = fp_filter.segmenter_
        proba = fitted.predict_proba(X_test)
        plain = fitted.estimators_[0].postprocessing_
        report(f"FoldEnsemble(cv=3), TTA {args.tta}, untuned", masks_of(proba, plain), seconds,
               "the filter's ensemble: one fit for the next rows")
        report("+ tuned post-processing", masks_of(proba, fitted.postprocessing_), 0.0,
               f"threshold {fitted.thresholds_.tolist()}, min_area "
               f"{fitted.min_areas_.tolist()} (out-of-fold Dice "
               f"{fitted.oof_score_before_tuning_:.4f} -> {fitted.oof_score_:.4f})")
        report(f"+ false-positive filter ({args.classifier})", fp_filter.predict(X_test), 0.0,
               f"presence threshold {np.round(fp_filter.presence_thresholds_, 3).tolist()}; "
               f"held out: FP {fp_filter.fp_rate_before_:.3f} -> {fp_filter.fp_rate_:.3f}, "
               f"blanked {fp_filter.blanked_rate_:.3f}")


if __name__ == "__main__":
    main()
