"""What the importers share: the result's attributes, the size guard, and the one refusal.

An importer returns a plain ``nn.Sequential`` of standard torch modules that ``layers/parse.py``
already reads, with three attributes set on it (``nn.Module`` keeps them in its ``__dict__``):

- ``shrinknet_input_shape``: one instance's shape as the *Sequential* reads it, e.g. (1, 28, 28);
  the parser binds it (``parse(..., in_shape)`` default), so flat rows of that size are reshaped;
- ``shrinknet_input_layout``: "NCHW" or "flat" (a network that starts with a Linear or with a flatten of
  its input, which is then read as given) when the file reads what the Sequential reads; "NHWC"
  when the file reads channels-last images: the user's data is then permuted once, at the data
  loader, with :func:`to_model_layout` (the Sequential itself is channels-first, as the parser needs);
- ``shrinknet_notes``: one line per change made on import (softmax taken off, weights dequantized ...).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...errors import InputError

#: Largest model file read (protobuf's own limit is 2 GiB; a microcontroller model is far smaller).
MAX_FILE_BYTES = 2**31 - 1


def finish(mods: list[nn.Module], notes: list[str], in_shape: tuple | None = None,
           layout: str = "NCHW") -> nn.Sequential:
    """The importer's result: an ``nn.Sequential`` with its attributes (module docstring)."""
    seq = nn.Sequential(*mods)
    if in_shape is not None:
        seq.shrinknet_input_shape = tuple(int(d) for d in in_shape)
    seq.shrinknet_input_layout = layout
    seq.shrinknet_notes = list(notes)
    return seq


def notes_of(model: nn.Module) -> list[str]:
    """The lines an importer recorded on ``model`` ([] for anything else)."""
    return list(getattr(model, "shrinknet_notes", []))


def to_model_layout(model: nn.Module, X):
    """The user's data as the imported Sequential reads it: NHWC images (N, H, W, C) are permuted to
    (N, C, H, W) when the file read NHWC; anything else is returned as is. Works on numpy and torch."""
    if getattr(model, "shrinknet_input_layout", "") != "NHWC" or X.ndim != 4:
        return X
    return X.transpose(0, 3, 1, 2) if isinstance(X, np.ndarray) else X.permute(0, 3, 1, 2)


def read_bounded(path, what: str) -> bytes:
    """The whole file, refused (one line) when it is missing, empty or larger than any model we read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            if size == 0:
                raise InputError(f"{path}: the {what} file is empty")
            if size > MAX_FILE_BYTES:
                raise InputError(f"{path}: {size} bytes is larger than any {what} file shrinknet reads (2 GiB)")
            f.seek(0)
            return f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} file ({e.strerror or e})") from None


def count(shape, what: str) -> int:
    """prod(shape), refused for a negative dimension (a forged file)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InputError(f"{what} declares a negative dimension {tuple(dims)}: the file is damaged")
    return math.prod(dims)


def tensor(a: np.ndarray) -> torch.Tensor:
    """A float32 torch copy (the imported network's dtype)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32).copy())
