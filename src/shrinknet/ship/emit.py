"""ONNX graph and C99 source of every network -- an MLP's ``network.Net`` and a general
``SeqNet`` alike -- built from each layer module's own pieces: ``onnx`` (its node) and ``c_code``
or ``c_expr`` (its loop or elementwise expression) in linear.py, conv.py, pool.py and act.py.
:mod:`shrinknet.export` validates, picks the format and writes the files; its docstring documents
the formats and conventions.

Weights enter as the file stores them (:func:`stored_weights`, the one place they are prepared
at the storage dtype: float32, float16, or int8 values with one float32 scale per output unit).

C: batch 1, NCHW (a 1-D map is C x L; an MLP's layers are C = features, H = W = 1), weights
``static const`` in torch's layout (at int8: ``int8_t`` values and one ``float`` scale per output
channel/feature, each weight used as ``(float)q * scale``), no dynamic allocation. Every
intermediate map lives in one static float scratch buffer, consecutive maps at opposite ends
(ping-pong); activations work in place. The buffer holds exactly ``Network.ram_floats()`` floats:
the two largest consecutive maps side by side (an MLP's hidden layers).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..store.quantize import quantize_rows
from . import names

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version that came with opset 17; onnxruntime >= 1.12 loads it


# -- weights as stored ------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """One layer's weights as an exported file holds them."""

    weight: Tensor  # the layer's weight shape at the storage dtype; at int8 the int8 values q
    bias: Tensor | None  # (out,) at the storage dtype; float32 at int8
    scale: Tensor | None = None  # int8 only: float32 (out,); the device computes with q * scale per output unit
    tail: tuple = ()  # the Stored of each weighted tail op (depthwise conv), in tail order
    proj: "Stored | None" = None  # the projection of a residual addition into this layer (layers/resnet.py)


def stored_weights(net, dtype: str) -> list[Stored]:
    """Every layer's weights on the CPU as stored at ``dtype`` ("float32", "float16" or "int8": weights
    quantized per output unit by :func:`shrinknet.quantize.quantize_rows`, biases float32). Raises
    ValueError naming the layer for weights that are not finite at ``dtype``."""
    tdtype = torch.float32 if dtype == "int8" else getattr(torch, dtype)

    def one(where: str, weight: Tensor, bias: Tensor | None) -> Stored:
        W, bias = (None if t is None else t.detach().cpu().to(tdtype) for t in (weight, bias))
        for name, t in (("weight", W), ("bias", bias)):
            if t is not None and not bool(torch.isfinite(t).all()):
                why = " (float16 holds magnitudes up to 65504)" if dtype == "float16" else ""
                raise ValueError(f"{where} {name} has values that are not finite at {dtype}{why}")
        if dtype == "int8":
            q, scale = quantize_rows(W)
            return Stored(q, bias, scale)
        return Stored(W, bias)

    out = []
    for k, b in enumerate(net.blocks):
        tail = tuple(one(f"layer {k} depthwise op {i}", op.weight, op.bias) for i, op in b.weighted)
        s = one(f"layer {k}", b.weight, b.bias)
        a = getattr(net, "add_of", {}).get(k)
        proj = None if a is None or a.proj is None else one(f"layer {k} projection", a.proj.weight, a.proj.bias)
        out.append(Stored(s.weight, s.bias, s.scale, tail, proj))
    return out


def _stored_as(dtype: str) -> str:
    if dtype == "int8":
        return "int8 weights with one float32 scale per output channel/feature, float32 biases"
    return f"weights and biases stored as {dtype}"


# -- ONNX -------------------------------------------------------------------------------------
class _Graph:
    """The nodes and initializers of the graph being built; what the layer modules' ``onnx`` add to."""

    def __init__(self):
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.np, self.TP = helper, numpy_helper, TensorProto
        self.nodes, self.inits = [], []

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [names.onnx_name(name)], name=name, **attrs))
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.np.from_array(array, names.onnx_name(name)))
        if array.dtype == np.float16:  # keep the arithmetic float32
            return self.node("Cast", [name], f"{name}.float32", to=self.TP.FLOAT)
        return name

    def scalar(self, name: str, value: float) -> str:
        return self.constant(name, np.array(value, dtype=np.float32))

    def weight(self, name: str, W: Tensor, scale: Tensor | None) -> str:
        """A layer's stored weight (out, ...) as the float tensor its node takes: a constant, or
        at int8 (``scale`` given) initializers ``name`` (int8 values q), ``name_scale`` (float32,
        one per output unit) and ``name_zero_point`` (int8 zeros) into a ``DequantizeLinear``
        along axis 0."""
        if scale is None:
            return self.constant(name, W.numpy())
        self.inits.append(self.np.from_array(W.numpy(), name))
        self.inits.append(self.np.from_array(scale.numpy(), f"{name}_scale"))
        self.inits.append(self.np.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}_zero_point"))
        return self.node("DequantizeLinear", [name, f"{name}_scale", f"{name}_zero_point"], f"{name}_dequantized",
                         axis=0)


