"""Exact brute-force Delta E, fast: the paper's switch-off-and-re-evaluate (§2.1), vectorised.

This is the MLP's brute force (``network.Net.brute_force``): the specialisation of the layer
modules' general one (``layers/net.py``: a candidate's ``contribution`` pushed through the layers
above) for a stack of Linear layers, where the contribution is a rank-1 term and everything can
be fused. The general path gives the same scores (tested).

Switching off neuron j of hidden layer h changes the next layer's pre-activations by a rank-1
term, x^(h+1) -> x^(h+1) - o_j w_j (eq. 5 with o_j = 0), and leaves every layer below untouched.
For each candidate this module pushes that perturbed pre-activation through the layers above and
sums E_n(y') - E_n(y) over the instances. Nothing is approximated; three things make it fast:

- fused, cache-sized tasks: a task is a chunk of candidates that walks the instances in blocks
  small enough (``block_shape``, from the L2 cache size) that the (C, n, width) scratch stays in
  cache through the rank-1 update, the activation (in place), the next matmul and the loss sum;
- parallel over candidate chunks: tasks go to worker threads from a shared queue
  (``threads.run_chunks``; the count comes from ``threads.policy``; torch's own pool is one
  thread meanwhile), so a core taken by another process slows one worker instead of every small op;
- exact reuse between pruning steps (:class:`Incremental`): for each candidate c of the
  second-to-last hidden layer it keeps the output pre-activations z_c (N, out) of the network
  with c switched off. Removing neuron k of the LAST hidden layer changes them by a rank-1 term,
  z_c -= W_out[:, k] * sigma(x_k - o_c w_kc), so those candidates then cost O(N out) instead of
  O(N width) each. Any other removal changes their inputs and they are recomputed. The cache is
  rebuilt from scratch at least every ``REFRESH`` cheap updates, bounding rounding drift.

Index letters as in network.py: n instance, j neuron of layer h (candidate), i neuron above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..model.losses import Loss
from ..util.threads import l2_bytes, run_chunks  # noqa: F401  (l2_bytes re-exported)

if TYPE_CHECKING:  # network.Net's brute force is this module: names for annotations only
    from ..model.mlp import Net
    from ..model.network import Data, Masks, Trace

#: Cheap (rank-1) cache updates allowed before the cache is rebuilt from scratch.
REFRESH = 32

#: Largest cache of output pre-activations kept, in bytes; above it every step recomputes.
MAX_CACHE_BYTES = 1 << 30


#: Scratch of one block as a multiple of the L2 cache: blocks that fit in L2 cost more in Python
#: calls than they save in memory traffic at these shapes (measured by benchmarks/bench_scale.py).
BLOCK_L2 = 2.0


def block_shape(n_candidates: int, n: int, width: int, itemsize: int, workers: int,
                chunk_size: int | None = None) -> tuple[int, int]:
    """(candidates per task C, instances per block nb) so that a (C, nb, width) block is about
    ``BLOCK_L2`` L2 caches, with at least 4 tasks per worker when there are enough candidates."""
    budget = max(1, int(l2_bytes() * BLOCK_L2) // itemsize)  # elements
    nb = max(1, min(n, budget // max(1, width)))
    C = max(1, budget // (nb * max(1, width)))
    if workers > 1:
        C = min(C, max(1, -(-n_candidates // (4 * workers))))
    if chunk_size is not None:
        C = chunk_size
    return min(C, max(1, n_candidates)), nb


def delta_sum(loss: Loss, y_new: Tensor, y: Tensor, t: Tensor, v: Tensor | None = None) -> Tensor:
    """sum over (n, out) of E_n(y_new) - E_n(y), per leading candidate: y_new (C, n, out) -> (C,).

    For MSE, 1/2 sum (y'-t)^2 - (y-t)^2 = sum d (d/2 + v) with d = y' - y and v = y - t:
    the difference is formed first, never two large totals subtracted. ``y_new`` is overwritten.
    """
    if loss.name != "mse":
        return loss.delta(y_new, y, t).sum(-1)  # (C, n) -> (C,)
    if v is None:
        v = y - t
    C = y_new.shape[0]
    d = y_new.sub_(y)  # (C, n, out)
    return 0.5 * (d * d).reshape(C, -1).sum(1) + d.reshape(C, -1) @ v.reshape(-1)


def delta_sum_t(loss: Loss, yT_new: Tensor, y: Tensor, t: Tensor, v: Tensor | None = None) -> Tensor:
    """``delta_sum`` with the candidate outputs transposed: yT_new (out, C, n) -> (C,)."""
    if loss.name != "mse":
        return loss.delta(yT_new.permute(1, 2, 0), y, t).sum(-1)
    if v is None:
        v = y - t
    d = yT_new.sub_(y.T.unsqueeze(1))  # (out, C, n)
    return (d * (0.5 * d + v.T.unsqueeze(1))).sum((0, 2))


def layer_deltas(net: Net, loss: Loss, data: Data, masks: Masks, trace: Trace, h: int, J: Tensor, *,
                 workers: int = 1, chunk_size: int | None = None, cache: Tensor | None = None,
                 bar=None) -> Tensor:
    """Exact Delta E, summed over ``data``, of switching off each neuron in ``J`` of hidden layer h.

    Args:
        J: 1-D long tensor of neuron indices (kept neurons; a removed one scores as if kept).
        workers: threads evaluating candidate chunks (see threads.py).
        chunk_size: candidates per task (default: from the cache size).
        cache: optional (width_h, N, out) tensor; row j receives candidate j's output
            pre-activations (used by :class:`Incremental`).
        bar: optional progress bar, advanced per finished chunk.

    Returns:
        (len(J),) tensor on the network's device and dtype.
    """
    out = torch.zeros(len(J), dtype=net.dtype, device=net.device)
    if len(J) == 0:
        return out
    o = trace.o[h]  # (N, j)
    x_next = trace.x[h + 1]  # (N, i)
    y = trace.o[-1]  # (N, out)
    N = len(data)
    W = net.layers[h + 1].weight  # (i, j)
    width = max(layer.out_features for layer in net.layers[h + 1:])
    C, nb = block_shape(len(J), N, width, o.element_size(), workers, chunk_size)
    oT = o.T  # (j, N), strided: gathered per task
    WT = W.T  # (j, i)
    v = y - data.T if loss.name == "mse" else None
    L = len(net.layers) - 1
    # a switched-off neuron outputs 0: zeroing its outgoing weights is the same product, one pass fewer
    weights = {k: net.layers[k].weight if bool(masks[k - 1].all()) else net.layers[k].weight * masks[k - 1]
               for k in range(h + 2, L + 1)}
    out_layer = net.layers[L]
    out_bias = torch.zeros(1, dtype=o.dtype, device=o.device) if out_layer.bias is None else out_layer.bias.unsqueeze(1)

    def task(lo: int) -> int:
        Jc = J[lo: lo + C]
        c = len(Jc)
        a_all = oT[Jc]  # (c, N)
        w = WT[Jc].unsqueeze(1)  # (c, 1, i)
        buf = torch.empty(c * nb * W.shape[0], dtype=o.dtype, device=o.device)
        s = torch.zeros(c, dtype=o.dtype, device=o.device)
        for r0 in range(0, N, nb):
            r1 = min(N, r0 + nb)
            xs = buf[: c * (r1 - r0) * W.shape[0]].view(c, r1 - r0, W.shape[0])
            torch.addcmul(x_next[r0:r1], a_all[:, r0:r1].unsqueeze(2), w, value=-1, out=xs)  # x - o_j w_j
            for k in range(h + 1, L):
                layer = net.layers[k]
                if k > h + 1:
                    xs = torch.nn.functional.linear(xs.reshape(-1, xs.shape[-1]), weights[k], layer.bias)
                    xs = xs.view(c, r1 - r0, layer.out_features)
                xs = layer.act(xs, inplace=True)
            vb = None if v is None else v[r0:r1]
            if h + 1 == L:  # a last-hidden-layer candidate: xs already is the output pre-activation
                if cache is not None:
                    cache[Jc, r0:r1] = xs
                s += delta_sum(loss, out_layer.act(xs, inplace=True), y[r0:r1], data.T[r0:r1], vb)
                continue
            # output layer, transposed: (out, width) @ (width, c*nb) is the fast GEMM shape when out is small
            zT = torch.addmm(out_bias, weights[L], xs.reshape(-1, xs.shape[-1]).T).view(-1, c, r1 - r0)
            if cache is not None:
                cache[Jc, r0:r1] = zT.permute(1, 2, 0)
            s += delta_sum_t(loss, out_layer.act(zT, inplace=True), y[r0:r1], data.T[r0:r1], vb)
        out[lo: lo + c] = s
        return c

    run_chunks(task, range(0, len(J), C), workers, bar)
    return out


def all_deltas(net: Net, loss: Loss, data: Data, masks: Masks, trace: Trace, *, workers: int = 1,
               chunk_size: int | None = None, bar=None) -> list[Tensor]:
    """Exact Delta E of every kept neuron, one tensor per hidden layer (removed neurons: 0)."""
    scores = []
    for h in range(net.n_hidden):
        s = torch.zeros(net.hidden_sizes[h], dtype=net.dtype, device=net.device)
        kept = masks[h].nonzero().squeeze(1)
        s[kept] = layer_deltas(net, loss, data, masks, trace, h, kept, workers=workers,
                               chunk_size=chunk_size, bar=bar)
        scores.append(s)
    return scores


class Incremental:
    """Exact brute-force scores along a pruning run, reusing work between steps where exact.

    ``parts`` is the pruner's list of [Data, Trace] pairs (batches of the validation set); the
    pruner updates their traces after each removal and then calls :meth:`removed`.
    """

    def __init__(self, net: Net, loss: Loss, parts: list, workers: int = 1, chunk_size: int | None = None,
                 refresh: int | None = None):
        self.net, self.loss, self.parts = net, loss, parts
        self.workers, self.chunk_size = workers, chunk_size
        self.refresh = REFRESH if refresh is None else refresh
        self.h_cached = net.n_hidden - 2  # second-to-last hidden layer (-1: none)
        n_out = net.out_features
        size = 0 if self.h_cached < 0 else net.hidden_sizes[self.h_cached] * n_out * net.layers[0].weight.element_size()
        self.use_cache = self.h_cached >= 0 and size * sum(len(d) for d, _ in parts) <= MAX_CACHE_BYTES
        self.z: list[Tensor | None] = [None] * len(parts)
        self.pending: list[int] = []  # last-hidden neurons removed since z was last brought up to date
        self.updates = 0  # cheap updates since z was rebuilt
        self.valid = False
        self.last: list[list[Tensor]] | None = None  # per part, per layer: last scores
        self.stale: set[int] = set(range(net.n_hidden))  # layers whose scores must be recomputed
        self.full_passes = 0
        self.cheap_passes = 0

    def removed(self, removed: list[tuple[int, int]]) -> None:
        """Tell the scorer which neurons were just switched off (masks and traces already updated)."""
        last_hidden = self.net.n_hidden - 1
        self.stale = set(range(self.net.n_hidden))
        if self.valid and all(h == last_hidden for h, _ in removed) and self.updates + len(removed) <= self.refresh:
            self.pending += [j for _, j in removed]
            self.updates += len(removed)
            self.stale.discard(self.h_cached)  # updated exactly by rank-1 terms instead
        else:
            self.valid = False
            self.pending = []

    def scores(self, masks: Masks, bar=None) -> list[Tensor]:
        """Exact Delta E of every kept neuron on the current masked network, summed over parts
        (removed neurons: 0)."""
        net = self.net
        totals = [torch.zeros(w, dtype=net.dtype, device=net.device) for w in net.hidden_sizes]
        rebuild = self.use_cache and not self.valid
        if self.last is None:
            self.last = [[None] * net.n_hidden for _ in self.parts]
        for p, (data, trace) in enumerate(self.parts):
            for h in range(net.n_hidden):
                kept = masks[h].nonzero().squeeze(1)
                s = torch.zeros(net.hidden_sizes[h], dtype=net.dtype, device=net.device)
                if h == self.h_cached and self.use_cache and not rebuild and h not in self.stale:
                    s[kept] = self._from_cache(p, data, trace, masks, kept)
                    if bar is not None:
                        bar.update(len(kept))
                else:
                    cache = None
                    if h == self.h_cached and self.use_cache:
                        if self.z[p] is None:
                            self.z[p] = torch.empty(net.hidden_sizes[h], len(data), net.out_features,
                                                    dtype=net.dtype, device=net.device)
                        cache = self.z[p]
                    s[kept] = layer_deltas(net, self.loss, data, masks, trace, h, kept, workers=self.workers,
                                           chunk_size=self.chunk_size, cache=cache, bar=bar)
                self.last[p][h] = s
                totals[h] += s
        if self.use_cache:
            if rebuild or self.h_cached in self.stale:
                self.full_passes += 1
                self.updates = 0
            else:
                self.cheap_passes += 1
            self.valid = True
            self.pending = []
        self.stale = set()
        return totals

    def _chunk(self, data: Data) -> int:
        return max(1, l2_bytes() // 2 // self.net.layers[0].weight.element_size() // max(1, len(data) * self.net.out_features))

    def _update(self, p: int, data: Data, trace: Trace, kept: Tensor, removed: list[int]) -> None:
        """z_c -= W_out[:, k] sigma(x_k - o_c w_kc) for each removed last-hidden neuron k, in order."""
        net, h = self.net, self.h_cached
        z = self.z[p]  # (j, N, out)
        mid, out_layer = net.layers[h + 1], net.layers[-1]  # the last hidden layer, the output layer
        o = trace.o[h]  # (N, j)
        x_up = trace.x[h + 1]  # (N, i): unchanged by removals in the last hidden layer
        C = self._chunk(data)
        for lo in range(0, len(kept), C):
            Jc = kept[lo: lo + C]
            zc = z[Jc]  # (c, N, out) copy
            for k in removed:
                # o'_k for every candidate c: sigma(x_k - o_c w_kc), (c, N); then z_c -= W_out[:, k] o'_k
                ok = mid.act(x_up[:, k].unsqueeze(0) - o[:, Jc].T * mid.weight[k, Jc].unsqueeze(1))
                zc.sub_(ok.unsqueeze(2) * out_layer.weight[:, k])
            z[Jc] = zc

    def _from_cache(self, p: int, data: Data, trace: Trace, masks: Masks, kept: Tensor) -> Tensor:
        """Apply the pending rank-1 updates to z of part p, then Delta E of each kept candidate."""
        self._update(p, data, trace, kept, self.pending)
        z, out_layer, y = self.z[p], self.net.layers[-1], trace.o[-1]
        v = y - data.T if self.loss.name == "mse" else None
        C = self._chunk(data)
        res = torch.empty(len(kept), dtype=self.net.dtype, device=self.net.device)
        for lo in range(0, len(kept), C):
            Jc = kept[lo: lo + C]
            yc = out_layer.act(z[Jc], inplace=True)  # z[Jc] is a copy
            res[lo: lo + len(Jc)] = delta_sum(self.loss, yc, y, data.T, v)
        return res

    def resume(self, history: list[list[tuple[int, int]]]) -> None:
        """Bring the cache to the state an uninterrupted run has after the removals in ``history``
        (one list per step), so a resumed run continues bit for bit: the same rebuilds and the same
        sequence of rank-1 updates, replayed. The parts' traces must be those of the current masks."""
        if not self.use_cache:
            return
        valid, updates, rebuilt, groups, pending = False, 0, None, [], []
        last_hidden = self.net.n_hidden - 1
        for k, removed in enumerate(history):
            if not valid:  # the scoring before removal k rebuilt the cache
                valid, updates, rebuilt, groups = True, 0, k, []
            elif pending:
                groups.append(pending)  # ... or applied the updates pending from removal k-1
            if all(h == last_hidden for h, _ in removed) and updates + len(removed) <= self.refresh:
                pending = [j for _, j in removed]
                updates += len(pending)
            else:
                valid, pending = False, []
        if not valid:
            return  # the next scoring rebuilds, as it would have
        masks = [torch.ones(w, dtype=torch.bool, device=self.net.device) for w in self.net.hidden_sizes]
        for removed in history[:rebuilt]:
            for h, j in removed:
                masks[h][j] = False
        h = self.h_cached
        kept = masks[h].nonzero().squeeze(1)
        for p, (data, trace) in enumerate(self.parts):
            self.z[p] = torch.empty(self.net.hidden_sizes[h], len(data), self.net.out_features,
                                    dtype=self.net.dtype, device=self.net.device)
            then = self.net.forward(data.X, masks)  # the trace at the rebuild
            layer_deltas(self.net, self.loss, data, masks, then, h, kept, workers=self.workers,
                         chunk_size=self.chunk_size, cache=self.z[p])
            for g in groups:
                self._update(p, data, trace, kept, g)
        self.valid, self.updates, self.pending = True, updates, pending
        self.stale = set(range(self.net.n_hidden)) - {h}
