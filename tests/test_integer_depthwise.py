"""Depthwise-separable CNNs full-integer (issue #18 on top of #16): the depthwise conv and the global
average pooling of ``DS_CASES`` (tests/integer_cases.py: 1-D/2-D, ReLU/ReLU6/tanh, stride, dilation,
padding, odd channel counts, no bias, a network pruned by shrinknet to a byte budget).

* the integer reference (store/integer.py) against a literal float fake-quant simulation, op by op,
  to 1 LSB, and against the float network;
* TFLite Micro's interpreter on the full-integer .tflite equals the reference exactly;
* the integer-only C, compiled with the host cc, equals the reference exactly;
* the float32 .tflite computes the torch network (TFLM, and LiteRT where installed; LiteRT's int8
  kernels within two steps of the reference, 90% of outputs equal);
* the file holds DEPTHWISE_CONV_2D with a [1, kh, kw, C] filter quantized on dimension 3 and the
  global pooling as AVERAGE_POOL_2D over the whole map; the stored bytes count every depthwise kernel.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from integer_cases import DS_CASES, calibration, named
from helpers import litert_outputs
from test_export import cc, compile_and_run  # noqa: F401  (cc: the fixture)
from test_integer import fake_quant_op
from torch import nn

from shrinknet.model.parse import as_net
from shrinknet.ship.c_integer import export_integer_c
from shrinknet.store.integer import integer_bytes, quantize_network

IDS = [c.name for c in DS_CASES]
N = 48


def quantized(case):
    model = case.build()
    inet = quantize_network(model, calibration(case), case.shape, "the test's calibration rows")
    X = calibration(case, N, seed=5) * torch.linspace(0.2, 2.5, N).view(-1, *([1] * len(case.shape)))
    q = inet.quantize_input(X)
    q[0], q[1] = -128, 127  # the int8 extremes
    return model, inet, q


def test_grid_has_depthwise_ops_and_global_pooling():
    """Every case really has what it is in the grid for (a pruned network that lost its depthwise
    layers would test nothing new)."""
    for case in DS_CASES:
        _, inet, _ = quantized(case)
        kinds = [op.kind for op in inet.ops]
        assert "depthwise" in kinds, case.name
        pool = [op for op in inet.ops if op.kind == "avgpool"][-1]
        assert pool.out_shape[1:] == (1, 1) and pool.kernel == pool.in_shape[1:], case.name


@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_every_op_agrees_with_fake_quant_to_one_lsb(case):
    _, inet, q = quantized(case)
    x = inet.internal(q)
    worst, differ, total = 0, 0, 0
    for op in inet.ops:
        y = op.forward(x)
        d = (y.to(torch.int64) - fake_quant_op(op, x).to(torch.int64)).abs()
        worst, differ, total = max(worst, int(d.max())), differ + int((d > 0).sum()), total + d.numel()
        x = y
    assert worst <= 1
    assert differ <= 0.02 * total  # rounding ties only, rare


@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_integer_network_approximates_the_float_network(case):
    model = case.build()
    X = calibration(case)
    inet = quantize_network(model, X, case.shape)
    with torch.no_grad():
        want = model(X).double()
    got = inet(X)
    span = float(want.max() - want.min())
    assert float((got - want).abs().max()) <= 0.1 * span
    assert float((got - want).abs().mean()) <= 0.02 * span


@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_stored_bytes_count_every_depthwise_kernel(case):
    model = case.build()
    inet = quantize_network(model, calibration(case), case.shape)
    by_hand = sum(m.weight.numel() + 9 * m.weight.shape[0] for m in model.modules()
                  if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)))
    by_hand += 256 * sum(isinstance(m, (nn.Sigmoid, nn.Tanh)) for m in model.modules())
    assert integer_bytes(model) == inet.flash_bytes() == by_hand


@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_integer_c_equals_the_reference(case, cc, tmp_path):  # noqa: F811
    from test_c_integer import int8_driver

    _, inet, q = quantized(case)
    source = export_integer_c(inet, tmp_path / "net.c", prefix="net").paths[0].read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    assert not re.search(r"\b(float|double)\b|math\.h", code)
    divisions = [line for line in code.splitlines() if "/" in line]  # only average pooling, once per output
    assert len(divisions) == sum(op.kind == "avgpool" for op in inet.ops)
    out = compile_and_run(cc, tmp_path, int8_driver("net"), ["net.c"], q.numpy().tobytes())
    want = inet.forward(q).numpy()
    assert np.array_equal(np.frombuffer(out, np.int8).reshape(want.shape), want)
    assert len(np.unique(want)) > 3


# -- .tflite ----------------------------------------------------------------------------------
def _tflite():
    pytest.importorskip("tflite")
    pytest.importorskip("tflite_micro")
    from shrinknet.ship import tflite

    return tflite


@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_tflm_int8_equals_the_reference_exactly(case):
    t = _tflite()
    _, inet, q = quantized(case)
    out, arena = t.run_tflm(t.tflite_model(inet), t.to_tflite_input(q.numpy(), inet.in_shape))
    want = inet.forward(q).numpy()
    assert out.dtype == np.int8 and np.array_equal(out, want)
    assert len(np.unique(want)) > 3
    assert arena is not None and arena > inet.ram_bytes()
    lite = litert_outputs(t.tflite_model(inet), t.to_tflite_input(q.numpy(), inet.in_shape))
    if lite is not None:  # the standard runtime's optimized kernels (and its float-built tanh table) round
        d = np.abs(lite.astype(int) - want)  # differently at some ops; the differences can add up over layers
        assert d.max() <= 2 and (d == 0).mean() >= 0.9


@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_float32_tflite_computes_the_torch_network(case):
    t = _tflite()
    model = case.build()
    net = as_net(model)
    net.bind(case.shape)
    X = calibration(case, 12, seed=6)
    data = t.tflite_model(net)
    xs = t.to_tflite_input(X.numpy(), case.shape).astype(np.float32)
    with torch.no_grad():
        want = model(X).numpy()
    tol = 1e-5 * max(1.0, float(np.abs(want).max()))
    out, _ = t.run_tflm(data, xs)
    assert np.abs(out - want).max() <= tol
    lite = litert_outputs(data, xs)
    if lite is not None:
        assert np.abs(lite - want).max() <= tol


def test_file_holds_depthwise_filters_per_channel_and_global_average_pooling():
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    t = _tflite()
    case = named("dscnn2d-relu6-odd")
    _, inet, _ = quantized(case)
    m = tflite.Model.GetRootAsModel(t.tflite_model(inet), 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    ops = [g.Operators(i) for i in range(g.OperatorsLength())]
    kinds = [names[m.OperatorCodes(o.OpcodeIndex()).BuiltinCode()] for o in ops]
    assert "MEAN" not in kinds and kinds.count("AVERAGE_POOL_2D") == 1
    dws = [o for o, k in zip(ops, kinds) if k == "DEPTHWISE_CONV_2D"]
    mine = [op for op in inet.ops if op.kind == "depthwise"]
    assert len(dws) == len(mine) == 2
    for o, op in zip(dws, mine):
        C, _, kh, kw = op.weight.shape
        w, b = g.Tensors(o.Inputs(1)), g.Tensors(o.Inputs(2))
        assert w.Type() == TensorType.INT8 and list(w.ShapeAsNumpy()) == [1, kh, kw, C]
        assert w.Quantization().QuantizedDimension() == 3
        assert np.array_equal(w.Quantization().ScaleAsNumpy(), op.w_scale.numpy())
        data = m.Buffers(w.Buffer()).DataAsNumpy().view(np.int8).reshape(1, kh, kw, C)
        assert np.array_equal(data[0].transpose(2, 0, 1), op.weight[:, 0].numpy())
        assert b.Type() == TensorType.INT32 and np.array_equal(m.Buffers(b.Buffer()).DataAsNumpy().view(np.int32),
                                                                op.bias.numpy())
    pool = ops[kinds.index("AVERAGE_POOL_2D")]
    src = g.Tensors(pool.Inputs(0))
    _, H, W, _ = src.ShapeAsNumpy()
    from tflite.Pool2DOptions import Pool2DOptions

    opts = Pool2DOptions()
    opts.Init(pool.BuiltinOptions().Bytes, pool.BuiltinOptions().Pos)
    assert (opts.FilterHeight(), opts.FilterWidth()) == (H, W)
    C = src.ShapeAsNumpy()[3]
    assert list(g.Tensors(pool.Outputs(0)).ShapeAsNumpy()) == [1, 1, 1, C]


# -- shrinknet device ---------------------------------------------------------------------------
def test_device_summary_runs_a_dscnn():
    """``shrinknet device``'s workflow on a DS-CNN: the integer-only C on the emulated core and TFLM
    equal the reference; the MACs counted for the float C are the integer network's (depthwise included)."""
    pytest.importorskip("unicorn")
    pytest.importorskip("ziglang")
    pytest.importorskip("tflite_micro")
    from shrinknet.workflows.device import device_summary

    case = named("dscnn1d-relu")
    model = case.build()
    X = calibration(case, 20, seed=11)
    s = device_summary(model, calibration(case), X, torch.randint(0, 5, (20,)), cpus=("cortex-m0plus",), rows=3)
    r = s.integer["cortex-m0plus"]
    assert r.matches_reference and r.softfloat == [] and s.tflm_matches_reference
    assert s.float_max_diff["cortex-m0plus"] <= 1e-5
    inet = quantize_network(model, calibration(case), case.shape)
    assert s.macs == inet.macs == 4 * 20 * 3 + 4 * 20 * 3 + 6 * 20 * 4 + 6 * 5  # conv, depthwise, pointwise, linear


