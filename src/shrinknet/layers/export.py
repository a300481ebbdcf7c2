"""ONNX graph and C99 source of a general (CNN) network, built from each layer module's own
``onnx`` and ``c_code`` pieces (see :mod:`shrinknet.export` for the formats and conventions).

C: batch 1, NCHW (a 1-D map is C x L), weights ``static const`` in torch's layout (at int8:
``int8_t`` values and one ``float`` scale per output channel/feature, each weight used as
``(float)q * scale``), no dynamic allocation. Every intermediate map lives in one static float
scratch buffer, consecutive maps at opposite ends (ping-pong); activations work in place. The
buffer holds exactly ``SeqNet.ram_floats()`` floats: the two largest consecutive maps side by side.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .net import SeqNet


class _Graph:
    def __init__(self, dtype: str = "float32"):
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.np, self.TP = helper, numpy_helper, TensorProto
        self.nodes, self.inits = [], []
        self.dtype = dtype  # storage of the weights: float32, float16 or int8

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.np.from_array(array, name))
        if array.dtype == np.float16:  # keep the arithmetic float32
            return self.node("Cast", [name], f"{name}.float32", to=self.TP.FLOAT)
        return name

    def scalar(self, name: str, value: float) -> str:
        return self.constant(name, np.array(value, dtype=np.float32))

    def weight(self, name: str, W) -> str:
        """A layer's weight tensor (out, ...) at the storage dtype: a constant, or at int8 the
        int8 values, per-output-unit scales and the DequantizeLinear that feeds the layer's node."""
        if self.dtype == "int8":
            from ..export import onnx_int8_weight

            return onnx_int8_weight(W, name, self.inits, self.node)
        return self.constant(name, W.numpy())


def _needs_flatten(net: SeqNet, k: int) -> bool:
    if net.blocks[k].param.kind != "linear":
        return False
    if k == 0:
        return len(net.in_shape) > 1
    return net.blocks[k - 1].param.kind == "conv"


