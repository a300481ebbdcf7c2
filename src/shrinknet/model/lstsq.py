"""Ridge least squares, the solve behind every refit (repair/refit.py) and each layer module's own
``refit`` (layers/linear.py, layers/conv.py)."""

from __future__ import annotations

import torch
from torch import Tensor


def ridge_solve(O: Tensor, X: Tensor, ridge: float, bias: bool = True) -> tuple[Tensor, Tensor | None]:
    """(W (out, d), b (out,) or None) minimizing ||O W^T + b - X||^2 + lambda ||W||^2, in float64.

    O: (N, d) inputs, X: (N, out) target pre-activations; lambda = ridge * mean column sum of O^2.
    """
    O64, X64 = O.detach().to(torch.float64), X.detach().to(torch.float64)
    A = torch.cat([O64, torch.ones(len(O64), 1, dtype=torch.float64, device=O64.device)], 1) if bias else O64
    G = A.T @ A  # (d+1, d+1)
    d = O64.shape[1]
    lam = ridge * float((O64 * O64).sum()) / max(d, 1)
    if lam > 0:
        G[torch.arange(d), torch.arange(d)] += lam
    rhs = A.T @ X64  # (d+1, out)
    try:
        theta = torch.linalg.solve(G, rhs)
    except RuntimeError:  # singular (e.g. ridge 0 and a dead input): minimum-norm solution
        theta = torch.linalg.lstsq(G, rhs, driver="gelsd" if G.device.type == "cpu" else None).solution
    W = theta[:d].T
    b = theta[d] if bias else None
    return W, b
