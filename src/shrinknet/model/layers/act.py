"""Activation layer, for both networks: forward, eqs. 74-75 of the second-derivative sweep, module
rebuild, description, ONNX node and C expression (softplus: torch's beta and threshold exactly).

The maths of sigma, sigma' and sigma'' lives in :mod:`shrinknet.activations`; this module is what
a network needs around it. Index letters as
elsewhere: n instance, c channel, then the spatial positions of the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from .. import activations as A


@dataclass(frozen=True)
class Act:
    act: A.Activation
    kind = "act"

    def forward(self, u: Tensor, inplace: bool = False) -> Tensor:
        return self.act(u, inplace=inplace)

    def out_shape(self, shape: tuple) -> tuple:
        return shape

    def backward(self, u: Tensor, out: Tensor, g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor]:
        """(dE/du, d2E/du2) from (dE/dout, d2E/dout2) at out = sigma(u)."""
        s1, s2 = self.act.derivatives(u, out)
        return g1 * s1, g2 * s1 * s1 + g1 * s2  # eq. 74, eq. 75

    def module(self, dims: int):
        return self.act.to_module()

    def describe(self) -> str:
        a = self.act
        if a.name == "softplus":
            return f"softplus beta={a.beta:g} threshold={a.threshold:g}"
        if a.name == "leaky_relu":
            return f"leaky_relu slope={a.slope:g}"
        return a.name

    def to_dict(self) -> dict:
        return {"op": "act", **self.act.to_dict()}

    # -- export ------------------------------------------------------------------------------
    def _softplus(self, k: int) -> tuple[float, float | None]:
        """(beta, threshold) of a softplus as float32 constants; threshold None for "never linear"
        (+inf, or beyond float32: beta * x in float32 never exceeds it). ValueError for what no
        format can express (a NaN or -inf threshold; a beta that is not a positive float32 number)."""
        a, big = self.act, float(np.finfo(np.float32).max)
        if not (math.isfinite(a.beta) and 0 < a.beta <= big):
            raise ValueError(f"layer {k}: softplus beta {a.beta!r} cannot be exported: it must be a positive "
                             "finite float32 number")
        t = float(a.threshold)
        if math.isnan(t) or t < -big:
            raise ValueError(f"layer {k}: softplus threshold {t!r} cannot be exported: use a finite float32 "
                             "threshold, or +inf for the plain formula")
        return a.beta, None if t > big else t

    def onnx(self, g, x: str, p: str, k: int) -> str:
        """The activation's node(s) on ``x`` in layer k; a standard op where ONNX has one."""
        a = self.act
        if a.name == "identity":
            return x
        if a.name in ("sigmoid", "tanh", "relu"):
            return g.node({"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}[a.name], [x], f"{p}.{a.name}")
        if a.name == "relu6":
            return g.node("Clip", [x, g.scalar(f"{p}.relu6.min", 0.0), g.scalar(f"{p}.relu6.max", 6.0)], f"{p}.relu6")
        if a.name == "leaky_relu":
            return g.node("LeakyRelu", [x], f"{p}.leaky_relu", alpha=float(a.slope))
        # softplus: ONNX's has no beta and no threshold, so torch's is built exactly:
        # x where beta * x > threshold, else Softplus(beta * x) / beta (Mul and Div only when beta != 1)
        beta, threshold = self._softplus(k)
        smooth = f"{p}.softplus" if threshold is None else f"{p}.softplus.smooth"  # never linear: the plain formula
        bx = x
        if beta != 1:
            b = g.scalar(f"{p}.softplus.beta", beta)
            bx = g.node("Mul", [x, b], f"{p}.softplus.beta_x")
            sp = g.node("Div", [g.node("Softplus", [bx], f"{p}.softplus.of_beta_x"), b], smooth)
        else:
            sp = g.node("Softplus", [x], smooth)
        if threshold is None:
            return sp
        above = g.node("Greater", [bx, g.scalar(f"{p}.softplus.threshold", threshold)], f"{p}.softplus.linear")
        return g.node("Where", [above, x, sp], f"{p}.softplus")

    def c_expr(self, v: str, cf, k: int) -> str | None:
        """C expression for sigma applied to the float lvalue ``v`` in layer k (None for identity);
        ``cf`` formats a float constant."""
        a = self.act
        if a.name == "identity":
            return None
        if a.name == "sigmoid":
            return f"1.0f / (1.0f + expf(-{v}))"
        if a.name == "tanh":
            return f"tanhf({v})"
        if a.name == "relu":
            return f"({v} > 0.0f ? {v} : 0.0f)"
        if a.name == "relu6":
            return f"({v} > 0.0f ? ({v} < 6.0f ? {v} : 6.0f) : 0.0f)"
        if a.name == "leaky_relu":
            return f"({v} > 0.0f ? {v} : {cf(a.slope)} * {v})"
        beta, threshold = self._softplus(k)  # softplus, as torch
        bx = f"({cf(beta)} * {v})"
        smooth = f"log1pf(expf({bx})) / {cf(beta)}"
        if threshold is None:  # never linear: the plain formula
            return smooth
        return f"({bx} > {cf(threshold)} ? {v} : {smooth})"
