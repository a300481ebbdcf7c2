"""max_drop: parse_drop's convention, within/pick against a literal scan that rebuilds and re-evaluates
every step's network, and prune(max_drop=) stopping at the first crossing."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import shrinknet
from shrinknet.repair import train
from shrinknet.choose.result import parse_drop


@pytest.mark.parametrize("text,value", [("1%", 0.01), (" 2.5% ", 0.025), ("0.01", 0.01), (0.3, 0.3), ("0", 0.0),
                                        ("150%", 1.5), (2, 2.0)])
def test_parse_drop(text, value):
    assert parse_drop(text) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("bad", ["abc", "1 %%", "-1%", "-0.1", "nan", "inf", "", True])
def test_parse_drop_refuses(bad):
    with pytest.raises(ValueError, match="max_drop"):
        parse_drop(bad)


@functools.lru_cache(maxsize=None)
def _classification():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(400, 6, generator=g, dtype=torch.float64)
    y = ((X[:, 0] + X[:, 1] > 1) * 1 + (X[:, 2] > 0.7) * 1).long()  # 3 classes
    m = train.mlp([6, 8, 6, 3], "sigmoid", "sigmoid", seed=1, dtype=torch.float64)
    train.train(m, X[:250], y[:250], X[250:320], y[250:320], epochs=40, seed=0)
    return m, X[320:], y[320:]


@functools.lru_cache(maxsize=None)
def _regression():
    g = torch.Generator().manual_seed(1)
    X = torch.rand(300, 1, generator=g, dtype=torch.float64) * 6 - 3
    T = 0.1 + 0.4 * (torch.cos(X) + 1)
    m = train.mlp([1, 8, 6, 1], "tanh", "identity", seed=2, dtype=torch.float64)
    train.train(m, X[:200], T[:200], X[200:250], T[200:250], epochs=60, seed=0)
    return m, X[250:], T[250:]


PROBLEMS = {"classification": _classification, "regression": _regression}


@pytest.fixture(scope="module", params=list(PROBLEMS))
def full_run(request):
    model, X, T = PROBLEMS[request.param]()
    result = shrinknet.prune(model, X, T, full_curve=True, progress=False)
    return request.param, model, X, T, result


def literal_drops(result, X, T, task):
    """Every step's network physically rebuilt and evaluated: (bytes, error, drop) per step."""
    rows = []
    for k in range(len(result.steps)):
        net = result.network(k)
        with torch.no_grad():
            y = net(X)
        if task == "classification":
            acc = float((y.argmax(1) == T).double().mean())
            err = float(0.5 * ((y - torch.eye(y.shape[1], dtype=y.dtype)[T]) ** 2).sum())
        else:
            acc, err = None, float(0.5 * ((y - T) ** 2).sum())
        rows.append((shrinknet.network_bytes(net), err, acc))
    b0, e0, a0 = rows[0]
    return [(b, e, (a0 - a) if task == "classification" else (e - e0) / e0) for b, e, a in rows]


DROPS = {"classification": [0.0, 0.005, 0.02, 0.05, 0.2, 0.6], "regression": [0.0, 0.01, 0.1, 1.0, 10.0]}


def test_within_is_the_smallest_network_within_the_drop_by_a_literal_scan(full_run):
    task, model, X, T, result = full_run
    rows = literal_drops(result, X, T, task)
    for d in DROPS[task]:
        ok = [k for k, (_, _, drop) in enumerate(rows) if drop <= d + 1e-9]
        want = min(ok, key=lambda k: (rows[k][0], rows[k][1], k))
        assert result.within(d) == want, d
        assert result.drop(want) == pytest.approx(rows[want][2], abs=1e-9)
    assert result.within(0.0) == min((k for k, r in enumerate(rows) if r[2] <= 1e-9), key=lambda k: rows[k][:2] + (k,))


