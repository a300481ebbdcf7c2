"""Convolution layer (Conv1d/Conv2d, groups = 1): forward, eq. 73 through a convolution, the
per-candidate change brute force needs, surgery, parameter count, ONNX node and C loops.

Index letters: n instance, c input channel (the units of the layer below), o output channel,
then positions. ``weight[o, c, kh, kw]``. A 1-D convolution is held as a 2-D one with kh = 1.

eq. 73 for a convolution x = W * o (+ b): the first derivative is the transposed convolution,
dE/do = W^T * dE/dx, and the diagonal second derivative (cross terms dropped, as the paper does)
is the transposed convolution with the squared kernel: d2E/do^2 = (W o W)^T * d2E/dx^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input

from ..lstsq import ridge_solve


@dataclass(frozen=True)
class Conv:
    weight: Tensor  # (o, c, kh, kw)
    bias: Tensor | None  # (o,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    kind = "conv"

    @property
    def out_units(self) -> int:
        return self.weight.shape[0]

    @property
    def in_units(self) -> int:
        return self.weight.shape[1]

    def forward(self, h: Tensor) -> Tensor:
        """x = W * h + b; h: (N, c, H, W) -> (N, o, H', W')."""
        return F.conv2d(h, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def out_shape(self, shape: tuple) -> tuple:
        _, h, w = shape
        kh, kw = self.weight.shape[2:]
        return (self.out_units, *((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                                   zip((h, w), (kh, kw), self.stride, self.padding, self.dilation)))

    def backward(self, g1: Tensor, g2: Tensor, o_shape: tuple) -> tuple[Tensor, Tensor]:
        """eq. 73 through the convolution: (dE/do, d2E/do2), each of ``o_shape`` (N, c, H, W)."""
        W = self.weight
        args = (self.stride, self.padding, self.dilation)
        return conv2d_input(o_shape, W, g1, *args), conv2d_input(o_shape, W * W, g2, *args)

    def contribution(self, o: Tensor, J: Tensor) -> Tensor:
        """What each input channel c in J adds to x: (len(J), N, o, H', W'), bias excluded.

        One grouped convolution: channel c alone against its own slice W[:, c] of the kernel.
        """
        C = len(J)
        w = self.weight[:, J].transpose(0, 1).reshape(C * self.out_units, 1, *self.weight.shape[2:])
        y = F.conv2d(o[:, J], w, None, self.stride, self.padding, self.dilation, groups=C)  # (N, C*o, H', W')
        return y.view(o.shape[0], C, self.out_units, *y.shape[2:]).transpose(0, 1)

    def joint_contribution(self, o: Tensor, J: Tensor) -> Tensor:
        """What the input channels in J add to x together: (N, o, H', W'), bias excluded."""
        return self.contribution(o, J).sum(0)

    def refit(self, o: Tensor, target: Tensor, keep: Tensor, ridge: float) -> "Conv":
        """Ridge least squares over every position (refit.py): the kernel over the kept input
        channels ``keep`` and the bias that best reproduce ``target`` (N, o, H', W') from ``o``.
        Each output position is one row: the unfolded patch of kept channels -> the o outputs."""
        kh, kw = self.weight.shape[2:]
        cols = F.unfold(o[:, keep], (kh, kw), self.dilation, self.padding, self.stride)  # (N, c*kh*kw, P)
        A = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        X = target.flatten(2).transpose(1, 2).reshape(-1, self.out_units)  # (N*P, o)
        W_kept, b = ridge_solve(A, X, ridge, bias=self.bias is not None)
        W = torch.zeros_like(self.weight)
        W[:, keep] = W_kept.view(self.out_units, len(keep), kh, kw).to(W.dtype)
        return replace(self, weight=W, bias=None if b is None else b.to(W.dtype))

    def input_norms(self) -> Tensor:
        """||outgoing weights|| of every input channel: (c,)."""
        return torch.linalg.vector_norm(self.weight, dim=(0, 2, 3))

    def keep(self, rows: Tensor | None, cols: Tensor | None) -> "Conv":
        """Surgery: keep output channels ``rows`` and input channels ``cols`` (None = all)."""
        W, b = self.weight, self.bias
        if rows is not None:
            W, b = W[rows], None if b is None else b[rows]
        if cols is not None:
            W = W[:, cols]
        return replace(self, weight=W.clone(), bias=None if b is None else b.clone())

    def params(self, n_out: int, n_in: int) -> int:
        kh, kw = self.weight.shape[2:]
        return n_out * n_in * kh * kw + (n_out if self.bias is not None else 0)

    def macs(self, out_shape: tuple) -> int:
        """Multiply-adds of one instance's forward pass, given its output map (o, H', W')."""
        kh, kw = self.weight.shape[2:]
        return math.prod(out_shape) * self.in_units * kh * kw

    def row_size(self, n_in: int) -> int:
        """Weights of one output channel with ``n_in`` input channels kept: n_in kernels of kh x kw
        (what int8 storage quantizes as one row: store/quantize.py)."""
        kh, kw = self.weight.shape[2:]
        return n_in * kh * kw

    def module(self, dims: int) -> nn.Module:
        return torch_conv(self.weight, self.bias, self.stride, self.padding, self.dilation, dims)

    def describe(self) -> str:
        o, c, kh, kw = self.weight.shape
        return (f"conv {c} -> {o} channels, kernel {kh}x{kw}, stride {self.stride}, padding {self.padding}, "
                f"dilation {self.dilation}, {'bias' if self.bias is not None else 'no bias'}")

    def to_dict(self) -> dict:
        return {"op": "conv", "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation)}

    # -- export ------------------------------------------------------------------------------
    def onnx(self, g, x: str, p: str, dims: int, w) -> str:
        """One ``Conv`` node; ``w``: the stored weights (layers/export.py ``Stored``), the kernel
        (o, c, kh, kw), or (o, c, k) for a 1-D convolution, as ``p.weight``."""
        W = w.weight
        ins = [x, g.weight(f"{p}.weight", W[:, :, 0] if dims == 1 else W, w.scale)]
        if w.bias is not None:
            ins.append(g.constant(f"{p}.bias", w.bias.numpy()))
        pads = list(self.padding[-dims:])
        return g.node("Conv", ins, f"{p}.conv", kernel_shape=list(W.shape[2:][-dims:]),
                      strides=list(self.stride[-dims:]), pads=pads + pads, dilations=list(self.dilation[-dims:]))

    def c_code(self, src: str, dst: str, w, b: str | None, in_shape: tuple, out_shape: tuple) -> str:
        """The loop nest; ``w(index, unit)`` is the C float expression of a weight (layers/export.py)."""
        C, H, W = in_shape
        O, OH, OW = out_shape
        kh, kw = self.weight.shape[2:]
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        init = f"LOAD({b}[o])" if b else "0.0f"
        return f"""{{ /* convolution {C} -> {O} channels, kernel {kh}x{kw}, stride {self.stride}, padding {self.padding}, dilation {self.dilation} */
        int o, oh, ow, c, i, j;
        for (o = 0; o < {O}; o++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    float acc = {init};
                    for (c = 0; c < {C}; c++)
                        for (i = 0; i < {kh}; i++) {{
                            int ih = oh * {sh} - {ph} + i * {dh};
                            if (ih < 0 || ih >= {H}) continue;
                            for (j = 0; j < {kw}; j++) {{
                                int iw = ow * {sw} - {pw} + j * {dw};
                                if (iw < 0 || iw >= {W}) continue;
                                acc += {w(f"((o * {C} + c) * {kh} + i) * {kw} + j", "o")} * {src}[(c * {H} + ih) * {W} + iw];
                            }}
                        }}
                    {dst}[(o * {OH} + oh) * {OW} + ow] = acc;
                }}
    }}"""


def torch_conv(weight: Tensor, bias: Tensor | None, stride, padding, dilation, dims: int,
               groups: int = 1) -> nn.Module:
    """The ``nn.Conv1d``/``nn.Conv2d`` holding ``weight`` (o, c/groups, kh, kw; kh = 1 when ``dims`` is 1,
    and then the second entry of stride, padding and dilation is the one used) and ``bias``."""
    o, c, kh, kw = weight.shape
    kw_ = dict(groups=groups, bias=bias is not None, dtype=weight.dtype, device=weight.device)
    if dims == 1:
        m, w = nn.Conv1d(c * groups, o, kw, stride[1], padding[1], dilation[1], **kw_), weight[:, :, 0]
    else:
        m, w = nn.Conv2d(c * groups, o, (kh, kw), stride, padding, dilation, **kw_), weight
    with torch.no_grad():
        m.weight.copy_(w)
        if bias is not None:
            m.bias.copy_(bias)
    return m
