"""Export a (shrunk) network for a constrained device: ONNX, plain C99, or a safetensors file.

``export(model, path, format=..., dtype=...)`` parses ``model`` (an ``nn.Sequential`` of Linear
layers and elementwise activations, a convolutional network, or a parsed
:class:`~shrinknet.network.Network`) and writes the ONNX graph or C source that
:mod:`shrinknet.layers.export` builds for every network alike: each layer's module (``layers/``
linear.py, conv.py, pool.py, act.py) emits its own ONNX node and C loop.

``format="onnx"`` -- one ``.onnx`` file at ``path`` (opset 17, IR version 8, so that older
    runtimes load it too). Graph input ``"input"``: float32 ``["batch", in_features]`` (a
    convolutional network: ``["batch", *input_shape]``); graph output ``"output"``: float32
    ``["batch", out_features]``. Layer k is one ``Gemm`` node ``layers.K.linear`` (``transB=1``;
    a convolution: ``Conv``, ``layers.K.conv``) with initializers ``layers.K.weight`` (out, in)
    -- torch's layout -- and ``layers.K.bias`` (out,), followed by its tail op by op, op i's
    nodes named ``layers.K.I.*``: the activation as a standard op (``Sigmoid``, ``Tanh``,
    ``Relu``, ``Softplus``, ``Clip`` for ReLU6, ``LeakyRelu``), pooling. ONNX's Softplus has no
    beta and no threshold, so torch's ``softplus(x; beta, threshold)`` is built exactly:
    ``bx = beta * x`` (``Mul``, only when beta != 1), ``Softplus(bx) / beta`` (``Div``, only when
    beta != 1), and ``Where(bx > threshold, x, ...)`` for torch's linear branch. A threshold of
    +inf (or beyond float32) has no linear branch: the plain formula is written, in C too; a NaN
    or -inf threshold or a beta that is not a positive float32 number is refused (ValueError).
    With ``meta`` the dictionary is stored as JSON under the model's metadata key
    ``"shrinknet.meta"``.

``format="c"`` -- ``path`` names the ``.c`` file (it must end in ``.c``); the header goes next to
    it with the same stem (``out/model.c`` -> ``out/model.h``). Plain C99 with no ``malloc``
    that needs only libm (``-lm``). The header declares
    ``void <prefix>_forward(const float *input, float *output);`` and defines
    ``<PREFIX>_INPUT_SIZE``, ``<PREFIX>_OUTPUT_SIZE``, ``<PREFIX>_FLASH_BYTES`` and
    ``<PREFIX>_RAM_BYTES``. Weights and biases are ``static const`` arrays ``layer<k>_weight``,
    ``layer<k>_bias`` in torch's row-major layout. ``<prefix>_forward`` is one inline loop nest
    per layer (an MLP's: ``y[i] = b[i] + sum_j w[i * n_in + j] x[j]``), each followed by its tail
    in order: one in-place loop per activation (torch's softplus as in ONNX), one loop nest per
    pooling. The forward pass works in one static float scratch buffer in which consecutive maps
    sit at opposite ends (ping-pong); it holds exactly ``Network.ram_floats()`` floats: for an MLP
    ``max(h_k + h_{k+1})`` (``h_0`` for one hidden layer), at most twice the widest hidden layer.
    ``input`` is only read by the first layer and ``output`` only written by the last, so the two
    may be the same buffer. The static buffer makes the function not reentrant: do not call it
    from two threads or from an interrupt handler that can interrupt itself. Every identifier
    other than ``<prefix>_forward`` is ``static``, so several exported networks link into one
    program.

``format="safetensors"`` -- a shrinknet model file, written by :func:`shrinknet.modelio.save_model`
    (``meta`` is stored in it), readable with :func:`shrinknet.modelio.load_model`.

``dtype`` is the storage type of weights and biases: ``"float32"``, ``"float16"`` or ``"int8"``.
ONNX and C take the weights as ``layers.export.stored_weights`` prepares them at ``dtype`` (the
one place: rounding, int8 quantization, the finiteness check, which safetensors passes too).
Arithmetic is float32 in every format, and a float64 model is stored as float32. With
``"float16"``:

* ONNX stores the initializers as float16 and inserts a ``Cast`` to float32 after each, so the
  graph's input, output and arithmetic stay float32 (runtimes fold the casts once at load).
* C stores IEEE binary16 bit patterns as ``uint16_t`` and widens each to float where it is used,
  with a small portable bit-level converter (no ``_Float16``; it assumes ``float`` is IEEE
  binary32 and refuses to compile otherwise).
* safetensors stores float16 tensors.

With ``"int8"`` (ONNX and C only) every weight matrix is quantized per output row, every
convolution kernel per output channel (:func:`shrinknet.quantize.quantize_rows`: int8 values, one
float32 scale per row or channel); biases stay float32. Quantizing a network that already carries
dequantized int8 weights (what ``PruneResult.network(k)`` of an int8 run returns) gives back
exactly the run's int8 values and scales. The arithmetic is float (the device needs an FPU; the
full-integer network -- int8 activations too, no FPU -- is written by ``ship/c_integer.py`` and
``ship/tflite.py``, whose paths this module's :func:`check_export_paths` checks too):

* ONNX stores ``layers.K.weight`` as int8 with ``layers.K.weight_scale`` (float32, per row or
  output channel) and a zero ``layers.K.weight_zero_point``, and a ``DequantizeLinear`` (axis 0)
  feeds the ``Gemm`` or ``Conv``.
* C stores ``int8_t`` weight arrays and ``float`` scale arrays; each weight is used as
  ``(float)q * scale`` -- the same float32 number torch's dequantized weight holds.

``ExportResult.flash_bytes`` is the bytes of all weights and biases at ``dtype``, exactly
:func:`shrinknet.memory.network_bytes` (code size and ONNX/safetensors framing are not counted).
``ExportResult.ram_bytes`` is the C code's scratch buffer; it is 0 for ONNX and safetensors,
whose working memory belongs to the runtime that runs them.

Every file is written to a temporary name and renamed into place (:mod:`shrinknet.files`); the
``.c`` and ``.h`` are replaced together (``files.replace_files``): when either cannot be written,
both files that were there before are left as they were.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..util.files import OutputError, atomic_path, check_output, identity, replace_files, write_bytes
from . import emit as lx
from . import names
from .emit import ONNX_IR_VERSION, ONNX_OPSET  # noqa: F401  (documented above)
from ..store import dtypes
from ..store.memory import network_bytes
from ..model.parse import as_net

FORMATS = ("onnx", "c", "safetensors")
DTYPES = dtypes.EXPORTABLE

_INSTALL_HINT = "pip install 'shrinknet[export]'"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote.

    paths: the files written (C: the ``.c`` file, then the ``.h`` file).
    flash_bytes: bytes of all weights and biases at ``dtype`` (= ``network_bytes(model, dtype)``).
    ram_bytes: bytes of the C code's static scratch buffer; 0 for ONNX and safetensors.
    """

    paths: list[Path]
    flash_bytes: int
    ram_bytes: int
    format: str
    dtype: str


