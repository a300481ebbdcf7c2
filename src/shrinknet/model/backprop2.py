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

The sweep is ``network.Network.sweep``, one loop for MLPs and CNNs: eq. 73 through each layer is
its module's ``backward`` (layers/linear.py; layers/conv.py: a transposed convolution with the
squared kernel), eqs. 74-75 are layers/act.py's, pooling's rule is layers/pool.py's.
"""

from __future__ import annotations

import torch

from .losses import Loss
from .network import Data, Derivatives, Masks, Network, Trace, check_positive_int

__all__ = ["Derivatives", "backprop2", "batches", "sweep"]


def sweep(net: Network, loss: Loss, data: Data, masks: Masks, trace: Trace | None = None) -> list[Derivatives]:
    """eqs. 73-75 on one batch; returns one record per hidden layer, in forward order
    (``Network.sweep``: each layer module's part, strung together)."""
    return net.sweep(loss, data, masks, trace)


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
    from .parse import as_net

    net = as_net(model)
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
