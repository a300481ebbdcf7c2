"""Pruning: algorithms, surgery, budgets, results and analyses, checked as invariants and
against naive literal implementations on small float64 networks."""

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import shrinknet
import shrinknet.repair.train
from shrinknet.store import memory
from shrinknet.choose.prune import _clip
from helpers import SETTINGS, build, literal_brute_force, run_blocks, total_error

TIGHT = dict(rtol=1e-10, atol=1e-12)
PRUNE_SETTINGS = [s for s in SETTINGS if s.depth >= 2][::3]
ids = [s.id for s in PRUNE_SETTINGS]


def masked_output(blocks, X, masks):
    return run_blocks(blocks, X, 0, masks)


@pytest.mark.parametrize("s", PRUNE_SETTINGS, ids=ids)
def test_removing_nothing_changes_nothing(s):
    model, _, X, T = build(s)
    before = copy.deepcopy(model.state_dict())
    r = shrinknet.prune(model, X, T, loss=s.loss, max_fraction=0.0, progress=False)
    assert len(r.steps) == 1 and r.steps[0].n_removed == 0
    assert r.steps[0].error == pytest.approx(float(total_error(model, X, T, s.loss)), rel=1e-12)
    assert_close(r.network(0)(X), model(X), rtol=0, atol=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched


@pytest.mark.parametrize("algorithm", ["single", "iterative"])
@pytest.mark.parametrize("s", PRUNE_SETTINGS, ids=ids)
def test_pruned_network_equals_masked_network_and_bytes_shrink_exactly(s, algorithm):
    model, blocks, X, T = build(s)
    with torch.no_grad():  # float16-representable weights: the float16 run's network is the masked model itself
        for p in model.parameters():
            p.copy_(p.half().double())
    r = shrinknet.prune(model, X, T, method="taylor2", algorithm=algorithm, loss=s.loss, progress=False, dtype="float16")
    total = sum(r.layout["hidden"])
    assert r.steps[-1].n_removed == total - len(r.layout["hidden"])  # all but one per layer
    assert r.steps[-1].kept == [1] * len(r.layout["hidden"])
    for k, step in enumerate(r.steps):
        small = r.network(k)
        assert_close(small(X), masked_output(blocks, X, r.masks(k)), **TIGHT)
        assert step.bytes == memory.network_bytes(small, "float16")
        assert step.error == pytest.approx(float(total_error(small, X, T, s.loss)), rel=1e-10)
        if k == 0:
            continue
        (h, j), = step.removed
        prev = r.steps[k - 1].kept
        rows_in = r.layout["in"] if h == 0 else prev[h - 1]
        cols_out = r.layout["out"] if h == len(prev) - 1 else prev[h + 1]
        removed_numbers = rows_in + (1 if s.bias else 0) + cols_out
        assert r.steps[k - 1].bytes - step.bytes == 2 * removed_numbers


@pytest.mark.parametrize("algorithm", ["single", "iterative"])
def test_neuron_without_outgoing_weights_goes_first(algorithm):
    model, _, X, T = build(SETTINGS[1])
    lins = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        lins[1].weight[:, 3] = 0  # neuron 3 of hidden layer 0 no longer reaches the output
    r = shrinknet.prune(model, X, T, algorithm=algorithm, progress=False)
    # brute force scores it exactly 0; a neuron whose removal lowers the error may come first
    order = [st.removed[0] for st in r.steps[1:]]
    assert (0, 3) in order
    before = order[: order.index((0, 3))]
    assert all(r.steps[i + 1].score < 0 for i in range(len(before)))
    assert r.steps[order.index((0, 3)) + 1].score == 0.0


@pytest.mark.parametrize("s", PRUNE_SETTINGS, ids=ids)
def test_single_brute_force_follows_one_brute_force_ranking(s):
    model, _, X, T = build(s)
    scores = shrinknet.saliency(model, X, T, "brute_force", loss=s.loss)
    ranking = sorted((float(v), h, j) for h, sc in enumerate(scores) for j, v in enumerate(sc.tolist()))
    kept = [len(sc) for sc in scores]
    expected = []
    for _, h, j in ranking:
        if kept[h] > 1:
            expected.append((h, j))
            kept[h] -= 1
    r = shrinknet.prune(model, X, T, algorithm="single", loss=s.loss, progress=False)
    assert [st.removed[0] for st in r.steps[1:]] == expected


@pytest.mark.parametrize("s", PRUNE_SETTINGS, ids=ids)
def test_iterative_brute_force_takes_the_cheapest_literal_removal(s):
    model, _, X, T = build(s)
    r = shrinknet.prune(model, X, T, loss=s.loss, progress=False)
    for k in range(1, len(r.steps)):
        # naive twin: literally switch off every candidate of the masked network, re-evaluate
        masks = r.masks(k - 1)
        literal = literal_brute_force(model, X, T, s.loss, masks)
        candidates = [float(v) for h, sc in enumerate(literal) if int(masks[h].sum()) > 1 for v in sc]
        (h, j), = r.steps[k].removed
        assert float(literal[h][j]) <= min(candidates) + 1e-10 * (1 + abs(min(candidates)))
        # and the exact estimate that chose it is the change that happened
        assert r.steps[k].error - r.steps[k - 1].error == pytest.approx(r.steps[k].score, rel=1e-8, abs=1e-10)


def test_budget_stops_as_soon_as_the_network_fits_and_fit_finds_it():
    model, _, X, T = build(SETTINGS[2])
    full = shrinknet.prune(model, X, T, progress=False)
    budget = full.steps[5].bytes + 1
    r = shrinknet.prune(model, X, T, budget_bytes=f"{budget}B", progress=False)
    assert r.steps[-1].bytes <= budget < r.steps[-2].bytes
    assert len(r.steps) == 6
    whole = shrinknet.prune(model, X, T, budget_bytes=budget, full_curve=True, progress=False)
    assert len(whole.steps) == len(full.steps)
    k, net = whole.fit(budget)
    assert whole.steps[k].bytes <= budget
    assert whole.steps[k].error == min(s.error for s in whole.steps if s.bytes <= budget)
    assert memory.network_bytes(net) == whole.steps[k].bytes


def test_budget_below_smallest_network_is_refused_with_the_smallest_size():
    model, _, X, T = build(SETTINGS[2])  # 5 -> 7 -> 3 -> 5 -> 3, no bias
    smallest = (5 * 1 + 1 * 1 + 1 * 1 + 1 * 3) * 4
    with pytest.raises(ValueError, match=f"{smallest} bytes"):
        shrinknet.prune(model, X, T, budget_bytes=smallest - 1, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(X=torch.zeros(4, 5, dtype=torch.float64)), "instances"),
        (dict(X=torch.full((11, 5), math.nan, dtype=torch.float64)), "NaN"),
        (dict(T=torch.full((11, 3), math.inf, dtype=torch.float64)), "NaN or infinite"),
        (dict(method="psychic"), "unknown method"),
        (dict(algorithm="greedy"), "unknown algorithm"),
        (dict(budget_bytes="12 potatoes"), "cannot read"),
        (dict(max_fraction=1.5), "max_fraction"),
        (dict(method="taylor1", algorithm="iterative_pairs"), "brute_force"),
        (dict(dtype="int4"), "storage dtype"),
    ],
)
def test_bad_input_is_refused_before_any_work(kwargs, message):
    model, _, X, T = build(SETTINGS[2])
    args = dict(X=X, T=T)
    args.update({k: v for k, v in kwargs.items() if k in ("X", "T")})
    rest = {k: v for k, v in kwargs.items() if k not in ("X", "T")}
    with pytest.raises(ValueError, match=message):
        shrinknet.prune(model, args["X"], args["T"], progress=False, **rest)


