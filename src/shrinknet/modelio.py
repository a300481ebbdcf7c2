"""Model files that cannot run code when loaded: safetensors weights with a JSON description.

A shrinknet model file is one ``.safetensors`` file. Its tensors are ``layers.K.weight`` and
``layers.K.bias``; its header metadata holds, under the key ``"shrinknet"``, a JSON document:

    {"format": "shrinknet-mlp", "version": 1,
     "layers": [{"in": 400, "out": 100, "bias": true, "activation": {"name": "sigmoid"}}, ...],
     "meta": {...free-form: loss, data set, split seed, training settings...}}

Keeping the description inside the safetensors header makes the model one file that is read
with a plain JSON parser and a tensor reader: no pickle, no code execution.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from . import activations as A
from .files import atomic_path
from .network import Layer, Net, as_net

FORMAT = "shrinknet-mlp"


class ModelFileError(ValueError):
    """A model file that is missing, truncated, foreign or inconsistent."""


def save_model(path: str | os.PathLike, model, meta: dict | None = None, dtype: str | None = None) -> Path:
    """Write ``model`` (nn.Sequential or Net) to ``path`` as a shrinknet safetensors file.

    ``dtype`` ("float32", "float16", "float64") converts the stored weights; default: as they are.
    """
    from safetensors.torch import save_file

    net = as_net(model)
    if getattr(net, "general", False):  # convolutions: the description of layers/io.py
        return _save_general(Path(path), net, meta, dtype)
    tensors = {}
    desc = []
    for k, layer in enumerate(net.layers):
        conv = (lambda t: t) if dtype is None else (lambda t: t.to(getattr(torch, dtype)))
        tensors[f"layers.{k}.weight"] = conv(layer.weight).detach().cpu().contiguous()
        if layer.bias is not None:
            tensors[f"layers.{k}.bias"] = conv(layer.bias).detach().cpu().contiguous()
        desc.append(
            {"in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None,
             "activation": layer.act.to_dict()}
        )
    doc = {"format": FORMAT, "version": 1, "layers": desc, "meta": meta or {}}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"shrinknet": json.dumps(doc)})
    return path


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None) -> tuple[nn.Sequential, dict]:
    """Read a shrinknet model file; returns (nn.Sequential, meta). Raises ModelFileError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{path} is not a readable shrinknet model file (safetensors): {str(e).splitlines()[0]}"
        ) from None
    try:
        doc = json.loads(header["shrinknet"])
        if isinstance(doc, dict) and doc.get("format") == "shrinknet-seq":
            model, meta = _load_general(doc, tensors)
            return (model if dtype is None else model.to(dtype)), meta
        assert doc["format"] == FORMAT
        layers = []
        for k, d in enumerate(doc["layers"]):
            W = tensors[f"layers.{k}.weight"]
            b = tensors.get(f"layers.{k}.bias") if d["bias"] else None
            if tuple(W.shape) != (d["out"], d["in"]) or (d["bias"] and (b is None or tuple(b.shape) != (d["out"],))):
                raise ModelFileError(f"{path}: layer {k} weights do not match the description")
            a = d["activation"]
            act = A.from_name(a["name"], beta=a.get("beta", 1.0), threshold=a.get("threshold", 20.0))
            layers.append(Layer(W, b, act))
        model = Net(layers).to_sequential()
    except ModelFileError:
        raise
    except (KeyError, AssertionError, TypeError, ValueError, json.JSONDecodeError):
        raise ModelFileError(
            f"{path} is a safetensors file but not a shrinknet model (no valid 'shrinknet' description)"
        ) from None
    if dtype is not None:
        model = model.to(dtype)
    return model, doc.get("meta", {})


def load_state_dict(path: str | os.PathLike, hidden: list[int], activation: str = "sigmoid",
                    out_activation: str = "identity") -> nn.Sequential:
    """Build an MLP from a plain PyTorch state_dict file, loaded with ``weights_only=True``.

    The Linear layers are taken in the order of their ``*.weight`` keys; ``hidden`` lists the
    expected hidden widths and ``activation`` the hidden activation.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"state_dict file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds for foreign or malicious files
        raise ModelFileError(
            f"{path} is not a plain PyTorch state_dict (torch.save(model.state_dict(), path)); "
            "files that need arbitrary code to load are refused"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelFileError(f"{path} does not hold a state_dict (a dict of tensors)")
    weights = [k for k in sd if k.endswith("weight") and sd[k].ndim == 2]
    if len(weights) != len(hidden) + 1:
        raise ModelFileError(
            f"{path} has {len(weights)} 2-D weight tensors but --hidden gives {len(hidden)} hidden layers"
        )
    layers = []
    for k, key in enumerate(weights):
        W = sd[key].float()
        b = sd.get(key[: -len("weight")] + "bias")
        if k < len(hidden) and W.shape[0] != hidden[k]:
            raise ModelFileError(f"{path}: {key} has {W.shape[0]} rows but --hidden says {hidden[k]}")
        act = A.from_name(activation if k < len(hidden) else out_activation)
        layers.append(Layer(W, None if b is None else b.float(), act))
    model = Net(layers).to_sequential()
    try:
        as_net(model)  # checks that consecutive widths match
        return model
    except TypeError as e:
        raise ModelFileError(f"{path}: {e}") from None


def _save_general(path: Path, net, meta: dict | None, dtype: str | None) -> Path:
    """A general (CNN) network: tensors ``layers.K.weight/bias`` and the layers/io.py description."""
    from safetensors.torch import save_file

    from .layers import io

    conv = (lambda t: t) if dtype is None else (lambda t: t.to(getattr(torch, dtype)))
    tensors = {k: conv(t).detach().cpu().contiguous() for k, t in io.tensors(net).items()}
    doc = {**io.describe(net), "meta": meta or {}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"shrinknet": json.dumps(doc)})
    return path


def _load_general(doc: dict, tensors: dict) -> tuple[nn.Sequential, dict]:
    """(nn.Sequential, meta) of a general network's file; the input shape goes into meta."""
    from .layers import io

    net = io.build(doc, tensors)
    meta = dict(doc.get("meta") or {})
    if net.in_shape is not None:
        meta["input_shape"] = list(net.in_shape)
    return net.to_sequential(), meta
