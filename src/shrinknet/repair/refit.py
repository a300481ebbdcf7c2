"""Least-squares refit: compensate for removed neurons without retraining.

After hidden neurons are switched off, every Linear layer above the lowest pruned hidden layer
gets new weights over its kept inputs and a new bias, chosen by ridge least squares so that its
pre-activations reproduce those of the *unpruned* network on calibration data:

    min_{W, b}  sum_n || W o_n + b - x_n ||^2 + lambda ||W||^2        (bias not penalized)

where o_n are the layer's kept inputs in the pruned (already refit) network and x_n the original
network's pre-activations of that layer. Layers are solved from the input up, each one fed by the
refit layers below it. The solve is the normal equations in float64:

    (A^T A + lambda D) theta = A^T X,   A = [O, 1],  D = diag(1, ..., 1, 0),  theta = [W^T; b^T]

with lambda = ridge * mean_j (sum_n o_nj^2) (relative to the inputs' scale, so ``ridge`` has no
units). ``ridge=0`` is plain least squares.

Networks here keep their original shapes: removed inputs get weight 0 (their outputs are masked
to 0 anyway), so a refit network works with the same masks, scoring and surgery as any other.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..model.mlp import Net
from ..model.network import Layer, linear
from ..model.lstsq import ridge_solve
from ..store.quantize import rounds, storage_name, stored

REFITS = (None, "final", "every_step")
DEFAULT_RIDGE = 1e-3


def check_refit(refit) -> str | None:
    if refit not in REFITS:
        raise ValueError(f"unknown refit {refit!r}: choose None, 'final' or 'every_step'")
    return refit


class Refitter:
    """Builds the network as it will run for given masks: refit (optional) at a storage dtype.

    net: the unpruned network; X: calibration inputs (N, in); ridge: see module docstring;
    refit: whether to refit; storage: the dtype weights and biases are stored at
    ("float32", "float64": as they are; "float16": every weight and bias rounded to float16;
    "int8": weights quantized per row, biases float32; see ``quantize.stored``). Every layer
    goes through that round trip, and each refit layer is fed by the stored layers below it and
    stored itself. ``int8=True`` is the older spelling of ``storage="int8"``.
    """

    def __init__(self, net: Net, X: Tensor | None, ridge: float = DEFAULT_RIDGE, refit: bool = True,
                 int8: bool = False, storage: str | None = None):
        self.net, self.ridge, self.refit = net, float(ridge), refit
        self.storage = storage_name(storage, int8)
        self.X = X
        if refit:
            if X is None:
                raise ValueError("refit needs calibration inputs")
            with torch.no_grad():
                self.target = net.forward(X, net.full_masks()).x  # original pre-activations, per layer

    @property
    def int8(self) -> bool:
        return self.storage == "int8"

    @property
    def rounds(self) -> bool:
        """Whether the storage round trip changes the network (float16, int8)."""
        return rounds(self.storage)

    def first_refit_layer(self, masks) -> int | None:
        """The lowest layer that is refit: one above the lowest hidden layer with a removal."""
        if not self.refit:
            return None
        pruned = [h for h, m in enumerate(masks) if not bool(m.all())]
        return None if not pruned else pruned[0] + 1

    def build(self, masks, start: int | None = None, base: "Net | None" = None) -> Net:
        """The network as it will run with ``masks``: layers below the first refit layer keep their
        weights (through the storage round trip); from ``start`` (default: ``first_refit_layer``) up
        each layer is refit on the calibration data, fed by the (refit, stored) layers below it.

        ``base``: a network this Refitter built for masks that differ from ``masks`` only in hidden
        layers >= start - 1; its layers below ``start`` and its calibration outputs are reused.
        The result's calibration hidden outputs are kept in ``result.calib_o`` (refit only).
        """
        masks = self.net.check_masks(masks)
        if not self.net.incremental_refit:  # e.g. CNNs: layers/*.py refit over all positions
            return self._build_general(masks)
        if start is None:
            start = self.first_refit_layer(masks)
        layers = list(self.net.layers)
        if (start is None or base is None) and self.rounds:
            layers = [self._store(l, masks, k) for k, l in enumerate(layers)]
        if start is None and not self.refit:
            return Net(layers)
        if start is None:  # nothing pruned: no solve, but the calibration outputs for later reuse
            start = len(layers)
        with torch.no_grad():
            if base is not None:  # reuse everything below ``start``
                layers[:start] = base.layers[:start]
                o, first = base.calib_o[start - 1] * masks[start - 1], start
                outs = [*base.calib_o[: start - 1], o]
            else:
                o, first, outs = self.X, 0, []
            for k in range(first, len(layers)):
                layer = layers[k]
                if k >= start:
                    layer = self._solve(k, o, masks)
                    layers[k] = layer
                if k < len(masks):
                    o = layer.act(linear(o, layer)) * masks[k]
                    outs.append(o)
        net = Net(layers)
        net.calib_o = outs  # (N, hidden_k) masked outputs of every hidden layer on the calibration data
        return net

    def _build_general(self, masks):
        """A convolutional network refit from the first refit layer up, each layer by its own
        module's ``refit`` (ridge least squares over every position), fed by the refit (and stored)
        layers below; every layer goes through the storage round trip (``_store``)."""
        from ..model.layers import SeqNet

        net = self.net
        if hasattr(net, "build_refit"):  # a network with its own wiring (layers/resnet.py: residual additions)
            return net.build_refit(self, masks)
        start = self.first_refit_layer(masks)
        if start is None and not self.rounds:
            return net
        blocks = list(net.blocks)
        if self.rounds:
            blocks = [self._store(b, masks, k) for k, b in enumerate(blocks)]
        if start is None:
            return SeqNet(blocks, net.dims, net.in_shape)
        with torch.no_grad():
            o = net._internal(self.X)
            for k, b in enumerate(blocks):
                if k >= start:
                    keep = masks[k - 1].nonzero().squeeze(1)
                    b = b.with_param(b.param.refit(o, self.target[k], keep, self.ridge))
                    b = blocks[k] = self._store(b, masks, k) if self.rounds else b
                if k < len(masks):
                    o = b.run_tail(b.param.forward(o), mask=masks[k])  # masked at the block's mask point
        return SeqNet(blocks, net.dims, net.in_shape)

    def _store(self, block, masks, k: int):
        """Block k (an MLP's or a CNN's) with its weights and bias as stored and read back (``_stored``);
        a depthwise op in its tail too (one row per channel; it is not refit: only the layers with
        weights between blocks are)."""
        block = block.with_weights(*self._stored(block.weight, block.bias, masks, k))
        return block.map_weighted(lambda op: op.with_weights(
            stored(op.weight, self.storage), None if op.bias is None else stored(op.bias, self.storage, weight=False)))

    def _stored(self, W: Tensor, b: Tensor | None, masks, k: int) -> tuple[Tensor, Tensor | None]:
        """(W, b) of layer k through the storage round trip (``quantize.stored``). The weights of
        removed input units are zeroed first (they are cut out of the stored network), so that at
        int8 they do not set a row's scale. W: (out, in), (o, c, kh, kw), or a Linear after Flatten
        (i, c * P) with channel c's P columns together: each is (out, units below, rest)."""
        if k > 0 and not bool(masks[k - 1].all()):
            m = masks[k - 1]
            fold = self._folded(W, m, k)
            if fold is not None:  # the removed depthwise channels' constant outputs: into the bias, as surgery does
                b = fold if b is None else b + fold.to(b.dtype)
            W = (W.reshape(W.shape[0], len(m), -1) * m.to(W.dtype).view(1, -1, 1)).view(W.shape)
        return stored(W, self.storage), None if b is None else stored(b, self.storage, weight=False)

    def _folded(self, W: Tensor, mask: Tensor, k: int) -> Tensor | None:
        """Layer k's response, with weights ``W``, to the constant outputs of block k-1's removed
        units when that block has a depthwise op (``Network._folded``; None otherwise). Zeroing the
        removed units' columns alone would drop it: a removed depthwise channel outputs the constant
        act(bias), not 0, and the masked network (what brute force scores in float) keeps it."""
        blocks = getattr(self.net, "blocks", None)
        if blocks is None or blocks[k - 1].split == len(blocks[k - 1].tail):
            return None
        probe = self.net.with_blocks([*blocks[:k], blocks[k].with_param(replace(blocks[k].param, weight=W, bias=None)),
                                      *blocks[k + 1:]])
        return probe._folded(k - 1, mask)

    def _solve(self, k: int, o: Tensor, masks) -> Layer:
        orig = self.net.layers[k]
        keep = masks[k - 1].nonzero().squeeze(1)
        W_kept, b = ridge_solve(o[:, keep], self.target[k], self.ridge, bias=orig.bias is not None)
        W = torch.zeros_like(orig.weight)
        W[:, keep] = W_kept.to(W.dtype)
        layer = orig.with_weights(W, None if b is None else b.to(orig.weight.dtype))
        return self._store(layer, masks, k) if self.rounds else layer


def reconstruction_error(net: Net, reference: Net, X: Tensor, masks, k: int) -> float:
    """sum_n ||x_k(net, masks) - x_k(reference, unpruned)||^2: how well layer k's pre-activations
    are reproduced."""
    with torch.no_grad():
        a = net.forward(X, masks).x[k]
        b = reference.forward(X, reference.full_masks()).x[k]
    return float(((a.double() - b.double()) ** 2).sum())


