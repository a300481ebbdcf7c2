"""Residual networks (issue #18, part 2) against slow plain-torch twins over a table of tiny float64
networks: channels joined by an addition are one group (model/layers/resnet.py).

Twins: a group's unit is switched off by forward hooks that zero its channel at every producer
(each member's output module, a literal list per network) and the torch model is re-evaluated; the
exact criteria against autograd on one gate shared by those hooks; the physically shrunk network
against the masked one at every step; RAM against a tape of live tensors recorded by forward
hooks; grouping against a literal list of the coupled modules of each network."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pytest
import torch
from cnn_helpers import ACTS, ref_error
from torch import nn
from torch.testing import assert_close

import shrinknet
from shrinknet import Residual
from shrinknet.errors import InputError
from shrinknet.store.memory import network_bytes, ram_bytes

N_OUT = 3


@dataclass(frozen=True)
class ResSetting:
    dims: int  # 1: Conv1d, 2: Conv2d
    proj: bool  # the last residual block has a 1x1 projection (stride 2, more channels); else all identity
    pool: str  # "max": MaxPool(2) after the first residual block; "global": AdaptiveAvgPool(1) before Flatten; "none"
    act: str  # of every layer (after each addition too)
    bn: bool  # BatchNorm after every conv (folded), the projection's too
    depth: int  # residual blocks
    loss: str

    @property
    def id(self) -> str:
        return (f"{self.dims}d-{'proj' if self.proj else 'id'}-{self.pool}-{self.act}-{'bn' if self.bn else 'nobn'}"
                f"-depth{self.depth}-{self.loss}")


def settings() -> list[ResSetting]:
    pools = ["global", "max", "none"]
    acts = ["relu", "tanh", "leaky", "sigmoid", "relu6", "softplus"]
    return [ResSetting(dims=1 + i % 2, proj=i % 3 != 1, pool=pools[i % 3], act=acts[i % 6], bn=i % 4 < 2,
                       depth=1 + (i // 2) % 2, loss=("mse", "cross_entropy")[(i // 3) % 2]) for i in range(10)]


SETTINGS = settings()
IDS = [s.id for s in SETTINGS]


def build(s: ResSetting, seed: int = 0, n: int = 6):
    """(model, producers, coupled, X, T): ``producers[h]``: names of the modules whose outputs are
    group h's channels (hooks there switch a unit off); ``coupled[h]``: the literal list of the
    modules (name, what a unit indexes) a removal of one unit of h cuts. Groups are numbered by
    their lowest layer with weights."""
    g = torch.Generator().manual_seed(seed)
    Conv = nn.Conv1d if s.dims == 1 else nn.Conv2d
    BN = nn.BatchNorm1d if s.dims == 1 else nn.BatchNorm2d
    in_shape = (2, 8) if s.dims == 1 else (2, 6, 6)
    mods: list[nn.Module] = []
    groups: dict[int, dict] = {}  # lowest block -> {"prod": [...], "coupled": [...]}
    block = 0

    def conv_bn(cin, cout, k=3, stride=1, padding=1):
        c = Conv(cin, cout, k, stride, padding, dtype=torch.float64)
        return [c, BN(cout, dtype=torch.float64)] if s.bn else [c]

    def act():
        return ACTS[s.act]()

    mods += conv_bn(in_shape[0], 4) + [act()]
    groups[0] = {"prod": [str(len(mods) - 1)], "coupled": [("0", "output channel")]}
    cur, c = 0, 4  # the group of the map the next layer reads, its channels
    block = 1
    for i in range(s.depth):
        r = str(len(mods))
        proj = s.proj and i == s.depth - 1
        cout, stride = (5, 2) if proj else (c, 1)
        first = conv_bn(c, 3, stride=stride)
        body = first + [act()] + conv_bn(3, cout)
        groups[cur]["coupled"].append((f"{r}.block.0", "input channel"))
        groups[block] = {"prod": [f"{r}.block.{len(first)}"], "coupled": [(f"{r}.block.0", "output channel"),
                                                                          (f"{r}.block.{len(first) + 1}", "input channel")]}
        skip = None
        if proj:
            skip = nn.Sequential(*conv_bn(c, cout, 1, stride, 0)) if s.bn else Conv(c, cout, 1, stride, dtype=torch.float64)
            pname = f"{r}.projection.0" if s.bn else f"{r}.projection"
            groups[cur]["coupled"].append((pname, "input channel"))
            groups[block + 1] = {"prod": [], "coupled": [(pname, "output channel")]}
            cur = block + 1
        mods.append(Residual(nn.Sequential(*body), skip))
        mods.append(act())
        groups[cur]["coupled"].append((f"{r}.block.{len(first) + 1}", "output channel"))
        groups[cur]["prod"].append(str(len(mods) - 1))
        if s.pool == "max" and i == 0:
            mods.append((nn.MaxPool1d if s.dims == 1 else nn.MaxPool2d)(2))
            groups[cur]["prod"][-1] = str(len(mods) - 1)
        block, c = block + 2, cout
    if s.pool == "global":
        mods.append((nn.AdaptiveAvgPool1d if s.dims == 1 else nn.AdaptiveAvgPool2d)(1))
        groups[cur]["prod"][-1] = str(len(mods) - 1)
    mods.append(nn.Flatten())
    width = nn.Sequential(*mods).eval()(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1]
    groups[cur]["coupled"].append((str(len(mods)), "input channel"))
    mods.append(nn.Linear(width, N_OUT, dtype=torch.float64))
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for m in model.modules():
            for p in m.parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if p.ndim > 1 else 0.3))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=torch.float64))
    model.eval()
    X = torch.randn(n, *in_shape, generator=g, dtype=torch.float64)
    T = (torch.rand(n, N_OUT, generator=g, dtype=torch.float64) if s.loss == "mse"
         else torch.randint(0, N_OUT, (n,), generator=g))
    order = sorted(groups)
    return model, [groups[k]["prod"] for k in order], [groups[k]["coupled"] for k in order], X, T


def _gated_error(model, producers, X, T, loss, gates):
    """E with group h's channels multiplied by ``gates[h]`` at each of its producers (forward hooks)."""
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, w=w: out * w.to(out.dtype).view(1, -1, *([1] * (out.ndim - 2))))
        for names, w in zip(producers, gates) for name in names]
    try:
        return ref_error(model(X), T, loss)
    finally:
        for h in hooks:
            h.remove()


