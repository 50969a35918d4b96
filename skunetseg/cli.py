"""The ``skunetseg`` command line: fit, predict and evaluate on folders of images.

Run ``skunetseg --help`` (or ``python -m skunetseg --help``) and
``skunetseg <command> --help``. Exit codes: 0 success, 1 an error (one line
``skunetseg: error: ...`` on stderr; ``--debug`` shows the traceback), 2 a usage
error (bad or missing arguments), 130 interrupted (Ctrl-C). Ctrl-C during
``fit`` stops training and saves nothing: ``MODEL_DIR`` is left as it was.
Warnings are one line each, ``skunetseg: warning: ...``.

TensorFlow's C++ start-up lines (a failed ``cuInit`` on a machine without a
GPU, oneDNN notices) are kept out of the console unless ``--debug`` is given.
"""

import argparse
import contextlib
import csv
import logging
import os
import re
import signal
import sys
import threading
import warnings
from numbers import Integral

from sklearn.utils._param_validation import Interval, StrOptions

from . import _atomic

__all__ = ["main"]

#: Exit codes scripts can rely on.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_HISTORY_FILE = "history.csv"
_HISTORY_PLOT = "history.png"


class CommandError(Exception):
    """An error the command line reports as one line."""


# ------------------------------------------------------------------ parser
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _none_or(choice):
    """The choice ``"none"`` of an option means the parameter value None."""
    return None if choice == "none" else choice


def _segmenter_defaults():
    """``UNetSegmenter``'s defaults: the command line trains with the estimator's."""
    from . import UNetSegmenter

    return UNetSegmenter().get_params()


# ------------------------------------------- options from the shared parameters
#: How the options of the shared training parameters differ from what their constraints
#: and their entries in SHARED_PARAMETERS_DOC give (help texts users know, a size as two
#: numbers). Any other shared parameter is an option by itself (see _shared_options).
_OPTION_SETTINGS = {
    "backbone": dict(help="encoder (default: %(default)s)"),
    "encoder_weights": dict(help="'imagenet' or a weights file of the encoder (default: random)"),
    "input_size": dict(type=_positive_int, nargs=2, default=None, metavar=("H", "W"),
                       help="resize every image to H x W"),
    "validation_fraction": dict(help="share of the images held out for early stopping and "
                                     "to tune the threshold and minimum mask area on; 0 "
                                     "trains on every image and keeps the last epoch; "
                                     "auto: 0.1 when most images hold no object, else 0 "
                                     "(default: %(default)s)"),
    "augment": dict(help="training augmentation preset (default: %(default)s)"),
    "binarize_masks": dict(help="read masks whose non-zero pixels are the object (e.g. 0/255 "
                                "or anti-aliased) as binary masks"),
    "random_state": dict(metavar="SEED"),
}


def _spelled(constraints):
    """The constraints of a parameter whose values a command line can spell, ``str`` last."""
    spelled = [constraint for constraint in constraints
               if constraint is None or isinstance(constraint, (StrOptions, Interval))
               or (isinstance(constraint, str) and constraint in ("boolean", "random_state"))]
    return spelled + [str] if str in constraints else spelled


class _ParameterValue:
    """argparse ``type`` of a parameter's option: the text as the first value the
    parameter's constraints allow (``none`` is None, ``true``/``false`` a bool)."""

    def __init__(self, constraints):
        self.constraints = _spelled(constraints)

    def __call__(self, text):
        for constraint in self.constraints:
            if constraint is None and text.lower() == "none":
                return None
            if isinstance(constraint, StrOptions) and text in constraint.options:
                return text
            if constraint == "boolean" and text.lower() in ("true", "false"):
                return text.lower() == "true"
            if constraint == "random_state" and (text.isdigit() or text.lower() == "none"):
                return None if text.lower() == "none" else int(text)
            if isinstance(constraint, Interval):
                try:
                    number = int(text) if constraint.type is Integral else float(text)
                except ValueError:
                    continue
                if constraint.is_satisfied_by(number):
                    return number
            if constraint is str:
                return text
        raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")

    def describe(self):
        words = {None: ["none"], "boolean": ["true", "false"],
                 "random_state": ["an integer seed", "none"], str: ["a name"]}
        parts = [part for constraint in self.constraints
                 for part in (sorted(constraint.options) if isinstance(constraint, StrOptions)
                              else words.get(constraint, [str(constraint)]))]
        return " or ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)

    def metavar(self):
        """``{a,b,...}`` when the values are words, else None (argparse's default)."""
        words = []
        for constraint in self.constraints:
            if isinstance(constraint, StrOptions):
                words += sorted(constraint.options)
            elif constraint in (None, "boolean"):
                words += ["none"] if constraint is None else ["true", "false"]
            else:
                return None
        return "{" + ",".join(words) + "}"

    @staticmethod
    def text(value):
        """A default as the option would be written."""
        if value is None or isinstance(value, bool):
            return str(value).lower()
        return str(value)


