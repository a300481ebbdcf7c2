"""Core: backprop2 and every saliency criterion against slow float64 references."""

import importlib
import math
import re

import pytest
import torch
from torch.testing import assert_close

import shrinknet
from helpers import (
    SETTINGS,
    build,
    error_from_hidden,
    hidden_output,
    literal_brute_force,
    loop_backprop2,
    per_instance_hessian_diag,
)

TIGHT = dict(rtol=1e-10, atol=1e-12)
# The loop reference writes sigma', sigma'' from x with exp(), not from o as shrinknet does;
# sums that nearly cancel then differ in the last ~6 digits that float64 keeps.
FORMULA = dict(rtol=1e-8, atol=1e-10)
ids = [s.id for s in SETTINGS]


def some_mask(model):
    """Remove one neuron from every hidden layer with more than one neuron (deterministic)."""
    lins = [m for m in model if isinstance(m, torch.nn.Linear)][:-1]
    masks = []
    for h, lin in enumerate(lins):
        m = torch.ones(lin.out_features, dtype=torch.bool)
        m[(2 * h + 1) % lin.out_features] = False
        masks.append(m)
    return masks


@pytest.mark.parametrize("s", SETTINGS, ids=ids)
def test_first_derivative_is_autograd_gradient(s):
    model, blocks, X, T = build(s)
    recs = shrinknet.backprop2(model, X, T, loss=s.loss)
    assert len(recs) == s.depth
    for h, rec in enumerate(recs):
        o = hidden_output(blocks, X, h, None).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(error_from_hidden(blocks, o, h, T, s.loss, None), o)
        assert_close(rec.o, o.detach(), **TIGHT)
        assert_close(rec.dE_do, g, **TIGHT)


@pytest.mark.parametrize("s", SETTINGS, ids=ids)
def test_second_derivative_matches_loop_implementation_of_eqs_73_75(s):
    model, blocks, X, T = build(s, n=4)
    recs = shrinknet.backprop2(model, X, T, loss=s.loss)
    for rec, (g, h2) in zip(recs, loop_backprop2(blocks, X, T, s)):
        assert_close(rec.dE_do, torch.from_numpy(g), **FORMULA)
        assert_close(rec.d2E_do2, torch.from_numpy(h2), **FORMULA)


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.loss == "mse"], ids=lambda s: s.id)
def test_second_derivative_exact_at_last_hidden_layer_for_mse(s):
    model, blocks, X, T = build(s, n=5)
    last = s.depth - 1
    rec = shrinknet.backprop2(model, X, T)[last]
    _, diag = per_instance_hessian_diag(blocks, X, T, last, "mse")
    assert_close(rec.d2E_do2, diag, **TIGHT)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("s", SETTINGS, ids=ids)
def test_brute_force_equals_literal_switch_off(s, masked):
    model, _, X, T = build(s)
    masks = some_mask(model) if masked else None
    got = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss, mask=masks)
    want = literal_brute_force(model, X, T, s.loss, masks)
    for g, w in zip(got, want):
        assert_close(g, w, **TIGHT)
    if masked:
        assert all(bool(torch.isinf(g[~m]).all()) for g, m in zip(got, masks))


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("s", SETTINGS[::2], ids=ids[::2])
def test_taylor2_exact_uses_autograd_hessian_diagonal(s, masked):
    model, blocks, X, T = build(s, n=5)
    masks = some_mask(model) if masked else None
    got = shrinknet.saliency(model, X, T, "taylor2_exact", loss=s.loss, mask=masks, chunk_size=2)
    for h, g in enumerate(got):
        o, diag = per_instance_hessian_diag(blocks, X, T, h, s.loss, masks)
        o = o.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(error_from_hidden(blocks, o, h, T, s.loss, masks), o)
        want = (-o * grad + 0.5 * o**2 * diag).sum(0).detach()
        if masks is not None:
            want[~masks[h]] = math.inf
        assert_close(g, want, **TIGHT)


@pytest.mark.parametrize("s", SETTINGS, ids=ids)
def test_taylor_formulas_from_backprop2(s):
    model, _, X, T = build(s)
    recs = shrinknet.backprop2(model, X, T, loss=s.loss)
    t1 = shrinknet.saliency(model, X, T, "taylor1", loss=s.loss)
    t2 = shrinknet.saliency(model, X, T, "taylor2", loss=s.loss)
    for r, a, b in zip(recs, t1, t2):
        assert_close(a, (-r.o * r.dE_do).sum(0), **TIGHT)  # eq. 6
        assert_close(b, (-r.o * r.dE_do + 0.5 * r.o**2 * r.d2E_do2).sum(0), **TIGHT)  # eq. 8


QUADRATIC = [s for s in SETTINGS if s.loss == "mse" and s.depth == 1 and s.out_act == "none"]


