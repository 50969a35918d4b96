"""Fold ensembles and tuned post-processing on membrane, against one model.

Fixed outer split: membrane images 0-19 train, 20-29 test. Trains

* one ``UNetSegmenter`` (its own ``validation_fraction`` split watches early stopping),
* a 3-fold ``FoldEnsemble`` of the same segmenter (each fold model validates on its
  held-out fold), whose out-of-fold probabilities tune each class's threshold and
  minimum area,

and prints the test Dice of the membrane class (the Kaggle Dice of the masks of label 1
= membrane) for: the single model, the ensemble, and the ensemble with tuned
post-processing, each without and with flip TTA, plus the wall times. With TTA the
post-processing is tuned again on out-of-fold probabilities predicted with TTA.
Usage::

    python benchmarks/bench_fold_ensemble.py --data-home ../shared/data [--size 128]
"""

import argparse

import numpy as np
from _membrane import membrane_at
from _timing import timed

from skunetseg import FoldEnsemble, UNetSegmenter
from skunetseg.metrics import dice_score
from skunetseg.postprocess import postprocess, tune_postprocessing


def set_tta(model, tta):
    for estimator in getattr(model, "estimators_", [model]):
        estimator.set_params(tta=tta)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--backbone", default="efficientnetb0")
    args = parser.parse_args()

    _, X, y = membrane_at(args.data_home, args.size)
    X_train, y_train, X_test, y_test = X[:20], y[:20], X[20:], y[20:]
    segmenter = UNetSegmenter(args.backbone, epochs=args.epochs, batch_size=4, augment="flips",
                              validation_fraction=0.15, early_stopping_patience=15,
                              reduce_lr_patience=6, fit_in_subprocess=True, random_state=0)
    print(f"backbone={args.backbone} size={args.size} epochs={args.epochs} augment=flips")

    single, single_fit = timed(segmenter.fit, X_train, y_train)
    ensemble = FoldEnsemble(segmenter, cv=3, random_state=0)
    ensemble, ensemble_fit = timed(ensemble.fit, X_train, y_train)
    print(f"fit: single {single_fit:.0f}s, 3-fold ensemble {ensemble_fit:.0f}s "
          f"(ratio {ensemble_fit / single_fit:.2f})")
    print(f"out-of-fold Dice of the ensemble: {ensemble.oof_score_:.4f} "
          f"(folds {np.round(ensemble.oof_fold_scores_, 4).tolist()})")

    truth_train = y_train[..., None] == 1
    rows = []
    for tta in (None, "flips"):
        set_tta(single, tta)
        set_tta(ensemble, tta)
        proba, seconds = timed(single.predict_proba, X_test)
        rows.append(("single model", tta, dice_score(y_test, proba[..., 0] > 0.5), seconds))
        proba, seconds = timed(ensemble.predict_proba, X_test)
        rows.append(("3-fold ensemble", tta, dice_score(y_test, proba[..., 0] > 0.5), seconds))
        # tune on out-of-fold probabilities predicted the same way (with this TTA)
        oof = np.empty((len(X_train), *X_train.shape[1:], 1), dtype=np.float32)
        for model, (_, test) in zip(ensemble.estimators_, ensemble.folds_, strict=True):
            oof[test] = model.predict_proba(X_train[test])
        search = tune_postprocessing(oof, truth_train)
        tuned = postprocess(proba, **search.params)
        rows.append((f"ensemble + tuned (t={search.thresholds[0]:.2f}, "
                     f"min_area={search.min_areas[0]:g}; oof {search.score_before:.4f}"
                     f" -> {search.score_after:.4f})", tta, dice_score(y_test, tuned[..., 0]),
                     seconds))
    print(f"{'model':75s} {'tta':6s} {'test Dice':>9s} {'predict s':>9s}")
    for name, tta, score, seconds in rows:
        print(f"{name:75s} {str(tta):6s} {score:9.4f} {seconds:9.2f}")


if __name__ == "__main__":
    main()
