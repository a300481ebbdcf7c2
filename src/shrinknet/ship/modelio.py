"""Model files that cannot run code when loaded: safetensors weights with a JSON description.

A shrinknet model file is one ``.safetensors`` file. Its tensors are ``layers.K.weight`` and
``layers.K.bias``; its header metadata holds, under the key ``"shrinknet"``, a JSON document:

    {"format": "shrinknet-mlp", "version": 2,
     "layers": [{"in": 400, "out": 100, "bias": true, "activation": {"name": "sigmoid"}}, ...],
     "meta": {"loss": "mse", "task": "classification", "class_values": [0, 1, ...],
              ...free-form: data set, split seed, training settings, metrics...}}

Keeping the description inside the safetensors header makes the model one file that is read
with a plain JSON parser and a tensor reader: no pickle, no code execution.

What a model was trained for -- its loss, its task and (classification) the class values its
outputs stand for -- is its :class:`Record`: ``meta["loss"]``, ``meta["task"]`` and
``meta["class_values"]`` (version 2); the output activation is the last layer's. Files of
shrinknet 0.1 (version 1) kept the task and class values only in ``meta["data"]``; they are read
from there. Every tensor of a file must be described and every described tensor must be finite
and floating point: a file with anything else is refused, never silently trimmed.

Plain PyTorch state_dicts (``torch.save(model.state_dict(), "m.pt")``, or a ``.safetensors``
file without a shrinknet description) are read by :func:`load_state_dict`: the Linear layers
are the 2-D ``*weight`` tensors in file order, their widths come from the tensor shapes.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model import activations as A
from ..errors import InputError
from . import schema
from ..util import limits
from ..util.files import atomic_path
from ..model.layers import Block
from ..model.losses import LOSSES  # noqa: F401  (modelio.LOSSES, as before)
from ..model.mlp import Net
from ..store import dtypes
from ..model.parse import as_net

FORMAT = schema.MLP_FORMAT
VERSION = 2
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
TASKS = schema.TASKS


class ModelFileError(InputError):
    """A model file that is missing, truncated, foreign or inconsistent."""


@dataclass(frozen=True)
class Record:
    """What a model was trained for; None where the file does not say.

    loss: "mse" or "cross_entropy". task: "classification" or "regression".
    class_values: the original label of each output (classification), e.g. (0, 1, 2) or ("cat", "dog").
    activation: the hidden layers' activation ("mixed" if they differ). out_activation: the output layer's
    ("identity" for none).
    """

    loss: str | None = None
    task: str | None = None
    class_values: tuple | None = None
    activation: str | None = None
    out_activation: str | None = None


def record(model, meta: dict | None) -> Record:
    """The Record of ``model`` saved with ``meta`` (version 2 keys, else 0.1's ``meta["data"]``)."""
    meta = meta or {}
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    task = meta.get("task", data.get("task"))
    values = meta.get("class_values", data.get("class_values") if task == "classification" else None)
    net = as_net(model)
    hidden = {layer.act.name for layer in net.layers[:-1]}
    return Record(
        loss=meta.get("loss"), task=task,
        class_values=None if values is None or task != "classification" else tuple(values),
        activation=hidden.pop() if len(hidden) == 1 else "mixed", out_activation=net.layers[-1].act.name,
    )


def save_model(path: str | os.PathLike, model, meta: dict | None = None, dtype: str | None = None,
               input_shape=None) -> Path:
    """Write ``model`` (nn.Sequential or a parsed network) to ``path`` as a shrinknet safetensors file.

    ``dtype`` ("float32", "float16", "float64") converts the stored weights; default: as they are.
    ``meta`` should carry the Record: "loss", "task" and (classification) "class_values".
    ``input_shape``: one instance's shape, e.g. (1, 20, 20), for a convolutional network that has
    not seen data yet (the command line needs it to read flat data rows).
    """
    from safetensors.torch import save_file

    from . import describe as io

    if dtype is not None and dtype not in dtypes.MODEL_FILE:
        raise ValueError(f"a model file stores float weights: dtype float32, float16 or float64, not {dtype!r} "
                         "(int8 storage is exported as onnx or c)")
    if isinstance(path, nn.Module) and isinstance(model, (str, os.PathLike)):
        raise TypeError(f"save_model(path, model, meta) takes the path first (export takes the model first); "
                        f"write save_model({str(model)!r}, model)")
    net = as_net(model)
    if input_shape is not None:
        net = net.copy()
        net.bind(tuple(input_shape))
    bad = schema.meta_problem(json.loads(json.dumps(meta or {})))
    if bad:
        raise InputError(f"meta: {bad}")
    describe = {FORMAT: _describe, io.FORMAT: io.describe}[net.file_format]
    conv = (lambda t: t) if dtype is None else (lambda t: t.to(getattr(torch, dtype)))
    tensors = {k: conv(t).detach().cpu().contiguous() for k, t in io.tensors(net).items()}
    doc = {**describe(net), "meta": meta or {}}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"shrinknet": json.dumps(doc)})
    return path


