"""Full-integer quantization (store/integer.py): TFLM's fixed-point primitives against a literal
scalar transcription of their C and against exact rationals; every integer op against a literal
float fake-quant simulation of the same quantization (to 1 LSB); the whole network against the
float network; bad input refused in one line.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from integer_cases import CASES, calibration
from shrinknet.errors import InputError
from shrinknet.store.integer import (IntClamp, IntLut, IntParam, IntPool, integer_bytes, QParams, multiply_by_quantized_multiplier,
                                     quantize_multiplier, quantize_network)


# -- the primitives, literally as TFLM's C (int32 arithmetic, C division) ----------------------
def c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm_literal(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def rdbpot_literal(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm_literal(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot_literal(srdhm_literal(x * (1 << left), m), right)


REALS = [1e-6, 3.1e-4, 0.0123, 0.25, 0.5, 0.7071, 0.999999, 1.0, 1.5, 3.75, 1 - 2**-33]
XS = [0, 1, -1, 2, -2, 3, 127, -128, 1000, -1000, 65535, -65536, 12345678, -12345678, 2**30, -(2**30)]


@pytest.mark.parametrize("real", REALS, ids=lambda r: f"{r:g}")
def test_quantize_multiplier_represents_the_real_number(real):
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    exact = Fraction(m) * Fraction(2) ** shift / 2**31
    assert abs(exact - Fraction(real)) <= Fraction(2) ** shift / 2**32  # half a unit of M


@pytest.mark.parametrize("real", REALS, ids=lambda r: f"{r:g}")
def test_multiply_by_quantized_multiplier_is_tflms(real):
    m, shift = quantize_multiplier(real)
    xs = [x for x in XS if abs(x * (1 << max(shift, 0))) < 2**31]
    got = multiply_by_quantized_multiplier(torch.tensor(xs), torch.tensor(m), torch.tensor(shift)).tolist()
    assert got == [mbqm_literal(x, m, shift) for x in xs]
    for x, g in zip(xs, got):  # and within one of the exact product, rounded
        exact = Fraction(x) * m * Fraction(2) ** shift / 2**31
        assert abs(g - exact) <= 1


def test_qparams_represent_zero_and_span_the_range():
    for lo, hi in [(-1.0, 1.0), (0.0, 6.0), (-3.0, 0.5), (0.2, 4.0), (-5.0, -1.0)]:
        q = QParams.from_range(lo, hi)
        assert q.dequantize(torch.tensor([q.zero_point]))[0] == 0
        lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
        got = q.quantize(torch.tensor([lo0, hi0])).tolist()
        assert abs(got[0] + 128) <= 1 and abs(got[1] - 127) <= 1


# -- networks -------------------------------------------------------------------------------
def round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def requantize(y: torch.Tensor, q: QParams) -> torch.Tensor:
    return (round_half_away(y / q.scale) + q.zero_point).clamp(-128, 127)


def fake_quant_op(op, x: torch.Tensor) -> torch.Tensor:
    """The literal float (float64) simulation of one int8 op on int8 input ``x``: dequantize, the
    float layer with dequantized weights and bias, the activation in float, round to the output's
    quantization."""
    if isinstance(op, IntParam):
        xr = op.in_q.dequantize(x)
        s_w = op.w_scale.double()
        W = op.weight.double() * s_w.view(-1, *([1] * (op.weight.ndim - 1)))
        b = op.bias.double() * op.in_q.scale * s_w
        if op.kind == "linear":
            y = F.linear(xr.reshape(len(xr), -1), W, b)[:, :, None, None]
        else:
            groups = W.shape[0] if op.kind == "depthwise" else 1  # a depthwise conv: channel c alone
            y = F.conv2d(xr, W, b, op.stride, op.padding, op.dilation, groups=groups)
        y = {"relu": torch.relu, "relu6": lambda t: t.clamp(0, 6)}.get(op.act, lambda t: t)(y)
        return requantize(y, op.out_q)
    if isinstance(op, IntPool):
        xr = op.q.dequantize(x)
        if op.kind == "maxpool":
            y = F.max_pool2d(xr, op.kernel, op.stride, op.padding, op.dilation)
        else:
            y = F.avg_pool2d(xr, op.kernel, op.stride)
        return requantize(y, op.q)
    if isinstance(op, IntLut):
        y = op.in_q.dequantize(x)
        return requantize(torch.sigmoid(y) if op.act == "sigmoid" else torch.tanh(y), op.out_q)
    assert isinstance(op, IntClamp)
    y = op.q.dequantize(x)
    y = torch.relu(y) if op.act == "relu" else y.clamp(0, 6)
    return requantize(y, op.q)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_integer_op_agrees_with_fake_quant_to_one_lsb(case):
    """Each op is fed the integer network's own int8 input, so the comparison is of that op alone."""
    model = case.build()
    X = calibration(case)
    inet = quantize_network(model, X)
    q_in = inet.quantize_input(calibration(case, 64, seed=2) * 1.3)  # beyond the calibration range too
    x = inet.internal(q_in)
    worst, differ = 0, 0
    for op in inet.ops:
        y = op.forward(x)
        sim = fake_quant_op(op, x)
        d = (y.to(torch.int64) - sim.to(torch.int64)).abs()
        worst, differ = max(worst, int(d.max())), differ + int((d > 0).sum())
        x = y
    assert worst <= 1
    assert differ <= 0.02 * sum(64 * math.prod(op.out_shape) for op in inet.ops)  # rounding ties only, rare


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_integer_network_approximates_the_float_network(case):
    model = case.build()
    X = calibration(case)
    inet = quantize_network(model, X)
    with torch.no_grad():
        want = model(X).double()
    got = inet(X)
    span = float(want.max() - want.min())
    assert float((got - want).abs().max()) <= 0.08 * span
    assert float((got - want).abs().mean()) <= 0.02 * span


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_integer_forward_is_integer_only_and_deterministic(case):
    inet = quantize_network(case.build(), calibration(case))
    q = inet.quantize_input(calibration(case, 16, seed=3))
    out = inet.forward(q)
    assert out.dtype == torch.int8 and out.shape == (16, inet.out_features)
    assert torch.equal(out, inet.forward(q.clone()))
    assert torch.equal(inet.forward(q[:5]), out[:5])  # batch-independent