def _masked_error(model, producers, X, T, loss, masks):
    with torch.no_grad():
        return _gated_error(model, producers, X, T, loss, masks)


# -- parsing, grouping ------------------------------------------------------------------------------
@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_parse_is_exact_and_groups_the_coupled_channels(s):
    model, producers, coupled, X, _ = build(s)
    net = shrinknet.as_net(model)
    assert net.n_hidden == len(producers)
    with torch.no_grad():
        y = model(X)
        assert_close(net.forward(X, net.full_masks()).o[-1], y, rtol=1e-12, atol=1e-12)
        seq = net.to_sequential()
        assert_close(seq(X), y, rtol=1e-12, atol=1e-12)
        again = shrinknet.as_net(seq)
        assert_close(again.forward(X, again.full_masks()).o[-1], y, rtol=1e-12, atol=1e-12)
    assert [sorted(net.coupled(h)) for h in range(net.n_hidden)] == [sorted(c) for c in coupled]
    assert net.params() == sum(p.numel() for p in net.to_sequential().parameters())


def test_grouping_of_one_network_literally():
    """Two identity blocks share the stem's channels; a projection block starts a new group."""
    body = functools.partial(nn.Sequential)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(),
        Residual(body(nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1))), nn.ReLU(),
        Residual(body(nn.Conv2d(4, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1))), nn.ReLU(),
        Residual(body(nn.Conv2d(4, 5, 3, 2, 1), nn.ReLU(), nn.Conv2d(5, 6, 3, padding=1)), nn.Conv2d(4, 6, 1, 2)),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)).eval()
    net = shrinknet.as_net(model)
    assert net.hidden_sizes == (4, 3, 2, 5, 6)
    assert net.coupled(0) == [("0", "output channel"), ("2.block.0", "input channel"),
                              ("2.block.2", "output channel"), ("4.block.0", "input channel"),
                              ("4.block.2", "output channel"), ("6.block.0", "input channel"),
                              ("6.projection", "input channel")]
    assert net.coupled(1) == [("2.block.0", "output channel"), ("2.block.2", "input channel")]
    assert net.coupled(4) == [("6.block.2", "output channel"), ("10", "input channel"),
                              ("6.projection", "output channel")]


