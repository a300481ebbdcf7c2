"""The general (CNN) path against slow plain-torch references over a table of tiny float64 CNNs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import shrinknet
from shrinknet.model.layers import conv as conv_mod
from shrinknet.model.layers import linear as linear_mod
from shrinknet.model.layers import pool as pool_mod

from cnn_helpers import SETTINGS, build, gated_error, ref_error

IDS = [s.id for s in SETTINGS]


def _per_unit_reference(model, units, X, T, loss, fn):
    return [torch.stack([fn(h, c) for c in range(_channels(model, units[h], X))]) for h in range(len(units))]


def _channels(model, idx, X):
    return model[: idx + 1](X).shape[1]


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_parse_folds_batchnorm_exactly_and_round_trips(s):
    model, units, X, T = build(s)
    net = shrinknet.as_net(model)
    assert net.general and len(net.hidden_sizes) == len(units)
    assert bool(net.notes) == s.bn  # BatchNorm folding is reported
    with torch.no_grad():
        y = model(X)
        trace = net.forward(X, net.full_masks())
        assert_close(trace.o[-1], y, rtol=1e-12, atol=1e-12)
        assert_close(net.to_sequential()(X), y, rtol=1e-12, atol=1e-12)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.to_sequential().modules())


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_brute_force_equals_zeroing_each_channel(s):
    model, units, X, T = build(s)
    got = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, chunk_size=2)
    with torch.no_grad():
        E0 = ref_error(model(X), T, s.loss)

        def zeroed(h, c):
            gate = torch.ones(_channels(model, units[h], X), dtype=torch.float64)
            gate[c] = 0
            return gated_error(model, units[h], X, T, s.loss, gate) - E0

        want = _per_unit_reference(model, units, X, T, s.loss, zeroed)
    for g, w in zip(got, want):
        assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("s", SETTINGS, ids=IDS)
def test_taylor_criteria_equal_autograd_on_channel_gates(s):
    model, units, X, T = build(s)
    t1 = shrinknet.saliency(model, X, T, "taylor1", loss=s.loss)
    t2x = shrinknet.saliency(model, X, T, "taylor2_exact", loss=s.loss)
    t2 = shrinknet.saliency(model, X, T, "taylor2", loss=s.loss)
    for h, u in enumerate(units):
        C = _channels(model, u, X)
        ones = torch.ones(C, dtype=torch.float64, requires_grad=True)
        f = lambda g: gated_error(model, u, X, T, s.loss, g)  # noqa: E731
        (grad,) = torch.autograd.grad(f(ones), ones)
        hess = torch.autograd.functional.hessian(f, torch.ones(C, dtype=torch.float64))
        assert_close(t1[h], -grad, rtol=1e-9, atol=1e-12)  # eq. 6: -dE/dg at g = 1
        assert_close(t2x[h], -grad + 0.5 * hess.diagonal(), rtol=1e-9, atol=1e-12)  # eq. 8, exact
        assert torch.isfinite(t2[h]).all()


def test_taylor2_is_exact_where_the_diagonal_recursion_is():
    """MSE, last hidden layer a Linear (one position per unit): eq. 73 drops nothing."""
    s = next(s for s in SETTINGS if s.loss == "mse" and s.depth == 1)
    model, units, X, T = build(s)
    t2 = shrinknet.saliency(model, X, T, "taylor2", loss="mse")
    t2x = shrinknet.saliency(model, X, T, "taylor2_exact", loss="mse")
    # a gate on a Linear unit of one instance = the neuron; summed over instances = the paper's eq. 8
    assert_close(t2[-1], t2x[-1], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(t2[0], t2x[0])  # conv channels: cross-position terms are dropped


# -- every layer module's derivative rule against its dense Jacobian ---------------------------
def _ops():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(3, 2, 2, 3, generator=g, dtype=torch.float64)
    return [
        ("conv", conv_mod.Conv(W, None, (1, 2), (1, 0), (2, 1)), (2, 6, 7)),
        ("maxpool", pool_mod.MaxPool((2, 3), (1, 2), (1, 1), (1, 1)), (2, 5, 6)),
        ("avgpool", pool_mod.AvgPool((2, 2), (2, 1), (1, 0)), (2, 5, 4)),
        ("adaptive", pool_mod.AdaptiveAvgPool((2, 3)), (2, 5, 7)),
        ("linear-after-flatten", linear_mod.Dense(torch.randn(4, 2 * 3 * 2, generator=g, dtype=torch.float64),
                                                  None, 6), (2, 3, 2)),
    ]


@pytest.mark.parametrize("name,op,shape", _ops(), ids=[o[0] for o in _ops()])
def test_layer_derivative_rules_equal_dense_jacobian(name, op, shape):
    """dE/du = J^T dE/dout; d2E/du2 = (J o J)^T d2E/dout2 (eq. 73's diagonal rule) for every layer."""
    g = torch.Generator().manual_seed(4)
    u = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    out = op.forward(u)
    J = torch.autograd.functional.jacobian(lambda t: op.forward(t.view(1, *shape)).reshape(-1), u.reshape(-1))
    g1 = torch.randn(out.shape, generator=g, dtype=torch.float64)
    g2 = torch.randn(out.shape, generator=g, dtype=torch.float64)
    if hasattr(op, "contribution"):
        d1, d2 = op.backward(g1, g2, tuple(u.shape))
    else:
        d1, d2 = op.backward(u, out, g1, g2)
    assert_close(d1.reshape(-1), J.T @ g1.reshape(-1), rtol=1e-12, atol=1e-12)
    assert_close(d2.reshape(-1), (J * J).T @ g2.reshape(-1), rtol=1e-12, atol=1e-12)
    if hasattr(op, "contribution"):  # brute force's per-channel contribution: the op on that channel alone
        for c in range(shape[0]):
            only = torch.zeros_like(u)
            only[:, c] = u[:, c]
            want = op.forward(only) - (0 if op.bias is None else op.bias.view(-1, *[1] * (out.ndim - 2)))
            assert_close(op.contribution(u, torch.tensor([c]))[0], want, rtol=1e-12, atol=1e-12)


# -- pruning: the physically shrunk network is the masked one at every step --------------------
@pytest.mark.parametrize("s", SETTINGS[:4], ids=IDS[:4])
def test_shrunk_equals_masked_at_every_step(s):
    model, units, X, T = build(s)
    result = shrinknet.prune(model, X, T, method="brute_force", algorithm="iterative", loss=s.loss, progress=False)
    net = shrinknet.as_net(model)
    assert result.steps[-1].kept == [1] * net.n_hidden
    for k, step in enumerate(result.steps):
        masks = result.masks(k)
        small = result.network(k)
        with torch.no_grad():
            masked = net.forward(X, masks).o[-1]
            assert_close(small(X), masked, rtol=1e-10, atol=1e-12)
        assert step.params == sum(p.numel() for p in small.parameters())
        assert_close(torch.tensor(step.error, dtype=torch.float64), ref_error(small(X), T, s.loss).detach(), rtol=1e-10, atol=1e-12)
        if k > 0:  # iterative brute force removes the channel whose exact Delta E is least
            assert math.isclose(step.score, step.error - result.steps[k - 1].error, rel_tol=1e-8, abs_tol=1e-10)


def test_budget_and_single_ranking_on_a_cnn():
    s = SETTINGS[1]
    model, units, X, T = build(s)
    full = shrinknet.network_bytes(model)
    result = shrinknet.prune(model, X, T, method="taylor2", algorithm="single", loss=s.loss,
                             budget_bytes=full - 20, progress=False)
    assert result.steps[-1].bytes <= full - 20 < result.steps[-2].bytes
    k, small = result.fit(full - 20)
    assert shrinknet.network_bytes(small) == result.steps[k].bytes


# -- refusals -----------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


BN_TRAIN = nn.BatchNorm2d(2)


@pytest.mark.parametrize("layers,needle", [
    ([nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2), nn.Linear(2, 2)], "groups=2"),
    ([nn.Conv2d(2, 2, 3), BN_TRAIN.train(), nn.Flatten(), nn.Linear(2, 2), nn.Linear(2, 2)], "training mode"),
    ([nn.Conv2d(2, 2, 3), Residual(), nn.Flatten(), nn.Linear(2, 2), nn.Linear(2, 2)], "Residual"),
    ([nn.Conv2d(2, 2, 3), nn.Linear(2, 2), nn.Linear(2, 2)], "without nn.Flatten"),
    ([nn.Conv2d(2, 2, 3), nn.ReLU(), nn.BatchNorm2d(2).eval(), nn.Flatten(), nn.Linear(2, 2)], "does not directly follow"),
], ids=["groups", "bn-training", "residual", "no-flatten", "bn-after-activation"])
def test_unsupported_layers_refused_with_one_line_naming_them(layers, needle):
    with pytest.raises(TypeError) as e:
        shrinknet.as_net(nn.Sequential(*layers))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and "layer" in msg


