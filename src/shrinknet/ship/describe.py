"""A general network's description for model files: plain JSON beside the safetensors tensors.

    {"format": "shrinknet-seq", "version": 1, "dims": 2, "in_shape": [1, 20, 20],
     "blocks": [{"param": {"op": "conv", "stride": [1, 1], ...}, "shape": [8, 1, 3, 3], "bias": true,
                 "tail": [{"op": "act", "name": "relu"}, {"op": "maxpool", ...}]}, ...]}

Tensors are ``layers.K.weight`` (a 1-D convolution's kernel held as (o, c, 1, k)) and ``layers.K.bias``;
a depthwise conv at tail position I of layer K holds ``layers.K.I.weight`` (c, 1, kh, kw) and ``layers.K.I.bias``.
A network with residual additions (layers/resnet.py) is version 2: ``"adds": [{"src", "dst", "at", "proj"}]``,
the projection of addition I as ``adds.I.weight`` / ``adds.I.bias``.
"""

from __future__ import annotations

from torch import Tensor

from ..model import activations as A
from ..model.layers.act import Act
from ..model.layers.conv import Conv
from ..model.layers.depthwise import Depthwise
from ..model.layers.linear import Dense
from ..model.layers.net import Block, SeqNet
from ..model.layers.pool import AdaptiveAvgPool, AvgPool, MaxPool
from ..model.layers.resnet import Add, ResNet

FORMAT = "shrinknet-seq"


def describe(net: SeqNet) -> dict:
    adds = getattr(net, "adds", ())
    return {
        "format": FORMAT, "version": 2 if adds else 1, "dims": net.dims,
        "in_shape": None if net.in_shape is None else list(net.in_shape),
        "blocks": [{"param": b.param.to_dict(), "shape": list(b.weight.shape), "bias": b.bias is not None,
                    "tail": [op.to_dict() for op in b.tail]} for b in net.blocks],
        **({"adds": [a.to_dict() for a in adds]} if adds else {}),
    }


def tensors(net: SeqNet) -> dict[str, Tensor]:
    out = {}
    for k, b in enumerate(net.blocks):
        out[f"layers.{k}.weight"] = b.weight
        if b.bias is not None:
            out[f"layers.{k}.bias"] = b.bias
        for i, op in b.weighted:
            out[f"layers.{k}.{i}.weight"] = op.weight
            if op.bias is not None:
                out[f"layers.{k}.{i}.bias"] = op.bias
    for i, a in enumerate(getattr(net, "adds", ())):
        if a.proj is not None:
            out[f"adds.{i}.weight"] = a.proj.weight
            if a.proj.bias is not None:
                out[f"adds.{i}.bias"] = a.proj.bias
    return out


def _add(d: dict, tensors: dict, i: int) -> Add:
    """Residual addition i of a description that ``schema.SEQ`` accepted; its projection's tensors checked."""
    p = d["proj"]
    if p is None:
        return Add(d["src"], d["dst"], d["at"])
    W = tensors[f"adds.{i}.weight"]
    b = tensors.get(f"adds.{i}.bias") if p["bias"] else None
    if list(W.shape) != p["shape"] or (p["bias"] and (b is None or tuple(b.shape) != (W.shape[0],))):
        raise ValueError(f"addition {i}: projection weights do not match the description")
    return Add(d["src"], d["dst"], d["at"], Conv(W, b, tuple(p["stride"]), tuple(p["padding"]), tuple(p["dilation"])))


def _depthwise(d: dict, tensors: dict, key: str, where: str) -> Depthwise:
    """A depthwise tail op of a description that ``schema.SEQ`` accepted; its tensors are checked against it."""
    W = tensors[f"{key}.weight"]
    b = tensors.get(f"{key}.bias") if d["bias"] else None
    if W.ndim != 4 or W.shape[1] != 1 or list(W.shape) != d["shape"] or (
            d["bias"] and (b is None or tuple(b.shape) != (W.shape[0],))):
        raise ValueError(f"{where}: depthwise weights do not match the description")
    return Depthwise(W, b, tuple(d["stride"]), tuple(d["padding"]), tuple(d["dilation"]))


def _op(d: dict, where: str):
    """One tail op of a description that ``schema.SEQ`` accepted (types and ranges are trusted)."""
    t = lambda key: tuple(d[key])  # noqa: E731
    kind = d["op"]
    if kind == "act":
        return Act(A.from_name(d["name"], beta=d.get("beta", 1.0), threshold=d.get("threshold", 20.0),
                               slope=d.get("slope", 0.01), names=A.GENERAL_NAMES))
    if kind in ("maxpool", "avgpool"):
        kernel, stride, padding = t("kernel"), t("stride"), t("padding")
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise ValueError(f"{where}: padding {padding} is more than half the kernel {kernel}")
        if kind == "avgpool":
            return AvgPool(kernel, stride, padding)
        return MaxPool(kernel, stride, padding, t("dilation"))
    return AdaptiveAvgPool(t("size"))


def build(doc: dict, tensors: dict[str, Tensor]) -> SeqNet:
    """The SeqNet a description and its tensors hold; ValueError/KeyError when they disagree.

    ``doc`` must have passed ``schema.description_problem`` (``modelio.load_model`` checks it first):
    its types and ranges are trusted here, what only the tensors can tell is checked."""
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
        else:
            if W.ndim != 2 or W.shape[1] % p["block"]:
                raise ValueError(f"layer {k}: block {p['block']} does not divide the weight's {W.shape[-1]} columns")
            param = Dense(W, b, p["block"])
        blocks.append(Block(param, tuple(
            _depthwise(t, tensors, f"layers.{k}.{i}", f"layer {k} (depthwise)") if t["op"] == "depthwise"
            else _op(t, f"layer {k} ({t['op']})") for i, t in enumerate(d["tail"]))))
    if doc.get("adds"):
        net = ResNet(blocks, doc["dims"], None, adds=[_add(d, tensors, i) for i, d in enumerate(doc["adds"])])
    else:
        net = SeqNet(blocks, doc["dims"], None)
    if doc.get("in_shape") is not None:
        net.bind(tuple(doc["in_shape"]))
    return net
