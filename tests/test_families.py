"""Depthwise-separable CNNs (issue #18) against slow plain-torch twins over a table of tiny float64
networks: a depthwise channel rides along with its producer's unit (model/layers/depthwise.py).

Twins: a unit is switched off by a forward hook that zeroes its channel at the producer (the
module right before the depthwise conv) and the torch model is re-evaluated; the exact criteria
against autograd on a gate there; the physically shrunk network against the masked one; exports
against torch (onnxruntime; the C compiled with cc); RAM against forward hooks; grouping against a
literal list of the coupled modules of each network."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from cnn_helpers import ACTS, gated_error, ref_error
from test_cnn_export import _reference
from test_export import TOL, cc, compile_and_run  # noqa: F401  (cc is a fixture)
from torch import nn
from torch.testing import assert_close

import shrinknet
from shrinknet.model.layers.depthwise import Depthwise
from shrinknet.ship.export import export
from shrinknet.store.memory import network_bytes, ram_bytes

N_OUT = 3


@dataclass(frozen=True)
class DwSetting:
    dims: int  # 1: Conv1d, 2: Conv2d
    pointwise: bool  # each depthwise conv followed by a pointwise 1x1 conv (else the last one feeds the Linear)
    pool: str  # after the last block: "max", "avg" (no padding), "global" (AdaptiveAvgPool(1)), "none"
    act: str  # of every layer
    dw_act: bool  # an activation after each depthwise conv
    bn: bool  # BatchNorm after every conv (folded), depthwise ones included
    depth: int  # depthwise convs
    loss: str

    @property
    def id(self) -> str:
        return (f"{self.dims}d-{'dwpw' if self.pointwise else 'dw'}-{self.pool}-{self.act}"
                f"-{'dwact' if self.dw_act else 'lin'}-{'bn' if self.bn else 'nobn'}-depth{self.depth}-{self.loss}")


def settings() -> list[DwSetting]:
    pools = ["global", "max", "avg", "none"]
    acts = ["relu", "tanh", "softplus", "relu6", "leaky", "sigmoid"]
    return [DwSetting(dims=1 + i % 2, pointwise=i % 3 != 2, pool=pools[i % 4], act=acts[i % 6], dw_act=i % 5 != 3,
                      bn=i % 2 == 0, depth=1 + (i // 2) % 2, loss=("mse", "cross_entropy")[(i // 3) % 2])
            for i in range(12)]


SETTINGS = settings()
IDS = [s.id for s in SETTINGS]


def build(s: DwSetting, seed: int = 0, n: int = 7):
    """(model, units, coupled, X, T): ``units[h]``: index of the module whose output is hidden layer
    h's units (a hook there switches a channel off); ``coupled[h]``: the literal list of the
    modules (name, what a unit indexes) a removal of one unit of h cuts."""
    g = torch.Generator().manual_seed(seed)
    Conv = nn.Conv1d if s.dims == 1 else nn.Conv2d
    BN = nn.BatchNorm1d if s.dims == 1 else nn.BatchNorm2d
    in_shape = (2, 9) if s.dims == 1 else (2, 6, 5)
    mods, units, members = [], [], []
    widths = [in_shape[0], 4, 3, 4]

    def add(m):
        mods.append(m)
        return str(len(mods) - 1)

    def layer(conv):
        names = [add(conv)]
        if s.bn:
            names.append(add(BN(conv.out_channels, dtype=torch.float64)))
        if ACTS[s.act] is not None:
            add(ACTS[s.act]())
        return names

    producer = layer(Conv(in_shape[0], widths[1], 3, padding=1, dtype=torch.float64))
    c = widths[1]
    for i in range(s.depth):
        units.append(len(mods) - 1)
        dw = [add(Conv(c, c, 3, padding=1, groups=c, dtype=torch.float64))]
        if s.bn:
            dw.append(add(BN(c, dtype=torch.float64)))
        if s.dw_act:
            add(ACTS[s.act]())
        members.append([(n, "output channel") for n in producer] + [(n, "channel") for n in dw])
        if s.pointwise or i < s.depth - 1:
            pw = Conv(c, widths[2 + i], 1, dtype=torch.float64)
            members[-1].append((str(len(mods)), "input channel"))
            producer = layer(pw)
            c = widths[2 + i]
    pool = {"max": (nn.MaxPool1d if s.dims == 1 else nn.MaxPool2d)(2),
            "avg": (nn.AvgPool1d if s.dims == 1 else nn.AvgPool2d)(2),
            "global": (nn.AdaptiveAvgPool1d if s.dims == 1 else nn.AdaptiveAvgPool2d)(1), "none": None}[s.pool]
    if pool is not None:
        add(pool)
    if s.pointwise:  # the last pointwise conv's units: a plain hidden layer feeding the Linear
        units.append(len(mods) - 1)
        members.append([(n, "output channel") for n in producer])
    add(nn.Flatten())
    width = nn.Sequential(*mods)(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1]
    members[-1].append((str(len(mods)), "input channel"))
    add(nn.Linear(width, N_OUT, dtype=torch.float64))
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for m in model.modules():
            for p in m.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.6 if p.ndim > 1 else 0.3))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=torch.float64))
    model.eval()
    X = torch.randn(n, *in_shape, generator=g, dtype=torch.float64)
    T = (torch.rand(n, N_OUT, generator=g, dtype=torch.float64) if s.loss == "mse"
         else torch.randint(0, N_OUT, (n,), generator=g))
    return model, units, members, X, T


def _channels(model, idx, X):
    return model[: idx + 1](X).shape[1]


def _gated(model, u, X, T, loss, g):
    return gated_error(model, u, X, T, loss, g)


def _masked_error(model, units, X, T, loss, masks):
    """E with every switched-off unit's channel zeroed at its producer by forward hooks."""
    hooks = [model[u].register_forward_hook(
        lambda _m, _i, out, m=m: out * m.to(out.dtype).view(1, -1, *([1] * (out.ndim - 2))))
        for u, m in zip(units, masks)]
    try:
        with torch.no_grad():
            return ref_error(model(X), T, loss)
    finally:
        for h in hooks:
            h.remove()


