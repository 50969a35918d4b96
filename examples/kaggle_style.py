"""Kaggle style: image files in, a run-length-encoded submission CSV out, on membrane.

A Kaggle segmentation competition gives folders of image and mask files and asks
for a CSV of run-length-encoded masks. This example works the same way on the 30
membrane images, never loading a whole folder into memory:

1. list the image and mask files with ``skunetseg.io.load_image_folder``;
2. fit a U-Net on the paths of the first 20 (read batch by batch while training),
   at a fixed ``input_size``: images are resized to it, and predictions back to
   each image's own size, as the Kaggle seeds trained at 384x576 and submitted
   at 350x525;
3. score the 10 held-out images from their files;
4. predict them with ``skunetseg.io.predict_to_dir``, one mask PNG per image in
   ``<out>/masks``;
5. write ``<out>/submission.csv`` (``Image_Label,EncodedPixels``, the label
   ``cell``: the masks' 255 pixels are cell interior) with ``skunetseg.rle``.

Existing files are never overwritten: the run stops first.

    python examples/kaggle_style.py --data-home ../shared/data --out runs/membrane
    python examples/kaggle_style.py --data-home ../shared/data --out /tmp/quick --quick

The full setting trains an efficientnetb0 U-Net from scratch at 256x256 for up to
40 epochs (a few minutes on a CPU). ``--quick`` runs the same code on a tiny
network (vgg16 encoder, decoder_filters=(16, 8, 8, 4, 4)) at 64x64 for 1 epoch, in
well under a minute; its scores only show that everything runs.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from skunetseg import UNetSegmenter
from skunetseg.datasets import get_data_home
from skunetseg.io import load_image_folder, predict_to_dir, read_mask
from skunetseg.rle import masks_to_csv

SETTINGS = {
    "full": dict(backbone="efficientnetb0", input_size=(256, 256), epochs=40, batch_size=4,
                 early_stopping_patience=15, reduce_lr_patience=6, augment="flips"),
    "quick": dict(backbone="vgg16", decoder_filters=(16, 8, 8, 4, 4), input_size=(64, 64),
                  epochs=1, batch_size=5, learning_rate=1e-2, validation_fraction=0),
}

#: The submission's one label: the positive class of the membrane masks (255).
LABEL = "cell"

N_TRAIN = 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None,
                        help="folder holding membrane/images and membrane/masks "
                             "(default: $SKUNETSEG_DATA, else ~/skunetseg_data)")
    parser.add_argument("--out", required=True, help="folder for masks/ and submission.csv")
    parser.add_argument("--quick", action="store_true", help="tiny network, 1 epoch")
    args = parser.parse_args()

    home = Path(get_data_home(args.data_home)) / "membrane"
    out = Path(args.out)
    csv_path, masks_dir = out / "submission.csv", out / "masks"
    if csv_path.exists() or (masks_dir.exists() and any(masks_dir.iterdir())):
        parser.error(f"{str(csv_path)!r} or files in {str(masks_dir)!r} exist; choose another "
                     "--out (this example never overwrites).")

    images, masks = load_image_folder(home / "images", home / "masks")
    train_images, test_images = images[:N_TRAIN], images[N_TRAIN:]
    train_masks, test_masks = masks[:N_TRAIN], masks[N_TRAIN:]
    print(f"{len(images)} image files: training on {len(train_images)}, "
          f"submitting {len(test_images)}")

    setting = "quick" if args.quick else "full"
    model = UNetSegmenter(**SETTINGS[setting], random_state=0)
    start = time.perf_counter()
    model.fit(train_images, train_masks)
    print(f"fitted ({setting}) on the paths in {time.perf_counter() - start:.0f} s, "
          f"{len(model.history_)} epoch(s), classes {model.classes_.tolist()}")
    print(f"held-out Dice from the files: {model.score(test_images, test_masks):.4f}")

    written = predict_to_dir(model, test_images, masks_dir, batch_size=model.batch_size)
    predicted = np.stack([read_mask(path) for path in written])
    image_ids = [path.name for path in test_images]
    masks_to_csv(csv_path, image_ids, predicted[..., np.newaxis] == model.classes_[1],
                 [LABEL])
    print(f"wrote {len(written)} mask files to {str(masks_dir)!r} and "
          f"{len(image_ids)} rows to {str(csv_path)!r}")


if __name__ == "__main__":
    main()
