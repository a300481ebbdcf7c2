"""Full-integer .tflite files (ai-edge-quantizer's static int8, on a litert-torch conversion) read as float.

The fixtures <name>_full_int8.tflite (tests/fixtures/README.md) have int8 input, activations and output,
int8 per-channel weights and int32 biases. shrinknet dequantizes the weights and biases and drops the
activations' quantization: the parsed float network is the file's function without its activation
rounding. Checked against ai-edge-litert's interpreter on the very inputs the file was calibrated on
(so no activation saturates), within a bound computed from the file's own activation scales (``bound``).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrinknet.model.imports import notes_of, to_sequential

pytest.importorskip("tflite")
FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import tflite_models  # noqa: E402

NAMES = ["mlp", "cnn"]


def _model(path: Path):
    import tflite

    buf = path.read_bytes()
    return tflite.Model.GetRootAsModel(buf, 0), tflite


def _qparams(g, i: int) -> tuple[float, int]:
    q = g.Tensors(i).Quantization()
    return float(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0])


def rounding_scales(path: Path) -> tuple[float, list[float]]:
    """(input scale, the scales of the tensors the int8 kernels round, in order): the outputs of
    FULLY_CONNECTED / CONV_2D (after their fused activation), LOGISTIC, TANH and SOFTMAX. (MAX_POOL_2D,
    TRANSPOSE and RESHAPE move int8 values at the same scale and round nothing.)"""
    from shrinknet.model.imports.tflite import _builtin_code

    m, tfl = _model(path)
    names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    g = m.Subgraphs(0)
    out = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        c = m.OperatorCodes(op.OpcodeIndex())
        name = names[max(_builtin_code(c), c.DeprecatedBuiltinCode())]
        if name in ("FULLY_CONNECTED", "CONV_2D", "LOGISTIC", "TANH", "SOFTMAX"):
            out.append(_qparams(g, int(op.Outputs(0)))[0])
        else:
            assert name in ("MAX_POOL_2D", "TRANSPOSE", "RESHAPE"), name
    return _qparams(g, int(g.Inputs(0)))[0], out


def propagate(mod: nn.Module, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Variances v of independent errors on the input h of ``mod`` -> on its output: (J * J) @ v with J
    the layer's Jacobian at h, written out per layer (a batch of instances at once, float64):
    Linear: W^2 @ v; Conv2d: the same convolution with kernel W^2 and no bias; an elementwise activation:
    f'(h)^2 v; max pool: the variance of the input that wins; Flatten: reshaped; Softmax: J = diag(p) - p p^T."""
    if isinstance(mod, nn.Linear):
        return v @ (mod.weight.detach().double() ** 2).T
    if isinstance(mod, nn.Conv2d):
        return F.conv2d(v, mod.weight.detach().double() ** 2, None, mod.stride, mod.padding, mod.dilation)
    if isinstance(mod, (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh)):
        z = h.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(mod(z).sum(), z)  # elementwise: the gradient of the sum is f'(h)
        return d**2 * v
    if isinstance(mod, nn.MaxPool2d):
        _, idx = F.max_pool2d(h, mod.kernel_size, mod.stride, mod.padding, mod.dilation, return_indices=True)
        return v.flatten(2).gather(2, idx.flatten(2)).reshape(idx.shape)
    if isinstance(mod, nn.Flatten):
        return v.flatten(1)
    if isinstance(mod, nn.Softmax):
        p = torch.softmax(h, -1)
        J = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        return torch.einsum("nij,nj->ni", J**2, v)
    raise AssertionError(f"no rule for {mod}")


def tolerance(path: Path, seq, X: torch.Tensor, softmax: bool) -> np.ndarray:
    """Per instance of X and output: how far the file's dequantized output may lie from the parsed float's.

    Both run the same dequantized weights and biases; they differ only by the int8 rounding of the
    activations. Each tensor an int8 kernel writes (``rounding_scales``) is rounded to its step s: an error
    within +-s/2, which the standard quantization-noise model (Widrow) takes as independent and uniform,
    of variance s^2 / 12. Carried through each layer by its Jacobian at the instance (``propagate``), plus
    s_out^2 / 12 where that layer's output is rounded (a Linear/Conv's fused ReLU rounds once, after the
    ReLU). Tolerance: 6 standard deviations, plus 2 output steps for what the model leaves out (the
    fixed-point multiplier's rounding and the int8 LOGISTIC/TANH/SOFTMAX kernels' approximation, about
    1 LSB each)."""
    s_in, scales = rounding_scales(path)
    scales = iter(scales)
    mods = list(copy.deepcopy(seq).double()) + ([nn.Softmax(-1)] if softmax else [])
    h = X.double()
    v = torch.full_like(h, s_in**2 / 12)
    s_out = s_in
    linear = (nn.Linear, nn.Conv2d)
    for j, mod in enumerate(mods):
        v = propagate(mod, h, v)
        with torch.no_grad():
            h = mod(h)
        nxt = mods[j + 1] if j + 1 < len(mods) else None
        fused = isinstance(mod, (nn.ReLU, nn.ReLU6)) and j and isinstance(mods[j - 1], linear)
        if (isinstance(mod, linear) and not isinstance(nxt, (nn.ReLU, nn.ReLU6))) or fused \
                or isinstance(mod, (nn.Sigmoid, nn.Tanh, nn.Softmax)):
            s_out = next(scales)
            v = v + s_out**2 / 12
    assert next(scales, None) is None  # every rounded tensor of the file was met
    return (6 * v.sqrt() + 2 * s_out).numpy()


