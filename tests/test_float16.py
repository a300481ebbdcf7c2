"""Storage round trips (``quantize.stored``), and float16 runs recording the network the device runs.

Slow twins: numpy's float16 conversion for the round trip; the stored (+ refit) network rebuilt
literally from plain torch modules (``test_cnn_int8.literal_stored``: shrink, solve each refit
layer by an independent least-squares solve, round its parameters, feed the next) in float64;
recorded errors re-evaluated on ``network(k)`` with plain torch; the float16 ONNX export run in
onnxruntime and the C export compiled and run, both beside torch running ``network(k)``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import shrinknet
from shrinknet.repair import retrain
from shrinknet.store.memory import network_bytes
from shrinknet.store.quantize import stored
from shrinknet.repair.refit import Refitter
from shrinknet.model.surgery import shrink

import cnn_helpers
import helpers
from test_cnn_export import WEIGHTED, per_channel_int8
from test_cnn_int8 import literal_stored
from test_export import compile_and_run, stream_driver
from test_refit import masks_for

# -- the round trip of every storage dtype ------------------------------------------------------
STORAGES = ("float16", "int8", "float32", "float64")


def numpy_float16(t: torch.Tensor) -> torch.Tensor:
    """Slow twin of the float16 round trip: numpy's IEEE binary16 conversion and back."""
    return torch.from_numpy(t.detach().numpy().astype(np.float16).astype(t.detach().numpy().dtype))


def literal_store(storage: str):
    """module -> None: the module's weight and bias rounded in place as ``storage`` stores them, literally."""
    def store(m: nn.Module) -> None:
        if storage == "float16":
            m.weight.copy_(numpy_float16(m.weight))
            if m.bias is not None:
                m.bias.copy_(numpy_float16(m.bias))
        elif storage == "int8":  # weights per output unit, biases as they are
            m.weight.copy_(per_channel_int8(m.weight))
    return store


def representable(t: torch.Tensor, storage: str) -> bool:
    """Whether storing ``t`` at ``storage`` gives back exactly ``t`` (checked literally)."""
    return torch.equal(numpy_float16(t), t) if storage == "float16" else torch.equal(per_channel_int8(t), t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("storage", STORAGES)
def test_stored_round_trip_of_weights_and_biases(storage, dtype):
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(4, 3, 2, generator=g) * torch.tensor([1e-3, 1.0, 30.0, 7e3]).view(4, 1, 1)).to(dtype)
    b = (torch.randn(4, generator=g) * 3).to(dtype)
    sw, sb = stored(W, storage), stored(b, storage, weight=False)
    assert sw.dtype == dtype and sb.dtype == dtype  # the arithmetic keeps the network's dtype
    want_w = {"float16": numpy_float16(W), "int8": per_channel_int8(W)}.get(storage, W)
    want_b = numpy_float16(b) if storage == "float16" else b
    assert torch.equal(sw, want_w) and torch.equal(sb, want_b)
    assert torch.equal(stored(sw, storage), sw)  # idempotent: export stores the same numbers again
    if storage in ("float32", "float64"):
        assert sw is W and sb is b  # unchanged, bit for bit
    else:
        assert not torch.equal(sw, W)


def test_float16_refuses_numbers_beyond_its_range_and_unknown_storage():
    with pytest.raises(ValueError, match="beyond float16's range"):
        stored(torch.tensor([[1.0, 7e4]]), "float16")
    with pytest.raises(ValueError, match="unknown storage dtype 'int4'"):
        stored(torch.ones(1, 1), "int4")
    with pytest.raises(ValueError, match="contradicts"):
        Refitter(shrinknet.as_net(helpers.build(helpers.SETTINGS[1])[0]), None, refit=False, int8=True,
                 storage="float16")


# -- the builder against the literal twin ----------------------------------------------------------
MLPS = [s for s in helpers.SETTINGS if s.id in ("sigmoid-cross_entropy-d3-bias-out_none", "tanh-mse-d2-nobias-out_none",
                                                  "relu-mse-d3-nobias-out_tanh")]
CNNS = [cnn_helpers.SETTINGS[i] for i in (3, 5, 6)]
NETS = [("mlp", s) for s in MLPS] + [("cnn", s) for s in CNNS]
NET_IDS = [f"{kind}-{s.id}" for kind, s in NETS]


def make(kind: str, s, n: int):
    """(model, X, T) in float64 of a table entry."""
    if kind == "mlp":
        model, _, X, T = helpers.build(s, n=n)
        return model, X, T
    model, _, X, T = cnn_helpers.build(s, n=n)
    return model, X, T


def weighted(model) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, WEIGHTED)]


