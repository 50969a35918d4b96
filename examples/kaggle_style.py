"""Kaggle style: the full ladder from a folder of image files to an RLE submission CSV.

A Kaggle segmentation competition gives folders of image and mask files and asks
for a CSV of run-length-encoded masks. This example runs the whole recipe of the
Kaggle seeds on TGS salt (101x101 seismic patches, 39 % of them without salt) as
one scikit-learn estimator, never loading a whole folder into memory:

1. list the image and mask files with ``skunetseg.io.load_image_folder`` and hold
   out a seeded share of them as the images to submit;
2. fit the ladder on the training PATHS, read batch by batch at a fixed
   ``input_size`` (predictions come back at each image's own size, so folders of
   mixed sizes work the same way)::

       FalsePositiveFilter(
           FoldEnsemble(UNetSegmenter(..., augment="flips", tta="flips"),
                        cv=3, tune_postprocessing=True),
           PresenceClassifier(...), tune_threshold=True)

   a U-Net trained with flip augmentation and predicting with flip TTA, one per
   fold of 3, averaged, with the threshold and minimum mask area tuned on the
   out-of-fold predictions; then an image classifier (a ``PresenceClassifier``
   network, the kind that removed false positives on salt, see
   docs/false_positives.md) that blanks the masks of the images it finds empty,
   its presence threshold tuned on out-of-fold predictions over all the
   training images;
3. score the held-out images from their files (Kaggle Dice: an empty truth
   scores 1 only for an empty prediction);
4. predict them with ``skunetseg.io.predict_to_dir``, one mask PNG per image in
   ``<out>/masks``;
5. write ``<out>/submission.csv`` in the competition's format (``id,rle_mask``:
   the image id without extension, the mask run-length encoded column by column
   with ``skunetseg.rle.rle_encode``; empty for an empty mask);
6. save the whole fitted ladder, without pickle, to ``<out>/model``
   (``skunetseg.load`` opens it in any later process).

Existing files are never overwritten: the run stops first.

    python examples/kaggle_style.py --data-home ../shared/data --out runs/salt
    python examples/kaggle_style.py --data-home ../shared/data --out /tmp/quick --quick

The full setting trains efficientnetb0 U-Nets and presence classifiers from
scratch at 128x128 on 3,600 files and submits 400: the filter reuses the
ensemble's folds and out-of-fold maps, so it trains 3 U-Nets and 3 + 1 classifiers
(use a GPU; on a CPU it takes hours). ``--quick`` runs the same code on 32 files at
32x32 with a tiny network (vgg16 encoder, decoder_filters=(16, 8, 8, 4, 4)) for 1
epoch and ``cv=2`` in the ensemble: 2 U-Nets and 3 classifiers, a few seconds each;
its scores only show that everything runs.
"""

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter
from skunetseg.datasets import get_data_home
from skunetseg.io import load_image_folder, predict_to_dir, read_mask
from skunetseg.rle import rle_encode

SETTINGS = {
    "full": dict(
        n_train=3600, n_submit=400, cv=3,
        network=dict(backbone="efficientnetb0", input_size=(128, 128), batch_size=16,
                     augment="flips"),
        segmenter=dict(epochs=40, early_stopping_patience=8, reduce_lr_patience=4),
        classifier=dict(epochs=30, early_stopping_patience=6, reduce_lr_patience=3),
    ),
    "quick": dict(
        n_train=24, n_submit=8, cv=2,
        network=dict(backbone="vgg16", input_size=(32, 32), batch_size=8, epochs=1,
                     learning_rate=1e-2, validation_fraction=0, augment="flips"),
        segmenter=dict(decoder_filters=(16, 8, 8, 4, 4)),
        classifier=dict(),
    ),
}