def _summary(entry):
    """The first sentence of a numpydoc entry's description, up to a colon or semicolon,
    as a help text."""
    description = " ".join(line.strip() for line in entry.splitlines()[1:]).replace("``", "")
    summary = re.split(r"(?<=[\w)])[.:;](?:\s|$)", description, maxsplit=1)[0]
    return summary[:1].lower() + summary[1:].replace("%", "%%")


def _shared_options(defaults):
    """``[(parameter name, argparse keywords)]``: one option per shared training parameter
    (``KerasModelMixin._parameter_constraints``) that has one.

    A parameter whose constraints allow values a command line can spell (numbers in an
    interval, words, ``none``, ``true``/``false``, a seed, a name) is an option
    ``--name-with-dashes``, or a flag when it is a bool that defaults to False; its default
    is ``defaults[name]`` and its help the first sentence of its entry in
    ``SHARED_PARAMETERS_DOC``. ``_OPTION_SETTINGS`` overrides these.
    """
    from ._docstrings import parameter_entries
    from ._keras_estimator import SHARED_PARAMETERS_DOC, KerasModelMixin

    entries = parameter_entries(SHARED_PARAMETERS_DOC)
    options = []
    for name, constraints in KerasModelMixin._parameter_constraints.items():
        settings = _OPTION_SETTINGS.get(name, {})
        value = _ParameterValue(constraints)
        if "type" not in settings and not [c for c in value.constraints if c is not None]:
            continue  # code (callbacks), or set by other options (verbose: --quiet)
        if value.constraints == ["boolean"] and defaults[name] is False:
            keywords = dict(action="store_true", help=_summary(entries[name]))
        else:
            # the values, unless the metavar lists them or a number is all there is
            values = ("" if value.metavar() or len(value.constraints) == 1
                      else f"{value.describe()}; ")
            keywords = dict(type=value, default=value.text(defaults[name]),
                            metavar=value.metavar(),
                            help=f"{_summary(entries[name])} ({values}default: %(default)s)")
        options.append((name, {**keywords, **settings}))
    return options


def _shared_params(args):
    """The shared training parameters the ``fit`` options give."""
    values = {name: getattr(args, name) for name, _ in _shared_options(_segmenter_defaults())}
    # options of two numbers (a size) give lists; the parameters take tuples
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in values.items()}


