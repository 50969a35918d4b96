"""joblib/pickle and the pickle-free save/load."""

import copy
import json

import joblib
import numpy as np
import pytest
from conftest import predict_in_fresh_process

import skunetseg
from skunetseg import UNetSegmenter


def test_joblib_round_trip_in_a_fresh_process(fitted_binary, binary_data, tmp_path):
    X, _ = binary_data
    proba = predict_in_fresh_process(fitted_binary, X, tmp_path,
                                     tensorflow_loads_lazily=True)["predict_proba"]
    np.testing.assert_allclose(proba, fitted_binary.predict_proba(X), atol=1e-6)


def test_pickle_holds_weights_not_a_keras_model(fitted_binary):
    network = fitted_binary.model_
    state = fitted_binary.__getstate__()
    assert "_model" not in state
    assert all(isinstance(w, np.ndarray) for w in state["_weights"])
    # pickling leaves the estimator itself alone
    assert fitted_binary.model_ is network and "_weights" not in vars(fitted_binary)


def test_unpickled_model_can_be_pickled_again(fitted_binary, binary_data, tmp_path):
    X, _ = binary_data
    joblib.dump(fitted_binary, tmp_path / "a.joblib")
    loaded = joblib.load(tmp_path / "a.joblib")
    joblib.dump(loaded, tmp_path / "b.joblib")  # before its network was rebuilt
    again = joblib.load(tmp_path / "b.joblib")
    np.testing.assert_array_equal(again.predict_proba(X), fitted_binary.predict_proba(X))


def test_save_and_load_without_pickle(fitted_binary, binary_data, tmp_path):
    X, y = binary_data
    path = tmp_path / "saved"
    fitted_binary.save(path)
    assert sorted(p.name for p in path.iterdir()) == ["model.keras", "skunetseg.json"]
    document = json.loads((path / "skunetseg.json").read_text())
    assert document["params"]["backbone"] == fitted_binary.backbone
    loaded = skunetseg.load(path)
    assert isinstance(loaded, UNetSegmenter)
    assert loaded.get_params() == fitted_binary.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted_binary.predict_proba(X))
    assert loaded.history_ == fitted_binary.history_
    assert loaded.score(X, y) == fitted_binary.score(X, y)


def test_save_and_load_keep_input_size_and_per_class_postprocessing(
        fitted_binary, binary_data, tmp_path):
    X, _ = binary_data
    model = copy.copy(fitted_binary).set_params(input_size=(32, 64), threshold=np.array([0.3]),
                                                min_area=[2.0])
    model.save(tmp_path / "saved")
    loaded = skunetseg.load(tmp_path / "saved")
    assert loaded.input_size == (32, 64)
    np.testing.assert_array_equal(loaded.threshold, [0.3])
    np.testing.assert_array_equal(loaded.min_area, [2.0])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_saved_keras_archive_loads_in_keras_safe_mode(fitted_binary, binary_data, tmp_path):
    import keras

    X, _ = binary_data
    fitted_binary.save(tmp_path / "saved")
    # no custom_objects: the skunetseg losses and metrics are registered with Keras
    network = keras.saving.load_model(tmp_path / "saved" / "model.keras", safe_mode=True)
    from skunetseg._images import check_images, pad_to_multiple

    padded = pad_to_multiple(check_images(X[:1]))
    np.testing.assert_allclose(network.predict(padded, verbose=0)[:, :40, :44],
                               fitted_binary.predict_proba(X[:1]), atol=1e-6)


def test_save_never_overwrites_unless_asked(fitted_binary, tmp_path):
    path = tmp_path / "saved"
    path.mkdir()
    (path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted_binary.save(path)
    assert (path / "precious.txt").read_text() == "keep me"
    # overwrite=True replaces a saved model, never a folder of the user's (issue 23)
    with pytest.raises(FileExistsError, match="not a saved skunetseg model"):
        fitted_binary.save(path, overwrite=True)
    assert (path / "precious.txt").read_text() == "keep me"
    model = tmp_path / "model"
    fitted_binary.save(model)
    fitted_binary.save(model, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "saved"]


def test_load_rejects_a_folder_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved skunetseg model"):
        skunetseg.load(tmp_path)


def test_shallow_copy_shares_the_network_deep_copy_does_not(fitted_binary, binary_data):
    import copy

    X, _ = binary_data
    assert copy.copy(fitted_binary).model_ is fitted_binary.model_
    deep = copy.deepcopy(fitted_binary)
    assert deep.model_ is not fitted_binary.model_
    np.testing.assert_array_equal(deep.predict_proba(X), fitted_binary.predict_proba(X))
