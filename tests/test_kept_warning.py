"""A kept network far worse than the start (issue: a too-small budget saved with no word): the rule
(sanity.kept_loss_message), PruneResult.fit/pick's KeptCheckWarning, and prune's `warning:` line."""

from __future__ import annotations

import warnings

import pytest
import torch
from click.testing import CliRunner

import shrinknet
from shrinknet.choose import sanity
from shrinknet.choose.result import PruneResult, Step
from shrinknet.cli import cli
from shrinknet.model.evaluate import regression_metrics

from helpers import train_blobs


@pytest.mark.parametrize("metric, start, kept, dtype, fragments", [
    ("accuracy", 0.88, 0.35, "float32", ["lost 53.0 accuracy points", "accuracy 0.350, from 0.880",
                                         "budget is likely too small", "dtype='int8' (4x the weights of float32"]),
    ("accuracy", 0.88, 0.77, "float16", ["lost 11.0 accuracy points", "(2x the weights of float16"]),
    ("accuracy", 0.88, 0.50, "int8", ["lost 38.0 accuracy points"]),
    ("accuracy", 0.88, 0.50, None, ["lost 38.0 accuracy points"]),
    ("accuracy", 0.88, 0.78, "float32", None),  # exactly 10 points: not more than 10
    ("accuracy", 0.88, 0.90, "float32", None),
    ("R^2", 0.95, 0.70, "float32", ["lost 0.25 of R^2", "R^2 0.700, from 0.950", "4x"]),
    ("R^2", 0.95, 0.86, "float32", None),
], ids=["53 points f32", "11 points f16", "int8 no hint", "integer-only no hint", "10 points", "better",
        "R2 0.25", "R2 0.09"])
def test_kept_loss_message(metric, start, kept, dtype, fragments):
    msg = sanity.kept_loss_message(metric, start, kept, dtype)
    if fragments is None:
        assert msg is None
    else:
        assert all(f in msg for f in fragments), msg
        assert "\n" not in msg and (("int8" in msg) == (dtype in ("float32", "float16")))


def _step(k, nbytes, acc, error):
    return Step(k, k / 10, [], None, error, acc, None, None, nbytes // 4, nbytes, [10 - k])


def _result(accs, errors, dtype="float32", **config):
    steps = [_step(k, 400 - 40 * k, a, e) for k, (a, e) in enumerate(zip(accs, errors))]
    return PruneResult({"dtype": dtype, "loss": "cross_entropy" if accs[0] is not None else "mse", **config},
                       steps, {"hidden": [10]})


@pytest.mark.parametrize("accs, budget, max_drop, warns", [
    ([0.9, 0.85, 0.5], 320, None, True),  # only step 2 fits: 40 points lost
    ([0.9, 0.85, 0.5], 360, None, False),  # step 1 fits: 5 points
    ([0.9, 0.85, 0.5], None, 0.5, False),  # a max drop the caller gave: no warning
    ([0.9, 0.85, 0.5], 320, 0.01, True),  # the budget wins over the drop
], ids=["budget lost 40", "budget lost 5", "max drop", "budget beats drop"])
def test_fit_and_pick_warn(accs, budget, max_drop, warns):
    r = _result(accs, [1.0, 2.0, 9.0])
    calls = [lambda: r.pick(budget, max_drop)] + ([lambda: r.fit(budget)] if max_drop is None else [])
    for call in calls:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            call()
        kept = [w for w in got if issubclass(w.category, shrinknet.KeptCheckWarning)]
        assert len(kept) == int(warns), [str(w.message) for w in got]
        assert not kept or "accuracy points" in str(kept[0].message)
    assert issubclass(shrinknet.KeptCheckWarning, UserWarning)


def test_regression_warning_uses_r2_of_the_run_data():
    """prune records the validation SST; R^2 = 1 - 2E/SST must equal R^2 computed literally from the
    kept network's outputs (the slow twin), and a big R^2 loss warns."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g)
    T = (X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 * torch.sin(3 * X[:, :1])).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(300):
        opt.zero_grad()
        ((model(X) - T) ** 2).mean().backward()
        opt.step()
    r = shrinknet.prune(model, X, T, loss="mse", method="brute_force", budget_bytes="24B",
                        config=shrinknet.PruneConfig(start_check="skip"))
    k = len(r.steps) - 1
    with torch.no_grad():
        literal = [regression_metrics(r.network(i)(X), T)["r2"] for i in (0, k)]
    assert r.val_sst == pytest.approx(float(((T.double() - T.double().mean()) ** 2).sum()), rel=1e-12)
    assert [1 - 2 * r.steps[i].error / r.val_sst for i in (0, k)] == pytest.approx(literal, rel=1e-6, abs=1e-9)
    msg = r.kept_warning(k)
    assert (msg is not None) == (literal[0] - literal[1] > 0.1)
    assert literal[0] - literal[1] > 0.1, literal  # the case is meant to lose R^2: else the test proves nothing
    with pytest.warns(shrinknet.KeptCheckWarning, match="of R\\^2"):
        r.fit("24B")


@pytest.fixture(scope="module")
def blobs_model(tmp_path_factory):
    return train_blobs(lambda *a: CliRunner().invoke(cli, ["--quiet", *map(str, a)], catch_exceptions=False),
                       tmp_path_factory.mktemp("keptwarn"), "m")


@pytest.mark.parametrize("args, warning", [
    (("--budget", "80B"), "--dtype int8 (4x the weights of float32"),
    (("--budget", "80B", "--dtype", "int8"), "accuracy points against the start"),
    (("--budget", "1KiB"), None),
], ids=["tight float32", "tight int8", "roomy"])
def test_cli_prune_warns_on_stderr_and_saves(blobs_model, tmp_path, args, warning):
    r = CliRunner().invoke(cli, ["prune", str(blobs_model), *args, "--refit", "none", "--no-analyze",
                                 "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith("warning: the kept network")]
    if warning is None:
        assert lines == []
    else:
        assert len(lines) == 1 and warning in lines[0] and "budget is likely too small" in lines[0], r.stderr
        assert ("--dtype int8" in lines[0]) == ("int8" not in args)
    assert (tmp_path / "o" / "model.safetensors").is_file()
