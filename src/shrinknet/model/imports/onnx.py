"""ONNX model files -> an equivalent ``nn.Sequential`` (read with the ``onnx`` package; never run).

Accepted: one graph input, one output, and a chain of
    Gemm (transA = 0; Y = alpha A B' + beta C, spec "Gemm"), MatMul [+ Add of a constant],
    Conv (group 1), Relu, Sigmoid, Tanh, LeakyRelu, Clip(0, 6) = ReLU6 (Clip(0, inf) = ReLU), Softplus,
    MaxPool, AveragePool, GlobalAveragePool, Flatten (axis 1), Reshape to (N, features),
    BatchNormalization (as nn.BatchNorm, which the parser folds), Identity and Dropout (dropped),
    a final Softmax/LogSoftmax (taken off: the network's outputs are then its logits).
Weights: float32, float16 or float64 initializers (float16/64 converted to float32, said in the notes);
constant sub-graphs on weights (Constant, Cast, Identity, Transpose, Reshape, DequantizeLinear) are
folded; int8/uint8 QDQ weights (DequantizeLinear, per tensor or per axis: x = (q - zero_point) * scale)
are dequantized, and an activation's QuantizeLinear -> DequantizeLinear pair (fake quantization) is
dropped; both are said in the notes. A Reshape of the graph input to (N, C, H, W) before the first
layer (e.g. [N, 784] -> [N, 1, 28, 28]) sets the input shape: flat rows are reshaped as before.

Safety: ``onnx.load_from_string`` never loads external data (refused), and every initializer's
declared shape is checked against the values the file holds before numpy materializes it, so a
forged shape cannot make shrinknet allocate more than the file's size.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from ...errors import InputError
from .common import count, finish, read_bounded, tensor

SUPPORTED = ("Gemm, MatMul+Add, Conv (group 1), Relu, Sigmoid, Tanh, LeakyRelu, Clip(0,6), Softplus, MaxPool, "
             "AveragePool, GlobalAveragePool, Flatten, Reshape to flat, BatchNormalization, Identity, Dropout")
_FOLDABLE = {"Constant", "Cast", "Identity", "Transpose", "Reshape", "DequantizeLinear", "Unsqueeze", "Squeeze",
             "Gather", "Concat"}


class _ShapeOf:
    """The value of ``Shape(x)`` for an activation x: only its batch entry is ever used (``x.view(x.size(0),
    -1)`` exports as Shape -> Gather(0) -> Unsqueeze -> Concat -> Reshape). Gather(0) of it is Reshape's 0,
    "copy this dimension from the input", which at position 0 is the batch: the same reshape."""

    def __init__(self, start: int):
        self.start = start


def load(path) -> nn.Sequential:
    """Read the ONNX file at ``path``; InputError (one line) for anything shrinknet cannot take."""
    import onnx
    from google.protobuf.message import DecodeError

    data = read_bounded(path, "ONNX")
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a readable ONNX file ({why})") from None
    try:
        return from_model(model, len(data))
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, UnicodeError) as e:
        # a damaged file that still parses as protobuf: a missing attribute, a bytes name, a bad enum
        raise InputError(f"{path}: the ONNX graph is malformed ({type(e).__name__}: {str(e)[:80]})") from None


def _where(node) -> str:
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


_FIELD = {1: "float_data", 2: "int32_data", 3: "int32_data", 4: "int32_data", 5: "int32_data", 6: "int32_data",
          7: "int64_data", 9: "int32_data", 10: "int32_data", 11: "double_data", 12: "uint64_data",
          13: "uint64_data", 16: "int32_data"}


def _array(t, budget: int) -> np.ndarray:
    """An initializer as numpy, after checking that the file holds every value its shape declares."""
    from onnx import TensorProto, helper, numpy_helper

    name = f"initializer {t.name!r}"
    if t.data_location == TensorProto.EXTERNAL or t.external_data:
        raise InputError(f"{name} is stored in an external data file; save the model as one file "
                         "(onnx.save_model(m, path, save_as_external_data=False))")
    if t.HasField("segment"):
        raise InputError(f"{name} is a segment of a split tensor; save the model as one file")
    n = count(t.dims, name)
    if t.data_type not in _FIELD or t.data_type == TensorProto.STRING:
        raise InputError(f"{name} has data type {helper.tensor_dtype_to_string(t.data_type)}; "
                         "weights must be float or int8/uint8 (quantized)")
    itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    if n * itemsize > budget:
        raise InputError(f"{name} declares {n} values, more than the file's {budget} bytes can hold: the file is damaged")
    held = len(t.raw_data) // itemsize if t.raw_data else len(getattr(t, _FIELD[t.data_type]))
    if t.raw_data and len(t.raw_data) != n * itemsize or held != n:
        raise InputError(f"{name} declares shape {tuple(t.dims)} ({n} values) but holds {held}: the file is damaged")
    return numpy_helper.to_array(t)


def _fold(node, ins: list[np.ndarray], budget: int) -> np.ndarray:
    """The value of a node whose inputs are all constants (weights' own small sub-graphs)."""
    import onnx

    a = _attrs(node)
    op = node.op_type
    if op == "Constant":
        if "value" not in a:
            raise InputError(f"{_where(node)} has no tensor value; shrinknet reads Constant(value=tensor)")
        return _array(a["value"], budget)
    x = ins[0]
    if op == "Gather":
        idx = np.asarray(ins[1])
        if isinstance(x, _ShapeOf):
            if np.any(idx + x.start != 0):
                raise ValueError("only the batch size of an activation's Shape can be used")
            return np.zeros(idx.shape, np.int64)
        return np.take(x, idx, axis=a.get("axis", 0))
    if any(isinstance(v, _ShapeOf) for v in ins):
        raise ValueError("only the batch size of an activation's Shape can be used")
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in ins], axis=a.get("axis", 0))
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
    if op == "Transpose":
        return np.transpose(x, a.get("perm"))
    if op == "Reshape":
        shape = [int(s) for s in ins[1]]
        shape = [x.shape[i] if s == 0 and not a.get("allowzero") else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op in ("Unsqueeze", "Squeeze"):
        axes = [int(v) for v in (ins[1] if len(ins) > 1 else a.get("axes", []))]
        if op == "Unsqueeze":
            for ax in sorted(v % (x.ndim + len(axes)) for v in axes):
                x = np.expand_dims(x, ax)
            return x
        return np.squeeze(x, tuple(axes) if axes else None)
    # DequantizeLinear (spec): y = (x - x_zero_point) * x_scale, per tensor or along ``axis``
    scale = ins[1].astype(np.float64)
    zp = ins[2].astype(np.float64) if len(ins) > 2 else np.zeros_like(scale)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[a.get("axis", 1) % x.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x.astype(np.float64) - zp) * scale).astype(np.float32)