# -- parsing, grouping ----------------------------------------------------------------------------
@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_parse_is_exact_and_groups_the_coupled_channels(s):
    model, units, members, X, _ = build(s)
    net = shrinknet.as_net(model)
    assert net.n_hidden == len(units) and sum(len(b.weighted) for b in net.blocks) == s.depth
    assert bool(net.notes) == s.bn
    with torch.no_grad():
        y = model(X)
        assert_close(net.forward(X, net.full_masks()).o[-1], y, rtol=1e-12, atol=1e-12)
        assert_close(net.to_sequential()(X), y, rtol=1e-12, atol=1e-12)
        again = shrinknet.as_net(net.to_sequential())
        assert_close(again.forward(X, again.full_masks()).o[-1], y, rtol=1e-12, atol=1e-12)
    assert [net.coupled(h) for h in range(net.n_hidden)] == members
    assert net.params() == sum(p.numel() for p in net.to_sequential().parameters())


def test_grouping_of_one_network_literally():
    """DS-CNN block: conv-BN-relu, depthwise-BN-relu, pointwise-relu, global pooling, Linear."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 6, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)).eval()
    net = shrinknet.as_net(model)
    assert net.coupled(0) == [("0", "output channel"), ("1", "output channel"), ("3", "channel"), ("4", "channel"),
                              ("6", "input channel")]
    assert net.coupled(1) == [("6", "output channel"), ("10", "input channel")]


# -- criteria ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_brute_force_equals_zeroing_the_channel_at_its_producer(s):
    model, units, _, X, T = build(s)
    net = shrinknet.as_net(model)
    got = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, chunk_size=2)
    E0 = _masked_error(model, units, X, T, s.loss, [torch.ones(_channels(model, u, X), dtype=torch.bool) for u in units])
    for h, u in enumerate(units):
        want = []
        for c in range(net.hidden_sizes[h]):
            masks = [torch.ones(_channels(model, v, X), dtype=torch.bool) for v in units]
            masks[h][c] = False
            want.append(_masked_error(model, units, X, T, s.loss, masks) - E0)
        assert_close(got[h], torch.stack(want), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_taylor_criteria_equal_autograd_on_the_producer_gates(s):
    """taylor1/taylor2 on a unit = the gate of the producer's channel (the depthwise channel rides
    along); taylor2_exact = eq. 8 with the gate's exact second derivative."""
    model, units, _, X, T = build(s)
    t1 = shrinknet.saliency(model, X, T, "taylor1", loss=s.loss)
    t2x = shrinknet.saliency(model, X, T, "taylor2_exact", loss=s.loss)
    t2 = shrinknet.saliency(model, X, T, "taylor2", loss=s.loss)
    for h, u in enumerate(units):
        C = _channels(model, u, X)
        ones = torch.ones(C, dtype=torch.float64, requires_grad=True)
        f = functools.partial(_gated, model, u, X, T, s.loss)
        (grad,) = torch.autograd.grad(f(ones), ones)
        hess = torch.autograd.functional.hessian(f, torch.ones(C, dtype=torch.float64))
        assert_close(t1[h], -grad, rtol=1e-9, atol=1e-12)
        assert_close(t2x[h], -grad + 0.5 * hess.diagonal(), rtol=1e-9, atol=1e-12)
        assert torch.isfinite(t2[h]).all()


