"""The MLP: a stack of Linear layers (Dense, P = 1) and elementwise activations, the network of the
paper. It states the capabilities that let score/exact.py's fused kernels and the approximate speeds
(choose/speed.py) serve it; everything else is the one :class:`~shrinknet.model.network.Network`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .losses import Loss
from .network import Layer, Masks, Network, Trace, chunk_for, linear


class Net(Network):
    """The MLP: Linear layers (Dense, P = 1) and elementwise activations. Build one with :func:`as_net`.

    Its brute force is exact.py's fused kernels (a chunk of candidates through the layers above
    in cache-sized blocks, worker threads, exact reuse between steps); its taylor2_exact takes the
    Hessian diagonal per instance and neuron.
    """

    scoring_threads = True
    incremental_brute_force = True
    fused_brute_force = True
    incremental_refit = True
    approximate_speeds = True
    file_format = "shrinknet-mlp"

    def __init__(self, layers: Sequence[Layer]):
        layers = tuple(layers)
        super().__init__(layers, (layers[0].in_features,))

    def with_blocks(self, blocks) -> "Net":
        return Net(blocks)

    def prepare_input(self, X: Tensor) -> Tensor:
        """An MLP reads rows of features: X (N, in)."""
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (instances x features), got shape {tuple(X.shape)}")
        if X.shape[1] != self.in_features:
            raise ValueError(
                f"X has {X.shape[1]} features per instance but the network's first Linear expects "
                f"{self.in_features}"
            )
        return X

    def taylor2_exact(self, loss: Loss, data, masks: Masks, trace: Trace, chunk_size: int | None = None,
                      bar=None) -> list[Tensor]:
        records = self.sweep(loss, data, masks, trace)
        return [(-r.o * r.dE_do + 0.5 * r.o**2 * self.hessian_diagonal(loss, data, masks, trace, h, chunk_size, bar)).sum(0)
                for h, r in enumerate(records)]  # eq. 8

    def hessian_diagonal(self, loss: Loss, data, masks: Masks, trace: Trace, h: int, chunk_size: int | None = None,
                         bar=None) -> Tensor:
        """Exact d2E_n/do_nj^2 for hidden layer h, (N, j), by forward-over-reverse autograd.

        E = sum_n E_n and instances do not interact, so the Hessian-vector product of E with the
        tangent "1 in column j for every instance" has, in column j, the diagonal entry of every
        instance at once. Columns are batched with ``torch.func.vmap``.
        """
        o = trace.o[h].detach()
        N, J = o.shape
        nxt = h + 1

        def total_error(o_h: Tensor) -> Tensor:
            y = self.output_from(nxt, linear(o_h, self.layers[nxt]), masks, scratch=False)
            return loss.per_instance(y, data.T).sum()

        grad = torch.func.grad(total_error)

        def hvp(v: Tensor) -> Tensor:
            return torch.func.jvp(grad, (o,), (v,))[1]

        diag = torch.empty_like(o)
        C = chunk_size or chunk_for(N, max([layer.out_features for layer in self.layers[nxt:]] + [J]), o.element_size())
        for cols in torch.arange(J, device=o.device).split(C):
            V = torch.zeros(len(cols), N, J, dtype=o.dtype, device=o.device)
            rows = torch.arange(len(cols), device=o.device)
            V[rows, :, cols] = 1
            Hv = torch.func.vmap(hvp)(V)  # (C, N, J)
            diag[:, cols] = Hv[rows, :, cols].T
            if bar is not None:
                bar.update(int(masks[h][cols].sum()))
        return diag
