"""Memory accounting: bytes of all weights and biases at a storage dtype, and size strings.

Sizes count what a device must store: every weight and bias of every Linear layer, at the
storage dtype (float32 by default). A pruned network is counted as its physically smaller
layers: removing neuron j of hidden layer h drops row j of layer h (and its bias) and column j
of layer h+1.
"""

from __future__ import annotations

import re
import torch

from ..errors import InputError
from ..model.parse import as_net
from . import dtypes
from .quantize import int8_layer_bytes

#: Float storage dtypes and their bytes per number.
#: Every storage dtype: the float ones, and "int8" (int8 weights with one float32 scale per row and
#: float32 biases, see quantize.py; its bytes are not a fixed number per parameter).
STORAGE_DTYPES = dtypes.STORAGE

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "K": 2**10,  # "16k" is read the way embedded people mean it: KiB
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Bytes in a size string: "20000", "48KB" (48 000), "48KiB" (49 152), "0.5MB", "16k" (KiB).

    Decimal units (KB, MB, GB) are powers of 1000 and binary ones (KiB, MiB, GiB) powers of 1024.
    Raises ValueError with the accepted forms for anything else.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(_size_error(text))
        value, unit = float(m.group(1)), m.group(2).upper()
    if unit not in _UNITS:
        raise ValueError(_size_error(text))
    size = value * _UNITS[unit]
    if size != size or size == float("inf"):
        raise ValueError(f"{text!r} is too large to be a size: give a finite number of bytes, e.g. 48KiB")
    if size <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    if size != int(size):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


def _size_error(text) -> str:
    return f"cannot read {text!r} as a size: use a number of bytes with an optional unit, e.g. 20000, 48KB, 48KiB, 0.5MB"


dtype_name = dtypes.name  # the one vocabulary: store/dtypes.py
dtype_bytes = dtypes.float_bytes


def network_params(model, masks=None) -> int:
    """Weights and biases of ``model`` (a network or nn.Sequential), counting only kept units when
    ``masks`` (True = kept) is given: each layer's module counts its own (a Linear between layers of
    sizes[k] and sizes[k+1] has sizes[k+1] x sizes[k] weights + sizes[k+1] biases; a convolution
    its kernels; after Flatten a channel owns a block of columns)."""
    return as_net(model).params(masks)


def network_bytes(model, dtype: str | torch.dtype = "float32", masks=None) -> int:
    """Bytes of every weight and bias of ``model`` (a network or nn.Sequential) at ``dtype``,
    counting only kept neurons when ``masks`` (True = kept) is given.

    At "int8": int8 weights + one float32 scale per output row (a convolution: per output channel)
    + float32 biases (quantize.py).
    """
    if dtype_name(dtype) != "int8":
        return network_params(model, masks) * dtype_bytes(dtype)
    return sum(int8_layer_bytes(n_out, p.row_size(n_in), p.bias is not None)  # row_size: each layer module's
               for p, n_out, n_in in as_net(model).kept_sizes(masks))


def format_bytes(n: int) -> str:
    """Human-readable size with binary units: 1536 -> '1.50 KiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def ram_bytes(model, masks=None, input_shape=None, bytes_per: int = 4) -> int:
    """Peak activation memory of a batch-1 forward pass in bytes (float32 maps; ``bytes_per=1``: the
    int8 maps of the full-integer network, ``IntegerNet.ram_bytes``): the two largest consecutive
    intermediate maps, as the exported C's scratch buffer holds them side by side (the caller's
    input and output not counted). For an MLP the maps are the hidden layers.
    ``input_shape`` is needed for a convolutional network that has not seen data yet."""
    net = as_net(model)
    if input_shape is not None:
        net.bind(tuple(input_shape))
    return bytes_per * net.ram_floats(masks)


def available_bytes() -> int | None:
    """Memory the system can still give this process (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def training_bytes(sizes, rows: int, dtype: str | torch.dtype = "float32") -> int:
    """A lower estimate of the memory training an MLP with layer widths ``sizes`` needs: weights,
    gradients, Adam's two moments and the kept best copy (5 copies of the parameters), plus the
    activations of ``rows`` instances (pre-activation and output of every layer)."""
    sizes = [int(s) for s in sizes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    return (5 * params + 2 * rows * sum(sizes[1:])) * dtype_bytes(dtype)


def check_fits_in_memory(what: str, needed: int) -> None:
    """Raise InputError (one line) before allocating when ``needed`` bytes exceed what is available."""
    free = available_bytes()
    if free is not None and needed > free:
        raise InputError(f"{what} needs at least {format_bytes(needed)} of memory but only {format_bytes(free)} "
                          "is available: use fewer or narrower hidden layers, or less data")