# -- criteria ---------------------------------------------------------------------------------------
def _full(net):
    return [torch.ones(c, dtype=torch.bool) for c in net.hidden_sizes]


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_brute_force_equals_masking_every_producer(s):
    model, producers, _, X, T = build(s)
    net = shrinknet.as_net(model)
    start = _full(net)
    start[0][1] = False  # one unit of the stem's group already removed: the rest is scored under it
    got = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, mask=start, chunk_size=2)
    E0 = _masked_error(model, producers, X, T, s.loss, start)
    for h in range(net.n_hidden):
        want = []
        for c in range(net.hidden_sizes[h]):
            masks = [m.clone() for m in start]
            masks[h][c] = False
            want.append(math.inf if not start[h][c] else _masked_error(model, producers, X, T, s.loss, masks) - E0)
        assert_close(got[h], torch.tensor(want, dtype=torch.float64), rtol=1e-10, atol=1e-12)


SOME = [SETTINGS[i] for i in (0, 1, 3, 4, 7)]  # both skips, 1-D and 2-D, both losses, a 3-member identity group


@pytest.mark.parametrize("s", SOME, ids=[s.id for s in SOME])
def test_taylor_criteria_equal_autograd_on_the_group_gate(s):
    """taylor1 = -dE/dg of one gate shared by every producer of the group (exact); taylor2_exact =
    eq. 8 with the gate's exact second derivative; taylor2 (the diagonal approximation) is finite
    and its first-order part is taylor1."""
    model, producers, _, X, T = build(s)
    net = shrinknet.as_net(model)
    t1 = shrinknet.saliency(model, X, T, "taylor1", loss=s.loss)
    t2x = shrinknet.saliency(model, X, T, "taylor2_exact", loss=s.loss)
    t2 = shrinknet.saliency(model, X, T, "taylor2", loss=s.loss)
    ones = [torch.ones(c, dtype=torch.float64) for c in net.hidden_sizes]
    for h in range(net.n_hidden):
        def f(gate, h=h):
            return _gated_error(model, producers, X, T, s.loss, ones[:h] + [gate] + ones[h + 1:])
        gate = ones[h].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(gate), gate)
        hess = torch.autograd.functional.hessian(f, ones[h].clone())
        assert_close(t1[h], -grad, rtol=1e-9, atol=1e-12)
        assert_close(t2x[h], -grad + 0.5 * hess.diagonal(), rtol=1e-9, atol=1e-12)
        assert torch.isfinite(t2[h]).all()
    data = shrinknet.model.network.prepare(net, X, T, shrinknet.model.losses.get(s.loss))
    for r, g1 in zip(net.sweep(shrinknet.model.losses.get(s.loss), data, net.full_masks()), t1):
        assert_close((-r.o * r.dE_do).sum((0, 2)), g1, rtol=1e-12, atol=1e-12)


# -- pruning and surgery ----------------------------------------------------------------------------
@pytest.mark.parametrize("s, algorithm", [(s, a) for s in SOME[:2] + SOME[-1:] for a in ("iterative", "single")]
                         + [(SETTINGS[4], "iterative_pairs")],
                         ids=[f"{s.id}-{a}" for s in SOME[:2] + SOME[-1:] for a in ("iterative", "single")]
                         + [f"{IDS[4]}-iterative_pairs"])