def _add_common(parser):
    parser.add_argument("--debug", action="store_true",
                        help="show TensorFlow's log lines and full tracebacks")


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="skunetseg",
        description="U-Net image segmentation on folders of images (skunetseg).",
        epilog="Exit codes: 0 success, 1 error, 2 usage error, 130 interrupted.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"skunetseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = commands.add_parser(
        "fit", help="train a model on a folder of images and a folder of masks",
        description="Train a U-Net on the images of IMAGES_DIR and the masks of MASKS_DIR "
                    "(paired by file name) and save it, without pickle, to MODEL_DIR with "
                    f"its training history ({_HISTORY_FILE}, and {_HISTORY_PLOT} when "
                    "matplotlib is installed).")
    fit.add_argument("images_dir", metavar="IMAGES_DIR")
    fit.add_argument("masks_dir", metavar="MASKS_DIR")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                     help="folder to save the model to (must not exist unless --overwrite)")
    default = _segmenter_defaults()
    training = fit.add_argument_group(
        "training", "UNetSegmenter's parameters; a left-out option takes its default")
    for name, keywords in _shared_options(default):
        training.add_argument("--" + name.replace("_", "-"), **keywords)
    training.add_argument("--decoder-filters", type=_positive_int, nargs=5, default=None,
                          metavar="F", help="filters of the 5 decoder blocks (default: "
                          f"{' '.join(map(str, default['decoder_filters']))})")
    training.add_argument("--loss", default=default["loss"],
                          help="jaccard, dice, bce, focal, bce_jaccard or bce_dice "
                               "(default: %(default)s)")
    training.add_argument("--tta", default=None, choices=["flips", "d4"],
                          help="test-time augmentation the saved model predicts with")
    fit.add_argument("--mask-suffix", default="",
                     help="what mask names add to image names (e.g. _mask)")
    fit.add_argument("--folds", type=_positive_int, default=None, metavar="N",
                     help="train a fold ensemble of N models (N >= 2)")
    fit.add_argument("--fp-filter", action="store_true",
                     help="add a false-positive filter: a presence classifier that blanks "
                          "the masks of images it finds empty, its threshold tuned on "
                          "out-of-fold predictions")
    fit.add_argument("--fp-classifier", default="image", choices=["image", "features"],
                     help="the filter's presence classifier: an image classifier network "
                          "trained like the segmenter, or a logistic regression on features "
                          "of the probability maps (default: %(default)s)")
    fit.add_argument("--fp-cv", type=_positive_int, default=3, metavar="K",
                     help="folds of the filter's out-of-fold predictions, K >= 2 "
                          "(default: %(default)s)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_DIR")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_common(fit)

    predict = commands.add_parser(
        "predict", help="write predicted masks of a folder of images",
        description="Predict a mask file (PNG) per image of IMAGES_DIR into OUT_DIR, "
                    "named after the image; existing files are never replaced unless "
                    "--overwrite.")
    predict.add_argument("model_dir", metavar="MODEL_DIR")
    predict.add_argument("images_dir", metavar="IMAGES_DIR")
    predict.add_argument("out_dir", metavar="OUT_DIR")
    predict.add_argument("--rle", default=None, metavar="CSV",
                         help="also write the masks run-length encoded to this Kaggle "
                              "submission file")
    predict.add_argument("--suffix", default=".png",
                         help="appended to image names to name masks (default: %(default)s)")
    predict.add_argument("--tta", default=None, choices=["none", "flips", "d4"],
                         help="override the saved model's test-time augmentation")
    predict.add_argument("--batch-size", type=_positive_int, default=32,
                         help="images read at a time (default: %(default)s)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace existing mask files and CSV")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _add_common(predict)

    evaluate = commands.add_parser(
        "evaluate", help="score a model on a folder of images and masks",
        description="Print the Kaggle Dice (overall and per class) of the model's "
                    "predictions of IMAGES_DIR against MASKS_DIR, and its false-positive "
                    "rate on empty masks.")
    evaluate.add_argument("model_dir", metavar="MODEL_DIR")
    evaluate.add_argument("images_dir", metavar="IMAGES_DIR")
    evaluate.add_argument("masks_dir", metavar="MASKS_DIR")
    evaluate.add_argument("--mask-suffix", default="",
                          help="what mask names add to image names (e.g. _mask)")
    evaluate.add_argument("--worst", type=_positive_int, default=5, metavar="N",
                          help="list the N images of lowest Dice (default: %(default)s)")
    evaluate.add_argument("--plot", default=None, metavar="PNG",
                          help="draw the worst images with their true and predicted masks "
                               "(needs matplotlib)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=32,
                          help="images read at a time (default: %(default)s)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing plot")
    _add_common(evaluate)
    return parser