def test_weights_are_quantize_rows_and_biases_at_input_times_weight_scale():
    from shrinknet.store.quantize import quantize_rows

    case = CASES[0]
    model = case.build()
    inet = quantize_network(model, calibration(case))
    for op, lin in zip(inet.params, [m for m in model if isinstance(m, nn.Linear)]):
        q, s = quantize_rows(lin.weight)
        assert torch.equal(op.weight, q) and torch.equal(op.w_scale, s)
        want = np.round(lin.bias.detach().double().numpy() / (op.in_q.scale * s.double().numpy()))
        assert np.abs(op.bias.numpy() - want).max() <= 0  # away-from-zero and even agree off ties
        assert int(op.weight.abs().max()) <= 127


def test_relu_is_folded_into_the_clamp():
    case = CASES[0]
    inet = quantize_network(case.build(), calibration(case))
    first = inet.params[0]
    assert first.act == "relu" and first.act_min == max(-128, first.out_q.zero_point) and first.act_max == 127
    assert first.out_q.zero_point == -128  # a ReLU output's range starts at 0


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("act", [nn.Softplus, nn.LeakyReLU], ids=lambda a: a.__name__)
def test_unsupported_activation_is_named(act):
    model = nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 2))
    with pytest.raises(InputError) as e:
        quantize_network(model, torch.randn(20, 4))
    msg = str(e.value)
    assert "\n" not in msg and "layer 0" in msg and act().__class__.__name__.lower()[:4] in msg.replace("_", "")


@pytest.mark.parametrize("bad", ["nan", "inf", "constant", "one_row"])
def test_bad_calibration_data_is_refused(bad):
    model = CASES[0].build()
    X = torch.randn(30, 7)
    if bad == "nan":
        X[3, 2] = float("nan")
    elif bad == "inf":
        X[0, 0] = float("inf")
    elif bad == "constant":
        X = torch.full((30, 7), 0.5)
    else:
        X = X[:1]
    X_before = X.clone()
    with pytest.raises(InputError) as e:
        quantize_network(model, X)
    assert "\n" not in str(e.value) and "calibration" in str(e.value)
    assert torch.equal(X, X_before) or bad == "nan"  # input never modified (NaN != NaN)


def test_average_pooling_with_padding_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with pytest.raises(InputError, match="padding"):
        quantize_network(model, torch.randn(10, 1, 8, 8))


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
@pytest.mark.parametrize("scale,zp", [(0.004, -128), (0.02, -20), (0.05, 0), (0.1, 50), (0.35, 127)])
def test_sigmoid_and_tanh_tables_are_the_functions_to_one_lsb(act, scale, zp):
    """TFLM's fixed-point LOGISTIC/TANH (transcribed, tabulated) over all 256 inputs against the float
    function of the dequantized input, rounded to the output's fixed quantization."""
    q_in = QParams(scale, zp)
    op = IntLut.make(act, q_in, (256, 1, 1), (256, 1, 1))
    x = torch.arange(-128, 128, dtype=torch.int8).view(1, 256, 1, 1)
    sim = fake_quant_op(op, x)
    d = (op.forward(x).to(torch.int64) - sim.to(torch.int64)).abs()
    assert int(d.max()) <= 1 and int((d > 0).sum()) <= 40
    assert op.out_q == (QParams(1 / 256, -128) if act == "sigmoid" else QParams(1 / 128, 0))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_integer_bytes_without_calibration_are_the_stored_bytes(case):
    model = case.build()
    inet = quantize_network(model, calibration(case))
    assert integer_bytes(model) == inet.flash_bytes()
    by_hand = sum(m.weight.numel() + 9 * m.weight.shape[0] for m in model.modules()
                  if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)))
    assert integer_bytes(model) == by_hand + 256 * sum(isinstance(m, (nn.Sigmoid, nn.Tanh)) for m in model.modules())