def test_shrunk_equals_masked_at_every_step(s, algorithm):
    model, producers, _, X, T = build(s)
    result = shrinknet.prune(model, X, T, method="brute_force", algorithm=algorithm, loss=s.loss, progress=False)
    net = shrinknet.as_net(model)
    assert result.steps[-1].kept == [1] * net.n_hidden
    for k, step in enumerate(result.steps):
        masks = result.masks(k)
        small = result.network(k)
        assert all(isinstance(m, Residual) for m in small if isinstance(m, Residual))
        with torch.no_grad():
            assert_close(small(X), net.forward(X, masks).o[-1], rtol=1e-10, atol=1e-12)
        assert_close(torch.tensor(step.error, dtype=torch.float64),
                     _masked_error(model, producers, X, T, s.loss, masks), rtol=1e-10, atol=1e-12)
        assert step.params == sum(p.numel() for p in small.parameters()) == network_bytes(small) // 4
        if k > 0 and algorithm == "iterative":  # iterative brute force removes the unit whose exact Delta E is least
            assert math.isclose(step.score, step.error - result.steps[k - 1].error, rel_tol=1e-8, abs_tol=1e-10)


@pytest.mark.parametrize("refit", [None, "every_step"])
def test_budget_refit_and_int8_on_a_resnet(refit):
    s = SETTINGS[0]
    model, _, _, X, T = build(s, n=40)
    model, X = model.float(), X.float()
    full = network_bytes(model, "int8")
    budget = int(full * 0.7)
    result = shrinknet.prune(model, X, T, method="brute_force", algorithm="iterative", loss=s.loss, dtype="int8",
                             refit=refit, budget_bytes=budget, progress=False)
    k, small = result.fit(budget)
    assert network_bytes(small, "int8") == result.steps[k].bytes <= budget
    net = result.builder.build(result.masks(k)) if result.builder is not None else shrinknet.as_net(model)
    with torch.no_grad():  # the network handed out is the masked one as it runs (refit, int8 round trip)
        assert_close(small(X), net.forward(X, result.masks(k)).o[-1], rtol=1e-4, atol=1e-5)


# -- memory -----------------------------------------------------------------------------------------
_IN_PLACE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU6, nn.LeakyReLU, nn.Flatten, nn.Identity)


def _ram_by_hooks(model, shape) -> int:
    """Peak floats of live tensors over a batch-1 forward, from a tape that forward hooks record:
    every leaf module reads its input's buffer and writes a new one (activations and Flatten: the
    same buffer, in place); a Residual's addition reads its skip (x, or the projection's output)
    and writes into its branch's buffer. A buffer lives from its writing op through its last read."""
    buf, tape = {}, []  # id(tensor) -> buffer; (written buffer, read buffers, floats)

    def leaf(m, inp, out):
        src = buf[id(inp[0])]
        if isinstance(m, _IN_PLACE):
            buf[id(out)] = src
            tape.append((src, (src,), 0))
        else:
            buf[id(out)] = len(tape) + 1
            tape.append((len(tape) + 1, (src,), out.numel()))

    def add(m, inp, out):  # after the branch (and the projection) ran: out = branch + skip
        branch = buf[id(m._branch_out)]
        skip = buf[id(m._skip_out)] if m.projection is not None else buf[id(inp[0])]
        buf[id(out)] = branch
        tape.append((branch, (branch, skip), 0))

    hooks = []
    for m in model.modules():
        if isinstance(m, Residual):
            hooks.append(m.register_forward_hook(add))
            hooks.append(m.block.register_forward_hook(lambda mm, i, o, r=m: setattr(r, "_branch_out", o)))
            if m.projection is not None:
                hooks.append(m.projection.register_forward_hook(lambda mm, i, o, r=m: setattr(r, "_skip_out", o)))
        elif not list(m.children()):
            hooks.append(m.register_forward_hook(leaf))
    x = torch.zeros(1, *shape)
    buf[id(x)] = 0
    keep = []  # hold every tensor so that no id is reused during the pass
    with torch.no_grad():
        hooks.append(torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: keep.append(o)))
        model(x)
    for hk in hooks:
        hk.remove()
    size = {w: n for w, _, n in tape if n}
    first, last = {}, {}
    for t, (w, reads, _) in enumerate(tape):
        first.setdefault(w, t)
        last[w] = max(last.get(w, t), t)
        for r in reads:
            last[r] = t
    final = tape[-1][0]
    return max(sum(n for w, n in size.items() if w not in (0, final) and first[w] <= t <= last[w])
               for t in range(len(tape)))


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_ram_is_the_peak_of_live_tensors(s):
    model, _, _, X, _ = build(s)
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    masks = net.full_masks()
    for m in masks:
        m[0] = False
    small = net.shrink(masks).to_sequential().float()
    shape = tuple(X.shape[1:])
    assert ram_bytes(small, input_shape=shape) == 4 * _ram_by_hooks(small, shape)
    assert ram_bytes(model, masks, input_shape=shape) == ram_bytes(small, input_shape=shape)


