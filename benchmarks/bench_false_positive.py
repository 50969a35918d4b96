"""False-positive filtering on TGS salt: the segmenter alone and with each classifier kind.

A fixed split of the TGS salt images (seed 0): ``--n-fit`` images to train on,
``--n-val`` for early stopping (``validation_data``), ``--n-test`` to score.
One ``UNetSegmenter`` is trained and then wrapped, frozen, in a
``FalsePositiveFilter`` with each kind of presence classifier, so that every
fit time the filters report is the extra cost of the filter:

* ``features``: a logistic regression on features of out-of-fold probability
  maps (``--cv`` fresh segmenter fits on the folds of the training images),
  thresholds tuned on those out-of-fold predictions;
* ``image``: a ``PresenceClassifier`` network with the segmenter's encoder,
  thresholds tuned on the validation images.

For each, on the test images: Kaggle Dice, the share of empty images predicted
non-empty (false-positive rate), the share of salt images whose mask the filter
blanked, and the extra fit and predict time. The cheap baseline is the
segmenter's own ``min_area`` (blank masks smaller than it), tuned on the
validation images with :func:`skunetseg.postprocess.tune_postprocessing`.
Filters are scored with the tuned thresholds and with the default 0.5; the
image filter also with its threshold tuned within a blanking budget
(``max_blanked``, default 0.03 of the validation salt images), reusing its
fitted classifier frozen. Usage::

    python benchmarks/bench_false_positive.py --data-home ../shared/data
"""

import argparse
import copy
import os
import time

import cv2
import numpy as np
from _timing import timed
from sklearn.frozen import FrozenEstimator

from skunetseg import FalsePositiveFilter, PresenceClassifier, UNetSegmenter
from skunetseg.metrics import dice_per_pair
from skunetseg.postprocess import tune_postprocessing


def load_tgs(data_home, n_images, seed):
    """``n_images`` TGS images (uint8, gray) and masks (uint8 0/1), drawn with ``seed``."""
    folder = os.path.join(data_home, "tgs-salt")
    names = sorted(os.listdir(os.path.join(folder, "images")))
    chosen = np.random.default_rng(seed).permutation(len(names))[:n_images]
    images = np.stack([cv2.imread(os.path.join(folder, "images", names[i]),
                                  cv2.IMREAD_GRAYSCALE) for i in chosen])
    masks = np.stack([cv2.imread(os.path.join(folder, "masks", names[i]),
                                 cv2.IMREAD_UNCHANGED) for i in chosen])
    return images, (masks > 0).astype(np.uint8)


def test_metrics(truth, before, after):
    """Kaggle Dice, false-positive rate on empty images, share of salt images blanked."""
    truth, before, after = truth.astype(bool), before.astype(bool), after.astype(bool)
    empty = ~truth.any(axis=(1, 2))
    shown_before, shown_after = before.any(axis=(1, 2)), after.any(axis=(1, 2))
    return {
        "dice": float(dice_per_pair(truth[..., None], after[..., None]).mean()),
        "fp_rate": float(shown_after[empty].mean()),
        "blanked": float((shown_before & ~shown_after)[~empty].mean()),
    }



