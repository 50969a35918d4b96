"""What ``save(overwrite=True)`` may replace, what ``skunetseg.load`` refuses, and the
versions a pickle records (issue 23: "nothing lost, nothing let in").

One saved UNetSegmenter folder (the session's ``fitted_binary``) is copied per test and
edited the way a hostile or damaged folder would be.
"""

import json
import os
import pickle
import shutil
import threading
import warnings

import pytest

import skunetseg
from skunetseg import _atomic, _persistence
from skunetseg._persistence import PARAMS_FILE


@pytest.fixture(scope="module")
def saved(fitted_binary, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    fitted_binary.save(folder)
    return folder


@pytest.fixture
def model_dir(saved, tmp_path):
    """A fresh copy of the saved folder, with its JSON as ``(folder, document)``."""
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    with open(folder / PARAMS_FILE, encoding="utf-8") as file:
        return folder, json.load(file)


def write_document(folder, document):
    with open(folder / PARAMS_FILE, "w", encoding="utf-8") as file:
        json.dump(document, file)


def assert_refused(folder, *words):
    with pytest.raises(ValueError, match="not a loadable skunetseg model") as caught:
        skunetseg.load(folder)
    for word in words:
        assert word in str(caught.value)
    return caught.value


# ------------------------------------------------------- 1. overwrite replaces a model only
def user_folder(root):
    folder = root / "victim"
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "data" / "labels.csv").write_text("id,label\n1,2\n")
    return folder


def test_overwrite_refuses_a_folder_that_is_not_a_saved_model(fitted_binary, tmp_path):
    victim = user_folder(tmp_path)
    with pytest.raises(FileExistsError, match="not a saved skunetseg model") as caught:
        fitted_binary.save(victim, overwrite=True)
    assert str(victim) in str(caught.value) and len(str(caught.value).splitlines()) == 1
    assert (victim / "notes.txt").read_text() == "my notes"
    assert (victim / "data" / "labels.csv").exists()
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    with pytest.raises(FileExistsError, match="a file, not a saved skunetseg model"):
        fitted_binary.save(a_file, overwrite=True)
    assert a_file.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "victim"]  # no staging left


def test_overwrite_refuses_a_model_folder_holding_other_files(model_dir, fitted_binary):
    folder, _ = model_dir
    (folder / "history.csv").write_text("epoch\n1\n")  # skunetseg fit's: replaced with it
    fitted_binary.save(folder, overwrite=True)
    (folder / "my-results.xlsx").write_text("not the model's")
    with pytest.raises(FileExistsError, match="holds other files.*my-results.xlsx"):
        fitted_binary.save(folder, overwrite=True)
    assert (folder / "my-results.xlsx").exists()


# ---------------------------------------------- 5. files named by the JSON stay inside
@pytest.mark.parametrize("where", ["parent", "absolute", "nested"])
def test_network_archives_outside_the_folder_are_refused(model_dir, where):
    folder, document = model_dir
    other = folder.parent / "other"
    other.mkdir()
    shutil.copy(folder / "model.keras", other / "model.keras")
    os.remove(folder / "model.keras")
    name = str(other / "model.keras") if where == "absolute" else "../other/model.keras"
    document["networks"] = {"model": name}
    if where == "nested":  # a fold model of an ensemble
        member = {key: value for key, value in document.items() if key != "format_version"}
        document = {"format_version": 2, "__type__": "FoldEnsemble", "params": {},
                    "fitted": {"estimators_": [member]}}
    write_document(folder, document)
    assert_refused(folder, "not a file inside the folder", repr(name))


# ------------------------------------------------------ 6. links that leave the folder
@pytest.mark.parametrize("name", ["model.keras", PARAMS_FILE, "arrays.npz"])
def test_symbolic_links_leading_out_of_the_folder_are_refused(model_dir, name):
    import numpy as np

    folder, document = model_dir
    if name == "arrays.npz":  # a fitted array stored in arrays.npz
        np.savez(folder / name, a0=np.arange(100))
        document["fitted"]["extra_"] = {"__type__": "ndarray", "npz": "a0"}
        write_document(folder, document)
    outside = folder.parent / f"outside-{name}"
    shutil.move(folder / name, outside)
    os.symlink(outside, folder / name)
    assert_refused(folder, "symbolic link leading out of the folder", repr(str(folder / name)))
    # a link inside the folder is fine
    os.remove(folder / name)
    shutil.move(outside, folder / f"real-{name}")
    os.symlink(f"real-{name}", folder / name)
    assert skunetseg.load(folder).target_type_ == "binary"


# ------------------------------------------------- 7. losses: Keras' and skunetseg's only
LOSSES = {
    "os.system": {"module": "os", "class_name": "function", "config": "system",
                  "registered_name": "function"},
    "builtins.eval": {"module": "builtins", "class_name": "function", "config": "eval",
                      "registered_name": "function"},
    "subprocess.Popen": {"module": "subprocess", "class_name": "Popen", "config": {},
                         "registered_name": None},
    "keras.utils.get_file": {"module": "keras.utils", "class_name": "function",
                             "config": "get_file", "registered_name": "function"},
    "a user module": {"module": "my_losses", "class_name": "MyLoss", "config": {},
                      "registered_name": "my_package>MyLoss"},
    "a lambda": {"module": "builtins", "class_name": "__lambda__",
                 "config": {"code": "4wEAAAAAAAAA", "defaults": None, "closure": None},
                 "registered_name": None},
    "nested in a combined loss": {
        "module": "skunetseg.losses", "class_name": "CombinedLoss",
        "config": {"name": "x", "reduction": "sum_over_batch_size", "weights": [1.0],
                   "losses": [{"module": "os", "class_name": "function", "config": "system",
                               "registered_name": "function"}]},
        "registered_name": "skunetseg>CombinedLoss"},
}