# -- refusals ---------------------------------------------------------------------------------------
def _conv(a, b, **kw):
    return nn.Conv2d(a, b, 3, padding=1, **kw)


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(_conv(1, 4), nn.ReLU(), Residual(nn.Sequential(_conv(4, 3), nn.ReLU(), _conv(3, 5))), nn.Flatten(),
                   nn.Linear(5 * 16, 2)), "adds tensors with different channel counts"),
    (nn.Sequential(_conv(1, 4), Residual(nn.Sequential(_conv(4, 4), Residual(nn.Sequential(_conv(4, 4))))),
                   nn.Flatten(), nn.Linear(64, 2)), "is nested inside Residual"),
    (nn.Sequential(Residual(nn.Sequential(_conv(1, 1))), _conv(1, 4), nn.Flatten(), nn.Linear(64, 2)),
     "must follow a convolution"),
    (nn.Sequential(_conv(1, 4), Residual(nn.Sequential(_conv(4, 4))), nn.BatchNorm2d(4).eval(), nn.Flatten(),
                   nn.Linear(64, 2)), "a residual addition is not one"),
    (nn.Sequential(_conv(1, 4), Residual(nn.Sequential(_conv(4, 4), nn.Conv2d(4, 4, 3, padding=1, groups=4))),
                   nn.Flatten(), nn.Linear(64, 2)), "depthwise convolution in a network with residual additions"),
    (nn.Sequential(_conv(1, 4), Residual(nn.Sequential(_conv(4, 4), nn.MaxPool2d(2))), nn.Flatten(),
                   nn.Linear(16, 2)), "the residual addition adds a map of shape"),
    (nn.Sequential(_conv(1, 4), Residual(nn.Sequential(_conv(4, 4)), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())),
                   nn.Flatten(), nn.Linear(64, 2)), "projection must be one nn.Conv1d/Conv2d"),
], ids=["channels", "nested", "first", "bn-after-add", "depthwise", "spatial", "projection-act"])
def test_refusals_in_one_line(model, match):
    with pytest.raises((TypeError, ValueError, InputError)) as e:
        net = shrinknet.as_net(model.eval())
        net.bind((1, 4, 4))
    assert match in str(e.value) and "\n" not in str(e.value)


