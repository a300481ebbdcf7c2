"""Input scaling folded into the first layer: the folded model on raw inputs is the trained model on
standardized inputs (float64), and its ONNX and C exports take raw inputs too."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from shrinknet.data import datasets
from shrinknet import export
from shrinknet.repair import scaling, train
from shrinknet.workflows.experiments import evaluate, train_on

# (hidden activation, output activation, bias): every activation, with and without bias
SETTINGS = [("sigmoid", "sigmoid", True), ("tanh", "identity", True), ("relu", "sigmoid", False),
            ("softplus", "identity", True)]


def raw_inputs(n=64, d=5, seed=0) -> np.ndarray:
    """Features on very different scales, one constant: what an unscaled user file looks like."""
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, d)) * np.array([1.0, 255.0, 0.01, 3e3, 0.0])[:d] + np.array([0, 128, -5, 1e4, 7.0])[:d]
    return X


@pytest.mark.parametrize("act,out_act,bias", SETTINGS, ids=lambda v: str(v))
def test_folded_model_on_raw_inputs_equals_model_on_standardized_inputs(act, out_act, bias):
    X = raw_inputs()
    mean, std = scaling.fit(X)
    assert std[-1] == 1.0 and mean[-1] == 7.0  # the constant feature: std 1, so it only shifts
    model = train.mlp([5, 6, 4, 3], act, out_act, bias=bias, seed=1, dtype=torch.float64)
    folded = scaling.fold(model, mean, std)
    Z = torch.as_tensor((X - mean) / std)
    torch.testing.assert_close(folded(torch.as_tensor(X)), model(Z), rtol=1e-10, atol=1e-10)
    assert folded[0].bias is not None  # a first layer without bias gains one: b' = -W' mean
    # the layers above the first are untouched
    for a, b in zip(list(model)[1:], list(folded)[1:]):
        assert type(a) is type(b)
        if isinstance(a, torch.nn.Linear):
            assert torch.equal(a.weight, b.weight)


def test_fold_of_identity_scaling_changes_nothing():
    model = train.mlp([5, 6, 3], "sigmoid", seed=0, dtype=torch.float64)
    folded = scaling.fold(model, np.zeros(5), np.ones(5))
    for a, b in zip(model, folded):
        if isinstance(a, torch.nn.Linear):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_fold_refuses_a_scaling_of_the_wrong_width():
    model = train.mlp([5, 6, 3], "sigmoid")
    with pytest.raises(ValueError, match="4 features but the network takes 5"):
        scaling.fold(model, np.zeros(4), np.ones(4))


def test_unscaled_hint():
    assert scaling.unscaled_hint(np.random.default_rng(0).random((20, 3))) is None
    assert scaling.unscaled_hint(np.array([[-10.0, 10.0]])) is None
    assert scaling.unscaled_hint(np.array([[0.0, 255.0]])) == \
        "inputs look unscaled (largest |value| 255); try train --standardize"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A network trained with standardize=True on a file with raw, pixel-like inputs (about 0..300)."""
    g = np.random.default_rng(0)
    y = g.integers(0, 3, 300)
    X = (g.normal(size=(300, 4)) + np.eye(3, 4)[y] * 2.5) * 60 + 120
    path = tmp_path_factory.mktemp("raw") / "raw.npz"
    np.savez(path, X=X, y=y)
    data = datasets.load(path)
    model, meta = train_on(data, (7, 5), epochs=40, standardize=True)
    return data, model, meta


def test_train_on_standardize_records_the_scaling_and_the_model_takes_raw_inputs(trained):
    data, model, meta = trained
    mean, std = scaling.fit(data.inputs("train"))
    assert meta["scaling"]["mean"] == pytest.approx(mean.tolist(), rel=1e-12)
    assert meta["scaling"]["std"] == pytest.approx(std.tolist(), rel=1e-12)
    # metrics are of the folded model on raw inputs, and it learned the task
    assert meta["metrics"] == evaluate(model, data, "mse")
    assert meta["metrics"]["test_accuracy"] > 0.8
    # without standardizing, these inputs (about 0..300) leave sigmoid units saturated at the start
    assert scaling.unscaled_hint(data.inputs("train")) is not None


def test_onnx_export_of_a_folded_model_takes_raw_inputs(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'shrinknet[export]'")
    data, model, _ = trained
    export(model, tmp_path / "m.onnx", format="onnx")
    X = data.inputs("test")
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": X})[0]
    with torch.no_grad():
        want = model(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


C_DRIVER = """\
#include <stdio.h>
#include "m.h"
int main(void)
{
    float in[NET_INPUT_SIZE], out[NET_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        net_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }
    return 0;
}
"""


def test_c_export_of_a_folded_model_takes_raw_inputs(trained, tmp_path):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler: 'cc' is not on PATH")
    data, model, _ = trained
    export(model, tmp_path / "m.c", format="c", prefix="net")
    (tmp_path / "driver.c").write_text(C_DRIVER)
    subprocess.run([cc, "-std=c99", "-O2", "-o", "driver", "driver.c", "m.c", "-lm"], cwd=tmp_path, check=True,
                   capture_output=True)
    X = np.ascontiguousarray(data.inputs("test"), dtype=np.float32)
    out = subprocess.run([str(tmp_path / "driver")], input=X.tobytes(), capture_output=True, check=True).stdout
    got = np.frombuffer(out, dtype=np.float32).reshape(len(X), -1)
    with torch.no_grad():
        want = model(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nearly_constant_feature_is_not_blown_up():
    """A pixel that is 0 but in one image of 1000: its plain std would make that image's value a
    ~32-sigma input; the floor keeps every standardized training value within 1 / STD_FLOOR, and
    leaves ordinary features' std alone."""
    g = np.random.default_rng(0)
    X = np.zeros((1000, 3))
    X[:, 0] = g.normal(size=1000) * 40 + 100  # ordinary feature
    X[7, 1] = 255.0  # nearly constant pixel
    X[:, 2] = 3.0  # constant
    mean, std = scaling.fit(X)
    assert std[0] == pytest.approx(X[:, 0].std(), rel=1e-12)
    assert std[1] == pytest.approx(scaling.STD_FLOOR * 255.0) and X[:, 1].std() < std[1]
    assert std[2] == 1.0
    assert np.abs((X - mean) / std).max() <= 1 / scaling.STD_FLOOR + 1e-9
