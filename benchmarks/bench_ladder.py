"""The full Kaggle ladder on TGS salt, one row per step, from the image and mask files.

A fixed, seeded split of the TGS salt files (``--n-train`` to train, ``--n-test``
disjoint ones to score; about 39 % of the masks are empty). Every row uses the same
``UNetSegmenter`` settings (``--backbone`` from scratch, ``--input-size``, ``--epochs``,
flip augmentation), and reuses the models fitted for the rows above it wherever the
step does not change the training:

1. **single model**: one ``UNetSegmenter`` fitted on all the training files (its own
   10 % validation split watches early stopping), predicted without TTA;
2. **+ TTA (flips)**: the same fitted model, predicting with ``tta="flips"`` (a
   predict-time parameter: no new fit);
3. **+ 3 folds averaged**: ``FoldEnsemble(segmenter, cv=3, tune_postprocessing=True)``
   (fold models with ``tta="flips"``, each validating on its held-out fold), its
   averaged probabilities post-processed as the segmenter does (threshold 0.5, no
   area filter);
4. **+ tuned post-processing**: the same fitted ensemble, with the threshold and
   ``min_area`` it tuned on its out-of-fold probabilities (no new fit: tuning is
   part of step 3's fit and takes well under a second);
5. **+ false-positive filter**: ``FalsePositiveFilter(ensemble, PresenceClassifier(...),
   tune_threshold=True, cv=<the ensemble's folds>)``. Fitting this from scratch
   would train a 3-fold ensemble per filter fold (``cv`` x 3 more segmenters) only
   to get held-out probability maps, which the ensemble already has: the filter's
   folds are the ensemble's, and its segmenter is ``FittedFolds`` (a wrapper meeting
   the segmenter contract of docs/contract.md) which, fitted on a fold's training
   files, returns the ensemble's fold model trained on exactly those files, and
   fitted on all of them returns the ensemble. So the filter's held-out maps are the
   ensemble's out-of-fold maps, and only the presence classifiers are trained
   (``cv`` + 1 of them); its presence threshold is tuned on the out-of-fold
   predictions over all the training images (``--max-blanked`` adds a budget);
6. **(filter over row 3)**: the same fitted filter, its maps post-processed as in
   row 3, to show what it removes when the tuned ``min_area`` has not already
   removed the false positives (no new fit).

Columns, on the test files: Kaggle Dice (``skunetseg.metrics.dice_per_pair``, mean
over images; an empty truth scores 1 only for an empty prediction), the share of the
empty-mask images predicted non-empty (false-positive rate), the share of the salt
images predicted empty (blanked, by the post-processing or the filter), and the fit
time each row added. Usage::

    python benchmarks/bench_ladder.py --data-home ../shared/data
    python benchmarks/bench_ladder.py --n-train 120 --n-test 60 --epochs 1 --input-size 32
"""

import argparse
import os

import numpy as np
from _timing import timed
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator

from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter
from skunetseg.io import load_image_folder, read_mask
from skunetseg.metrics import dice_per_pair


class FittedFolds(BaseEstimator):
    """A fitted ``FoldEnsemble`` as a segmenter whose ``fit`` picks a model, trains none.

    ``fit(X, y)`` on the training files of fold k of the ensemble uses the fold model
    trained on them; on all the ensemble's training files, the ensemble itself. Any
    other ``X`` is refused. It meets the segmenter contract (docs/contract.md), so a
    ``FalsePositiveFilter`` given the ensemble's folds as ``cv`` gets the ensemble's
    held-out maps without training a segmenter again.
    """

    def __init__(self, ensemble, train_files):
        self.ensemble = ensemble          # a FrozenEstimator: clone() keeps it fitted
        self.train_files = train_files

    def fit(self, X, y, validation_data=None):
        ensemble = self.ensemble.estimator
        key = tuple(str(path) for path in X)
        files = np.asarray([str(path) for path in self.train_files], dtype=object)
        if key == tuple(files):
            self.model_ = ensemble
        else:
            for (train, _), model in zip(ensemble.folds_, ensemble.estimators_, strict=True):
                if key == tuple(files[train]):
                    self.model_ = model
                    break
            else:
                raise ValueError("FittedFolds only fits on the ensemble's training files "
                                 "or on one of its folds' training parts.")
        self.encoding_ = self.model_.encoding_
        self.classes_ = self.model_.classes_
        self.n_classes_ = self.model_.n_classes_
        self.target_type_ = self.model_.target_type_
        # every model post-processes its maps as the final ensemble does (tuned)
        self.postprocessing_ = ensemble.postprocessing_
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


