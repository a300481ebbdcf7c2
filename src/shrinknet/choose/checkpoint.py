"""Checkpoints of a pruning run, so that an interrupted run resumes to exactly the same result.

A checkpoint is one JSON file (never pickle)::

    {"format": "shrinknet-prune-checkpoint", "version": 1,
     "fingerprint": {"model": SHA-256, "data": SHA-256, "settings": {...}},
     "steps": [Step as a dict, ...],     # steps[0] is the unpruned network
     "ranking": [[h, j, score], ...]}    # Algorithm I's one ranking, else null

The masks are not stored: they follow from the steps (``removed``). Floats are written with
Python's shortest round-tripping repr, so every number reads back bit for bit; the non-finite
ones as ``{"float": "inf"}`` (standard JSON has no Infinity). ``prune(..., resume=...)`` refuses a
checkpoint whose fingerprint differs from the run being started, naming what differs.

:class:`Checkpointer` is the hook the CLI passes as ``prune(checkpoint=...)``: it writes the file
(atomically) on the first call, then at most every ``every`` seconds, and always when ``final``
(end of the loop, Ctrl-C or SIGTERM).

A checkpoint is input like any other file: :func:`load` refuses a file over ``MAX_FILE_BYTES`` unread
and checks the decoded document against ``STRUCTURE`` (JSON Schema via ``util/schema.py``: types,
ranges, every list capped at ``MAX_ENTRIES`` before any entry is looked at); ``prune`` then checks it
against ``for_model`` (layer and unit indices inside the network, list lengths bounded by its units)
and replays every step, recomputing what it records (``prune._resume``): a forged or edited
checkpoint is refused in one line, never turned into a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch

from ..errors import InputError
from ..util import schema as S
from ..util.files import write_text

FORMAT = "shrinknet-prune-checkpoint"
VERSION = 1
MAX_ENTRIES = 2**16  # steps and ranking entries: hidden units of the largest network pruned unit by unit
MAX_FILE_BYTES = 64 * 2**20  # a checkpoint of MAX_ENTRIES steps is well below; no larger file is read
#: JSON arrays a checkpoint can hold (each step: removed, its <= 2 removals, kept; each ranking entry; the
#: lists around them): counted in the text before it is parsed, so that a forged file of millions of
#: tiny lists is refused in milliseconds, not parsed into gigabytes of Python objects first
MAX_ARRAYS = 4 * (MAX_ENTRIES + 1) + MAX_ENTRIES + 8


class CheckpointError(InputError):
    """A checkpoint that is not one, was made for another run, or was modified."""


def _schema(layers: list[int] | None) -> dict:
    """The checkpoint's schema; ``layers``: the hidden widths of the network it is replayed on
    (None: only the structure, every list capped at ``MAX_ENTRIES``)."""
    units = MAX_ENTRIES if layers is None else sum(layers)
    index = {"type": "integer", "minimum": 0, "maximum": MAX_ENTRIES}
    removal = {"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [index, index],
               "description": "a removal must be [hidden layer, unit], two whole numbers >= 0"}
    kept = {"type": "array", "maxItems": MAX_ENTRIES, "items": {"type": "integer", "minimum": 1},
            "description": "kept must list whole numbers >= 1"}
    in_network = {}
    if layers is not None:  # [layer, unit, ...] of this network: the unit below its layer's width
        in_network = {"anyOf": [{"prefixItems": [{"const": h}, {"maximum": n - 1}]} for h, n in enumerate(layers)]}
        removal = {**removal, **in_network,
                   "description": f"a removal must be [hidden layer, unit] of this network (layer 0..{len(layers) - 1}, "
                                  f"unit below the layer's width: {', '.join(map(str, layers))})"}
        kept = {"type": "array", "minItems": len(layers), "maxItems": len(layers),
                "prefixItems": [{"type": "integer", "minimum": 1, "maximum": n} for n in layers],
                "description": f"kept must list the units kept in each of the {len(layers)} hidden layers"}
    number = {"type": "number"}  # errors and scores may be infinite (decoded from {"float": "inf"})
    maybe_number = {"type": ["number", "null"]}
    fraction = {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "an accuracy is in [0, 1]"}

    def size(key):
        return {"type": "integer", "minimum": 0, "description": f"{key} must be a whole number >= 0"}

    def numeric(key, kind):
        return {**kind, "description": f"{key} must be a number{' or null' * (kind is maybe_number)}"}

    step = {
        "type": "object", "additionalProperties": False,
        "required": ["n_removed", "fraction_removed", "removed", "score", "error", "accuracy", "test_error",
                     "test_accuracy", "params", "bytes", "kept"],
        "description": "a step must be an object with the fields of a pruning step, and no others",
        "properties": {
            "n_removed": {"type": "integer", "minimum": 0, "maximum": units,
                          "description": f"n_removed must be a whole number in 0..{units}"},
            "fraction_removed": {"type": "number", "minimum": 0, "maximum": 1,
                                 "description": "fraction_removed must be in [0, 1]"},
            "removed": {"type": "array", "maxItems": 2, "uniqueItems": True, "items": removal,
                        "description": "removed must list one or two distinct [layer, unit] removals"},
            "score": numeric("score", maybe_number), "error": numeric("error", number), "accuracy": fraction,
            "test_error": numeric("test_error", maybe_number), "test_accuracy": fraction, "params": size("params"),
            "bytes": size("bytes"), "kept": kept,
            "ram_bytes": {"type": ["integer", "null"], "minimum": 0, "description": "ram_bytes must be null or >= 0"},
        },
    }
    return {  # properties before required: a wrong version is named as such
        "type": "object", "description": "a checkpoint must be a JSON object with format, version, fingerprint and steps",
        "properties": {
            "format": {"const": FORMAT, "description": f"format must be {FORMAT}"},
            "version": {"const": VERSION, "description": f"version must be {VERSION} (the one this shrinknet reads)"},
            "fingerprint": {"type": "object", "required": ["model", "data", "settings"],
                            "properties": {"model": {"type": "string", "maxLength": 64},
                                           "data": {"type": "string", "maxLength": 64}, "settings": {"type": "object"}},
                            "description": "fingerprint must hold the model's and data's hashes and the settings"},
            "steps": {"type": "array", "minItems": 1, "maxItems": units + 1, "items": step,
                      "description": f"steps must list 1 to {units + 1} steps (one per removal, and the start)"},
            "ranking": {"anyOf": [{"type": "null"},
                                  {"type": "array", "maxItems": units,
                                   "items": {"type": "array", "minItems": 3, "maxItems": 3,
                                             "prefixItems": [index, index, {"type": "number"}], **in_network}}],
                        "description": f"ranking must be null or at most {units} entries [layer, unit, score]"},
        },
        "required": ["format", "version", "fingerprint", "steps"],
    }


STRUCTURE = _schema(None)
_STRUCTURE = S.validator(STRUCTURE)


def for_model(saved: dict, hidden: list[int], where: str = "the checkpoint") -> None:
    """Refuse (CheckpointError) a checkpoint whose indices and lengths do not fit a network with
    these hidden widths; runs before any of its entries is used."""
    S.check(S.validator(_schema(list(hidden))), saved, f"{where} does not fit this model (was it modified?)",
            CheckpointError)


def fingerprint(net, datas, settings: dict) -> dict:
    """SHA-256 of the network's weights and description and of the data, plus the settings.

    ``datas``: the prepared ``network.Data`` sets the run uses (None entries skipped).
    """
    m = hashlib.sha256()
    layout = net.layout()
    if "blocks" in layout:  # settings the weights and activations do not show (strides, pooling, input shape);
        m.update(json.dumps(layout, sort_keys=True).encode())  # an MLP's layout adds none: its fingerprint is 0.2's
    for layer in net.layers:
        m.update(json.dumps(layer.act.to_dict(), sort_keys=True).encode())
        for t in (layer.weight, layer.bias):
            _update(m, t)
    d = hashlib.sha256()
    for data in datas:
        if data is None:
            d.update(b"none")
            continue
        for t in (data.X, data.T, data.labels):
            _update(d, t)
    return {"model": m.hexdigest(), "data": d.hexdigest(), "settings": json.loads(json.dumps(settings))}


def _update(h, t) -> None:
    if t is None:
        h.update(b"none")
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype} {tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def check(saved: dict, current: dict, where: str = "the checkpoint") -> None:
    """Raise CheckpointError (a ValueError) naming what differs between a checkpoint's fingerprint and this run's."""
    fp = saved.get("fingerprint") if isinstance(saved, dict) else None
    if not isinstance(fp, dict):
        raise CheckpointError(f"{where} is not a shrinknet pruning checkpoint")
    if fp.get("model") != current["model"]:
        raise CheckpointError(f"{where} was made on another model; resume with the model it was made on, "
                         "or start afresh without --resume")
    if fp.get("data") != current["data"]:
        raise CheckpointError(f"{where} was made on other data; resume with the data it was made on, "
                         "or start afresh without --resume")
    old, new = fp.get("settings") or {}, current["settings"]
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise CheckpointError(f"{where} was made with other settings ({k} {old.get(k)!r}, now {new.get(k)!r}); "
                         "give the same options again, or start afresh without --resume")


def encode(obj):
    """JSON-ready copy: tuples to lists, non-finite floats to {"float": "inf"|"-inf"|"nan"}."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"float": repr(obj)}
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"float"} and obj["float"] in ("inf", "-inf", "nan"):
            return float(obj["float"])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def _decode_float(obj: dict):
    """``decode`` of one JSON object as it is parsed (no second copy of the document)."""
    if set(obj) == {"float"} and obj["float"] in ("inf", "-inf", "nan"):
        return float(obj["float"])
    return obj