@pytest.mark.parametrize("name", LOSSES)
def test_losses_outside_keras_and_skunetseg_are_refused(model_dir, name):
    folder, document = model_dir
    document["params"]["loss"] = {"__type__": "keras_loss", "config": LOSSES[name]}
    write_document(folder, document)
    assert_refused(folder, repr(str(folder / PARAMS_FILE)), "UNetSegmenter.loss",
                   "not one of Keras' built-in losses")


def test_keras_and_skunetseg_losses_still_load(model_dir):
    import keras

    from skunetseg.losses import DiceLoss

    folder, document = model_dir
    for loss in (keras.losses.binary_crossentropy, keras.losses.BinaryCrossentropy(),
                 keras.losses.BinaryCrossentropy() + 0.5 * DiceLoss()):
        document["params"]["loss"] = {"__type__": "keras_loss",
                                      "config": keras.losses.serialize(loss)}
        write_document(folder, document)
        loaded = skunetseg.load(folder).loss
        assert keras.losses.serialize(loaded) == keras.losses.serialize(loss)


# --------------------------------------------- 8. every garbled JSON: the same ValueError
def test_a_document_nested_too_deep_is_refused(model_dir):
    folder, _ = model_dir
    depth = 200_000
    (folder / PARAMS_FILE).write_text('{"format_version": 2, "params": ' + "[" * depth
                                      + "]" * depth + "}")
    assert_refused(folder, repr(str(folder / PARAMS_FILE)))


def test_a_malformed_format_1_document_is_refused(model_dir):
    folder, _ = model_dir
    write_document(folder, {"format_version": 1, "estimator": "UNetSegmenter",
                            "params": {"augment": {"something": 1}}, "fitted": {}})
    assert_refused(folder, repr(str(folder / PARAMS_FILE)))


def test_an_albumentations_entry_naming_an_abstract_transform_is_refused(model_dir):
    import albumentations

    folder, document = model_dir
    document["params"]["augment"] = {"__type__": "albumentations", "config": {
        "__version__": albumentations.__version__,
        "transform": {"__class_fullname__": "BasicTransform", "p": 0.5}}}
    write_document(folder, document)
    assert_refused(folder, repr(str(folder / PARAMS_FILE)), "UNetSegmenter.augment")


# ------------------------------------------------------------- 9. concurrent saves
def test_concurrent_overwriting_saves_take_turns(saved, fitted_binary, tmp_path, monkeypatch):
    """A second save(overwrite=True) starts while the first is between its two renames:
    it waits for the first (a lock), and both complete."""
    path = tmp_path / "model"
    shutil.copytree(saved, path)
    real_replace, errors, second = os.replace, [], []
    main = threading.current_thread()

    def save_again():
        try:
            fitted_binary.save(path, overwrite=True)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def replace(source, target):
        real_replace(source, target)
        if (threading.current_thread() is main and not second
                and os.fspath(target) == _atomic.backup_path(path)):
            second.append(threading.Thread(target=save_again))
            second[0].start()
            second[0].join(timeout=5)  # on a lock, the second save waits for this one

    monkeypatch.setattr(_atomic.os, "replace", replace)
    fitted_binary.save(path, overwrite=True)
    second[0].join()
    assert errors == []
    assert skunetseg.load(path).target_type_ == "binary"
    assert os.listdir(tmp_path) == ["model"]  # no backup, no staging folder left


def test_a_save_racing_a_save_to_a_new_path_says_so(fitted_binary, tmp_path, monkeypatch):
    path = tmp_path / "model"
    real = _atomic.replace_folder

    def another_process_saves_first(staging, target, **kwargs):
        monkeypatch.setattr(_persistence._atomic, "replace_folder", real)
        fitted_binary.save(path)  # the other process wins the race
        return real(staging, target, **kwargs)

    monkeypatch.setattr(_persistence._atomic, "replace_folder", another_process_saves_first)
    with pytest.raises(FileExistsError, match="created by another process"):
        fitted_binary.save(path)
    assert skunetseg.load(path).target_type_ == "binary"
    assert os.listdir(tmp_path) == ["model"]


# ------------------------------------------------------ 10. pickles record versions
def test_pickles_record_versions_and_warn_under_others(fitted_binary, monkeypatch):
    data = pickle.dumps(fitted_binary)
    with warnings.catch_warnings():  # the same versions: no warning
        warnings.simplefilter("error", skunetseg.InconsistentVersionWarning)
        pickle.loads(data)
    state = fitted_binary.__getstate__()
    assert state["_skunetseg_versions"] == _persistence.current_versions()
    assert set(state["_skunetseg_versions"]) == {"skunetseg", "scikit-learn", "keras"}
    newer = {**_persistence.current_versions(), "keras": "99.0.0"}
    monkeypatch.setattr(_persistence, "current_versions", lambda: newer)
    with pytest.warns(skunetseg.InconsistentVersionWarning, match="keras 99.0.0") as caught:
        loaded = pickle.loads(data)
    assert caught[0].message.estimator_name == "UNetSegmenter"
    assert loaded.n_classes_ == fitted_binary.n_classes_