def onnx_model(net, stored: list[Stored], dtype: str, meta: dict | None):
    """The ONNX model of ``net`` holding ``stored`` (:func:`stored_weights` at ``dtype``): graph
    input ``"input"`` ["batch", *in_shape], output ``"output"`` ["batch", out_features]; layer k's
    nodes and initializers are named ``layers.K.*``."""
    import onnx

    from ..version import __version__

    g = _Graph()
    shapes = net.map_shapes()
    x = "input"
    outs = []  # every layer's output (a residual addition reads one: layers/resnet.py)
    for k, (b, w) in enumerate(zip(net.blocks, stored)):
        p = f"layers.{k}"
        if net._flatten_before(k):  # a Linear reading a map: nn.Flatten's place in to_sequential too
            x = g.node("Flatten", [x], f"{p}.flatten", axis=1)
        x = b.param.onnx(g, x, p, net.dims, w)
        tail_w = iter(w.tail)
        a = getattr(net, "add_of", {}).get(k)
        for i, op in enumerate([*b.tail, None]):
            if a is not None and i == a.at:  # y = branch + x, or + projection(x): one Add node
                skip = outs[a.src] if a.proj is None else a.proj.onnx(g, outs[a.src], f"{p}.projection", net.dims, w.proj)
                x = g.node("Add", [x, skip], f"{p}.add")
            if op is None:
                break
            if getattr(op, "weighted", False):
                x = op.onnx(g, x, f"{p}.{i}", net.dims, next(tail_w))
            elif op.kind == "act":
                x = op.onnx(g, x, f"{p}.{i}", k)
            else:
                x = op.onnx(g, x, f"{p}.{i}", net.dims, shapes[k][i])
        outs.append(x)
    g.nodes[-1].output[0] = "output"  # the last node's result is the graph output
    h = g.helper
    graph = h.make_graph(
        g.nodes, "shrinknet",
        [h.make_tensor_value_info("input", g.TP.FLOAT, ["batch", *net.in_shape])],
        [h.make_tensor_value_info("output", g.TP.FLOAT, ["batch", net.out_features])],
        initializer=g.inits,
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION,
        producer_name="shrinknet", producer_version=__version__,
        doc_string=names.onnx_text("; ".join(f"layer {k}: {d}" for k, d in enumerate(net.describe()))
                                   + f"; weights stored as {dtype}"),
    )
    if meta:
        h.set_model_props(model, {"shrinknet.meta": names.onnx_text(json.dumps(meta))})
    onnx.checker.check_model(model, full_check=True)
    return model


# -- C ----------------------------------------------------------------------------------------
def c_float(v: float) -> str:
    """A float32 constant in C: the shortest decimal that reads back as the same float32."""
    return f"{np.float32(v)!s}f"


