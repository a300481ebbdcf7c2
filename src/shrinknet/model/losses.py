"""Per-instance error functions E_n(y, t) and their derivatives w.r.t. the network output y.

Shapes: y, t are (..., N, C): N instances, C outputs, any leading batch dims
(brute force evaluates many switched-off networks at once). The total error is
E = sum_n E_n (eq. 1), summed, not averaged, as in the paper.

- ``mse``: E_n = 1/2 sum_i (y_i - t_i)^2 (eq. 5); dE/dy = y - t (eq. 13); d2E/dy^2 = 1 (eq. 14).
  The Hessian w.r.t. y is the identity, so the diagonal recursion is exact at the last
  hidden layer.
- ``cross_entropy``: y are logits, t a probability vector (one-hot for class labels):
  E_n = -sum_i t_i log softmax(y)_i = (sum_i t_i) logsumexp(y) - t.y.
  dE/dy = (sum t) p - t. The Hessian (sum t)(diag p - p p^T) is NOT diagonal; the paper's
  recursion keeps only its diagonal (sum t) p (1 - p), so ``taylor2`` is approximate at every
  layer for this loss. ``taylor2_exact`` shows what that costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Loss:
    name: str

    @property
    def diagonal_hessian_exact(self) -> bool:
        """Whether d2E/dy^2 is diagonal, i.e. the recursion's output step is exact."""
        return self.name == "mse"

    def per_instance(self, y: Tensor, t: Tensor) -> Tensor:
        """E_n, shape (..., N)."""
        if self.name == "mse":
            return 0.5 * ((y - t) ** 2).sum(-1)  # eq. 5
        return t.sum(-1) * torch.logsumexp(y, -1) - (t * y).sum(-1)

    def delta(self, y_new: Tensor, y: Tensor, t: Tensor) -> Tensor:
        """E_n(y_new) - E_n(y), shape (..., N), computed without subtracting two large totals."""
        d = y_new - y
        if self.name == "mse":
            # 1/2 (a-t)^2 - 1/2 (b-t)^2 = 1/2 (a-b)(a+b-2t)
            return 0.5 * (d * (y_new + y - 2 * t)).sum(-1)
        return t.sum(-1) * (torch.logsumexp(y_new, -1) - torch.logsumexp(y, -1)) - (t * d).sum(-1)

    def derivatives(self, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(dE_n/dy, diagonal of d2E_n/dy^2), each shaped like y."""
        if self.name == "mse":
            return y - t, torch.ones_like(y)  # eqs. 13, 14
        s = t.sum(-1, keepdim=True)
        p = torch.softmax(y, -1)
        return s * p - t, s * p * (1 - p)  # diagonal of s (diag p - p p^T)


LOSSES = ("mse", "cross_entropy")


def get(name: str | Loss) -> Loss:
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose 'mse' or 'cross_entropy'")
    return Loss(name)