def _describe(net: Net) -> dict:
    """The shrinknet-mlp description: widths, bias and activation of every layer."""
    return {"format": FORMAT, "version": VERSION,
            "layers": [{"in": b.in_features, "out": b.out_features, "bias": b.bias is not None,
                        "activation": b.act.to_dict()} for b in net.layers]}


# -- reading ------------------------------------------------------------------------------------
def kind(path: str | os.PathLike) -> str:
    """"shrinknet" (a shrinknet model file) or "state_dict" (a plain state_dict); raises
    ModelFileError for a missing path, a directory, an ONNX file or an unreadable file."""
    path = Path(path)
    if path.is_dir():
        inside = path / "model.safetensors"
        hint = f" (e.g. {inside})" if inside.is_file() else ""
        raise ModelFileError(f"{path} is a directory: give the model file{hint}")
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a regular file: give a .safetensors model file or a .pt state_dict")
    if path.suffix.lower() in (".onnx", ".tflite"):
        raise ModelFileError(f"{path} is an {path.suffix[1:].upper()} file: the command line reads it as it is; in "
                             f"Python, shrinknet.as_net({str(path)!r}) or shrinknet.prune({str(path)!r}, ...) import it")
    if path.suffix.lower() in STATE_DICT_SUFFIXES:
        return "state_dict"
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == b"\x89HDF\r\n\x1a\n" or path.suffix.lower() in (".h5", ".hdf5", ".keras"):
        raise ModelFileError(f"{path} is a Keras/HDF5 file, which shrinknet does not read: convert the model to .tflite "
                             "(tf.lite.TFLiteConverter.from_keras_model) or .onnx (tf2onnx) and give that file")
    header, _ = _read_safetensors(path, tensors=False)
    return "shrinknet" if "shrinknet" in header else "state_dict"