def export(model, path: str | os.PathLike, format: str = "onnx", dtype: str = "float32",
           prefix: str = "shrinknet", meta: dict | None = None, input_shape=None,
           overwrite: bool = False) -> ExportResult:
    """Write ``model`` (nn.Sequential or a parsed network) to ``path`` as ONNX, C99 source, or safetensors.

    Args:
        model: a network ``as_net`` parses: Linear layers and elementwise activations, or a
            convolutional network.
        path: the output file (for ``format="c"`` the ``.c`` file; the ``.h`` goes next to it).
        format: "onnx", "c" or "safetensors".
        dtype: storage type of weights and biases, "float32", "float16" or "int8" (ONNX and C:
            int8 weights with float32 scales per row or output channel, float32 biases).
        prefix: C only: names ``<prefix>_forward`` and the ``<PREFIX>_*`` macros; a lower-case C
            identifier (:func:`shrinknet.ship.names.c_prefix`).
        meta: free-form JSON-serialisable facts stored with the model (ONNX metadata, C comment,
            safetensors header).
        input_shape: the shape of one instance, e.g. (1, 20, 20), for a convolutional network
            whose input shape is not known from data or its model file (ONNX and C need it).
        overwrite: replace existing output files; only files shrinknet exported
            (:func:`check_export_paths`).

    Raises:
        ValueError: unknown format or dtype, a prefix that is not a C identifier, a C path not
            ending in ``.c``, weights that are not finite at ``dtype``, a softplus constant no
            format can write, or an ``input_shape`` the network does not take.
        shrinknet.util.files.OutputError: an output file that exists (without ``overwrite``), that
            shrinknet did not write, or a name the format cannot take (a ValueError too).
        TypeError: ``model`` is not a supported network (the message names the layer).
        FileNotFoundError: the directory of ``path`` does not exist.
        ImportError: ONNX export without the ``onnx`` package.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown export dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    path = Path(path)
    if format == "c":
        check_prefix(prefix)
    if format == "safetensors" and dtype == "int8":
        raise ValueError("safetensors export stores float weights: use dtype float32 or float16 "
                         "(int8 storage is exported as onnx or c)")
    expect = check_export_paths(path, format, overwrite)
    net = as_net(model)
    if input_shape is not None:
        net.bind(tuple(input_shape))
    if net.in_shape is None and format != "safetensors":
        raise ValueError("the input shape of this convolutional network is not known: pass input_shape=(C, H, W)")
    flash = network_bytes(net, dtype)
    stored = lx.stored_weights(net, dtype)  # the weights as stored; raises for values not finite at dtype
    if format == "safetensors":
        from .modelio import save_model

        with atomic_path(path, expect[path]) as tmp:
            save_model(tmp, net, meta, dtype=dtype)
        return ExportResult([path], flash, 0, format, dtype)
    if format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError as e:
            raise ImportError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from e
        write_bytes(path, lx.onnx_model(net, stored, dtype, meta).SerializeToString(), expect[path])
        return ExportResult([path], flash, 0, format, dtype)
    header = path.with_suffix(".h")
    c_sources = lx.c_sources
    if getattr(net, "adds", ()):  # residual additions: the skip held in the scratch buffer (emit_residual.py)
        from .emit_residual import c_sources_residual as c_sources
    h_text, c_text, ram = c_sources(net, stored, dtype, prefix, header.name, flash, meta)
    replace_files([(header, h_text), (path, c_text)], expect)  # both or neither, the old pair kept on failure
    return ExportResult([path, header], flash, ram, format, dtype)


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can name C functions and macros (:func:`shrinknet.ship.names.c_prefix`), else InputError."""
    return names.c_prefix(prefix)