def test_mlp_path_is_unchanged_for_plain_mlps():
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))
    assert not getattr(shrinknet.as_net(model), "general", False)


def test_ram_budget_stops_pruning_and_matches_each_shrunk_network():
    s = SETTINGS[5]
    model, units, X, T = build(s)
    shape = tuple(X.shape[1:])
    start = shrinknet.store.memory.ram_bytes(model, input_shape=shape)
    result = shrinknet.prune(model, X, T, loss=s.loss, ram_budget_bytes=start - 1, progress=False)
    assert result.steps[-1].ram_bytes <= start - 1 < result.steps[-2].ram_bytes
    for k, step in enumerate(result.steps):
        assert step.ram_bytes == shrinknet.store.memory.ram_bytes(result.network(k), input_shape=shape)
    k, _ = result.fit(None, start - 1)
    assert result.steps[k].ram_bytes <= start - 1
    with pytest.raises(ValueError, match="RAM budget"):
        shrinknet.prune(model, X, T, loss=s.loss, ram_budget_bytes=4, progress=False)


def test_mlp_ram_is_the_c_scratch(tmp_path):
    model = nn.Sequential(nn.Linear(4, 7), nn.Sigmoid(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 2))
    res = shrinknet.export(model, tmp_path / "m.c", format="c")
    assert shrinknet.store.memory.ram_bytes(model) == res.ram_bytes == 4 * (7 + 5)