def test_pick_takes_the_tighter_limit(full_run):
    """Both given: the smallest network within the drop when it fits, else the budget's step."""
    task, model, X, T, result = full_run
    rows = literal_drops(result, X, T, task)
    sizes = sorted({b for b, _, _ in rows})
    for budget in sizes[:: max(1, len(sizes) // 5)]:
        for d in DROPS[task]:
            both = [k for k, (b, _, drop) in enumerate(rows) if b <= budget and drop <= d + 1e-9]
            k, by = result.pick(budget, d)
            if both:  # a network meets both limits: the smallest of them
                assert (rows[k][0], by) == (min(rows[i][0] for i in both), "max_drop"), (budget, d)
                assert k == result.within(d)
            else:  # none does: the device limit wins, least error among the fitting
                fitting = [i for i, r in enumerate(rows) if r[0] <= budget]
                assert (k, by) == (min(fitting, key=lambda i: (rows[i][1], i)), "budget"), (budget, d)
            assert rows[k][0] <= budget
    assert result.pick(sizes[-1]) == (result.fit(sizes[-1])[0], "budget")
    assert result.pick(max_drop="1%") == (result.within(0.01), "max_drop")
    with pytest.raises(ValueError, match="give budget_bytes or max_drop"):
        result.pick()


def test_prune_with_max_drop_stops_at_the_first_crossing(full_run):
    task, model, X, T, result = full_run
    for d in DROPS[task][1:4]:
        r = shrinknet.prune(model, X, T, max_drop=d, progress=False)
        n = len(r.steps)
        assert [s.removed for s in r.steps] == [s.removed for s in result.steps[:n]]  # a prefix of the full run
        assert all(r.drop(k) <= d + 1e-12 for k in range(n - 1))
        assert r.drop(n - 1) > d + 1e-12 or n == len(result.steps)
        assert r.config["max_drop"] == d
        prefix = [k for k in range(n) if result.drop(k) <= d + 1e-12]
        assert r.within(d) == min(prefix, key=lambda k: (result.steps[k].bytes, result.steps[k].error, k))


def test_prune_with_budget_and_max_drop_reaches_both(full_run):
    task, model, X, T, result = full_run
    budget = sorted(s.bytes for s in result.steps)[len(result.steps) // 2]
    d = DROPS[task][2]
    r = shrinknet.prune(model, X, T, budget_bytes=budget, max_drop=d, progress=False)
    last = len(r.steps) - 1
    both = [k for k in range(len(r.steps)) if r.steps[k].bytes <= budget and r.drop(k) > d + 1e-12]
    if last < len(result.steps) - 1:  # it stopped early: at the first step that fits and has crossed
        assert both and both[0] == last
    else:
        assert both in ([], [last])
    assert [s.removed for s in r.steps] == [s.removed for s in result.steps[: last + 1]]


def test_classification_drop_of_100_points_is_refused():
    model, X, T = _classification()
    with pytest.raises(ValueError, match="write '1%' or 0.01"):
        shrinknet.prune(model, X, T, max_drop=1, progress=False)
    model, X, T = _regression()
    r = shrinknet.prune(model, X, T, max_drop=1, progress=False)  # regression: error may double
    assert r.config["max_drop"] == 1.0 and not math.isnan(r.drop(len(r.steps) - 1))


def test_max_drop_round_trips_through_json(full_run):
    task, model, X, T, result = full_run
    r = shrinknet.prune(model, X, T, max_drop="2%", progress=False)
    back = shrinknet.PruneResult.from_json(r.to_json())
    assert back.config["max_drop"] == 0.02 and back.within(0.02) == r.within(0.02)


def test_pick_with_a_ram_budget_is_the_same_rule_over_both_limits(full_run):
    """With a RAM budget too, pick's rule is unchanged, over the steps that fit both budgets: checked
    against a literal scan of the recorded bytes, RAM and drops."""
    task, model, X, T, result = full_run
    rows = literal_drops(result, X, T, task)
    rams = sorted({s.ram_bytes for s in result.steps})
    sizes = sorted({b for b, _, _ in rows})
    for ram in rams[:: max(1, len(rams) // 4)]:
        for budget in (None, sizes[len(sizes) // 2]):
            fit = [k for k, s in enumerate(result.steps) if s.ram_bytes <= ram and (budget is None or s.bytes <= budget)]
            if not fit:
                with pytest.raises(ValueError, match="no step of this run fits"):
                    result.pick(budget, None, ram)
                continue
            least = min(fit, key=lambda i: (rows[i][1], i))
            assert result.pick(budget, None, ram) == (least, "budget") == (result.fit(budget, ram)[0], "budget")
            for d in DROPS[task]:
                ok = [i for i in fit if rows[i][2] <= d + 1e-9]
                want = (min(ok, key=lambda i: (rows[i][0], rows[i][1], i)), "max_drop") if ok else (least, "budget")
                assert result.pick(budget, d, ram) == want, (ram, budget, d)