def export_paths(path: str | os.PathLike, format: str) -> list[Path]:
    """The files an export to ``path`` writes: ``path`` (C: the ``.c`` file, then its ``.h``)."""
    path = Path(path)
    return [path, path.with_suffix(".h")] if format == "c" else [path]


def check_export_paths(path: str | os.PathLike, format: str, overwrite: bool = False, inputs=(),
                       option: str = "--out") -> dict[Path, tuple[int, int] | None]:
    """Check every file an export to ``path`` writes, by the rules of run directories, before any work.

    The name must end in ``.<format>`` (C: ``.c``, and its ``.h`` beside it is checked too), each
    file must be writable where it is (:func:`shrinknet.util.files.check_output`: not an input, not
    a directory, FIFO or device), and an existing file is replaced only with ``overwrite`` and only
    when shrinknet wrote it (:func:`written_by_shrinknet`). C: the header's name must be able to
    stand in ``#include "..."`` (:func:`shrinknet.ship.names.c_include_name`).

    Returns each file's identity (``files.identity``: None when absent) for the write, which
    replaces only what was checked here (``files.swap_into``). Raises OutputError (one line).
    """
    path = Path(path)
    check_output(path, "file", inputs=inputs, option=option)
    if path.suffix.lower() != f".{format}":
        hint = " (the .h is written beside it)" if format == "c" else ""
        raise OutputError(f"{option} {names.one_line(str(path))}: {format} export writes a .{format} file{hint}; "
                          f"give a name ending in .{format}")
    expect = {}
    for p in export_paths(path, format):
        if p != path:
            check_output(p, "file", inputs=inputs, option="the header")
            names.c_include_name(p.name)
        if os.path.lexists(p):
            shown = names.one_line(str(p))
            if not written_by_shrinknet(p, format):
                raise OutputError(f"{shown} exists and was not written by shrinknet: it is kept; choose another "
                                  "name for the export")
            if not overwrite:
                raise OutputError(f"{shown} exists: add --overwrite to replace it, or choose another name")
        expect[p] = identity(p)
    return expect


