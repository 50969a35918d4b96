"""Which precision ``mixed_precision`` picks, and bfloat16 prediction against float32."""

import copy

import numpy as np
import pytest

# (mixed_precision, purpose, GPU, CPU with bfloat16 units) -> dtype policy: the units
# do not change the choice (bfloat16 is opt-in); the rows check that
POLICIES = [
    ("auto", "train", True, False, "mixed_float16"),
    ("auto", "predict", True, True, "mixed_float16"),
    ("auto", "train", False, True, "float32"),
    ("auto", "predict", False, True, "float32"),  # bfloat16 changes masks: opt-in
    ("auto", "predict", False, False, "float32"),
    ("bfloat16", "predict", False, True, "mixed_bfloat16"),
    ("bfloat16", "predict", False, False, "mixed_bfloat16"),
    ("bfloat16", "train", False, True, "float32"),
    ("bfloat16", "train", True, False, "mixed_bfloat16"),
    ("bfloat16", "predict", True, False, "mixed_bfloat16"),
    (False, "predict", False, True, "float32"),
    (False, "predict", True, True, "float32"),
    (True, "train", False, False, "mixed_float16"),
    (True, "predict", True, False, "mixed_float16"),
]


@pytest.mark.parametrize("mixed_precision,purpose,gpu,bf16,expected", POLICIES)
def test_policy_choice(monkeypatch, mixed_precision, purpose, gpu, bf16, expected):
    from skunetseg import _backend, _model

    monkeypatch.setattr(_model, "gpu_available", lambda: gpu)
    monkeypatch.setattr(_backend, "cpu_supports_bfloat16", lambda path=None: bf16)
    assert _model.resolve_mixed_precision(mixed_precision, purpose=purpose) == expected


@pytest.mark.parametrize("flags,expected", [
    ("fpu sse avx2 avx512f", False),
    ("fpu avx512f avx512_bf16 avx512_vnni", True),
    ("fpu amx_bf16 amx_tile amx_int8", True),
])
def test_bfloat16_units_are_read_from_the_cpu_flags(tmp_path, flags, expected):
    from skunetseg._backend import cpu_supports_bfloat16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n"
                       f"processor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_supports_bfloat16(str(cpuinfo)) is expected
    assert cpu_supports_bfloat16(str(tmp_path / "missing")) is False


@pytest.fixture
def cpu_only(monkeypatch):
    """A CPU machine. TensorFlow computes bfloat16 on every x86 CPU (slowly without
    the units), so the numbers can be checked anywhere; only the speed needs them."""
    from skunetseg import _model

    monkeypatch.setattr(_model, "gpu_available", lambda: False)


def test_bfloat16_prediction_matches_float32(fitted_binary, binary_data, cpu_only):
    X, y = binary_data
    exact = copy.copy(fitted_binary)  # shares the network
    assert exact.mixed_precision == "auto"  # float32 on a CPU
    reference = exact.predict_proba(X)
    assert exact._predict_network() is exact.model_

    fast = copy.copy(fitted_binary).set_params(mixed_precision="bfloat16")
    network = fast._predict_network()
    assert network is not fast.model_ and network.layers[1].compute_dtype == "bfloat16"
    proba = fast.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == reference.shape
    # a barely trained network: many probabilities near 0.5, where bfloat16's 8-bit
    # mantissa shows most
    assert np.abs(proba - reference).max() < 0.1
    assert np.abs(proba - reference).mean() < 0.01
    assert not np.array_equal(proba, reference)  # it did compute in bfloat16
    assert np.mean((proba > 0.5) == (reference > 0.5)) > 0.99
    assert fast._predict_network() is network  # built once per trained network
    # the copy follows the trained network's weights
    weights = fast.model_.get_weights()
    fast.model_.set_weights([w * 0 for w in weights])  # every probability 0.5
    try:
        np.testing.assert_array_equal(fast.predict_proba(X), 0.5)
    finally:
        fast.model_.set_weights(weights)


def test_a_float16_network_predicts_in_float32(fitted_binary, binary_data, monkeypatch):
    """A network trained under mixed_float16 (a GPU) predicts in float32 where asked to."""
    from skunetseg import _model

    monkeypatch.setattr(_model, "gpu_available", lambda: False)
    X, _ = binary_data
    half = copy.copy(fitted_binary).set_params(mixed_precision=False)
    half._model = half._build_model(_model, None, policy="mixed_float16")
    half._model.set_weights(fitted_binary.model_.get_weights())
    assert half._predict_network() is not half.model_
    np.testing.assert_array_equal(
        half.predict_proba(X),
        copy.copy(fitted_binary).set_params(mixed_precision=False).predict_proba(X))