def dumps(state: dict) -> str:
    return json.dumps(encode({"format": FORMAT, "version": VERSION, **state}), allow_nan=False)


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint file and check its structure (``STRUCTURE``); CheckpointError (one line) when
    it is not one."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CheckpointError(f"{path} is {path.stat().st_size} bytes, more than a checkpoint can be "
                                  f"({MAX_FILE_BYTES}): it is not one of shrinknet's")
        text = path.read_text(encoding="utf-8")
        if text.count("[") > MAX_ARRAYS:
            raise CheckpointError(f"{path} holds {text.count('[')} JSON lists, more than a checkpoint can "
                                  f"({MAX_ARRAYS}, for {MAX_ENTRIES} hidden units): it is not one of shrinknet's")
        doc = json.loads(text, object_hook=_decode_float)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a shrinknet pruning checkpoint")
    S.check(_STRUCTURE, doc, f"{path} is not a valid checkpoint", CheckpointError)
    return doc


class Checkpointer:
    """``prune(checkpoint=Checkpointer(path))``: save the run's state to ``path`` as it goes.

    Called by ``prune`` with a state object (``state.to_dict()``) after every step; writes on
    the first call, when ``every`` seconds have passed since the last write, and when ``final``.
    """

    def __init__(self, path: str | os.PathLike, every: float = 30.0, clock=time.monotonic):
        if not every >= 0:
            raise ValueError(f"checkpoint interval must be >= 0 seconds, got {every}")
        self.path, self.every, self.clock = Path(path), float(every), clock
        self.last: float | None = None
        self.writes = 0

    def __call__(self, state, final: bool = False) -> None:
        now = self.clock()
        if final or self.last is None or now - self.last >= self.every:
            self.write(state)
            self.last = self.clock()

    def write(self, state) -> None:
        write_text(self.path, dumps(state.to_dict()))
        self.writes += 1
