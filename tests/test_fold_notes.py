"""The note a folded BatchNorm leaves names modules as modules (not '1 folded into layer 0', where the
numbers read as counts): the BatchNorm's module name, the kind and module name of the layer it went into."""

from __future__ import annotations

import pytest
from torch import nn

from shrinknet.model.parse import as_net


def _eval(*mods):
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("model, notes", [
    (_eval(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)),
     ["BatchNorm2d (module 1) folded into the Conv2d before it (module 0); exact: eval-mode statistics"]),
    (_eval(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)),
     ["BatchNorm1d (module 1) folded into the Linear before it (module 0); exact: eval-mode statistics"]),
    (_eval(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)), []),
], ids=["conv", "linear", "none"])
def test_batchnorm_fold_note(model, notes):
    net = as_net(model)
    if any(isinstance(m, nn.Conv2d) for m in model):
        net.bind((1, 8, 8))
    assert [n for n in net.notes if "BatchNorm" in n] == notes
