"""Export a (shrunk) network for a constrained device: ONNX, plain C99, or a safetensors file.

``export(model, path, format=..., dtype=...)`` parses ``model`` (an ``nn.Sequential`` of Linear
layers and elementwise activations, or a :class:`~shrinknet.network.Net`) and writes:

``format="onnx"`` -- one ``.onnx`` file at ``path`` (opset 17, IR version 8, so that older
    runtimes load it too). Graph input ``"input"``: float32 ``["batch", in_features]``; graph
    output ``"output"``: float32 ``["batch", out_features]``. Layer k is one ``Gemm`` node
    (``transB=1``) with initializers ``layers.K.weight`` (out, in) -- torch's layout -- and
    ``layers.K.bias`` (out,), followed by its activation as a standard op: ``Sigmoid``, ``Tanh``,
    ``Relu`` or ``Softplus``. ONNX's Softplus has no beta and no threshold, so torch's
    ``softplus(x; beta, threshold)`` is built exactly: ``bx = beta * x`` (``Mul``, only when
    beta != 1), ``Softplus(bx) / beta`` (``Div``, only when beta != 1), and
    ``Where(bx > threshold, x, ...)`` for torch's linear branch. A threshold of +inf (or beyond
    float32) has no linear branch: the plain formula is written, in C too; a NaN or -inf threshold
    or a beta that is not a positive float32 number is refused (ValueError). With ``meta`` the dictionary is
    stored as JSON under the model's metadata key ``"shrinknet.meta"``.

``format="c"`` -- ``path`` names the ``.c`` file (it must end in ``.c``); the header goes next to
    it with the same stem (``out/model.c`` -> ``out/model.h``). Plain C99 with no ``malloc``
    that needs only libm (``-lm``). The header declares
    ``void <prefix>_forward(const float *input, float *output);`` and defines
    ``<PREFIX>_INPUT_SIZE``, ``<PREFIX>_OUTPUT_SIZE``, ``<PREFIX>_FLASH_BYTES`` and
    ``<PREFIX>_RAM_BYTES``. Weights and biases are ``static const`` arrays in torch's row-major
    layout. The forward pass works in one static float scratch buffer in which consecutive
    hidden layers sit at opposite ends (ping-pong); it holds ``max(h_k + h_{k+1})`` floats
    (``h_0`` for one hidden layer), at most twice the widest hidden layer. ``input`` is only read
    by the first layer and ``output`` only written by the last, so the two may be the same
    buffer. The static buffer makes the function not reentrant: do not call it from two threads
    or from an interrupt handler that can interrupt itself. Every identifier other than
    ``<prefix>_forward`` is ``static``, so several exported networks link into one program.

``format="safetensors"`` -- a shrinknet model file, written by :func:`shrinknet.modelio.save_model`
    (``meta`` is stored in it), readable with :func:`shrinknet.modelio.load_model`.

``dtype`` is the storage type of weights and biases: ``"float32"`` or ``"float16"``. Arithmetic is
float32 in every format, and a float64 model is stored as float32. With ``"float16"``:

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
exactly the run's int8 values and scales. The arithmetic is float (the device needs an FPU;
integer-only inference is not offered):

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
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .files import replace_files, write_bytes
from .memory import network_bytes, ram_bytes
from .quantize import quantize_rows
from .network import Layer, Net, as_net

FORMATS = ("onnx", "c", "safetensors")
DTYPES = ("float32", "float16", "int8")
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version that came with opset 17; onnxruntime >= 1.12 loads it

_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
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
           prefix: str = "shrinknet", meta: dict | None = None, input_shape=None) -> ExportResult:
    """Write ``model`` (nn.Sequential or Net) to ``path`` as ONNX, C99 source, or safetensors.

    Args:
        model: feed-forward network of Linear layers and elementwise activations.
        path: the output file (for ``format="c"`` the ``.c`` file; the ``.h`` goes next to it).
        format: "onnx", "c" or "safetensors".
        dtype: storage type of weights and biases, "float32", "float16" or "int8" (ONNX and C:
            int8 weights with float32 scales per row or output channel, float32 biases).
        prefix: C only: names ``<prefix>_forward`` and the ``<PREFIX>_*`` macros; a C identifier.
        meta: free-form JSON-serialisable facts stored with the model (ONNX metadata, C comment,
            safetensors header).
        input_shape: the shape of one instance, e.g. (1, 20, 20), for a convolutional network
            whose input shape is not known from data or its model file (ONNX and C need it).

    Raises:
        ValueError: unknown format or dtype, a prefix that is not a C identifier, a C path not
            ending in ``.c``, or weights that are not finite at ``dtype``.
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
        if path.suffix != ".c":
            raise ValueError(
                f"C export writes a .c file and a .h file next to it; give a path ending in .c, got {path}"
            )
    elif path.suffix.lower() in {".c", ".h", ".onnx", ".safetensors"} - {f".{format}"}:
        raise ValueError(f"{format} export to {path}: the name says {path.suffix[1:]}; give a path ending in "
                         f".{format}")
    net = as_net(model)
    if getattr(net, "general", False):  # convolutions: layers/export.py
        return _export_general(net, path, format, dtype, prefix, meta, input_shape)
    flash = network_bytes(net, dtype)
    if format == "safetensors":
        from .modelio import save_model

        if dtype == "int8":
            raise ValueError("safetensors export stores float weights: use dtype float32 or float16 "
                             "(int8 storage is exported as onnx or c)")
        _stored(net, dtype)  # same finiteness check as the other formats
        save_model(path, net, meta, dtype=dtype)
        return ExportResult([path], flash, 0, format, dtype)
    if format == "onnx":
        data = _onnx_model(net, dtype, meta).SerializeToString()
        write_bytes(path, data)
        return ExportResult([path], flash, 0, format, dtype)
    header = path.with_suffix(".h")
    ram = ram_bytes(net)  # the scratch buffer: the two widest consecutive hidden layers, float32
    h_text, c_text = _c_sources(net, dtype, prefix, header.name, flash, ram, meta)
    replace_files([(header, h_text), (path, c_text)])  # both or neither, the old pair kept on failure
    return ExportResult([path, header], flash, ram, format, dtype)


