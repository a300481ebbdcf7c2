"""Tiny float64 CNNs from a table of settings, and slow references built on plain torch modules."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ACTS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": lambda: nn.Softplus(beta=1.5),
    "relu6": nn.ReLU6, "leaky": lambda: nn.LeakyReLU(0.1), "none": None,
}


@dataclass(frozen=True)
class CnnSetting:
    dims: int  # 1: Conv1d, 2: Conv2d
    conv: tuple  # (kernel, stride, padding, dilation) of the first conv
    pool: str  # "max", "avg", "adaptive", "none"
    act: str
    bn: bool
    depth: int  # conv layers (1 or 2), then one hidden Linear when depth == 1
    loss: str

    @property
    def id(self) -> str:
        k, s, p, d = self.conv
        return (f"{self.dims}d-k{k}s{s}p{p}d{d}-{self.pool}-{self.act}-{'bn' if self.bn else 'nobn'}"
                f"-depth{self.depth}-{self.loss}")


def settings() -> list[CnnSetting]:
    convs = [(3, 1, 1, 1), (3, 2, 0, 1), (2, 1, 1, 2), (1, 1, 0, 1)]
    pools = ["max", "avg", "adaptive", "none"]
    acts = ["relu", "tanh", "sigmoid", "softplus", "relu6", "leaky"]
    table = []
    for i in range(12):
        table.append(CnnSetting(dims=1 + i % 2, conv=convs[i % 4], pool=pools[(i // 2) % 4], act=acts[i % 6],
                                bn=i % 3 != 1, depth=1 + (i // 3) % 2, loss=("mse", "cross_entropy")[(i // 4) % 2]))
    return table


SETTINGS = settings()
N_OUT = 3


def _randomize(m: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.6 if p.ndim > 1 else 0.3))
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g, dtype=torch.float64))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=torch.float64))


def build(s: CnnSetting, seed: int = 0, n: int = 9):
    """(model, unit_modules, X, T): ``unit_modules[h]`` is the index in ``model`` of the module whose
    output is hidden layer h's units (a literal hook there switches a channel off)."""
    g = torch.Generator().manual_seed(seed)
    Conv = nn.Conv1d if s.dims == 1 else nn.Conv2d
    BN = nn.BatchNorm1d if s.dims == 1 else nn.BatchNorm2d
    pool = {"max": (nn.MaxPool1d if s.dims == 1 else nn.MaxPool2d)(2, 1 + (s.dims == 2)),
            "avg": (nn.AvgPool1d if s.dims == 1 else nn.AvgPool2d)(2, padding=1),
            "adaptive": (nn.AdaptiveAvgPool1d if s.dims == 1 else nn.AdaptiveAvgPool2d)(3),
            "none": None}[s.pool]
    in_shape = (2, 11) if s.dims == 1 else (2, 7, 6)
    k, st, p, d = s.conv
    mods, units = [], []
    chans = [in_shape[0], 4, 3][: s.depth + 1]
    for i in range(s.depth):
        mods.append(Conv(chans[i], chans[i + 1], k if i == 0 else 2, st if i == 0 else 1, p if i == 0 else 1,
                         d if i == 0 else 1, bias=not s.bn, dtype=torch.float64))
        if s.bn:
            mods.append(BN(chans[i + 1], dtype=torch.float64))
        if ACTS[s.act] is not None:
            mods.append(ACTS[s.act]())
        if pool is not None and i == 0:
            mods.append(pool)
        units.append(len(mods) - 1)
    mods.append(nn.Flatten())
    probe = nn.Sequential(*mods).double()
    width = probe(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[1]
    if s.depth == 1:
        mods += [nn.Linear(width, 5, dtype=torch.float64), nn.Dropout(0.5), ACTS[s.act]()]
        units.append(len(mods) - 1)
        width = 5
    mods.append(nn.Linear(width, N_OUT, dtype=torch.float64))
    if s.loss == "mse":
        mods.append(nn.Sigmoid())
    model = nn.Sequential(*mods)
    for m in model.modules():
        _randomize(m, g)
    model.eval()
    X = torch.randn(n, *in_shape, generator=g, dtype=torch.float64)
    T = torch.rand(n, N_OUT, generator=g, dtype=torch.float64) if s.loss == "mse" else torch.randint(0, N_OUT, (n,), generator=g)
    return model, units, X, T


def ref_error(y, T, loss):
    if loss == "mse":
        return 0.5 * ((y - T) ** 2).sum()
    return torch.nn.functional.cross_entropy(y, T, reduction="sum")


def gated_error(model, unit_module: int, X, T, loss, gate):
    """E with the units' outputs multiplied by ``gate`` (C,), through a forward hook: plain torch."""
    def hook(_m, _inp, out):
        return out * gate.view(1, -1, *([1] * (out.ndim - 2)))

    handle = model[unit_module].register_forward_hook(hook)
    try:
        return ref_error(model(X), T, loss)
    finally:
        handle.remove()
