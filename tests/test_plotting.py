"""Tests for skunetseg.plotting: real matplotlib figures of tiny hand-made arrays."""

import importlib.util
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from skunetseg.plotting import plot_history, plot_predictions

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install skunetseg[plot], or the test extra)",
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def titles(figure):
    return [axes.get_title() for axes in figure.axes]


def overlay_alpha(axes):
    """Opacity of the mask overlay drawn over the image of an axes, (H, W)."""
    image, overlay = axes.get_images()
    return np.asarray(overlay.get_array())[..., 3]


def line(axes, label):
    (found,) = [item for item in axes.get_lines() if item.get_label() == label]
    return found


# --------------------------------------------------------------- plot_predictions
def binary_case():
    """Three 6x6 images whose per-image Dice is computed by hand in the tests."""
    truth = np.zeros((3, 6, 6), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0, :2, :2] = 1            # 4 pixels
    pred[0, :2, :4] = 1             # 8 pixels, 4 of them shared: 2*4/(4+8) = 0.667
    # image 1: both empty, Dice 1
    truth[2, 5, :3] = 1             # 3 pixels
    pred[2, 0, 0] = 1               # 1 pixel, none shared: Dice 0
    images = np.arange(3 * 36, dtype=np.uint8).reshape(3, 6, 6)
    return images, truth, pred


@needs_matplotlib
def test_predictions_grid_titles_show_each_images_dice(tmp_path):
    images, truth, pred = binary_case()
    path = tmp_path / "predictions.png"
    figure = plot_predictions(images, truth, pred, path=path)
    assert len(figure.axes) == 9
    assert titles(figure)[0::3] == ["image 0", "image 1", "image 2"]
    assert titles(figure)[1::3] == ["truth"] * 3
    expected = [2 * 4 / (4 + 8), 1.0, 0.0]
    for title, dice in zip(titles(figure)[2::3], expected, strict=True):
        assert title == f"prediction, Dice {dice:.3f}"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


@needs_matplotlib
def test_predictions_overlays_paint_exactly_the_mask_pixels():
    images, truth, pred = binary_case()
    figure = plot_predictions(images, truth * 255, pred.astype(bool), alpha=0.3)
    image_axes, truth_axes, pred_axes = figure.axes[:3]
    assert len(image_axes.get_images()) == 1  # the image alone
    np.testing.assert_array_equal(overlay_alpha(truth_axes) > 0, truth[0] == 1)
    np.testing.assert_array_equal(overlay_alpha(pred_axes) > 0, pred[0] == 1)
    assert overlay_alpha(truth_axes).max() == pytest.approx(0.3)


@needs_matplotlib
def test_predictions_images_are_scaled_for_display():
    images, truth, pred = binary_case()
    shown = plot_predictions(images, truth, pred).axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(shown, images[0] / 255, rtol=1e-6)  # uint8: full range
    floats = images.astype(np.float64) * 10 - 7
    shown = plot_predictions(floats, truth, pred).axes[3].get_images()[0].get_array()
    expected = (floats[1] - floats[1].min()) / np.ptp(floats[1])  # own range stretched
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    rgb[..., 0] = 0
    shown = plot_predictions(rgb, truth, pred).axes[0].get_images()[0].get_array()
    assert shown.shape == (6, 6, 3)
    np.testing.assert_allclose(shown[..., 0], 0)


@needs_matplotlib
def test_predictions_multilabel_scores_all_or_one_class():
    truth = np.zeros((1, 4, 4, 2), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, :, 0] = pred[0, 0, :, 0] = 1   # class 0: perfect, Dice 1
    truth[0, 2:, :2, 1] = 1                    # class 1: 4 pixels
    pred[0, 3, :, 1] = 1                       # 4 pixels, 2 shared: 2*2/(4+4) = 0.5
    everything = plot_predictions(np.zeros((1, 4, 4)), truth, pred)
    assert titles(everything)[2] == f"prediction, Dice {(1 + 0.5) / 2:.3f}"
    np.testing.assert_array_equal(overlay_alpha(everything.axes[1]) > 0, truth[0].any(-1))
    one = plot_predictions(np.zeros((1, 4, 4)), truth, pred, class_index=1)
    assert titles(one)[2] == "prediction, Dice 0.500"
    np.testing.assert_array_equal(overlay_alpha(one.axes[2]) > 0, pred[0, ..., 1] == 1)
    assert [text.get_text() for text in one.legends[0].get_texts()] == ["class 1"]


@needs_matplotlib
def test_predictions_label_maps_score_every_label_and_leave_background_bare():
    truth = np.array([[[0, 1], [2, 2]]])
    pred = np.array([[[0, 1], [2, 0]]])
    # label 0: 2*1/(1+2); label 1: 1; label 2: 2*1/(2+1); labels found automatically
    figure = plot_predictions(np.zeros((1, 2, 2)), truth, pred)
    assert titles(figure)[2] == f"prediction, Dice {(2 / 3 + 1 + 2 / 3) / 3:.3f}"
    np.testing.assert_array_equal(overlay_alpha(figure.axes[1]) > 0, truth[0] != 0)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["label 1", "label 2"]
    # labels given: label 3 is absent from both maps, so it scores 1 for the image
    figure = plot_predictions(np.zeros((1, 2, 2)), truth, pred, labels=[0, 1, 2, 3])
    assert titles(figure)[2] == f"prediction, Dice {(2 / 3 + 1 + 2 / 3 + 1) / 4:.3f}"
    figure = plot_predictions(np.zeros((1, 2, 2)), truth, pred, class_index=0)
    assert titles(figure)[2] == "prediction, Dice 0.667"
    np.testing.assert_array_equal(overlay_alpha(figure.axes[1]) > 0, truth[0] == 0)


