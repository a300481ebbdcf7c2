"""Blocks, the layers of both networks, and the general sequential network made of them.

A *block* is one layer with weights (``param``: :class:`Conv` or :class:`Dense`, any BatchNorm
already folded into it) followed by its *tail*: the activation and pooling layers before the next
layer with weights, in order. Block k's pre-activation ``x[k]`` is the param's output and its
output ``o[k]`` is the tail's output: the map the next block reads. The *units* of hidden block k
are its output channels (a Conv) or output features (a Linear); switching unit c off sets
``o[k][:, c]`` to 0 everywhere (a mask, True = kept, multiplies ``o[k]`` per channel).

Maps are held as (N, C, H, W); a 1-D network's (N, C, L) is (N, C, 1, L). Every per-layer
concern (forward, derivatives, brute-force change, surgery, parameter count, export) lives in
the layer's own module (conv.py, linear.py, pool.py, act.py); ``network.Network`` strings them
together for both networks, and :class:`SeqNet` adds what only the general network has: its
brute force over any layer's ``contribution``, the exact channel-gate second derivatives, the
1-D layout and ``nn.Flatten``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import activations as A
from ..network import Network, Trace
from ...util.threads import l2_bytes, run_chunks
from .act import Act
from .conv import Conv
from .linear import Dense


#: Scratch of one brute-force block (candidates x instances x the largest map above) in L2 caches.
BLOCK_L2 = 2.0
#: Chunks of candidates per layer that brute force aims at (threads share them), whatever the workers.
MIN_CHUNKS = 8


@dataclass(frozen=True)
class Block:
    """One layer with weights and its tail: the layer both paths are made of (an MLP layer is
    ``Block.linear(W, b, act)``: a Dense with P = 1, then its activation). It offers what
    ``network.Layer`` lists (weight, bias, act, in_features, out_features) for code that only
    reads weights and the activation."""

    param: Conv | Dense
    tail: tuple  # Act / MaxPool / AvgPool / AdaptiveAvgPool / Depthwise, in order
    act: A.Activation = field(init=False, repr=False, compare=False)  # the tail's first activation, or identity
    #: The mask point: units are switched off (masked, gated) after ``tail[:split]``: before the first
    #: weighted tail op (a depthwise conv, depthwise.py), else after the whole tail.
    split: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        acts = [op.act for op in self.tail if op.kind == "act"]
        object.__setattr__(self, "act", acts[0] if acts else A.IDENTITY)  # read on hot paths: computed once
        weighted = [i for i, op in enumerate(self.tail) if getattr(op, "weighted", False)]
        object.__setattr__(self, "split", weighted[0] if weighted else len(self.tail))

    @classmethod
    def linear(cls, weight: Tensor, bias: Tensor | None, act: A.Activation) -> "Block":
        """A fully connected layer: x = W o + b (eq. 5), then ``act``."""
        return cls(Dense(weight, bias), (Act(act),))

    def with_param(self, param: Conv | Dense) -> "Block":
        """The same tail after ``param`` (e.g. a param after surgery or a refit)."""
        return Block(param, self.tail)

    def with_tail(self, tail) -> "Block":
        return Block(self.param, tuple(tail))

    @property
    def weighted(self) -> list[tuple[int, object]]:
        """(tail index, op) of the tail ops with weights of their own (depthwise convs)."""
        return [(i, op) for i, op in enumerate(self.tail) if getattr(op, "weighted", False)]

    def map_weighted(self, fn) -> "Block":
        """The block with every weighted tail op replaced by ``fn(op)``."""
        return self.with_tail(fn(op) if getattr(op, "weighted", False) else op for op in self.tail)

    def with_weights(self, weight: Tensor, bias: Tensor | None) -> "Block":
        """The same layer (settings and tail) holding ``weight`` and ``bias``."""
        return self.with_param(replace(self.param, weight=weight, bias=bias))

    @property
    def weight(self) -> Tensor:
        return self.param.weight

    @property
    def bias(self) -> Tensor | None:
        return self.param.bias

    @property
    def out_features(self) -> int:
        return self.param.out_units

    @property
    def in_features(self) -> int:
        return self.param.weight.shape[1]

    def run_tail(self, x: Tensor, inplace: bool = False, mask: Tensor | None = None, start: int = 0) -> Tensor:
        """The tail ops from ``start`` on; ``mask`` (units, True = kept) multiplies the map at the
        mask point (after ``tail[:split]``), so a switched-off unit of a depthwise block outputs the
        constant map its depthwise channel makes of zeros (depthwise.py)."""
        for i in range(start, len(self.tail)):
            if i == self.split and mask is not None:
                x = _masked(x, mask, inplace)
            x = self.tail[i].forward(x, inplace=inplace)
        if self.split == len(self.tail) and mask is not None:
            x = _masked(x, mask, inplace)
        return x

    def mask_point(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """The map at the mask point (the units' outputs o_j, masked) given the pre-activation ``x``."""
        for op in self.tail[: self.split]:
            x = op.forward(x)
        return x if mask is None else _masked(x, mask, False)

    def off_value(self, x: Tensor) -> Tensor | None:
        """The tail output (1, C, ...) of a switched-off unit (its map at the mask point all 0), for
        a block whose tail has a depthwise op; None otherwise (a switched-off unit outputs 0).
        ``x``: any pre-activation of the block (only its shape is used)."""
        if self.split == len(self.tail):
            return None
        u = self.mask_point(x[:1], None)
        return self.run_tail(torch.zeros_like(u), start=self.split)

    def module(self, dims: int) -> list[nn.Module]:
        """torch modules of the layer and its tail (an identity activation has none)."""
        return [self.param.module(dims), *(m for m in (op.module(dims) for op in self.tail) if m is not None)]

    def describe(self) -> str:
        return ", ".join([self.param.describe(), *(op.describe() for op in self.tail)])

    def params_parts(self, n_out: int, n_in: int) -> list[tuple]:
        """(module, kept outputs, kept inputs) of the param and of each weighted tail op."""
        return [(self.param, n_out, n_in), *((op, n_out, 1) for _, op in self.weighted)]


def _masked(x: Tensor, mask: Tensor, inplace: bool) -> Tensor:
    m = mask.view(mask.shape[0], *([1] * (x.ndim - 2))).to(x.dtype)
    return x.mul_(m) if inplace else x * m


def perturbed(param, x: Tensor, o: Tensor, J: Tensor) -> Tensor:
    """The pre-activation of the layer ``param`` after each unit in J of the layer below is
    switched off: x - contribution_c (conv.py / linear.py ``contribution``), (len(J), N, ...).

    ``x``: the layer's pre-activation (N, i) for a Linear; for a convolution (N, H', W', O), its
    map channels-last (``channels_last``), and the result (len(J), N, O, H', W') is channels-last
    too (a view of a (len(J), N, H', W', O) tensor): the layout the convolutions above run fastest
    on, the same values in another memory order. The sums are those of ``contribution``, fused
    (only their rounding differs):

    - a Linear over single units (P = 1), a 1x1 convolution with stride 1 and no padding: the
      rank-1 term x_i - o_c w_ic (eq. 5), one fused multiply-subtract for the chunk;
    - any other convolution: x - unfold(o_c) W_c^T, each output position's kh x kw patch of
      channel c times c's slice of the kernel, subtracted from x in one batched matmul (baddbmm)
      for the chunk (a grouped convolution over the candidates computes the same, many times
      slower)."""
    C, n = len(J), x.shape[0]
    if param.kind == "linear":
        if param.block == 1:  # (1, N, i) - (C, N, 1) (C, 1, i)
            return torch.addcmul(x.unsqueeze(0), o.reshape(n, -1)[:, J].T.unsqueeze(2),
                                 param.weight[:, J].T.unsqueeze(1), value=-1)
        return x.unsqueeze(0) - param.contribution(o, J)
    Ho, Wo, O = x.shape[1:]
    kh, kw = param.weight.shape[2:]
    if (kh, kw) == (1, 1) and param.stride == (1, 1) and param.padding == (0, 0):
        # (1, N, H, W, O) - (C, N, H, W, 1) (C, 1, 1, 1, O)
        out = torch.empty(C, n, Ho, Wo, O, dtype=x.dtype, device=x.device)
        torch.addcmul(x.unsqueeze(0), o[:, J].permute(1, 0, 2, 3).unsqueeze(-1),
                      param.weight[:, J, 0, 0].T.reshape(C, 1, 1, 1, O), value=-1, out=out)
    else:
        k = kh * kw
        cols = patches(o[:, J].transpose(0, 1), (kh, kw), param.stride, param.padding, param.dilation, (Ho, Wo))
        cols = cols.view(C, n * Ho * Wo, k)
        w = param.weight[:, J].reshape(O, C, k).permute(1, 2, 0)  # (C, k, O)
        out = torch.baddbmm(x.reshape(1, n * Ho * Wo, O), cols, w, alpha=-1).view(C, n, Ho, Wo, O)
    return out.permute(0, 1, 4, 2, 3)


def patches(u: Tensor, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple, out_hw: tuple) -> Tensor:
    """The kh x kw input window of every output position of a convolution over ``u`` (C, N, H, W):
    (C, N, H', W', kh * kw), window entries in kernel order (``F.unfold``'s columns, gathered as
    kh * kw strided views of the zero-padded map: several times faster on these small maps)."""
    (kh, kw), (sh, sw), (dh, dw), (Ho, Wo) = kernel, stride, dilation, out_hw
    if padding != (0, 0):
        u = F.pad(u, (padding[1], padding[1], padding[0], padding[0]))
    return torch.stack([u[:, :, i * dh: i * dh + (Ho - 1) * sh + 1: sh, j * dw: j * dw + (Wo - 1) * sw + 1: sw]
                        for i in range(kh) for j in range(kw)], -1)


def channels_last(x: Tensor) -> Tensor:
    """A map (N, C, H, W) as (N, H, W, C), contiguous; rows (N, i) as they are."""
    return x.permute(0, 2, 3, 1).contiguous() if x.ndim == 4 else x


class SeqNet(Network):
    """A parsed general network (see the module docstring). Build one with :func:`parse`.

    ``in_shape``: the shape of one instance as the user gives it, e.g. (1, 20, 20) or (1, 40),
    or (features,) for a network that starts with a Linear layer; None until known (it is bound
    from the first data the network sees, or inferred where the Linear after Flatten fixes it).
    Everything else of the interface is ``network.Network``'s, through the layer modules.
    """

    general = True
    scoring_threads = True  # worker threads over candidate chunks (threads.run_chunks)
    approximate_speeds = True  # speed.py's screen and blocks: taylor2 screens, ``layer_deltas`` scores the shortlist
    file_format = "shrinknet-seq"  # layers/io.py

    def __init__(self, blocks, dims: int, in_shape: tuple | None = None, notes: tuple = (), sources=None):
        super().__init__(blocks, in_shape, notes)
        self.dims = dims  # 1 or 2 for a CNN; 0 for a network of Linear layers only
        #: per block, (module name, "param" | "depthwise") of the torch modules it was parsed from
        #: (a folded BatchNorm included); None for a network not parsed from modules
        self.sources = None if sources is None else tuple(tuple(s) for s in sources)

    def with_blocks(self, blocks) -> "SeqNet":
        return SeqNet(blocks, self.dims, self.in_shape, self.notes, self.sources)

    def coupled(self, h: int) -> list[tuple[str, str]]:
        """The coupled channels of one unit of hidden layer h, as (module, what the unit indexes):
        every module whose weights a removal of unit c cuts: the producer's (and its folded
        BatchNorm's) "output channel" c, every depthwise conv's (and its BatchNorm's) "channel" c,
        and the next layer's "input channel" c (after Flatten: its block of columns). Module
        names are the parsed model's (``layers.K`` / ``layers.K.I`` for tail op I where unknown)."""
        if not 0 <= h < self.n_hidden:
            raise ValueError(f"hidden layer {h} does not exist (the network has {self.n_hidden})")

        def names(k):
            if self.sources is not None:
                return self.sources[k]
            return ((f"layers.{k}", "param"), *((f"layers.{k}.{i}", "depthwise") for i, _ in self.blocks[k].weighted))

        mine, nxt = names(h), names(h + 1)
        return ([(n, "output channel") for n, r in mine if r == "param"]
                + [(n, "channel") for n, r in mine if r == "depthwise"] + [(nxt[0][0], "input channel")])

    def _internal(self, X: Tensor) -> Tensor:
        """(N, *in_shape) -> the internal map layout (N, C, H, W), a view."""
        if self.dims == 1:
            return X.unsqueeze(-2)
        return X

    # -- criteria that need the layer structure ----------------------------------------------
    def brute_force(self, loss, data, masks, trace: Trace, chunk_size: int | None = None, bar=None,
                    workers: int = 1) -> list[Tensor]:
        """Exact Delta E of switching off each kept unit, summed over the batch (removed units: 0);
        per hidden layer :meth:`layer_deltas` of its kept units."""
        scores = []
        for h in range(self.n_hidden):
            s = torch.zeros(self.hidden_sizes[h], dtype=self.dtype, device=self.device)
            kept = masks[h].nonzero().squeeze(1)
            s[kept] = self.layer_deltas(loss, data, masks, trace, h, kept, chunk_size, bar, workers)
            scores.append(s)
        return scores

    def layer_deltas(self, loss, data, masks, trace: Trace, h: int, J: Tensor, chunk_size: int | None = None,
                     bar=None, workers: int = 1) -> Tensor:
        """Exact Delta E, summed over the batch, of switching off each unit in ``J`` (1-D long) of
        hidden layer h: (len(J),).

        Switching off unit c of block h changes block h+1's pre-activation by that unit's own
        contribution (conv.py / linear.py ``contribution``; :func:`perturbed`) and nothing below,
        so a chunk of candidates is one batched pass over the blocks above: (C, nb, ...) folded into
        the batch, over blocks of nb instances small enough to stay in cache (``_auto_chunk``),
        their sums added in block order. Chunks and blocks are sized without regard to ``workers``,
        so the scores are the same bits whichever of the ``workers`` threads
        (``threads.run_chunks``) computes each chunk; another chunk size changes only the order of
        float sums.
        """
        out = torch.zeros(len(J), dtype=self.dtype, device=self.device)
        if len(J) == 0:
            return out
        o = self.removable(h, trace)  # o, or o - z for a depthwise block (its switched-off value z)
        nxt, x_next, y, T = self.blocks[h + 1].param, channels_last(trace.x[h + 1]), trace.o[-1], data.T
        N = len(data)
        C, nb = self._auto_chunk(h, N, o.element_size(), len(J), chunk_size)

        def task(lo: int) -> int:
            Jc = J[lo: lo + C]
            s = torch.zeros(len(Jc), dtype=out.dtype, device=out.device)
            for r0 in range(0, N, nb):
                r = slice(r0, min(N, r0 + nb))
                y_new = self.output_from(h + 1, perturbed(nxt, x_next[r], o[r], Jc), masks)  # (C, nb, out)
                s += loss.delta(y_new, y[r], T[r]).sum(-1)
            out[lo: lo + len(Jc)] = s
            return len(Jc)

        run_chunks(task, range(0, len(J), C), workers, bar)
        return out

    def _auto_chunk(self, h: int, n: int, itemsize: int, n_candidates: int,
                    chunk_size: int | None = None) -> tuple[int, int]:
        """(candidates per chunk C, instances per block nb) of block h's candidates: a (C, nb, map)
        block of the largest map above h is about ``BLOCK_L2`` L2 caches (``threads.l2_bytes``),
        filled with instances first, then candidates; at most ``MIN_CHUNKS``-th of the candidates
        per chunk, so that threads have chunks to share. ``chunk_size`` (given) fixes C. Never a
        function of the worker count."""
        shapes = self.map_shapes() if self.in_shape else None
        if shapes is None:
            return chunk_size or 8, n
        width = max(math.prod(s) for blk in shapes[h + 1:] for s in blk)
        budget = max(1, int(l2_bytes() * BLOCK_L2) // itemsize // width)  # (candidate, instance) pairs
        if chunk_size is not None:
            return chunk_size, max(1, min(n, budget // chunk_size))
        nb = max(1, min(n, budget))
        C = max(1, min(budget // nb, -(-n_candidates // MIN_CHUNKS)))
        return C, nb

    def taylor2_exact(self, loss, data, masks, trace: Trace, chunk_size: int | None = None, bar=None) -> list[Tensor]:
        """eq. 8 on each channel's gate g: -dE/dg + 1/2 d2E/dg2, both exactly (cross-position terms included)."""
        out = []
        for h in range(self.n_hidden):
            with torch.enable_grad():
                g1, g2 = self.gate_hessian_diagonal(loss, data, masks, trace, h, chunk_size, bar)
            out.append(-g1 + 0.5 * g2)
        return out

    def gate_error(self, loss, data, masks, h: int):
        """E as a function of a per-unit gate g (C,) multiplying the units' outputs u at block h's
        mask point (g = 1: the network as is; the rest of the tail, e.g. a depthwise conv, after it)."""
        def E(g: Tensor, u: Tensor) -> Tensor:
            o = self.blocks[h].run_tail(u * self._expand(g, u), start=self.blocks[h].split)
            x = self.blocks[h + 1].param.forward(o)
            return loss.per_instance(self.output_from(h + 1, x, masks, scratch=False), data.T).sum()
        return E

    def gate_hessian_diagonal(self, loss, data, masks, trace: Trace, h: int, chunk_size: int | None = None,
                              bar=None) -> tuple[Tensor, Tensor]:
        """(dE/dg, d2E/dg^2) of every unit's gate of block h, exactly, by forward-over-reverse autograd.

        The gate of channel c is shared by all its positions, so d2E/dg_c^2 holds the
        cross-position terms that ``taylor2`` drops. Instances do not interact, so this sums the
        per-instance values.
        """
        o = self.blocks[h].mask_point(trace.x[h], masks[h]).detach()
        return gate_derivatives(self.gate_error(loss, data, masks, h), o, masks[h], chunk_size, bar)

    # -- conversion --------------------------------------------------------------------------
    def _flatten_before(self, k: int) -> bool:
        return self.blocks[k].param.kind == "linear" and (
            k > 0 and self.blocks[k - 1].param.kind == "conv"
            or k == 0 and self.in_shape is not None and len(self.in_shape) > 1)

    def to_sequential(self) -> nn.Sequential:
        seq = super().to_sequential()
        if self.in_shape is not None:
            seq.shrinknet_input_shape = tuple(self.in_shape)  # read back by parse()
        return seq

    def layout(self) -> dict:
        """What identifies the architecture (widths, ops, input shape), JSON-ready."""
        return {**super().layout(), "in": list(self.in_shape) if self.in_shape else None,
                "blocks": [{"param": b.param.to_dict(), "kernel": list(b.weight.shape[2:]),
                            "tail": [op.to_dict() for op in b.tail]} for b in self.blocks]}


def gate_derivatives(E, o: Tensor, mask: Tensor, chunk_size: int | None = None, bar=None) -> tuple[Tensor, Tensor]:
    """(dE/dg, d2E/dg^2) at g = 1 of ``E(g, o)``, a network's error with a gate per channel of ``o``,
    exactly: the gradient by reverse mode, the Hessian diagonal a chunk of channels at a time as
    forward-over-reverse Hessian-vector products; ``bar`` advances by the kept units (``mask``) done."""
    C = o.shape[1]
    ones = torch.ones(C, dtype=o.dtype, device=o.device)
    grad = torch.func.grad(E)
    g1 = grad(ones, o)

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(lambda g: grad(g, o), (ones,), (v,))[1]

    diag = torch.empty(C, dtype=o.dtype, device=o.device)
    for cols in torch.arange(C, device=o.device).split(chunk_size or max(1, min(C, 16))):
        V = torch.zeros(len(cols), C, dtype=o.dtype, device=o.device)
        V[torch.arange(len(cols)), cols] = 1
        diag[cols] = torch.func.vmap(hvp)(V)[torch.arange(len(cols)), cols]
        if bar is not None:
            bar.update(int(mask[cols].sum()))
    return g1, diag
