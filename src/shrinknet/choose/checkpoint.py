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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch

from ..util.files import write_text

FORMAT = "shrinknet-prune-checkpoint"
VERSION = 1


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
    """Raise ValueError naming what differs between a checkpoint's fingerprint and this run's."""
    fp = saved.get("fingerprint") if isinstance(saved, dict) else None
    if not isinstance(fp, dict):
        raise ValueError(f"{where} is not a shrinknet pruning checkpoint")
    if fp.get("model") != current["model"]:
        raise ValueError(f"{where} was made on another model; resume with the model it was made on, "
                         "or start afresh without --resume")
    if fp.get("data") != current["data"]:
        raise ValueError(f"{where} was made on other data; resume with the data it was made on, "
                         "or start afresh without --resume")
    old, new = fp.get("settings") or {}, current["settings"]
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise ValueError(f"{where} was made with other settings ({k} {old.get(k)!r}, now {new.get(k)!r}); "
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


def dumps(state: dict) -> str:
    return json.dumps(encode({"format": FORMAT, "version": VERSION, **state}), allow_nan=False)


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint file; ValueError (one line) when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no checkpoint at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not a readable checkpoint: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a shrinknet pruning checkpoint")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path} is a checkpoint of version {doc.get('version')!r}; this shrinknet reads "
                         f"version {VERSION}")
    if not isinstance(doc.get("steps"), list) or not doc["steps"]:
        raise ValueError(f"{path} is a checkpoint without steps")
    return decode(doc)


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