# -- the exported .tflite comes back in (model/imports/tflite.py) -----------------------------------
@pytest.mark.parametrize("case", DS_CASES, ids=IDS)
def test_float32_tflite_reimports_with_its_depthwise_convolutions(case):
    """The importer reads DEPTHWISE_CONV_2D with multiplier 1 as a depthwise Conv2d (groups = channels):
    the same function (a 1-D network comes back as a 2-D one over (C, 1, L)), the same depthwise ops."""
    t = _tflite()
    from shrinknet.model.imports import to_model_layout
    from shrinknet.model.imports.tflite import from_bytes

    model = case.build()
    net = as_net(model)
    net.bind(case.shape)
    seq = from_bytes(t.tflite_model(net))
    X = calibration(case, 8, seed=7)
    xin = torch.from_numpy(t.to_tflite_input(X.numpy(), case.shape).astype(np.float32))
    with torch.no_grad():
        got, want = seq(to_model_layout(seq, xin)), model(X)
    assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    depthwise = [m.groups for m in seq if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise == [op.channels for b in net.blocks for _, op in b.weighted]


def test_depth_multiplier_above_one_is_refused_in_one_line(monkeypatch):
    """A DEPTHWISE_CONV_2D with 2 filters per input channel (written by patching the writer's layer
    list, as shrinknet itself never writes one)."""
    t = _tflite()
    from shrinknet.errors import InputError
    from shrinknet.model.imports.tflite import from_bytes

    g = torch.Generator().manual_seed(0)
    z = lambda *s: torch.randn(*s, generator=g).numpy()  # noqa: E731
    layers = [t.Layer("conv", (1, 6, 6), (2, 4, 4), weight=z(2, 1, 3, 3), bias=z(2), kernel=(3, 3)),
              t.Layer("depthwise", (2, 4, 4), (4, 2, 2), weight=z(4, 1, 3, 3), bias=z(4), kernel=(3, 3)),
              t.Layer("fc", (4, 2, 2), (3, 1, 1), weight=z(3, 16), bias=z(3))]
    monkeypatch.setattr(t, "layers_of_float", lambda net: layers)
    net = as_net(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 3)))
    net.bind((1, 6, 6))
    data = t.tflite_model(net)
    with pytest.raises(InputError) as e:
        from_bytes(data)
    assert "\n" not in str(e.value) and "multiplier 2" in str(e.value)


