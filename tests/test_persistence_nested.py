"""save/load without pickle for every estimator, nested in any order (issue 11).

Four networks are trained for the whole module: the ladder
``FalsePositiveFilter(FoldEnsemble(UNetSegmenter, cv=2), classifier=PresenceClassifier,
cv=None)`` (two U-Nets and one classifier) and a features filter over a
``FrozenEstimator`` of one of its fold models (one U-Net for its single fold).
"""

import ast
import copy
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import SMALL, synthetic_images
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import KFold, RepeatedKFold, ShuffleSplit

import skunetseg
from skunetseg import FalsePositiveFilter, FoldEnsemble, PresenceClassifier, UNetSegmenter
from skunetseg.augment import Augmenter
from skunetseg.tta import Dihedral, Shift

REPO = pathlib.Path(__file__).resolve().parents[1]
#: The tta list of the fold models: a D4 name, a shift tuple and a Shift object.
TTA = ["identity", ("shift", 1, -1), Shift(2, 0, mode="circular")]


@pytest.fixture(scope="module")
def data():
    return synthetic_images(n=12, height=32, width=32), synthetic_images(n=6, height=32,
                                                                         width=32, seed=1)


@pytest.fixture(scope="module")
def levels(data):
    """Every level of the two ladders, fitted once: {name: fitted estimator}."""
    import keras

    (X, y), validation = data
    segmenter = UNetSegmenter(**{**SMALL, "augment": Augmenter(vflip_p=0.5, crop_size=(32, 32))},
                              input_size=(32, 32), tta=TTA, threshold=(0.4,), random_state=0)
    ladder = FalsePositiveFilter(
        FoldEnsemble(segmenter, cv=KFold(2, shuffle=True, random_state=0),
                     tune_postprocessing=True, random_state=np.int64(0)),
        classifier=PresenceClassifier("vgg16", input_size=(32, 32), batch_size=4, epochs=1,
                                      loss=keras.losses.BinaryCrossentropy(label_smoothing=0.1),
                                      random_state=0),
        presence_threshold=np.array([0.5]), tune_threshold=True, cv=None,
    ).fit(X, y, validation_data=validation)
    frozen = FalsePositiveFilter(
        FrozenEstimator(ladder.segmenter_.estimators_[0]), classifier="features",
        cv=ShuffleSplit(n_splits=1, test_size=0.5, random_state=0), tune_threshold=True,
    ).fit(X, y)
    return {"UNetSegmenter": ladder.segmenter_.estimators_[0],
            "PresenceClassifier": ladder.classifiers_[0],
            "FoldEnsemble": ladder.segmenter_,
            "FalsePositiveFilter": ladder,
            "features filter over a FrozenEstimator": frozen}


@pytest.fixture(scope="module")
def saved(levels, tmp_path_factory):
    """{name: (folder, loaded estimator)}: each level saved and loaded once."""
    root = tmp_path_factory.mktemp("saved")
    result = {}
    for name, model in levels.items():
        folder = root / name.replace(" ", "-")
        model.save(folder)
        result[name] = folder, skunetseg.load(folder)
    return result


def assert_same_value(loaded, original, where="estimator"):
    """Equal values of the same Python types, recursively (estimators by their params)."""
    assert type(loaded) is type(original), f"{where}: {type(loaded)} != {type(original)}"
    if isinstance(original, BaseEstimator):
        for key, value in original.get_params(deep=False).items():
            assert_same_value(loaded.get_params(deep=False)[key], value, f"{where}.{key}")
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original), where
        for index, (a, b) in enumerate(zip(loaded, original, strict=True)):
            assert_same_value(a, b, f"{where}[{index}]")
    elif isinstance(original, dict):
        assert loaded.keys() == original.keys(), where
        for key in original:
            assert_same_value(loaded[key], original[key], f"{where}[{key!r}]")
    elif isinstance(original, (np.ndarray, np.generic)):
        assert loaded.dtype == original.dtype, where
        np.testing.assert_array_equal(loaded, original, err_msg=where)
    elif hasattr(original, "get_config"):  # a Keras loss
        assert loaded.get_config() == original.get_config(), where
    elif type(original).__module__.startswith("sklearn.model_selection"):
        assert repr(loaded) == repr(original), where
    else:
        assert loaded == original, where


@pytest.mark.parametrize("name", ["UNetSegmenter", "PresenceClassifier", "FoldEnsemble",
                                  "FalsePositiveFilter",
                                  "features filter over a FrozenEstimator"])