def build_ladder(setting, random_state=0):
    """The full ladder, unfitted: filter(ensemble of U-Nets with TTA, tuned)."""
    network = {**setting["network"], "random_state": random_state}
    segmenter = UNetSegmenter(**network, **setting["segmenter"], tta="flips")
    classifier = PresenceClassifier(**network, **setting["classifier"])
    ensemble = FoldEnsemble(segmenter, cv=setting["cv"], tune_postprocessing=True,
                            random_state=random_state)
    # the filter reuses the ensemble's folds: no segmenter beyond the ensemble's
    return FalsePositiveFilter(ensemble, classifier, tune_threshold=True,
                               random_state=random_state)


def write_submission(path, image_ids, masks):
    """``id,rle_mask`` rows, one per image; refuses an existing file (mode "x")."""
    with open(path, "x", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["id", "rle_mask"])
        for image_id, mask in zip(image_ids, masks, strict=True):
            writer.writerow([image_id, rle_encode(mask)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None,
                        help="folder holding tgs-salt/images and tgs-salt/masks "
                             "(default: $SKUNETSEG_DATA, else ~/skunetseg_data)")
    parser.add_argument("--out", required=True, help="folder for masks/ and submission.csv")
    parser.add_argument("--quick", action="store_true",
                        help="32 files, tiny network, 1 epoch, 2 folds")
    args = parser.parse_args()

    home = Path(get_data_home(args.data_home)) / "tgs-salt"
    out = Path(args.out)
    csv_path, masks_dir, model_dir = out / "submission.csv", out / "masks", out / "model"
    if (csv_path.exists() or model_dir.exists()
            or (masks_dir.exists() and any(masks_dir.iterdir()))):
        parser.error(f"{str(csv_path)!r}, {str(model_dir)!r} or files in {str(masks_dir)!r} "
                     "exist; choose another --out (this example never overwrites).")

    setting_name = "quick" if args.quick else "full"
    setting = SETTINGS[setting_name]
    images, masks = load_image_folder(home / "images", home / "masks")
    order = np.random.default_rng(0).permutation(len(images))
    train = order[:setting["n_train"]]
    submit = order[setting["n_train"]:setting["n_train"] + setting["n_submit"]]
    train_images, train_masks = [images[i] for i in train], [masks[i] for i in train]
    test_images, test_masks = [images[i] for i in submit], [masks[i] for i in submit]
    print(f"{len(images)} image files: training on {len(train_images)}, "
          f"submitting {len(test_images)}")

    model = build_ladder(setting)
    start = time.perf_counter()
    model.fit(train_images, train_masks)
    ensemble = model.segmenter_
    print(f"fitted the ladder ({setting_name}) on the paths in "
          f"{time.perf_counter() - start:.0f} s, classes {model.classes_.tolist()}")
    print(f"ensemble of {len(ensemble.estimators_)} folds: out-of-fold Dice "
          f"{ensemble.oof_score_before_tuning_:.4f}, tuned {ensemble.oof_score_:.4f} "
          f"(threshold {ensemble.thresholds_[0]:.2f}, min_area {ensemble.min_areas_[0]:g})")
    print(f"filter, on {model.n_held_out_} held-out images: presence threshold "
          f"{model.presence_thresholds_[0]:.2f}, empty images shown "
          f"{model.fp_rate_before_:.3f} -> {model.fp_rate_:.3f}, salt images blanked "
          f"{model.blanked_rate_:.3f}, Dice {model.dice_before_:.4f} -> {model.dice_:.4f}")
    print(f"held-out Dice from the files: {model.score(test_images, test_masks):.4f}")

    written = predict_to_dir(model, test_images, masks_dir, batch_size=32)
    salt = model.classes_[1]  # the masks are 0 / 65535 (16-bit)
    image_ids = [path.stem for path in test_images]
    write_submission(csv_path, image_ids, [read_mask(path) == salt for path in written])
    print(f"wrote {len(written)} mask files to {str(masks_dir)!r} and "
          f"{len(image_ids)} rows to {str(csv_path)!r}")
    model.save(model_dir)
    print(f"saved the fitted ladder to {str(model_dir)!r}")


if __name__ == "__main__":
    main()
