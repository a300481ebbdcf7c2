"""Saliency criteria: estimates of Delta E_k, the change in total error when neuron k is switched off.

Every criterion is a pure function of (network, data, masks) -> one 1-D tensor per hidden layer,
in forward order, of length out_features. Convention shared by all of them: the score is summed
over the instances, positive means the error grows when the neuron goes, and a low score is
removed first. Switched-off neurons (mask False) score +inf so they are never chosen again.

    brute_force    exact Delta E: switch each neuron off and re-evaluate (§2.1), vectorized
    taylor1        Delta E^1 = -o dE/do                                   (eq. 6)
    taylor2        Delta E^2 = -o dE/do + 1/2 o^2 d2E/do^2                 (eq. 8), eqs. 73-75 sweep
    taylor2_exact  eq. 8 with the exact Hessian diagonal from autograd (slow reference)
    magnitude      ||w_out,j||_2 * sum_n |o_nj|: outgoing weight norm times summed |output|
    random         uniform in [0, 1), from ``seed``
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..model import losses, network
from ..model.parse import as_net
from ..model.backprop2 import batches
from . import exact
from ..model.losses import Loss
from ..model.network import Data, Masks, Network, Trace, check_positive_int, unit_sums
from ..model.network import CHUNK_MEMORY, chunk_for  # noqa: F401  (re-exported: the chunk sizing lives in network.py)
from ..util.threads import policy as thread_policy, scoring_work

METHODS = ("brute_force", "taylor1", "taylor2", "taylor2_exact", "magnitude", "random")


def saliency(
    model,
    X,
    T,
    method: str,
    loss: str = "mse",
    mask: Masks | None = None,
    batch_size: int | None = None,
    *,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
    threads: int | None = None,
) -> list[Tensor]:
    """Estimated Delta E of switching off each hidden neuron, summed over the instances of X.

    Args:
        model: ``nn.Sequential`` of Linear layers and elementwise activations.
        X: (N, in) inputs. T: (N, out) targets, or (N,) integer class labels.
        method: one of ``METHODS`` (see the module docstring).
        loss: "mse" or "cross_entropy".
        mask: one bool tensor per hidden layer, True = kept; removed neurons output 0 and score +inf.
        batch_size: instances per forward pass; bounds memory, does not change the result.
        seed: seed of the "random" baseline.
        chunk_size: candidate neurons evaluated together by "brute_force" and "taylor2_exact"
            (default: as many as fit in ``CHUNK_MEMORY`` bytes of scratch).
        progress: show a progress bar over candidate chunks (brute_force, taylor2_exact).
        threads: worker threads for brute force (default: ``threads.policy`` by workload size,
            or $SHRINKNET_THREADS).

    Returns:
        One 1-D tensor per hidden layer, in forward order, on the model's device and dtype.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    net = as_net(model)
    loss_ = losses.get(loss)
    data = network.prepare(net, X, T, loss_)
    masks = net.check_masks(mask)
    check_positive_int("chunk_size", chunk_size, optional=True)
    if method == "random":
        return removed_to_inf(random_scores(net, seed), masks)
    n_batches = -(-len(data) // (batch_size or len(data)))
    with torch.no_grad(), candidate_bar(progress and method in SLOW, masks, n_batches, method) as bar, \
            thread_policy(scoring_work(net, len(data)), threads) as workers:
        parts = ((batch, None) for batch in batches(data, batch_size))
        total = score_parts(method, net, loss_, parts, masks, chunk_size, bar=bar, workers=workers)
    return removed_to_inf(total, masks)


def score_parts(method: str, net: Network, loss: Loss, parts, masks: Masks, chunk_size: int | None = None,
                bar=None, workers: int = 1) -> list[Tensor]:
    """``score_batch`` summed over (Data, Trace or None) parts, e.g. the batches of one data set."""
    total = [torch.zeros(h, dtype=net.dtype, device=net.device) for h in net.hidden_sizes]
    for data, trace in parts:
        for t, s in zip(total, score_batch(method, net, loss, data, masks, trace, chunk_size, bar, workers)):
            t += s
    return total


#: Methods that evaluate candidates in chunks, and can show progress over them.
SLOW = ("brute_force", "taylor2_exact")


def candidate_bar(enabled: bool, masks: Masks, repeats: int = 1, desc: str = "scoring"):
    """A tqdm bar over every kept neuron (``repeats`` times, e.g. once per batch); silent if not enabled."""
    from tqdm.auto import tqdm

    total = repeats * sum(int(m.sum()) for m in masks)
    return tqdm(total=total, desc=desc, unit="neuron", leave=False, disable=not enabled)


def brute_force(net: Network, loss: Loss, data: Data, masks: Masks, trace: Trace, chunk_size: int | None = None,
                bar=None, workers: int = 1) -> list[Tensor]:
    """Exact Delta E of switching off each unit (§2.1), summed over the batch: exact.py's fused
    kernels where the network states ``fused_brute_force`` (an MLP: switching off neuron j of layer
    h changes the next pre-activations by the rank-1 term x_i -> x_i - w_ji o_j, pushed through the
    layers above in cache-sized chunks), else the layer modules' general pass (layers/net.py)."""
    if net.fused_brute_force:
        return exact.all_deltas(net, loss, data, masks, trace, workers=workers, chunk_size=chunk_size, bar=bar)
    return net.brute_force(loss, data, masks, trace, chunk_size, bar, workers)


def score_batch(
    method: str,
    net: Network,
    loss: Loss,
    data: Data,
    masks: Masks,
    trace: Trace | None = None,
    chunk_size: int | None = None,
    bar=None,
    workers: int = 1,
) -> list[Tensor]:
    """Scores summed over one batch, before removed neurons are set to +inf.

    ``bar``: an optional progress bar (``update(n)``) advanced per evaluated candidate chunk.
    ``workers``: threads over candidate chunks for brute_force (see threads.py).
    """
    if trace is None:
        trace = net.forward(data.X, masks)
    # units: a neuron, or a channel (sums then also run over every position of its map)
    if method == "brute_force":
        return brute_force(net, loss, data, masks, trace, chunk_size, bar, workers)
    if method == "magnitude":
        return net.magnitude(trace)
    if method == "taylor2_exact":  # eq. 8 with the exact second derivative (a channel: on its gate)
        return net.taylor2_exact(loss, data, masks, trace, chunk_size, bar)
    records = net.sweep(loss, data, masks, trace)  # eqs. 73-75
    if method == "taylor1":
        return [unit_sums(-r.o * r.dE_do) for r in records]  # eq. 6
    if method == "taylor2":
        # eq. 8; for a channel the gate's second derivative is taken as the sum over positions of
        # o^2 d2E/do^2 (cross-position terms dropped, as the paper drops cross-neuron terms)
        return [unit_sums(-r.o * r.dE_do + 0.5 * r.o**2 * r.d2E_do2) for r in records]
    raise ValueError(f"unknown method {method!r}")


def random_scores(net: Network, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(h, generator=gen, dtype=net.dtype).to(net.device) for h in net.hidden_sizes]


def removed_to_inf(scores: list[Tensor], masks: Masks) -> list[Tensor]:
    return [torch.where(m, s, torch.full_like(s, math.inf)) for s, m in zip(scores, masks)]