def _c_array(name: str, t: Tensor, ctype: str) -> str:
    """``static const <ctype> name[n] = {...};`` holding ``t`` flattened row-major: int8 values,
    IEEE binary16 bit patterns (float16) or float32 decimals, as ``t`` holds them."""
    flat = t.reshape(-1).numpy()
    if flat.dtype == np.int8:
        items, per_line = [str(int(v)) for v in flat], 16
    elif flat.dtype == np.float16:
        items, per_line = [f"0x{v:04x}" for v in flat.view(np.uint16)], 12
    else:
        items, per_line = [c_float(v) for v in flat], 8
    lines = ",\n    ".join(", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    return f"static const {ctype} {name}[{len(items)}] = {{\n    {lines}\n}};\n"


def _c_arrays(k, w: Stored) -> str:
    """Layer k's arrays: ``layer<k>_weight`` (``weight_t``), at int8 ``layer<k>_scale`` (float, one
    per output unit), and ``layer<k>_bias`` (``weight_t``; float at int8). ``k`` may be "K_I" for
    the weighted tail op I of layer K (a depthwise conv)."""
    text = _c_array(f"layer{k}_weight", w.weight, "weight_t")
    if w.scale is not None:
        text += _c_array(f"layer{k}_scale", w.scale, "float")
    if w.bias is not None:
        text += _c_array(f"layer{k}_bias", w.bias, "float" if w.scale is not None else "weight_t")
    return text


def _c_weight(k, dtype: str):
    """``weight(index, unit)``: the C expression of layer k's weight at ``index`` of output unit
    ``unit`` as a float: ``LOAD(w[index])``, at int8 ``(float)q[index] * scale[unit]`` -- the same
    float32 number torch's dequantized weight holds."""
    if dtype == "int8":
        return lambda index, unit: f"((float)layer{k}_weight[{index}] * layer{k}_scale[{unit}])"
    return lambda index, unit: f"LOAD(layer{k}_weight[{index}])"


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

_C_PRELUDE = {  # the storage type of weights and how a stored number becomes a float
    "float32": """\
typedef float weight_t;

#define LOAD(w) (w)
""",
    "float16": _C_HALF,
    "int8": """\
typedef int8_t weight_t; /* weights; biases and the scales (one per output unit) are float */

#define LOAD(v) (v) /* biases are float */
""",
}

_C_INCLUDES = {
    "float32": ["<math.h>", "<stddef.h>"],
    "float16": ["<float.h>", "<math.h>", "<stddef.h>", "<stdint.h>", "<string.h>"],
    "int8": ["<math.h>", "<stddef.h>", "<stdint.h>"],
}


def c_header(prefix: str, network: list[str], dtype: str, flash: int, ram: int, scratch_note: str, meta: dict | None,
             in_size: int, out_size: int, input_note: str = "") -> tuple[str, str]:
    """(banner, header) of the C export: the banner comment describing the network (``network``
    lines), its flash and RAM bytes and ``meta`` (it opens both files), and the ``<prefix>.h`` text
    with it, the size macros and the forward declaration."""
    from ..version import __version__

    macro = names.c_prefix(prefix).upper()
    lines = [
        f"Generated by shrinknet {__version__}; do not edit, export again instead.",
        *network,
        f"Flash: {flash} bytes of " + ("int8 weights, float32 scales and float32 biases (int8)" if dtype == "int8"
                                       else f"weights and biases ({dtype})") + ", not counting code.",
        f"RAM:   {ram} bytes of scratch ({scratch_note}), plus the caller's input and output.",
    ]
    if meta:
        lines.append("Meta:  " + json.dumps(meta))
    banner = "/*\n" + "".join(f" * {names.c_comment(line)}".rstrip() + "\n" for line in lines) + " */\n"
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


def c_sources(net, stored: list[Stored], dtype: str, prefix: str, header_name: str, flash: int,
              meta: dict | None) -> tuple[str, str, int]:
    """(header, source, RAM bytes) of the C export of ``net`` holding ``stored``
    (:func:`stored_weights` at ``dtype``); ``flash`` is stated in the banner and header."""
    scratch = net.ram_floats()
    ram = 4 * scratch
    maps = len(net.in_shape) > 1  # the input is a map (NCHW order), not a row of features
    shape = "x".join(map(str, net.in_shape)) + (", NCHW" if maps else " features")
    banner, header = c_header(
        prefix,
        [f"Network ({_stored_as(dtype)}; input {shape}, batch 1):",
         *(f"  layer {k}: {d}" for k, d in enumerate(net.describe()))],
        dtype, flash, ram, f"one static buffer of {scratch} floats: the two largest consecutive maps of a "
        "batch-1 forward pass", meta, math.prod(net.in_shape), net.out_features,
        ", input in NCHW order" if maps else "")
    shapes = net.map_shapes()
    n_map = 0

    def slot(size: int) -> str:
        """The next intermediate map's place: the two ends of the scratch buffer in turn."""
        nonlocal n_map
        off = 0 if n_map % 2 == 0 else scratch - size
        n_map += 1
        return f"(scratch + {off})"

    def c3(s: tuple) -> tuple:  # (C, H, W); a row of features is C x 1 x 1
        return s if len(s) == 3 else (s[0], 1, 1)

    cur_shape = c3((net.in_shape[0], 1, net.in_shape[1]) if net.dims == 1 else tuple(net.in_shape))
    arrays, body = [], []
    src = "input"
    last = len(net.blocks) - 1
    for k, (b, w) in enumerate(zip(net.blocks, stored)):
        arrays.append(f"/* {names.c_comment(f'layer {k}: {net.describe()[k]}')} */\n" + _c_arrays(k, w)
                      + "".join(_c_arrays(f"{k}_{i}", tw) for (i, _), tw in zip(b.weighted, w.tail)))
        out_shape = c3(shapes[k][0])
        dst = "output" if k == last else slot(math.prod(out_shape))
        body.append(b.param.c_code(src, dst, _c_weight(k, dtype), None if w.bias is None else f"layer{k}_bias",
                                   cur_shape, out_shape))
        src, cur_shape = dst, out_shape
        for i, op in enumerate(b.tail):
            new_shape = c3(shapes[k][i + 1])
            if op.kind == "act":
                expr = op.c_expr("v[i]", c_float, k)
                if expr is not None:
                    body.append(f"""{{ /* {names.c_comment(op.describe())}, in place */
        float *v = {src};
        int i;
        for (i = 0; i < {math.prod(new_shape)}; i++)
            v[i] = {expr};
    }}""")
                continue
            dst = slot(math.prod(new_shape))
            if getattr(op, "weighted", False):  # a depthwise conv: its own arrays layer<k>_<i>_*
                body.append(op.c_code(src, dst, _c_weight(f"{k}_{i}", dtype),
                                      None if op.bias is None else f"layer{k}_{i}_bias", cur_shape, new_shape))
            else:
                body.append(op.c_code(src, dst, cur_shape, new_shape))
            src, cur_shape = dst, new_shape
    source = (
        banner + "\n" + "".join(f"#include {inc}\n" for inc in _C_INCLUDES[dtype]) + f'\n#include "{names.c_include_name(header_name)}"\n\n'
        + _C_PRELUDE[dtype] + "\n" + "\n".join(arrays)
        + f"\nstatic float scratch[{scratch}];\n\n"
        + f"void {prefix}_forward(const float *input, float *output)\n{{\n    "
        + "\n    ".join(body) + "\n}\n"
    )
    return header, source, ram
