"""train's at-chance refusal names unscaled inputs in its one line (the hint a successful train prints
was missing exactly when it mattered): a network that learned nothing, with raw or scaled inputs."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from shrinknet.choose import sanity
from shrinknet.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.mark.parametrize("scale, standardize, hint", [
    (255.0, False, True),
    (1.0, False, False),
    (255.0, True, False),
], ids=["raw pixels", "scaled", "raw, standardized"])
def test_at_chance_refusal_names_unscaled_inputs(tmp_path, scale, standardize, hint):
    g = np.random.default_rng(0)
    X = (g.random((300, 6)) * scale).astype(np.float32)
    y = g.integers(0, 3, 300)  # labels unrelated to the inputs: nothing to learn, whatever the scaling
    np.savez(tmp_path / "d.npz", X=X, y=y)
    r = run("train", "--data", tmp_path / "d.npz", "--hidden", "4", "--epochs", "3",
            *(["--standardize"] if standardize else []), "--out", tmp_path / "m", "-q")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the trained network is at chance"), r.stderr
    assert ("inputs look unscaled (largest |value| " in lines[0]) == hint, lines[0]
    assert ("try train --standardize" in lines[0]) == hint
    assert not (tmp_path / "m").exists()


def test_check_trained_puts_the_hint_in_its_message():
    import torch

    dead = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    with torch.no_grad():  # always answers class 0
        dead[2].weight.zero_()
        dead[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    X, y = torch.randn(30, 2), torch.arange(30) % 3
    with pytest.raises(sanity.StartCheckError, match=r"nothing; inputs look unscaled \(x\); otherwise too few epochs"):
        sanity.check_trained(dead, X, y, "cross_entropy", unscaled="inputs look unscaled (x)")
    with pytest.raises(sanity.StartCheckError, match="learned nothing; too few epochs"):
        sanity.check_trained(dead, X, y, "cross_entropy")