@pytest.mark.parametrize("refit", [False, True], ids=["switch-off", "refit"])
@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("kind,s", NETS, ids=NET_IDS)
def test_stored_network_equals_the_literal_twin(kind, s, storage, refit):
    model, X, _ = make(kind, s, n=40)  # float64: the two solves agree far below a float16 step
    net = shrinknet.as_net(model)
    for seed in range(2):
        masks = masks_for(model, seed)
        fast = shrink(Refitter(net, X if refit else None, refit=refit, storage=storage).build(masks), masks)
        slow = literal_stored(model, masks, X, refit, literal_store(storage))
        for a, b in zip(weighted(fast), weighted(slow)):
            assert_close(a.weight, b.weight, rtol=1e-9, atol=1e-10)
            if storage in ("float16", "int8"):
                assert representable(a.weight, storage)
            if a.bias is not None:
                assert_close(a.bias, b.bias, rtol=1e-9, atol=1e-10)
                if storage == "float16":
                    assert representable(a.bias, storage)
        with torch.no_grad():
            assert_close(fast(X), slow(X), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("refit", [False, True], ids=["switch-off", "refit"])
@pytest.mark.parametrize("kind,s", NETS, ids=NET_IDS)
def test_float32_storage_leaves_every_number_as_it_is(kind, s, refit):
    """float32 and float64 storage are the identity: the built networks are those of a builder
    without a storage dtype (bit for bit), and a float32 model's runs at float32 and float64
    make the same removals with the same recorded numbers."""
    model, X, T = make(kind, s, n=30)
    model, X = model.float(), X.float()
    T = T.float() if s.loss == "mse" else T
    net = shrinknet.as_net(model)
    masks = masks_for(model, 0)
    plain = Refitter(net, X if refit else None, refit=refit).build(masks)
    for storage in ("float32", "float64"):
        built = Refitter(net, X if refit else None, refit=refit, storage=storage).build(masks)
        assert all(torch.equal(a, b) for a, b in zip(shrink(built, masks).parameters(),
                                                     shrink(plain, masks).parameters()))
    kw = dict(loss=s.loss, refit="final" if refit else None, max_fraction=0.5, progress=False)
    default, f32, f64 = (shrinknet.prune(model, X, T, **kw, **d) for d in ({}, {"dtype": "float32"},
                                                                           {"dtype": "float64"}))
    assert default.steps == f32.steps
    numbers = lambda r: [(st.removed, st.error, st.accuracy, st.kept) for st in r.steps]  # noqa: E731
    assert numbers(f32) == numbers(f64)
    k = len(f32.steps) - 1
    masks_k = f32.masks(k)
    want = shrink(Refitter(net, X if refit else None, refit=refit).build(masks_k) if refit else net, masks_k)
    assert all(torch.equal(a, b) for a, b in zip(f32.network(k).parameters(), want.parameters()))


# -- prune(..., dtype="float16") ------------------------------------------------------------------
def float32_case(kind, s, n=30):
    model, X, T = make(kind, s, n)
    model, X = model.float(), X.float()
    if kind == "cnn":
        model.shrinknet_input_shape = tuple(X.shape[1:])  # the run's layout names the input shape
    return model, X, (T.float() if s.loss == "mse" else T)


def ref_accuracy(y: torch.Tensor, T: torch.Tensor) -> float:
    labels = T if T.ndim == 1 else T.argmax(1)
    return float((y.argmax(1) == labels).double().mean())


@pytest.mark.parametrize("refit", [None, "final"], ids=["refit_none", "refit_final"])
@pytest.mark.parametrize("kind,s", NETS, ids=NET_IDS)
def test_float16_run_records_the_network_it_hands_out(kind, s, refit):
    model, X, T = float32_case(kind, s)
    Xt, Tt = X[:12] * 1.1, T[:12]
    kw = dict(loss=s.loss, refit=refit, X_test=Xt, T_test=Tt, progress=False)
    result = shrinknet.prune(model, X, T, dtype="float16", **kw)
    for k, step in enumerate(result.steps):
        small = result.network(k)
        for p in small.parameters():  # exactly float16 numbers, computed in float32
            assert p.dtype == torch.float32 and representable(p.detach(), "float16")
        with torch.no_grad():  # literal re-evaluation of the network handed out
            y, yt = small(X).double(), small(Xt).double()
        assert step.error == pytest.approx(float(cnn_helpers.ref_error(y, T, s.loss)), rel=1e-5, abs=1e-6)
        assert step.test_error == pytest.approx(float(cnn_helpers.ref_error(yt, Tt, s.loss)), rel=1e-5, abs=1e-6)
        if s.loss == "cross_entropy":
            assert step.accuracy == ref_accuracy(y, T) and step.test_accuracy == ref_accuracy(yt, Tt)
        assert step.bytes == network_bytes(small, "float16")
    # the float32 run records the unrounded network: the start differs by the rounding alone
    f32 = shrinknet.prune(model, X, T, max_fraction=0.0, **kw)
    assert f32.steps[0].error != result.steps[0].error
    with torch.no_grad():
        assert f32.steps[0].error == pytest.approx(float(cnn_helpers.ref_error(model(X).double(), T, s.loss)),
                                                   rel=1e-5, abs=1e-6)
    # rebuilt from JSON: the same float16 networks
    k = len(result.steps) // 2
    back = shrinknet.PruneResult.from_json(result.to_json(), model=model, X_calib=X if refit else None)
    assert all(torch.equal(a, b) for a, b in zip(back.network(k).parameters(), result.network(k).parameters()))


def test_float64_model_at_float16_keeps_float64_arithmetic_on_float16_weights():
    s = MLPS[0]
    model, X, T = make("mlp", s, n=30)
    result = shrinknet.prune(model, X, T, loss=s.loss, dtype="float16", refit="final", max_fraction=0.5,
                             progress=False)
    for k, step in enumerate(result.steps):
        small = result.network(k)
        assert all(p.dtype == torch.float64 and representable(p.detach(), "float16") for p in small.parameters())
        with torch.no_grad():
            assert step.error == pytest.approx(float(cnn_helpers.ref_error(small(X), T, s.loss)), rel=1e-10)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_approximate_speeds_are_refused_where_storage_rounds(dtype):
    """screen and fast score the unrounded network, so they would rank a network the run does not record."""
    s = MLPS[0]
    model, X, T = float32_case("mlp", s)
    with pytest.raises(ValueError, match="scores the plain network"):
        shrinknet.prune(model, X, T, loss=s.loss, dtype=dtype, speed="screen", progress=False)


# -- the float16 exports compute what network(k) computes -------------------------------------------
C_DRIVER = stream_driver("net.h", "net")


def relative_gap(y: np.ndarray, want: np.ndarray) -> float:
    """max |y - want| over the largest |want| (outputs of order one: the relative error of the outputs)."""
    assert y.shape == want.shape
    return float(np.abs(y - want).max() / max(float(np.abs(want).max()), 1e-30))


@pytest.mark.parametrize("refit", [None, "final"], ids=["refit_none", "refit_final"])
@pytest.mark.parametrize("kind,s", NETS, ids=NET_IDS)
def test_float16_exports_compute_what_the_run_recorded(kind, s, refit, tmp_path):
    """network(k) in torch, its float16 ONNX in onnxruntime and its float16 C compiled: the same
    float16 weights and biases in float32 arithmetic, so they agree to float32 rounding."""
    ort = pytest.importorskip("onnxruntime")

    model, X, T = float32_case(kind, s, n=40)
    result = shrinknet.prune(model, X, T, loss=s.loss, dtype="float16", refit=refit, max_fraction=0.3,
                             progress=False)
    k = len(result.steps) // 2
    small = result.network(k)
    with torch.no_grad():
        want = small(X).numpy()
    assert float(np.abs(want).max()) > 0.05  # a network whose outputs are not all (nearly) zero
    shape = tuple(X.shape[1:]) if kind == "cnn" else None
    onnx_path = shrinknet.export(small, tmp_path / "net.onnx", format="onnx", dtype="float16", input_shape=shape).paths[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    (y_onnx,) = sess.run(["output"], {"input": X.numpy()})
    assert relative_gap(y_onnx, want) <= 1e-6
    cc = _compiler()
    shrinknet.export(small, tmp_path / "net.c", format="c", dtype="float16", prefix="net", input_shape=shape)
    out = compile_and_run(cc, tmp_path, C_DRIVER, ["net.c"], X.reshape(len(X), -1).numpy().tobytes())
    y_c = np.frombuffer(out, dtype=np.float32).reshape(want.shape)
    assert relative_gap(y_c, want) <= 1e-6
    # the unrounded float32 network (what a float16 run recorded before) is further away: the check can fail
    masks = result.masks(k)
    unrounded = shrink(Refitter(shrinknet.as_net(model), X if refit else None, refit=bool(refit)).build(masks), masks)
    with torch.no_grad():
        assert relative_gap(y_onnx, unrounded(X).numpy()) > 1e-5


def _compiler() -> str:
    import shutil

    path = shutil.which("cc")
    if path is None:
        pytest.skip("no C compiler: 'cc' is not on PATH, so the generated C cannot be compiled")
    return path


# -- fine-tuning re-rounds ------------------------------------------------------------------------
@pytest.mark.parametrize("kind,s", [NETS[0], NETS[-1]], ids=[NET_IDS[0], NET_IDS[-1]])
def test_finetuned_float16_network_is_rounded_again(kind, s):
    model, X, T = float32_case(kind, s, n=40)
    small = shrinknet.prune(model, X, T, loss=s.loss, dtype="float16", max_fraction=0.3, progress=False).network(2)
    tuned, facts = retrain.finetune(small, X, T, X, T, loss=s.loss, epochs=3, lr=0.05, storage="float16")
    assert facts["storage"] == "float16" and not facts["int8_requantized"]
    assert all(representable(p.detach(), "float16") for p in tuned.parameters())
    err, _ = retrain.evaluate(tuned, X, T, s.loss)
    with torch.no_grad():  # what competed with the start is the rounded network
        assert facts["val_error"] == pytest.approx(float(cnn_helpers.ref_error(tuned(X).double(), T, s.loss)),
                                                   rel=1e-5, abs=1e-6)
    assert err == facts["val_error"]
    before = copy.deepcopy(small)
    retrain.finetune(small, X, T, X, T, loss=s.loss, epochs=1, storage="float16")
    assert all(torch.equal(a, b) for a, b in zip(small.parameters(), before.parameters()))  # input untouched
    with pytest.raises(ValueError, match="contradicts"):
        retrain.finetune(small, X, T, X, T, loss=s.loss, epochs=1, int8=True, storage="float16")