def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--n-fit", type=int, default=1400)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=800)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--cv", type=int, default=2)
    parser.add_argument("--max-blanked", type=float, default=0.03)
    args = parser.parse_args()

    X, y = load_tgs(args.data_home, args.n_fit + args.n_val + args.n_test, seed=0)
    fit_rows = slice(0, args.n_fit)
    val_rows = slice(args.n_fit, args.n_fit + args.n_val)
    test_rows = slice(args.n_fit + args.n_val, None)
    X_fit, y_fit, X_test, y_test = X[fit_rows], y[fit_rows], X[test_rows], y[test_rows]
    validation = (X[val_rows], y[val_rows])
    empty = ~y_test.any(axis=(1, 2))
    print(f"{len(X_fit)} fit / {args.n_val} validation / {len(X_test)} test images; "
          f"{empty.mean():.1%} of the test images are empty")

    shared = dict(batch_size=16, epochs=args.epochs, early_stopping_patience=4,
                  reduce_lr_patience=2, augment="flips", random_state=0)
    segmenter = UNetSegmenter(args.backbone, decoder_filters=(64, 32, 16, 16, 8), **shared)
    _, fit_seconds = timed(segmenter.fit, X_fit, y_fit, validation_data=validation)
    segmenter.predict_proba(X_test[:16])  # trace the predict graph before timing
    plain, predict_seconds = timed(segmenter.predict, X_test)
    print(f"segmenter: {len(segmenter.history_)} epochs (best {segmenter.best_epoch_}), "
          f"fit {fit_seconds:.0f}s, predict {predict_seconds:.1f}s")
    rows = [("segmenter alone", "-", test_metrics(y_test, plain, plain), fit_seconds,
             predict_seconds, None)]

    # the cheap baseline: blank masks smaller than a min_area tuned on the validation images
    start = time.perf_counter()
    search = tune_postprocessing(segmenter.predict_proba(validation[0]),
                                 validation[1][..., None].astype(bool), thresholds=[0.5])
    tune_seconds = time.perf_counter() - start
    area_model = copy.copy(segmenter).set_params(min_area=list(search.min_areas))
    area_masks, seconds = timed(area_model.predict, X_test)
    rows.append((f"+ min_area {search.min_areas[0]:g} (tuned)", "-",
                 test_metrics(y_test, plain, area_masks), tune_seconds,
                 seconds - predict_seconds, None))

    classifiers = {
        "features": "features",
        "image": PresenceClassifier(args.backbone, **shared),
    }
    for kind, classifier in classifiers.items():
        # the image filter is tuned on the validation images alone (cv=None), as measured
        model = FalsePositiveFilter(FrozenEstimator(segmenter), classifier, tune_threshold=True,
                                    cv=args.cv if kind == "features" else None)
        _, extra_fit = timed(model.fit, X_fit, y_fit, validation_data=validation)
        model.predict_proba(X_test[:16])
        filtered, seconds = timed(model.predict, X_test)
        print(f"{kind}: fit {extra_fit:.0f}s, threshold {model.presence_thresholds_}, held out "
              f"{model.n_held_out_}: fp {model.fp_rate_before_:.3f} -> {model.fp_rate_:.3f}, "
              f"blanked {model.blanked_rate_:.3f}, dice {model.dice_before_:.4f} -> "
              f"{model.dice_:.4f}")
        rows.append((f"+ {kind} filter", f"{model.presence_thresholds_[0]:.2f} (tuned)",
                     test_metrics(y_test, plain, filtered), extra_fit,
                     seconds - predict_seconds, model))
        untuned = copy.copy(model)
        untuned.presence_thresholds_ = np.full_like(model.presence_thresholds_, 0.5)
        rows.append((f"+ {kind} filter", "0.50",
                     test_metrics(y_test, plain, untuned.predict(X_test)), None, None, None))
        if kind == "image":
            # the same classifier, its threshold tuned within the blanking budget
            budgeted = FalsePositiveFilter(
                FrozenEstimator(segmenter), FrozenEstimator(model.classifiers_[0]),
                tune_threshold=True, max_blanked=args.max_blanked, cv=None,
            ).fit(X_fit, y_fit, validation_data=validation)
            print(f"image, max_blanked={args.max_blanked}: threshold "
                  f"{budgeted.presence_thresholds_}, "
                  f"held out: fp {budgeted.fp_rate_:.3f}, blanked {budgeted.blanked_rate_:.3f}")
            rows.append((f"+ {kind} filter",
                         f"{budgeted.presence_thresholds_[0]:.2f} "
                         f"(tuned, max_blanked {args.max_blanked})",
                         test_metrics(y_test, plain, budgeted.predict(X_test)), None, None,
                         None))

    print("\n| model | presence threshold | test Dice | FP rate, empty images "
          "| salt images blanked | extra fit | extra predict |")
    print("|---|---|---|---|---|---|---|")
    for name, threshold, metrics, fit_s, predict_s, _ in rows:
        fit_text = "" if fit_s is None else f"{fit_s:.0f} s"
        predict_text = "" if predict_s is None else f"{predict_s:+.1f} s"
        if name == "segmenter alone":
            fit_text, predict_text = f"({fit_s:.0f} s)", f"({predict_s:.1f} s)"
        print(f"| {name} | {threshold} | {metrics['dice']:.4f} | {metrics['fp_rate']:.3f} "
              f"| {metrics['blanked']:.3f} | {fit_text} | {predict_text} |")


if __name__ == "__main__":
    main()