def test_json_round_trip_keeps_numbers_and_networks():
    model, _, X, T = build(SETTINGS[4])
    r = shrinknet.prune(model, X, T, loss="cross_entropy", X_test=X[:5], T_test=T[:5], progress=False)
    text = r.to_json()
    json.loads(text)
    back = shrinknet.PruneResult.from_json(text, model=model)
    assert back.steps == r.steps and back.config == r.config
    assert_close(back.network(7)(X), r.network(7)(X), rtol=0, atol=0)
    assert r.steps[3].test_accuracy is not None and r.steps[3].accuracy is not None
    with pytest.raises(ValueError, match="without its network"):
        shrinknet.PruneResult.from_json(text).network(2)


def test_iterative_pairs_scores_pairs_exactly_and_takes_a_pair_only_when_it_is_cheaper():
    model, _, X, T = build(SETTINGS[1])
    r = shrinknet.prune(model, X, T, algorithm="iterative_pairs", progress=False, pairs=20)
    assert r.steps[-1].kept == [1, 1]
    pair_steps = [k for k, s in enumerate(r.steps) if len(s.removed) == 2]
    assert pair_steps, "this network has cancelling pairs worth removing together"
    for k in range(1, len(r.steps)):
        a, b = r.steps[k - 1], r.steps[k]
        # the score is Delta E per neuron removed, exact for pairs as for single neurons
        assert b.error - a.error == pytest.approx(b.score * len(b.removed), rel=1e-8, abs=1e-10)
        if k in pair_steps:  # cheaper per neuron than the best single removal at that step
            masks = r.masks(k - 1)
            single = literal_brute_force(model, X, T, "mse", masks)
            best = min(float(v) for h, sc in enumerate(single) if int(masks[h].sum()) > 1 for v in sc)
            assert b.score < best


