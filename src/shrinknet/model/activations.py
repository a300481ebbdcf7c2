"""Elementwise activations with their first and second derivatives.

The second-derivative sweep (eq. 75 of the appendix) needs sigma'(x) and sigma''(x)
for every hidden and output activation. Each activation gives both from the
pre-activation ``x`` and, where the paper's output form is cheaper, from ``o = sigma(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Activation:
    """One elementwise activation sigma; ``name`` is what exporters and model files use."""

    name: str
    beta: float = 1.0  # softplus only
    threshold: float = 20.0  # softplus only: linear above beta*x > threshold, as torch does
    slope: float = 0.01  # leaky_relu only: negative_slope

    def __call__(self, x: Tensor, inplace: bool = False) -> Tensor:
        """sigma(x); with ``inplace`` the result may overwrite ``x`` (a scratch tensor)."""
        if self.name == "identity":
            return x
        if self.name == "sigmoid":
            return x.sigmoid_() if inplace else torch.sigmoid(x)
        if self.name == "tanh":
            return x.tanh_() if inplace else torch.tanh(x)
        if self.name == "relu":
            return x.relu_() if inplace else torch.relu(x)
        if self.name == "softplus":
            return F.softplus(x, beta=self.beta, threshold=self.threshold)
        if self.name == "relu6":
            return x.clamp_(0, 6) if inplace else x.clamp(0, 6)
        if self.name == "leaky_relu":
            return F.leaky_relu(x, self.slope, inplace=inplace)
        raise AssertionError(self.name)  # unreachable: names are checked in ``from_module``

    def derivatives(self, x: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
        """(sigma'(x), sigma''(x)), elementwise, same shape as ``x``; ``o = sigma(x)``."""
        if self.name == "identity":
            return torch.ones_like(x), torch.zeros_like(x)
        if self.name == "sigmoid":
            d1 = o * (1 - o)  # eq. 15: sigma' = sigma (1 - sigma)
            return d1, d1 * (1 - 2 * o)  # eq. 16: sigma'' = sigma' (1 - 2 sigma)
        if self.name == "tanh":
            d1 = 1 - o * o
            return d1, -2 * o * d1
        if self.name == "relu":
            # torch's ReLU has gradient 0 at x = 0; sigma'' = 0 everywhere it exists.
            return (x > 0).to(x.dtype), torch.zeros_like(x)
        if self.name == "softplus":
            bx = self.beta * x
            s = torch.sigmoid(bx)
            linear = bx > self.threshold  # torch switches to the identity there
            d1 = torch.where(linear, torch.ones_like(s), s)
            d2 = torch.where(linear, torch.zeros_like(s), self.beta * s * (1 - s))
            return d1, d2
        if self.name == "relu6":
            # as torch's autograd: gradient 1 strictly inside (0, 6), 0 at and beyond the corners
            return ((x > 0) & (x < 6)).to(x.dtype), torch.zeros_like(x)
        if self.name == "leaky_relu":
            return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, self.slope)), torch.zeros_like(x)
        raise AssertionError(self.name)

    def to_module(self) -> nn.Module | None:
        """The torch module computing this activation (None for identity)."""
        if self.name == "identity":
            return None
        if self.name == "softplus":
            return nn.Softplus(beta=self.beta, threshold=self.threshold)
        if self.name == "leaky_relu":
            return nn.LeakyReLU(self.slope)
        if self.name == "relu6":
            return nn.ReLU6()
        return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[self.name]()

    def to_dict(self) -> dict:
        if self.name == "softplus":
            return {"name": self.name, "beta": self.beta, "threshold": self.threshold}
        if self.name == "leaky_relu":
            return {"name": self.name, "slope": self.slope}
        return {"name": self.name}


IDENTITY = Activation("identity")
NAMES = ("identity", "sigmoid", "tanh", "relu", "softplus")
#: Activations only the general (CNN) path handles; the MLP path and its exporters keep ``NAMES``.
GENERAL_NAMES = NAMES + ("relu6", "leaky_relu")


def from_module(module: nn.Module) -> Activation | None:
    """The Activation for a torch activation module, or None if it is not one we support."""
    if isinstance(module, nn.Sigmoid):
        return Activation("sigmoid")
    if isinstance(module, nn.Tanh):
        return Activation("tanh")
    if isinstance(module, nn.ReLU):
        return Activation("relu")
    if isinstance(module, nn.Softplus):
        return Activation("softplus", beta=float(module.beta), threshold=float(module.threshold))
    return None


def from_module_general(module: nn.Module) -> Activation | None:
    """As :func:`from_module`, plus ReLU6 and LeakyReLU (handled by the general layer path)."""
    if isinstance(module, nn.ReLU6):
        return Activation("relu6")
    if isinstance(module, nn.LeakyReLU):
        return Activation("leaky_relu", slope=float(module.negative_slope))
    return from_module(module)


def from_name(name: str, beta: float = 1.0, threshold: float = 20.0, slope: float = 0.01,
              names: tuple = NAMES) -> Activation:
    """Activation by name ("sigmoid", "tanh", "relu", "softplus", "identity"/"none"; ``names``
    widens the choice, e.g. to ``GENERAL_NAMES``)."""
    key = "identity" if name in ("none", "linear") else name
    if key not in names:
        raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(names)}")
    return Activation(key, beta=beta, threshold=threshold, slope=slope)
