""".tflite files written by the official converter (litert-torch) -> nn.Sequential.

The fixtures are committed (tests/fixtures/README.md says how make_tflite.py made them); their PyTorch
sources are rebuilt here from tests/fixtures/tflite_models.py. Checked: the imported Sequential equals
the file's own runtime (ai-edge-litert's interpreter) to 1e-5, a float32 file gives exactly the weights
of its source (so pruning it equals pruning the hand-built twin bit for bit), int8/float16 weights are
dequantized and said so, and refusals and damaged files are one InputError line.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import shrinknet
from helpers import damaged_outcomes
from shrinknet import PruneConfig
from shrinknet.errors import InputError
from shrinknet.model.imports import notes_of, to_model_layout, to_sequential

pytest.importorskip("tflite")
FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import tflite_models  # noqa: E402

QUIET = PruneConfig(progress=False, start_check="skip")  # random untrained networks
CHAINS = ["mlp", "cnn", "cnn1", "keras_cnn", "padded"]
FILES = [f"{n}{q}" for n in CHAINS for q in ("", "_int8", "_f16") if (FIXTURES / f"{n}{q}.tflite").exists()]


def example(name: str, n: int = 12) -> torch.Tensor:
    """Data as the file reads it (NHWC images for keras_cnn)."""
    shape = tflite_models.MODELS[name][2][1:]
    X = torch.randn(n, *shape, generator=torch.Generator().manual_seed(3))
    return X.permute(0, 2, 3, 1).contiguous() if name.startswith("keras") else X


def interpret(path: Path, X: np.ndarray) -> np.ndarray:
    """The file's own runtime, one instance at a time (the converter fixed the batch at 1)."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for x in X:
        it.set_tensor(i["index"], x[None].astype(np.float32))
        it.invoke()
        out.append(it.get_tensor(o["index"])[0].copy())
    return np.stack(out)


def forward(seq: nn.Sequential, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = seq(to_model_layout(seq, X))
    return torch.softmax(y, -1) if any("SOFTMAX taken off" in s for s in notes_of(seq)) else y


@pytest.mark.parametrize("file", FILES)
def test_tflite_matches_interpreter(file):
    name = file.split("_int8")[0].split("_f16")[0]
    seq = to_sequential(FIXTURES / f"{file}.tflite")
    X = example(name)
    np.testing.assert_allclose(forward(seq, X).numpy(), interpret(FIXTURES / f"{file}.tflite", X.numpy()),
                               atol=1e-5, rtol=0)
    notes = " ".join(notes_of(seq))
    assert ("int8 weights dequantized" in notes) == file.endswith("_int8")
    assert ("float16 weights" in notes) == file.endswith("_f16")
    assert ("SOFTMAX taken off" in notes) == (name == "mlp")
    assert seq.shrinknet_input_layout == ("NHWC" if name.startswith("keras") else "flat" if name == "mlp" else "NCHW")


@pytest.mark.parametrize("name", CHAINS)
def test_tflite_float32_is_its_source_and_prunes_like_twin(name):
    seq = to_sequential(FIXTURES / f"{name}.tflite")
    twin = tflite_models.build(name).twin()
    got = [p.detach() for p in seq.parameters()]
    want = [p.detach() for p in twin.parameters()]
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))  # exact: only permuted
    X = example(name)
    Xs = to_model_layout(seq, X)
    T = torch.randn(len(X), 3 if name != "cnn1" else 2, generator=torch.Generator().manual_seed(5))
    kw = dict(method="brute_force", algorithm="iterative", config=QUIET)
    a = [dataclasses.asdict(s) for s in shrinknet.prune(seq, Xs, T, **kw).steps]
    b = [dataclasses.asdict(s) for s in shrinknet.prune(twin, Xs, T, **kw).steps]
    assert a == b


@pytest.mark.parametrize("file", [f for f in FILES if "_" in f.replace("keras_", "")])
def test_tflite_quantized_weights_near_source(file):
    """Dequantized int8 (per-channel scale: error <= scale / 2) and float16 weights stay near the source's."""
    name = file.rsplit("_", 1)[0]
    seq = to_sequential(FIXTURES / f"{file}.tflite")
    pairs = list(zip(seq.parameters(), tflite_models.build(name).twin().parameters()))
    assert len(pairs) == len(list(seq.parameters()))
    for a, b in pairs:
        a, b = a.detach(), b.detach()
        if a.ndim < 2:
            continue
        dims = tuple(range(1, b.ndim))
        err, top = (a - b).abs().amax(dim=dims), b.abs().amax(dim=dims)
        bound = top / 127 / 2 * 1.01 + 1e-7 if "int8" in file else top * 2**-11 + 1e-7  # half a step
        assert torch.all(err <= bound), (err, bound)


