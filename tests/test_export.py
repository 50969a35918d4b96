"""estimator.export: a SavedModel (and ONNX file) that reproduces predict_proba without skunetseg.

The session's ``fitted_binary`` model (gray uint8 images of 40x44, not a multiple of 32)
is exported as it is, and with ``input_size`` set on a shallow copy (the network is fully
convolutional; ``input_size`` only changes the resizing around it), so no test trains.
"""

import copy
import subprocess
import sys

import numpy as np
import pytest

TOLERANCE = 1e-4

#: Loads SavedModels and serves them in a process that never imports skunetseg.
SERVE = """
import sys
import numpy as np
import tensorflow as tf
x = np.load(sys.argv[1])
for index, path in enumerate(sys.argv[2:]):
    loaded = tf.saved_model.load(path)
    np.save(f"{sys.argv[1]}.{index}.npy", loaded.serve(x).numpy())
assert "skunetseg" not in sys.modules
"""


def serve_in_fresh_process(images, paths, folder):
    np.save(folder / "x.npy", images.astype(np.float32))
    subprocess.run([sys.executable, "-c", SERVE, str(folder / "x.npy"), *map(str, paths)],
                   check=True, timeout=600, cwd=folder)
    return [np.load(folder / f"x.npy.{index}.npy") for index in range(len(paths))]


def resized_copy(model, size):
    twin = copy.copy(model)  # shares the trained network
    twin.input_size = size
    return twin


def test_saved_model_reproduces_predict_proba_in_a_process_without_skunetseg(
        fitted_binary, binary_data, tmp_path):
    X, _ = binary_data
    X = X[:6]
    shrunk = resized_copy(fitted_binary, (27, 30))  # area interpolation, non-integer ratio
    paths = [fitted_binary.export(tmp_path / "plain", input_dtype="uint8"),
             shrunk.export(tmp_path / "shrunk", input_dtype="uint8")]
    served = serve_in_fresh_process(X[..., np.newaxis], paths, tmp_path)
    for model, output in zip((fitted_binary, shrunk), served, strict=True):
        expected = model.predict_proba(X)
        assert output.shape == expected.shape == (6, 40, 44, 1)
        assert output.dtype == np.float32
        assert np.abs(output - expected).max() <= TOLERANCE
    # the resizing really happened: the two exports differ
    assert np.abs(served[0] - served[1]).max() > 1e-3


def test_fold_ensemble_exports_the_mean_of_its_fold_networks(fitted_binary, binary_data,
                                                            tmp_path):
    import tensorflow as tf

    from skunetseg import FoldEnsemble

    other = copy.deepcopy(fitted_binary)  # a network of its own, with other weights
    weights = other.model_.get_weights()
    weights[-1] = weights[-1] + 0.5  # the last bias: other probabilities
    other.model_.set_weights(weights)
    ensemble = FoldEnsemble(cv=2, tune_postprocessing=False)  # put together, not fitted
    ensemble.estimators_ = [fitted_binary, other]
    # floats: predict_proba uses them as they are, and so does an input_dtype float export
    X = binary_data[0][:3].astype(np.float32) / 255
    expected = ensemble.predict_proba(X)
    assert np.abs(expected - fitted_binary.predict_proba(X)).max() > 1e-3
    loaded = tf.saved_model.load(ensemble.export(tmp_path / "folds", input_dtype="float32"))
    output = loaded.serve(X[..., np.newaxis]).numpy()
    assert np.abs(output - expected).max() <= TOLERANCE


def test_export_checks_its_arguments_and_never_overwrites(fitted_binary, tmp_path):
    model = copy.copy(fitted_binary)
    model.__dict__.pop("input_dtype_", None)
    with pytest.raises(ValueError, match="input_dtype"):
        model.export(tmp_path / "m")
    with pytest.raises(ValueError, match="format must be one of"):
        model.export(tmp_path / "m", format="tflite", input_dtype="uint8")
    with pytest.raises(ValueError, match="input_dtype"):
        model.export(tmp_path / "m", input_dtype="text")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.export(existing, input_dtype="uint8")
    assert (existing / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "m").exists()


def test_onnx_export_runs_in_onnxruntime(fitted_binary, binary_data, tmp_path):
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    shrunk = resized_copy(fitted_binary, (27, 30))
    path = shrunk.export(tmp_path / "model.onnx", format="onnx", input_dtype="uint8")
    session = onnxruntime.InferenceSession(path)
    X = binary_data[0][:4]
    (output,) = session.run(None, {session.get_inputs()[0].name:
                                   X[..., np.newaxis].astype(np.float32)})
    assert output.shape == (4, 40, 44, 1)
    assert np.abs(output - shrunk.predict_proba(X)).max() <= TOLERANCE


def test_overwriting_an_export_keeps_a_complete_one_at_every_instant(fitted_binary, tmp_path,
                                                                     monkeypatch):
    """export(overwrite=True) swaps as save does: when the new export is renamed into place
    (where a killed process would stop), the old one is still on disk, whole, under the
    backup name; a folder that is not an export is never replaced."""
    import os

    from skunetseg import _atomic

    path = tmp_path / "served"
    fitted_binary.export(path, input_dtype="uint8")
    old = sorted(os.listdir(path))
    seen, real_replace = [], os.replace

    def replace(source, target):
        if os.fspath(target) == str(path) and "export" in os.path.basename(os.fspath(source)):
            backup = _atomic.backup_path(path)  # the moment of the final rename
            seen.append(os.path.isdir(backup) and sorted(os.listdir(backup)) == old)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    fitted_binary.export(path, input_dtype="uint8", overwrite=True)
    monkeypatch.undo()
    assert seen == [True]
    assert sorted(os.listdir(tmp_path)) == ["served"]  # no backup, no staging folder left
    assert (path / "saved_model.pb").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a TensorFlow SavedModel folder"):
        fitted_binary.export(mine, input_dtype="uint8", overwrite=True)
    assert (mine / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["mine", "served"]
