"""Residual networks: a chain of blocks (net.py) with residual additions, and channel *groups*.

An addition ``Add(src, dst, at, proj)`` adds the output o[src] of block src (the tensor before the
residual branch, as every later block of the chain reads it: masked) to block dst's map right
before its tail op ``at`` (``at == len(tail)``: after the whole tail), directly (identity skip) or
through a projection ``proj`` (a Conv, BatchNorm folded; typically 1x1). Block src + 1 .. dst is
the branch (``shrinknet.Residual(block, projection)`` and a traced ``x + self.block(x)`` both give
this; parse.py). What follows the addition in dst's tail (a ReLU, a pooling) acts on the sum.

Grouping (Torch-Pruning's dependency graph, made exact). Channels joined by an addition are one
group, and a *unit* is a channel c of a whole group: removing it removes channel c from every
producer and every consumer in the group. Reading taken for the identity skip: ``y = block(x) + x``
adds channel c of x to channel c of the branch, so the group spans block dst's output channel c
AND the tensor x = o[src] before the branch, with everything that reads either (block src + 1's
input channel c, the projection of a later addition that reads it, block dst + 1's input channel
c); chained identity skips join one group through all of them. A projection ``proj(x)`` decouples
its two sides: its output channels join dst's group (``proj`` loses output channel c with it),
its input channels belong to src's group. Groups are the union-find classes of the hidden blocks
under "src and dst of an identity skip"; they are the network's hidden layers here (``masks[g]``,
``hidden_sizes``), numbered by their lowest block.

A group's switch is the block mask of every member: o[k][:, c] = 0 after block k's whole tail for
each member k (the sum included, so a skip that is already 0 and a branch whose channel is then
masked leave nothing). Every tail op acts per channel, so the consumers then see exactly what the
network without channel c computes: surgery is exact (``shrink``).

Criteria on a group unit (saliency.py reads the ``sweep`` records, one per group):
    brute force     exact: a chunk of candidates runs as one batched pass from the group's lowest
                    block (its next layer by ``contribution``, the rest forward, with the
                    candidate's channel masked at every member);
    taylor1         -sum over members and positions of o dE/do, dE/do taken at each member's
                    output with every path back (skip and branch) summed: exactly -dE/dg of the
                    group gate g (first order in g);
    taylor2         eq. 8 on the members' outputs with the diagonal second derivatives of eqs.
                    73-75 summed; the approximation: cross-position terms (as for any channel),
                    cross-member terms and the cross terms between the two paths into a skip source
                    (d2E/do2 along the skip plus along the branch, their product term dropped);
    taylor2_exact   autograd on the group gate (``gate_hessian_diagonal``), every term kept.

Depthwise ops are refused in a network with additions (parse.py): their switched-off constant
would have to be folded through the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from ...util.threads import run_chunks
from ..network import Derivatives, Trace, chunk_for
from .conv import Conv
from .net import SeqNet, gate_derivatives


@dataclass(frozen=True)
class Add:
    """o[src] (or ``proj(o[src])``) added to block dst's map before its tail op ``at``."""

    src: int
    dst: int
    at: int
    proj: Conv | None = None
    name: str = field(default="", compare=False)  # the projection conv's module name (coupled())

    def describe(self) -> str:
        how = "identity" if self.proj is None else f"projection {self.proj.describe()}"
        return f"+ output of layer {self.src} ({how}) before tail op {self.at}"

    def to_dict(self) -> dict:
        return {"src": self.src, "dst": self.dst, "at": self.at,
                "proj": None if self.proj is None else {**self.proj.to_dict(), "shape": list(self.proj.weight.shape),
                                                        "bias": self.proj.bias is not None}}