@pytest.mark.parametrize("dims", [1, 2])
def test_depthwise_derivative_rule_equals_dense_jacobian(dims):
    """dE/du = J^T dE/dout; d2E/du2 = (J o J)^T d2E/dout2 (eq. 73's diagonal rule)."""
    g = torch.Generator().manual_seed(4)
    kh = 1 if dims == 1 else 2
    op = Depthwise(torch.randn(3, 1, kh, 3, generator=g, dtype=torch.float64),
                   torch.randn(3, generator=g, dtype=torch.float64), (1, 2), (0, 1), (1, 1))
    shape = (3, 1 if dims == 1 else 4, 7)
    u = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    out = op.forward(u)
    J = torch.autograd.functional.jacobian(lambda t: op.forward(t.view(1, *shape)).reshape(-1), u.reshape(-1))
    g1, g2 = (torch.randn(out.shape, generator=g, dtype=torch.float64) for _ in range(2))
    d1, d2 = op.backward(u, out, g1, g2)
    assert_close(d1.reshape(-1), J.T @ g1.reshape(-1), rtol=1e-12, atol=1e-12)
    assert_close(d2.reshape(-1), (J * J).T @ g2.reshape(-1), rtol=1e-12, atol=1e-12)


# -- pruning and surgery ----------------------------------------------------------------------------
@pytest.mark.parametrize("s", SETTINGS[:6], ids=IDS[:6])
def test_shrunk_equals_masked_at_every_step(s):
    model, units, _, X, T = build(s)
    result = shrinknet.prune(model, X, T, method="brute_force", algorithm="iterative", loss=s.loss, progress=False)
    net = shrinknet.as_net(model)
    assert result.steps[-1].kept == [1] * net.n_hidden
    for k, step in enumerate(result.steps):
        masks = result.masks(k)
        small = result.network(k)
        with torch.no_grad():
            assert_close(small(X), net.forward(X, masks).o[-1], rtol=1e-10, atol=1e-12)
        assert_close(torch.tensor(step.error, dtype=torch.float64),
                     _masked_error(model, units, X, T, s.loss, masks), rtol=1e-10, atol=1e-12)
        assert step.params == sum(p.numel() for p in small.parameters()) == network_bytes(small) // 4
        if k > 0:  # iterative brute force removes the unit whose exact Delta E is least
            assert math.isclose(step.score, step.error - result.steps[k - 1].error, rel_tol=1e-8, abs_tol=1e-10)


