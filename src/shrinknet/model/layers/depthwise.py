"""Depthwise convolution (Conv1d/Conv2d with groups = in_channels = out_channels, channel
multiplier 1), as a weighted op in the *tail* of the block that produces its input channels.

Reading taken (issue #18): a depthwise layer is not a hidden layer of its own. Its channel c
reads only channel c of the map below, so it rides along with the producer's unit c: removing
unit c of block h removes the producer's output channel c, the depthwise channel c (kernel and
bias) and the next layer's input channel c. The unit's switch (mask, or the gate of the exact
criteria) sits at the *mask point*: the producer's output after its activation, right before the
first depthwise op (``net.Block.split``). Switching unit c off sets that map to 0 (§2.1: o_j = 0);
what the depthwise channel then outputs is a map z_c that no longer depends on the input: the
depthwise conv of zeros is its bias b_c everywhere, then the tail's activation and pooling act
on it. Brute force measures exactly that (the next layer loses the contribution of o_c - z_c);
surgery folds the next layer's response to z_c into its bias, which is exact when that response
is the same at every position: the parser (``model/parse.py``) allows a depthwise op only where
it is (pooling after it without padding; the next layer a Linear, or a convolution without
padding), and ``Network.shrink`` checks it again.

The criteria on such a unit: taylor1 and taylor2 are eqs. 6 and 8 at the mask point (o_j: the
producer's output there), their derivatives run back through the rest of the tail, the
depthwise conv included, by the rule below; so taylor2 drops the cross-position terms inside the
depthwise conv as it does inside any conv (the approximation), and taylor2_exact (autograd on
the unit's gate at the mask point) keeps them. Brute force is exact.

Index letters: n instance, c channel, then positions. ``weight[c, 0, kh, kw]``; a 1-D kernel is
held as (c, 1, 1, k), as conv.py does. Its derivatives (eq. 73 through a per-channel
convolution): dE/du = W^T * dE/dout (a grouped transposed convolution), d2E/du^2 = (W o W)^T *
d2E/dout^2 (cross terms dropped, as the paper does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input

from .conv import torch_conv


@dataclass(frozen=True)
class Depthwise:
    weight: Tensor  # (c, 1, kh, kw)
    bias: Tensor | None  # (c,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    kind = "depthwise"
    weighted = True  # a tail op with weights of its own (stored, counted, exported, cut by surgery)

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, u: Tensor, inplace: bool = False) -> Tensor:
        """out[:, c] = w_c * u[:, c] + b_c for every channel c alone."""
        return F.conv2d(u, self.weight, self.bias, self.stride, self.padding, self.dilation, groups=u.shape[1])

    def out_shape(self, shape: tuple) -> tuple:
        c, h, w = shape
        if c != self.channels:
            raise ValueError(f"a depthwise conv over {self.channels} channels gets {c}")
        kh, kw = self.weight.shape[2:]
        return (c, *((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                     zip((h, w), (kh, kw), self.stride, self.padding, self.dilation)))

    def backward(self, u: Tensor, out: Tensor, g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor]:
        """eq. 73 through the per-channel convolution: (dE/du, d2E/du2), shaped like ``u``."""
        W, args = self.weight, (self.stride, self.padding, self.dilation, u.shape[1])
        return (conv2d_input(tuple(u.shape), W, g1, *args), conv2d_input(tuple(u.shape), W * W, g2, *args))

    def keep(self, rows: Tensor | None) -> "Depthwise":
        """Surgery: keep channels ``rows`` (None = all)."""
        W, b = self.weight, self.bias
        if rows is not None:
            W, b = W[rows], None if b is None else b[rows]
        return replace(self, weight=W.clone(), bias=None if b is None else b.clone())

    def with_weights(self, weight: Tensor, bias: Tensor | None) -> "Depthwise":
        return replace(self, weight=weight, bias=bias)

    def params(self, n_out: int, n_in: int) -> int:
        """n_out kept channels, each one kernel (and bias); ``n_in`` is not used (one input each)."""
        kh, kw = self.weight.shape[2:]
        return n_out * kh * kw + (n_out if self.bias is not None else 0)

    def row_size(self, n_in: int) -> int:
        """Weights of one channel: one kh x kw kernel (int8 quantizes it as one row)."""
        kh, kw = self.weight.shape[2:]
        return kh * kw

    def macs(self, out_shape: tuple) -> int:
        kh, kw = self.weight.shape[2:]
        return math.prod(out_shape) * kh * kw

    def module(self, dims: int) -> nn.Module:
        return torch_conv(self.weight, self.bias, self.stride, self.padding, self.dilation, dims,
                          groups=self.weight.shape[0])

    def describe(self) -> str:
        c, _, kh, kw = self.weight.shape
        return (f"depthwise conv {c} channels, kernel {kh}x{kw}, stride {self.stride}, padding {self.padding}, "
                f"dilation {self.dilation}, {'bias' if self.bias is not None else 'no bias'}")

    def to_dict(self) -> dict:
        return {"op": "depthwise", "shape": list(self.weight.shape), "bias": self.bias is not None,
                "stride": list(self.stride), "padding": list(self.padding), "dilation": list(self.dilation)}

    # -- export ------------------------------------------------------------------------------
    def onnx(self, g, x: str, p: str, dims: int, w) -> str:
        """One ``Conv`` node with group = channels; ``w``: the stored weights (ship/emit.py ``Stored``)."""
        W = w.weight
        ins = [x, g.weight(f"{p}.weight", W[:, :, 0] if dims == 1 else W, w.scale)]
        if w.bias is not None:
            ins.append(g.constant(f"{p}.bias", w.bias.numpy()))
        pads = list(self.padding[-dims:])
        return g.node("Conv", ins, f"{p}.depthwise", kernel_shape=list(W.shape[2:][-dims:]), group=int(W.shape[0]),
                      strides=list(self.stride[-dims:]), pads=pads + pads, dilations=list(self.dilation[-dims:]))

    def c_code(self, src: str, dst: str, w, b: str | None, in_shape: tuple, out_shape: tuple) -> str:
        """The loop nest, each channel against its own kernel; ``w(index, unit)`` as in conv.py."""
        C, H, W = in_shape
        _, OH, OW = out_shape
        kh, kw = self.weight.shape[2:]
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        init = f"LOAD({b}[c])" if b else "0.0f"
        return f"""{{ /* depthwise convolution {C} channels, kernel {kh}x{kw}, stride {self.stride}, padding {self.padding}, dilation {self.dilation} */
        int c, oh, ow, i, j;
        for (c = 0; c < {C}; c++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    float acc = {init};
                    for (i = 0; i < {kh}; i++) {{
                        int ih = oh * {sh} - {ph} + i * {dh};
                        if (ih < 0 || ih >= {H}) continue;
                        for (j = 0; j < {kw}; j++) {{
                            int iw = ow * {sw} - {pw} + j * {dw};
                            if (iw < 0 || iw >= {W}) continue;
                            acc += {w(f"(c * {kh} + i) * {kw} + j", "c")} * {src}[(c * {H} + ih) * {W} + iw];
                        }}
                    }}
                    {dst}[(c * {OH} + oh) * {OW} + ow] = acc;
                }}
    }}"""