# -- the int8 network a run builds keeps a removed depthwise channel's constant (repair/refit.py) ---------
@pytest.mark.parametrize("name", ["dscnn2d-relu6-odd"])
def test_int8_builder_folds_a_removed_depthwise_channel_like_surgery(name):
    """The network an int8 run builds for masks, cut to its kept units, equals the literal twin: the
    float network cut by surgery (which folds the next layer's response to a removed depthwise
    channel's constant output act(bias) into its bias), then its weights stored at int8. Zeroing the
    removed channel's columns alone would lose that constant."""
    from shrinknet.model.surgery import shrink
    from shrinknet.repair.refit import Refitter
    from shrinknet.store.quantize import fake_quantize

    case = named(name)
    model = case.build()
    net = as_net(model)
    X = calibration(case, 24, seed=8)
    net.prepare_input(X)
    with torch.no_grad():
        for h, b in enumerate(net.blocks[:-1]):
            if not b.weighted:
                continue
            for c in range(b.param.out_units):
                masks = [torch.ones(x.param.out_units, dtype=torch.bool) for x in net.blocks[:-1]]
                masks[h][c] = False
                built = Refitter(net, X, refit=False, storage="int8").build(masks)
                run = built.shrink(masks).to_sequential()
                literal = shrink(net, masks)
                for m in literal:
                    if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                        m.weight.copy_(fake_quantize(m.weight))
                assert torch.allclose(run(X), literal(X), rtol=1e-5, atol=1e-6), (h, c)