def _export_general(net, path: Path, format: str, dtype: str, prefix: str, meta: dict | None,
                    input_shape) -> ExportResult:
    """Export of a general (CNN) network: each layer module writes its own ONNX node and C loops."""
    from . import __version__
    from .layers import export as lx

    if input_shape is not None:
        net.bind(tuple(input_shape))
    if net.in_shape is None and format != "safetensors":
        raise ValueError("the input shape of this convolutional network is not known: pass input_shape=(C, H, W)")
    flash = network_bytes(net, dtype)
    stored = _stored(net, dtype)
    if format == "safetensors":
        from .modelio import save_model

        save_model(path, net, meta, dtype=dtype)
        return ExportResult([path], flash, 0, format, dtype)
    if format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError as e:
            raise ImportError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from e
        model = lx.onnx_model(net, stored, dtype, meta, __version__, ONNX_OPSET, ONNX_IR_VERSION)
        write_bytes(path, model.SerializeToString())
        return ExportResult([path], flash, 0, format, dtype)
    header = path.with_suffix(".h")
    prelude = {"float16": _C_HALF, "int8": _C_INT8 + _C_LOAD_FLOAT}.get(dtype, _C_SINGLE)
    h_text, c_text, ram = lx.c_sources(net, stored, dtype, prefix, header.name, flash, meta, __version__,
                                       c_layer_arrays, _c_float, prelude)
    replace_files([(header, h_text), (path, c_text)])
    return ExportResult([path, header], flash, ram, format, dtype)


