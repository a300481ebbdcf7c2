"""The second-derivative backward sweep of the paper's appendix (eqs. 73-75).

One forward pass, then one backward sweep that carries, next to the usual first derivative,
the diagonal second derivative of the per-instance error w.r.t. every neuron's output:

    eq. 73:  dE/do_j^(m+1)     = sum_i dE/dx_i^(m) w_ji
             d2E/do_j^(m+1)^2  = sum_i d2E/dx_i^(m)^2 w_ji^2          (cross terms dropped)
    eq. 74:  dE/dx_i^(m)       = dE/do_i^(m) sigma'(x_i^(m))
    eq. 75:  d2E/dx_i^(m)^2    = d2E/do_i^(m)^2 sigma'(x_i^(m))^2 + dE/do_i^(m) sigma''(x_i^(m))

starting at the output from the loss (eqs. 13, 14 for squared error). Dropping the cross terms
in eq. 73 is the paper's diagonal approximation: exact at the last hidden layer when the loss
Hessian w.r.t. the output is diagonal (MSE), approximate below it (and everywhere for
cross-entropy, whose softmax Hessian is not diagonal).

A switched-off neuron outputs o = 0 * sigma(x), so its sigma' and sigma'' are multiplied by the
mask: nothing flows back through it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .losses import Loss
from .network import Data, Masks, Net, Trace, check_positive_int


class Derivatives(NamedTuple):
    """Per-instance quantities of one hidden layer, each (N, h)."""

    o: Tensor  # neuron outputs (0 for switched-off neurons)
    dE_do: Tensor  # first derivative of E_n w.r.t. o
    d2E_do2: Tensor  # diagonal second derivative of E_n w.r.t. o (eq. 73)


def sweep(net: Net, loss: Loss, data: Data, masks: Masks, trace: Trace | None = None) -> list[Derivatives]:
    """eqs. 73-75 on one batch; returns one record per hidden layer, in forward order."""
    if getattr(net, "general", False):  # convolutions: layers/net.py strings the layer modules together
        return net.sweep(loss, data, masks, trace)
    if trace is None:
        trace = net.forward(data.X, masks)
    dE_do, d2E_do2 = loss.derivatives(trace.o[-1], data.T)  # eqs. 13, 14 at the output
    records: list[Derivatives] = []
    for k in reversed(range(len(net.layers))):
        layer = net.layers[k]
        s1, s2 = layer.act.derivatives(trace.x[k], trace.o[k])  # sigma'(x), sigma''(x): (N, out_k)
        if k < net.n_hidden:
            s1, s2 = s1 * masks[k], s2 * masks[k]
        dE_dx = dE_do * s1  # eq. 74
        d2E_dx2 = d2E_do2 * s1 * s1 + dE_do * s2  # eq. 75
        if k == 0:
            break
        W = layer.weight  # (i, j)
        dE_do = dE_dx @ W  # eq. 73, first derivative: (N, i) @ (i, j) -> (N, j)
        d2E_do2 = d2E_dx2 @ (W * W)  # eq. 73, second derivative, diagonal approximation
        records.append(Derivatives(trace.o[k - 1], dE_do, d2E_do2))
    return records[::-1]


def backprop2(model, X, T, loss: str = "mse", mask: Masks | None = None, batch_size: int | None = None):
    """Neuron outputs and first/second derivatives of the per-instance error, by eqs. 73-75.

    Args:
        model: ``nn.Sequential`` of Linear layers and elementwise activations.
        X: (N, in) inputs. T: (N, out) targets, or (N,) class labels.
        loss: "mse" (E_n = 1/2 sum_i (o_i - t_i)^2) or "cross_entropy" (logits).
        mask: one bool tensor per hidden layer, True = kept; removed neurons output 0.
        batch_size: instances per forward pass (bounds memory; results do not depend on it).

    Returns:
        One :class:`Derivatives` (o, dE_do, d2E_do2), each (N, h), per hidden layer in forward order.
    """
    from . import losses, network

    net = network.as_net(model)
    loss_ = losses.get(loss)
    data = network.prepare(net, X, T, loss_)
    masks = net.check_masks(mask)
    with torch.no_grad():
        parts = [sweep(net, loss_, b, masks) for b in batches(data, batch_size)]
    return [Derivatives(*(torch.cat(t) for t in zip(*layer))) for layer in zip(*parts)]


def batches(data: Data, batch_size: int | None):
    """Consecutive row slices of ``data`` of at most ``batch_size`` instances."""
    check_positive_int("batch_size", batch_size, optional=True)
    if batch_size is None:
        yield data
        return
    for start in range(0, len(data), batch_size):
        yield data.rows(slice(start, start + batch_size))
