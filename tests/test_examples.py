"""Run the examples' quick modes on the real data and check what they print."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_data_home

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"(\d+(?:\.\d+)?)"


def run_example(name, *args):
    """Run examples/<name> with the working tree's skunetseg; return its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_quickstart_quick_prints_the_test_dice_and_writes_the_overlay(tmp_path):
    import cv2

    home = shared_data_home()
    if not (home / "membrane").is_dir():
        pytest.skip(f"the membrane data is not in {home}")
    overlay = tmp_path / "overlay.png"
    out = run_example("quickstart.py", "--quick", "--data-home", str(home), "--overlay",
                      str(overlay))
    trained = re.search(r"trained (\d+) epochs in \d+ s \(best epoch (\d+), training Dice "
                        + NUMBER + r"\)", out)
    assert trained and int(trained.group(1)) == 2 and 1 <= int(trained.group(2)) <= 2, out
    test = re.search(r"test Dice, membrane class, 512x512: " + NUMBER +
                     r" \(predicting all membrane: " + NUMBER + r"\)", out)
    assert test and 0 <= float(test.group(1)) <= 1, out
    assert 0.3 < float(test.group(2)) < 0.4
    panel = cv2.imread(str(overlay))
    assert panel.shape == (512, 3 * 512, 3)  # image | truth | prediction


@pytest.mark.slow
def test_cv_grid_search_quick_prints_sane_scores():
    home = shared_data_home()
    if not (home / "membrane").is_dir():
        pytest.skip(f"the membrane data is not in {home}")
    out = run_example("cv_grid_search.py", "--quick", "--data-home", str(home))

    folds = re.search(r"cross_val_score, 2 folds .*Dice per fold \[(.*)\], mean " + NUMBER, out)
    assert folds, out
    fold_scores = [float(value) for value in folds.group(1).split(",")]
    assert len(fold_scores) == 2 and all(0 <= score <= 1 for score in fold_scores)
    assert float(folds.group(2)) == pytest.approx(sum(fold_scores) / 2, abs=1e-3)

    ranks = re.findall(r"rank (\d+): Dice " + NUMBER + r" \+/- " + NUMBER + r"  \{(.*)\}", out)
    order = [int(rank) for rank, *_ in ranks]
    assert len(order) == 2 and order[0] == 1 and order == sorted(order), out  # best first
    losses = {re.search(r"'loss': '(\w+)'", params).group(1) for *_, params in ranks}
    assert losses == {"jaccard", "bce_dice"}
    assert float(ranks[0][1]) >= float(ranks[1][1])
    assert all(0 <= float(mean) <= 1 for _, mean, _, _ in ranks)

    best = re.search(r"best parameters: \{(.*)\}, cross-validated Dice " + NUMBER, out)
    assert best and best.group(1) == ranks[0][3] and best.group(2) == ranks[0][1], out
    test = re.search(r"test Dice of the refitted best model: " + NUMBER +
                     r" \(predicting all membrane: " + NUMBER + r"\)", out)
    assert test, out
    assert 0 <= float(test.group(1)) <= 1
    assert 0.3 < float(test.group(2)) < 0.4  # about 22 % of the pixels are membrane


@pytest.mark.slow
def test_kaggle_style_quick_runs_the_ladder_to_a_submission_of_the_predicted_masks(tmp_path):
    import csv

    import numpy as np

    from skunetseg.io import read_mask
    from skunetseg.rle import rle_decode

    home = shared_data_home()
    if not (home / "tgs-salt").is_dir():
        pytest.skip(f"the TGS salt data is not in {home}")
    out = tmp_path / "out"
    printed = run_example("kaggle_style.py", "--quick", "--data-home", str(home), "--out",
                          str(out))
    assert "training on 24, submitting 8" in printed, printed
    assert re.search(r"ensemble of 2 folds: out-of-fold Dice " + NUMBER + ", tuned "
                     + NUMBER, printed), printed
    held = re.search(r"filter, on (\d+) held-out images: presence threshold " + NUMBER,
                     printed)
    # the filter's held-out maps are the ensemble's out-of-fold maps: every training file
    assert held and int(held.group(1)) == 24 and 0 <= float(held.group(2)) <= 1, printed
    dice = re.search(r"held-out Dice from the files: " + NUMBER, printed)
    assert dice and 0 <= float(dice.group(1)) <= 1, printed

    with open(out / "submission.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["id", "rle_mask"] and len(rows) == 9
    written = sorted(path.stem for path in (out / "masks").iterdir())
    assert sorted(image_id for image_id, _ in rows[1:]) == written
    for image_id, rle in rows[1:]:  # the CSV holds the written masks, at 101x101
        assert (home / "tgs-salt" / "images" / f"{image_id}.png").is_file()
        mask = read_mask(out / "masks" / f"{image_id}.png")
        assert mask.shape == (101, 101) and set(np.unique(mask)) <= {0, 65535}
        np.testing.assert_array_equal(rle_decode(rle, (101, 101)), mask == 65535)
    # the saved ladder, loaded in a fresh process, predicts the masks that were written
    check = ("import sys, skunetseg\n"
             "from skunetseg.io import read_mask\n"
             "model, ids = skunetseg.load(sys.argv[1]), sys.argv[4:]\n"
             "images = [f'{sys.argv[2]}/{i}.png' for i in ids]\n"
             "for i, mask in zip(ids, model.predict(images)):\n"
             "    assert (mask == read_mask(f'{sys.argv[3]}/{i}.png')).all(), i\n"
             "print('same', len(ids))\n")
    loaded = subprocess.run(
        [sys.executable, "-c", check, str(out / "model"), str(home / "tgs-salt" / "images"),
         str(out / "masks"), *[image_id for image_id, _ in rows[1:]]],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert loaded.returncode == 0 and "same 8" in loaded.stdout, loaded.stderr[-2000:]
    before = (out / "submission.csv").read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    again = subprocess.run([sys.executable, str(REPO / "examples" / "kaggle_style.py"), "--quick",
                            "--data-home", str(home), "--out", str(out)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "never overwrites" in again.stderr
    assert (out / "submission.csv").read_bytes() == before
