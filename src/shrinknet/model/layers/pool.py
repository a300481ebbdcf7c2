"""Pooling layers: forward, their part of the derivative sweeps, ONNX nodes and C loops.

Every map is held as (N, C, H, W); a 1-D network's (N, C, L) is (N, C, 1, L), so one code path
serves both. Pooling acts on each channel alone, so a switched-off channel (all zeros) stays
all zeros, and the per-channel gate commutes with it.

Derivatives: a pooling layer is u -> P u with P piecewise constant (max) or constant (average).
First derivative: dE/du = P^T dE/dout. Second (the diagonal recursion of eq. 73, cross terms
dropped): d2E/du^2 = (P o P)^T d2E/dout^2, with o the elementwise square. For max pooling P's
entries are 0 or 1, so P o P = P; for average pooling each entry of row p is a_p (1/window),
so P o P has entries a_p^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input


def _out_len(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _attrs(dims: int, t: tuple) -> list[int]:
    return list(t[-dims:])


@dataclass(frozen=True)
class MaxPool:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    kind = "maxpool"

    def forward(self, u: Tensor, inplace: bool = False) -> Tensor:
        """max over each window. In scratch mode (``inplace``: no autograd, brute force's batched
        pass) windows that tile the map (kernel = stride, no padding or dilation) are taken as the
        elementwise maximum of the kh x kw strided views: the same values (a max is exact), several
        times faster than torch's pooling kernel on these maps; it is not used under autograd,
        whose gradient at ties would differ."""
        kh, kw = self.kernel
        if inplace and self.kernel == self.stride and self.padding == (0, 0) and self.dilation == (1, 1):
            H, W = u.shape[-2] // kh * kh, u.shape[-1] // kw * kw
            views = [u[..., i:H:kh, j:W:kw] for i in range(kh) for j in range(kw)]
            if len(views) == 1:
                return views[0].clone()
            out = torch.maximum(views[0], views[1])
            for v in views[2:]:
                torch.maximum(out, v, out=out)
            return out
        return F.max_pool2d(u, self.kernel, self.stride, self.padding, self.dilation)

    def out_shape(self, shape: tuple) -> tuple:
        c, h, w = shape
        return (c, *(_out_len(n, k, s, p, d) for n, k, s, p, d in
                     zip((h, w), self.kernel, self.stride, self.padding, self.dilation)))

    def backward(self, u: Tensor, out: Tensor, g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor]:
        """P^T g for both derivatives (P o P = P): each output's value goes back to its arg-max;
        overlapping windows add up."""
        _, idx = F.max_pool2d(u, self.kernel, self.stride, self.padding, self.dilation, return_indices=True)
        idx = idx.flatten(2)

        def back(g: Tensor) -> Tensor:
            z = torch.zeros(u.shape[0], u.shape[1], u.shape[2] * u.shape[3], dtype=g.dtype, device=g.device)
            return z.scatter_add_(2, idx, g.flatten(2)).view_as(u)

        return back(g1), back(g2)

    def module(self, dims: int) -> nn.Module:
        if dims == 1:
            return nn.MaxPool1d(self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
        return nn.MaxPool2d(self.kernel, self.stride, self.padding, self.dilation)

    def describe(self) -> str:
        return f"maxpool k={self.kernel} s={self.stride} p={self.padding} d={self.dilation}"

    def to_dict(self) -> dict:
        return {"op": "maxpool", "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation)}

    def onnx(self, g, x: str, p: str, dims: int, in_shape: tuple) -> str:
        pads = _attrs(dims, self.padding)
        return g.node("MaxPool", [x], f"{p}.maxpool", kernel_shape=_attrs(dims, self.kernel),
                      strides=_attrs(dims, self.stride), pads=pads + pads, dilations=_attrs(dims, self.dilation))

    def c_code(self, src: str, dst: str, in_shape: tuple, out_shape: tuple) -> str:
        C, H, W = in_shape
        _, OH, OW = out_shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        return f"""{{ /* max pooling {self.kernel} stride {self.stride} padding {self.padding} dilation {self.dilation} */
        int c, oh, ow, i, j;
        for (c = 0; c < {C}; c++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    float m = -INFINITY;
                    for (i = 0; i < {kh}; i++) {{
                        int ih = oh * {sh} - {ph} + i * {dh};
                        if (ih < 0 || ih >= {H}) continue;
                        for (j = 0; j < {kw}; j++) {{
                            int iw = ow * {sw} - {pw} + j * {dw};
                            float v;
                            if (iw < 0 || iw >= {W}) continue;
                            v = {src}[(c * {H} + ih) * {W} + iw];
                            if (v > m) m = v;
                        }}
                    }}
                    {dst}[(c * {OH} + oh) * {OW} + ow] = m;
                }}
    }}"""


@dataclass(frozen=True)
class AvgPool:
    """Average pooling with zero padding counted in the window (torch's default)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    kind = "avgpool"

    def forward(self, u: Tensor, inplace: bool = False) -> Tensor:
        return F.avg_pool2d(u, self.kernel, self.stride, self.padding)

    def out_shape(self, shape: tuple) -> tuple:
        c, h, w = shape
        return (c, *(_out_len(n, k, s, p) for n, k, s, p in zip((h, w), self.kernel, self.stride, self.padding)))

    def backward(self, u: Tensor, out: Tensor, g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor]:
        """Average pooling is a convolution of each channel with the constant kernel a = 1/(kh kw):
        P^T g is its transpose, (P o P)^T g the transpose with a^2."""
        N, C, H, W = u.shape
        a = 1.0 / (self.kernel[0] * self.kernel[1])
        k = torch.full((1, 1, *self.kernel), a, dtype=u.dtype, device=u.device)

        def back(g: Tensor, kern: Tensor) -> Tensor:
            gi = conv2d_input((N * C, 1, H, W), kern, g.reshape(N * C, 1, *g.shape[2:]), self.stride, self.padding)
            return gi.view_as(u)

        return back(g1, k), back(g2, k * k)

    def module(self, dims: int) -> nn.Module:
        if dims == 1:
            return nn.AvgPool1d(self.kernel[1], self.stride[1], self.padding[1])
        return nn.AvgPool2d(self.kernel, self.stride, self.padding)

    def describe(self) -> str:
        return f"avgpool k={self.kernel} s={self.stride} p={self.padding}"

    def to_dict(self) -> dict:
        return {"op": "avgpool", "kernel": list(self.kernel), "stride": list(self.stride), "padding": list(self.padding)}

    def onnx(self, g, x: str, p: str, dims: int, in_shape: tuple) -> str:
        pads = _attrs(dims, self.padding)
        return g.node("AveragePool", [x], f"{p}.avgpool", kernel_shape=_attrs(dims, self.kernel),
                      strides=_attrs(dims, self.stride), pads=pads + pads, count_include_pad=1)

    def c_code(self, src: str, dst: str, in_shape: tuple, out_shape: tuple) -> str:
        C, H, W = in_shape
        _, OH, OW = out_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return f"""{{ /* average pooling {self.kernel} stride {self.stride} padding {self.padding} (zeros counted) */
        int c, oh, ow, i, j;
        for (c = 0; c < {C}; c++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    float s = 0.0f;
                    for (i = 0; i < {kh}; i++) {{
                        int ih = oh * {sh} - {ph} + i;
                        if (ih < 0 || ih >= {H}) continue;
                        for (j = 0; j < {kw}; j++) {{
                            int iw = ow * {sw} - {pw} + j;
                            if (iw < 0 || iw >= {W}) continue;
                            s += {src}[(c * {H} + ih) * {W} + iw];
                        }}
                    }}
                    {dst}[(c * {OH} + oh) * {OW} + ow] = s / {kh * kw}.0f;
                }}
    }}"""


def _windows(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows: [floor(i n_in / n_out), ceil((i + 1) n_in / n_out))."""
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def _window_matrix(n_in: int, n_out: int, like: Tensor) -> Tensor:
    A = torch.zeros(n_out, n_in, dtype=like.dtype, device=like.device)  # (i: out, h: in)
    for i, (s, e) in enumerate(_windows(n_in, n_out)):
        A[i, s:e] = 1.0 / (e - s)
    return A


@dataclass(frozen=True)
class AdaptiveAvgPool:
    size: tuple[int, int]
    kind = "adaptive_avgpool"

    def forward(self, u: Tensor, inplace: bool = False) -> Tensor:
        return F.adaptive_avg_pool2d(u, self.size)

    def out_shape(self, shape: tuple) -> tuple:
        return (shape[0], *self.size)

    def backward(self, u: Tensor, out: Tensor, g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor]:
        """out[n,c,i,j] = sum_hw Ah[i,h] Aw[j,w] u[n,c,h,w]; the squares of Ah, Aw for d2."""
        Ah = _window_matrix(u.shape[2], self.size[0], u)
        Aw = _window_matrix(u.shape[3], self.size[1], u)
        return (torch.einsum("ih,ncij,jw->nchw", Ah, g1, Aw),
                torch.einsum("ih,ncij,jw->nchw", Ah * Ah, g2, Aw * Aw))

    def module(self, dims: int) -> nn.Module:
        return nn.AdaptiveAvgPool1d(self.size[1]) if dims == 1 else nn.AdaptiveAvgPool2d(self.size)

    def describe(self) -> str:
        return f"adaptive avgpool to {self.size}"

    def to_dict(self) -> dict:
        return {"op": "adaptive_avgpool", "size": list(self.size)}

    def onnx(self, g, x: str, p: str, dims: int, in_shape: tuple) -> str:
        """GlobalAveragePool for size 1; otherwise the window matrices as MatMul constants
        (ONNX has no adaptive pooling): out = Ah u Aw^T, exactly torch's uneven windows."""
        if all(s == 1 for s in self.size):
            return g.node("GlobalAveragePool", [x], f"{p}.avgpool")
        import numpy as np

        ref = torch.zeros((), dtype=torch.float64)
        Aw = _window_matrix(in_shape[2], self.size[1], ref).T.numpy().astype(np.float32)  # (w, j)
        x = g.node("MatMul", [x, g.constant(f"{p}.avgpool.columns", Aw)], f"{p}.avgpool.w")
        if dims == 1:
            return x
        Ah = _window_matrix(in_shape[1], self.size[0], ref).numpy().astype(np.float32)  # (i, h)
        return g.node("MatMul", [g.constant(f"{p}.avgpool.rows", Ah), x], f"{p}.avgpool")

    def c_code(self, src: str, dst: str, in_shape: tuple, out_shape: tuple) -> str:
        C, H, W = in_shape
        _, OH, OW = out_shape
        return f"""{{ /* adaptive average pooling to {OH}x{OW}: window [floor(i*in/out), ceil((i+1)*in/out)) */
        int c, oh, ow, ih, iw;
        for (c = 0; c < {C}; c++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    int h0 = (oh * {H}) / {OH}, h1 = ((oh + 1) * {H} + {OH} - 1) / {OH};
                    int w0 = (ow * {W}) / {OW}, w1 = ((ow + 1) * {W} + {OW} - 1) / {OW};
                    float s = 0.0f;
                    for (ih = h0; ih < h1; ih++)
                        for (iw = w0; iw < w1; iw++)
                            s += {src}[(c * {H} + ih) * {W} + iw];
                    {dst}[(c * {OH} + oh) * {OW} + ow] = s / (float)((h1 - h0) * (w1 - w0));
                }}
    }}"""
