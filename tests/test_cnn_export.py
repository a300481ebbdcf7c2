"""CNN export: ONNX (onnxruntime) and C99 (compiled -std=c99 -Wall -Wextra -Werror, run) against
torch on 100 inputs per setting; the C scratch buffer is exactly the stated RAM; model files."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

import shrinknet
from shrinknet.export import export
from shrinknet.memory import network_bytes, ram_bytes
from shrinknet.modelio import load_model, save_model

from cnn_helpers import SETTINGS, build
from test_export import TOL, cc, compile_and_run  # noqa: F401  (cc is a fixture)

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


def _reference(model, X, dtype):
    m = copy.deepcopy(model)
    if dtype == "float16":
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.half().float())
    with torch.no_grad():
        return m(X).numpy()


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
    for dtype in ("float32", "float16"):
        res = export(model, tmp_path / f"{dtype}.onnx", format="onnx", dtype=dtype, input_shape=shape)
        assert res.flash_bytes == network_bytes(model, dtype) == sum(p.numel() for p in model.parameters()) * (
            4 if dtype == "float32" else 2)
        sess = ort.InferenceSession(str(res.paths[0]), opts, providers=["CPUExecutionProvider"])
        (y,) = sess.run(["output"], {"input": X.numpy()})
        assert np.abs(y - _reference(model, X, dtype)).max() <= TOL[dtype]
        res = export(model, tmp_path / f"{dtype}.c", format="c", dtype=dtype, prefix=dtype, input_shape=shape)
        assert res.ram_bytes == ram
        header, source = res.paths[1].read_text(), res.paths[0].read_text()
        assert f"#define {dtype.upper()}_RAM_BYTES {ram}" in header and f"RAM:   {ram} bytes" in header
        assert re.search(rf"static float scratch\[{ram // 4}\];", source)  # exactly the stated RAM
        assert "malloc" not in source
    out = compile_and_run(cc, tmp_path, DRIVER, ["float32.c", "float16.c"], X.numpy().tobytes())
    n_out = model[-1].out_features if isinstance(model[-1], nn.Linear) else model[-2].out_features
    y32, y16, y32_in_place = np.frombuffer(out, dtype=np.float32).reshape(N_INPUTS, 3, n_out).transpose(1, 0, 2)
    assert np.abs(y32 - _reference(model, X, "float32")).max() <= TOL["float32"]
    assert np.abs(y16 - _reference(model, X, "float16")).max() <= TOL["float16"]
    assert np.array_equal(y32_in_place, y32)


DRIVER = """\
#include <stdio.h>
#include <string.h>
#include "float32.h"
#include "float16.h"

int main(void)
{
    static float in[FLOAT32_INPUT_SIZE], out[FLOAT32_OUTPUT_SIZE];
    static float both[FLOAT32_INPUT_SIZE > FLOAT32_OUTPUT_SIZE ? FLOAT32_INPUT_SIZE : FLOAT32_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        float32_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        float16_forward(in, out);
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