# -- the command line, end to end --------------------------------------------------------------------
def test_cli_prunes_a_dscnn_integer_only_and_its_exports_are_the_reference(cc, tmp_path):  # noqa: F811
    """train --arch dscnn (mnist1d), prune --integer-only --export c,tflite: the saved network, quantized
    on the training split, is what the C (host cc) and the .tflite (TFLM) compute, bit for bit."""
    t = _tflite()
    from click.testing import CliRunner
    from test_c_integer import int8_driver

    from shrinknet.cli import cli
    from shrinknet.data import datasets
    from shrinknet.ship import modelio

    def run(*args):
        r = CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)
        assert r.exit_code == 0, r.output

    run("train", "--data", "mnist1d", "--arch", "dscnn", "--size", 300, "--channels", "4,6", "--epochs", 2,
        "--loss", "cross_entropy", "--force", "--out", tmp_path / "m")  # 2 epochs may sit at chance
    run("prune", tmp_path / "m" / "model.safetensors", "--budget", 240, "--dtype", "int8", "--integer-only",
        "--method", "taylor1",  # the exports are the point here; brute force on the integer network: test_integer_prune
        "--no-analyze", "--export", "c,tflite", "--force", "--out", tmp_path / "run")
    small, _ = modelio.load_model(tmp_path / "run" / "model.safetensors")
    assert any(isinstance(m, nn.Conv1d) and m.groups > 1 for m in small)
    ds = datasets.load("mnist1d", size=300, seed=0)
    inet = quantize_network(small, torch.as_tensor(ds.inputs("train")), (1, 40))
    assert integer_bytes(small) == inet.flash_bytes() <= 240
    q = inet.quantize_input(torch.as_tensor(ds.inputs("test")[:30]))
    want = inet.forward(q).numpy()
    driver = int8_driver("shrinknet").replace('"shrinknet.h"', '"model.h"')
    out = compile_and_run(cc, tmp_path / "run", driver, ["model.c"], q.numpy().tobytes())
    assert np.array_equal(np.frombuffer(out, np.int8).reshape(want.shape), want)
    tflm, _ = t.run_tflm((tmp_path / "run" / "model.tflite").read_bytes(), t.to_tflite_input(q.numpy(), (1, 40)))
    assert np.array_equal(tflm, want)
