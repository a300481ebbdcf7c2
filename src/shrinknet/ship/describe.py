"""A general network's description for model files: plain JSON beside the safetensors tensors.

    {"format": "shrinknet-seq", "version": 1, "dims": 2, "in_shape": [1, 20, 20],
     "blocks": [{"param": {"op": "conv", "stride": [1, 1], ...}, "shape": [8, 1, 3, 3], "bias": true,
                 "tail": [{"op": "act", "name": "relu"}, {"op": "maxpool", ...}]}, ...]}

Tensors are ``layers.K.weight`` (a 1-D convolution's kernel held as (o, c, 1, k)) and ``layers.K.bias``.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..model import activations as A
from ..model.layers.act import Act
from ..model.layers.conv import Conv
from ..model.layers.linear import Dense
from ..model.layers.net import Block, SeqNet
from ..model.layers.pool import AdaptiveAvgPool, AvgPool, MaxPool

FORMAT = "shrinknet-seq"


def describe(net: SeqNet) -> dict:
    return {
        "format": FORMAT, "version": 1, "dims": net.dims,
        "in_shape": None if net.in_shape is None else list(net.in_shape),
        "blocks": [{"param": b.param.to_dict(), "shape": list(b.weight.shape), "bias": b.bias is not None,
                    "tail": [op.to_dict() for op in b.tail]} for b in net.blocks],
    }


def tensors(net: SeqNet) -> dict[str, Tensor]:
    out = {}
    for k, b in enumerate(net.blocks):
        out[f"layers.{k}.weight"] = b.weight
        if b.bias is not None:
            out[f"layers.{k}.bias"] = b.bias
    return out


def _whole(d: dict, key: str, low: int, where: str) -> tuple[int, ...]:
    """``d[key]``: a list of whole numbers >= ``low`` (a forged or corrupt file gets a ValueError naming it)."""
    v = d[key]
    if not isinstance(v, list) or not v or any(not isinstance(x, int) or isinstance(x, bool) or x < low for x in v):
        raise ValueError(f"{where}: {key} must be a list of whole numbers >= {low}, got {v!r}")
    return tuple(v)


def _number(d: dict, key: str, default: float, where: str, ok, what: str) -> float:
    v = d.get(key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not ok(float(v)):
        raise ValueError(f"{where}: {key} must be {what}, got {v!r}")
    return float(v)


def _op(d: dict, where: str):
    t = lambda key, low: _whole(d, key, low, where)  # noqa: E731
    kind = d["op"]
    if kind == "act":
        return Act(A.from_name(d["name"],
                               beta=_number(d, "beta", 1.0, where, lambda x: math.isfinite(x) and x > 0, "positive"),
                               threshold=_number(d, "threshold", 20.0, where, lambda x: x == x, "a number"),
                               slope=_number(d, "slope", 0.01, where, math.isfinite, "finite"), names=A.GENERAL_NAMES))
    if kind in ("maxpool", "avgpool"):
        kernel, stride, padding = t("kernel", 1), t("stride", 1), t("padding", 0)
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise ValueError(f"{where}: padding {padding} is more than half the kernel {kernel}")
        if kind == "avgpool":
            return AvgPool(kernel, stride, padding)
        return MaxPool(kernel, stride, padding, t("dilation", 1))
    if kind == "adaptive_avgpool":
        return AdaptiveAvgPool(t("size", 1))
    raise ValueError(f"unknown layer {kind!r}")


def build(doc: dict, tensors: dict[str, Tensor]) -> SeqNet:
    """The SeqNet a description and its tensors hold; ValueError/KeyError when they disagree."""
    if doc.get("format") != FORMAT or doc.get("version") != 1:
        raise ValueError(f"not a shrinknet-seq description of version 1 (format {doc.get('format')!r}, version "
                         f"{doc.get('version')!r})")
    if not isinstance(doc.get("blocks"), list) or len(doc["blocks"]) < 2:
        raise ValueError("the description must list at least two layers with weights (a hidden one and the output)")
    if doc.get("dims") not in (0, 1, 2):
        raise ValueError(f"dims must be 0, 1 or 2, got {doc.get('dims')!r}")
    blocks = []
    for k, d in enumerate(doc["blocks"]):
        W = tensors[f"layers.{k}.weight"]
        b = tensors.get(f"layers.{k}.bias") if d["bias"] else None
        if list(W.shape) != list(d["shape"]) or (d["bias"] and (b is None or tuple(b.shape) != (W.shape[0],))):
            raise ValueError(f"layer {k} weights do not match the description")
        p = d["param"]
        if p["op"] == "conv":
            if W.ndim != 4:
                raise ValueError(f"layer {k}: a convolution kernel must be 4-D")
            where = f"layer {k} (conv)"
            param = Conv(W, b, _whole(p, "stride", 1, where), _whole(p, "padding", 0, where),
                         _whole(p, "dilation", 1, where))
        elif p["op"] == "linear":
            param = Dense(W, b, _whole({"block": [p["block"]]}, "block", 1, f"layer {k} (linear)")[0])
        else:
            raise ValueError(f"unknown layer {p['op']!r}")
        blocks.append(Block(param, tuple(_op(t, f"layer {k} ({t.get('op')})") for t in d["tail"])))
    net = SeqNet(blocks, int(doc["dims"]), None)
    if doc.get("in_shape") is not None:
        net.bind(tuple(doc["in_shape"]))
    return net
