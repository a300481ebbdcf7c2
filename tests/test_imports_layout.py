"""A .tflite written by litert-torch from a PyTorch CNN reads NCHW images (its first op transposes them to
NHWC): pruned and exported, shrinknet's network reads the very same NCHW arrays (issue #17: "the pruned
network keeps the file's input layout, so a user feeds it exactly what they fed the original")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinknet.cli import cli
from shrinknet.model.imports import to_sequential
from shrinknet.ship import modelio, runs

pytest.importorskip("tflite")
FIXTURES = Path(__file__).parent / "fixtures"


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def interpret(path: Path, X: np.ndarray) -> np.ndarray:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    assert tuple(i["shape"][1:]) == X.shape[1:]  # the file itself reads these NCHW instances
    out = []
    for x in X:
        it.set_tensor(i["index"], x[None])
        it.invoke()
        out.append(it.get_tensor(o["index"])[0].copy())
    return np.stack(out)


@pytest.fixture(scope="module")
def nchw_run(tmp_path_factory):
    """cnn.tflite (litert-torch, input (1, 2, 8, 8)) pruned from the command line on NCHW images whose
    targets are the file's own outputs (its runtime's) plus small noise, exported to ONNX."""
    ort = pytest.importorskip("onnxruntime")
    tmp = tmp_path_factory.mktemp("nchw")
    g = np.random.default_rng(1)
    X = g.normal(size=(200, 2, 8, 8)).astype(np.float32)  # NCHW, as the PyTorch user has them
    noise = (0.05 * g.normal(size=(200, 3))).astype(np.float32)
    y = interpret(FIXTURES / "cnn.tflite", X) + noise
    np.savez(tmp / "nchw.npz", X=X, y=y)
    r = run("prune", FIXTURES / "cnn.tflite", "--data", tmp / "nchw.npz", "--loss", "mse", "--max-drop", "50%",
            "--no-analyze", "--export", "onnx", "--out", tmp / "run", "-q")
    assert r.exit_code == 0, r.output
    return tmp, X, noise, ort


def test_the_pruned_litert_cnn_reads_the_same_nchw_images(nchw_run):
    tmp, X, noise, ort = nchw_run
    got = runs.load_run(tmp / "run")
    # read in the file's NCHW layout, the start error is 1/2 sum(noise^2) over the validation rows; read as
    # NHWC (or with the channels mixed up) it would be the size of the outputs themselves
    assert got["result"].steps[0].error <= 0.5 * float((noise.astype(np.float64) ** 2).sum()) + 1e-4
    assert len(got["result"].steps) > 1  # something was pruned
    small, meta = modelio.load_model(tmp / "run" / "model.safetensors")
    assert meta["imported"]["input_layout"] == "NCHW"
    sess = ort.InferenceSession(str(tmp / "run" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [2, 8, 8]  # the export reads (N, 2, 8, 8) too
    with torch.no_grad():
        want = small(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: X})[0], want, rtol=1e-5, atol=1e-5)


def test_the_pruned_model_file_ranks_the_same_nchw_data_again(nchw_run):
    tmp, *_ = nchw_run
    r = run("rank", tmp / "run" / "model.safetensors", "--data", tmp / "nchw.npz", "--methods", "taylor1", "--top", "1")
    assert r.exit_code == 0, r.output


def test_unpruned_import_equals_the_file_on_nchw_images():
    """The import itself: to_sequential's network on the NCHW arrays = the file's runtime (no permutation)."""
    seq = to_sequential(FIXTURES / "cnn.tflite")
    X = np.random.default_rng(2).normal(size=(10, 2, 8, 8)).astype(np.float32)
    assert seq.shrinknet_input_layout == "NCHW"
    with torch.no_grad():
        mine = seq(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(mine, interpret(FIXTURES / "cnn.tflite", X), atol=1e-5, rtol=0)


@pytest.mark.parametrize("integer", [False, True], ids=["float32", "full-int8"])
def test_the_pruned_litert_cnn_exports_a_tflite_that_reads_nchw(nchw_run, integer):
    """tflite_model(..., input_layout="NCHW"): the pruned network's .tflite reads the same (1, 2, 8, 8) arrays
    as the litert-torch original. TFLM on it equals torch (float32, 1e-5) or the integer reference (exactly);
    the importer reads it back as an NCHW file; the default (NHWC) export needs the permuted arrays."""
    pytest.importorskip("tflite_micro")
    from shrinknet.model.imports.tflite import from_bytes
    from shrinknet.ship.tflite import run_tflm, tflite_model, to_tflite_input
    from shrinknet.store.integer import quantize_network

    tmp, X, _, _ = nchw_run
    small, _ = modelio.load_model(tmp / "run" / "model.safetensors")
    X = X[:8]
    if integer:
        inet = quantize_network(small, torch.from_numpy(X), calibration_name="the test's images")
        q = inet.quantize_input(torch.from_numpy(X))
        want, data, x_in = inet.forward(q).numpy(), tflite_model(inet, input_layout="NCHW"), q.numpy()
        nhwc = tflite_model(inet)
    else:
        with torch.no_grad():
            want = small(torch.from_numpy(X)).numpy()
        data, x_in, nhwc = tflite_model(small, input_layout="NCHW"), X, tflite_model(small)
    got, _ = run_tflm(data, x_in)
    if integer:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(run_tflm(nhwc, to_tflite_input(x_in, (2, 8, 8)))[0], got)  # same network
    if not integer:
        back = from_bytes(data)
        assert back.shrinknet_input_layout == "NCHW"
        with torch.no_grad():
            np.testing.assert_allclose(back(torch.from_numpy(X)).numpy(), want, atol=1e-5, rtol=0)


def test_input_layout_refused_for_an_mlp_and_an_unknown_name():
    from shrinknet.errors import InputError
    from shrinknet.ship.tflite import tflite_model

    seq = to_sequential(FIXTURES / "mlp.tflite")
    assert tflite_model(seq, input_layout="NCHW") == tflite_model(seq)  # rows: nothing to transpose
    with pytest.raises(InputError, match="NHWC .* or NCHW"):
        tflite_model(seq, input_layout="CHW")


# -- Keras models written by TensorFlow's own converter (tests/fixtures/make_keras_tflite.py) --
@pytest.mark.parametrize("name,shape", [("tf_keras_mlp", (6,)), ("tf_keras_cnn", (8, 8, 2))])
def test_a_keras_tflite_reads_as_written(name, shape):
    """Keras' Flatten makes TensorFlow's converter compute the RESHAPE's shape from the input (SHAPE ->
    STRIDED_SLICE -> PACK): read as the flatten it is. Equal to the file's runtime on the user's (NHWC)
    data to 1e-5, and exactly the weights of the torch model they were copied from (tflite_models)."""
    import sys

    sys.path.insert(0, str(FIXTURES))
    import tflite_models

    from shrinknet.model.imports import notes_of, to_model_layout

    seq = to_sequential(FIXTURES / f"{name}.tflite")
    assert seq.shrinknet_input_layout == ("NHWC" if len(shape) == 3 else "flat")
    X = np.random.default_rng(4).normal(size=(12, *shape)).astype(np.float32)
    with torch.no_grad():
        mine = seq(to_model_layout(seq, torch.from_numpy(X)))
    if any("SOFTMAX taken off" in n for n in notes_of(seq)):
        mine = torch.softmax(mine, -1)
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(FIXTURES / f"{name}.tflite"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    theirs = []
    for x in X:
        it.set_tensor(i["index"], x[None])
        it.invoke()
        theirs.append(it.get_tensor(o["index"])[0].copy())
    np.testing.assert_allclose(mine.numpy(), np.stack(theirs), atol=1e-5, rtol=0)
    twin = tflite_models.build(name.removeprefix("tf_keras_")).twin()
    got, want = list(seq.parameters()), list(twin.parameters())
    assert len(got) == len(want) and all(torch.equal(a.detach(), b.detach()) for a, b in zip(got, want))


def test_export_tflite_of_the_pruned_litert_cnn_keeps_its_nchw_input(nchw_run):
    """The command line's .tflite export of a network imported from an NCHW file reads the same (1, 2, 8, 8)
    arrays (the model file records imported.input_layout): TFLM on it equals torch to 1e-5."""
    pytest.importorskip("tflite_micro")
    from shrinknet.ship.tflite import run_tflm

    tmp, X, _, _ = nchw_run
    r = run("export", tmp / "run" / "model.safetensors", "--format", "tflite", "--out", tmp / "m.tflite")
    assert r.exit_code == 0, r.output
    small, _ = modelio.load_model(tmp / "run" / "model.safetensors")
    with torch.no_grad():
        want = small(torch.from_numpy(X[:8])).numpy()
    np.testing.assert_allclose(run_tflm((tmp / "m.tflite").read_bytes(), X[:8])[0], want, atol=1e-5, rtol=0)