def from_model(model, budget: int) -> nn.Sequential:
    """The chain of ``model.graph`` as an ``nn.Sequential`` (module docstring); ``budget`` is the
    file's size in bytes, the bound on any initializer."""
    g = model.graph
    notes: list[str] = []
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        consts[t.name] = _array(t, budget)
    for t in g.sparse_initializer:
        raise InputError(f"sparse initializer {t.values.name!r} is not supported; store weights dense")
    chain = []
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            raise InputError(f"{_where(node)} is a custom op (domain {node.domain!r}); shrinknet reads {SUPPORTED}")
        ins = [i for i in node.input if i]
        if node.op_type == "Shape" and ins:
            consts[node.output[0]] = _ShapeOf(_attrs(node).get("start", 0))
            continue
        if node.op_type in _FOLDABLE and all(i in consts for i in ins):
            try:
                consts[node.output[0]] = _fold(node, [consts[i] for i in ins], budget)
            except (ValueError, IndexError, KeyError, TypeError) as e:
                raise InputError(f"{_where(node)} on constants cannot be evaluated ({e})") from None
            if node.op_type == "DequantizeLinear" and not any("dequantized" in s for s in notes):
                notes.append("int8 QDQ weights dequantized to float32 (DequantizeLinear: (q - zero_point) * scale)")
            continue
        chain.append(node)
    dtypes = {str(v.dtype) for v in consts.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"
              and v.dtype != np.float32}
    if dtypes:
        notes.append(f"{'/'.join(sorted(dtypes))} weights converted to float32")
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise InputError(f"the graph has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                         "shrinknet prunes networks with one input")
    if len(g.output) != 1:
        raise InputError(f"the graph has {len(g.output)} outputs; shrinknet prunes networks with one output")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    return _Walk(chain, consts, notes, inputs[0].name, dims).run(g.output[0].name)


class _Walk:
    """One pass along the chain, from the graph input to its output, appending torch modules."""

    def __init__(self, chain, consts, notes, first: str, dims: list):
        self.chain, self.consts, self.notes = chain, consts, notes
        self.readers: dict[str, list] = {}
        for node in chain:
            for i in node.input:
                if i and i not in consts:
                    self.readers.setdefault(i, []).append(node)
        self.cur = first
        self.rank = len(dims) or None  # rank of the current activation (None: unknown)
        self.in_shape = tuple(dims[1:]) if len(dims) > 2 and all(d for d in dims[1:]) else None
        self.features = dims[1] if len(dims) == 2 else None
        self.mods: list[nn.Module] = []

    def run(self, output: str) -> nn.Sequential:
        self.output = output
        for node in self.chain:  # a node that joins two activations is named first, wherever it is
            acts = [i for i in node.input if i and i not in self.consts]
            if node.op_type in ("Concat", "Sum") or len(acts) > 1:
                self.step(node)  # refuses, naming it
        seen = set()
        while self.cur != output:
            readers = self.readers.get(self.cur, [])
            if not readers:
                raise InputError(f"tensor {self.cur!r} is read by no node but is not the graph output: not a chain")
            if len(readers) > 1:
                raise InputError(f"{_where(readers[1])} reads {self.cur!r}, which {_where(readers[0])} also reads: "
                                 "the graph branches (shrinknet prunes chains of layers only)")
            node = readers[0]
            seen.add(id(node))
            self.step(node)
        if self.readers.get(output):
            raise InputError(f"{_where(self.readers[output][0])} reads the graph output: not a chain")
        left = [n for n in self.chain if id(n) not in seen]
        if left:
            raise InputError(f"{_where(left[0])} is not on the chain from the input to the output: "
                             "shrinknet prunes chains of layers only")
        mods = [m for m in self.mods if m is not None]
        if mods and isinstance(mods[-1], (nn.Softmax, nn.LogSoftmax)):
            mods.pop()
            self.notes.append(f"final {self.last_softmax} taken off: the network's outputs are its logits "
                              "(use loss cross_entropy)")
        return finish(mods, self.notes, self.in_shape)

    def const(self, node, k: int, what: str, optional: bool = False):
        name = node.input[k] if k < len(node.input) else ""
        if not name:
            if optional:
                return None
            raise InputError(f"{_where(node)} has no {what}")
        if name not in self.consts:
            raise InputError(f"{_where(node)} takes its {what} {name!r} from another layer, not from the weights: "
                             "shrinknet prunes chains of layers with constant weights only")
        return self.consts[name]

    def step(self, node) -> None:
        op, a = node.op_type, _attrs(node)
        acts = [i for i in node.input if i and i not in self.consts]
        if op in ("Concat", "Sum") or len(acts) > 1:
            kind = {"Concat": "concatenates", "Add": "adds", "Sum": "adds", "Mul": "multiplies"}.get(op, "combines")
            raise InputError(f"{_where(node)} {kind} two activations ({', '.join(acts)}), as a residual or branch "
                             "does: shrinknet prunes chains of layers only")
        if acts[0] != node.input[0] and op not in ("Add", "Mul"):
            raise InputError(f"{_where(node)} reads the activation as its weight input: not supported")
        extra = [o for o in node.output[1:] if o and self.readers.get(o)]
        if extra:
            raise InputError(f"{_where(node)}'s second output {extra[0]!r} is used; shrinknet reads its first only")
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            raise InputError(f"{_where(node)} is not supported: shrinknet reads {SUPPORTED}")
        handler(node, a)
        self.cur = node.output[0]

    # -- layers with weights -----------------------------------------------------------------
    def op_Gemm(self, node, a):
        if a.get("transA", 0):
            raise InputError(f"{_where(node)} has transA=1 (it mixes instances); shrinknet reads transA=0")
        B = self.const(node, 1, "weight B")
        if B.ndim != 2:
            raise InputError(f"{_where(node)} has a {B.ndim}-D weight; Gemm's B is 2-D")
        W = (B if a.get("transB", 0) else B.T) * a.get("alpha", 1.0)  # Linear's (out, in)
        C = self.const(node, 2, "bias C", optional=True)
        self._linear(node, W, None if C is None else np.broadcast_to(C * a.get("beta", 1.0), (W.shape[0],)))

    def op_MatMul(self, node, a):
        B = self.const(node, 1, "weight")
        if B.ndim != 2:
            raise InputError(f"{_where(node)} has a {B.ndim}-D weight; shrinknet reads (in, out) matrices")
        self._linear(node, B.T, None)
        self.matmul = self.mods[-1]

    def op_Add(self, node, a):
        lin = self.mods[-1] if self.mods else None
        if getattr(self, "matmul", None) is not lin or lin is None or lin.bias is not None:
            raise InputError(f"{_where(node)} adds a constant that is not the bias of a MatMul right before it: "
                             "not supported")
        b = self.consts[[i for i in node.input if i in self.consts][0]]
        try:
            b = np.broadcast_to(b, (1, lin.out_features)).reshape(-1)
        except ValueError:
            raise InputError(f"{_where(node)} adds a constant of shape {b.shape} to {lin.out_features} outputs") from None
        lin.bias = nn.Parameter(tensor(b))

    def _linear(self, node, W, b):
        if self.rank is not None and self.rank != 2:
            raise InputError(f"{_where(node)} reads a {self.rank}-D tensor; add a Flatten before it")
        reshape, n = getattr(self, "flat_features", None) or (None, W.shape[1])
        if n != W.shape[1]:
            raise InputError(f"{_where(reshape)} reshapes to rows of {n} but {_where(node)} reads {W.shape[1]}: "
                             "shrinknet reads a Reshape that flattens each instance")
        self.flat_features = None
        lin = nn.Linear(W.shape[1], W.shape[0], bias=b is not None)
        lin.weight = nn.Parameter(tensor(W))
        if b is not None:
            lin.bias = nn.Parameter(tensor(b))
        self.mods.append(lin)
        self.rank = 2

    def op_Conv(self, node, a):
        W = self.const(node, 1, "weight")
        b = self.const(node, 2, "bias", optional=True)
        d = W.ndim - 2
        if d not in (1, 2):
            raise InputError(f"{_where(node)} is a {d}-D convolution; shrinknet reads 1-D and 2-D")
        if a.get("group", 1) != 1:
            raise InputError(f"{_where(node)} has group={a['group']}; shrinknet reads group=1 only")
        k = tuple(W.shape[2:])
        pad = self._pads(node, a, d, k, a.get("dilations", [1] * d))
        Conv = nn.Conv1d if d == 1 else nn.Conv2d
        conv = Conv(W.shape[1], W.shape[0], k, stride=tuple(a.get("strides", [1] * d)), padding=pad,
                    dilation=tuple(a.get("dilations", [1] * d)), bias=b is not None)
        conv.weight = nn.Parameter(tensor(W))
        if b is not None:
            conv.bias = nn.Parameter(tensor(b))
        self.mods.append(conv)
        self.rank = d + 2

    def _pads(self, node, a, d: int, k: tuple, dil) -> tuple:
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if any(s != 1 for s in a.get("strides", [1] * d)) or any((kk - 1) * dd % 2 for kk, dd in zip(k, dil)):
                raise InputError(f"{_where(node)} has auto_pad={auto} with uneven padding; give explicit pads")
            return tuple((kk - 1) * dd // 2 for kk, dd in zip(k, dil))
        if auto == "VALID":
            return (0,) * d
        p = list(a.get("pads", [0] * 2 * d))
        if p[:d] != p[d:]:
            raise InputError(f"{_where(node)} pads {p} unevenly (begin != end); shrinknet reads symmetric padding")
        return tuple(p[:d])

    def op_BatchNormalization(self, node, a):
        if a.get("training_mode", 0):
            raise InputError(f"{_where(node)} is in training mode; export the model in eval mode")
        scale, B, mean, var = (self.const(node, i, w) for i, w in enumerate(("scale", "B", "mean", "var"), 1))
        BN = nn.BatchNorm2d if self.rank == 4 else nn.BatchNorm1d
        bn = BN(scale.shape[0], eps=a.get("epsilon", 1e-5)).eval()
        bn.weight, bn.bias = nn.Parameter(tensor(scale)), nn.Parameter(tensor(B))
        bn.running_mean.copy_(tensor(mean))
        bn.running_var.copy_(tensor(var))
        self.mods.append(bn)

    # -- elementwise ---------------------------------------------------------------------------
    def op_Relu(self, node, a):
        self.mods.append(nn.ReLU())

    def op_Sigmoid(self, node, a):
        self.mods.append(nn.Sigmoid())

    def op_Tanh(self, node, a):
        self.mods.append(nn.Tanh())

    def op_Softplus(self, node, a):
        self.mods.append(nn.Softplus())

    def op_LeakyRelu(self, node, a):
        self.mods.append(nn.LeakyReLU(a.get("alpha", 0.01)))

    def op_Clip(self, node, a):
        lo = self.const(node, 1, "min", optional=True)
        hi = self.const(node, 2, "max", optional=True)
        lo = float(lo) if lo is not None else a.get("min", -math.inf)
        hi = float(hi) if hi is not None else a.get("max", math.inf)
        if lo == 0 and hi == 6:
            self.mods.append(nn.ReLU6())
        elif lo == 0 and hi == math.inf:
            self.mods.append(nn.ReLU())
        else:
            raise InputError(f"{_where(node)} clips to [{lo}, {hi}]; shrinknet reads Clip(0, 6) (ReLU6) and Clip(0) (ReLU)")

    def op_Identity(self, node, a):
        pass

    def op_Dropout(self, node, a):
        pass

    def op_QuantizeLinear(self, node, a):
        nxt = self.readers.get(node.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "DequantizeLinear":
            raise InputError(f"{_where(node)} is not followed by a DequantizeLinear; shrinknet reads float "
                             "networks and QDQ graphs only")
        # y = saturate(round(x / scale) + zero_point) maps x to [(qmin - zp) scale, (qmax - zp) scale]; a pair
        # whose range starts at 0 is a ReLU that the quantizer folded into it (onnxruntime's tools remove the
        # Relu node then): that clamp is kept as nn.ReLU. The rounding and the upper clamp are dropped.
        scale = self.const(node, 1, "scale")
        zp = self.const(node, 2, "zero_point", optional=True)
        qmin = 0 if zp is None or zp.dtype == np.uint8 else int(np.iinfo(zp.dtype).min)
        lo = (qmin - (0 if zp is None else zp.astype(np.float64))) * scale.astype(np.float64)
        keeps_sign = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                      nn.AdaptiveAvgPool2d, nn.Flatten)  # a non-negative input stays non-negative
        last = next((m for m in reversed(self.mods) if not isinstance(m, keeps_sign)), None)
        if np.all(lo == 0) and self.mods and not isinstance(last, (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Softmax)):
            if nxt[0].output[0] == self.output:  # a calibration that saw no negative output, more likely than a ReLU
                self.note("the output's QuantizeLinear range starts at 0 (the file clamps outputs at 0); not kept as a "
                          "ReLU: the network's outputs may be negative")
            else:
                self.mods.append(nn.ReLU())
                self.note("QuantizeLinear ranges that start at 0 after a layer (a ReLU folded in by the quantizer) "
                          "kept as ReLU")
        self.note("activation QuantizeLinear/DequantizeLinear pairs (fake quantization) dropped: shrinknet "
                  "computes in float")

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def op_DequantizeLinear(self, node, a):
        pass  # the second half of an activation's QDQ pair (op_QuantizeLinear)

    def op_Softmax(self, node, a):
        self.mods.append(nn.Softmax(dim=-1))
        self.last_softmax = node.op_type

    op_LogSoftmax = op_Softmax

    # -- pooling and shapes ----------------------------------------------------------------------
    def _pool(self, node, a):
        if self.rank not in (3, 4):
            raise InputError(f"{_where(node)} must read the maps of a convolution")
        if a.get("ceil_mode", 0):
            raise InputError(f"{_where(node)} has ceil_mode=1; shrinknet reads ceil_mode=0")
        d = self.rank - 2
        if "kernel_shape" not in a:
            raise InputError(f"{_where(node)} has no kernel_shape")
        k = tuple(a["kernel_shape"])
        return d, k, tuple(a.get("strides", [1] * d)), self._pads(node, a, d, k, a.get("dilations", [1] * d))

    def op_MaxPool(self, node, a):
        d, k, s, p = self._pool(node, a)
        Pool = nn.MaxPool1d if d == 1 else nn.MaxPool2d
        self.mods.append(Pool(k, s, p, dilation=tuple(a.get("dilations", [1] * d))))

    def op_AveragePool(self, node, a):
        d, k, s, p = self._pool(node, a)
        if any(p) and not a.get("count_include_pad", 0):
            raise InputError(f"{_where(node)} pads with count_include_pad=0; shrinknet reads count_include_pad=1 "
                             "(or no padding)")
        self.mods.append((nn.AvgPool1d if d == 1 else nn.AvgPool2d)(k, s, p))  # no padding: either count is the same

    def op_GlobalAveragePool(self, node, a):
        if self.rank not in (3, 4):
            raise InputError(f"{_where(node)} must read the maps of a convolution")
        self.mods.append((nn.AdaptiveAvgPool1d if self.rank == 3 else nn.AdaptiveAvgPool2d)(1))

    def op_Flatten(self, node, a):
        if a.get("axis", 1) != 1:
            raise InputError(f"{_where(node)} has axis={a['axis']}; shrinknet reads Flatten(axis=1)")
        self._flat(node)

    def _flat(self, node):
        if self.rank == 2:
            return  # already (N, features)
        self.mods.append(nn.Flatten())  # first of all: the input's instance shape is bound from the data
        self.rank = 2

    def op_Reshape(self, node, a):
        shape = [int(s) for s in self.const(node, 1, "shape")]
        if len(shape) == 2:  # (N, features): a flatten; the next Linear must read exactly that many
            self._flat(node)
            self.flat_features = (node, shape[1]) if shape[1] > 0 else None
            return
        if not self.mods and self.rank == 2 and len(shape) in (3, 4) and shape[0] in (0, -1):
            rest = shape[1:]
            if rest.count(-1) == 1 and self.features:
                known = math.prod(s for s in rest if s != -1)
                rest[rest.index(-1)] = self.features // known if known else -1
            if any(s <= 0 for s in rest) or self.features and math.prod(rest) != self.features:
                raise InputError(f"{_where(node)} reshapes the input to {shape}, which does not fit its "
                                 f"{self.features} features")
            self.in_shape, self.rank = tuple(rest), len(shape)
            return
        raise InputError(f"{_where(node)} reshapes to {shape}; shrinknet reads a Reshape to (N, features) or of "
                         "the input to (N, C, H, W)")
