"""A general network's description for model files: plain JSON beside the safetensors tensors.

    {"format": "shrinknet-seq", "version": 1, "dims": 2, "in_shape": [1, 20, 20],
     "blocks": [{"param": {"op": "conv", "stride": [1, 1], ...}, "shape": [8, 1, 3, 3], "bias": true,
                 "tail": [{"op": "act", "name": "relu"}, {"op": "maxpool", ...}]}, ...]}

Tensors are ``layers.K.weight`` (a 1-D convolution's kernel held as (o, c, 1, k)) and ``layers.K.bias``.
"""

from __future__ import annotations

from torch import Tensor

from .. import activations as A
from .act import Act
from .conv import Conv
from .linear import Dense
from .net import Block, SeqNet
from .pool import AdaptiveAvgPool, AvgPool, MaxPool

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


def _op(d: dict):
    t = lambda key: tuple(int(v) for v in d[key])  # noqa: E731
    kind = d["op"]
    if kind == "act":
        return Act(A.from_name(d["name"], beta=float(d.get("beta", 1.0)), threshold=float(d.get("threshold", 20.0)),
                               slope=float(d.get("slope", 0.01)), names=A.GENERAL_NAMES))
    if kind == "maxpool":
        return MaxPool(t("kernel"), t("stride"), t("padding"), t("dilation"))
    if kind == "avgpool":
        return AvgPool(t("kernel"), t("stride"), t("padding"))
    if kind == "adaptive_avgpool":
        return AdaptiveAvgPool(t("size"))
    raise ValueError(f"unknown layer {kind!r}")


def build(doc: dict, tensors: dict[str, Tensor]) -> SeqNet:
    """The SeqNet a description and its tensors hold; ValueError/KeyError when they disagree."""
    if doc.get("format") != FORMAT or doc.get("version") != 1:
        raise ValueError("not a shrinknet-seq description")
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
            param = Conv(W, b, tuple(p["stride"]), tuple(p["padding"]), tuple(p["dilation"]))
        elif p["op"] == "linear":
            param = Dense(W, b, int(p["block"]))
        else:
            raise ValueError(f"unknown layer {p['op']!r}")
        blocks.append(Block(param, tuple(_op(t) for t in d["tail"])))
    net = SeqNet(blocks, int(doc["dims"]), None)
    if doc.get("in_shape") is not None:
        net.bind(tuple(doc["in_shape"]))
    return net
