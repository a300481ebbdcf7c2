"""CNN export: ONNX (onnxruntime) and C99 (compiled -std=c99 -Wall -Wextra -Werror, run) against
torch on 100 inputs per setting, at float32, float16 and int8 (against torch running the network
whose kernels were quantized channel by channel in a literal loop); the flash bytes against a
literal count of what each file stores; the C scratch buffer is exactly the stated RAM; model files."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

import shrinknet
from shrinknet.ship.export import export
from shrinknet.store.memory import network_bytes, ram_bytes
from shrinknet.ship.modelio import load_model, save_model

from cnn_helpers import SETTINGS, build
from test_export import TOL, cc, compile_and_run, dequantized_by_spec, int8_by_spec, stream_driver  # noqa: F401  (cc is a fixture)

N_INPUTS = 100


def _float32(s, pruned: bool):
    model, _, X, _ = build(s)
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    if pruned:  # drop the first channel/feature of every hidden layer
        masks = net.full_masks()
        for m in masks:
            m[0] = False
        net = shrinknet.as_net(shrinknet.shrink(net, masks))
        net.bind(tuple(X.shape[1:]))
    return net.to_sequential().float(), tuple(X.shape[1:])


CASES = [(s, i % 3 == 2) for i, s in enumerate(SETTINGS)]
IDS = [s.id + ("-pruned" if p else "") for s, p in CASES]


def _inputs(shape):
    return torch.randn(N_INPUTS, *shape, generator=torch.Generator().manual_seed(5))


def per_channel_int8(W: torch.Tensor) -> torch.Tensor:
    """Slow twin of int8 storage of a kernel (o, c, ...) or matrix, from the spec and not the package:
    each output channel's weights, flattened, quantized on their own as one row (the MLP's per-row
    rule, ``test_export.int8_by_spec``) and dequantized in float32; W's dtype and shape."""
    out = torch.empty_like(W)
    for o in range(W.shape[0]):
        row = W[o].detach().reshape(1, -1).numpy()  # float32 or float64 weights, as given
        out[o] = torch.from_numpy(dequantized_by_spec(row)).view_as(W[o])
    return out


WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _reference(model, X, dtype):
    m = copy.deepcopy(model)
    with torch.no_grad():
        if dtype == "float16":
            for p in m.parameters():
                p.copy_(p.half().float())
        if dtype == "int8":  # weights as the device computes them, biases float32
            for mod in m.modules():
                if isinstance(mod, WEIGHTED):
                    mod.weight.copy_(per_channel_int8(mod.weight))
        return m(X).numpy()


def _flash_by_count(model, dtype) -> int:
    """Slow twin of the flash bytes: parameters times bytes per number (floats), or at int8 one
    byte per weight + a float32 scale and bias per output channel/feature, layer by layer."""
    if dtype != "int8":
        return sum(p.numel() for p in model.parameters()) * (4 if dtype == "float32" else 2)
    return sum(m.weight.numel() + 4 * m.weight.shape[0] + (4 * m.weight.shape[0] if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, WEIGHTED))


def _check_int8_onnx(path, model) -> None:
    """What the int8 ONNX file stores: per layer int8 values, per-output-channel float32 scales and
    zero points, a DequantizeLinear (axis 0) feeding the Conv/Gemm; the values rebuild the
    dequantized weights exactly; its weight initializers (zero points aside) are the flash bytes."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    layers = [m for m in model.modules() if isinstance(m, WEIGHTED)]
    stored = 0
    for k, mod in enumerate(layers):
        q, scale, zero = (inits[f"layers.{k}.weight{x}"] for x in ("", "_scale", "_zero_point"))
        assert q.dtype == np.int8 and q.shape == tuple(mod.weight.shape) and int(np.abs(q).max()) <= 127
        assert scale.dtype == np.float32 and scale.shape == (mod.weight.shape[0],) and not zero.any()
        q_spec, scale_spec = int8_by_spec(mod.weight.detach().numpy())
        assert np.array_equal(q, q_spec) and np.array_equal(scale.view(np.uint32), scale_spec.view(np.uint32))
        rebuilt = torch.from_numpy(q.astype(np.float32) * scale.reshape(-1, *[1] * (q.ndim - 1)))
        assert torch.equal(rebuilt, per_channel_int8(mod.weight.detach()))
        bias = inits.get(f"layers.{k}.bias")
        assert (bias is None) == (mod.bias is None)
        stored += q.nbytes + scale.nbytes + (0 if bias is None else bias.nbytes)
        op, name = ("Gemm", "linear") if isinstance(mod, nn.Linear) else ("Conv", "conv")
        (node,) = [n for n in proto.graph.node if n.op_type == op and n.name == f"layers.{k}.{name}"]
        deq = producer[node.input[1]]
        assert deq.op_type == "DequantizeLinear" and list(deq.input) == [f"layers.{k}.weight", f"layers.{k}.weight_scale",
                                                                         f"layers.{k}.weight_zero_point"]
        assert [a.i for a in deq.attribute if a.name == "axis"] == [0]
    assert stored == network_bytes(model, "int8")


def _c_array_bytes(source: str) -> int:
    """Bytes of the weight, scale and bias arrays the C source defines (weight_t is the storage type)."""
    weight_t = re.search(r"typedef (\w+) weight_t;", source).group(1)
    size = {"float": 4, "int8_t": 1, "uint16_t": 2}
    return sum(int(n) * size[weight_t if ctype == "weight_t" else ctype]
               for ctype, n in re.findall(r"static const (\w+) layer\d+_(?:weight|scale|bias)\[(\d+)\]", source))


def _maps_by_hooks(model, shape) -> list[int]:
    """Slow twin of the RAM count: numel of every map a batch-1 forward writes (activations and
    Flatten work in place), the final output excluded."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel()))
             for m in model if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.MaxPool1d, nn.MaxPool2d,
                                              nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sizes[:-1]


