"""The ``skunetseg`` command line, run end to end through subprocess on a tiny folder.

One module-scoped fit (about 10 s of training on 8 images of 40x44) gives the model
directory that the predict and evaluate tests reuse.
"""

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import synthetic_images

REPO = Path(__file__).resolve().parents[1]
SIZE = (40, 44)  # not a multiple of 32
#: What TensorFlow's C++ start-up writes (E0000 ... cuInit, I0000 ... cudart_stub, ...)
NOISE = ("cuInit", "cuda_platform", "cudart_stub", "absl::InitializeLog", "oneDNN",
         "cpu_feature_guard")


def run_cli(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("SKUNETSEG_TF_LOGS", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "skunetseg", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def assert_clean_failure(result, *words):
    """Exit code 1, one line on stderr naming ``words``, no traceback."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("skunetseg: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from skunetseg.io import write_mask

    root = tmp_path_factory.mktemp("cli")
    images, masks = synthetic_images(n=8, height=SIZE[0], width=SIZE[1], seed=3)
    (root / "images").mkdir()
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        assert cv2.imwrite(str(root / "images" / f"img{index}.png"), image)
        write_mask(root / "masks" / f"img{index}.png", mask)
    return root


@pytest.fixture(scope="module")
def fitted(folder):
    """(model dir, the fit's CompletedProcess): one fit for the whole module."""
    model_dir = folder / "model"
    result = run_cli("fit", folder / "images", folder / "masks", "-o", model_dir,
                     "--backbone", "vgg16", "--decoder-filters", 16, 8, 8, 4, 4,
                     "--epochs", 1, "--batch-size", 4, "--learning-rate", 0.01,
                     "--validation-fraction", 0, "--random-state", 0)
    assert result.returncode == 0, result.stderr
    return model_dir, result


def image_paths(folder):
    from skunetseg.io import load_image_folder

    return load_image_folder(folder / "images", folder / "masks")


def test_fit_writes_a_loadable_model_its_history_and_a_clean_console(fitted):
    import skunetseg

    model_dir, result = fitted
    for line in result.stderr.splitlines():
        assert not any(word in line for word in NOISE), result.stderr
    assert "Traceback" not in result.stderr
    assert "2/2" in result.stdout and "━" in result.stdout  # the epoch's progress bar
    assert f"Saved the model to {str(model_dir)!r}" in result.stdout
    model = skunetseg.load(model_dir)
    # no held-out images here: the post-processing it prints is the untuned one
    assert "Post-processing that predict applies: threshold 0.5; min_area 0 " in result.stdout
    assert model.postprocessing_.threshold == (0.5,) and model.validation_score_ is None
    assert model.get_params()["backbone"] == "vgg16"
    assert model.get_params()["decoder_filters"] == (16, 8, 8, 4, 4)
    assert model.random_state == 0 and model.epochs == 1
    with open(model_dir / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(model.history_) == 1
    assert float(rows[0]["loss"]) == pytest.approx(model.history_[0]["loss"])
    assert (model_dir / "history.png").stat().st_size > 0


def test_fit_refuses_an_existing_model_dir_before_training(fitted, folder):
    model_dir, _ = fitted
    before = sorted(os.listdir(model_dir))
    result = run_cli("fit", folder / "images", folder / "masks", "-o", model_dir)
    assert_clean_failure(result, "exists", "--overwrite")
    assert sorted(os.listdir(model_dir)) == before


def test_predict_writes_the_loaded_models_masks_and_a_matching_rle_csv(fitted, folder):
    import skunetseg
    from skunetseg.io import read_mask
    from skunetseg.rle import rle_decode

    model_dir, _ = fitted
    out, submission = folder / "predicted", folder / "submission.csv"
    result = run_cli("predict", model_dir, folder / "images", out, "--rle", submission)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and not any(w in result.stderr for w in NOISE)
    images, _ = image_paths(folder)
    expected = skunetseg.load(model_dir).predict(images)
    with open(submission, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["id", "rle_mask"]
    assert [row[0] for row in rows[1:]] == [path.stem for path in images]
    for path, mask, (_, rle) in zip(images, expected, rows[1:], strict=True):
        written = read_mask(out / f"{path.stem}.png")
        assert written.shape == SIZE
        np.testing.assert_array_equal(written, mask)
        np.testing.assert_array_equal(rle_decode(rle, SIZE), mask == 1)

    # a second run never replaces the masks or the CSV unless --overwrite
    stamp = {path: path.stat().st_mtime_ns for path in out.iterdir()}
    assert_clean_failure(run_cli("predict", model_dir, folder / "images", out),
                         "exist", "overwrite")
    assert_clean_failure(run_cli("predict", model_dir, folder / "images", folder / "other",
                                 "--rle", submission), "exists")
    assert {path: path.stat().st_mtime_ns for path in out.iterdir()} == stamp
    assert not (folder / "other").exists()


def test_evaluate_prints_the_models_score(fitted, folder):
    import skunetseg

    model_dir, _ = fitted
    images, masks = image_paths(folder)
    plot = folder / "worst.png"
    result = run_cli("evaluate", model_dir, folder / "images", folder / "masks", "--worst", 2,
                     "--plot", plot)
    assert result.returncode == 0, result.stderr
    expected = skunetseg.load(model_dir).score(images, masks)
    lines = result.stdout.splitlines()
    assert "━" not in result.stdout  # no Keras progress bar between the lines
    assert lines[0].startswith(f"Kaggle Dice: {expected:.4f} (8 images x 1 class(es))")
    assert lines[1] == f"  class 1: {expected:.4f}"
    assert lines[2].startswith("False-positive rate on empty masks:")
    assert lines[3] == "Worst 2 image(s):"
    assert plot.stat().st_size > 0


def test_errors_are_one_line_with_an_exit_code_and_debug_shows_the_traceback(folder, tmp_path):
    result = run_cli("predict", tmp_path, tmp_path / "nowhere", tmp_path / "out")
    assert_clean_failure(result, "nowhere", "does not exist")
    result = run_cli("evaluate", tmp_path, folder / "images", folder / "masks")
    assert_clean_failure(result, "skunetseg.json")  # tmp_path is no saved model
    debug = run_cli("evaluate", tmp_path, folder / "images", folder / "masks", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize("command", ["fit", "predict", "evaluate"])
def test_help_and_usage_errors(command, capsys):
    from skunetseg.cli import main

    assert main([command, "--help"]) == 0
    assert f"usage: skunetseg {command}" in capsys.readouterr().out
    assert main([command]) == 2  # its folders are missing
    assert "the following arguments are required" in capsys.readouterr().err


def test_fit_trains_with_the_estimators_defaults_unless_told_otherwise():
    """The options a user leaves out are UNetSegmenter's defaults, so the two stay one."""
    from skunetseg import UNetSegmenter
    from skunetseg.cli import _build_parser, _make_model

    expected = UNetSegmenter().get_params()
    model = _make_model(_build_parser().parse_args(["fit", "in", "masks", "-o", "out"]))
    given = model.get_params()
    for name in set(expected) - {"verbose"}:  # the command line shows progress unless -q
        assert given[name] == expected[name], name
    told = _make_model(_build_parser().parse_args(
        ["fit", "in", "masks", "-o", "out", "--augment", "none", "--loss", "jaccard",
         "--validation-fraction", "0.2"]))
    assert (told.augment, told.loss, told.validation_fraction) == (None, "jaccard", 0.2)


def spelled_value(constraints, default):
    """``(value, text)``: a value other than ``default`` that ``constraints`` allow, and how a
    command line writes it; None when it cannot write one (code, a list)."""
    from numbers import Integral

    from sklearn.utils._param_validation import Interval, StrOptions

    for constraint in constraints:
        if constraint is None and default is not None:
            return None, "none"
        if isinstance(constraint, StrOptions) and constraint.options - {default}:
            option = sorted(constraint.options - {default})[0]
            return option, option
        if constraint == "boolean":
            return not default, str(not default).lower()
        if constraint == "random_state":
            return 7, "7"
        if isinstance(constraint, Interval):
            low = constraint.left or 0
            high = low + 2 if constraint.right is None else constraint.right
            value = low + 3 if constraint.type is Integral else low + 0.375 * (high - low)
            if value != default and constraint.is_satisfied_by(value):
                return value, str(value)
        if constraint is str:
            return "sample", "sample"
    return None


def test_every_shared_parameter_a_command_line_can_write_is_an_option_that_reaches_both():
    """A parameter added to KerasModelMixin is an option of fit without a change to the
    command line, and reaches the segmenter and the filter's presence classifier."""
    from skunetseg import UNetSegmenter
    from skunetseg._keras_estimator import KerasModelMixin
    from skunetseg.cli import _build_parser, _make_model

    parser = _build_parser()
    fit = parser._subparsers._group_actions[0].choices["fit"]
    options = {option: action for action in fit._actions for option in action.option_strings}
    defaults = UNetSegmenter().get_params()
    argv, expected = ["fit", "in", "masks", "-o", "out", "--fp-filter"], {}
    for name, constraints in KerasModelMixin._parameter_constraints.items():
        spelled = spelled_value(constraints, defaults[name])
        if spelled is None:
            continue
        option = "--" + name.replace("_", "-")
        assert option in options, name
        argv += [option] if options[option].nargs == 0 else [option, spelled[1]]
        expected[name] = spelled[0]
    assert {"max_empty_share", "accumulate_steps", "bn_momentum"} <= set(expected)
    argv += ["--input-size", "24", "32"]  # a size: two numbers
    expected["input_size"] = (24, 32)
    model = _make_model(parser.parse_args(argv))
    for estimator in (model.segmenter, model.classifier):
        given = estimator.get_params()
        assert {name: given[name] for name in expected} == expected, type(estimator).__name__


@pytest.mark.parametrize("option, text, words", [
    ("--max-empty-share", "1.5", "a float in the range (0.0, 1.0) or none"),
    ("--early-stopping-patience", "-1", "an int in the range [0, inf) or none"),
    ("--mixed-precision", "yes", "auto, bfloat16, true or false"),
    ("--batch-size", "0", "an int in the range [1, inf)"),
])
def test_a_value_the_parameter_does_not_allow_is_a_usage_error(option, text, words, capsys):
    from skunetseg.cli import main

    assert main(["fit", "in", "masks", "-o", "out", option, text]) == 2
    assert f"argument {option}: expected {words}, got {text!r}" in capsys.readouterr().err


#: The tiny training options of the fits below.
TINY = ("--backbone", "vgg16", "--decoder-filters", 16, 8, 8, 4, 4, "--epochs", 1,
        "--batch-size", 4, "--learning-rate", 0.01, "--validation-fraction", 0,
        "--random-state", 0, "-q")


@pytest.mark.slow
def test_fit_with_folds_saves_a_fold_ensemble(folder, tmp_path):
    import skunetseg

    model_dir = tmp_path / "folds"
    result = run_cli("fit", folder / "images", folder / "masks", "-o", model_dir, *TINY,
                     "--folds", 2)
    assert result.returncode == 0, result.stderr
    model = skunetseg.load(model_dir)
    assert isinstance(model, skunetseg.FoldEnsemble) and model.cv == 2
    assert [member.epochs for member in model.estimators_] == [1, 1]
    with open(model_dir / "history.csv") as file:
        assert [row["fold"] for row in csv.DictReader(file)] == ["1", "2"]


@pytest.mark.slow
def test_fit_with_a_false_positive_filter(folder, tmp_path):
    import skunetseg
    from skunetseg.cli import _set_tta

    model_dir = tmp_path / "filter"
    result = run_cli("fit", folder / "images", folder / "masks", "-o", model_dir, *TINY,
                     "--fp-filter", "--fp-classifier", "features", "--fp-cv", 2)
    assert result.returncode == 0, result.stderr
    model = skunetseg.load(model_dir)
    assert isinstance(model, skunetseg.FalsePositiveFilter) and model.kind_ == "features"
    assert model.tune_threshold and model.cv == 2 and model.segmenter_.verbose == 0
    _set_tta(model, "flips")  # what predict --tta does: it reaches the filter's segmenter
    assert model.segmenter_.tta == "flips"


def test_tta_and_verbose_reach_every_network_of_a_nested_model():
    from sklearn.frozen import FrozenEstimator

    from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter
    from skunetseg.cli import _set_everywhere, _set_tta

    folds = FoldEnsemble(UNetSegmenter())
    folds.estimators_ = [UNetSegmenter(verbose=1), UNetSegmenter(verbose=1)]
    model = FalsePositiveFilter(folds)
    model.segmenter_, model.classifiers_ = folds, [PresenceClassifier(verbose=1)]
    frozen = FalsePositiveFilter(FrozenEstimator(UNetSegmenter(verbose=1)))
    frozen.segmenter_ = frozen.segmenter
    for tree in (model, frozen):
        _set_tta(tree, "flips")  # what predict --tta does
        _set_everywhere(tree, verbose=0)  # what fit and the loading commands do
    networks = [*folds.estimators_, frozen.segmenter.estimator]
    assert [member.tta for member in networks] == ["flips"] * 3
    assert [member.verbose for member in [*networks, *model.classifiers_]] == [0] * 4


@pytest.mark.parametrize("flags", [("--folds", 1), ("--fp-filter", "--fp-cv", 1)])
def test_fold_counts_below_two_are_refused_before_training(folder, tmp_path, flags):
    result = run_cli("fit", folder / "images", folder / "masks", "-o", tmp_path / "m", *flags)
    assert_clean_failure(result, f"{flags[-2]} must be at least 2")
    assert "Epoch" not in result.stdout and not (tmp_path / "m").exists()


def test_console_script_entry_point():
    from skunetseg import cli

    with open(REPO / "pyproject.toml", "rb") as file:
        scripts = tomllib.load(file)["project"]["scripts"]
    module, function = scripts["skunetseg"].split(":")
    assert module == cli.__name__ and getattr(cli, function) is cli.main
    assert cli.main(["--version"]) == 0


# ------------------------------------------------------- issue 23: nothing lost
def test_fit_overwrite_never_replaces_a_folder_that_is_not_a_model(folder, tmp_path,
                                                                   monkeypatch, capsys):
    from skunetseg import cli

    victim = tmp_path / "victim"
    (victim / "data").mkdir(parents=True)
    (victim / "notes.txt").write_text("my notes")
    (victim / "data" / "labels.csv").write_text("id,label\n")
    for output in (victim, "."):
        monkeypatch.chdir(victim)
        code = cli.main(["fit", str(folder / "images"), str(folder / "masks"), "-o",
                         str(output), "--overwrite", *map(str, TINY)])
        assert code == cli.EXIT_ERROR
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("skunetseg: error: ")
        assert "not a saved skunetseg model" in lines[0] and str(output) in lines[0]
        assert sorted(os.listdir(victim)) == ["data", "notes.txt"]
        assert (victim / "data" / "labels.csv").exists()


def test_predict_on_a_full_disk_leaves_no_partial_csv_and_one_error_line(
        fitted, folder, tmp_path, monkeypatch, capsys):
    """A disk that fills while the CSV is written: no sub.csv (not even a truncated one),
    no temporary file, and one clean error line."""
    import errno

    from skunetseg import cli

    model_dir, _ = fitted
    real_writer = csv.writer

    class FillingDisk:
        def __init__(self, file, **kwargs):
            self.file, self.writer = file, real_writer(file, **kwargs)

        def writerow(self, row):
            self.writer.writerow(row)

        def writerows(self, rows):
            for row in list(rows)[:2]:
                self.writer.writerow(row)
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli.csv, "writer", FillingDisk)
    csv_path = tmp_path / "sub.csv"
    code = cli.main(["predict", str(model_dir), str(folder / "images"), str(tmp_path / "out"),
                     "--rle", str(csv_path), "-q"])
    assert code == cli.EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["skunetseg: error: OSError: [Errno 28] No space left on device"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_held_back_start_up_lines_cut_short_still_end_their_line(capfd, monkeypatch):
    """TensorFlow's captured stderr cut mid-line (a file-size limit) is written back with
    its line ended, so the command's error line starts on its own."""
    from skunetseg import _backend

    monkeypatch.delenv("SKUNETSEG_TF_LOGS", raising=False)
    monkeypatch.setattr(_backend, "_has_nvidia_driver", lambda: False)
    with _backend._quiet_start():
        os.write(2, b"W0000 00:00 a real problem\nE0000 00:00 cut sho")
    sys.stderr.write("skunetseg: error: OSError: [Errno 27] File too large\n")
    lines = capfd.readouterr().err.splitlines()
    assert "skunetseg: error: OSError: [Errno 27] File too large" in lines


def test_ctrl_c_during_fit_exits_130_and_saves_nothing(folder, tmp_path, monkeypatch, capfd):
    """Ctrl-C in the second epoch: exit 130, no model folder, one line, no Python warning."""
    import signal

    import keras

    from skunetseg import cli

    class CtrlCInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)

    make_model = cli._make_model
    monkeypatch.setattr(cli, "_make_model", lambda args: make_model(args).set_params(
        callbacks=[CtrlCInSecondEpoch()]))
    output = tmp_path / "model"
    tiny = [str(value) for value in TINY if value != "-q"]
    tiny[tiny.index("--epochs") + 1] = "3"
    code = cli.main(["fit", str(folder / "images"), str(folder / "masks"), "-o", str(output),
                     *tiny])
    assert code == cli.EXIT_INTERRUPTED == 130
    assert not output.exists() and os.listdir(tmp_path) == []
    err = capfd.readouterr().err
    assert "skunetseg: interrupted: training stopped; no model was saved" in err
    assert "warn" not in err and ".py:" not in err, err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
