"""The general sequential network: blocks of (Conv or Linear, then activations and pooling).

A *block* is one layer with weights (``param``: :class:`Conv` or :class:`Dense`, any BatchNorm
already folded into it) followed by its *tail*: the activation and pooling layers before the next
layer with weights, in order. Block k's pre-activation ``x[k]`` is the param's output and its
output ``o[k]`` is the tail's output: the map the next block reads. The *units* of hidden block k
are its output channels (a Conv) or output features (a Linear); switching unit c off sets
``o[k][:, c]`` to 0 everywhere (a mask, True = kept, multiplies ``o[k]`` per channel).

Maps are held as (N, C, H, W); a 1-D network's (N, C, L) is (N, C, 1, L). Every per-layer
concern (forward, derivatives, brute-force change, surgery, parameter count, export) lives in
the layer's own module (conv.py, linear.py, pool.py, act.py); this module strings them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import activations as A
from ..network import Net, Trace
from .conv import Conv
from .linear import Dense


@dataclass(frozen=True)
class Block:
    param: Conv | Dense
    tail: tuple  # Act / MaxPool / AvgPool / AdaptiveAvgPool, in order

    # duck-typed like network.Layer for code that only reads weights and the activation
    @property
    def weight(self) -> Tensor:
        return self.param.weight

    @property
    def bias(self) -> Tensor | None:
        return self.param.bias

    @property
    def act(self) -> A.Activation:
        acts = [op.act for op in self.tail if op.kind == "act"]
        return acts[0] if acts else A.IDENTITY

    @property
    def out_features(self) -> int:
        return self.param.out_units

    @property
    def in_features(self) -> int:
        return self.param.weight.shape[1]

    def run_tail(self, x: Tensor, inplace: bool = False) -> Tensor:
        for op in self.tail:
            x = op.forward(x, inplace=inplace)
        return x


class SeqNet(Net):
    """A parsed general network (see the module docstring). Build one with :func:`parse`.

    ``in_shape``: the shape of one instance as the user gives it, e.g. (1, 20, 20) or (1, 40),
    or (features,) for a network that starts with a Linear layer; None until known (it is bound
    from the first data the network sees, or inferred where the Linear after Flatten fixes it).
    """

    general = True

    def __init__(self, blocks, dims: int, in_shape: tuple | None = None, notes: tuple = ()):
        self.blocks = tuple(blocks)
        self.layers = self.blocks  # what generic code (fingerprints, dtype) reads
        self.dims = dims  # 1 or 2 for a CNN; 0 for a network of Linear layers only
        self.in_shape = None if in_shape is None else tuple(in_shape)
        self.notes = tuple(notes)  # what the parser did, e.g. BatchNorm folding

    # -- shape facts -------------------------------------------------------------------------
    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(b.param.out_units for b in self.blocks[:-1])

    @property
    def n_hidden(self) -> int:
        return len(self.blocks) - 1

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape) if self.in_shape else self.blocks[0].param.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.blocks[-1].param.out_units

    def _internal(self, X: Tensor) -> Tensor:
        """(N, *in_shape) -> the internal map layout (N, C, H, W), a view."""
        if self.dims == 1:
            return X.unsqueeze(-2)
        return X

    def bind(self, shape: tuple) -> None:
        """Check that one instance of ``shape`` runs through the network; remember it."""
        shape = tuple(int(s) for s in shape)
        if self.in_shape is not None:
            if shape != self.in_shape:
                raise ValueError(f"each instance must have shape {self.in_shape}, got {shape}")
            return
        first = self.blocks[0].param
        if first.kind == "conv" and (len(shape) != 1 + self.dims or shape[0] != first.in_units):
            raise ValueError(
                f"the network starts with a {self.dims}-D convolution over {first.in_units} channel(s): each "
                f"instance must have shape ({first.in_units}, {'L' if self.dims == 1 else 'H, W'}), got {shape}"
            )
        if first.kind == "linear" and math.prod(shape) != first.weight.shape[1]:
            raise ValueError(f"the first Linear expects {first.weight.shape[1]} features per instance, got shape {shape}")
        try:
            self.map_shapes(shape)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"an instance of shape {shape} does not fit the network: {str(e).splitlines()[0]}") from None
        self.in_shape = shape

    def map_shapes(self, in_shape: tuple | None = None) -> list[list[tuple]]:
        """Per block, the per-instance shapes (C, H, W) or (F,) of x, then after each tail op."""
        shape = in_shape or self.in_shape
        if shape is None:
            raise ValueError("the input shape of this network is not known yet: give data or input_shape")
        cur = (shape[0], 1, shape[1]) if self.dims == 1 else tuple(shape)
        out = []
        for k, b in enumerate(self.blocks):
            if b.param.kind == "linear":
                if math.prod(cur) != b.param.weight.shape[1]:
                    raise ValueError(f"block {k}: linear expects {b.param.weight.shape[1]} inputs, gets {math.prod(cur)}")
            elif cur[0] != b.param.in_units:
                raise ValueError(f"block {k}: conv expects {b.param.in_units} channels, gets {cur[0]}")
            cur = b.param.out_shape(cur)
            if min(cur) < 1:
                raise ValueError(f"block {k}: the map shrinks to nothing ({cur})")
            shapes = [cur]
            for op in b.tail:
                cur = op.out_shape(cur)
                if min(cur) < 1:
                    raise ValueError(f"block {k}: {op.describe()} leaves nothing ({cur})")
                shapes.append(cur)
            out.append(shapes)
        return out

    # -- masks -------------------------------------------------------------------------------
    @staticmethod
    def _expand(m: Tensor, like: Tensor) -> Tensor:
        return m.view(m.shape[0], *([1] * (like.ndim - 2))).to(like.dtype)

    # -- evaluation --------------------------------------------------------------------------
    def forward(self, X: Tensor, masks, trace: Trace | None = None, changed: int = 0) -> Trace:
        """Forward pass with hidden outputs masked (see ``Net.forward``; same reuse rule)."""
        if trace is None:
            xs, os_, start = [], [], 0
        else:
            xs, os_, start = list(trace.x[: changed + 1]), list(trace.o[:changed]), changed
        h = self._internal(X) if start == 0 else os_[start - 1]
        for k in range(start, len(self.blocks)):
            b = self.blocks[k]
            x = xs[k] if k < len(xs) else b.param.forward(h)
            o = b.run_tail(x)
            if k < self.n_hidden:
                o = o * self._expand(masks[k], o)
            if k == len(xs):
                xs.append(x)
            os_.append(o)
            h = o
        return Trace(xs, os_)

    def output_from(self, k: int, x: Tensor, masks, scratch: bool = True) -> Tensor:
        """Network output (..., N, out) from block k's pre-activation ``x`` (..., N, *x_k shape)."""
        nd = 4 if self.blocks[k].param.kind == "conv" else 2
        lead = x.shape[: x.ndim - nd]
        h = x.reshape(-1, *x.shape[x.ndim - nd + 1:])
        for kk in range(k, len(self.blocks)):
            b = self.blocks[kk]
            if kk > k:
                h = b.param.forward(h)
            h = b.run_tail(h, inplace=scratch)
            if kk < self.n_hidden and not bool(masks[kk].all()):
                m = self._expand(masks[kk], h)
                h = h.mul_(m) if scratch else h * m
        return h.reshape(*lead, -1, h.shape[-1])

    def sweep(self, loss, data, masks, trace: Trace | None = None):
        """eqs. 73-75 through every block: one (o, dE/do, d2E/do2) record per hidden block,
        each shaped like o[k] (N, C, H, W) or (N, F). Inside a block the tail is run backward
        op by op (eqs. 74-75 for the activation, the pooling rule of pool.py), and between
        blocks eq. 73 goes through the next layer's weights (a transposed convolution for a
        conv, with the squared kernel for the second derivative)."""
        from ..backprop2 import Derivatives

        if trace is None:
            trace = self.forward(data.X, masks)
        g1, g2 = loss.derivatives(trace.o[-1], data.T)  # eqs. 13, 14 at the output
        records = []
        for k in reversed(range(len(self.blocks))):
            b = self.blocks[k]
            us = [trace.x[k]]
            for op in b.tail[:-1]:
                us.append(op.forward(us[-1]))
            if k < self.n_hidden:
                m = self._expand(masks[k], g1)
                g1, g2 = g1 * m, g2 * m
            outs = [*us[1:], None]
            for op, u, out in reversed(list(zip(b.tail, us, outs))):
                if out is None:
                    out = op.forward(u)
                g1, g2 = op.backward(u, out, g1, g2)
            if k == 0:
                break
            o_prev = trace.o[k - 1]
            g1, g2 = b.param.backward(g1, g2, tuple(o_prev.shape))  # eq. 73
            records.append(Derivatives(o_prev, g1, g2))
        return records[::-1]

    # -- criteria that need the layer structure ----------------------------------------------
    def brute_force(self, loss, data, masks, trace: Trace, chunk_size: int | None = None, bar=None) -> list[Tensor]:
        """Exact Delta E of switching off each kept unit, summed over the batch.

        Switching off unit c of block h changes block h+1's pre-activation by that unit's own
        contribution (conv.py / linear.py ``contribution``) and nothing below, so a chunk of
        candidates is one batched pass over the blocks above: (C, N, ...) folded into the batch.
        """
        y = trace.o[-1]
        scores = []
        for h in range(self.n_hidden):
            o = trace.o[h]
            nxt = self.blocks[h + 1].param
            x_next = trace.x[h + 1]
            s = torch.zeros(o.shape[1], dtype=o.dtype, device=o.device)
            kept = masks[h].nonzero().squeeze(1)
            C = chunk_size or self._auto_chunk(h, len(data), o.element_size())
            for J in kept.split(C):
                xs = x_next.unsqueeze(0) - nxt.contribution(o, J)  # (C, N, ...)
                y_new = self.output_from(h + 1, xs, masks)  # (C, N, out)
                s[J] = loss.delta(y_new, y, data.T).sum(-1)
                if bar is not None:
                    bar.update(len(J))
            scores.append(s)
        return scores

    def switch_off_delta(self, loss, data, masks, trace: Trace, h: int, units: list[int]) -> Tensor:
        """Exact Delta E (summed over the batch) of switching off ``units`` of block h together."""
        J = torch.as_tensor(units, device=self.device)
        xs = trace.x[h + 1] - self.blocks[h + 1].param.contribution(trace.o[h], J).sum(0)
        return loss.delta(self.output_from(h + 1, xs, masks), trace.o[-1], data.T).sum()

    def _auto_chunk(self, h: int, n: int, itemsize: int) -> int:
        from ..saliency import chunk_for

        shapes = self.map_shapes() if self.in_shape else None
        if shapes is None:
            return 8
        return chunk_for(n, max(math.prod(s) for blk in shapes[h + 1:] for s in blk), itemsize)

    def magnitude(self, trace: Trace) -> list[Tensor]:
        """||outgoing weights of unit c|| * sum over instances and positions of |o_c|."""
        return [self.blocks[h + 1].param.input_norms()
                * trace.o[h].abs().transpose(0, 1).reshape(trace.o[h].shape[1], -1).sum(1)
                for h in range(self.n_hidden)]

    def gate_error(self, loss, data, masks, h: int):
        """E as a function of a per-unit gate g (C,) multiplying o[h] (g = 1: the network as is)."""
        def E(g: Tensor, o_h: Tensor) -> Tensor:
            o = o_h * self._expand(g, o_h)
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
        o = trace.o[h].detach()
        C = o.shape[1]
        E = self.gate_error(loss, data, masks, h)
        ones = torch.ones(C, dtype=o.dtype, device=o.device)
        grad = torch.func.grad(E)
        g1 = grad(ones, o)

        def hvp(v: Tensor) -> Tensor:
            return torch.func.jvp(lambda g: grad(g, o), (ones,), (v,))[1]

        diag = torch.empty(C, dtype=o.dtype, device=o.device)
        step = chunk_size or max(1, min(C, 16))
        for cols in torch.arange(C, device=o.device).split(step):
            V = torch.zeros(len(cols), C, dtype=o.dtype, device=o.device)
            V[torch.arange(len(cols)), cols] = 1
            diag[cols] = torch.func.vmap(hvp)(V)[torch.arange(len(cols)), cols]
            if bar is not None:
                bar.update(int(masks[h][cols].sum()))
        return g1, diag

    # -- memory ------------------------------------------------------------------------------
    def params(self, masks=None) -> int:
        """Weights and biases counting only kept units (True = kept)."""
        return self._per_layer("params", masks)

    def int8_bytes(self, masks=None) -> int:
        """Bytes at int8 storage counting only kept units: int8 weights, a float32 scale per output
        unit and float32 biases, each layer by its own module (conv.py / linear.py ``int8_bytes``)."""
        return self._per_layer("int8_bytes", masks)

    def _per_layer(self, count: str, masks) -> int:
        """The sum over blocks of ``param.<count>(kept outputs, kept inputs)``."""
        kept = list(self.hidden_sizes) if masks is None else [int(m.sum()) for m in masks]
        total = 0
        for k, b in enumerate(self.blocks):
            n_out = kept[k] if k < self.n_hidden else b.param.out_units
            n_in = kept[k - 1] if k > 0 else b.param.in_units
            total += getattr(b.param, count)(n_out, n_in)
        return total

    def maps(self, masks=None) -> list[int]:
        """Floats of every intermediate map of a batch-1 forward pass, in order (the input and the
        output, which belong to the caller, excluded); activations work in place."""
        kept = list(self.hidden_sizes) if masks is None else [int(m.sum()) for m in masks]
        sizes = []
        for k, shapes in enumerate(self.map_shapes()):
            c = kept[k] if k < self.n_hidden else None
            for s in shapes[:1] + [s for op, s in zip(self.blocks[k].tail, shapes[1:]) if op.kind != "act"]:
                sizes.append(math.prod(s) // s[0] * (c if c is not None else s[0]))
        return sizes[:-1]

    def ram_floats(self, masks=None) -> int:
        """Scratch floats of a batch-1 forward: consecutive maps side by side (ping-pong)."""
        m = self.maps(masks)
        return max([m[0]] + [a + b for a, b in zip(m, m[1:])])

    # -- surgery and conversion --------------------------------------------------------------
    def shrink(self, masks) -> "SeqNet":
        """The physically smaller network keeping the units where ``masks`` is True."""
        idx = [m.nonzero().squeeze(1) for m in masks]
        blocks = []
        for k, b in enumerate(self.blocks):
            rows = idx[k] if k < self.n_hidden else None
            cols = idx[k - 1] if k > 0 else None
            blocks.append(Block(b.param.keep(rows, cols), b.tail))
        return SeqNet(blocks, self.dims, self.in_shape)

    def copy(self) -> "SeqNet":
        return SeqNet([Block(b.param.keep(None, None), b.tail) for b in self.blocks], self.dims, self.in_shape,
                      self.notes)

    def to_sequential(self) -> nn.Sequential:
        """A fresh ``nn.Sequential`` (BatchNorm folded, Dropout dropped) with copies of the weights."""
        mods: list[nn.Module] = []
        for k, b in enumerate(self.blocks):
            if b.param.kind == "linear" and (k > 0 and self.blocks[k - 1].param.kind == "conv"
                                              or k == 0 and self.in_shape is not None and len(self.in_shape) > 1):
                mods.append(nn.Flatten())
            mods.append(b.param.module(self.dims))
            mods.extend(m for m in (op.module(self.dims) for op in b.tail) if m is not None)
        seq = nn.Sequential(*mods)
        if self.in_shape is not None:
            seq.shrinknet_input_shape = tuple(self.in_shape)  # read back by parse()
        return seq

    def layout(self) -> dict:
        """What identifies the architecture (widths, ops, input shape), JSON-ready."""
        return {
            "in": list(self.in_shape) if self.in_shape else None,
            "hidden": list(self.hidden_sizes),
            "out": self.out_features,
            "bias": [b.bias is not None for b in self.blocks],
            "activations": [b.act.to_dict() for b in self.blocks],
            "blocks": [{"param": b.param.to_dict(), "kernel": list(b.weight.shape[2:]),
                        "tail": [op.to_dict() for op in b.tail]} for b in self.blocks],
        }

    def describe(self) -> list[str]:
        return [", ".join([b.param.describe(), *(op.describe() for op in b.tail)]) for b in self.blocks]