# -- custom modules traced by torch.fx --------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, c, o, stride, act):
        super().__init__()
        self.conv1, self.act = nn.Conv2d(c, o, 3, stride, 1), act
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1)
        self.short = nn.Conv2d(c, o, 1, stride) if stride > 1 or c != o else None

    def forward(self, x):
        out = self.conv2(self.act(self.conv1(x)))
        if self.short is None:
            return torch.tanh(x + out)
        return torch.tanh(out + self.short(x))


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.b1, self.b2 = nn.Conv2d(1, 4, 3, padding=1), _Block(4, 4, 1, nn.ReLU()), _Block(4, 5, 2, nn.ReLU())
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = self.b2(self.b1(torch.tanh(self.stem(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _container(m: _Custom) -> nn.Sequential:
    """The same network written with shrinknet.Residual (the very modules)."""
    return nn.Sequential(m.stem, nn.Tanh(), Residual(nn.Sequential(m.b1.conv1, nn.ReLU(), m.b1.conv2)), nn.Tanh(),
                         Residual(nn.Sequential(m.b2.conv1, nn.ReLU(), m.b2.conv2), m.b2.short), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), m.fc)


def test_traced_residual_is_the_container():
    torch.manual_seed(3)
    m = _Custom().double().eval()
    X = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    T = torch.randint(0, 3, (5,))
    traced, seq = shrinknet.as_net(m), shrinknet.as_net(_container(m))
    assert traced.groups == seq.groups == ((0, 2), (1,), (3,), (4,))
    assert [len(traced.coupled(h)) for h in range(4)] == [len(seq.coupled(h)) for h in range(4)] == [5, 2, 2, 3]
    with torch.no_grad():
        assert_close(traced.forward(X, traced.full_masks()).o[-1], m(X), rtol=1e-12, atol=1e-12)
    for a, b in zip(shrinknet.saliency(m, X, T, "brute_force", loss="cross_entropy"),
                    shrinknet.saliency(_container(m), X, T, "brute_force", loss="cross_entropy")):
        assert_close(a, b, rtol=1e-12, atol=1e-14)


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.d, self.fc = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1), nn.Linear(4 * 4, 2)

    def forward(self, x):
        x = self.c(x)
        return self.fc(torch.flatten(torch.cat([x, self.d(x)], 1), 1))


class _TwoBodies(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.a, self.b, self.fc = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1), nn.Linear(8, 2)

    def forward(self, x):
        x = self.c(x)
        return self.fc(torch.flatten(torch.relu(self.a(x)) + torch.relu(self.b(x)), 1))


class _Crossing(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.a, self.fc = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1), nn.Linear(8, 2)

    def forward(self, x):
        x = self.c(x)
        y = self.a(x)
        return self.fc(torch.flatten(x + y, 1)) + y.sum()


@pytest.mark.parametrize("model, match", [
    (_Concat(), "concatenates two activations"),
    (_TwoBodies(), "neither of which is a projection"),
    (_Crossing(), "is read outside its residual branch"),
], ids=["concat", "two-bodies", "crossing"])
def test_traced_refusals_in_one_line(model, match):
    with pytest.raises(InputError) as e:
        shrinknet.as_net(model)
    assert match in str(e.value) and "\n" not in str(e.value)


def test_gain_curves_and_correlated_pairs_on_groups():
    """gain_curves scales a group's gate at every producer (hooks); correlated_pairs' Delta E are exact."""
    s = SETTINGS[7]
    model, producers, _, X, T = build(s)
    net = shrinknet.as_net(model)
    alphas = [0.0, 1.0, 2.5]
    curves = shrinknet.gain_curves(model, X, T, [(0, 1), (net.n_hidden - 1, 0)], loss=s.loss, alphas=alphas)
    ones = [torch.ones(c, dtype=torch.float64) for c in net.hidden_sizes]
    for curve in curves["curves"]:
        h, j = curve["neuron"]
        want = []
        for a in alphas:
            gates = [o.clone() for o in ones]
            gates[h][j] = a
            with torch.no_grad():
                want.append(_gated_error(model, producers, X, T, s.loss, gates))
        assert_close(curve["error"], torch.stack(want), rtol=1e-10, atol=1e-12)
    E0 = _masked_error(model, producers, X, T, s.loss, _full(net))
    for row in shrinknet.correlated_pairs(model, X, T, loss=s.loss, top=2):
        masks = _full(net)
        masks[row["layer"]][[row["j"], row["k"]]] = False
        assert_close(torch.tensor(row["delta_both"], dtype=torch.float64),
                     _masked_error(model, producers, X, T, s.loss, masks) - E0, rtol=1e-10, atol=1e-12)