def test_every_level_loads_with_its_params_and_predictions(levels, saved, data, name):
    (X, _), _ = data
    model, (folder, loaded) = levels[name], saved[name]
    assert type(loaded) is type(model)
    assert_same_value(loaded, model, name)
    proba = loaded.predict_proba(X)
    assert np.abs(proba - model.predict_proba(X)).max() <= 1e-6
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    document = json.loads((folder / "skunetseg.json").read_text())
    assert document["format_version"] == 2 and document["__type__"] == type(model).__name__
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.joblib"))


def test_the_tree_keeps_its_fitted_state_types_and_shared_objects(levels, saved):
    ladder = saved["FalsePositiveFilter"][1]
    tta = ladder.segmenter.estimator.tta  # the unfitted template's parameter
    assert tta == TTA and isinstance(tta[1], tuple) and isinstance(tta[2], Shift)
    assert isinstance(ladder.segmenter_.estimators_[1].augment, Augmenter)
    assert isinstance(ladder.segmenter_.random_state, np.int64)
    assert ladder.segmenter_.estimators_[0].input_size == (32, 32)
    original = levels["FalsePositiveFilter"]
    assert_same_value(ladder.segmenter_.folds_, original.segmenter_.folds_, "folds_")
    assert_same_value(ladder.presence_thresholds_, original.presence_thresholds_)
    assert ladder.segmenter_.postprocessing_ == original.segmenter_.postprocessing_
    assert_same_value(ladder.encoding_.classes, original.encoding_.classes)
    assert ladder.encoding_.target_type == original.encoding_.target_type
    frozen = saved["features filter over a FrozenEstimator"][1]
    assert frozen.segmenter_ is frozen.segmenter  # one object, saved once
    assert isinstance(frozen.segmenter, FrozenEstimator)
    names = sorted(p.name for p in saved["features filter over a FrozenEstimator"][0].iterdir())
    assert names == ["segmenter.estimator.keras", "skunetseg.json"]


def test_a_fresh_process_loads_the_ladder_and_predicts_the_same(levels, saved, data, tmp_path):
    (X, _), _ = data
    folder = saved["FalsePositiveFilter"][0]
    np.save(tmp_path / "X.npy", X)
    code = ("import sys, numpy as np, skunetseg\n"
            "model = skunetseg.load(sys.argv[1])\n"
            "X = np.load(sys.argv[2] + '/X.npy')\n"
            "np.save(sys.argv[2] + '/proba.npy', model.predict_proba(X))\n"
            "np.save(sys.argv[2] + '/masks.npy', model.predict(X))\n")
    subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path)], check=True,
                   timeout=300, cwd=REPO)
    model = levels["FalsePositiveFilter"]
    assert np.abs(np.load(tmp_path / "proba.npy") - model.predict_proba(X)).max() <= 1e-6
    np.testing.assert_array_equal(np.load(tmp_path / "masks.npy"), model.predict(X))


def test_an_unsaveable_parameter_is_named_by_its_path(levels, tmp_path):
    model = copy.copy(levels["FalsePositiveFilter"])
    model.segmenter = FoldEnsemble(UNetSegmenter(tta=["identity", "hflip", lambda x: x]))
    with pytest.raises(TypeError, match=r"FalsePositiveFilter\.segmenter\.estimator\.tta\[2\] "
                                        r"= <function .*Saveable values: .*Shift"):
        model.save(tmp_path / "model")
    unet = copy.copy(levels["UNetSegmenter"])
    unet.augment = lambda image, mask: {"image": image, "mask": mask}
    with pytest.raises(TypeError, match=r"UNetSegmenter\.augment = "):
        unet.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left


