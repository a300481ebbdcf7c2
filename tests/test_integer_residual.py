"""Residual networks (issue #18) in .tflite: the skip as TFLite's ADD (a ReLU/ReLU6 after it fused), a
projection skip as a CONV_2D on the kept skip tensor.

* the float32 .tflite computes the torch network (TFLite Micro's interpreter, and LiteRT's where
  installed) to 1e-5 over a table of tiny networks: identity and projection skips (1x1 stride 2),
  1-D and 2-D, ReLU / ReLU6 / nothing / tanh after the addition, with and without global pooling;
* full-integer: the addition is TFLM's int8 ADD (store/integer.py ``IntAdd``); TFLite Micro on the int8
  .tflite equals the integer reference exactly; the integer-only C (host cc) equals it exactly; each
  addition agrees with a literal float fake-quant simulation within 2 LSB; the C's RAM figure is the
  float tape's RAM rule in int8 bytes (a skip held through its branch).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from helpers import litert_outputs
from test_export import cc  # noqa: F401  (a fixture)
from torch import nn

from shrinknet import Residual
from shrinknet.model.parse import as_net


@dataclass(frozen=True)
class Case:
    dims: int  # 1: Conv1d, 2: Conv2d
    proj: bool  # the second residual block has a 1x1 stride-2 projection (and more channels)
    after: str  # what follows each addition: "relu", "relu6", "none", "tanh"
    pool: str  # "global": AdaptiveAvgPool(1) before Flatten, "none"

    @property
    def name(self) -> str:
        return f"{self.dims}d-{'proj' if self.proj else 'id'}-{self.after}-{self.pool}"

    @property
    def shape(self) -> tuple:
        return (2, 12) if self.dims == 1 else (2, 6, 6)

    def build(self, seed: int = 0) -> nn.Sequential:
        torch.manual_seed(seed)
        Conv = nn.Conv1d if self.dims == 1 else nn.Conv2d
        after = {"relu": nn.ReLU, "relu6": nn.ReLU6, "tanh": nn.Tanh, "none": nn.Identity}[self.after]
        mods: list[nn.Module] = [Conv(2, 4, 3, padding=1), nn.ReLU()]
        mods += [Residual(nn.Sequential(Conv(4, 4, 3, padding=1), nn.ReLU(), Conv(4, 4, 3, padding=1))), after()]
        if self.proj:
            mods += [Residual(nn.Sequential(Conv(4, 6, 3, stride=2, padding=1), nn.ReLU6(), Conv(6, 6, 3, padding=1)),
                              Conv(4, 6, 1, stride=2)), after()]
        else:
            mods += [Residual(nn.Sequential(Conv(4, 4, 3, padding=1), nn.Tanh(), Conv(4, 4, 3, padding=1))), after()]
        c = 6 if self.proj else 4
        if self.pool == "global":
            mods += [(nn.AdaptiveAvgPool1d if self.dims == 1 else nn.AdaptiveAvgPool2d)(1), nn.Flatten(), nn.Linear(c, 3)]
        else:
            side = 12 if self.dims == 1 else 36
            side = side // (2 if self.dims == 1 else 4) if self.proj else side
            mods += [nn.Flatten(), nn.Linear(c * side, 3)]
        model = nn.Sequential(*mods)
        with torch.no_grad():  # biases big enough that the skip and the activations matter
            for m in model.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5)
        return model.eval()


CASES = [Case(d, p, a, pool) for d, p, a, pool in [
    (2, False, "relu", "global"), (2, True, "relu", "global"), (1, False, "relu6", "none"), (1, True, "none", "global"),
    (2, True, "tanh", "none"), (1, True, "relu", "none"), (2, False, "none", "none")]]
IDS = [c.name for c in CASES]


def inputs(case: Case, n: int = 10, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *case.shape, generator=g) * 1.5


def _tflite():
    pytest.importorskip("tflite")
    pytest.importorskip("tflite_micro")
    from shrinknet.ship import tflite

    return tflite


def _ops(data: bytes) -> list[str]:
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    m = tflite.Model.GetRootAsModel(data, 0)
    sg = m.Subgraphs(0)
    return [names[m.OperatorCodes(sg.Operators(i).OpcodeIndex()).BuiltinCode()] for i in range(sg.OperatorsLength())]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_tflite_computes_the_torch_residual_network(case):
    t = _tflite()
    model = case.build()
    net = as_net(model)
    net.bind(case.shape)
    assert len(net.adds) == 2 and (net.adds[1].proj is not None) == case.proj
    X = inputs(case)
    data = t.tflite_model(net)
    ops = _ops(data)
    assert ops.count("ADD") == 2 and ops.count("CONV_2D") == 5 + case.proj, ops
    assert "RELU" not in ops and "RELU6" not in ops  # fused
    xs = t.to_tflite_input(X.numpy(), case.shape).astype(np.float32)
    with torch.no_grad():
        want = model(X).numpy()
        bare = nn.Sequential(*[m.block if isinstance(m, Residual) else m for m in model])(X).numpy()
    assert np.abs(bare - want).max() > 1e-2  # the skips matter
    tol = 1e-5 * max(1.0, float(np.abs(want).max()))
    out, _ = t.run_tflm(data, xs)
    assert np.abs(out - want).max() <= tol
    lite = litert_outputs(data, xs)
    if lite is not None:
        assert np.abs(lite - want).max() <= tol


def test_fused_activation_of_each_addition():
    """ADD carries the ReLU/ReLU6 that follows the Residual (AddOptions.fused_activation_function)."""
    t = _tflite()
    import tflite

    for after, code in [("relu", 1), ("relu6", 3), ("none", 0)]:
        case = Case(2, True, after, "global")
        net = as_net(case.build())
        net.bind(case.shape)
        data = t.tflite_model(net)
        m = tflite.Model.GetRootAsModel(data, 0)
        sg = m.Subgraphs(0)
        adds = [sg.Operators(i) for i, n in enumerate(_ops(data)) if n == "ADD"]
        acts = []
        for op in adds:
            opt = tflite.AddOptions()
            opt.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            acts.append(opt.FusedActivationFunction())
        assert acts == [code, code], after


# -- full-integer (int8) ------------------------------------------------------------------------
def quantized(case: Case):
    """(model, IntegerNet calibrated on 64 rows, int8 test inputs with the int8 extremes in the first row)."""
    from shrinknet.store.integer import quantize_network

    model = case.build()
    inet = quantize_network(model, inputs(case, 64, seed=1), case.shape, "the test's rows")
    q = inet.quantize_input(inputs(case, 24, seed=7) * torch.linspace(0.2, 2.5, 24).view(-1, *[1] * len(case.shape)))
    q[0, 0], q[0, 1] = -128, 127
    return model, inet, q


def fake_quant_add(op, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The literal spec twin of an IntAdd in float64: dequantize both sides (the skip through the
    projection's fake-quant convolution first), add, quantize to the output (round half away from
    zero), clamp to the fused activation's range."""
    from test_integer import fake_quant_op

    if op.proj is not None:
        skip = fake_quant_op(op.proj, skip)
    real = op.in_q.dequantize(x) + op.skip_q.dequantize(skip)
    v = real / op.out_q.scale
    return (torch.sign(v) * torch.floor(v.abs() + 0.5) + op.out_q.zero_point).clamp(op.act_min, op.act_max)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_addition_agrees_with_fake_quant_to_two_lsb(case):
    _, inet, q = quantized(case)
    outs, x = [], inet.internal(q)
    adds = 0
    for op in inet.ops:
        y = op.forward(x, outs[op.skip]) if op.kind == "add" else op.forward(x)
        if op.kind == "add":
            adds += 1
            want = fake_quant_add(op, x, outs[op.skip])
            d = (y.to(torch.float64) - want).abs()
            assert d.max() <= 2 and (d == 0).float().mean() >= 0.9, (case.name, float(d.max()))
            assert len(torch.unique(y)) > 3
        outs.append(y)
        x = y
    assert adds == 2 and [op.proj is not None for op in inet.ops if op.kind == "add"] == [False, case.proj]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_residual_network_approximates_torch_and_counts_its_bytes(case):
    from shrinknet.store.integer import integer_bytes

    model, inet, _ = quantized(case)
    X = inputs(case, 24, seed=9)
    with torch.no_grad():
        want = model(X).double()
    err = (inet(X) - want).abs().max()
    assert err <= 0.05 * max(1.0, float(want.abs().max())), float(err)
    assert inet.flash_bytes() == integer_bytes(model)  # the projection's weights counted in both


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tflm_int8_residual_equals_the_reference_exactly(case):
    t = _tflite()
    _, inet, q = quantized(case)
    data = t.tflite_model(inet)
    assert _ops(data).count("ADD") == 2
    out, arena = t.run_tflm(data, t.to_tflite_input(q.numpy(), inet.in_shape))
    want = inet.forward(q).numpy()
    assert out.dtype == np.int8 and np.array_equal(out, want)
    assert len(np.unique(want)) > 3
    assert arena is not None and arena > inet.ram_bytes()  # TFLM's arena holds the maps and its bookkeeping
    lite = litert_outputs(data, t.to_tflite_input(q.numpy(), inet.in_shape))
    if lite is not None:  # LiteRT's optimized kernels round differently at some ops
        d = np.abs(lite.astype(int) - want)
        assert d.max() <= 2 and (d == 0).mean() >= 0.9


