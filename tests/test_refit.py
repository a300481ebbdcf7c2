"""Refit (ridge least squares) and int8 storage: against closed forms and literal loops.

Refit is checked on float64 tiny nets against a ridge solution computed independently (an
augmented least-squares problem solved by torch.linalg.lstsq); every_step brute force against a
naive loop that physically removes each candidate, refits it with that independent solver, and
re-evaluates. int8 against the definition of symmetric per-row quantization and a hand count.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import shrinknet
from shrinknet.ship.export import export
from shrinknet.store.memory import network_bytes
from shrinknet.model.parse import as_net
from shrinknet.store.quantize import dequantize, quantize_rows
from shrinknet.repair.refit import Refitter, reconstruction_error
from shrinknet.model.surgery import shrink

from helpers import SETTINGS, build, total_error

# one setting per activation at depth 2 (both bias settings occur), plus depth 1 and 3
REFIT_SETTINGS = [s for s in SETTINGS if s.loss == "mse" and (s.depth == 2 or s.act == "sigmoid")]


def lstsq_ridge(O: torch.Tensor, X: torch.Tensor, ridge: float, bias: bool):
    """Independent ridge solution: min ||A theta - X||^2 + lam ||W||^2 as one augmented lstsq."""
    N, d = O.shape
    lam = ridge * float((O * O).sum()) / d
    A = torch.cat([O, torch.ones(N, 1, dtype=O.dtype)], 1) if bias else O
    pen = torch.zeros(d, A.shape[1], dtype=O.dtype)
    pen[:, :d] = lam**0.5 * torch.eye(d, dtype=O.dtype)
    theta = torch.linalg.lstsq(torch.cat([A, pen]), torch.cat([X, torch.zeros(d, X.shape[1], dtype=O.dtype)])).solution
    return theta[:d].T, (theta[d] if bias else None)


def masks_for(model, seed=0):
    """Remove about a third of every hidden layer (never all)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for h in as_net(model).hidden_sizes:
        m = torch.rand(h, generator=g) > 0.35
        m[int(torch.randint(h, (1,), generator=g))] = True
        out.append(m)
    if all(bool(m.all()) for m in out):
        out[0][0] = False
    return out


def naive_refit(model, masks, X, ridge):
    """The refit network written from scratch: shrink, then per layer from the bottom up solve the
    independent ridge problem to the original pre-activations; returns the small nn.Sequential."""
    small = shrink(model, masks)
    first = min(h for h, m in enumerate(masks) if not m.all()) + 1
    with torch.no_grad():
        h_orig, h_small = X, X
        mods_o, mods_s = list(model), list(small)
        k = -1
        for mo, ms in zip(mods_o, mods_s):
            if isinstance(mo, nn.Linear):
                k += 1
                target = mo(h_orig)
                if k < len(masks):  # a hidden layer: only its kept neurons' pre-activations exist
                    target = target[:, masks[k]]
                if k >= first:
                    W, b = lstsq_ridge(h_small, target, ridge, mo.bias is not None)
                    ms.weight.copy_(W)
                    if b is not None:
                        ms.bias.copy_(b)
            h_orig, h_small = mo(h_orig), ms(h_small)
    return small