def test_a_nested_archive_that_disagrees_or_is_missing_is_named(saved, tmp_path):
    folder = tmp_path / "folds"
    shutil.copytree(saved["FoldEnsemble"][0], folder)
    document = json.loads((folder / "skunetseg.json").read_text())
    document["fitted"]["estimators_"][1]["fitted"]["n_channels_in_"] = 3
    (folder / "skunetseg.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"estimators_\.1\.keras.* 1 input .* describes 3"):
        skunetseg.load(folder)
    (folder / "estimators_.1.keras").unlink()
    with pytest.raises(FileNotFoundError, match=r"estimators_\.1\.keras is missing"):
        skunetseg.load(folder)


def test_a_class_outside_the_whitelist_is_refused(saved, tmp_path):
    folder = tmp_path / "features"
    shutil.copytree(saved["features filter over a FrozenEstimator"][0], folder)
    document = json.loads((folder / "skunetseg.json").read_text())
    document["params"]["cv"]["__type__"] = "os.system"
    (folder / "skunetseg.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"skunetseg\.json.*'os\.system'.* does not load"):
        skunetseg.load(folder)


def test_a_version_1_folder_still_loads(levels, saved, data, tmp_path):
    (X, _), _ = data
    model = levels["UNetSegmenter"]
    folder = tmp_path / "v1"
    folder.mkdir()
    shutil.copy(saved["UNetSegmenter"][0] / "model.keras", folder)
    params = {**model.get_params(deep=False), "decoder_filters": list(model.decoder_filters),
              "input_size": [32, 32], "threshold": 0.4, "tta": None,
              "augment": {"augmenter": {**model.augment.get_params(), "crop_size": [32, 32]}}}
    fitted = {"target_type": model.target_type_, "classes": model.classes_.tolist(),
              "classes_dtype": model.classes_.dtype.str, "channel_axis": False,
              "n_channels_in": 1, "history": model.history_, "best_epoch": model.best_epoch_,
              "bn_momentum": model.bn_momentum_, "input_dtype": "uint8", "input_range": [0, 255]}
    (folder / "skunetseg.json").write_text(json.dumps(
        {"format_version": 1, "estimator": "UNetSegmenter", "params": params, "fitted": fitted}))
    loaded = skunetseg.load(folder)
    assert loaded.decoder_filters == model.decoder_filters and loaded.augment.crop_size == (32,
                                                                                          32)
    expected = copy.copy(model).set_params(tta=None, threshold=0.4)
    np.testing.assert_array_equal(loaded.predict(X), expected.predict(X))


def test_values_round_trip_through_json_with_their_types():
    from skunetseg._persistence import _Decoder, _Encoder

    values = {"tuple": (1, (2.5, "a"), [np.float32(0.25)]), "int64": np.int64(-3),
              "bool": np.bool_(True), "uint16": np.uint16(7), "nan": float("nan"),
              "small": np.array([[1, 2], [3, 4]], dtype=np.int32),
              "large": np.linspace(0, 1, 500, dtype=np.float32), "inf": np.array([np.inf]),
              "labels": np.array(["a", "bc"]), "int keys": {1: "x", 2: (3,)},
              "path": pathlib.Path("weights") / "enc.h5", "shift": Shift(-1, 2),
              "dihedral": Dihedral("hflip"), "random": np.random.RandomState(3),
              "splitters": [KFold(4, shuffle=True, random_state=1), RepeatedKFold(n_splits=3),
                            ShuffleSplit(1, test_size=0.2)],
              "augmenter": Augmenter(crop_size=(8, 8))}
    encoder = _Encoder()
    text = json.dumps(encoder.encode(values, "values"), allow_nan=False)
    decoder = _Decoder("unused")
    decoder._arrays = dict(encoder.arrays)
    decoded = decoder.decode(json.loads(text), "values")
    random_state = decoded.pop("random")
    assert random_state.randint(1000) == values.pop("random").randint(1000)
    assert np.isnan(decoded.pop("nan")) and isinstance(values.pop("nan"), float)
    assert_same_value(decoded, values, "values")


def _skunetseg_imports(module):
    """The skunetseg modules ``module`` imports, at the top or inside functions."""
    tree = ast.parse((REPO / "skunetseg" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found.update(name.split(".")[0] for name in names)
    return found


def test_the_persistence_module_imports_no_estimator_module():
    """No import cycle: nothing _persistence imports (transitively) imports it back."""
    reached, todo = set(), ["_persistence"]
    while todo:
        for module in _skunetseg_imports(todo.pop()):
            if module not in reached and (REPO / "skunetseg" / f"{module}.py").exists():
                reached.add(module)
                todo.append(module)
    assert "_persistence" not in reached
    assert not reached & {"_segmenter", "_presence", "_ensemble", "_false_positive",
                          "_keras_estimator", "_base"}
    code = ("import sys, skunetseg._persistence as p; "
            "print(sorted(p._ESTIMATORS), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.split("]")[0] == ("['FalsePositiveFilter', 'FoldEnsemble', "
                                        "'PresenceClassifier', 'UNetSegmenter'")
    assert out.stdout.strip().endswith("False")