@pytest.mark.parametrize("s", [SETTINGS[0], SETTINGS[5]], ids=[SETTINGS[0].id, SETTINGS[5].id])
@pytest.mark.parametrize("refit", [None, "every_step"])
def test_budget_refit_and_int8_on_a_dscnn(s, refit):
    model, _, _, X, T = build(s, n=40)
    model = model.float()
    X = X.float()
    full = network_bytes(model, "int8")
    budget = int(full * 0.7)
    result = shrinknet.prune(model, X, T, method="brute_force", algorithm="iterative", loss=s.loss, dtype="int8",
                             refit=refit, budget_bytes=budget, progress=False)
    k, small = result.fit(budget)
    assert network_bytes(small, "int8") == result.steps[k].bytes <= budget
    net = result.builder.build(result.masks(k)) if result.builder is not None else shrinknet.as_net(model)
    with torch.no_grad():  # the network handed out is the masked one as it runs (refit, int8 round trip)
        assert_close(small(X), net.forward(X, result.masks(k)).o[-1], rtol=1e-4, atol=1e-5)


# -- memory and exports -----------------------------------------------------------------------------
def _maps_by_hooks(model, shape) -> list[int]:
    """numel of every map a batch-1 forward writes (activations and Flatten in place), output excluded."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel()))
             for m in model if not isinstance(m, (nn.Flatten, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU6,
                                                  nn.LeakyReLU))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sizes[:-1]


def _array_bytes(source: str) -> int:
    """Bytes of the weight, scale and bias arrays the C source defines, a tail op's layerK_I_* too."""
    weight_t = re.search(r"typedef (\w+) weight_t;", source).group(1)
    size = {"float": 4, "int8_t": 1, "uint16_t": 2}
    return sum(int(n) * size[weight_t if ctype == "weight_t" else ctype] for ctype, n in
               re.findall(r"static const (\w+) layer\d+(?:_\d+)?_(?:weight|scale|bias)\[(\d+)\]", source))


def _small(s):
    model, _, _, X, _ = build(s)
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    masks = net.full_masks()
    for m in masks:
        m[0] = False
    return net.shrink(masks).to_sequential().float(), tuple(X.shape[1:])


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_onnx_and_c_match_torch(s, cc, tmp_path):  # noqa: F811
    ort = pytest.importorskip("onnxruntime")
    model, shape = _small(s)
    X = torch.randn(20, *shape, generator=torch.Generator().manual_seed(5))
    maps = _maps_by_hooks(model, shape)  # the rule: the two largest consecutive maps side by side
    ram = 4 * max([maps[0]] + [a + b for a, b in zip(maps, maps[1:])])
    assert ram_bytes(model, input_shape=shape) == ram
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for dtype in ("float32", "float16", "int8"):
        res = export(model, tmp_path / f"{dtype}.onnx", format="onnx", dtype=dtype, input_shape=shape)
        assert res.flash_bytes == network_bytes(model, dtype)
        sess = ort.InferenceSession(str(res.paths[0]), opts, providers=["CPUExecutionProvider"])
        (y,) = sess.run(["output"], {"input": X.numpy()})
        # the reference quantizes every Conv/Linear kernel per output channel: a depthwise one per channel
        assert np.abs(y - _reference(model, X, dtype)).max() <= TOL[dtype]
        res = export(model, tmp_path / f"{dtype}.c", format="c", dtype=dtype, prefix=dtype, input_shape=shape)
        assert res.ram_bytes == ram and res.flash_bytes == network_bytes(model, dtype)
        source = res.paths[0].read_text()
        assert _array_bytes(source) == res.flash_bytes  # the arrays the C file holds (depthwise ones too)
        assert f"static float scratch[{ram // 4}];" in source
    driver = """\
#include <stdio.h>
#include "float32.h"
#include "float16.h"
#include "int8.h"
int main(void)
{
    static float in[FLOAT32_INPUT_SIZE], out[FLOAT32_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        float32_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        float16_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        int8_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }
    return 0;
}
"""
    out = compile_and_run(cc, tmp_path, driver, ["float32.c", "float16.c", "int8.c"], X.numpy().tobytes())
    ys = np.frombuffer(out, dtype=np.float32).reshape(len(X), 3, N_OUT).transpose(1, 0, 2)
    for y, dtype in zip(ys, ("float32", "float16", "int8")):
        assert np.abs(y - _reference(model, X, dtype)).max() <= TOL[dtype], dtype