def onnx_model(net: SeqNet, stored, dtype: str, meta: dict | None, version: str, opset: int, ir: int):
    """The ONNX model of ``net`` with weights ``stored`` [(W, b)] at ``dtype``."""
    import onnx

    g = _Graph(dtype)
    shapes = net.map_shapes()
    x = "input"
    for k, (b, (W, bias)) in enumerate(zip(net.blocks, stored)):
        p = f"layers.{k}"
        if _needs_flatten(net, k):
            x = g.node("Flatten", [x], f"{p}.flatten", axis=1)
        x = b.param.onnx(g, x, p, net.dims, W, bias)
        for i, op in enumerate(b.tail):
            if op.kind == "act":
                x = op.onnx(g, x, f"{p}.{i}")
            else:
                x = op.onnx(g, x, f"{p}.{i}", net.dims, shapes[k][i])
    g.nodes[-1].output[0] = "output"
    h = g.helper
    graph = h.make_graph(
        g.nodes, "shrinknet",
        [h.make_tensor_value_info("input", g.TP.FLOAT, ["batch", *net.in_shape])],
        [h.make_tensor_value_info("output", g.TP.FLOAT, ["batch", net.out_features])],
        initializer=g.inits,
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", opset)], ir_version=ir,
        producer_name="shrinknet", producer_version=version,
        doc_string="; ".join(f"layer {k}: {d}" for k, d in enumerate(net.describe())) + f"; weights stored as {dtype}",
    )
    if meta:
        h.set_model_props(model, {"shrinknet.meta": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model


def c_sources(net: SeqNet, stored, dtype: str, prefix: str, header_name: str, flash: int, meta: dict | None,
              version: str, c_arrays, c_float, weight_prelude: str) -> tuple[str, str, int]:
    """(header, source, RAM bytes) of the C export of ``net``. ``c_arrays(k, W, b, dtype)`` writes
    layer k's arrays (``export.c_layer_arrays``): ``layer<k>_weight``, ``layer<k>_bias`` and at
    int8 ``layer<k>_scale``, one float per output unit, with each weight used as ``(float)q * scale``."""
    from ..export import c_header  # export.py reaches this module lazily too: no import cycle

    scratch = net.ram_floats()
    ram = 4 * scratch
    banner, header = c_header(
        prefix,
        [f"Network ({_stored_as(dtype)}; input {'x'.join(map(str, net.in_shape))}, NCHW, batch 1):",
         *(f"  layer {k}: {d}" for k, d in enumerate(net.describe()))],
        dtype, flash, ram, f"one static buffer of {scratch} floats: the two largest consecutive feature maps of a "
        "batch-1 forward pass", meta, math.prod(net.in_shape), net.out_features, ", input in NCHW order")
    shapes = net.map_shapes()
    cur_shape = (net.in_shape[0], 1, net.in_shape[1]) if net.dims == 1 else tuple(net.in_shape)
    if len(cur_shape) == 1:
        cur_shape = (cur_shape[0], 1, 1)
    arrays, body = [], []
    src = "input"
    n_map = 0
    last = len(net.blocks) - 1

    def slot(size: int) -> str:
        nonlocal n_map
        off = 0 if n_map % 2 == 0 else scratch - size
        n_map += 1
        return f"(scratch + {off})"

    def c3(s):
        return s if len(s) == 3 else (s[0], 1, 1)

    for k, (b, (W, bias)) in enumerate(zip(net.blocks, stored)):
        arrays.append(f"/* layer {k}: {net.describe()[k]} */\n" + c_arrays(k, W, bias, dtype))
        out_shape = c3(shapes[k][0])
        dst = "output" if k == last else slot(math.prod(out_shape))
        body.append(b.param.c_code(src, dst, _c_weight(k, dtype), None if bias is None else f"layer{k}_bias",
                                   cur_shape, out_shape))
        src, cur_shape = dst, out_shape
        for i, op in enumerate(b.tail):
            new_shape = c3(shapes[k][i + 1])
            if op.kind == "act":
                expr = op.c_expr("v[i]", c_float)
                if expr is not None:
                    body.append(f"""{{ /* {op.describe()}, in place */
        float *v = {src};
        int i;
        for (i = 0; i < {math.prod(new_shape)}; i++)
            v[i] = {expr};
    }}""")
                continue
            dst = slot(math.prod(new_shape))
            body.append(op.c_code(src, dst, cur_shape, new_shape))
            src, cur_shape = dst, new_shape
    includes = ["<math.h>", "<stddef.h>"]
    if dtype == "float16":
        includes = ["<float.h>", *includes, "<stdint.h>", "<string.h>"]
    elif dtype == "int8":
        includes = [*includes, "<stdint.h>"]
    source = (
        banner + "\n" + "".join(f"#include {inc}\n" for inc in includes) + f'\n#include "{header_name}"\n\n'
        + weight_prelude + "\n" + "\n".join(arrays)
        + f"\nstatic float scratch[{scratch}];\n\n"
        + f"void {prefix}_forward(const float *input, float *output)\n{{\n    "
        + "\n    ".join(body) + "\n}\n"
    )
    return header, source, ram


def _stored_as(dtype: str) -> str:
    if dtype == "int8":
        return "int8 weights with one float32 scale per output channel/feature, float32 biases"
    return f"weights and biases stored as {dtype}"


def _c_weight(k: int, dtype: str):
    """``weight(index, unit)``: the C expression of layer k's weight at ``index`` of output unit
    ``unit`` as a float: ``LOAD(w[index])``, at int8 ``(float)q[index] * scale[unit]`` -- the same
    float32 number torch's dequantized weight holds."""
    if dtype == "int8":
        return lambda index, unit: f"((float)layer{k}_weight[{index}] * layer{k}_scale[{unit}])"
    return lambda index, unit: f"LOAD(layer{k}_weight[{index}])"