# ------------------------------------------------------------ quiet start
def _quiet_tensorflow(debug):
    """Keep TensorFlow's C++ and absl start-up lines off the console unless debugging."""
    if debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        os.environ["SKUNETSEG_TF_LOGS"] = "1"  # skunetseg._backend holds nothing back
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # third-party deprecation notices are for developers, not for the user of a command
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _say(text, quiet=False):
    if not quiet:
        print(text, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Print a warning as one line, without the source line Python shows."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"skunetseg: warning: {text}", file=sys.stderr if file is None else file, flush=True)


# --------------------------------------------------------------------- fit
def _check_new_path(path, overwrite, what):
    if os.path.exists(path) and not overwrite:
        raise CommandError(f"{what} {path!r} exists; pass --overwrite to replace it.")


#: Set by Ctrl-C during ``fit``: training stops and nothing is saved.
_interrupted = threading.Event()


def _on_interrupt(signum, frame):
    _interrupted.set()
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt


@contextlib.contextmanager
def _catching_ctrl_c():
    """Record Ctrl-C in :data:`_interrupted` (in the main thread; elsewhere it is not ours)."""
    _interrupted.clear()
    try:
        previous = signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _stop_when_interrupted(model):
    """Give every network ``model`` trains a callback ending its training after Ctrl-C.

    The estimators keep the weights of a training interrupted after its first
    epoch and go on (the next fold of an ensemble); this callback makes each
    later training stop at its first batch, so that the command ends soon.
    """
    from ._backend import keras

    class StopWhenInterrupted(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if _interrupted.is_set():
                self.model.stop_training = True

    params = model.get_params(deep=True)
    model.set_params(**{name: [*(value or []), StopWhenInterrupted()]
                        for name, value in params.items()
                        if name == "callbacks" or name.endswith("__callbacks")})


def _make_model(args):
    from . import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter

    shared = {**_shared_params(args), "verbose": 0 if args.quiet else 1}
    params = dict(shared, loss=args.loss, tta=args.tta)
    if args.decoder_filters is not None:
        params["decoder_filters"] = tuple(args.decoder_filters)
    model = UNetSegmenter(**params)
    if args.folds is not None:
        if args.folds < 2:
            raise CommandError(f"--folds must be at least 2; got {args.folds}.")
        model = FoldEnsemble(model, cv=args.folds, random_state=args.random_state,
                             verbose=0 if args.quiet else 1)
    if args.fp_filter:
        if args.fp_cv < 2:
            raise CommandError(f"--fp-cv must be at least 2; got {args.fp_cv}.")
        classifier = "features"
        if args.fp_classifier == "image":
            # trained like the segmenter: the shared parameters (its loss stays its own)
            classifier = PresenceClassifier(**shared)
        model = FalsePositiveFilter(model, classifier, tune_threshold=True, cv=args.fp_cv,
                                    random_state=args.random_state)
    return model


def _histories(model):
    """``[(fold or None, history)]`` of the networks ``model`` trained."""
    if hasattr(model, "estimators_"):
        return [(fold, history) for index, member in enumerate(model.estimators_)
                for fold, history in [(index + 1, h) for _, h in _histories(member)]]
    if hasattr(model, "segmenter_"):
        return _histories(model.segmenter_)
    return [(None, model.history_)]


def _write_history(model, folder):
    rows = []
    for fold, history in _histories(model):
        rows.extend(row if fold is None else {"fold": fold, **row} for row in history)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path = os.path.join(folder, _HISTORY_FILE)
    with _atomic.open_for_writing(path, newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plot_history(model, folder):
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import plot_history, save_figure

    histories = _histories(model)
    figure, axes = plt.subplots(len(histories), 3, figsize=(15, 4 * len(histories)),
                                squeeze=False)
    for row, (fold, history) in zip(axes, histories, strict=True):
        plot_history(history, ax=row)
        if fold is not None:
            row[0].set_ylabel(f"fold {fold}")
    path = os.path.join(folder, _HISTORY_PLOT)
    save_figure(figure, path, bbox_inches="tight")
    plt.close(figure)
    return path


def _fit(args):
    from ._persistence import check_replaceable
    from .io import load_image_folder

    _check_new_path(args.output, args.overwrite, "MODEL_DIR")
    check_replaceable(args.output)  # --overwrite replaces a saved model only
    images, masks = load_image_folder(args.images_dir, args.masks_dir,
                                      mask_suffix=args.mask_suffix)
    model = _make_model(args)
    _stop_when_interrupted(model)
    _say(f"Training {type(model).__name__} ({args.backbone}) on {len(images)} images"
         + (f", {args.folds} folds" if args.folds else ""), args.quiet)
    with _catching_ctrl_c(), warnings.catch_warnings():
        # the estimator's "keeps the best weights" does not apply: nothing is saved
        warnings.filterwarnings("ignore", message="Training interrupted after")
        model.fit(images, masks)
    if _interrupted.is_set():
        raise KeyboardInterrupt(f"training stopped; no model was saved ({args.output!r} is "
                                "as it was)")
    _set_everywhere(model, verbose=0)  # progress bars were for this command only
    model.save(args.output, overwrite=args.overwrite)
    _write_history(model, args.output)
    plot = _plot_history(model, args.output)
    _say(f"Saved the model to {args.output!r} with its history ({_HISTORY_FILE}"
         + (f", {_HISTORY_PLOT}" if plot else "") + ").", args.quiet)
    _say(_postprocessing_line(model.postprocessing_), args.quiet)
    return EXIT_OK


def _postprocessing_line(settings):
    """What ``predict`` and ``evaluate`` will apply, one value per class (tuned by ``fit``
    when the parameters were left to it)."""
    def values(numbers):
        return ", ".join(f"{number:g}" for number in numbers)

    threshold = ("the most probable label" if settings.threshold is None
                 else f"threshold {values(settings.threshold)}")
    return (f"Post-processing that predict applies: {threshold}; min_area "
            f"{values(settings.min_area)} (below 1 a share of the image, else pixels).")


# ----------------------------------------------------------------- predict
def _members(model):
    """``model`` and every fitted estimator inside it: fold models, a filter's segmenter
    and classifiers, the model inside a FrozenEstimator."""
    from sklearn.frozen import FrozenEstimator

    yield model
    inner = [getattr(model, "segmenter_", None),
             model.estimator if isinstance(model, FrozenEstimator) else None,
             *(getattr(model, "estimators_", None) or []),
             *(getattr(model, "classifiers_", None) or [])]
    for member in inner:
        if member is not None and member is not model:
            yield from _members(member)


def _set_everywhere(model, **params):
    """Set ``params`` on every estimator inside ``model`` that has them."""
    for member in _members(model):
        own = member.get_params(deep=False) if hasattr(member, "get_params") else {}
        chosen = {name: value for name, value in params.items() if name in own}
        if chosen:
            member.set_params(**chosen)


def _load(model_dir):
    from . import load

    model = load(model_dir)
    _set_everywhere(model, verbose=0)  # the command prints its own progress
    return model


def _rle_rows(model, stems, written):
    """``(header, rows)`` of the Kaggle CSV of the mask files ``written``."""
    import numpy as np

    from .io import read_mask
    from .rle import rle_encode

    kind, classes = model.target_type_, list(model.classes_)
    if kind == "binary":
        header = ("id", "rle_mask")
        rows = [(stem, rle_encode(read_mask(path) == classes[1]))
                for stem, path in zip(stems, written, strict=True)]
        return header, rows
    header = ("Image_Label", "EncodedPixels")
    rows = []
    if kind == "multilabel":
        files = iter(written)
        for stem in stems:
            for label in classes:
                rows.append((f"{stem}_{label}", rle_encode(read_mask(next(files)) != 0)))
        return header, rows
    for stem, path in zip(stems, written, strict=True):  # multiclass label maps
        mask = read_mask(path)
        rows.extend((f"{stem}_{label}", rle_encode(np.asarray(mask) == label))
                    for label in classes[1:])
    return header, rows


def _predict(args):
    from pathlib import Path

    from .io import _existing_targets, load_image_folder, predict_to_dir

    if args.rle is not None:
        _check_new_path(args.rle, args.overwrite, "The CSV file")
    images, _ = load_image_folder(args.images_dir)
    taken = [] if args.overwrite else _existing_targets(
        Path(args.out_dir), [path.stem for path in images], args.suffix)
    if taken:  # predict_to_dir checks it too; this saves loading the model first
        raise CommandError(f"{len(taken)} mask file(s) that this prediction would write "
                           f"already exist in {args.out_dir!r}, such as {taken[0]!r}; pass "
                           "--overwrite to replace them, or choose another OUT_DIR or "
                           "--suffix.")
    model = _load(args.model_dir)
    if args.tta is not None:
        _set_tta(model, _none_or(args.tta))
    written = predict_to_dir(model, images, args.out_dir, batch_size=args.batch_size,
                             overwrite=args.overwrite, suffix=args.suffix,
                             verbose=0 if args.quiet else 1)
    _say(f"Wrote {len(written)} mask file(s) to {args.out_dir!r}.", args.quiet)
    if args.rle is not None:
        header, rows = _rle_rows(model, [path.stem for path in images], written)
        with _atomic.open_for_writing(args.rle, overwrite=args.overwrite, newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        _say(f"Wrote {len(rows)} run-length encoded row(s) to {args.rle!r}.", args.quiet)
    return EXIT_OK


def _set_tta(model, tta):
    """Set ``tta`` on the segmenter(s) that predict for ``model``."""
    _set_everywhere(model, tta=tta)


# ---------------------------------------------------------------- evaluate
def _evaluate(args):
    import numpy as np

    from ._base import binarizes_masks
    from .io import load_image_folder, read_image, read_mask
    from .metrics import dice_per_pair

    if args.plot is not None:
        _check_new_path(args.plot, args.overwrite, "The plot file")
    model = _load(args.model_dir)
    images, masks = load_image_folder(args.images_dir, args.masks_dir,
                                      mask_suffix=args.mask_suffix)
    binarize = binarizes_masks(model)  # read the masks as the model read its training masks
    pair_dice, truth_empty, pred_empty = [], [], []
    for start in range(0, len(images), args.batch_size):
        chunk = slice(start, start + args.batch_size)
        for proba, mask_path in zip(model.predict_proba(images[chunk]), masks[chunk],
                                    strict=True):
            truth = model.encoding_.encode(read_mask(mask_path, binarize=binarize)[np.newaxis],
                                           name="MASKS_DIR") > 0.5
            if truth.shape[1:3] != proba.shape[:2]:
                raise CommandError(f"the mask {str(mask_path)!r} is {truth.shape[1:3]} for an "
                                   f"image of {proba.shape[:2]}.")
            predicted = model.postprocessing_.apply(proba[np.newaxis])
            pair_dice.append(dice_per_pair(truth, predicted)[0])
            truth_empty.append(~truth.any(axis=(1, 2))[0])
            pred_empty.append(~predicted.any(axis=(1, 2))[0])
    pair_dice, truth_empty, pred_empty = map(np.array, (pair_dice, truth_empty, pred_empty))
    labels = list(model.classes_)
    if model.target_type_ == "binary":
        labels = labels[1:]
    print(f"Kaggle Dice: {pair_dice.mean():.4f} ({len(images)} images x {len(labels)} "
          f"class(es))")
    for label, score in zip(labels, pair_dice.mean(axis=0), strict=True):
        print(f"  class {label}: {score:.4f}")
    n_empty = int(truth_empty.sum())
    if n_empty:
        false_positives = int((truth_empty & ~pred_empty).sum())
        print(f"False-positive rate on empty masks: {false_positives / n_empty:.4f} "
              f"({false_positives} of {n_empty} empty (image, class) masks predicted "
              "non-empty)")
    else:
        print("False-positive rate on empty masks: no empty masks")
    per_image = pair_dice.mean(axis=1)
    worst = np.argsort(per_image, kind="stable")[:args.worst]
    print(f"Worst {len(worst)} image(s):")
    for row in worst:
        print(f"  {images[row].name}: {per_image[row]:.4f}")
    if args.plot is not None:
        from .plotting import plot_predictions

        chosen = [images[row] for row in worst]
        pictures = [read_image(path) for path in chosen]
        truths = [read_mask(masks[row]) for row in worst]
        if len({picture.shape for picture in pictures}) > 1:
            raise CommandError("--plot needs the worst images to have one size.")
        figure = plot_predictions(np.stack(pictures), np.stack(truths),
                                  model.predict(np.stack(pictures)), path=args.plot)
        import matplotlib.pyplot as plt

        plt.close(figure)
        print(f"Drew them in {args.plot!r}.")
    return EXIT_OK


_COMMANDS = {"fit": _fit, "predict": _predict, "evaluate": _evaluate}


def main(argv=None):
    """Run the command line; return its exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and usage errors
        return exit.code
    _quiet_tensorflow(args.debug)
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt as interrupt:
        detail = f": {interrupt}" if str(interrupt) else ""
        print(f"skunetseg: interrupted{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # one readable line, the traceback only with --debug
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        # the library's advice names its Python argument; here it is the flag
        message = message.replace("overwrite=True", "--overwrite")
        name = "" if isinstance(error, CommandError) else f"{type(error).__name__}: "
        print(f"skunetseg: error: {name}{message}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        warnings.showwarning = shown