def tgs_split(data_home, n_train, n_test, seed):
    """Disjoint, seeded train and test lists of TGS salt image and mask files."""
    folder = os.path.join(data_home, "tgs-salt")
    images, masks = load_image_folder(os.path.join(folder, "images"),
                                      os.path.join(folder, "masks"))
    order = np.random.default_rng(seed).permutation(len(images))
    if n_train + n_test > len(order):
        raise SystemExit(f"--n-train + --n-test must be at most {len(order)}")
    train, test = order[:n_train], order[n_train:n_train + n_test]
    return ([images[i] for i in train], [masks[i] for i in train],
            [images[i] for i in test], [masks[i] for i in test])


def test_metrics(truth, predicted):
    """Kaggle Dice, false-positive rate on empty images, share of salt images blanked."""
    salt = truth.any(axis=(1, 2))
    shown = predicted.any(axis=(1, 2))
    return {
        "dice": float(dice_per_pair(truth[..., None], predicted[..., None]).mean()),
        "fp_rate": float(shown[~salt].mean()),
        "blanked": float((~shown)[salt].mean()),
        "n_fp": int(shown[~salt].sum()),
    }



def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--decoder-filters", default="64,32,16,16,8",
                        help="comma-separated, five values")
    parser.add_argument("--input-size", type=int, default=64,
                        help="images are resized to this square size (TGS: 101x101)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--classifier-epochs", type=int, default=None,
                        help="PresenceClassifier epochs (default: --epochs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-blanked", type=float, default=None,
                        help="blanking budget of the presence threshold tuning")
    args = parser.parse_args()

    X_train, y_train, X_test, y_test = tgs_split(args.data_home, args.n_train, args.n_test,
                                                 args.seed)
    truth = np.stack([read_mask(path) > 0 for path in y_test])
    train_truth = np.stack([read_mask(path) > 0 for path in y_train])
    size = (args.input_size, args.input_size)
    common = dict(encoder_weights=None, input_size=size, batch_size=args.batch_size,
                  epochs=args.epochs, early_stopping_patience=4, reduce_lr_patience=2,
                  augment="flips", validation_fraction=0.1, random_state=args.seed)
    decoder = tuple(int(v) for v in args.decoder_filters.split(","))
    segmenter = UNetSegmenter(args.backbone, decoder_filters=decoder, tta="flips", **common)
    classifier = PresenceClassifier(args.backbone, **{
        **common, "epochs": args.classifier_epochs or args.epochs})
    print(f"TGS salt files, seed {args.seed}: {len(X_train)} train "
          f"({1 - train_truth.any(axis=(1, 2)).mean():.1%} empty) / {len(X_test)} test "
          f"({1 - truth.any(axis=(1, 2)).mean():.1%} empty), disjoint")
    print(f"segmenter: {args.backbone} from scratch, decoder_filters={decoder}, input_size="
          f"{size}, epochs={args.epochs} (early stopping 4, reduce lr 2), batch "
          f"{args.batch_size}, augment='flips'; presence classifier: the same encoder, "
          f"{classifier.epochs} epochs", flush=True)

    def masks(model_postprocessing, proba):
        return model_postprocessing.apply(proba)[..., 0]

    rows = []
    # 1-2: one model, without and with TTA
    single, seconds = timed(segmenter.fit, X_train, y_train)
    print(f"single model: {len(single.history_)} epochs (best {single.best_epoch_}), "
          f"{seconds:.0f} s", flush=True)
    single.set_params(tta=None)
    rows.append(("single model", "fit", test_metrics(truth, masks(
        single.postprocessing_, single.predict_proba(X_test))), seconds))
    single.set_params(tta="flips")
    rows.append(("+ TTA (flips)", "row 1's model, tta='flips' set after fit",
                 test_metrics(truth, masks(single.postprocessing_,
                                           single.predict_proba(X_test))), 0.0))

    # 3-4: one fitted 3-fold ensemble, with the segmenter's and with the tuned post-processing
    ensemble = FoldEnsemble(segmenter, cv=3, tune_postprocessing=True, random_state=args.seed)
    _, seconds = timed(ensemble.fit, X_train, y_train)
    epochs = [len(model.history_) for model in ensemble.estimators_]
    print(f"3-fold ensemble: epochs {epochs}, {seconds:.0f} s; out-of-fold Dice "
          f"{ensemble.oof_score_before_tuning_:.4f} -> {ensemble.oof_score_:.4f} tuned "
          f"(threshold {ensemble.thresholds_.tolist()}, min_area {ensemble.min_areas_.tolist()})",
          flush=True)
    proba = ensemble.predict_proba(X_test)
    plain = ensemble.estimators_[0].postprocessing_  # threshold 0.5, no area filter
    rows.append(("+ 3 folds averaged", "FoldEnsemble(cv=3) fit, the segmenter's "
                 "post-processing", test_metrics(truth, masks(plain, proba)), seconds))
    tuned = masks(ensemble.postprocessing_, proba)
    rows.append(("+ tuned post-processing", "row 3's ensemble, its tuned post-processing "
                 "(tune_postprocessing=True)", test_metrics(truth, tuned), 0.0))

    # 5: the filter over the ensemble, cross-fitted on the ensemble's folds
    fp_filter = FalsePositiveFilter(
        FittedFolds(FrozenEstimator(ensemble), X_train), classifier, tune_threshold=True,
        max_blanked=args.max_blanked, cv=ensemble.folds_, random_state=args.seed)
    _, seconds = timed(fp_filter.fit, X_train, y_train)
    print(f"filter: {seconds:.0f} s, presence threshold "
          f"{fp_filter.presence_thresholds_.round(3).tolist()}; on the {fp_filter.n_held_out_} "
          f"out-of-fold images: false positives {fp_filter.fp_rate_before_:.3f} -> "
          f"{fp_filter.fp_rate_:.3f}, salt blanked {fp_filter.blanked_rate_:.3f}, Dice "
          f"{fp_filter.dice_before_:.4f} -> {fp_filter.dice_:.4f}", flush=True)
    filtered = masks(fp_filter.postprocessing_, fp_filter.predict_proba(X_test))
    rows.append(("+ false-positive filter", "FalsePositiveFilter(row 4, PresenceClassifier, "
                 "tune_threshold=True) on the ensemble's folds: trains cv + 1 classifiers",
                 test_metrics(truth, filtered), seconds))
    # the same fitted filter over row 3 (the segmenter's post-processing): what it removes
    # when the tuned min_area has not already removed the false positives (no new fit)
    filtered_plain = masks(plain, fp_filter.predict_proba(X_test))
    rows.append(("(filter over row 3)", "row 5's filter, its maps post-processed as in row 3",
                 test_metrics(truth, filtered_plain), 0.0))

    print("\n| step | test Dice | FP rate, empty images | salt images blanked | fit time added "
          "| how |")
    print("|---|---|---|---|---|---|")
    for name, how, metrics, seconds in rows:
        print(f"| {name} | {metrics['dice']:.4f} | {metrics['fp_rate']:.3f} "
              f"({metrics['n_fp']}) | {metrics['blanked']:.3f} | {seconds:.0f} s | {how} |")
    salt = truth.any(axis=(1, 2))
    print()
    for row, before, after in ((4, tuned, filtered), (3, masks(plain, proba), filtered_plain)):
        shown_before, shown_after = before.any(axis=(1, 2)), after.any(axis=(1, 2))
        false_positives = shown_before & ~salt
        removed = (false_positives & ~shown_after).sum()
        blanked = (shown_before & ~shown_after & salt).sum()
        print(f"over row {row}, the filter removed {removed} of the {false_positives.sum()} "
              f"false-positive test images ({removed / max(false_positives.sum(), 1):.0%}; "
              f"goal >= 50 %) and blanked {blanked} of the {salt.sum()} salt images "
              f"({blanked / salt.sum():.1%}; goal < 5 %)")

if __name__ == "__main__":
    main()
