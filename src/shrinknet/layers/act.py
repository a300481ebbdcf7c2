"""Activation layer, for both paths: forward, eqs. 74-75 of the second-derivative sweep, module
rebuild, description, ONNX node and C code (the MLP's own ONNX/C export stays in export.py).

The maths of sigma, sigma' and sigma'' lives in :mod:`shrinknet.activations`; this module is what
a network needs around it. Index letters as
elsewhere: n instance, c channel, then the spatial positions of the map.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    def onnx(self, g, x: str, p: str) -> str:
        a = self.act
        if a.name == "identity":
            return x
        if a.name in ("sigmoid", "tanh", "relu"):
            return g.node({"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}[a.name], [x], f"{p}.{a.name}")
        if a.name == "relu6":
            return g.node("Clip", [x, g.scalar(f"{p}.relu6.min", 0.0), g.scalar(f"{p}.relu6.max", 6.0)], f"{p}.relu6")
        if a.name == "leaky_relu":
            return g.node("LeakyRelu", [x], f"{p}.leaky_relu", alpha=float(a.slope))
        # softplus, built exactly as torch's (see shrinknet.export)
        bx = x
        if a.beta != 1:
            beta = g.scalar(f"{p}.softplus.beta", a.beta)
            bx = g.node("Mul", [x, beta], f"{p}.softplus.beta_x")
            sp = g.node("Div", [g.node("Softplus", [bx], f"{p}.softplus.of_beta_x"), beta], f"{p}.softplus.smooth")
        else:
            sp = g.node("Softplus", [x], f"{p}.softplus.smooth")
        above = g.node("Greater", [bx, g.scalar(f"{p}.softplus.threshold", a.threshold)], f"{p}.softplus.linear")
        return g.node("Where", [above, x, sp], f"{p}.softplus")

    def c_expr(self, v: str, cf) -> str | None:
        """C expression for sigma applied to the float lvalue ``v`` (None for identity);
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
        bx = f"({cf(a.beta)} * {v})"
        return f"({bx} > {cf(a.threshold)} ? {v} : log1pf(expf({bx})) / {cf(a.beta)})"