def _mul(x: Tensor, m: Tensor | None) -> Tensor:
    """x (B, C, ...) times a per-channel mask: (C,) for every row, or (B, C) one per row."""
    if m is None:
        return x
    if m.ndim == 1:
        return x * m.view(-1, *([1] * (x.ndim - 2))).to(x.dtype)
    return x * m.view(*m.shape, *([1] * (x.ndim - 2))).to(x.dtype)


class ResNet(SeqNet):
    """A SeqNet with residual additions ``adds`` (module docstring); its hidden layers are groups."""

    incremental_brute_force = False

    def __init__(self, blocks, dims: int, in_shape: tuple | None = None, notes: tuple = (), sources=None,
                 adds=()):
        super().__init__(blocks, dims, in_shape, notes, sources)
        self.adds = tuple(sorted(adds, key=lambda a: a.dst))
        self.add_of = {a.dst: a for a in self.adds}
        nh = len(self.blocks) - 1
        parent = list(range(nh))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a in self.adds:
            if not (0 <= a.src < a.dst < nh):
                raise ValueError(f"an addition from layer {a.src} into layer {a.dst}: both must be hidden layers, src first")
            if a.proj is None:
                parent[find(a.dst)] = find(a.src)
        classes: dict[int, list[int]] = {}
        for k in range(nh):
            classes.setdefault(find(k), []).append(k)
        self.groups = tuple(sorted((tuple(v) for v in classes.values()), key=lambda g: g[0]))
        self.group_of = tuple(next(g for g, ms in enumerate(self.groups) if k in ms) for k in range(nh))
        self._sources_of = {a.src for a in self.adds}
        end = -1
        for a in self.adds:  # what the Residual container (to_sequential) and the tail can hold
            b = self.blocks[a.dst]
            c_src = self.blocks[a.src].param.out_units
            if a.src < end or a.at > len(b.tail) or b.param.kind != "conv" or any(x.weighted for x in self.blocks):
                raise ValueError(f"the addition into layer {a.dst} is not one residual block after the one before it")
            if a.proj is None and c_src != b.param.out_units or a.proj is not None and (
                    a.proj.in_units != c_src or a.proj.out_units != b.param.out_units):
                raise ValueError(f"the addition into layer {a.dst} adds tensors with different channel counts")
            end = a.dst

    # -- groups as the hidden layers ----------------------------------------------------------
    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(self.blocks[g[0]].param.out_units for g in self.groups)

    @property
    def n_hidden(self) -> int:
        return len(self.groups)

    def block_masks(self, masks) -> list:
        """The mask of every block (its group's; None for the output layer)."""
        return [masks[self.group_of[k]] for k in range(len(self.blocks) - 1)] + [None]

    def with_blocks(self, blocks) -> ResNet:
        return ResNet(blocks, self.dims, self.in_shape, self.notes, self.sources, self.adds)

    def with_parts(self, blocks, adds) -> ResNet:
        return ResNet(blocks, self.dims, self.in_shape, self.notes, self.sources, adds)

    def coupled(self, h: int) -> list[tuple[str, str]]:
        """Every (module, what the unit indexes) that removing one unit of group h cuts: each
        member's "output channel", each reader's "input channel" (the next layer of every member,
        the projection of an addition that reads a member), each projection into a member's sum
        ("output channel"). Module names are the parsed model's (``layers.K`` / ``adds.I`` where unknown)."""
        if not 0 <= h < self.n_hidden:
            raise ValueError(f"hidden layer {h} does not exist (the network has {self.n_hidden})")

        def name(k):
            return self.sources[k][0][0] if self.sources is not None else f"layers.{k}"

        out = []
        for k in self.groups[h]:
            out.append((name(k), "output channel"))
            out.append((name(k + 1), "input channel"))
        for i, a in enumerate(self.adds):
            if a.proj is not None and a.dst in self.groups[h]:
                out.append((a.name or f"adds.{i}", "output channel"))
            if a.proj is not None and a.src in self.groups[h]:
                out.append((a.name or f"adds.{i}", "input channel"))
        return out

    # -- evaluation -------------------------------------------------------------------------
    def _block_out(self, k: int, x: Tensor, mask, o_of) -> Tensor:
        """Block k's output from its pre-activation x: the tail with the addition inserted (the
        skip read by ``o_of(src)``), then the mask (None, (C,) or one row per instance (B, C))."""
        b, a = self.blocks[k], self.add_of.get(k)
        for i, op in enumerate(b.tail):
            if a is not None and i == a.at:
                x = x + self._skip(a, o_of)
            x = op.forward(x)
        if a is not None and a.at == len(b.tail):
            x = x + self._skip(a, o_of)
        return _mul(x, mask)

    @staticmethod
    def _skip(a: Add, o_of) -> Tensor:
        s = o_of(a.src)
        return s if a.proj is None else a.proj.forward(s)

    def forward(self, X: Tensor, masks, trace: Trace | None = None, changed: int = 0) -> Trace:
        """Forward pass with every group's channels masked at each member. With ``trace`` and
        ``changed`` (a group), the pre-activations up to the group's lowest block are reused."""
        bm = self.block_masks(masks)
        if trace is None:
            xs, os_, start = [], [], 0
        else:
            start = self.groups[changed][0]
            xs, os_ = list(trace.x[: start + 1]), list(trace.o[:start])
        h = self._internal(X) if start == 0 else os_[start - 1]
        for k in range(start, len(self.blocks)):
            x = xs[k] if k < len(xs) else self.blocks[k].param.forward(h)
            o = self._block_out(k, x, bm[k], os_.__getitem__)
            if k == len(xs):
                xs.append(x)
            os_.append(o)
            h = o
        return Trace(xs, os_)

    def output_from(self, k: int, x: Tensor, masks, scratch: bool = True) -> Tensor:
        raise ValueError("output_from is not defined for a network with residual additions (the skips read "
                         "maps below layer k); use forward")

    def _from_group(self, g: int, trace: Trace, masks, M: Tensor, x_next: Tensor) -> Tensor:
        """Network outputs (R, N, out) of R variants of group g's mask, ``M`` (R, C) (float, 0 = off),
        given block lo + 1's pre-activations ``x_next`` (R*N, ...) under them (lo: g's lowest block).
        Every block above lo runs on the R*N rows; a skip from below lo is the trace's map repeated."""
        lo, R, N = self.groups[g][0], M.shape[0], trace.o[0].shape[0]
        bm = self.block_masks(masks)
        Mb = M.repeat_interleave(N, 0)  # (R*N, C)
        kept: dict[int, Tensor] = {}

        def o_of(j):
            if j not in kept:  # j <= lo: the trace's map, repeated (lo's with each variant's mask)
                t = trace.o[j].unsqueeze(0).expand(R, *trace.o[j].shape)
                if j == lo:
                    t = t * M.view(R, 1, M.shape[1], *([1] * (t.ndim - 3))).to(t.dtype)
                kept[j] = t.reshape(R * N, *trace.o[j].shape[1:])
            return kept[j]

        h = x_next
        for k in range(lo + 1, len(self.blocks)):
            x = h if k == lo + 1 else self.blocks[k].param.forward(h)
            mask = Mb if k < len(self.blocks) - 1 and self.group_of[k] == g else bm[k]
            h = self._block_out(k, x, mask, o_of)
            if k in self._sources_of:
                kept[k] = h
        return h.reshape(R, N, -1)

    def _x_next(self, g: int, trace: Trace, J: Tensor, joint: bool = False) -> Tensor:
        """Block lo + 1's pre-activations with the channels J of o[lo] switched off: one variant per
        channel (C*N rows), or all of them together (``joint``: N rows)."""
        lo = self.groups[g][0]
        nxt, x = self.blocks[lo + 1].param, trace.x[lo + 1]
        if joint:
            return x - nxt.joint_contribution(trace.o[lo], J)
        return (x.unsqueeze(0) - nxt.contribution(trace.o[lo], J)).reshape(-1, *x.shape[1:])

    def brute_force(self, loss, data, masks, trace: Trace, chunk_size: int | None = None, bar=None,
                    workers: int = 1) -> list[Tensor]:
        """Exact Delta E of removing each kept unit of every group (module docstring)."""
        y, scores = trace.o[-1], []
        for g, members in enumerate(self.groups):
            o = trace.o[members[0]]
            s = torch.zeros(o.shape[1], dtype=o.dtype, device=o.device)
            kept = masks[g].nonzero().squeeze(1)
            C = chunk_size or self._group_chunk(g, len(data), o.element_size())

            def task(lo: int, g=g, s=s, kept=kept, C=C) -> int:
                J = kept[lo: lo + C]
                M = masks[g].to(y.dtype).expand(len(J), -1).clone()
                M[torch.arange(len(J), device=M.device), J] = 0
                y_new = self._from_group(g, trace, masks, M, self._x_next(g, trace, J))
                s[J] = loss.delta(y_new, y, data.T).sum(-1)
                return len(J)

            run_chunks(task, range(0, len(kept), C), workers, bar)
            scores.append(s)
        return scores

    def _group_chunk(self, g: int, n: int, itemsize: int) -> int:
        """Candidates per chunk: the maps from the group's lowest block up, a few at a time, within
        ``CHUNK_MEMORY`` (network.py)."""
        if self.in_shape is None:
            return 8
        lo = self.groups[g][0]
        width = sum(max(math.prod(s) for s in blk) for blk in self.map_shapes()[lo:])
        return chunk_for(n, width, itemsize)

    def switch_off_delta(self, loss, data, masks, trace: Trace, h: int, units: list[int]) -> Tensor:
        J = torch.as_tensor(units, device=self.device)
        M = masks[h].to(self.dtype).clone()
        M[J] = 0
        y_new = self._from_group(h, trace, masks, M[None], self._x_next(h, trace, J, joint=True))
        return loss.delta(y_new[0], trace.o[-1], data.T).sum()

    def removable(self, h: int, trace: Trace) -> Tensor:
        raise ValueError("a residual network's unit is a group: see brute_force")

    def magnitude(self, trace: Trace) -> list[Tensor]:
        """Per group: sum over members of ||outgoing weights of the channel (next layer and any
        projection reading it)|| * sum over instances and positions of |o|."""
        out = []
        for members in self.groups:
            s = 0
            for k in members:
                sq = self.blocks[k + 1].param.input_norms() ** 2
                for a in self.adds:
                    if a.src == k and a.proj is not None:
                        sq = sq + a.proj.input_norms() ** 2
                o = trace.o[k]
                s = s + sq.sqrt() * o.abs().transpose(0, 1).reshape(o.shape[1], -1).sum(1)
            out.append(s)
        return out

    def sweep(self, loss, data, masks, trace: Trace | None = None) -> list[Derivatives]:
        """eqs. 73-75 backwards through the chain and the skips: the derivatives at a skip source
        are the sums of those along each path into it (second derivatives: the cross terms between
        paths dropped, as the paper drops cross terms). One record per group: its members'
        (o, dE/do, d2E/do2) side by side, (N, C, positions of every member)."""
        if trace is None:
            trace = self.forward(data.X, masks)
        bm = self.block_masks(masks)
        g1, g2 = loss.derivatives(trace.o[-1], data.T)  # eqs. 13, 14 at the output
        pending = {len(self.blocks) - 1: [g1, g2]}
        per_block = {}

        def send(j, d1, d2):
            if j in pending:
                pending[j][0] = pending[j][0] + d1
                pending[j][1] = pending[j][1] + d2
            else:
                pending[j] = [d1, d2]

        for k in reversed(range(len(self.blocks))):
            b, a = self.blocks[k], self.add_of.get(k)
            g1, g2 = pending.pop(k)
            if bm[k] is not None:
                per_block[k] = (trace.o[k], g1, g2)
                g1, g2 = _mul(g1, bm[k]), _mul(g2, bm[k])
            ins, outs, v = [], [], trace.x[k]
            for i, op in enumerate(b.tail):
                if a is not None and i == a.at:
                    v = v + self._skip(a, trace.o.__getitem__)
                ins.append(v)
                v = op.forward(v)
                outs.append(v)
            if a is not None and a.at == len(b.tail):
                self._send_skip(a, trace, g1, g2, send)
            for i in reversed(range(len(b.tail))):
                g1, g2 = b.tail[i].backward(ins[i], outs[i], g1, g2)
                if a is not None and i == a.at:
                    self._send_skip(a, trace, g1, g2, send)
            if k == 0:
                break
            send(k - 1, *b.param.backward(g1, g2, tuple(trace.o[k - 1].shape)))  # eq. 73
        records = []
        for members in self.groups:
            parts = [per_block[k] for k in members]
            N, C = parts[0][0].shape[:2]
            records.append(Derivatives(*(torch.cat([p[i].reshape(N, C, -1) for p in parts], 2) for i in range(3))))
        return records

    @staticmethod
    def _send_skip(a: Add, trace: Trace, g1: Tensor, g2: Tensor, send) -> None:
        """The derivatives at the sum, passed to the skip source (through the projection: eq. 73)."""
        if a.proj is None:
            send(a.src, g1, g2)
        else:
            send(a.src, *a.proj.backward(g1, g2, tuple(trace.o[a.src].shape)))

    def gate_error(self, loss, data, masks, h: int):
        """E(g, u) of group h's gate g (C,) multiplying every member's output (u: the lowest
        member's output o[lo], already masked); the maps below lo from a forward pass."""
        lo = self.groups[h][0]
        trace = self.forward(data.X, masks)
        bm = self.block_masks(masks)

        def E(g: Tensor, u: Tensor) -> Tensor:
            cache = {lo: _mul(u, g)}

            def o_of(j):
                return cache[j] if j in cache else trace.o[j]

            v = cache[lo]
            for k in range(lo + 1, len(self.blocks)):
                x = self.blocks[k].param.forward(v)
                m = bm[k] if bm[k] is None or self.group_of[k] != h else bm[k].to(g.dtype) * g
                v = cache[k] = self._block_out(k, x, m, o_of)
            return loss.per_instance(v, data.T).sum()
        return E

    def gate_hessian_diagonal(self, loss, data, masks, trace: Trace, h: int, chunk_size: int | None = None,
                              bar=None) -> tuple[Tensor, Tensor]:
        """(dE/dg, d2E/dg^2) of group h's gates, exactly, by forward-over-reverse autograd."""
        o = trace.o[self.groups[h][0]].detach()
        return gate_derivatives(self.gate_error(loss, data, masks, h), o, masks[h], chunk_size, bar)

    # -- refit ----------------------------------------------------------------------------------
    def build_refit(self, r, masks) -> ResNet:
        """repair/refit.py's ``Refitter.build`` for this network: every layer with weights from the
        lowest one that reads a removed channel up is refit (its module's ``refit``: ridge least
        squares over every position) to reproduce the unpruned network's pre-activations, fed by
        the refit (and stored) layers below; a projection likewise reproduces its unpruned output.
        Every layer and projection goes through the storage round trip (``r._store``/``r._stored``)."""
        bm = self.block_masks(masks)
        pruned = [k + 1 for k in range(len(self.blocks) - 1) if not bool(bm[k].all())]
        start = min(pruned) if r.refit and pruned else None
        if start is None and not r.rounds:
            return self
        blocks, adds = list(self.blocks), {a.dst: a for a in self.adds}

        def store_proj(a):
            if not r.rounds:
                return a
            return replace(a, proj=replace(a.proj, **dict(zip(("weight", "bias"),
                                                              r._stored(a.proj.weight, a.proj.bias, [bm[a.src]], 1)))))

        if r.rounds:
            blocks = [r._store(b, bm, k) for k, b in enumerate(blocks)]
            adds = {k: a if a.proj is None else store_proj(a) for k, a in adds.items()}
        if start is not None:
            with torch.no_grad():
                orig = self.forward(r.X, self.full_masks())
                net = self.with_parts(blocks, adds.values())
                os_, h = [], self._internal(r.X)
                for k, b in enumerate(blocks):
                    a = adds.get(k)
                    if k >= start:
                        keep = bm[k - 1].nonzero().squeeze(1)
                        b = b.with_param(b.param.refit(h, r.target[k], keep, r.ridge))
                        b = blocks[k] = r._store(b, bm, k) if r.rounds else b
                        if a is not None and a.proj is not None:
                            want = a.proj.forward(orig.o[a.src])
                            a = replace(a, proj=a.proj.refit(os_[a.src], want, bm[a.src].nonzero().squeeze(1), r.ridge))
                            a = adds[k] = store_proj(a)
                        net = self.with_parts(blocks, adds.values())
                    h = net._block_out(k, b.param.forward(h), bm[k], os_.__getitem__)
                    os_.append(h)
        return self.with_parts(blocks, adds.values())

    # -- shapes and memory ------------------------------------------------------------------
    def map_shapes(self, in_shape: tuple | None = None) -> list[list[tuple]]:
        """As Network's; ValueError where the two sides of an addition differ in shape."""
        shapes = super().map_shapes(in_shape)
        for a in self.adds:
            skip = shapes[a.src][-1] if a.proj is None else a.proj.out_shape(shapes[a.src][-1])
            if tuple(skip) != tuple(shapes[a.dst][a.at]):
                raise ValueError(f"block {a.dst}: the residual addition adds a map of shape {tuple(skip)} to one of "
                                 f"shape {tuple(shapes[a.dst][a.at])}")
        return shapes

    def kept_sizes(self, masks=None) -> list[tuple]:
        """(module, kept outputs, kept inputs) of every block's param and of every projection."""
        kb = [self.blocks[k].param.out_units if masks is None else int(masks[self.group_of[k]].sum())
              for k in range(len(self.blocks) - 1)]
        parts = []
        for k, b in enumerate(self.blocks):
            parts += b.params_parts(kb[k] if k < len(kb) else b.param.out_units, kb[k - 1] if k else b.param.in_units)
            a = self.add_of.get(k)
            if a is not None and a.proj is not None:
                parts.append((a.proj, kb[k], kb[a.src]))
        return parts

    def tape(self, masks=None) -> list[tuple[str, int, tuple[str, ...], int]]:
        """The batch-1 forward pass as the exported C runs it: (op, buffer written, buffers read,
        floats written) in order. A layer with weights and a pooling write a new buffer; an
        activation works in place; a projection writes its own buffer; the addition adds in place
        into the branch's buffer. Buffer 0 is the input."""
        kb = [self.blocks[k].param.out_units if masks is None else int(masks[self.group_of[k]].sum())
              for k in range(len(self.blocks) - 1)] + [self.out_features]
        ops, cur, out_buf = [], 0, {}
        every = self.map_shapes()
        for k, shapes in enumerate(every):
            b, a = self.blocks[k], self.add_of.get(k)

            def size(s, c=kb[k]):
                return math.prod(s) // s[0] * c
            nb = len(ops) + 1
            ops.append((f"layer {k}", nb, (cur,), size(shapes[0])))
            cur = nb
            for i in range(len(b.tail) + 1):
                if a is not None and i == a.at:
                    src = out_buf[a.src]
                    if a.proj is not None:
                        nb = len(ops) + 1
                        ops.append((f"projection into layer {k}", nb, (src,), size(a.proj.out_shape(every[a.src][-1]))))
                        src = nb
                    ops.append((f"addition in layer {k}", cur, (cur, src), 0))
                if i < len(b.tail) and b.tail[i].kind != "act":
                    nb = len(ops) + 1
                    ops.append((b.tail[i].kind, nb, (cur,), size(shapes[i + 1])))
                    cur = nb
            out_buf[k] = cur
        return ops

    def ram_floats(self, masks=None) -> int:
        """The rule: the peak, over the ops of ``tape``, of the floats of every buffer live at that
        op; a buffer is live from the op that writes it through the last op that reads it (a skip
        source stays live through its addition). The caller's input and output not counted. For a
        chain this is Network's rule (two consecutive maps)."""
        ops = self.tape(masks)
        size = {w: n for _, w, _, n in ops if n}
        first = {}
        last = {}
        for t, (_, w, reads, n) in enumerate(ops):
            first.setdefault(w, t)
            last[w] = max(last.get(w, t), t)
            for r in reads:
                last[r] = t
        final = ops[-1][1]
        return max(sum(n for w, n in size.items() if w not in (0, final) and first[w] <= t <= last[w])
                   for t in range(len(ops)))

    def maps(self, masks=None) -> list[int]:
        return [n for _, w, _, n in self.tape(masks)[:-1] if n]

    # -- surgery and conversion --------------------------------------------------------------
    def shrink(self, masks) -> ResNet:
        """Every block keeps its group's kept channels (rows) and those of the block below (columns);
        a projection keeps its sum's group's rows and its source's columns. Exact (module docstring)."""
        idx = [masks[self.group_of[k]].nonzero().squeeze(1) for k in range(len(self.blocks) - 1)] + [None]
        blocks = [b.with_param(b.param.keep(idx[k], idx[k - 1] if k else None)) for k, b in enumerate(self.blocks)]
        adds = [a if a.proj is None else replace(a, proj=a.proj.keep(idx[a.dst], idx[a.src])) for a in self.adds]
        return self.with_parts(blocks, adds)

    def copy(self) -> ResNet:
        return self.with_parts([b.with_param(b.param.keep(None, None)) for b in self.blocks],
                               [a if a.proj is None else replace(a, proj=a.proj.keep(None, None)) for a in self.adds])

    def to_sequential(self) -> nn.Sequential:
        """An ``nn.Sequential`` with a ``shrinknet.Residual`` per addition (its branch: blocks
        src + 1 .. dst up to the tail op ``at``; the rest of dst's tail after it)."""
        from ..residual import Residual

        starts = {a.src + 1: a for a in self.adds}
        mods, k = [], 0
        while k < len(self.blocks):
            a = starts.get(k)
            if a is None:
                if self._flatten_before(k):
                    mods.append(nn.Flatten())
                mods.extend(self.blocks[k].module(self.dims))
                k += 1
                continue
            body = [m for kk in range(k, a.dst) for m in self.blocks[kk].module(self.dims)]
            d = self.blocks[a.dst]
            body.append(d.param.module(self.dims))
            body += [m for m in (op.module(self.dims) for op in d.tail[: a.at]) if m is not None]
            mods.append(Residual(nn.Sequential(*body), None if a.proj is None else a.proj.module(self.dims)))
            mods += [m for m in (op.module(self.dims) for op in d.tail[a.at:]) if m is not None]
            k = a.dst + 1
        seq = nn.Sequential(*mods)
        if self.in_shape is not None:
            seq.shrinknet_input_shape = tuple(self.in_shape)
        return seq

    def layout(self) -> dict:
        return {**super().layout(), "adds": [a.to_dict() for a in self.adds]}

    def describe(self) -> list[str]:
        return [b.describe() + ("" if k not in self.add_of else f", {self.add_of[k].describe()}")
                for k, b in enumerate(self.blocks)]