def test_int8_bytes_count_each_depthwise_channel_as_one_row():
    model, *_ = build(SETTINGS[0])
    model = shrinknet.as_net(model).to_sequential().float()
    want = sum(m.weight.numel() + 4 * m.weight.shape[0] + (4 * m.weight.shape[0] if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)))
    assert network_bytes(model, "int8") == want


def test_model_file_round_trips(tmp_path):
    from shrinknet.ship.modelio import load_model, save_model

    model, _, _, X, _ = build(SETTINGS[1])
    save_model(tmp_path / "m.safetensors", model)
    back, _ = load_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert_close(back.double()(X), model(X), rtol=1e-6, atol=1e-6)


# -- refusals ---------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


class Concat(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1)


@pytest.mark.parametrize("layers,needle", [
    ([nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3, groups=4), nn.Flatten(), nn.Linear(8, 2)], "channel multiplier 2"),
    ([nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)], "groups=2"),
    ([nn.Conv2d(2, 2, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2)], "must follow a convolution"),
    ([nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 3, 3, padding=1), nn.Flatten(),
      nn.Linear(3, 2)], "cannot be folded"),
    ([nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(4, 2)],
     "average pooling with padding"),
    ([nn.Conv2d(2, 4, 3), Residual(), nn.Flatten(), nn.Linear(4, 2)], "residual additions, concatenations"),
    ([nn.Conv2d(2, 4, 3), Concat(), nn.Flatten(), nn.Linear(8, 2)], "residual additions, concatenations"),
])
def test_refused_with_one_line(layers, needle):
    with pytest.raises(TypeError) as e:
        shrinknet.as_net(nn.Sequential(*layers))
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("s", SETTINGS[:3], ids=IDS[:3])
def test_gain_curves_scale_the_unit_at_its_producer(s):
    model, units, _, X, T = build(s)
    alphas = [0.0, 1.0, 2.5]
    curves = shrinknet.gain_curves(model, X, T, [(0, 1), (len(units) - 1, 0)], loss=s.loss, alphas=alphas)
    for curve in curves["curves"]:
        h, j = curve["neuron"]
        want = []
        for a in alphas:
            gate = torch.ones(_channels(model, units[h], X), dtype=torch.float64)
            gate[j] = a
            with torch.no_grad():
                want.append(gated_error(model, units[h], X, T, s.loss, gate))
        assert_close(curve["error"], torch.stack(want), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("algorithm,method", [("single", "taylor2"), ("iterative_pairs", "brute_force")])
def test_other_algorithms_keep_shrunk_equal_to_masked(algorithm, method):
    s = SETTINGS[2]
    model, units, _, X, T = build(s)
    result = shrinknet.prune(model, X, T, method=method, algorithm=algorithm, loss=s.loss, progress=False)
    net = shrinknet.as_net(model)
    for k, step in enumerate(result.steps):
        with torch.no_grad():
            assert_close(result.network(k)(X), net.forward(X, result.masks(k)).o[-1], rtol=1e-10, atol=1e-12)
        assert_close(torch.tensor(step.error, dtype=torch.float64),
                     _masked_error(model, units, X, T, s.loss, result.masks(k)), rtol=1e-10, atol=1e-12)


# -- train --arch dscnn, end to end --------------------------------------------------------------------
def test_train_dscnn_prune_int8_export_and_scratch_baseline(cc, tmp_path):  # noqa: F811
    """train --arch dscnn on mnist1d (the keyword-spotting stand-in), prune to an int8 budget with C
    and ONNX exports; the C agrees with torch; the scratch baseline rebuilds the kept DS-CNN."""
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from shrinknet.cli import cli
    from shrinknet.data import datasets as D
    from shrinknet.repair.retrain import scratch_baseline
    from shrinknet.ship.modelio import load_model

    def invoke(*args):
        r = CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    invoke("train", "--data", "mnist1d", "--arch", "dscnn", "--size", 400, "--channels", "4,6,6", "--epochs", 4,
           "--patience", 4, "--loss", "cross_entropy", "--force", "--out", tmp_path / "m")  # 4 epochs may sit at chance
    trained, meta = load_model(tmp_path / "m" / "model.safetensors")
    assert meta["training"]["arch"] == "dscnn" and meta["input_shape"] == [1, 40]
    assert [(type(m), m.groups) for m in trained if isinstance(m, nn.Conv1d)] == [
        (nn.Conv1d, 1), (nn.Conv1d, 4), (nn.Conv1d, 1), (nn.Conv1d, 6), (nn.Conv1d, 1)]
    assert isinstance(trained[-3], nn.AdaptiveAvgPool1d)  # global average pooling before the classifier
    budget = int(network_bytes(trained, "int8") * 0.6)
    invoke("prune", tmp_path / "m" / "model.safetensors", "--budget", budget, "--dtype", "int8", "--force",
           "--export", "onnx,c", "--no-analyze", "--out", tmp_path / "p")  # a 4-epoch network may sit at chance
    small, _ = load_model(tmp_path / "p" / "model.safetensors")
    assert network_bytes(small, "int8") <= budget
    X = D.load("mnist1d", size=400).X_test.reshape(-1, 1, 40)
    with torch.no_grad():
        want = _reference(small, torch.from_numpy(X), "int8")
    driver = """\
#include <stdio.h>
#include "model.h"
int main(void)
{
    static float in[SHRINKNET_INPUT_SIZE], out[SHRINKNET_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        shrinknet_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }
    return 0;
}
"""
    y = compile_and_run(cc, tmp_path / "p", driver, ["model.c"], X.tobytes())
    assert np.abs(np.frombuffer(y, np.float32).reshape(want.shape) - want).max() <= TOL["int8"]
    ds = D.load("mnist1d", size=400)
    recipe = {**meta["training"], "epochs": 2, "patience": 2}
    view = lambda split: ds.inputs(split).reshape(-1, 1, 40)
    runs = scratch_baseline(small, view("train"), ds.targets("train", "cross_entropy"), view("val"),
                            ds.targets("val", "cross_entropy"), None, None, loss="cross_entropy", recipe=recipe,
                            seeds=(0,), storage="int8")
    assert len(runs) == 1 and 0 <= runs[0]["val_accuracy"] <= 1


def test_a_model_file_whose_depthwise_channels_disagree_is_refused():
    from shrinknet.ship import describe

    model, _, _, X, _ = build(SETTINGS[1])
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    doc, tensors = describe.describe(net), dict(describe.tensors(net))
    (i, op), = net.blocks[0].weighted
    doc["blocks"][0]["tail"][i]["shape"][0] -= 1  # a forged file: one depthwise channel fewer
    tensors[f"layers.0.{i}.weight"] = op.weight[1:]
    if op.bias is not None:
        tensors[f"layers.0.{i}.bias"] = op.bias[1:]
    with pytest.raises(ValueError, match="depthwise conv over 3 channels gets 4"):
        describe.build(doc, tensors)


@pytest.mark.parametrize("s", SETTINGS[:2], ids=IDS[:2])
def test_brute_force_with_a_mask_threads_and_batches_equals_the_hooks(s):
    """Units already switched off score +inf; the others equal the hook twin on the masked network,
    whatever the worker threads and instance batches."""
    model, units, _, X, T = build(s)
    net = shrinknet.as_net(model)
    masks = net.full_masks()
    masks[0][1] = False
    one = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, mask=masks, threads=1)
    two = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, mask=masks, threads=2, batch_size=3)
    E0 = _masked_error(model, units, X, T, s.loss, masks)
    for h in range(net.n_hidden):
        for c in range(net.hidden_sizes[h]):
            if not masks[h][c]:
                assert one[h][c] == math.inf and two[h][c] == math.inf
                continue
            m = [mm.clone() for mm in masks]
            m[h][c] = False
            want = _masked_error(model, units, X, T, s.loss, m) - E0
            assert_close(one[h][c], want, rtol=1e-10, atol=1e-12)
            assert_close(two[h][c], want, rtol=1e-10, atol=1e-12)
