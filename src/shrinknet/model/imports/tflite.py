"""TFLite model files -> an equivalent ``nn.Sequential`` (the ``tflite`` schema bindings; no TensorFlow).

Accepted: one subgraph with one input (float32, or int8 in a full-integer model: ``_input_type``) and
one output, and a chain of
    FULLY_CONNECTED and CONV_2D (fused NONE/RELU/RELU6/TANH), DEPTHWISE_CONV_2D with one input channel
    (an ordinary convolution with ``depth_multiplier`` outputs) or with channel multiplier 1 (a depthwise
    ``nn.Conv2d`` with ``groups`` = channels), MAX_POOL_2D, AVERAGE_POOL_2D (no padding),
    PAD (zeros) before a VALID convolution and PADV2 (the lowest float) before a VALID max pool, as
    shrinknet's own export writes padding SAME cannot express; RESHAPE, TRANSPOSE, LOGISTIC, TANH, RELU,
    RELU6, LEAKY_RELU, DEQUANTIZE of weights, a RESHAPE's shape computed from the input's SHAPE (Keras'
    Flatten, by TensorFlow's converter), QUANTIZE/
    DEQUANTIZE of activations (dropped), and a final SOFTMAX (beta 1), which is taken off.
Weights: float32, float16 and int8/int32 with quantization parameters (per tensor or per channel along
``quantized_dimension``: w = scale * (q - zero_point), the schema's QuantizationParameters) are all
made float32, and the notes say so.

Layouts. TFLite maps are NHWC and its kernels OHWI (CONV_2D) or 1HW(I*M) (DEPTHWISE_CONV_2D); the
Sequential is NCHW, so kernels are permuted, and a flatten of NHWC maps (Keras' Flatten, or a
FULLY_CONNECTED reading maps) becomes nn.Flatten with the next layer's input columns permuted from
(h, w, c) to (c, h, w) order: the same function. The input layout is the file's:
- a file that reads NCHW (litert-torch's, from a PyTorch model: it starts with TRANSPOSE [0, 2, 3, 1], or
  a RESHAPE when there is one channel) gets a Sequential that reads the same NCHW tensors;
- a file that reads NHWC images (Keras') gets ``shrinknet_input_layout = "NHWC"``: the user's (N, H, W, C)
  data are permuted once where they are loaded (``imports.to_model_layout``), and the notes say so.
We chose this over an input-permuting module because the parser then stays as it is, and the pruned
network is an ordinary NCHW network whose every layer shrinknet already knows.

Safety: every buffer is a slice of the file checked against the file's size, and a weight's declared
shape must match its buffer's byte count before it is viewed; a damaged file is one InputError.
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from ...errors import InputError
from .common import finish, read_bounded, tensor

SUPPORTED = ("FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D (1 input channel or multiplier 1), MAX_POOL_2D, AVERAGE_POOL_2D, "
             "PAD/PADV2 before them, RESHAPE, TRANSPOSE, LOGISTIC, TANH, RELU, RELU6, LEAKY_RELU, DEQUANTIZE, QUANTIZE, final SOFTMAX")
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}
_FUSED = {0: None, 1: nn.ReLU, 3: nn.ReLU6, 4: nn.Tanh}
_SHAPE_MATH = {"STRIDED_SLICE", "SLICE", "PACK", "CONCATENATION", "GATHER", "CAST", "SQUEEZE", "EXPAND_DIMS",
               "RESHAPE", "MUL", "REDUCE_PROD"}


def load(path) -> nn.Sequential:
    """Read the .tflite file at ``path``; InputError (one line) for anything shrinknet cannot take."""
    buf = read_bounded(path, ".tflite")
    try:
        return from_bytes(buf)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def from_bytes(buf: bytes) -> nn.Sequential:
    import tflite

    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError("not a .tflite file (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        return _Walk(model, buf).run()
    except InputError:
        raise
    except Exception as e:  # forged offsets: flatbuffers raises IndexError/struct.error/ValueError...
        raise InputError(f"not a readable .tflite file (damaged: {type(e).__name__}: {str(e)[:80]})") from None


def _builtin_code(c) -> int:
    """OperatorCode.builtin_code as stored. (``tflite``'s ``BuiltinCode()`` returns the deprecated int8
    field instead whenever the code is below 127, which is 0 (ADD) in files that set only the new field,
    as ai-edge-quantizer writes its DEQUANTIZE ops.)"""
    import flatbuffers

    o = c._tab.Offset(10)
    return c._tab.Get(flatbuffers.number_types.Int32Flags, o + c._tab.Pos) if o else 0


class _Walk:
    def __init__(self, model, buf: bytes):
        import tflite

        self.model, self.buf, self.tfl = model, buf, tflite
        self.names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        if model.SubgraphsLength() != 1:
            raise InputError(f"the file has {model.SubgraphsLength()} subgraphs; shrinknet reads one")
        self.g = model.Subgraphs(0)
        self.notes: list[str] = []
        self.mods: list[nn.Module] = []
        self.consts: dict[int, np.ndarray] = {}
        self.layout = "flat"  # of the current activation: "flat", "nhwc" maps, or "nchw" (transposed back)
        self.perm_next = None  # (C, H, W) of NHWC maps flattened: the next Linear's columns are (h, w, c)
        self.pad = None  # ((pad_h, pad_w), "zero"/"lowest", operator) of a PAD waiting for its conv or pool
        self.in_shape, self.in_layout = None, "flat"
        self.shape_tensors: set[int] = set()  # outputs of _shape_ops (a RESHAPE's computed target shape)

    # -- tensors -------------------------------------------------------------------------------
    def shape(self, i: int) -> tuple:
        return tuple(int(d) for d in self.g.Tensors(i).ShapeAsNumpy()) if self.g.Tensors(i).ShapeLength() else ()

    def const(self, i: int) -> np.ndarray | None:
        """Tensor i's constant value as float32 (dequantized), or None when it holds no data."""
        if i in self.consts:
            return self.consts[i]
        t = self.g.Tensors(i)
        b = self.model.Buffers(t.Buffer()) if 0 <= t.Buffer() < self.model.BuffersLength() else None
        if b is None:
            raise InputError(f"tensor {i} names buffer {t.Buffer()}, which does not exist: the file is damaged")
        if b.Offset() > 1:  # data after the flatbuffer (models over 2 GB): still inside this file
            if b.Offset() + b.Size() > len(self.buf):
                raise InputError(f"tensor {i}'s buffer lies past the end of the file: the file is damaged")
            raw = np.frombuffer(self.buf, np.uint8, b.Size(), b.Offset())
        elif b.DataLength():
            raw = b.DataAsNumpy()
        else:
            return None
        dt = _DTYPES.get(t.Type())
        shape = self.shape(i)
        n = math.prod(shape)
        if dt is None or any(d < 0 for d in shape) or n * np.dtype(dt).itemsize != raw.nbytes:
            raise InputError(f"tensor {i} ({t.Name().decode(errors='replace')}) declares shape {shape} of type "
                             f"{t.Type()} but its buffer holds {raw.nbytes} bytes: the file is damaged or unsupported")
        a = raw.view(dt).reshape(shape)
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float64)
            zp = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
            if scale.size > 1:  # per channel, along quantized_dimension
                s = [1] * a.ndim
                s[q.QuantizedDimension()] = -1
                scale, zp = scale.reshape(s), zp.reshape(s)
            a = (a.astype(np.float64) - zp) * scale  # w = scale * (q - zero_point)
            self.note(f"int8 weights dequantized to float32 (w = scale * (q - zero_point), "
                      f"{'per channel' if scale.size > 1 else 'per tensor'})")
        elif dt != np.float32 and dt in (np.float16,):
            self.note("float16 weights converted to float32")
        return np.asarray(a, np.float32)

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    # -- the chain -------------------------------------------------------------------------------
    def run(self) -> nn.Sequential:
        g = self.g
        if g.InputsLength() != 1 or g.OutputsLength() != 1:
            raise InputError(f"the model has {g.InputsLength()} inputs and {g.OutputsLength()} outputs; "
                             "shrinknet prunes networks with one of each")
        first, out = int(g.Inputs(0)), int(g.Outputs(0))
        self._input_type(first, out)
        ops = [g.Operators(k) for k in range(g.OperatorsLength())]
        folded = {k for k, op in enumerate(ops) if self._is_const_op(op)}  # weights' DEQUANTIZE ops
        folded |= self._shape_ops(ops)
        readers: dict[int, list] = {}
        for k, op in enumerate(ops):
            if k in folded:
                continue
            for i in op.InputsAsNumpy() if op.InputsLength() else ():
                readers.setdefault(int(i), []).append(k)
        for k, op in enumerate(ops):  # an operator that joins two activations is named first, wherever it is
            acts = self._act_inputs(op)
            if k not in folded and len(acts) > 1:
                raise InputError(f"operator {k} ({self.opname(op)}) combines two activations (tensors {acts}), as a "
                                 "residual or branch does: shrinknet prunes chains of layers only")
        cur, seen, shape = first, set(), self.shape(first)
        self.in_shape = shape[1:] if len(shape) > 2 else None
        self.layout = "nchw?" if len(shape) == 4 else "flat"
        while cur != out:
            rs = readers.get(cur, [])
            if not rs:
                raise InputError(f"tensor {cur} is read by no operator but is not the output: not a chain")
            if len(rs) > 1:
                raise InputError(f"operator {rs[1]} ({self.opname(ops[rs[1]])}) also reads tensor {cur}, which "
                                 f"operator {rs[0]} reads: the graph branches (shrinknet prunes chains only)")
            k = rs[0]
            seen.add(k)
            cur = self.step(k, ops[k], cur)
        left = [k for k in range(len(ops)) if k not in seen and k not in folded]
        if left:
            raise InputError(f"operator {left[0]} ({self.opname(ops[left[0]])}) is not on the chain from the input "
                             "to the output: shrinknet prunes chains of layers only")
        if self.mods and isinstance(self.mods[-1], nn.Softmax):
            self.mods.pop()
            self.note("final SOFTMAX taken off: the network's outputs are its logits (use loss cross_entropy)")
        if self.in_layout == "NHWC":
            self.note("the file reads NHWC images: give data as (N, H, W, C); shrinknet permutes it to (N, C, H, W)")
        return finish(self.mods, self.notes, self.in_shape, self.in_layout)

    def _input_type(self, first: int, out: int) -> None:
        """float32 input, or int8 input with its (scale, zero point): a full-integer model (TFLite's int8
        spec, as ai-edge-quantizer's static_wi8_ai8 and shrinknet's --integer-only write it). Its int8
        weights and int32 biases are dequantized like any quantized weight; the int8 quantization of the
        activations is dropped, so the parsed network reads and returns float (x = scale * (q - zero_point))."""
        t = self.g.Tensors(first)
        if t.Type() == 0:
            return
        q = t.Quantization()
        if t.Type() != 9 or q is None or q.ScaleLength() != 1:
            kind = {9: "int8 without one scale", 3: "uint8", 7: "int16", 1: "float16"}.get(t.Type(), f"type {t.Type()}")
            raise InputError(f"the model's input is {kind}; shrinknet reads float32 models and full-integer int8 ones "
                             "(TFLite's int8 spec, one input scale)")
        scale, zp = float(q.ScaleAsNumpy()[0]), int(q.ZeroPointAsNumpy()[0]) if q.ZeroPointLength() else 0
        oq = self.g.Tensors(out).Quantization()
        oscale = f"{float(oq.ScaleAsNumpy()[0]):.6g}" if oq is not None and oq.ScaleLength() == 1 else "?"
        self.note(f"full-integer model read as float: int8 weights and int32 biases dequantized, the int8 quantization "
                  f"of the activations dropped (the file reads q = round(x / {scale:.6g}) {'-' if zp < 0 else '+'} "
                  f"{abs(zp)}; the parsed network reads x and returns floats, which differ from the file's dequantized "
                  f"outputs by a few of its output steps of {oscale})")

    def opname(self, op) -> str:
        c = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(_builtin_code(c), c.DeprecatedBuiltinCode())  # the schema's rule for the two fields
        if code == self.tfl.BuiltinOperator.CUSTOM:
            return f"CUSTOM {c.CustomCode().decode(errors='replace') if c.CustomCode() else '?'}"
        return self.names.get(code, f"op code {code}")

    def _act_inputs(self, op) -> list[int]:
        return [int(i) for i in op.InputsAsNumpy() if i >= 0 and self._is_act(int(i))] if op.InputsLength() else []

    def _is_act(self, i: int) -> bool:
        """Tensor i carries an activation: it holds no constant and no shape computed by ``_shape_ops``."""
        return i not in self.shape_tensors and self.const(i) is None

    def _shape_ops(self, ops) -> set[int]:
        """Operators that only compute a RESHAPE's target shape: a SHAPE of an activation, then shape
        arithmetic on its output and constants (Keras' Flatten with a free batch dimension, as TensorFlow's
        converter writes it: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE). The RESHAPE itself is read from its
        tensors' declared shapes, so these are left out of the chain."""
        found: set[int] = set()
        for k, op in enumerate(ops):
            name = self.opname(op)
            ins = [int(i) for i in op.InputsAsNumpy() if i >= 0] if op.InputsLength() else []
            if name == "SHAPE" or (name in _SHAPE_MATH and ins and any(i in self.shape_tensors for i in ins)
                                   and all(i in self.shape_tensors or self.const(i) is not None for i in ins)):
                found.add(k)
                self.shape_tensors.update(int(o) for o in op.OutputsAsNumpy())
        return found

    def _is_const_op(self, op) -> bool:
        """A DEQUANTIZE of a weight (float16 or int8 stored, dequantized by the runtime before use)."""
        if self.opname(op) != "DEQUANTIZE" or op.InputsLength() != 1:
            return False
        w = self.const(int(op.Inputs(0)))
        if w is None:
            return False
        self.consts[int(op.Outputs(0))] = w
        return True

    def opts(self, op, cls):
        t = op.BuiltinOptions()
        o = getattr(self.tfl, cls)()
        if t is None:
            return None
        o.Init(t.Bytes, t.Pos)
        return o

    def fused(self, name: str, k: int, code: int) -> None:
        if code not in _FUSED:
            raise InputError(f"operator {k} ({name}) has fused activation {code}; shrinknet reads NONE, RELU, RELU6, TANH")
        if _FUSED[code] is not None:
            self.mods.append(_FUSED[code]())

    def step(self, k: int, op, cur: int) -> int:
        name = self.opname(op)
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.Outputs(0))
        acts = [i for i in ins if i >= 0 and self._is_act(i)]
        if len(acts) > 1:
            raise InputError(f"operator {k} ({name}) combines two activations (tensors {acts}), as a residual or "
                             "branch does: shrinknet prunes chains of layers only")
        handler = getattr(self, "op_" + name, None)
        if handler is None:
            raise InputError(f"operator {k} ({name}) is not supported: shrinknet reads {SUPPORTED}")
        if self.pad is not None and name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
            raise InputError(f"operator {self.pad[2]} (PAD) is followed by operator {k} ({name}); shrinknet reads "
                             "a PAD only right before a convolution or pooling")
        handler(k, op, ins, self.shape(cur), self.shape(out))
        return out

    def _first_maps(self, shape) -> None:
        """The first layer reads 4-D maps straight from the input: the file's input is NHWC images."""
        if self.layout == "nchw?":
            self.layout, self.in_layout = "nhwc", "NHWC"
            self.in_shape = (shape[3], shape[1], shape[2])

    # -- layers with weights -----------------------------------------------------------------------
    def op_FULLY_CONNECTED(self, k, op, ins, sin, sout):
        o = self.opts(op, "FullyConnectedOptions")
        if o is not None and o.WeightsFormat() != 0:
            raise InputError(f"operator {k} (FULLY_CONNECTED) has shuffled weights; shrinknet reads the default format")
        W = self.const(ins[1])
        b = self.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        if W is None or W.ndim != 2:
            raise InputError(f"operator {k} (FULLY_CONNECTED) has no constant 2-D weight")
        if self.layout in ("nhwc", "nchw?") and len(sin) == 4:
            self._first_maps(sin)
            self._flatten(sin)
        elif self.layout == "nchw" and len(sin) == 4:
            self.mods.append(nn.Flatten())
            self.layout = "flat"
        if self.perm_next is not None:  # columns in (h, w, c) order -> (c, h, w), as nn.Flatten of NCHW gives
            C, H, Wd = self.perm_next
            W = W.reshape(W.shape[0], H, Wd, C).transpose(0, 3, 1, 2).reshape(W.shape[0], -1)
            self.perm_next = None
        lin = nn.Linear(W.shape[1], W.shape[0], bias=b is not None)
        lin.weight = nn.Parameter(tensor(W))
        if b is not None:
            lin.bias = nn.Parameter(tensor(b))
        self.mods.append(lin)
        self.layout = "flat"
        self.fused("FULLY_CONNECTED", k, o.FusedActivationFunction() if o is not None else 0)

    def _pads(self, k, name, o, sin, sout, kh, kw, dh=1, dw=1) -> tuple:
        if self.pad is not None:  # a PAD / PADV2 right before: its pixels are this layer's padding
            (ph, pw), fill, kp = self.pad
            self.pad = None
            want = "lowest" if name == "MAX_POOL_2D" else "zero"
            if o.Padding() != self.tfl.Padding.VALID or fill != want or name == "AVERAGE_POOL_2D":
                raise InputError(f"operator {kp} (PAD) pads with {fill} values before operator {k} ({name}); shrinknet "
                                 "reads zeros before a VALID convolution and the lowest value before a VALID max pool")
            return (ph, pw)
        if o.Padding() == self.tfl.Padding.VALID:
            return (0, 0)
        pads = []
        for n_in, n_out, kk, s, d in ((sin[1], sout[1], kh, o.StrideH(), dh), (sin[2], sout[2], kw, o.StrideW(), dw)):
            total = max((n_out - 1) * s + (kk - 1) * d + 1 - n_in, 0)  # TFLite SAME: the extra pixel goes after
            if total % 2:
                raise InputError(f"operator {k} ({name}) pads SAME unevenly ({total} pixels); shrinknet reads "
                                 "symmetric padding (use an odd kernel, or VALID)")
            pads.append(total // 2)
        return tuple(pads)

    def op_CONV_2D(self, k, op, ins, sin, sout):
        self._conv(k, op, ins, sin, sout, "CONV_2D", "Conv2DOptions")

    def op_DEPTHWISE_CONV_2D(self, k, op, ins, sin, sout):
        self._conv(k, op, ins, sin, sout, "DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions")

    def _conv(self, k, op, ins, sin, sout, name, cls):
        self._first_maps(sin)
        if self.layout != "nhwc" or len(sin) != 4:
            raise InputError(f"operator {k} ({name}) does not read NHWC maps; shrinknet reads convolutions first")
        o = self.opts(op, cls)
        W = self.const(ins[1])
        b = self.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        if W is None or W.ndim != 4:
            raise InputError(f"operator {k} ({name}) has no constant 4-D kernel")
        groups = 1
        if name == "DEPTHWISE_CONV_2D":
            if sin[3] != 1 and W.shape[3] != sin[3]:
                raise InputError(f"operator {k} (DEPTHWISE_CONV_2D) reads {sin[3]} channels with channel multiplier "
                                 f"{W.shape[3] // max(sin[3], 1)}: shrinknet reads depthwise convolutions with "
                                 "multiplier 1 (or one input channel)")
            groups = sin[3]  # 1, or C with multiplier 1: filter c reads channel c alone
            W = W.transpose(3, 0, 1, 2)  # (1, H, W, C*M) -> (C*M, 1, H, W)
        else:
            W = W.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        dh, dw = o.DilationHFactor(), o.DilationWFactor()
        pad = self._pads(k, name, o, sin, sout, W.shape[2], W.shape[3], dh, dw)
        conv = nn.Conv2d(W.shape[1] * groups, W.shape[0], W.shape[2:], stride=(o.StrideH(), o.StrideW()), padding=pad,
                         dilation=(dh, dw), groups=groups, bias=b is not None)
        conv.weight = nn.Parameter(tensor(W))
        if b is not None:
            conv.bias = nn.Parameter(tensor(b))
        self.mods.append(conv)
        self.fused(name, k, o.FusedActivationFunction())

    # -- pooling, shapes, elementwise --------------------------------------------------------------
    def _pool(self, k, op, sin, sout, name):
        if self.layout != "nhwc":
            raise InputError(f"operator {k} ({name}) must read the maps of a convolution")
        o = self.opts(op, "Pool2DOptions")
        kh, kw = o.FilterHeight(), o.FilterWidth()
        pad = self._pads(k, name, o, sin, sout, kh, kw)
        return o, (kh, kw), (o.StrideH(), o.StrideW()), pad

    def op_MAX_POOL_2D(self, k, op, ins, sin, sout):
        o, kk, s, p = self._pool(k, op, sin, sout, "MAX_POOL_2D")
        self.mods.append(nn.MaxPool2d(kk, s, p))  # padding never wins a max: -inf and TFLite's skip agree
        self.fused("MAX_POOL_2D", k, o.FusedActivationFunction())

    def op_AVERAGE_POOL_2D(self, k, op, ins, sin, sout):
        o, kk, s, p = self._pool(k, op, sin, sout, "AVERAGE_POOL_2D")
        if any(p):
            raise InputError(f"operator {k} (AVERAGE_POOL_2D) pads SAME, averaging over fewer pixels at the edges; "
                             "shrinknet reads VALID average pooling")
        self.mods.append(nn.AvgPool2d(kk, s))
        self.fused("AVERAGE_POOL_2D", k, o.FusedActivationFunction())

    def _flatten(self, sin):
        """NHWC maps (1, H, W, C) flattened: nn.Flatten of the NCHW maps, next Linear's columns permuted."""
        self.mods.append(nn.Flatten())
        self.perm_next = (sin[3], sin[1], sin[2])
        self.layout = "flat"

    def op_PAD(self, k, op, ins, sin, sout, fill: str = "zero"):
        self._first_maps(sin)
        p = self.const(ins[1])
        if self.layout != "nhwc" or p is None or p.shape != (4, 2):
            raise InputError(f"operator {k} (PAD) must pad NHWC maps with constant paddings")
        p = p.astype(np.int64)
        if p[0].any() or p[3].any() or p[1, 0] != p[1, 1] or p[2, 0] != p[2, 1]:
            raise InputError(f"operator {k} (PAD) pads {p.tolist()}; shrinknet reads the same padding on both sides "
                             "of H and W only")
        self.pad = ((int(p[1, 0]), int(p[2, 0])), fill, k)

    def op_PADV2(self, k, op, ins, sin, sout):
        v = self.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else np.zeros(1, np.float32)
        v = float(np.asarray(v).reshape(-1)[0])
        fill = "zero" if v == 0 else "lowest" if v <= np.finfo(np.float32).min else f"{v:g}"
        self.op_PAD(k, op, ins[:2], sin, sout, fill)

    def op_TRANSPOSE(self, k, op, ins, sin, sout):
        perm = tuple(int(v) for v in self.const(ins[1]).astype(np.int64))
        if perm == (0, 2, 3, 1) and self.layout == "nchw?" and not self.mods:
            self.layout, self.in_layout = "nhwc", "NCHW"  # litert-torch: the PyTorch model's NCHW input
            self.in_shape = tuple(sin[1:])
            return
        if perm == (0, 3, 1, 2) and self.layout == "nhwc":
            self.layout = "nchw"  # back to PyTorch's layout before its flatten
            return
        raise InputError(f"operator {k} (TRANSPOSE) permutes {perm}; shrinknet reads the NCHW<->NHWC transposes "
                         "of the input and before a flatten")

    def op_RESHAPE(self, k, op, ins, sin, sout):
        if len(sout) == 4 and self.layout == "nchw?" and not self.mods and len(sin) == 4 and sin[1] == 1 \
                and sout == (sin[0], sin[2], sin[3], 1):
            self.layout, self.in_layout, self.in_shape = "nhwc", "NCHW", tuple(sin[1:])  # NCHW -> NHWC, one channel
            return
        if len(sout) == 4 and len(sin) == 2 and not self.mods and sout[3] == 1:
            self.layout, self.in_layout, self.in_shape = "nhwc", "flat", (1, sout[1], sout[2])  # rows -> one-channel images
            return
        if len(sout) == 2 and sout[1] == math.prod(sin[1:]):
            if self.layout == "nhwc" and len(sin) == 4:
                self._flatten(sin)
            elif len(sin) > 2:
                self.mods.append(nn.Flatten())  # of the input itself: in the file's own layout, as it is given
                if self.layout == "nchw?":
                    self.in_shape, self.in_layout = tuple(sin[1:]), "flat"
            self.layout = "flat"
            return
        raise InputError(f"operator {k} (RESHAPE) reshapes {sin} to {sout}; shrinknet reads a flatten to (N, features) "
                         "or a reshape of the input to one-channel images")

    def op_LOGISTIC(self, k, op, ins, sin, sout):
        self.mods.append(nn.Sigmoid())

    def op_TANH(self, k, op, ins, sin, sout):
        self.mods.append(nn.Tanh())

    def op_RELU(self, k, op, ins, sin, sout):
        self.mods.append(nn.ReLU())

    def op_RELU6(self, k, op, ins, sin, sout):
        self.mods.append(nn.ReLU6())

    def op_LEAKY_RELU(self, k, op, ins, sin, sout):
        self.mods.append(nn.LeakyReLU(self.opts(op, "LeakyReluOptions").Alpha()))

    def op_QUANTIZE(self, k, op, ins, sin, sout):
        self.note("activation QUANTIZE/DEQUANTIZE dropped: shrinknet computes in float")

    op_DEQUANTIZE = op_QUANTIZE

    def op_SOFTMAX(self, k, op, ins, sin, sout):
        o = self.opts(op, "SoftmaxOptions")
        if o is not None and o.Beta() != 1:
            raise InputError(f"operator {k} (SOFTMAX) has beta={o.Beta()}; shrinknet takes off a softmax with beta 1 only")
        self.mods.append(nn.Softmax(dim=-1))