@pytest.mark.parametrize("algorithm", ["iterative_pairs", "single"])
def test_cnn_run_resumes_from_a_checkpoint_exactly(algorithm):
    import json

    from shrinknet.choose import checkpoint

    s = SETTINGS[2]
    model, units, X, T = build(s)
    kw = dict(method="brute_force", algorithm=algorithm, loss=s.loss, progress=False, pairs=2)
    want = shrinknet.prune(model, X, T, **kw)
    saved = []
    shrinknet.prune(model, X, T, **kw, checkpoint=lambda state, final=False: saved.append(
        checkpoint.decode(json.loads(checkpoint.dumps(state.to_dict())))))
    got = shrinknet.prune(model, X, T, **kw, resume=saved[len(saved) // 2])
    assert got.steps == want.steps


def test_analyses_run_on_channels():
    s = SETTINGS[3]
    model, units, X, T = build(s)
    cmp = shrinknet.compare_estimates(model, X, T, loss=s.loss, methods=("taylor1", "taylor2"))
    assert_close(cmp["truth"][0], shrinknet.saliency(model, X, T, "brute_force", loss=s.loss)[0])
    curves = shrinknet.gain_curves(model, X, T, [(0, 1)], loss=s.loss, alphas=[0.0, 1.0])
    E0 = curves["base_error"]
    assert math.isclose(float(curves["curves"][0]["error"][0]) - E0, float(cmp["truth"][0][1]), rel_tol=1e-9)
    assert math.isclose(float(curves["curves"][0]["error"][1]), E0, rel_tol=1e-12)
    for row in shrinknet.correlated_pairs(model, X, T, loss=s.loss, top=2):
        assert -1 - 1e-9 <= row["corr"] <= 1 + 1e-9


@pytest.mark.parametrize("method", ["brute_force", "taylor1", "taylor2", "magnitude"])
def test_general_path_equals_the_mlp_fast_path_on_mlps(method):
    """The layer modules carry MLPs too: parsed as a SeqNet, an MLP scores exactly as on its own path."""
    from helpers import SETTINGS as MLP_SETTINGS
    from helpers import build as build_mlp

    from shrinknet.model import losses, network
    from shrinknet.model.parse import parse
    from shrinknet.score.saliency import score_batch

    for s in MLP_SETTINGS[::5]:
        model, _, X, T = build_mlp(s)
        fast, general = shrinknet.as_net(model), parse(model)
        assert not getattr(fast, "general", False) and general.general
        loss = losses.get(s.loss)
        for net in (fast, general):
            net.scores = score_batch(method, net, loss, network.prepare(net, X, T, loss), net.full_masks())
        for a, b in zip(fast.scores, general.scores):
            assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert shrinknet.store.memory.network_params(general) == shrinknet.store.memory.network_params(fast)


@pytest.mark.parametrize("s", [SETTINGS[0], SETTINGS[7]], ids=[SETTINGS[0].id, SETTINGS[7].id])
def test_refit_is_ridge_least_squares_over_all_positions(s):
    """Each refit layer's weights solve the normal equations of its pre-activations, built here
    from torch's own unfold/flatten on the refit network; shrunk == masked; error no worse at step 1+."""
    from shrinknet.repair.refit import Refitter

    model, units, X, T = build(s, n=40)
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    masks = net.full_masks()
    masks[0][1] = False
    ref = Refitter(net, X, ridge=0.0)
    fit = ref.build(masks)
    trace = fit.forward(X, masks)
    target = net.forward(X, net.full_masks()).x
    for k in range(1, len(fit.blocks)):
        p, o = fit.blocks[k].param, trace.o[k - 1]
        keep = masks[k - 1].nonzero().squeeze(1) if k == 1 else torch.arange(o.shape[1])
        if p.kind == "conv":
            cols = torch.nn.functional.unfold(o[:, keep], p.weight.shape[2:], p.dilation, p.padding, p.stride)
            A = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            Y = target[k].flatten(2).transpose(1, 2).reshape(-1, p.out_units)
            W = p.weight[:, keep].reshape(p.out_units, -1)
        else:
            A = o.reshape(len(o), o.shape[1], -1)[:, keep].reshape(len(o), -1)
            Y = target[k]
            W = p.weight.view(p.out_units, o.shape[1], -1)[:, keep].reshape(p.out_units, -1)
        A1 = torch.cat([A, torch.ones(len(A), 1, dtype=A.dtype)], 1)
        theta = torch.cat([W.T, p.bias[None]], 0)
        grad = A1.T @ (A1 @ theta - Y)  # zero at the least-squares solution
        assert grad.abs().max() <= 1e-8 * max(1.0, float((A1.T @ Y).abs().max()))
    result = shrinknet.prune(model, X, T, loss=s.loss, refit="final", ridge=0.0, progress=False, max_fraction=0.3)
    for k in range(len(result.steps)):
        small = result.network(k)
        with torch.no_grad():
            assert_close(ref.build(result.masks(k)).forward(X, result.masks(k)).o[-1], small(X), rtol=1e-9, atol=1e-10)


def test_checkpoint_fingerprint_sees_the_pooling():
    from shrinknet.choose import checkpoint

    s = SETTINGS[0]
    model, units, X, T = build(s)
    other = nn.Sequential(*[nn.AvgPool1d(2, 1) if isinstance(m, nn.MaxPool1d) else m for m in model])
    a, b = shrinknet.as_net(model), shrinknet.as_net(other)
    assert [l.weight for l in a.layers][0] is not None and a.layout() != b.layout()
    assert checkpoint.fingerprint(a, [], {})["model"] != checkpoint.fingerprint(b, [], {})["model"]


@pytest.mark.parametrize("s", SETTINGS[:4], ids=lambda s: s.id)
def test_cnn_run_rebuilds_from_json_with_a_model_that_has_not_seen_data(s):
    """The run records the input shape; a freshly built nn.Sequential (no shape attached) rebuilds
    every network of it (it used to fail the layout check), and another network is still refused."""
    model, _, X, T = build(s, n=20)
    want = shrinknet.prune(model, X, T, loss=s.loss, max_fraction=0.5, progress=False)
    assert not hasattr(model, "shrinknet_input_shape")
    back = shrinknet.PruneResult.from_json(want.to_json(), model=model)
    for k in (0, len(want.steps) - 1):
        assert all(torch.equal(a, b) for a, b in zip(back.network(k).parameters(), want.network(k).parameters()))
    other = build(SETTINGS[(SETTINGS.index(s) + 5) % len(SETTINGS)], n=20)[0]
    with pytest.raises(ValueError, match="is not the one the run was made on"):
        shrinknet.PruneResult.from_json(want.to_json(), model=other)


@pytest.mark.parametrize("s", [SETTINGS[0], SETTINGS[3], SETTINGS[9]], ids=lambda s: s.id)
def test_ram_budget_removes_only_what_lowers_the_ram_until_it_fits(s):
    """Slow twin: at every step, score every kept unit literally (saliency brute force on the masks of
    that step), drop the layers whose removal leaves memory.ram_bytes as it is while the RAM budget is
    not met (unless every layer would), and take the least Delta E; the run must remove exactly that."""
    model, _, X, T = build(s, n=20)
    net = shrinknet.as_net(model)
    net.bind(tuple(X.shape[1:]))
    start = shrinknet.store.memory.ram_bytes(net)
    smallest = shrinknet.store.memory.ram_bytes(net, [torch.arange(n) == 0 for n in net.hidden_sizes])
    ram = (start + smallest) // 2
    result = shrinknet.prune(model, X, T, loss=s.loss, ram_budget_bytes=ram, progress=False, chunk_size=3)
    masks = [torch.ones(n, dtype=torch.bool) for n in net.hidden_sizes]
    waited = 0
    for step in result.steps[1:]:
        scores = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, mask=masks)
        now = shrinknet.store.memory.ram_bytes(net, masks)
        movable = [h for h, m in enumerate(masks) if int(m.sum()) > 1]
        helps = [h for h in movable
                 if shrinknet.store.memory.ram_bytes(net, [_drop_first(m) if k == h else m for k, m in enumerate(masks)]) < now]
        allowed = movable if now <= ram or not helps else helps
        waited += allowed != movable
        best = min((float(scores[h][j]), h, j) for h in allowed for j in masks[h].nonzero().squeeze(1).tolist())
        (h, j), = step.removed
        assert (h, j) == best[1:] or float(scores[h][j]) == pytest.approx(best[0], rel=1e-9, abs=1e-12)
        assert h in allowed
        masks[h] = masks[h].clone()
        masks[h][j] = False
    assert result.steps[-1].ram_bytes <= ram
    assert waited > 0  # the rule was exercised: some layer's units waited for the RAM budget


def _drop_first(m):
    out = m.clone()
    out[int(m.nonzero()[0])] = False
    return out