def _read_safetensors(path: Path, tensors: bool = True) -> tuple[dict, dict]:
    """(header metadata, {name: tensor}) of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    if tensors:
        _check_declared_sizes(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise ModelFileError(
            f"{path} is not a readable model file: shrinknet reads .safetensors model files, PyTorch state_dicts "
            f"saved as .pt/.pth/.bin, .onnx and .tflite files (its safetensors header: {_first_line(e)})"
        ) from None
    return header, out


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None) -> tuple[nn.Sequential, dict]:
    """Read a shrinknet model file; returns (nn.Sequential, meta). Raises ModelFileError.

    ``record(model, meta)`` gives what the model was trained for.
    """
    path = Path(path)
    if kind(path) != "shrinknet":
        raise ModelFileError(f"{path} has no shrinknet description: it is a plain state_dict "
                             "(read it with modelio.load_state_dict)")
    header, tensors = _read_safetensors(path)
    try:
        doc = json.loads(header["shrinknet"])
    except (json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: its shrinknet description is not readable JSON (or nested too deeply)") from None
    bad = schema.description_problem(doc)  # after this, the description's types and ranges are trusted
    if bad:
        raise ModelFileError(f"{path} has an invalid shrinknet description: {bad}")
    if doc["format"] == schema.SEQ_FORMAT:  # convolutions: ship/describe.py
        model, meta = _load_general(path, doc, tensors)
        return (model if dtype is None else model.to(dtype)), meta
    layers = []
    used = set()
    for k, d in enumerate(doc["layers"]):
        wkey, bkey = f"layers.{k}.weight", f"layers.{k}.bias"
        if wkey not in tensors:
            raise ModelFileError(f"{path}: layer {k} is described but the file has no tensor {wkey}")
        W = tensors[wkey]
        if d["bias"] and bkey not in tensors:
            raise ModelFileError(f"{path}: layer {k} is described with a bias but the file has no tensor {bkey}")
        if not d["bias"] and bkey in tensors:
            raise ModelFileError(f"{path}: the file has {bkey} but layer {k} is described without a bias")
        b = tensors.get(bkey) if d["bias"] else None
        if tuple(W.shape) != (d["out"], d["in"]) or (b is not None and tuple(b.shape) != (d["out"],)):
            raise ModelFileError(f"{path}: layer {k} weights do not match the description")
        for key, t in ((wkey, W), (bkey, b)):
            if t is not None:
                _check_tensor(path, key, t)
                used.add(key)
        a = d["activation"]
        act = A.from_name(a["name"], beta=a.get("beta", 1.0), threshold=a.get("threshold", 20.0))
        layers.append(Block.linear(W, b, act))
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFileError(f"{path} holds tensors its description does not use ({', '.join(extra[:3])}"
                             f"{', ...' if len(extra) > 3 else ''}): refusing a file that does not describe itself")
    model = _sequential(path, layers)
    if dtype is not None:
        model = model.to(dtype)
    return model, doc.get("meta", {})


def load_state_dict(path: str | os.PathLike, hidden: list[int] | None = None, activation: str = "sigmoid",
                    out_activation: str = "identity") -> nn.Sequential:
    """Build an MLP from a plain PyTorch state_dict file.

    ``.pt``/``.pth``/``.bin`` files are read with ``torch.load(weights_only=True)`` (no code runs);
    a ``.safetensors`` file with safetensors. The Linear layers are the 2-D ``*weight`` tensors in
    file order, each with its ``*bias`` if present; their widths come from the shapes. ``hidden``,
    if given, is checked against them. ``activation`` is used for every hidden layer,
    ``out_activation`` for the output layer. Any other tensor (e.g. of a BatchNorm) is refused.
    """
    path = Path(path)
    kind(path)  # missing, directory, ONNX
    if path.suffix.lower() in STATE_DICT_SUFFIXES:
        _check_declared_sizes(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # torch raises many kinds for foreign or malicious files
            raise ModelFileError(
                f"{path} is not a plain PyTorch state_dict (torch.save(model.state_dict(), path)); "
                "files that need arbitrary code to load are refused"
            ) from None
    else:
        sd = _read_safetensors(path)[1]
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                    for k, v in sd.items()):
        raise ModelFileError(f"{path} does not hold a state_dict (a dict of tensors): save one with "
                             "torch.save(model.state_dict(), path)")
    weights = [k for k in sd if k.endswith("weight") and sd[k].ndim == 2]
    layers, used = [], set()
    for k, key in enumerate(weights):
        W = sd[key]
        bkey = key[: -len("weight")] + "bias"
        b = sd.get(bkey)
        for name, t in ((key, W), (bkey, b)):
            if t is not None:
                _check_tensor(path, name, t)
                used.add(name)
        if b is not None and tuple(b.shape) != (W.shape[0],):
            raise ModelFileError(f"{path}: {bkey} has shape {tuple(b.shape)} but {key} has {W.shape[0]} rows: "
                                 "the bias must have one entry per row")
        if k > 0 and W.shape[1] != sd[weights[k - 1]].shape[0]:
            raise ModelFileError(f"{path}: {key} takes {W.shape[1]} inputs but {weights[k - 1]} gives "
                                 f"{sd[weights[k - 1]].shape[0]}: layers are taken in file order")
        act = A.from_name(activation if k < len(weights) - 1 else out_activation)
        layers.append(Block.linear(W.float(), None if b is None else b.float(), act))
    extra = [k for k in sd if k not in used]
    conv = [k for k in extra if k.endswith("weight") and sd[k].ndim in (3, 4)]
    if conv:  # the kernels say "CNN", but strides, padding and pooling live in the code, not the state_dict
        raise ModelFileError(f"{path} holds convolution kernels ({conv[0]}): a state_dict does not record a CNN's "
                             "strides, padding or pooling; export the model with torch.onnx.export and give the "
                             ".onnx file, or save it with shrinknet.save_model")
    orphan = [k for k in extra if k.endswith("bias") and k[: -len("bias")] + "weight" not in sd]
    if orphan:
        raise ModelFileError(f"{path} has {orphan[0]} but no {orphan[0][: -len('bias')]}weight: the file is "
                             "incomplete; save it again with torch.save(model.state_dict(), path)")
    if extra:
        raise ModelFileError(f"{path} has tensors that are not Linear weights or biases ({', '.join(extra[:3])}"
                             f"{', ...' if len(extra) > 3 else ''}): shrinknet reads nn.Sequential MLPs only")
    if len(layers) < 2:
        raise ModelFileError(f"{path} has {len(layers)} Linear weight tensor(s): shrinknet needs at least one "
                             "hidden layer (two Linear layers)")
    widths = [layer.out_features for layer in layers[:-1]]
    if hidden is not None and list(hidden) != widths:
        raise ModelFileError(f"{path} has hidden widths {','.join(map(str, widths))} but --hidden says "
                             f"{','.join(map(str, hidden))}")
    return _sequential(path, layers)


# -- checks -------------------------------------------------------------------------------------
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


def _check_declared_sizes(path: Path) -> None:
    """Refuse a model file whose headers declare more than ``util.limits`` allows, before reading
    tensors: a safetensors header's shapes (a sparse file of 4 GiB holes), a .pt archive's members
    (deflated zeros declaring gigabytes). What cannot be parsed here is left to the readers' refusals."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = f.read(8)
        if len(start) == 8 and zipfile.is_zipfile(f):
            f.seek(0)
            try:
                with zipfile.ZipFile(f) as z:
                    members = z.infolist()
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError):
                return  # torch.load refuses it in its own words
            stored = sum(i.file_size for i in members)
            compressed = sum(i.compress_size for i in members if i.compress_type != zipfile.ZIP_STORED)
            deflated = sum(i.file_size for i in members if i.compress_type != zipfile.ZIP_STORED)
            limits.check(path.name, "its tensors", stored)
            limits.check(path.name, "its compressed tensors", deflated, deflated, compressed)
            return
        n = int.from_bytes(start, "little") if len(start) == 8 else 0
        if not 0 < n <= min(size - 8, 100 * 2**20):
            return
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return
    if not isinstance(header, dict):
        return
    keep = 0
    for name, t in header.items():
        shape = t.get("shape") if isinstance(t, dict) and name != "__metadata__" else None
        if isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape):
            keep += math.prod(shape) * max(4, _ITEMSIZE.get(t.get("dtype"), 4))
    limits.check(path.name, "its tensors", keep)