def test_clip_replaces_outliers_by_mean_or_median():
    s = [torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([2.0, math.inf, 2.5])]
    flat = torch.tensor([1.0, 2.0, 3.0, 100.0, 2.0, 2.5])
    med = flat.median()
    mean = _clip(s, "mean")
    assert float(mean[0][3]) == pytest.approx(float(flat.mean()))
    assert float(_clip(s, "median")[0][3]) == float(med)
    assert torch.isinf(mean[1][1]) and float(mean[0][0]) == 1.0  # inliers and removed kept


@pytest.mark.parametrize(
    "text, size",
    [("20000", 20000), ("48KB", 48000), ("48KiB", 49152), ("0.5MB", 500000), ("16k", 16384),
     ("2 MiB", 2 * 2**20), ("1e3", 1000), (4096, 4096)],
)
def test_parse_size(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["12 potatoes", "", "-5KB", "KB", "0", "1.2.3MB", "0.5", "1.9B"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        memory.parse_size(text)


# -- analyses ------------------------------------------------------------------------------
def test_compare_estimates_against_brute_force():
    s = next(s for s in SETTINGS if s.loss == "mse" and s.depth == 1 and s.out_act == "none")
    model, _, X, T = build(s)
    cmp = shrinknet.compare_estimates(model, X, T)
    for a, b in zip(cmp["truth"], literal_brute_force(model, X, T, "mse")):
        assert_close(a, b, **TIGHT)
    # one hidden layer, MSE, identity output: taylor2 is exact, so it agrees perfectly
    agree = cmp["agreement"]["taylor2"]["overall"]
    assert agree["pearson"] == pytest.approx(1.0) and agree["kendall"] == pytest.approx(1.0)
    assert agree["overlap"] == 1.0


def test_estimates_along_run_uses_the_runs_masks():
    model, _, X, T = build(SETTINGS[1])
    r = shrinknet.prune(model, X, T, progress=False)
    rows = shrinknet.estimates_along_run(r, model, X, T, methods=("taylor1",), fractions=[0.0, 0.3, 0.6])
    assert [row["fraction"] for row in rows] == sorted(row["fraction"] for row in rows)
    assert rows[0]["step"] == 0 and rows[-1]["fraction"] <= 0.6
    assert all(row["overall"]["taylor1"]["n"] == sum(r.steps[row["step"]].kept) for row in rows)


def test_gain_curves_pass_through_the_exact_and_taylor_values():
    model, _, X, T = build(SETTINGS[7])
    neurons = [(0, 1), (1, 2)]
    g = shrinknet.gain_curves(model, X, T, neurons, alphas=[0.0, 1.0, 2.5])
    bf = shrinknet.saliency(model, X, T, "brute_force")
    t1 = shrinknet.saliency(model, X, T, "taylor1")
    t2 = shrinknet.saliency(model, X, T, "taylor2")
    E0 = g["base_error"]
    for c, (h, j) in zip(g["curves"], neurons):
        assert float(c["error"][1]) == pytest.approx(E0, rel=1e-12)
        assert float(c["error"][0]) == pytest.approx(E0 + float(bf[h][j]), rel=1e-10)
        assert float(c["taylor1"][0]) == pytest.approx(E0 + float(t1[h][j]), rel=1e-10)
        assert float(c["taylor2"][0]) == pytest.approx(E0 + float(t2[h][j]), rel=1e-10)
    # alpha = 2.5 against literally scaling the neuron's outgoing weights
    m2 = copy.deepcopy(model)
    lins = [m for m in m2 if isinstance(m, nn.Linear)]
    with torch.no_grad():
        lins[1].weight[:, 1] *= 2.5
    assert float(g["curves"][0]["error"][2]) == pytest.approx(float(total_error(m2, X, T, "mse")), rel=1e-10)


def test_contribution_correlation_is_correlation_of_flattened_contributions():
    g = torch.Generator().manual_seed(1)
    o = torch.rand(9, 4, generator=g, dtype=torch.float64)
    W = torch.randn(3, 4, generator=g, dtype=torch.float64)
    c = o[:, :, None] * W.T[None]  # (n, j, i)
    c = c - c.mean(0)
    flat = c.permute(1, 0, 2).reshape(4, -1)
    want = (flat @ flat.T) / torch.outer(flat.norm(dim=1), flat.norm(dim=1))
    assert_close(shrinknet.score.analysis.contribution_correlation(o, W), want, **TIGHT)


def test_correlated_pairs_report_exact_single_and_joint_removal():
    model, _, X, T = build(SETTINGS[1])
    rows = shrinknet.correlated_pairs(model, X, T, top=3)
    bf = literal_brute_force(model, X, T, "mse")
    assert len(rows) == 6
    for row in rows:
        h = row["layer"]
        assert row["delta_j"] == pytest.approx(float(bf[h][row["j"]]), rel=1e-10)
        masks = [torch.ones(len(b), dtype=torch.bool) for b in bf]
        masks[h][row["k"]] = False
        both = literal_brute_force(model, X, T, "mse", masks)[h][row["j"]] + bf[h][row["k"]]
        assert row["delta_both"] == pytest.approx(float(both), rel=1e-9)
    by_layer = [r["corr"] for r in rows if r["layer"] == 0]
    assert by_layer == sorted(by_layer, key=abs, reverse=True)


def test_curve_shape_iterative_brute_force_beats_single_first_order():
    """The paper's headline (figs. 4.3/4.4): iterative brute force keeps accuracy near the start
    for many more removals than a single first-order ranking."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 10, generator=g) * 2.0
    labels = torch.randint(0, 4, (1200,), generator=g)
    X = centers[labels] + torch.randn(1200, 10, generator=g)
    model = shrinknet.repair.train.mlp([10, 24, 24, 4], "sigmoid", "sigmoid", seed=0)
    T = nn.functional.one_hot(labels, 4).float()
    shrinknet.repair.train.train(model, X[:800], T[:800], X[800:1000], T[800:1000], epochs=60, lr=0.02, patience=10)
    Xv, Tv = X[1000:], T[1000:]

    def kept_within_a_point(algorithm, method):
        r = shrinknet.prune(model, Xv, Tv, method=method, algorithm=algorithm, progress=False)
        start = r.steps[0].accuracy
        bad = [s.fraction_removed for s in r.steps if s.accuracy < start - 0.01]
        return min(bad) if bad else 1.0, start

    bf, start = kept_within_a_point("iterative", "brute_force")
    t1, _ = kept_within_a_point("single", "taylor1")
    assert start > 0.9
    assert bf > t1 + 0.1, (bf, t1)


def test_clip_leaves_scores_alone_when_most_are_equal_and_never_clips_the_low_side():
    dead = [torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0, 1.0])]  # MAD = 0: dead units at exactly 0
    assert torch.equal(_clip(dead, "median")[0], dead[0])
    low = [torch.tensor([1.0, 2.0, 3.0, 2.5, -100.0])]
    assert float(_clip(low, "mean")[0][4]) == -100.0


def test_torch_dtype_is_recorded_by_name_and_json_is_standard():
    model, _, X, T = build(SETTINGS[1])
    r = shrinknet.prune(model, X, T, dtype=torch.float16, max_fraction=0.2, progress=False)
    assert r.config["dtype"] == "float16"
    text = r.to_json()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text)


def test_from_json_refuses_a_different_network():
    model, _, X, T = build(SETTINGS[1])
    r = shrinknet.prune(model, X, T, max_fraction=0.2, progress=False)
    other, _, _, _ = build(SETTINGS[7])  # same widths (5-7-3-3), tanh instead of sigmoid
    with pytest.raises(ValueError, match="not the one the run was made on"):
        shrinknet.PruneResult.from_json(r.to_json(), model=other)


def test_at_fraction_refuses_fractions_outside_0_1():
    model, _, X, T = build(SETTINGS[1])
    r = shrinknet.prune(model, X, T, max_fraction=0.2, progress=False)
    with pytest.raises(ValueError, match="between 0 and 1"):
        r.at_fraction(-0.1)