@pytest.mark.parametrize("s", QUADRATIC, ids=lambda s: s.id)
def test_taylor2_is_exact_when_error_is_quadratic_in_the_neuron(s):
    # One hidden layer, MSE, identity output: E is exactly quadratic in each hidden output,
    # so the second-order estimate equals brute force.
    model, _, X, T = build(s)
    for a, b in zip(shrinknet.saliency(model, X, T, "taylor2"), shrinknet.saliency(model, X, T, "brute_force")):
        assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("method", shrinknet.METHODS)
@pytest.mark.parametrize("s", SETTINGS[1::5], ids=ids[1::5])
def test_scores_add_over_instances_and_ignore_batch_and_chunk_size(s, method):
    model, _, X, T = build(s, n=12)
    masks = some_mask(model)
    whole = shrinknet.saliency(model, X, T, method, loss=s.loss, mask=masks)
    halves = [shrinknet.saliency(model, X[sl], T[sl], method, loss=s.loss, mask=masks) for sl in (slice(0, 5), slice(5, None))]
    batched = shrinknet.saliency(model, X, T, method, loss=s.loss, mask=masks, batch_size=5, chunk_size=1)
    for h, w in enumerate(whole):
        assert_close(batched[h], w, **TIGHT)
        if method != "random":  # the random baseline does not depend on the data
            assert_close(halves[0][h] + halves[1][h], w, **TIGHT)


def test_magnitude_and_random_conventions():
    model, blocks, X, T = build(SETTINGS[0])
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    mag = shrinknet.saliency(model, X, T, "magnitude")
    o = hidden_output(blocks, X, 0, None)
    assert_close(mag[0], lins[1].weight.norm(dim=0) * o.abs().sum(0), **TIGHT)
    r1 = shrinknet.saliency(model, X, T, "random", seed=3)
    r2 = shrinknet.saliency(model, X, T, "random", seed=3)
    r3 = shrinknet.saliency(model, X, T, "random", seed=4)
    assert all(torch.equal(a, b) for a, b in zip(r1, r2))
    assert not all(torch.equal(a, b) for a, b in zip(r1, r3))


def test_zero_outgoing_weights_means_zero_delta_e():
    model, _, X, T = build(SETTINGS[6])
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        lins[1].weight[:, 2] = 0
    for method in ("brute_force", "taylor1", "taylor2", "taylor2_exact", "magnitude"):
        assert float(shrinknet.saliency(model, X, T, method)[0][2]) == 0.0


def test_float32_runs_in_float32_and_agrees_with_float64():
    model, _, X, T = build(SETTINGS[0])
    s64 = shrinknet.saliency(model, X, T, "brute_force")
    s32 = shrinknet.saliency(model.float(), X.float(), T.float(), "brute_force")
    assert s32[0].dtype == torch.float32
    for a, b in zip(s32, s64):
        assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


def test_one_hot_targets_equal_class_labels():
    s = next(s for s in SETTINGS if s.loss == "cross_entropy")
    model, _, X, T = build(s)
    onehot = torch.nn.functional.one_hot(T, 3).double()
    for method in ("brute_force", "taylor2"):
        for a, b in zip(
            shrinknet.saliency(model, X, T, method, loss="cross_entropy"),
            shrinknet.saliency(model, X, onehot, method, loss="cross_entropy"),
        ):
            assert_close(a, b, **TIGHT)


def _net(*mods):
    return torch.nn.Sequential(*mods).double()


L = torch.nn.Linear
BAD_NETWORKS = [
    ("conv", _net(torch.nn.Conv1d(1, 2, 3), torch.nn.Sigmoid(), L(2, 2)), TypeError, "layer 0 (Conv1d) is not supported"),
    ("batchnorm", _net(L(5, 4), torch.nn.BatchNorm1d(4), L(4, 3)), TypeError, "layer 1 (BatchNorm1d)"),
    ("gelu", _net(L(5, 4), torch.nn.GELU(), L(4, 3)), TypeError, "layer 1 (GELU) is not supported"),
    ("softmax", _net(L(5, 4), torch.nn.Sigmoid(), L(4, 3), torch.nn.Softmax(dim=1)), TypeError, "cross_entropy"),
    ("width", _net(L(5, 4), torch.nn.Sigmoid(), L(6, 3)), TypeError, "layer 2 (Linear) has in_features=6"),
    ("no hidden", _net(L(5, 3), torch.nn.Sigmoid()), TypeError, "at least one hidden layer"),
    ("two acts", _net(L(5, 4), torch.nn.Sigmoid(), torch.nn.Tanh(), L(4, 3)), TypeError, "follows another activation"),
    ("bare layer", L(5, 3), TypeError, "at least one hidden layer"),
    ("not a module", 42, TypeError, "expected a torch.nn.Module"),
    ("a .pt path", "model.pt", shrinknet.InputError, "imports .onnx and .tflite model files here, not '.pt'"),
]