def _sequential(path: Path, layers: list[Block]) -> nn.Sequential:
    try:
        model = Net(layers).to_sequential()
        as_net(model)  # consecutive widths and one dtype
        return model
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: {_first_line(e)}") from None


def _check_tensor(path: Path, key: str, t: torch.Tensor) -> None:
    if not t.dtype.is_floating_point:
        raise ModelFileError(f"{path}: {key} holds {str(t.dtype).replace('torch.', '')} numbers; "
                             "model weights must be floating point (float16, float32 or float64)")
    if 0 in t.shape:
        raise ModelFileError(f"{path}: {key} has shape {tuple(t.shape)}: every layer needs at least one neuron")
    if not bool(torch.isfinite(t).all()):
        n = int((~torch.isfinite(t)).sum())
        raise ModelFileError(f"{path}: {key} has {n} NaN or infinite value(s): the model is broken; "
                             "retrain it or restore a good copy")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_general(path: Path, doc: dict, tensors: dict) -> tuple[nn.Sequential, dict]:
    """(nn.Sequential, meta) of a general network's file; the input shape goes into meta.
    Tensors are checked as for MLP files (floating point, finite, none unused)."""
    from . import describe as io

    for key, t in tensors.items():
        _check_tensor(path, key, t)
    try:
        net = io.build(doc, tensors)
        unused = sorted(set(tensors) - set(io.tensors(net)))
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise ModelFileError(f"{path} has an invalid shrinknet-seq description: {_first_line(e)}") from None
    if unused:
        raise ModelFileError(f"{path} holds tensors its description does not use ({', '.join(unused[:3])}): "
                             "refusing a file that does not describe itself")
    meta = dict(doc.get("meta") or {})
    if net.in_shape is not None:
        meta["input_shape"] = list(net.in_shape)
    return net.to_sequential(), meta