@needs_matplotlib
def test_predictions_n_images_takes_the_first_rows():
    images, truth, pred = binary_case()
    figure = plot_predictions(images, truth, pred, n_images=2)
    assert len(figure.axes) == 6
    assert titles(figure)[5] == "prediction, Dice 1.000"
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match="n_images must be None or an integer from 1 to 3"):
            plot_predictions(images, truth, pred, n_images=bad)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(X=np.zeros((3, 6))), r"X must have shape \(n_images, height, width\)"),
        (dict(X=np.zeros((2, 6, 6))), r"y_true must hold one mask per image of X"),
        (dict(y_pred=np.zeros((3, 6, 5))), r"y_pred must hold one mask per image of X"),
        (dict(y_pred=np.zeros((3, 6, 6, 2))), "y_true and y_pred must have the same shape"),
        (dict(y_pred=np.linspace(0, 1, 108).reshape(3, 6, 6)), "y_pred holds the values"),
        (dict(class_index=1), "class_index must be None or an integer from 0 to 0"),
        (dict(alpha=2), r"alpha must be a number in \[0, 1\]"),
    ],
    ids=["X-2d", "X-fewer-images", "y_pred-size", "y_pred-channels", "probabilities",
         "class_index", "alpha"],
)
def test_predictions_reject_bad_input_with_clear_errors(change, message):
    images, truth, pred = binary_case()
    arguments = {**dict(X=images, y_true=truth, y_pred=pred), **change}
    with pytest.raises(ValueError, match=message):
        plot_predictions(**arguments)


def test_predictions_reject_masks_that_are_not_numbers():
    images, truth, pred = binary_case()
    with pytest.raises(TypeError, match="y_pred must hold boolean or numeric masks; got dtype"):
        plot_predictions(images, truth, pred.astype(str))


# ------------------------------------------------------------------- plot_history
HISTORY = [
    {"epoch": 1, "loss": 0.9, "dice": 0.2, "val_loss": 0.95, "val_dice": 0.1,
     "learning_rate": 1e-3},
    {"epoch": 2, "loss": 0.7, "dice": 0.4, "val_loss": 0.8, "val_dice": 0.35,
     "learning_rate": 1e-3},
    {"epoch": 3, "loss": 0.6, "dice": 0.5, "val_loss": 0.85, "val_dice": 0.3,
     "learning_rate": 5e-4},
]


@needs_matplotlib
def test_history_plots_losses_dice_and_learning_rate_with_the_best_epoch(tmp_path):
    path = tmp_path / "history.png"
    estimator = SimpleNamespace(history_=HISTORY, best_epoch_=2)
    figure = plot_history(estimator, path=path)
    assert titles(figure) == ["loss", "Dice", "learning rate"]
    loss_axes, dice_axes, rate_axes = figure.axes
    for axes, key, label in [(loss_axes, "loss", "training"), (loss_axes, "val_loss", "validation"),
                             (dice_axes, "dice", "training"), (dice_axes, "val_dice", "validation"),
                             (rate_axes, "learning_rate", "learning rate")]:
        np.testing.assert_array_equal(line(axes, label).get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(line(axes, label).get_ydata(), [r[key] for r in HISTORY])
    for axes in figure.axes:
        np.testing.assert_array_equal(line(axes, "best epoch (2)").get_xdata(), [2, 2])
    assert rate_axes.get_yscale() == "log"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


@needs_matplotlib
def test_history_list_without_validation_or_epochs():
    history = [{"loss": 0.5, "dice": 0.1}, {"loss": 0.4, "dice": 0.3}]
    figure = plot_history(history)
    loss_axes, dice_axes, rate_axes = figure.axes
    assert [item.get_label() for item in loss_axes.get_lines()] == ["training"]  # no best epoch
    np.testing.assert_array_equal(line(dice_axes, "training").get_xdata(), [1, 2])
    assert rate_axes.get_lines() == []


@needs_matplotlib
def test_history_draws_into_given_axes():
    from matplotlib.figure import Figure

    figure = Figure()
    axes = figure.subplots(1, 3)
    assert plot_history(HISTORY, ax=axes) is figure
    assert titles(figure) == ["loss", "Dice", "learning rate"]
    with pytest.raises(ValueError, match="ax must be a sequence of 3 matplotlib Axes"):
        plot_history(HISTORY, ax=axes[:2])


def test_history_rejects_what_is_not_a_history():
    from skunetseg import UNetSegmenter

    for bad in (UNetSegmenter(), [], {"loss": [0.5]}, "loss"):
        with pytest.raises(TypeError, match="history_ attribute or a non-empty list of dicts"):
            plot_history(bad)
    with pytest.raises(ValueError, match="none of the keys"):
        plot_history([{"epoch": 1, "accuracy": 0.5}])


@needs_matplotlib
def test_history_of_a_fitted_segmenter(fitted_binary):
    figure = plot_history(fitted_binary)
    history = fitted_binary.history_
    dice_axes = figure.axes[1]
    np.testing.assert_allclose(line(dice_axes, "validation").get_ydata(),
                               [row["val_dice"] for row in history])
    best = fitted_binary.best_epoch_
    np.testing.assert_array_equal(line(dice_axes, f"best epoch ({best})").get_xdata(),
                                  [best, best])


# ------------------------------------------------------------- optional dependency
def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install skunetseg\[plot\]"):
        plot_history(HISTORY)
    images, truth, pred = binary_case()
    with pytest.raises(ImportError, match=r"pip install skunetseg\[plot\]"):
        plot_predictions(images, truth, pred)


def test_importing_plotting_does_not_load_matplotlib():
    code = "import sys, skunetseg, skunetseg.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
