"""Model selection: cross-validate a U-Net and grid-search two of its parameters on membrane.

The 30 membrane images are split into 20 for model selection and 10 for a final
test. On the 20, ``cross_val_score`` estimates the Kaggle Dice of one setting
with k-fold cross-validation, and ``GridSearchCV`` compares the loss and the
training augmentation, refits the best setting on all 20 images and scores it
on the 10 test images. Every score is the Kaggle Dice of ``dice_scorer``.

    python examples/cv_grid_search.py --data-home ../shared/data          # full
    python examples/cv_grid_search.py --data-home ../shared/data --quick  # smoke run

The full setting trains efficientnetb0 U-Nets from scratch at 256x256 for up to 40
epochs, with 3 folds and a grid of 2 losses x 2 augmentations: 3 + 4 x 3 + 1 = 16
fits, each in a worker process and each of a few minutes on a CPU (one fit of the
quickstart, the same network on 20 images, takes 3-4 minutes on 2 cores). ``--quick``
runs the same code on a tiny network (vgg16 encoder, decoder_filters=(16, 8, 8, 4, 4)),
64x64 images, 1 epoch, 2 folds and the 2 losses only: 7 fits, about a minute and a half
on 2 CPU cores, whose scores only show that everything runs.
"""

import argparse
import time

import cv2
import numpy as np
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from skunetseg import UNetSegmenter, dice_score, dice_scorer
from skunetseg.datasets import load_membrane

SETTINGS = {
    "full": dict(
        size=256,
        n_splits=3,
        # each fit in a worker process: the memory TensorFlow keeps after a fit does
        # not add up over the 16 fits (see the design notes)
        estimator=dict(backbone="efficientnetb0", epochs=40, batch_size=4,
                       early_stopping_patience=15, reduce_lr_patience=6,
                       fit_in_subprocess=True),
        param_grid={"loss": ["jaccard", "bce_dice"], "augment": [None, "flips"]},
    ),
    # each fit of even a tiny network costs about 10 s of graph tracing on 2 CPU cores:
    # 2 folds and 2 candidates make 2 + 2 x 2 + 1 = 7 fits
    "quick": dict(
        size=64,
        n_splits=2,
        estimator=dict(backbone="vgg16", decoder_filters=(16, 8, 8, 4, 4), epochs=1,
                       batch_size=5, learning_rate=1e-2, validation_fraction=0),
        param_grid={"loss": ["jaccard", "bce_dice"], "augment": ["flips"]},
    ),
}


def resize_stack(stack, size, interpolation):
    return np.stack([cv2.resize(item, (size, size), interpolation=interpolation)
                     for item in stack])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None,
                        help="folder holding membrane/ (default: $SKUNETSEG_DATA or "
                             "~/skunetseg_data, downloaded when missing)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny network, 64x64 images, 1 epoch, 2 folds, 2 candidates")
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="fits run in parallel by cross_val_score and GridSearchCV")
    args = parser.parse_args()
    setting = SETTINGS["quick" if args.quick else "full"]

    data = load_membrane(args.data_home)
    X = resize_stack(data.images, setting["size"], cv2.INTER_AREA)
    y = resize_stack(data.masks, setting["size"], cv2.INTER_NEAREST)  # 1 = membrane
    X_train, y_train, X_test, y_test = X[:20], y[:20], X[20:], y[20:]
    model = UNetSegmenter(**setting["estimator"], random_state=0)
    cv = KFold(setting["n_splits"], shuffle=True, random_state=0)

    start = time.perf_counter()
    scores = cross_val_score(model, X_train, y_train, cv=cv, scoring=dice_scorer,
                             n_jobs=args.n_jobs)
    print(f"cross_val_score, {cv.get_n_splits()} folds ({time.perf_counter() - start:.0f} s): "
          f"Dice per fold {np.round(scores, 3).tolist()}, "
          f"mean {scores.mean():.3f} +/- {scores.std():.3f}")

    start = time.perf_counter()
    search = GridSearchCV(model, setting["param_grid"], cv=cv, scoring=dice_scorer,
                          n_jobs=args.n_jobs)
    search.fit(X_train, y_train)
    print(f"GridSearchCV over {sorted(setting['param_grid'])} "
          f"({time.perf_counter() - start:.0f} s):")
    results = search.cv_results_
    for i in np.argsort(results["rank_test_score"], kind="stable"):
        print(f"  rank {results['rank_test_score'][i]}: Dice {results['mean_test_score'][i]:.3f}"
              f" +/- {results['std_test_score'][i]:.3f}  {results['params'][i]}")
    print(f"best parameters: {search.best_params_}, cross-validated Dice "
          f"{search.best_score_:.3f}")
    trivial = dice_score(y_test, np.ones_like(y_test))
    print(f"test Dice of the refitted best model: {search.score(X_test, y_test):.3f} "
          f"(predicting all membrane: {trivial:.3f})")


if __name__ == "__main__":
    main()
