"""The network interface: what shrinknet needs of a parsed network, once, for MLPs and CNNs.

A parsed network is a stack of *layers*, each one layer with weights followed by its tail
(``layers.net.Block``: a ``layers/linear.py`` Dense or ``layers/conv.py`` Conv, then the
activation and pooling of ``layers/act.py`` and ``layers/pool.py``). Every per-layer concern
(forward, its part of the derivative sweeps, brute force's per-candidate change, surgery,
parameter count, module rebuild, description) lives in that layer's module; :class:`Network`
strings them together, and is the one interface the rest of shrinknet calls. Two networks
implement it:

- ``mlp.Net``, the MLP (Linear layers and elementwise activations, parsed by ``parse.as_net``): its
  layers are Dense with P = 1 (eq. 5) and its brute force is ``score/exact.py``'s fused kernels, the
  specialisation for a stack of Linear layers (exact reuse between steps);
- ``layers.net.SeqNet``, the general (CNN) network: convolutions, pooling, BatchNorm folded.

Both run brute force on worker threads over candidate chunks (``threads.run_chunks``).

What only one of them can do is a capability the network states (``scoring_threads``,
``incremental_brute_force``, ``approximate_speeds``), never a test of its type.

Index letters used across shrinknet (as in the paper's eq. 5):
    n: instance (N of them), j: neuron of the layer below (its input), i: neuron of the layer above.
    ``weight[i, j]`` is the paper's w_ji: the weight from neuron j to neuron i.

Layer numbering: the paper numbers layers from the output (layer 0) backwards; shrinknet numbers
them in forward order, ``layers[0]`` reading the input and ``layers[-1]`` the output layer. A
*hidden layer* h is ``layers[h]`` for h < len(layers) - 1, and its neurons (units: output
features, or a convolution's output channels) are its outputs. Switching unit j off sets its
output o_j to 0 (§2.1), so a mask (True = kept) multiplies the hidden outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import activations as A
from .losses import Loss

Masks = Sequence[Tensor]  # one bool tensor per hidden layer, True = kept

#: Default bound on the scratch memory of one vectorized chunk of candidates, in bytes.
CHUNK_MEMORY = 256 * 2**20


def chunk_for(n: int, width: int, itemsize: int) -> int:
    """Candidates per chunk so that a few (C, N, width) temporaries fit in CHUNK_MEMORY."""
    return max(1, CHUNK_MEMORY // (4 * n * width * itemsize))


class Layer(Protocol):
    """What code that only reads weights and the activation uses of one layer (``layers.net.Block``
    implements it; ``Block.linear(W, b, act)`` makes a fully connected one)."""

    param: object  # layers/linear.py Dense or layers/conv.py Conv
    tail: tuple  # activation and pooling, in order
    weight: Tensor  # (out, in) or (out, in, kh, kw); weight[i, j] = w_ji
    bias: Tensor | None  # (out,)
    act: A.Activation  # the tail's activation (identity if none)
    in_features: int
    out_features: int


@dataclass
class Trace:
    """One forward pass: pre-activations ``x[k]`` (N, out_k) or (N, C, H, W) and outputs ``o[k]``
    of every layer.

    Hidden outputs are already masked; ``o[-1]`` is the network output y.
    """

    x: list[Tensor] = field(default_factory=list)
    o: list[Tensor] = field(default_factory=list)


class Derivatives(NamedTuple):
    """Per-instance quantities of one hidden layer, each shaped like its output o: (N, h) or (N, C, H, W)."""

    o: Tensor  # unit outputs (0 for switched-off units)
    dE_do: Tensor  # first derivative of E_n w.r.t. o
    d2E_do2: Tensor  # diagonal second derivative of E_n w.r.t. o (eq. 73)


def unit_sums(t: Tensor) -> Tensor:
    """A per-unit quantity (N, C) or (N, C, ...) summed over instances and every position of the
    unit's map: (C,)."""
    return t.sum(0) if t.ndim == 2 else t.transpose(0, 1).reshape(t.shape[1], -1).sum(1)


