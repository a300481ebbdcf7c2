"""Linear layer, for both paths (the MLP's layers are Dense with P = 1): forward, eq. 73, the
per-candidate change brute force needs, surgery, parameter count, module rebuild, description,
ONNX node and C loop (an MLP's and a CNN's alike).

Index letters: n instance, c unit of the layer below, p position inside that unit's block,
i output feature. After ``Flatten`` a channel c of the layer below feeds the P consecutive
columns c*P .. c*P+P-1 (torch flattens channel-major), so ``weight.view(i, c, p)`` groups the
columns by unit; below another Linear P = 1 and this is the MLP's eq. 5 / eq. 73.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..lstsq import ridge_solve


@dataclass(frozen=True)
class Dense:
    weight: Tensor  # (i, c * p)
    bias: Tensor | None  # (i,)
    block: int = 1  # P: columns per unit of the layer below
    kind = "linear"

    @property
    def out_units(self) -> int:
        return self.weight.shape[0]

    @property
    def in_units(self) -> int:
        return self.weight.shape[1] // self.block

    def forward(self, h: Tensor) -> Tensor:
        """x_i = sum_j w_ji o_j + b_i (eq. 5) on the flattened input: (N, ...) -> (N, i).

        A map held channels-last (brute force's batched pass, layers/net.py ``perturbed``) is read
        in its memory order, against the weight's columns put in that order: the same sum, without
        copying the map into torch's channel-major flattening."""
        if h.ndim == 4 and self.block > 1 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last):
            N, C, H, W = h.shape
            w = self.weight.view(self.out_units, C, H * W).transpose(1, 2).reshape(self.out_units, -1)
            return F.linear(h.permute(0, 2, 3, 1).reshape(N, -1), w, self.bias)
        return F.linear(h.reshape(h.shape[0], -1), self.weight, self.bias)

    def out_shape(self, shape: tuple) -> tuple:
        return (self.out_units,)

    def backward(self, g1: Tensor, g2: Tensor, o_shape: tuple) -> tuple[Tensor, Tensor]:
        """eq. 73: dE/do_j = sum_i dE/dx_i w_ji; d2E/do_j^2 = sum_i d2E/dx_i^2 w_ji^2, in ``o_shape``."""
        W = self.weight
        return (g1 @ W).view(o_shape), (g2 @ (W * W)).view(o_shape)

    def contribution(self, o: Tensor, J: Tensor) -> Tensor:
        """What each unit c in J adds to x: (len(J), N, i), bias excluded."""
        N, C = o.shape[0], self.in_units
        oc = o.reshape(N, C, self.block)[:, J]  # (N, c, p)
        Wc = self.weight.view(self.out_units, C, self.block)[:, J]  # (i, c, p)
        return torch.einsum("ncp,icp->cni", oc, Wc)

    def joint_contribution(self, o: Tensor, J: Tensor) -> Tensor:
        """What the units in J add to x together: (N, i), bias excluded. One matmul over their
        column blocks (below another Linear: x - o_J W_J^T, the MLP's switch-off of several)."""
        N, C = o.shape[0], self.in_units
        oc = o.reshape(N, C, self.block)[:, J].reshape(N, -1)  # (N, c*p)
        Wc = self.weight.view(self.out_units, C, self.block)[:, J].reshape(self.out_units, -1)  # (i, c*p)
        return oc @ Wc.T

    def refit(self, o: Tensor, target: Tensor, keep: Tensor, ridge: float) -> "Dense":
        """Ridge least squares (refit.py): the columns of the kept units ``keep`` and the bias that
        best reproduce ``target`` (N, i) from ``o``."""
        N, C = o.shape[0], self.in_units
        A = o.reshape(N, C, self.block)[:, keep].reshape(N, -1)
        W_kept, b = ridge_solve(A, target, ridge, bias=self.bias is not None)
        W = torch.zeros_like(self.weight).view(self.out_units, C, self.block)
        W[:, keep] = W_kept.view(self.out_units, len(keep), self.block).to(W.dtype)
        return replace(self, weight=W.view(self.out_units, -1), bias=None if b is None else b.to(W.dtype))

    def input_norms(self) -> Tensor:
        return torch.linalg.vector_norm(self.weight.view(self.out_units, self.in_units, self.block), dim=(0, 2))

    def keep(self, rows: Tensor | None, cols: Tensor | None) -> "Dense":
        """Surgery: keep output features ``rows`` and the column blocks of units ``cols``."""
        W, b = self.weight, self.bias
        if rows is not None:
            W, b = W[rows], None if b is None else b[rows]
        if cols is not None:
            W = W.view(W.shape[0], self.in_units, self.block)[:, cols].reshape(W.shape[0], -1)
        return replace(self, weight=W.clone(), bias=None if b is None else b.clone())

    def params(self, n_out: int, n_in: int) -> int:
        return n_out * n_in * self.block + (n_out if self.bias is not None else 0)

    def macs(self, out_shape: tuple) -> int:
        """Multiply-adds of one instance's forward pass: out * in (eq. 5)."""
        return self.weight.shape[0] * self.weight.shape[1]

    def row_size(self, n_in: int) -> int:
        """Weights of one output feature with ``n_in`` input units kept: n_in * P columns (what int8
        storage quantizes as one row: store/quantize.py)."""
        return n_in * self.block

    def module(self, dims: int) -> nn.Module:
        m = nn.Linear(self.weight.shape[1], self.out_units, bias=self.bias is not None,
                      dtype=self.weight.dtype, device=self.weight.device)
        with torch.no_grad():
            m.weight.copy_(self.weight)
            if self.bias is not None:
                m.bias.copy_(self.bias)
        return m

    def describe(self) -> str:
        return f"linear {self.weight.shape[1]} -> {self.out_units}, {'bias' if self.bias is not None else 'no bias'}"

    def to_dict(self) -> dict:
        return {"op": "linear", "block": self.block}

    # -- export ------------------------------------------------------------------------------
    def onnx(self, g, x: str, p: str, dims: int, w) -> str:
        """One ``Gemm`` (transB=1) on the rows ``x``; ``w``: the stored weights (layers/export.py
        ``Stored``), initializers ``p.weight`` (i, c * p) in torch's layout and ``p.bias``."""
        ins = [x, g.weight(f"{p}.weight", w.weight, w.scale)]
        if w.bias is not None:
            ins.append(g.constant(f"{p}.bias", w.bias.numpy()))
        return g.node("Gemm", ins, f"{p}.linear", transB=1)

    def c_code(self, src: str, dst: str, w, b: str | None, in_shape: tuple, out_shape: tuple) -> str:
        """The loop: y[i] = b[i] + sum_j w[i * n_in + j] x[j] (eq. 5), j in order; ``w(index, unit)`` is
        the C float expression of a weight (layers/export.py)."""
        n_in = self.weight.shape[1]
        init = f"LOAD({b}[i])" if b else "0.0f"
        return f"""{{ /* linear {n_in} -> {self.out_units} */
        int i, j;
        for (i = 0; i < {self.out_units}; i++) {{
            float acc = {init};
            for (j = 0; j < {n_in}; j++)
                acc += {w(f"i * {n_in} + j", "i")} * {src}[j];
            {dst}[i] = acc;
        }}
    }}"""