# -- shared -----------------------------------------------------------------------------------
def check_prefix(prefix: str) -> str:
    """``prefix`` if it can name C functions and macros (a C identifier), else ValueError."""
    if not isinstance(prefix, str) or not _C_IDENTIFIER.match(prefix):
        raise ValueError(
            f"prefix {prefix!r} is not a C identifier: use letters, digits and underscores, "
            "not starting with a digit"
        )
    return prefix


def _stored(net: Net, dtype: str) -> list[tuple[Tensor, Tensor | None]]:
    """(weight, bias) of every layer on the CPU at the storage ``dtype``; raises on non-finite."""
    tdtype = torch.float32 if dtype == "int8" else getattr(torch, dtype)
    out = []
    for k, layer in enumerate(net.layers):
        pair = tuple(None if t is None else t.detach().cpu().to(tdtype) for t in (layer.weight, layer.bias))
        for name, t in zip(("weight", "bias"), pair):
            if t is not None and not bool(torch.isfinite(t).all()):
                why = " (float16 holds magnitudes up to 65504)" if dtype == "float16" else ""
                raise ValueError(f"layer {k} {name} has values that are not finite at {dtype}{why}")
        out.append(pair)
    return out


def _softplus_threshold(act, k: int) -> float | None:
    """The softplus threshold as a float32 constant, or None for "never linear" (+inf, or beyond
    float32: beta * x in float32 never exceeds it). Raises ValueError for what no format can express."""
    big = float(np.finfo(np.float32).max)
    if not (math.isfinite(act.beta) and 0 < act.beta <= big):
        raise ValueError(f"layer {k}: softplus beta {act.beta!r} cannot be exported: it must be a positive "
                         "finite float32 number")
    t = float(act.threshold)
    if math.isnan(t) or t < -big:
        raise ValueError(f"layer {k}: softplus threshold {t!r} cannot be exported: use a finite float32 "
                         "threshold, or +inf for the plain formula")
    return None if t > big else t


def _describe(layer: Layer) -> str:
    act = layer.act.name
    if act == "softplus":
        act = f"softplus beta={layer.act.beta:g} threshold={layer.act.threshold:g}"
    return f"{layer.in_features} -> {layer.out_features}, {act}, {'bias' if layer.bias is not None else 'no bias'}"


