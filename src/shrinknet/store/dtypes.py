"""The storage dtypes: one vocabulary, in one place, for prune, refit, exports, model files and the CLI.

    float32  4 bytes a number; the exports compute in float32 (the default)
    float16  2 bytes a number; weights and biases rounded to float16 (quantize.stored)
    float64  8 bytes a number; counted, not exported (a device computes in float32 at most)
    int8     int8 weights + a float32 scale per output unit + float32 biases (quantize.py)

Which of them each output can hold is stated here too (``EXPORTABLE``, ``MODEL_FILE``), so the CLI's
choices, export() and save_model() cannot disagree.
"""

from __future__ import annotations

import torch

#: bytes per number of the float storage dtypes
FLOAT_BYTES = {"float16": 2, "float32": 4, "float64": 8}
#: every storage dtype a run can count and store, in the order the CLI lists them
STORAGE = ("float32", "float16", "float64", "int8")
#: the ones whose round trip changes numbers (float32 and float64 store weights as they are)
ROUNDING = ("float16", "int8")
#: what ONNX and C exports write
EXPORTABLE = ("float32", "float16", "int8")
#: what a safetensors model file holds: floats (an int8 network is saved as its float weights)
MODEL_FILE = ("float32", "float16", "float64")


def name(dtype: str | torch.dtype, allowed: tuple[str, ...] = STORAGE, what: str = "storage dtype") -> str:
    """The name of a storage dtype ("float32", ...) from a name or a torch dtype; ValueError naming
    ``allowed`` for anything else."""
    text = str(dtype).replace("torch.", "")
    if text not in allowed:
        raise ValueError(f"unknown {what} {dtype!r}: choose {', '.join(allowed[:-1])} or {allowed[-1]}")
    return text


def rounds(storage: str) -> bool:
    """Whether storing at ``storage`` changes the numbers ("float16", "int8")."""
    return storage in ROUNDING


def float_bytes(dtype: str | torch.dtype) -> int:
    """Bytes per number of a float storage dtype."""
    n = name(dtype)
    if n == "int8":
        raise ValueError("int8 storage has no fixed bytes per number (scales and biases are float32): "
                         "use network_bytes")
    return FLOAT_BYTES[n]
