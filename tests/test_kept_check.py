"""Silent wrong answers the start check alone missed: a cross-entropy network's logits ranked by squared
error, a network kept at chance by a too-tight budget, and a --test file the model cannot read."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinknet.choose import sanity
from shrinknet.cli import cli
from test_files import listing

from helpers import train_blobs


def blobs(n=300, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    X = (g.normal(size=(n, 4)) + np.eye(3, 4)[y] * 2.5).astype(np.float32)
    return torch.as_tensor(X), torch.as_tensor(y)


def trained(loss: str, out_act: torch.nn.Module | None):
    """A 4-8-3 ReLU network trained on the blobs with ``loss`` (plain PyTorch, as a user would)."""
    torch.manual_seed(0)
    X, y = blobs()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3),
                                *([out_act] if out_act is not None else []))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(200):
        opt.zero_grad()
        out = model(X)
        err = (torch.nn.functional.cross_entropy(out, y) if loss == "cross_entropy"
               else ((out - torch.nn.functional.one_hot(y, 3)) ** 2).sum(1).mean())
        err.backward()
        opt.step()
    return model, X, y


def test_cross_entropy_logits_ranked_by_squared_error_are_refused():
    model, X, y = trained("cross_entropy", None)
    q = sanity.check_start(model, X, y, "cross_entropy")  # the right loss: fine
    assert q.accuracy > 0.9
    with pytest.raises(sanity.StartCheckError, match="look like logits.*--loss cross_entropy"):
        sanity.check_start(model, X, y, "mse")
    assert sanity.check_start(model, X, y, "mse", force=True).off_scale


def test_a_network_trained_with_squared_error_is_not_mistaken_for_logits():
    model, X, y = trained("mse", torch.nn.Sigmoid())
    q = sanity.check_start(model, X, y, "mse")
    assert q.accuracy > 0.9 and not q.off_scale and q.sse < q.prior_sse


def test_kept_network_at_chance_is_refused_and_a_usable_one_kept():
    model, X, y = trained("mse", torch.nn.Sigmoid())
    dead = torch.nn.Sequential(*[torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3), torch.nn.Sigmoid()])
    with torch.no_grad():
        dead[0].load_state_dict(model[0].state_dict())
        dead[2].weight.zero_()  # every input gets the same answer: the most common class at best
    with pytest.raises(sanity.StartCheckError, match="kept by the budget is at chance"):
        sanity.check_kept(dead, X, y, "mse", "the budget")
    assert sanity.check_kept(dead, X, y, "mse", "the budget", force=True).near_chance
    assert not sanity.check_kept(model, X, y, "mse", "the budget").near_chance


@pytest.fixture(scope="module")
def blobs_model(tmp_path_factory):
    return train_blobs(lambda *a: CliRunner().invoke(cli, ["--quiet", *map(str, a)], catch_exceptions=False),
                       tmp_path_factory.mktemp("kept"), "m")


def test_cli_budget_that_leaves_a_chance_network_writes_nothing_unless_forced(blobs_model, tmp_path):
    out = tmp_path / "tiny"
    before = listing(tmp_path)
    args = ["prune", blobs_model, "--budget", "52B", "--refit", "none", "--no-analyze", "--out", out]
    r = CliRunner().invoke(cli, ["--quiet", *map(str, args)])
    assert r.exit_code == 2 and "at chance" in r.output and "--force" in r.output and "Traceback" not in r.output
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(set(before) | {"tiny.checkpoint.json"})  # the work is kept
    r = CliRunner().invoke(cli, ["--quiet", *map(str, args), "--force", "--resume"])
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").is_file()


def test_cli_test_file_the_model_cannot_read_is_refused(blobs_model, tmp_path):
    X, y = blobs(200, seed=1)
    np.savez(tmp_path / "shuffled.npz", X=X.numpy(), y=(y.numpy() + 1) % 3)  # every label moved to the next class
    before = listing(tmp_path)
    r = CliRunner().invoke(cli, ["--quiet", "prune", str(blobs_model), "--budget", "200B", "--no-analyze",
                                 "--test", str(tmp_path / "shuffled.npz"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "at chance on the test data" in r.output
    assert listing(tmp_path) == before