@pytest.mark.parametrize("file,words", [("residual", ["ADD", "two activations"]), ("exp", ["EXP", "not supported"])])
def test_tflite_refusals_one_line(file, words):
    with pytest.raises(InputError) as e:
        to_sequential(FIXTURES / f"{file}.tflite")
    msg = str(e.value)
    assert "\n" not in msg and f"{file}.tflite" in msg
    for w in words:
        assert w in msg


def _shape_vector_pos(buf: bytes, tensor: int) -> int:
    import tflite

    t = tflite.Model.GetRootAsModel(buf, 0).Subgraphs(0).Tensors(tensor)
    return t._tab.Vector(t._tab.Offset(4))  # Tensor.shape: field 0


def test_tflite_forged_shape_refused_without_allocating(tmp_path):
    buf = bytearray((FIXTURES / "cnn.tflite").read_bytes())
    import tflite

    m = tflite.Model.GetRootAsModel(bytes(buf), 0)
    g = m.Subgraphs(0)
    k = next(i for i in range(g.TensorsLength())  # a conv kernel: 4-D, with data
             if g.Tensors(i).ShapeLength() == 4 and m.Buffers(g.Tensors(i).Buffer()).DataLength())
    pos = _shape_vector_pos(bytes(buf), k)
    buf[pos: pos + 4] = (2**30).to_bytes(4, "little")  # 2^30 x ... values declared, a few hundred bytes held
    path = tmp_path / "forged.tflite"
    path.write_bytes(bytes(buf))
    with pytest.raises(InputError, match="declares shape"):
        to_sequential(path)


@pytest.mark.parametrize("file", ["mlp", "cnn_int8"])
def test_tflite_damaged_bytes_never_crash(file, tmp_path):
    """Truncations and random byte flips: a Sequential or one InputError line, nothing else."""
    data = (FIXTURES / f"{file}.tflite").read_bytes()
    rng = np.random.RandomState(0)
    assert "InputError" in damaged_outcomes(data, tmp_path / "bad.tflite", 60, rng)


def test_not_a_tflite_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="TFL3"):
        to_sequential(path)


# -- shrinknet's own .tflite exports (ship/tflite.py: NHWC input, columns in (h, w, c) order) come back in --
OWN = ["mlp-tanh-bn", "mlp-relu6", "mlp-image-input", "cnn2d-relu-max-view-bn", "cnn2d-tanh-avg-flatten-reshapein",
       "cnn2d-sigmoid-global-torch", "cnn1d-relu6-max-torch", "cnn2d-strided-padded", "matmul-add"]


@pytest.mark.parametrize("name", OWN)
def test_own_tflite_export_reimports(name):
    """Equal to TFLM's run of the file to 1e-5; where the file keeps torch's layers one for one, the very
    weights of the exported network and the same pruning bit for bit. (A 1-D CNN comes back as a 2-D one
    over (C, 1, L), a global average as an average pool over the whole map, a missing bias as zeros: the
    same function, other float arithmetic.)"""
    pytest.importorskip("tflite_micro")
    import test_imports as onnx_grid

    from shrinknet.ship.tflite import run_tflm, tflite_model, to_tflite_input

    m, X = onnx_grid.build(name)
    X = X.reshape(len(X), *m.in_shape) if getattr(m, "reshape_input", False) else X
    net = shrinknet.as_net(m.twin())
    Xs = net.prepare_input(X)
    data = tflite_model(net)
    seq = from_file_bytes(data)
    xin = torch.from_numpy(to_tflite_input(Xs.numpy(), net.in_shape).astype(np.float32))
    Xi = to_model_layout(seq, xin)
    with torch.no_grad():
        mine = seq(Xi).numpy()
    np.testing.assert_allclose(mine, run_tflm(data, xin.numpy())[0], atol=1e-5, rtol=0)
    folded = net.to_sequential()  # what the file holds: BatchNorm folded; the importer undoes the column order
    T = torch.randn(len(X), 3, generator=torch.Generator().manual_seed(5))
    kw = dict(method="brute_force", algorithm="iterative", config=QUIET)
    a = [dataclasses.asdict(s) for s in shrinknet.prune(seq, Xi, T, **kw).steps]
    b = [dataclasses.asdict(s) for s in shrinknet.prune(folded, Xs, T, **kw).steps]
    def layers(s):
        return [(type(x), getattr(x, "weight", torch.empty(0)).shape, getattr(x, "bias", None) is None) for x in s]

    same = layers(seq) == layers(folded)
    if same:
        assert all(torch.equal(p, q) for p, q in zip(seq.parameters(), folded.parameters()))
        assert a == b
    else:
        assert name in ("cnn2d-sigmoid-global-torch", "cnn1d-relu6-max-torch", "matmul-add")
        assert a[0]["error"] == pytest.approx(b[0]["error"], rel=1e-5)


def from_file_bytes(data: bytes) -> nn.Sequential:
    from shrinknet.model.imports.tflite import from_bytes

    return from_bytes(data)
