"""Foreign model files through the command line (issue #17): ``shrinknet prune model.onnx`` and
``model.tflite``, with everything they do not record asked for at once, the import's notes said, and
a Keras-style NHWC .tflite fed the user's NHWC images as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shrinknet.cli import cli
from shrinknet.model.imports import to_sequential
from shrinknet.ship import modelio, runs

FIXTURES = Path(__file__).parent / "fixtures"


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


class Net(nn.Module):
    """A custom module as users write them (not an nn.Sequential)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 12), nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # outputs centred on the data, so that each of the 3 classes is someone's argmax
        X = 3 * torch.randn(300, 6)
        net.c.bias -= net(X).mean(0)
    torch.onnx.export(net, (X[:1],), str(tmp / "net.onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    with torch.no_grad():
        y = net(X).argmax(1)  # the network's own labels: it starts at accuracy 1
    assert len(set(y.tolist())) == 3
    np.savez(tmp / "data.npz", X=X.numpy(), y=y.numpy())
    return tmp


def test_prune_an_onnx_file_and_export_it_back(onnx_model):
    tmp = onnx_model
    r = run("prune", tmp / "net.onnx", "--data", tmp / "data.npz", "--loss", "cross_entropy", "--max-drop", "2%",
            "--no-analyze", "--export", "onnx", "--out", tmp / "run", "-q")
    assert r.exit_code == 0, r.output
    result = runs.load_run(tmp / "run")["result"]
    assert result.steps[0].accuracy == 1.0  # the file's network, read exactly
    small, meta = modelio.load_model(tmp / "run" / "model.safetensors")
    assert meta["imported"]["file"].endswith("net.onnx")
    X = np.load(tmp / "data.npz")["X"][:20]
    got = ort.InferenceSession(str(tmp / "run" / "model.onnx")).run(None, {"input": X})[0]
    with torch.no_grad():
        want = small(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert meta["data"]["fingerprint"] == runs.load_run(tmp / "run")["extras"]["data"]["fingerprint"]
    r = run("rank", tmp / "run" / "model.safetensors", "--methods", "taylor1", "-q")  # the data is recorded now
    assert r.exit_code == 0, r.output


def test_an_onnx_file_asks_for_everything_it_does_not_record_at_once(onnx_model):
    r = run("prune", onnx_model / "net.onnx", "--max-drop", "2%", "--out", onnx_model / "never")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "give --loss mse|cross_entropy, --data NAME_OR_PATH (or --val FILE)" in lines[0]
    assert "--activation" not in lines[0]  # read from the graph, never asked for
    assert not (onnx_model / "never").exists()


def test_a_foreign_file_with_an_unsupported_graph_gets_one_line(tmp_path):
    r = run("prune", FIXTURES / "residual.tflite", "--data", "digits", "--loss", "mse", "--max-drop", "1%",
            "--out", tmp_path / "out")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ADD" in lines[0], r.stderr


def test_an_nhwc_tflite_reads_the_users_nhwc_images_as_given(tmp_path):
    """keras_cnn.tflite reads (N, 8, 8, 2) images. Targets are its own outputs plus small noise: read in the
    right layout the recorded start error is exactly 1/2 sum(noise^2) (read as NCHW it would be far larger),
    and the saved model keeps the layout for the next command."""
    path = FIXTURES / "keras_cnn.tflite"
    seq = to_sequential(path)
    g = np.random.default_rng(0)
    X = g.normal(size=(200, 8, 8, 2)).astype(np.float32)  # NHWC, as the Keras user has them
    noise = (0.05 * g.normal(size=(200, 3))).astype(np.float32)
    with torch.no_grad():
        y = seq(torch.as_tensor(X).permute(0, 3, 1, 2)).numpy() + noise
    np.savez(tmp_path / "nhwc.npz", X=X, y=y)
    r = run("prune", path, "--data", tmp_path / "nhwc.npz", "--loss", "mse", "--max-drop", "50%",
            "--no-analyze", "--out", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    assert "note: " in r.stderr and "NHWC" in r.stderr  # the import says what it did with the layout
    got = runs.load_run(tmp_path / "run")
    val_rows = got["result"].config["n_val"]
    assert val_rows == 40
    # the validation split's rows are not known here, but every row's error is tiny: bound it by all rows'
    assert got["result"].steps[0].error <= 0.5 * float((noise.astype(np.float64) ** 2).sum()) + 1e-4
    _, meta = modelio.load_model(tmp_path / "run" / "model.safetensors")
    assert meta["imported"]["input_layout"] == "NHWC"
    r = run("rank", tmp_path / "run" / "model.safetensors", "--data", tmp_path / "nhwc.npz", "--methods", "taylor1",
            "--top", "1")
    assert r.exit_code == 0, r.output  # the pruned model file reads the same NHWC data set again