# -- ONNX -------------------------------------------------------------------------------------
def _onnx_model(net: Net, dtype: str, meta: dict | None):
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package: {_INSTALL_HINT}") from e
    from . import __version__

    nodes, inits = [], []

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def constant(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        if array.dtype == np.float16:  # keep the arithmetic float32
            return node("Cast", [name], f"{name}.float32", to=TensorProto.FLOAT)
        return name

    def scalar(name: str, value: float) -> str:
        return constant(name, np.array(value, dtype=np.float32))

    x = "input"
    for k, (layer, (W, b)) in enumerate(zip(net.layers, _stored(net, dtype))):
        p = f"layers.{k}"
        if dtype == "int8":
            w = onnx_int8_weight(W, f"{p}.weight", inits, node)
        else:
            w = constant(f"{p}.weight", W.numpy())
        gemm_in = [x, w]
        if b is not None:
            gemm_in.append(constant(f"{p}.bias", b.numpy()))
        x = node("Gemm", gemm_in, f"{p}.linear", transB=1)
        act = layer.act
        if act.name in ("sigmoid", "tanh", "relu"):
            x = node({"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}[act.name], [x], f"{p}.{act.name}")
        elif act.name == "softplus":  # torch: x if beta*x > threshold else log(1 + exp(beta*x)) / beta
            threshold = _softplus_threshold(act, k)
            bx, sp = x, None
            if act.beta != 1:
                beta = scalar(f"{p}.softplus.beta", act.beta)
                bx = node("Mul", [x, beta], f"{p}.softplus.beta_x")
                sp = node("Div", [node("Softplus", [bx], f"{p}.softplus.of_beta_x"), beta], f"{p}.softplus.smooth")
            else:
                sp = node("Softplus", [x], f"{p}.softplus.smooth")
            if threshold is None:  # never linear: the plain formula
                x = node("Identity", [sp], f"{p}.softplus")
            else:
                above = node("Greater", [bx, scalar(f"{p}.softplus.threshold", threshold)], f"{p}.softplus.linear")
                x = node("Where", [above, x, sp], f"{p}.softplus")
    nodes[-1].output[0] = "output"  # the last node's result is the graph output

    graph = helper.make_graph(
        nodes, "shrinknet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", net.in_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", net.out_features])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION,
        producer_name="shrinknet", producer_version=__version__,
        doc_string="; ".join(f"layer {k}: {_describe(layer)}" for k, layer in enumerate(net.layers))
        + f"; weights stored as {dtype}",
    )
    if meta:
        helper.set_model_props(model, {"shrinknet.meta": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_int8_weight(W: Tensor, name: str, inits: list, node) -> str:
    """The int8 form of weight W (out, ...): initializers ``name`` (int8, W's shape),
    ``name_scale`` (float32, one per output unit) and ``name_zero_point`` (int8 zeros), and a
    ``DequantizeLinear`` along axis 0 whose output (returned) is the float weight the layer's node
    takes. ``node(op, inputs, name, **attrs)`` adds a node. One form for MLPs and CNNs."""
    from onnx import numpy_helper

    q, scale = quantize_rows(W)
    inits.append(numpy_helper.from_array(q.numpy(), name))
    inits.append(numpy_helper.from_array(scale.numpy(), f"{name}_scale"))
    inits.append(numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}_zero_point"))
    return node("DequantizeLinear", [name, f"{name}_scale", f"{name}_zero_point"], f"{name}_dequantized", axis=0)


# -- C ----------------------------------------------------------------------------------------
def c_layer_arrays(k: int, W: Tensor, b: Tensor | None, dtype: str) -> str:
    """The C arrays of layer k: ``layer<k>_weight`` (and ``layer<k>_bias``) at ``dtype``; at int8
    ``int8_t layer<k>_weight``, ``float layer<k>_scale`` (one per output unit) and a float bias."""
    if dtype == "int8":
        q, scale = quantize_rows(W)
        return (_c_array(f"layer{k}_weight", q, "int8") + _c_array(f"layer{k}_scale", scale, "float32", "float")
                + ("" if b is None else _c_array(f"layer{k}_bias", b, "float32", "float")))
    return _c_array(f"layer{k}_weight", W, dtype) + ("" if b is None else _c_array(f"layer{k}_bias", b, dtype))


def _c_array(name: str, t: Tensor, dtype: str, ctype: str = "weight_t") -> str:
    """``static const weight_t name[n] = {...};`` holding ``t`` flattened row-major at ``dtype``."""
    flat = t.reshape(-1).numpy()
    if dtype == "int8":
        items, per_line = [str(int(v)) for v in flat], 16
    elif dtype == "float16":
        items, per_line = [f"0x{v:04x}" for v in flat.view(np.uint16)], 12
    else:  # shortest decimal that reads back as the same float32
        items, per_line = [f"{v!s}f" for v in flat.astype(np.float32)], 8
    lines = ",\n    ".join(", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    return f"static const {ctype} {name}[{len(items)}] = {{\n    {lines}\n}};\n"


def _c_float(v: float) -> str:
    return f"{np.float32(v)!s}f"


_C_HALF = """\
#if FLT_MANT_DIG != 24 || FLT_MAX_EXP != 128
#error "this file decodes float16 weights into IEEE binary32 floats"
#endif

typedef uint16_t weight_t; /* IEEE binary16 bit patterns */

/* IEEE binary16 bits -> float, exactly. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    float f;
    if (exponent == 0x1fu) {          /* infinity or NaN */
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {       /* normal */
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {       /* zero */
        bits = sign;
    } else {                          /* subnormal: normalise */
        exponent = 113u;
        while (!(mantissa & 0x400u)) {
            mantissa <<= 1;
            exponent--;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

#define LOAD(w) half_to_float(w)
"""

_C_SINGLE = """\
typedef float weight_t;

#define LOAD(w) (w)
"""

_C_INT8 = """\
typedef int8_t weight_t; /* weights; biases and per-row scales are float */
"""

_C_LOAD_FLOAT = """\
#define LOAD(v) (v) /* biases are float */
"""

_C_DENSE_INT8 = """\
/* y[i] = b[i] + sum_j (q[i * n_in + j] * s[i]) * x[j]; b may be NULL. */
static void dense(const weight_t *q, const float *s, const float *b, int n_in, int n_out, const float *x, float *y)
{
    int i, j;
    for (i = 0; i < n_out; i++) {
        const weight_t *row = q + (size_t)i * (size_t)n_in;
        float acc = b ? b[i] : 0.0f;
        for (j = 0; j < n_in; j++)
            acc += ((float)row[j] * s[i]) * x[j];
        y[i] = acc;
    }
}
"""

_C_DENSE = """\
/* y[i] = b[i] + sum_j w[i * n_in + j] * x[j]; b may be NULL. */
static void dense(const weight_t *w, const weight_t *b, int n_in, int n_out, const float *x, float *y)
{
    int i, j;
    for (i = 0; i < n_out; i++) {
        const weight_t *row = w + (size_t)i * (size_t)n_in;
        float acc = b ? LOAD(b[i]) : 0.0f;
        for (j = 0; j < n_in; j++)
            acc += LOAD(row[j]) * x[j];
        y[i] = acc;
    }
}
"""

_C_ACTIVATIONS = {  # emitted only when used: -Wall warns about unused static functions
    "sigmoid": """\
static void act_sigmoid(float *y, int n)
{
    int i;
    for (i = 0; i < n; i++)
        y[i] = 1.0f / (1.0f + expf(-y[i]));
}
""",
    "tanh": """\
static void act_tanh(float *y, int n)
{
    int i;
    for (i = 0; i < n; i++)
        y[i] = tanhf(y[i]);
}
""",
    "relu": """\
static void act_relu(float *y, int n)
{
    int i;
    for (i = 0; i < n; i++)
        y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}
""",
    "softplus_plain": """\
/* log(1 + exp(beta * x)) / beta (torch's softplus with no linear threshold). */
static void act_softplus_plain(float *y, int n, float beta)
{
    int i;
    for (i = 0; i < n; i++)
        y[i] = log1pf(expf(beta * y[i])) / beta;
}
""",
    "softplus": """\
/* As torch: x where beta * x > threshold, else log(1 + exp(beta * x)) / beta. */
static void act_softplus(float *y, int n, float beta, float threshold)
{
    int i;
    for (i = 0; i < n; i++) {
        float bx = beta * y[i];
        if (!(bx > threshold))
            y[i] = log1pf(expf(bx)) / beta;
    }
}
""",
}


def c_header(prefix: str, network: list[str], dtype: str, flash: int, ram: int, scratch_note: str, meta: dict | None,
             in_size: int, out_size: int, input_note: str = "") -> tuple[str, str]:
    """(banner, header) of the C export: the banner comment describing the network (``network``
    lines), its flash and RAM bytes and ``meta`` (it opens both files), and the ``<prefix>.h`` text
    with it, the size macros and the forward declaration. One header for every network kind (MLPs
    here, convolutional networks in layers/export.py)."""
    from . import __version__

    macro = prefix.upper()
    lines = [
        f"Generated by shrinknet {__version__}; do not edit, export again instead.",
        *network,
        f"Flash: {flash} bytes of " + ("int8 weights, float32 scales and float32 biases (int8)" if dtype == "int8"
                                       else f"weights and biases ({dtype})") + ", not counting code.",
        f"RAM:   {ram} bytes of scratch ({scratch_note}), plus the caller's input and output.",
    ]
    if meta:  # JSON may escape "/" as "\/": keeps "*/" from closing the comment
        lines.append("Meta:  " + json.dumps(meta).replace("*/", "*\\/"))
    banner = "/*\n" + "".join(f" * {line}".rstrip() + "\n" for line in lines) + " */\n"
    guard = f"{macro}_H"
    return banner, f"""{banner}
#ifndef {guard}
#define {guard}

#define {macro}_INPUT_SIZE {in_size}
#define {macro}_OUTPUT_SIZE {out_size}
#define {macro}_FLASH_BYTES {flash}
#define {macro}_RAM_BYTES {ram}

#ifdef __cplusplus
extern "C" {{
#endif

/* output[{macro}_OUTPUT_SIZE] = network(input[{macro}_INPUT_SIZE]){input_note}.
 * input and output may be the same buffer. Not reentrant: uses a static scratch buffer. */
void {prefix}_forward(const float *input, float *output);

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""


def _c_sources(net: Net, dtype: str, prefix: str, header_name: str, flash: int, ram: int,
               meta: dict | None) -> tuple[str, str]:
    """(header text, source text) of the C export."""
    scratch = ram // 4
    banner, header = c_header(
        prefix,
        ["Network (int8 weights with one float32 scale per row, float32 biases):" if dtype == "int8"
         else f"Network (weights and biases stored as {dtype}):",
         *(f"  layer {k}: {_describe(layer)}" for k, layer in enumerate(net.layers))],
        dtype, flash, ram, f"one static buffer of {scratch} floats", meta, net.in_features, net.out_features)

    arrays, calls = [], []
    src, offset = "input", 0
    for k, (layer, (W, b)) in enumerate(zip(net.layers, _stored(net, dtype))):
        head = f"/* layer {k}: {_describe(layer)}; weight[i * {layer.in_features} + j]: input j -> neuron i */\n"
        arrays.append(head + c_layer_arrays(k, W, b, dtype))
        last = k == len(net.layers) - 1
        # hidden layers alternate between the two ends of the scratch buffer
        offset = 0 if k % 2 == 0 else scratch - layer.out_features
        dst = "output" if last else f"scratch + {offset}"
        bias = f"layer{k}_bias" if b is not None else "NULL"
        scale = f"layer{k}_scale, " if dtype == "int8" else ""
        calls.append(f"dense(layer{k}_weight, {scale}{bias}, {layer.in_features}, {layer.out_features}, {src}, {dst});")
        act = layer.act
        if act.name == "softplus":
            threshold = _softplus_threshold(act, k)
            if threshold is None:  # never linear: the plain formula
                calls.append(f"act_softplus_plain({dst}, {layer.out_features}, {_c_float(act.beta)});")
            else:
                calls.append(f"act_softplus({dst}, {layer.out_features}, {_c_float(act.beta)}, {_c_float(threshold)});")
        elif act.name != "identity":
            calls.append(f"act_{act.name}({dst}, {layer.out_features});")
        src = dst
    used = {layer.act.name if layer.act.name != "softplus" or _softplus_threshold(layer.act, k) is not None
            else "softplus_plain" for k, layer in enumerate(net.layers)}
    activations = [text for name, text in _C_ACTIVATIONS.items() if name in used]
    includes = ["<math.h>", "<stddef.h>"]
    if dtype == "float16":
        includes = ["<float.h>", *includes, "<stdint.h>", "<string.h>"]
    elif dtype == "int8":
        includes = [*includes, "<stdint.h>"]
    body = "\n    ".join(calls)
    source = (
        banner
        + "\n"
        + "".join(f"#include {inc}\n" for inc in includes)
        + f'\n#include "{header_name}"\n\n'
        + {"float16": _C_HALF, "int8": _C_INT8}.get(dtype, _C_SINGLE)
        + "\n"
        + "\n".join(arrays)
        + f"\nstatic float scratch[{scratch}];\n\n"
        + (_C_DENSE_INT8 if dtype == "int8" else _C_DENSE)
        + "".join("\n" + a for a in activations)
        + f"\nvoid {prefix}_forward(const float *input, float *output)\n{{\n    {body}\n}}\n"
    )
    return header, source