@pytest.mark.parametrize("model, exc, message", [b[1:] for b in BAD_NETWORKS], ids=[b[0] for b in BAD_NETWORKS])
def test_unsupported_networks_are_refused_naming_the_layer(model, exc, message):
    X, T = torch.rand(4, 5, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(exc, match=re.escape(message)):
        shrinknet.saliency(model, X, T, "taylor1")


def test_dropout_and_identity_are_skipped():
    model, _, X, T = build(SETTINGS[0])
    mods = list(model)
    padded = torch.nn.Sequential(mods[0], torch.nn.Dropout(0.5), mods[1], torch.nn.Identity(), *mods[2:])
    for a, b in zip(shrinknet.saliency(padded, X, T, "brute_force"), shrinknet.saliency(model, X, T, "brute_force")):
        assert_close(a, b, rtol=0, atol=0)


BAD_CALLS = [
    ("nan X", dict(X=lambda X: X.clone().fill_(math.nan)), ValueError, "X contains NaN"),
    ("inf T", dict(T=lambda T: T.clone().fill_(math.inf)), ValueError, "T contains NaN or infinite"),
    ("X width", dict(X=lambda X: X[:, :4]), ValueError, "4 features"),
    ("X 1-D", dict(X=lambda X: X[:, 0]), ValueError, "X must be 2-D"),
    ("T rows", dict(T=lambda T: T[:5]), ValueError, "11 instances but T has 5"),
    ("T width", dict(T=lambda T: T[:, :2]), ValueError, r"T must have shape \(11, 3\)"),
    ("method", dict(method="psychic"), ValueError, "unknown method 'psychic'"),
    ("loss", dict(loss="hinge"), ValueError, "unknown loss 'hinge'"),
    ("mask shape", dict(mask=[torch.ones(3, dtype=torch.bool)]), ValueError, "mask for hidden layer 0 must be"),
    ("mask count", dict(mask=[]), ValueError, "mask has 0 entries"),
    ("mask all off", dict(mask=[torch.zeros(7, dtype=torch.bool)]), ValueError, "removes every neuron"),
    ("batch size", dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    ("chunk size", dict(chunk_size=-2), ValueError, "chunk_size must be a positive integer"),
]


@pytest.mark.parametrize("change, exc, message", [b[1:] for b in BAD_CALLS], ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_one_clear_error(change, exc, message):
    model, _, X, T = build(SETTINGS[0])  # 5 -> 7 -> 3 outputs, 11 instances
    args = dict(X=X, T=T, method="taylor2")
    for k, v in change.items():
        args[k] = v(args[k]) if callable(v) else v
    with pytest.raises(exc, match=message):
        shrinknet.saliency(model, args.pop("X"), args.pop("T"), args.pop("method"), **args)


def test_class_labels_out_of_range_are_refused():
    s = next(s for s in SETTINGS if s.loss == "cross_entropy")
    model, _, X, T = build(s)
    with pytest.raises(ValueError, match=r"class labels in T must be integers in \[0, 2\]"):
        shrinknet.saliency(model, X, T + 5, "taylor1", loss="cross_entropy")


def test_cross_entropy_needs_two_outputs():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1)).double()
    X, T = torch.rand(6, 3, dtype=torch.float64), torch.rand(6, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="cross_entropy needs at least 2 outputs"):
        shrinknet.saliency(model, X, T, "taylor1", loss="cross_entropy")


def test_float_labels_for_several_outputs_are_refused():
    model, _, X, T = build(SETTINGS[0])
    with pytest.raises(ValueError, match="integer class labels"):
        shrinknet.saliency(model, X, torch.rand(11, dtype=torch.float64), "taylor1")


@pytest.mark.parametrize("method", ["brute_force", "taylor2_exact"])
def test_progress_bar_counts_every_candidate_and_changes_nothing(method, monkeypatch):
    S = importlib.import_module("shrinknet.score.saliency")  # the module; shrinknet.saliency is the function
    bars = []
    real = S.candidate_bar

    def spy(*args, **kwargs):
        bars.append(real(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(S, "candidate_bar", spy)
    model, _, X, T = build(SETTINGS[2])
    mask = some_mask(model)
    quiet = shrinknet.saliency(model, X, T, method, mask=mask)
    shown = shrinknet.saliency(model, X, T, method, mask=mask, progress=True, batch_size=4, chunk_size=2)
    for a, b in zip(quiet, shown):
        assert_close(a, b, **TIGHT)
    kept = sum(int(m.sum()) for m in mask)
    assert bars[-1].n == bars[-1].total == 3 * kept  # 11 instances in batches of 4