@pytest.mark.parametrize("s", REFIT_SETTINGS, ids=lambda s: s.id)
@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_refit_equals_independent_ridge_solution(s, ridge):
    model, _, X, _ = build(s, n=40)
    masks = masks_for(model)
    got = shrink(Refitter(as_net(model), X, ridge).build(masks), masks)
    want = naive_refit(model, masks, X, ridge)
    for a, b in zip(got.parameters(), want.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("s", [s for s in REFIT_SETTINGS if s.act != "none"], ids=lambda s: s.id)
def test_refit_with_nothing_removed_changes_nothing(s):
    """(Linear hidden layers are left out: their inputs are rank-deficient, the solution not unique.)"""
    model, _, X, _ = build(s, n=40)
    net = as_net(model)
    full = net.full_masks()
    assert Refitter(net, X, 0.0).build(full).layers == net.layers  # nothing pruned: nothing refit
    forced = Refitter(net, X, 0.0).build(full, start=1)  # every layer solved anyway: same weights
    for a, b in zip(forced.layers, net.layers):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-8, atol=1e-8)
        if b.bias is not None:
            torch.testing.assert_close(a.bias, b.bias, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("s", REFIT_SETTINGS, ids=lambda s: s.id)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refit_never_reconstructs_worse(s, seed):
    """Layer by layer the refit layer is the least-squares optimum over its kept inputs (ridge 0),
    so its pre-activations are never farther from the original's than plain switch-off's."""
    model, _, X, _ = build(s, seed=seed, n=40)
    net = as_net(model)
    masks = masks_for(model, seed)
    first = min(h for h, m in enumerate(masks) if not m.all()) + 1
    refit = Refitter(net, X, 0.0).build(masks)
    assert reconstruction_error(refit, net, X, masks, first) <= reconstruction_error(net, net, X, masks, first) + 1e-9


@pytest.mark.parametrize("s", [s for s in REFIT_SETTINGS if s.depth in (1, 2)][:4], ids=lambda s: s.id)
def test_every_step_brute_force_picks_the_least_harmful_literal_removal(s):
    model, _, X, T = build(s, n=30)
    res = shrinknet.prune(model, X, T, loss=s.loss, refit="every_step", ridge=0.01, max_fraction=0.3, progress=False)
    removed = []
    for step in res.steps[1:]:
        masks = [torch.ones(h, dtype=torch.bool) for h in as_net(model).hidden_sizes]
        for h, j in removed:
            masks[h][j] = False
        best, best_err = None, float("inf")
        for h, m in enumerate(masks):
            if int(m.sum()) <= 1:
                continue
            for j in m.nonzero().squeeze(1).tolist():
                m2 = [x.clone() for x in masks]
                m2[h][j] = False
                err = total_error(naive_refit(model, m2, X, 0.01), X, T, s.loss)
                if err < best_err - 1e-9:
                    best, best_err = (h, j), err
        assert step.removed == [best]
        assert step.error == pytest.approx(best_err, rel=1e-9, abs=1e-9)
        removed.append(best)


@pytest.mark.parametrize("refit", ["final", "every_step"])
def test_steps_record_the_network_as_saved(refit):
    s = REFIT_SETTINGS[0]
    model, _, X, T = build(s, n=30)
    res = shrinknet.prune(model, X, T, loss=s.loss, refit=refit, max_fraction=0.4, progress=False)
    for k in (1, len(res.steps) - 1):
        assert res.steps[k].error == pytest.approx(total_error(res.network(k), X, T, s.loss), rel=1e-9)


def test_refit_improves_a_pruned_mnist_like_net_and_none_is_the_paper():
    """On a trained digits net, refit="final" networks are at least as good on the calibration
    data at a deep cut, and refit=None steps equal the plain switch-off run."""
    from shrinknet.data import datasets
    from shrinknet.workflows.experiments import train_on

    ds = datasets.load("digits", seed=0, size=300)
    model, _ = train_on(ds, (10, 10), epochs=15)
    X, T = ds.inputs("val"), ds.targets("val", "mse")
    plain = shrinknet.prune(model, X, T, max_fraction=0.6, progress=False)
    final = shrinknet.prune(model, X, T, max_fraction=0.6, refit="final", progress=False)
    assert [s.removed for s in plain.steps] == [s.removed for s in final.steps]  # same choices
    assert final.steps[-1].error < plain.steps[-1].error


# -- int8 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_int8_round_trip_within_half_a_step(seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(9, 13, generator=g) * 10 ** (seed - 2)
    W[3] = 0  # an all-zero row
    q, s = quantize_rows(W)
    assert q.dtype == torch.int8 and s.dtype == torch.float32 and s.shape == (9,)
    assert int(q.abs().max()) == 127 and bool((q[3] == 0).all())
    step = s[:, None].double()
    assert bool(((dequantize(q, s).double() - W.double()).abs() <= step / 2 * (1 + 1e-6)).all())
    # the definition: s = max|row| / 127, q = round(w / s)
    torch.testing.assert_close(s[[0, 1, 2]], (W.abs().amax(1) / 127)[[0, 1, 2]], rtol=1e-6, atol=0)


@pytest.mark.parametrize("seed", range(8))
def test_quantizing_dequantized_weights_gives_the_same_int8(seed):
    W = torch.randn(20, 30, generator=torch.Generator().manual_seed(seed))
    q, s = quantize_rows(W)
    q2, s2 = quantize_rows(dequantize(q, s))
    assert torch.equal(q, q2) and torch.equal(s, s2)


def test_int8_bytes_equal_the_hand_count():
    model = nn.Sequential(nn.Linear(7, 5), nn.Sigmoid(), nn.Linear(5, 4, bias=False), nn.Tanh(), nn.Linear(4, 3))
    # layer 0: 35 int8 + 5 scales + 5 biases; layer 1: 20 int8 + 4 scales; layer 2: 12 int8 + 3 + 3
    assert network_bytes(model, "int8") == (35 + 4 * 5 + 4 * 5) + (20 + 4 * 4) + (12 + 4 * 3 + 4 * 3)
    masks = [torch.tensor([True, False, True, True, False]), torch.tensor([True, True, False, True])]
    # kept 3 and 3: 7*3 + 12 + 12, 3*3 + 12, 3*3 + 12 + 12
    assert network_bytes(model, "int8", masks) == (21 + 12 + 12) + (9 + 12) + (9 + 12 + 12)


@pytest.mark.parametrize("refit", [None, "final"])
def test_int8_run_fits_its_budget_and_exports_the_same_weights(refit, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    s = REFIT_SETTINGS[0]
    model, _, X, T = build(s, n=40)
    model = model.float()
    budget = network_bytes(model, "int8") - 30
    res = shrinknet.prune(model, X.float(), T.float(), dtype="int8", budget_bytes=budget, refit=refit, progress=False)
    k, small = res.fit(budget)
    assert res.steps[k].bytes <= budget == res.config["budget_bytes"]
    assert network_bytes(small, "int8") == res.steps[k].bytes
    assert res.steps[k].error == pytest.approx(total_error(small, X.float(), T.float(), s.loss), rel=1e-5)
    c = export(small, tmp_path / "m.c", format="c", dtype="int8")
    assert c.flash_bytes == res.steps[k].bytes
    assert f"#define SHRINKNET_FLASH_BYTES {res.steps[k].bytes}" in c.paths[1].read_text()
    export(small, tmp_path / "m.onnx", format="onnx", dtype="int8")
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    for i, lin in enumerate(m for m in small if isinstance(m, nn.Linear)):
        q, sc = inits[f"layers.{i}.weight"], inits[f"layers.{i}.weight_scale"]
        assert q.dtype == np.int8
        # the device's weights, rebuilt from the export, are bit for bit the run's
        assert torch.equal(dequantize(torch.tensor(q), torch.tensor(sc)), lin.weight.detach())


def test_bad_refit_and_int8_input_is_refused_before_work():
    s = REFIT_SETTINGS[0]
    model, _, X, T = build(s, n=40)
    with pytest.raises(ValueError, match=r"refit needs at least 8 calibration instances .* got 5"):
        shrinknet.prune(model, X, T, refit="final", X_calib=X[:5], progress=False)
    with pytest.raises(ValueError, match="int8 storage runs in float32"):
        shrinknet.prune(model, X, T, dtype="int8", progress=False)
    with pytest.raises(ValueError, match="unknown refit"):
        shrinknet.prune(model, X, T, refit="always", progress=False)
    with pytest.raises(ValueError, match="ridge must be"):
        shrinknet.prune(model, X, T, refit="final", ridge=-1, progress=False)


@pytest.mark.parametrize("refit,dtype", [("final", "float32"), (None, "int8"), ("every_step", "int8")])
def test_json_round_trip_rebuilds_the_same_networks(refit, dtype):
    s = REFIT_SETTINGS[0]
    model, _, X, T = build(s, n=30)
    model, X = model.float(), X.float()
    res = shrinknet.prune(model, X, T.float(), refit=refit, dtype=dtype, max_fraction=0.3, progress=False)
    back = shrinknet.PruneResult.from_json(res.to_json(), model=model, X_calib=X if refit else None)
    k = len(res.steps) - 1
    for a, b in zip(res.network(k).parameters(), back.network(k).parameters()):
        assert torch.equal(a, b)
    if refit:
        with pytest.raises(ValueError, match="pass X_calib="):
            shrinknet.PruneResult.from_json(res.to_json(), model=model).network(k)


@pytest.mark.parametrize("refit,dtype", [("final", "float32"), ("every_step", "int8")])
def test_resuming_a_refit_run_gives_the_uninterrupted_run(refit, dtype):
    """Checkpoints (shrinknet.choose.checkpoint) of refit and int8 runs: resuming rebuilds the refit network."""
    import json

    from shrinknet.choose import checkpoint

    s = REFIT_SETTINGS[0]
    model, _, X, T = build(s, n=30)
    model, X, T = model.float(), X.float(), T.float()
    kw = dict(refit=refit, dtype=dtype, max_fraction=0.5, progress=False, X_test=X[:10], T_test=T[:10])
    want = shrinknet.prune(model, X, T, **kw)
    saved = []
    shrinknet.prune(model, X, T, checkpoint=lambda state, final=False: saved.append(
        checkpoint.decode(json.loads(checkpoint.dumps(state.to_dict())))), **kw)
    for state in (saved[1], saved[len(saved) // 2]):
        got = shrinknet.prune(model, X, T, resume=state, **kw)
        assert got.steps == want.steps
        k = len(got.steps) - 1
        assert all(torch.equal(a, b) for a, b in zip(got.network(k).parameters(), want.network(k).parameters()))
    if refit:
        with pytest.raises(ValueError):  # other calibration data: another run
            shrinknet.prune(model, X, T, resume=saved[1], X_calib=X.flip(0), **kw)