class Network:
    """The interface of a parsed network (see the module docstring); build one with :func:`as_net`.

    Shape facts: ``blocks`` (= ``layers``), ``hidden_sizes``, ``n_hidden``, ``in_features``,
    ``in_shape`` (one instance), ``out_features``, ``dtype``, ``device``; ``bind`` / ``prepare_input``
    check inputs against them. Masks: ``full_masks``, ``check_masks``. Evaluation: ``forward``,
    ``output_from``, ``sweep`` (eqs. 73-75). Criteria that need the layer structure: ``brute_force``,
    ``switch_off_delta``, ``magnitude``, ``taylor2_exact``. Memory: ``params``, ``maps``,
    ``ram_floats``. Surgery and conversion: ``shrink``, ``copy``, ``to_sequential``, ``layout``,
    ``describe``. Subclasses give ``brute_force``, ``taylor2_exact``, ``prepare_input`` and ``with_blocks``.
    """

    #: Brute force runs worker threads over candidate chunks (threads.py sizes them).
    scoring_threads = False
    #: Brute force reuses work between pruning steps exactly (``exact.Incremental``).
    incremental_brute_force = False
    #: Brute force is score/exact.py's fused kernels for a stack of Dense layers (rank-1 updates of
    #: the next layer's pre-activations), not the layer modules' general ``brute_force``.
    fused_brute_force = False
    #: The refit solves Dense layers directly and reuses the calibration outputs of the layers below
    #: a change between steps (repair/refit.py ``Refitter.build``); else each layer module's ``refit``.
    incremental_refit = False
    #: The approximate speeds of speed.py (second-order screen, blocks of removals) apply.
    approximate_speeds = False
    #: The model-file format that describes this network (modelio.py, layers/io.py).
    file_format = ""
    #: Whether this is the general (CNN) network. Code asks for a capability instead; only
    #: ``shrinknet info`` reads it, to choose between its two layouts (an MLP's widths, or layer by layer).
    general = False
    dims = 0  # 1 or 2 for a CNN (maps held as (N, C, H, W), 1-D as (N, C, 1, L)); 0 without convolutions

    def __init__(self, blocks, in_shape: tuple | None = None, notes: tuple = ()):
        self.blocks = tuple(blocks)
        self.layers = self.blocks
        self.in_shape = None if in_shape is None else tuple(in_shape)  # one instance, as the user gives it
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

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.blocks[0].weight.device

    def _internal(self, X: Tensor) -> Tensor:
        """(N, *in_shape) -> the layout the first layer reads (a view)."""
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

    def prepare_input(self, X: Tensor) -> Tensor:
        """X checked against the instance shape (bound at first use); flat rows of a known image
        shape are reshaped. ValueError naming what does not fit."""
        if X.ndim < 2:
            raise ValueError(f"X must have one row per instance, got shape {tuple(X.shape)}")
        if self.in_shape is not None and X.ndim == 2 and len(self.in_shape) > 1 and X.shape[1] == self.in_features:
            X = X.reshape(X.shape[0], *self.in_shape)  # flat rows of a known image shape
        self.bind(tuple(X.shape[1:]))
        return X

    def map_shapes(self, in_shape: tuple | None = None) -> list[list[tuple]]:
        """Per layer, the per-instance shapes (C, H, W) or (F,) of x, then after each tail op."""
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

    # -- masks ------------------------------------------------------------------------------
    def full_masks(self) -> list[Tensor]:
        return [torch.ones(h, dtype=torch.bool, device=self.device) for h in self.hidden_sizes]

    def check_masks(self, masks: Masks | None) -> list[Tensor]:
        """Validated masks on this network's device (all-True when ``masks`` is None)."""
        if masks is None:
            return self.full_masks()
        masks = list(masks)
        if len(masks) != self.n_hidden:
            raise ValueError(
                f"mask has {len(masks)} entries but the network has {self.n_hidden} hidden layers"
            )
        out = []
        for h, (m, size) in enumerate(zip(masks, self.hidden_sizes)):
            m = torch.as_tensor(m)
            if m.dtype != torch.bool or m.shape != (size,):
                raise ValueError(
                    f"mask for hidden layer {h} must be a bool tensor of shape ({size},), "
                    f"got {m.dtype} {tuple(m.shape)}"
                )
            if not bool(m.any()):
                raise ValueError(f"mask for hidden layer {h} removes every neuron; keep at least one")
            out.append(m.to(self.device))
        return out

    @staticmethod
    def _expand(m: Tensor, like: Tensor) -> Tensor:
        """A unit mask (C,) shaped to multiply ``like`` (..., C, positions...) per unit."""
        return m.view(m.shape[0], *([1] * (like.ndim - 2))).to(like.dtype)

    # -- evaluation -------------------------------------------------------------------------
    def forward(self, X: Tensor, masks: Masks, trace: Trace | None = None, changed: int = 0) -> Trace:
        """Forward pass with hidden outputs masked.

        Given the ``trace`` of an earlier pass and ``changed``, the lowest hidden layer whose mask
        changed since, only what depends on that mask is recomputed: the pre-activations up to
        and including layer ``changed`` are reused (masks act after the layer's tail).
        """
        if trace is None:
            xs, os_, start = [], [], 0
        else:
            xs, os_, start = list(trace.x[: changed + 1]), list(trace.o[:changed]), changed
        h = self._internal(X) if start == 0 else os_[start - 1]
        for k in range(start, len(self.blocks)):
            b = self.blocks[k]
            x = xs[k] if k < len(xs) else b.param.forward(h)  # eq. 5 (a convolution for a Conv)
            o = b.run_tail(x, mask=masks[k] if k < self.n_hidden else None)  # masked at the block's mask point
            if k == len(xs):
                xs.append(x)
            os_.append(o)
            h = o
        return Trace(xs, os_)

    def output_from(self, k: int, x: Tensor, masks: Masks, scratch: bool = True) -> Tensor:
        """Network output (..., N, out) given the pre-activation ``x`` (..., N, *x_k shape) of layer k.

        Leading dims are folded into the batch (one matmul or convolution, not a batched one that
        copies the weight per entry). With ``scratch`` (no autograd through this call), ``x`` and
        the intermediates are overwritten in place. Masks that keep everything are skipped.
        """
        nd = 4 if self.blocks[k].param.kind == "conv" else 2
        lead = x.shape[: x.ndim - nd]
        h = x.reshape(-1, *x.shape[x.ndim - nd + 1:])
        for kk in range(k, len(self.blocks)):
            b = self.blocks[kk]
            if kk > k:
                h = b.param.forward(h)
            m = masks[kk] if kk < self.n_hidden and not bool(masks[kk].all()) else None
            h = b.run_tail(h, inplace=scratch, mask=m)
        return h.reshape(*lead, -1, h.shape[-1])

    def sweep(self, loss: Loss, data, masks: Masks, trace: Trace | None = None) -> list[Derivatives]:
        """eqs. 73-75 through every layer (see backprop2.py): one (o, dE/do, d2E/do2) record per
        hidden layer, in forward order. Inside a layer the tail is run backward op by op (eqs.
        74-75 for the activation, act.py; the pooling rule of pool.py); between layers eq. 73 goes
        through the next layer's weights (linear.py; conv.py: a transposed convolution, with the
        squared kernel for the second derivative). A switched-off unit passes nothing back.

        Each record is taken at the block's mask point (``Block.split``): the tail's output, or for
        a block with a depthwise op the producer's output before it (depthwise.py), where a
        switch-off sets o_j to 0."""
        if trace is None:
            trace = self.forward(data.X, masks)
        g1, g2 = loss.derivatives(trace.o[-1], data.T)  # eqs. 13, 14 at the output
        records = []
        for k in reversed(range(len(self.blocks))):
            b = self.blocks[k]
            hidden = k < self.n_hidden
            ins, outs, v = [], [], trace.x[k]  # the input and output of every tail op (masked at the mask point)
            for i, op in enumerate(b.tail):
                if i == b.split and hidden:
                    v = v * self._expand(masks[k], v)
                ins.append(v)
                v = op.forward(v) if i < len(b.tail) - 1 else trace.o[k]  # the last: the (masked) layer output
                outs.append(v)
            for i in reversed(range(len(b.tail) + 1)):
                if i == b.split and hidden:
                    u = ins[i] if i < len(b.tail) else trace.o[k]
                    records.append(Derivatives(u, g1, g2))
                    m = self._expand(masks[k], g1)
                    g1, g2 = g1 * m, g2 * m
                if i > 0:
                    g1, g2 = b.tail[i - 1].backward(ins[i - 1], outs[i - 1], g1, g2)
            if k == 0:
                break
            g1, g2 = b.param.backward(g1, g2, tuple(trace.o[k - 1].shape))  # eq. 73
        return records[::-1]

    def removable(self, h: int, trace: Trace) -> Tensor:
        """What switching a unit of hidden layer h off takes out of ``o[h]``: o itself, or o - z for
        a block with a depthwise op, whose switched-off channel outputs the constant map z
        (``Block.off_value``). The next layer loses exactly the contribution of this."""
        z = self.blocks[h].off_value(trace.x[h])
        return trace.o[h] if z is None else trace.o[h] - z

    # -- criteria that need the layer structure ----------------------------------------------
    def brute_force(self, loss: Loss, data, masks: Masks, trace: Trace, chunk_size: int | None = None,
                    bar=None, workers: int = 1) -> list[Tensor]:
        """Exact Delta E (§2.1) of switching off each kept unit, summed over the batch, one tensor
        per hidden layer (removed units: 0). ``workers`` threads where ``scoring_threads``."""
        raise NotImplementedError

    def switch_off_delta(self, loss: Loss, data, masks: Masks, trace: Trace, h: int, units: list[int]) -> Tensor:
        """Exact Delta E (summed over the batch) of switching off ``units`` of hidden layer h together:
        the next layer's pre-activation loses their joint contribution, nothing below changes."""
        J = torch.as_tensor(units, device=self.device)
        xs = trace.x[h + 1] - self.blocks[h + 1].param.joint_contribution(self.removable(h, trace), J)
        return loss.delta(self.output_from(h + 1, xs, masks), trace.o[-1], data.T).sum()

    def magnitude(self, trace: Trace) -> list[Tensor]:
        """||outgoing weights of unit j|| * sum over instances (and positions) of |o_j|."""
        return [self.blocks[h + 1].param.input_norms() * unit_sums(self.removable(h, trace).abs())
                for h in range(self.n_hidden)]

    def taylor2_exact(self, loss: Loss, data, masks: Masks, trace: Trace, chunk_size: int | None = None,
                      bar=None) -> list[Tensor]:
        """eq. 8 with the exact second derivative by autograd (the slow reference of taylor2)."""
        raise NotImplementedError

    # -- memory ------------------------------------------------------------------------------
    def params(self, masks: Masks | None = None) -> int:
        """Weights and biases counting only kept units (True = kept): each layer's own count
        (linear.py / conv.py ``params``) at its kept outputs and inputs."""
        return self._per_layer("params", masks)

    def kept_sizes(self, masks: Masks | None = None) -> list[tuple]:
        """(layer module, kept outputs, kept inputs) of every block's param and weighted tail op (a
        depthwise conv keeps its block's units), in order: what each layer's counts (``params``,
        ``row_size``) are taken at."""
        kept = list(self.hidden_sizes) if masks is None else [int(m.sum()) for m in masks]
        return [part for k, b in enumerate(self.blocks)
                for part in b.params_parts(kept[k] if k < self.n_hidden else b.param.out_units,
                                           kept[k - 1] if k > 0 else b.param.in_units)]

    def _per_layer(self, count: str, masks: Masks | None) -> int:
        """The sum over blocks of ``param.<count>(kept outputs, kept inputs)``."""
        return sum(getattr(p, count)(n_out, n_in) for p, n_out, n_in in self.kept_sizes(masks))

    def maps(self, masks: Masks | None = None) -> list[int]:
        """Floats of every intermediate map of a batch-1 forward pass, in order (the input and the
        output, which belong to the caller, excluded; for an MLP the hidden layers); activations
        work in place."""
        kept = list(self.hidden_sizes) if masks is None else [int(m.sum()) for m in masks]
        sizes = []
        for k, shapes in enumerate(self.map_shapes()):
            c = kept[k] if k < self.n_hidden else None
            for s in shapes[:1] + [s for op, s in zip(self.blocks[k].tail, shapes[1:]) if op.kind != "act"]:
                sizes.append(math.prod(s) // s[0] * (c if c is not None else s[0]))
        return sizes[:-1]

    def ram_floats(self, masks: Masks | None = None) -> int:
        """Scratch floats of a batch-1 forward: consecutive maps side by side (ping-pong)."""
        m = self.maps(masks)
        return max([m[0]] + [a + b for a, b in zip(m, m[1:])])

    # -- surgery and conversion --------------------------------------------------------------
    def with_blocks(self, blocks) -> "Network":
        """A network of this kind and settings (input shape, notes) holding ``blocks`` (``Block``s)."""
        raise NotImplementedError

    def shrink(self, masks: Masks) -> "Network":
        """The physically smaller network keeping the units where ``masks`` is True: each layer
        keeps its own kept units (rows) and the kept units of the layer below (columns or input
        channels), by its module's ``keep``; a depthwise op keeps its block's units, and the next
        layer's response to a removed depthwise channel's constant output goes into its bias
        (``_folded``), so the result computes exactly what the masked network does."""
        idx = [m.nonzero().squeeze(1) for m in masks]
        blocks = []
        for k, b in enumerate(self.blocks):
            rows = idx[k] if k < self.n_hidden else None
            param = b.param.keep(rows, idx[k - 1] if k > 0 else None)
            fold = self._folded(k - 1, masks[k - 1]) if k > 0 else None
            if fold is not None:
                fold = fold if rows is None else fold[rows]  # the next layer's kept outputs
                param = replace(param, bias=fold if param.bias is None else param.bias + fold)
            blocks.append(b.with_param(param).map_weighted(lambda op, rows=rows: op.keep(rows)))
        return self.with_blocks(blocks)

    def _folded(self, h: int, mask: Tensor) -> Tensor | None:
        """The next layer's response (out,) to the constant outputs z of hidden layer h's removed
        units (depthwise blocks only; None when there is nothing to fold). ValueError where the
        response differs between positions (the parser refuses such networks)."""
        b = self.blocks[h]
        if b.split == len(b.tail) or bool(mask.all()):
            return None
        x1 = torch.zeros(1, *self.map_shapes()[h][0], dtype=self.dtype, device=self.device)
        z = b.off_value(x1)
        J = (~mask).nonzero().squeeze(1)
        r = self.blocks[h + 1].param.joint_contribution(z, J)[0]  # (out,) or (out, H', W')
        r = r.reshape(r.shape[0], -1)
        if not torch.allclose(r, r[:, :1].expand_as(r), rtol=1e-6, atol=1e-6 * float(r.abs().max())):
            raise ValueError(f"layer {h + 1} responds to the constant output of a removed depthwise channel "
                             "differently at different positions: it cannot be folded into its bias")
        return r[:, 0]

    def copy(self) -> "Network":
        """A copy with its own weight tensors."""
        return self.with_blocks([b.with_param(b.param.keep(None, None)).map_weighted(lambda op: op.keep(None))
                                 for b in self.blocks])

    def _flatten_before(self, k: int) -> bool:
        """Whether layer k reads a map that ``nn.Flatten`` makes into rows."""
        return False

    def to_sequential(self) -> nn.Sequential:
        """A fresh ``nn.Sequential`` (BatchNorm folded, Dropout dropped) with copies of the weights."""
        mods: list[nn.Module] = []
        for k, b in enumerate(self.blocks):
            if self._flatten_before(k):
                mods.append(nn.Flatten())
            mods.extend(b.module(self.dims))
        return nn.Sequential(*mods)

    def layout(self) -> dict:
        """What identifies the architecture (widths, activations), JSON-ready."""
        return {
            "in": self.in_features,
            "hidden": list(self.hidden_sizes),
            "out": self.out_features,
            "bias": [b.bias is not None for b in self.blocks],
            "activations": [b.act.to_dict() for b in self.blocks],
        }

    def describe(self) -> list[str]:
        """One line per layer: its module's description, then its tail's."""
        return [b.describe() for b in self.blocks]


def linear(h: Tensor, layer: Layer) -> Tensor:
    """x_i = sum_j w_ji o_j (+ b_i)  (eq. 5); h: (..., N, in) -> (..., N, out).

    Leading dims are folded into one matmul: ``(C, N, in) @ (in, out)`` would otherwise go to a
    batched matmul that copies the weight once per batch entry (7x slower here).
    """
    x = torch.nn.functional.linear(h.reshape(-1, h.shape[-1]), layer.weight, layer.bias)  # fused bias
    return x.reshape(*h.shape[:-1], layer.out_features)


def check_positive_int(name: str, value, optional: bool = False) -> None:
    """Raise ValueError unless ``value`` is a positive int (or None when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")


# -- data -------------------------------------------------------------------------------------
@dataclass
class Data:
    """Checked data on the network's device and dtype.

    X: (N, in); T: (N, out) float targets (one-hot for class labels);
    labels: (N,) int64 class labels, or None for regression.
    """

    X: Tensor
    T: Tensor
    labels: Tensor | None

    def __len__(self) -> int:
        return self.X.shape[0]

    def rows(self, sl: slice) -> "Data":
        return Data(self.X[sl], self.T[sl], None if self.labels is None else self.labels[sl])


def prepare(net: Network, X, T, loss: Loss) -> Data:
    """Validate X and T against ``net`` and bring them to its dtype and device.

    T may be (N, out) floats; (N,) floats when out == 1; or (N,) integer class labels,
    which become one-hot rows (for either loss) when out > 1.
    """
    X = _as_tensor("X", X)
    T = _as_tensor("T", T)
    X = net.prepare_input(X)  # an instance shape, checked (and bound) by the network
    if X.shape[0] == 0:
        raise ValueError("X has no instances")
    if not X.dtype.is_floating_point:
        X = X.to(net.dtype)
    if not bool(torch.isfinite(X).all()):
        raise ValueError("X contains NaN or infinite values; clean or impute the data first")
    if T.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} instances but T has {T.shape[0]}")
    labels = None
    out = net.out_features
    if loss.name == "cross_entropy" and out < 2:
        raise ValueError(
            "cross_entropy needs at least 2 outputs (one logit per class); this network has 1: use loss='mse'"
        )
    if T.ndim == 1 and T.dtype.is_floating_point and out > 1:
        raise ValueError(
            f"T is 1-D with float values but the network has {out} outputs: give integer class labels "
            f"or ({X.shape[0]}, {out}) targets"
        )
    if T.ndim == 1 and not T.dtype.is_floating_point and out > 1:
        if T.dtype == torch.bool or int(T.min()) < 0 or int(T.max()) >= out:
            raise ValueError(
                f"class labels in T must be integers in [0, {out - 1}] for a network with {out} outputs"
            )
        labels = T.long()
        T = torch.nn.functional.one_hot(labels, out)
    elif T.ndim == 1 and out == 1:
        T = T.reshape(-1, 1)
    if T.ndim != 2 or T.shape[1] != out:
        raise ValueError(
            f"T must have shape ({X.shape[0]}, {out}) (or ({X.shape[0]},) class labels), "
            f"got {tuple(T.shape)}"
        )
    T = T.to(net.dtype)
    if not bool(torch.isfinite(T).all()):
        raise ValueError("T contains NaN or infinite values; clean the targets first")
    if loss.name == "cross_entropy" and bool((T < 0).any()):
        raise ValueError("cross_entropy targets must be class labels or non-negative probability rows")
    if labels is None and out > 1 and _is_one_hot(T):
        labels = T.argmax(1)
    device = net.device
    return Data(X.to(device, net.dtype), T.to(device), None if labels is None else labels.to(device))


def _is_one_hot(T: Tensor) -> bool:
    return bool(((T == 0) | (T == 1)).all()) and bool((T.sum(1) == 1).all())


def _as_tensor(what: str, a) -> Tensor:
    """``a`` as a tensor, refusing (ValueError) what cannot be numbers: strings, objects, labels
    beyond int64, unsigned tensors that torch cannot compare."""
    if isinstance(a, Tensor):
        if a.dtype in (torch.uint16, torch.uint32, torch.uint64):
            raise ValueError(f"{what} is a {a.dtype} tensor: give class labels as int64")
        return a
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{what} cannot be read as an array of numbers: {e}") from None
    if arr.dtype.kind in "USO":
        raise ValueError(f"{what} holds {'strings' if arr.dtype.kind in 'US' else 'Python objects'}, not numbers"
                         + (": number the classes 0..C-1 first, e.g. np.unique(y, return_inverse=True)"
                            if what == "T" else ""))
    if arr.dtype.kind == "u" and arr.dtype.itemsize >= 2:
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{what} has values beyond int64 ({int(arr.max())}): class labels must be 0..C-1")
        arr = arr.astype(np.int64)
    return torch.as_tensor(arr)