def interpret_int8(path: Path, X: np.ndarray) -> np.ndarray:
    """The file's runtime on float X: quantized with the input's (scale, zero point), outputs dequantized."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    assert i["dtype"] == np.int8 and o["dtype"] == np.int8
    out = []
    for x in X:
        it.set_tensor(i["index"], np.clip(np.round(x / si) + zi, -128, 127).astype(np.int8)[None])
        it.invoke()
        out.append(so * (it.get_tensor(o["index"])[0].astype(np.float64) - zo))
    return np.stack(out)


@pytest.mark.parametrize("name", NAMES)
def test_full_int8_reads_as_its_float_function(name):
    path = FIXTURES / f"{name}_full_int8.tflite"
    seq = to_sequential(path)
    notes = " ".join(notes_of(seq))
    assert "full-integer model read as float" in notes and "int8 weights dequantized" in notes
    assert seq.shrinknet_input_layout == ("flat" if name == "mlp" else "NCHW")  # litert-torch keeps NCHW
    X = tflite_models.calibration(name)
    with torch.no_grad():
        mine = seq(torch.from_numpy(X)).double()
    if "SOFTMAX taken off" in notes:
        mine = torch.softmax(mine, -1)
    diff = np.abs(mine.numpy() - interpret_int8(path, X))
    tol = tolerance(path, seq, torch.from_numpy(X), "SOFTMAX taken off" in notes)
    assert np.all(diff <= tol), (diff.max(), tol[diff > tol])
    # not vacuous: the tolerance is a few output steps, far below the outputs' own spread
    assert np.median(tol) < 0.1 * float(mine.std()), (np.median(tol), float(mine.std()))
    assert diff.max() > 0  # the file really computes in int8


@pytest.mark.parametrize("name", NAMES)
def test_full_int8_weights_are_the_float_files_within_half_a_step(name):
    """Same layers as the float file litert-torch wrote; every weight within half its channel's step."""
    full, flt = to_sequential(FIXTURES / f"{name}_full_int8.tflite"), to_sequential(FIXTURES / f"{name}.tflite")
    assert [type(m) for m in full] == [type(m) for m in flt]
    for a, b in zip(full.parameters(), flt.parameters()):
        a, b = a.detach().double(), b.detach().double()
        if a.ndim < 2:  # int32 bias at scale s_in * s_w[o]: far finer than the weights' steps
            continue
        dims = tuple(range(1, b.ndim))
        step = b.abs().amax(dim=dims) / 127
        assert torch.all((a - b).abs().amax(dim=dims) <= step / 2 * 1.01 + 1e-9)


def test_int16_or_uint8_input_refused_in_one_line(tmp_path):
    """A quantized input shrinknet does not read (here the int8 input retyped as int16) is one line naming it."""
    from shrinknet.errors import InputError

    buf = bytearray((FIXTURES / "mlp_full_int8.tflite").read_bytes())
    m, _ = _model(FIXTURES / "mlp_full_int8.tflite")
    t = m.Subgraphs(0).Tensors(int(m.Subgraphs(0).Inputs(0)))
    pos = t._tab.Offset(6)  # Tensor.type: field 1
    assert pos and buf[t._tab.Pos + pos] == 9
    buf[t._tab.Pos + pos] = 7  # INT16
    path = tmp_path / "int16.tflite"
    path.write_bytes(bytes(buf))
    with pytest.raises(InputError) as e:
        to_sequential(path)
    assert "\n" not in str(e.value) and "int16" in str(e.value) and "int16.tflite" in str(e.value)


def test_the_command_line_says_what_it_did_with_a_full_integer_file(tmp_path):
    """shrinknet prune on a full-integer file: the note says the activations' quantization was dropped
    and what the file's input scale is; the run starts from the float network it read."""
    from click.testing import CliRunner

    from shrinknet.cli import cli
    from shrinknet.ship import runs

    path = FIXTURES / "mlp_full_int8.tflite"
    X = tflite_models.calibration("mlp")
    with torch.no_grad():
        y = to_sequential(path)(torch.from_numpy(X)).numpy()  # its own outputs: error 0 at the start
    np.savez(tmp_path / "d.npz", X=X, y=y)
    r = CliRunner().invoke(cli, ["prune", str(path), "--data", str(tmp_path / "d.npz"), "--loss", "mse",
                                 "--max-drop", "20%", "--no-analyze", "--force", "--out", str(tmp_path / "run"), "-q"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: full-integer model read as float")]
    assert len(notes) == 1 and "round(x / 0.0216549) - 2" in notes[0]  # the file's input scale and zero point
    assert runs.load_run(tmp_path / "run")["result"].steps[0].error < 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_shrinknet_own_full_integer_export_reads_back(name, tmp_path):
    """shrinknet's --integer-only .tflite (ship/tflite.py) of the same source, calibrated on the same inputs,
    reads back as float too, within the same tolerance of ai-edge-litert's run of it."""
    from shrinknet.ship.tflite import tflite_model
    from shrinknet.store.integer import quantize_network

    X = tflite_models.calibration(name)
    inet = quantize_network(tflite_models.build(name).twin(), torch.from_numpy(X), calibration_name="the fixtures'")
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(tflite_model(inet, input_layout="NCHW"))  # the source's own layout, as litert-torch's file
    seq = to_sequential(path)
    assert "full-integer model read as float" in " ".join(notes_of(seq))
    with torch.no_grad():
        mine = seq(torch.from_numpy(X)).double()
    diff = np.abs(mine.numpy() - interpret_int8(path, X))
    tol = tolerance(path, seq, torch.from_numpy(X), softmax=False)
    assert np.all(diff <= tol), (diff.max(), tol[diff > tol])
    assert diff.max() > 0