@pytest.mark.parametrize("s,pruned", CASES, ids=IDS)
def test_onnx_and_c_match_torch(s, pruned, cc, tmp_path):  # noqa: F811
    ort = pytest.importorskip("onnxruntime")
    model, shape = _float32(s, pruned)
    X = _inputs(shape)
    maps = _maps_by_hooks(model, shape)
    ram = 4 * max([maps[0]] + [a + b for a, b in zip(maps, maps[1:])])
    assert ram_bytes(model, input_shape=shape) == ram
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for dtype in DTYPES:
        res = export(model, tmp_path / f"{dtype}.onnx", format="onnx", dtype=dtype, input_shape=shape)
        flash = _flash_by_count(model, dtype)
        assert res.flash_bytes == network_bytes(model, dtype) == flash
        if dtype == "int8":
            _check_int8_onnx(res.paths[0], model)
        sess = ort.InferenceSession(str(res.paths[0]), opts, providers=["CPUExecutionProvider"])
        (y,) = sess.run(["output"], {"input": X.numpy()})
        assert np.abs(y - _reference(model, X, dtype)).max() <= TOL[dtype]
        res = export(model, tmp_path / f"{dtype}.c", format="c", dtype=dtype, prefix=dtype, input_shape=shape)
        assert res.ram_bytes == ram and res.flash_bytes == flash
        header, source = res.paths[1].read_text(), res.paths[0].read_text()
        assert f"#define {dtype.upper()}_RAM_BYTES {ram}" in header and f"RAM:   {ram} bytes" in header
        assert f"#define {dtype.upper()}_FLASH_BYTES {flash}" in header and f"Flash: {flash} bytes" in header
        assert _c_array_bytes(source) == flash  # the arrays the C file holds are the stated flash
        assert re.search(rf"static float scratch\[{ram // 4}\];", source)  # exactly the stated RAM
        assert "malloc" not in source
    out = compile_and_run(cc, tmp_path, DRIVER, [f"{d}.c" for d in DTYPES], X.numpy().tobytes())
    n_out = model[-1].out_features if isinstance(model[-1], nn.Linear) else model[-2].out_features
    y32, y16, y8, y32_in_place = np.frombuffer(out, dtype=np.float32).reshape(N_INPUTS, 4, n_out).transpose(1, 0, 2)
    for y, dtype in ((y32, "float32"), (y16, "float16"), (y8, "int8")):
        assert np.abs(y - _reference(model, X, dtype)).max() <= TOL[dtype], dtype
    assert np.array_equal(y32_in_place, y32)


DTYPES = ("float32", "float16", "int8")


DRIVER = """\
#include <stdio.h>
#include <string.h>
#include "float32.h"
#include "float16.h"
#include "int8.h"

int main(void)
{
    static float in[FLOAT32_INPUT_SIZE], out[FLOAT32_OUTPUT_SIZE];
    static float both[FLOAT32_INPUT_SIZE > FLOAT32_OUTPUT_SIZE ? FLOAT32_INPUT_SIZE : FLOAT32_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        float32_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        float16_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        int8_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        memcpy(both, in, sizeof in);
        float32_forward(both, both);
        fwrite(both, sizeof out, 1, stdout);
    }
    return 0;
}
"""


@pytest.mark.parametrize("s", SETTINGS[:4], ids=[s.id for s in SETTINGS[:4]])
def test_model_file_round_trip(s, tmp_path):
    model, _, X, _ = build(s)
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    save_model(tmp_path / "m.safetensors", net, {"dataset": "x"})
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta == {"dataset": "x", "input_shape": list(X.shape[1:])}
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X), rtol=1e-12, atol=1e-12)


SOFTPLUS_DRIVER = stream_driver("m.h", "m")


@pytest.mark.parametrize("threshold", [2.0, float("inf")], ids=["linear-branch", "inf"])
def test_cnn_softplus_is_torchs_in_onnx_and_c(threshold, cc, tmp_path):  # noqa: F811
    """One activation module for both networks: a CNN's softplus is built as an MLP's, the linear
    branch where beta * x > threshold, the plain formula for a threshold of +inf."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Softplus(beta=1.5, threshold=threshold), nn.Flatten(),
                          nn.Linear(3 * 5 * 4, 2)).eval()
    X = 3 * torch.randn(N_INPUTS, 1, 5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(X).numpy()
    res = export(model, tmp_path / "m.onnx", format="onnx", input_shape=(1, 5, 4))
    (y,) = ort.InferenceSession(str(res.paths[0]), providers=["CPUExecutionProvider"]).run(["output"], {"input": X.numpy()})
    assert np.abs(y - want).max() <= TOL["float32"]
    export(model, tmp_path / "m.c", format="c", prefix="m", input_shape=(1, 5, 4))
    y = np.frombuffer(compile_and_run(cc, tmp_path, SOFTPLUS_DRIVER, ["m.c"], X.numpy().tobytes()), dtype=np.float32)
    assert np.abs(y.reshape(N_INPUTS, 2) - want).max() <= TOL["float32"]


@pytest.mark.parametrize("fmt", ["onnx", "c"])
def test_cnn_softplus_threshold_that_cannot_be_written_is_refused(fmt, tmp_path):
    pytest.importorskip("onnx")
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Softplus(threshold=float("nan")), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="layer 0: softplus threshold nan cannot be exported"):
        export(model, tmp_path / f"m.{fmt}", format=fmt, input_shape=(1, 10))
    assert not any(tmp_path.iterdir())