def test_residual_network_with_a_leaky_relu_is_refused_in_one_line():
    """What has no int8 kernel is refused in a residual network as in a chain (one line, naming it)."""
    from shrinknet.errors import InputError
    from shrinknet.store.integer import quantize_network

    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))), nn.LeakyReLU(),
                          nn.Flatten(), nn.Linear(4 * 36, 3))
    with pytest.raises(InputError) as e:
        quantize_network(model, torch.randn(8, 2, 6, 6), (2, 6, 6))
    assert "leaky" in str(e.value).lower() and "\n" not in str(e.value)


# -- integer-only C -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_c_of_a_residual_network_equals_the_reference(case, cc, tmp_path):  # noqa: F811
    from test_c_integer import int8_driver
    from test_export import compile_and_run

    from shrinknet.ship.c_integer import export_integer_c

    model, inet, q = quantized(case)
    res = export_integer_c(inet, tmp_path / "net.c", prefix="net")
    source = res.paths[0].read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
    assert not re.search(r"\b(float|double)\b|math\.h", code)
    out = compile_and_run(cc, tmp_path, int8_driver("net"), ["net.c"], q.numpy().tobytes())
    want = inet.forward(q).numpy()
    assert np.array_equal(np.frombuffer(out, np.int8).reshape(want.shape), want)
    assert len(np.unique(want)) > 3
    # RAM: the header's figure is the C's scratch buffer, and it is the RAM rule of the float network's
    # tape (layers/resnet.py, tested against forward hooks in test_residual.py) in int8 bytes: the peak
    # of the maps live at once, a skip held through its branch
    from shrinknet.store.memory import ram_bytes

    ram = inet.ram_bytes()
    assert f"#define NET_RAM_BYTES {ram}\n" in res.paths[1].read_text() and f"scratch[{ram}]" in source
    assert res.ram_bytes == ram == ram_bytes(model, input_shape=case.shape, bytes_per=1)
    chain = [math.prod(op.out_shape) for op in inet.ops[:-1] if op.kind not in ("clamp", "lut", "add")]
    assert ram > max(a + b for a, b in itertools.pairwise(chain))  # more than a chain's: the skip is held