#: how each format's files written by shrinknet begin (safetensors: see _safetensors_by_shrinknet)
_C_BANNER = b"/*\n * Generated by shrinknet "
_ONNX_START = re.compile(rb"\x08[\x00-\x7f]\x12\x09shrinknet")  # ir_version (field 1), producer_name (field 2)
_HEADER_LIMIT = 16 << 20


def written_by_shrinknet(path: str | os.PathLike, format: str) -> bool:
    """Whether ``path`` is a file shrinknet exported in ``format``, recognised by how it begins:
    C and its header by the banner comment (``/*`` then `` * Generated by shrinknet``), ONNX by its
    serialised ModelProto starting with ``ir_version`` and ``producer_name`` "shrinknet" (onnx writes
    fields in number order), .tflite by its flatbuffer file identifier ``TFL3`` (bytes 4..8) and a Model
    ``description`` that begins with "shrinknet" (read by following the flatbuffer's offsets, a few
    bytes at a time), safetensors by a header of at most 16 MiB whose ``__metadata__`` holds
    the ``"shrinknet"`` description. Reads at most the header; never the whole file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO put there does not block
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            if format == "c":
                return f.read(len(_C_BANNER)) == _C_BANNER
            if format == "onnx":
                return bool(_ONNX_START.match(f.read(16)))
            if format == "tflite":
                return _tflite_by_shrinknet(f)
            head = f.read(8)
            if len(head) != 8:
                return False
            n = int.from_bytes(head, "little")
            if not 2 <= n <= _HEADER_LIMIT:
                return False
            doc = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    meta = doc.get("__metadata__") if isinstance(doc, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("shrinknet"), str)


_TFLITE_DESCRIPTION = 3  # the Model table's field number of ``description`` (schema.fbs: version, operator_codes, subgraphs, description)


def _tflite_by_shrinknet(f) -> bool:
    """A .tflite flatbuffer whose Model.description begins with "shrinknet" (``ship.tflite`` writes
    "shrinknet <version> ..."): root offset (uint32 at 0), identifier "TFL3" at 4..8, the root table's
    vtable (int32 soffset back from the table), the description's uoffset, then its length and bytes."""
    size = os.fstat(f.fileno()).st_size

    def at(pos: int, n: int) -> bytes:
        if not 0 <= pos <= size - n:
            raise ValueError("offset outside the file")
        f.seek(pos)
        return f.read(n)

    head = at(0, 8)
    if head[4:8] != b"TFL3":
        return False
    root = int.from_bytes(head[:4], "little")
    vtable = root - int.from_bytes(at(root, 4), "little", signed=True)
    vt_size = int.from_bytes(at(vtable, 2), "little")
    slot = 4 + 2 * _TFLITE_DESCRIPTION
    if vt_size < slot + 2:
        return False
    field = int.from_bytes(at(vtable + slot, 2), "little")
    if field == 0:
        return False
    text = root + field + int.from_bytes(at(root + field, 4), "little")
    n = int.from_bytes(at(text, 4), "little")
    return n >= 9 and at(text + 4, 9) == b"shrinknet"