def test_cli_prunes_a_resnet_integer_only_and_its_exports_are_the_reference(cc, tmp_path):  # noqa: F811
    """train --arch resnet (mnist1d signals), prune --integer-only --export c,tflite: the saved network,
    quantized on the training split, is what the C (host cc) and the .tflite (TFLM) compute, bit for
    bit, and the RAM the run reports is the C's."""
    t = _tflite()
    import json

    from click.testing import CliRunner
    from test_c_integer import int8_driver
    from test_export import compile_and_run

    from shrinknet.cli import cli
    from shrinknet.data import datasets
    from shrinknet.ship import modelio
    from shrinknet.store.integer import integer_bytes, quantize_network
    from shrinknet.store.memory import ram_bytes

    def run(*args):
        r = CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)
        assert r.exit_code == 0, r.output

    run("train", "--data", "mnist1d", "--arch", "resnet", "--size", 300, "--channels", "4,6", "--epochs", 2,
        "--loss", "cross_entropy", "--force", "--out", tmp_path / "m")
    run("prune", tmp_path / "m" / "model.safetensors", "--budget", 600, "--dtype", "int8", "--integer-only",
        "--method", "taylor1", "--no-analyze", "--export", "c,tflite", "--force", "--out", tmp_path / "run")
    small, _ = modelio.load_model(tmp_path / "run" / "model.safetensors")
    assert any(isinstance(m, Residual) for m in small)
    ds = datasets.load("mnist1d", size=300, seed=0)
    inet = quantize_network(small, torch.as_tensor(ds.inputs("train")), (1, 40))
    assert integer_bytes(small) == inet.flash_bytes() <= 600
    assert f"_RAM_BYTES {inet.ram_bytes()}\n" in (tmp_path / "run" / "model.h").read_text()
    extras = json.loads((tmp_path / "run" / "run.json").read_text())["extras"]
    assert extras["c_ram_bytes"] == inet.ram_bytes() == ram_bytes(small, input_shape=(1, 40), bytes_per=1)
    q = inet.quantize_input(torch.as_tensor(ds.inputs("test")[:30]))
    want = inet.forward(q).numpy()
    driver = int8_driver("shrinknet").replace('"shrinknet.h"', '"model.h"')
    out = compile_and_run(cc, tmp_path / "run", driver, ["model.c"], q.numpy().tobytes())
    assert np.array_equal(np.frombuffer(out, np.int8).reshape(want.shape), want)
    tflm, _ = t.run_tflm((tmp_path / "run" / "model.tflite").read_bytes(), t.to_tflite_input(q.numpy(), (1, 40)))
    assert np.array_equal(tflm, want)
