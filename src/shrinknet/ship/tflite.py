"""``.tflite`` export -- float32 or full-integer int8 -- written with the TFLite schema bindings (the
``tflite`` package) and ``flatbuffers``, without TensorFlow; and a run in TFLite Micro's Python
interpreter (``tflite-micro``) reporting its arena bytes.

``tflite_model(net)`` writes the float32 network; ``tflite_model(inet)`` the full-integer one
(:class:`shrinknet.store.integer.IntegerNet`: int8 input and output with their scale and zero
point, int8 weights per output channel with ``quantized_dimension = 0``, int32 biases at
``s_in * s_w``; TFLM computes exactly :meth:`IntegerNet.forward`). Operators:

* a Linear: ``FULLY_CONNECTED`` with its ReLU/ReLU6 fused; after a map, a ``RESHAPE`` to
  [1, H*W*C] first, and the weight columns reordered from torch's (c, h, w) to NHWC's (h, w, c);
* a convolution: ``CONV_2D`` (filter OHWI), padding ``VALID`` (0), ``SAME`` where TFLite's SAME
  pads exactly as torch does, else a ``PAD`` (zeros; the int8 zero point) and ``VALID``;
* a depthwise convolution (channel multiplier 1): ``DEPTHWISE_CONV_2D`` with ``depth_multiplier``
  1, filter [1, kh, kw, C] (int8: per-channel scales on ``quantized_dimension`` 3), its padding as a
  convolution's and its ReLU/ReLU6 fused;
* global average pooling (``AdaptiveAvgPool(1)``, or adaptive pooling with even windows):
  ``AVERAGE_POOL_2D`` with the window the whole map (not ``MEAN``: store/integer.py says why);
* pooling: ``MAX_POOL_2D`` / ``AVERAGE_POOL_2D`` (no dilation) with a following ReLU/ReLU6 fused;
  max pooling's padding as SAME where it matches, else a ``PADV2`` with the lowest value (-128 /
  the lowest float32: never a window's maximum); average pooling only without padding;
* a residual addition (layers/resnet.py's ``Add``; ``shrinknet.Residual``): ``ADD`` of the branch's map
  and the skip tensor (the earlier operator's output, kept), a ReLU/ReLU6 right after it fused; a
  projection skip (a convolution, typically 1x1 stride 2) as a ``CONV_2D`` on the skip tensor first;
* sigmoid and tanh as ``LOGISTIC`` and ``TANH`` (int8: output scale 1/256, zero point -128 and
  1/128, 0, as the spec requires).

Tensors are NHWC as TFLite expects: the input of a 2-D CNN is [1, H, W, C] -- feed an NCHW
image ``x`` as ``x.permute(0, 2, 3, 1)`` (numpy: ``x.transpose(0, 2, 3, 1)``) -- a 1-D CNN's
[1, 1, L, C] (``x.permute(0, 2, 1)[:, None]``), an MLP's [1, features]. The output is [1, out].
Batch 1 (TFLM's kernels).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.parse import as_net
from ..store.integer import IntAdd, IntClamp, IntegerNet, IntLut, IntParam, IntPool, QParams
from ..util.files import write_bytes
from .export import ExportResult
from .tflite_writer import _mod, _Writer

FUSED = {"identity": 0, "relu": 1, "relu6": 3}  # tflite ActivationFunctionType NONE, RELU, RELU6
_INSTALL = "pip install 'shrinknet[tflite]'"


@dataclass
class Layer:
    """One TFLite operator-to-be, in shrinknet's terms (maps (C, H, W), weights in torch's layout)."""

    kind: str  # "fc", "conv", "depthwise", "maxpool", "avgpool", "logistic", "tanh"
    in_shape: tuple
    out_shape: tuple
    act: str = "identity"  # fused activation
    weight: np.ndarray | None = None  # float32, or int8
    bias: np.ndarray | None = None  # float32, or int32
    w_scale: np.ndarray | None = None  # int8: float32 per output channel
    in_q: QParams | None = None
    out_q: QParams | None = None
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    skip: int | None = None  # "add": the index of the layer whose output is the skip tensor (-1: the input)
    proj: Layer | None = None  # "add": the skip's projection ("conv"), applied to that tensor first
    skip_q: QParams | None = None  # "add" int8: the skip tensor's (the projection's output's) quantization


def _c3(s: tuple) -> tuple:
    return tuple(s) if len(s) == 3 else (s[0], 1, 1)


def layers_of_integer(inet: IntegerNet) -> list[Layer]:
    out: list[Layer] = []
    at: list[int] = []  # op index -> the index of the layer whose output is that op's (a clamp is fused)

    def param(op: IntParam) -> Layer:
        return Layer("fc" if op.kind == "linear" else op.kind, op.in_shape, op.out_shape, op.act, op.weight.numpy(),
                     op.bias.numpy().astype(np.int32), op.w_scale.numpy(), op.in_q, op.out_q,
                     tuple(op.weight.shape[2:]) if op.kind != "linear" else (1, 1), op.stride, op.padding, op.dilation)

    for op in inet.ops:
        if isinstance(op, IntParam):
            out.append(param(op))
        elif isinstance(op, IntAdd):
            out.append(Layer("add", op.in_shape, op.out_shape, op.act, in_q=op.in_q, out_q=op.out_q, skip=at[op.skip],
                             proj=None if op.proj is None else param(op.proj), skip_q=op.skip_q))
        elif isinstance(op, IntPool):
            out.append(Layer(op.kind, op.in_shape, op.out_shape, "identity", in_q=op.q, out_q=op.q,
                             kernel=op.kernel, stride=op.stride, padding=op.padding, dilation=op.dilation))
        elif isinstance(op, IntLut):
            out.append(Layer("logistic" if op.act == "sigmoid" else "tanh", op.in_shape, op.out_shape, in_q=op.in_q,
                             out_q=op.out_q))
        else:
            assert isinstance(op, IntClamp)
            _fuse(out, op.act)
        at.append(len(out) - 1)
    return out


def _fuse(out: list[Layer], act: str) -> None:
    if not out or out[-1].kind not in ("maxpool", "avgpool") or out[-1].act != "identity":
        raise InputError(f"{act} after a {out[-1].kind if out else 'nothing'} cannot be written as a fused "
                         "TFLite activation: put it right after a layer or a pooling")
    out[-1].act = act


def layers_of_float(net) -> list[Layer]:
    """The float32 network's layers (a parsed network with a known input shape)."""
    shapes = net.map_shapes()
    cur = _c3((net.in_shape[0], 1, net.in_shape[1]) if net.dims == 1 else tuple(net.in_shape))
    out: list[Layer] = []
    ends: dict[int, int] = {}  # block -> the index of the layer that produces its output o[k]
    adds = {a.dst: a for a in getattr(net, "adds", ())}  # layers/resnet.py's Add(src, dst, at, proj)

    def add(k: int, cur: tuple) -> None:
        """The residual addition into block k: ADD of the map ``cur`` and o[src] (or its projection)."""
        a = adds[k]
        src = _c3(shapes[a.src][-1])
        proj = None
        if a.proj is not None:
            W = a.proj.weight.detach().cpu().float().numpy()
            bias = (a.proj.bias.detach().cpu().float().numpy() if a.proj.bias is not None
                    else np.zeros(W.shape[0], np.float32))
            proj = Layer("conv", src, cur, weight=W, bias=bias, kernel=tuple(W.shape[2:]), stride=a.proj.stride,
                         padding=a.proj.padding, dilation=a.proj.dilation)
        out.append(Layer("add", cur, cur, skip=ends[a.src], proj=proj))

    for k, b in enumerate(net.blocks):
        p = b.param
        o_shape = _c3(shapes[k][0])
        W = p.weight.detach().cpu().float().numpy()
        bias = (p.bias.detach().cpu().float().numpy() if p.bias is not None
                else np.zeros(W.shape[0], np.float32))
        if p.kind == "linear":
            out.append(Layer("fc", cur, o_shape, weight=W, bias=bias))
        else:
            out.append(Layer("conv", cur, o_shape, weight=W, bias=bias, kernel=tuple(W.shape[2:]), stride=p.stride,
                             padding=p.padding, dilation=p.dilation))
        cur = o_shape
        for i, op in enumerate(b.tail):
            if k in adds and adds[k].at == i:
                add(k, cur)
            new = _c3(shapes[k][i + 1])
            if op.kind == "act":
                name = op.act.name
                if name == "identity":
                    pass
                elif name in ("relu", "relu6"):
                    if out[-1].act == "identity" and out[-1].kind not in ("logistic", "tanh"):
                        out[-1].act = name
                    else:
                        raise InputError(f"layer {k}: {name} after {out[-1].kind} cannot be written to .tflite")
                elif name in ("sigmoid", "tanh"):
                    out.append(Layer("logistic" if name == "sigmoid" else "tanh", cur, new))
                else:
                    raise InputError(f"layer {k}: activation {name} has no TFLite operator here: use relu, relu6, "
                                     "sigmoid or tanh")
            elif op.kind == "depthwise":
                W = op.weight.detach().cpu().float().numpy()
                bias = (op.bias.detach().cpu().float().numpy() if op.bias is not None
                        else np.zeros(W.shape[0], np.float32))
                out.append(Layer("depthwise", cur, new, weight=W, bias=bias, kernel=tuple(W.shape[2:]),
                                 stride=op.stride, padding=op.padding, dilation=op.dilation))
            elif op.kind == "adaptive_avgpool":
                _, H, Wd = cur
                if H % op.size[0] or Wd % op.size[1]:
                    raise InputError(f"layer {k}: adaptive average pooling with uneven windows has no TFLite operator")
                kern = (H // op.size[0], Wd // op.size[1])
                out.append(Layer("avgpool", cur, new, kernel=kern, stride=kern))
            else:
                if op.kind == "avgpool" and any(op.padding):
                    raise InputError(f"layer {k}: average pooling with padding counts the padding in torch but not "
                                     "in TFLite: use padding 0")
                out.append(Layer(op.kind, cur, new, kernel=op.kernel, stride=op.stride, padding=op.padding,
                                 dilation=getattr(op, "dilation", (1, 1))))
            cur = new
        if k in adds and adds[k].at == len(b.tail):
            add(k, cur)
        ends[k] = len(out) - 1
    return out


def _padding_mode(L: Layer, where: str) -> str:
    """"VALID", "SAME" (TFLite's SAME pads exactly as torch's symmetric padding), or "PAD" (an
    explicit PAD / PADV2 before a VALID operator)."""
    if L.padding == (0, 0):
        return "VALID"
    _, H, W = L.in_shape
    _, OH, OW = L.out_shape
    same = True
    for n, o, k, s, p, d in zip((H, W), (OH, OW), L.kernel, L.stride, L.padding, L.dilation):
        total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)  # tflite ComputePaddingHeightWidth
        same &= o == -(-n // s) and total // 2 == p
    return "SAME" if same else "PAD"


def _nhwc(shape: tuple, flat: bool) -> list[int]:
    C, H, W = shape
    return [1, C] if flat else [1, H, W, C]


def tflite_model(model, description: str | None = None, input_layout: str = "NHWC") -> bytes:
    """The .tflite bytes of ``model``: an :class:`IntegerNet` (full-integer) or a parsed float
    network / nn.Sequential with a known input shape (float32). InputError for what TFLite cannot
    express here (the message names the layer).

    ``input_layout="NCHW"`` (a 2-D CNN only): the file reads (1, C, H, W) images, as the PyTorch model and
    litert-torch's .tflite of it do, and transposes them to NHWC with its first operator (TRANSPOSE
    [0, 2, 3, 1], as litert-torch writes it); for a network imported from such a file (its model file
    records ``imported.input_layout``), so that the user feeds the pruned file what they fed the original."""
    if input_layout not in ("NHWC", "NCHW"):
        raise InputError(f"input_layout {input_layout!r}: use NHWC (TFLite's) or NCHW (PyTorch's)")
    try:
        from tflite.BuiltinOperator import BuiltinOperator as OP
        from tflite.BuiltinOptions import BuiltinOptions as BO
        from tflite.TensorType import TensorType as TT
        (AddOptions, Conv2DOptions, DepthwiseConv2DOptions, FullyConnectedOptions, PadOptions, PadV2Options,
         Pool2DOptions, ReshapeOptions) = (_mod(n) for n in (
            "AddOptions", "Conv2DOptions", "DepthwiseConv2DOptions", "FullyConnectedOptions", "PadOptions",
            "PadV2Options", "Pool2DOptions", "ReshapeOptions"))
    except ImportError:
        raise InputError(f".tflite export needs the tflite and flatbuffers packages: {_INSTALL}") from None
    integer = isinstance(model, IntegerNet)
    if integer:
        layers, in_shape = layers_of_integer(model), model.in_shape
        in_q = model.input_q
    else:
        net = as_net(model)
        if net.in_shape is None:
            raise InputError("the input shape of this network is not known: bind it (input_shape) before export")
        layers, in_shape, in_q = layers_of_float(net), net.in_shape, None
    dtype = TT.INT8 if integer else TT.FLOAT32
    w = _Writer()

    def act_tensor(name, shape, q):
        return w.tensor(name, shape, dtype, None, ([q.scale], [q.zero_point], 0) if integer else None)

    def pad(k: int, L: Layer, cur: int, value) -> int:
        """PAD (value None: zeros / the zero point) or PADV2 with ``value`` around the map ``cur``."""
        C, H, Wd = L.in_shape
        (ph, pw) = L.padding
        pads = w.tensor(f"{k}.paddings", [4, 2], TT.INT32, np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32).tobytes())
        padded = act_tensor(f"{k}.padded", [1, H + 2 * ph, Wd + 2 * pw, C], L.in_q)
        if value is None:
            w.op(OP.PAD, [cur, pads], [padded], BO.PadOptions, lambda b: (PadOptions.Start(b), PadOptions.End(b))[1])
        else:
            data = np.array([value], np.int8 if integer else np.float32).tobytes()
            const = w.tensor(f"{k}.pad_value", [1], dtype, data,
                             ([L.in_q.scale], [L.in_q.zero_point], 0) if integer else None)
            w.op(OP.PADV2, [cur, pads, const], [padded], BO.PadV2Options,
                 lambda b: (PadV2Options.Start(b), PadV2Options.End(b))[1])
        return padded

    def conv_opts(L: Layer, mode: str):
        def opts(b):
            Conv2DOptions.Start(b)
            Conv2DOptions.AddPadding(b, 0 if mode == "SAME" else 1)
            Conv2DOptions.AddStrideH(b, L.stride[0])
            Conv2DOptions.AddStrideW(b, L.stride[1])
            Conv2DOptions.AddDilationHFactor(b, L.dilation[0])
            Conv2DOptions.AddDilationWFactor(b, L.dilation[1])
            Conv2DOptions.AddFusedActivationFunction(b, FUSED[L.act])
            return Conv2DOptions.End(b)
        return opts

    flat = len(in_shape) == 1
    first_shape = layers[0].in_shape
    cur = act_tensor("input", _nhwc(first_shape, flat), in_q)
    inputs = [cur]
    if input_layout == "NCHW" and not flat:
        if len(in_shape) != 3:
            raise InputError("input_layout NCHW is for 2-D CNNs; this network reads " + str(tuple(in_shape)))
        perm = w.tensor("input.perm", [4], TT.INT32, np.array([0, 2, 3, 1], np.int32).tobytes())
        nchw = act_tensor("input.nchw", [1, *first_shape], in_q)
        w.op(OP.TRANSPOSE, [nchw, perm], [cur])
        inputs = [nchw]
    outs: list[int] = []  # the output tensor of every layer (an addition's skip reads one)
    for k, L in enumerate(layers):
        where = f"operator {k} ({L.kind})"
        last = k == len(layers) - 1
        oq = L.out_q
        if L.kind == "fc":
            n_in = L.weight.shape[1]
            W = L.weight
            if not flat:  # a map: RESHAPE to rows, the weight columns in NHWC order
                C, H, Wd = L.in_shape
                W = W.reshape(W.shape[0], C, H, Wd).transpose(0, 2, 3, 1).reshape(W.shape[0], -1)
                shape_t = w.tensor(f"{k}.shape", [2], TT.INT32, np.array([1, n_in], np.int32).tobytes())
                rows = act_tensor(f"{k}.rows", [1, n_in], L.in_q)

                def opts(b, n_in=n_in):
                    ReshapeOptions.StartNewShapeVector(b, 2)
                    b.PrependInt32(n_in)
                    b.PrependInt32(1)
                    v = b.EndVector()
                    ReshapeOptions.Start(b)
                    ReshapeOptions.AddNewShape(b, v)
                    return ReshapeOptions.End(b)
                w.op(OP.RESHAPE, [cur, shape_t], [rows], BO.ReshapeOptions, opts)
                cur, flat = rows, True
            wt, bt = _weights(w, k, W, L, integer, TT)
            out = act_tensor("output" if last else f"{k}.fc", [1, L.out_shape[0]], oq)

            def opts(b, act=L.act):
                FullyConnectedOptions.Start(b)
                FullyConnectedOptions.AddFusedActivationFunction(b, FUSED[act])
                return FullyConnectedOptions.End(b)
            w.op(OP.FULLY_CONNECTED, [cur, wt, bt], [out], BO.FullyConnectedOptions, opts)
        elif L.kind == "conv":
            mode = _padding_mode(L, where)
            if mode == "PAD":  # zeros: in int8 the input zero point (TFLM's PAD), so q - zp = 0 as TFLM's skip
                cur, mode = pad(k, L, cur, None), "VALID"
            wt, bt = _weights(w, k, L.weight.transpose(0, 2, 3, 1), L, integer, TT)  # OIHW -> OHWI
            out = act_tensor("output" if last else f"{k}.conv", _nhwc(L.out_shape, False), oq)
            w.op(OP.CONV_2D, [cur, wt, bt], [out], BO.Conv2DOptions, conv_opts(L, mode))
        elif L.kind == "depthwise":
            mode = _padding_mode(L, where)
            if mode == "PAD":  # as a convolution's: zeros, in int8 the zero point
                cur, mode = pad(k, L, cur, None), "VALID"
            wt, bt = _weights(w, k, L.weight.transpose(1, 2, 3, 0), L, integer, TT, dim=3)  # (C,1,kh,kw) -> 1HWC
            out = act_tensor("output" if last else f"{k}.depthwise", _nhwc(L.out_shape, False), oq)

            def opts(b, L=L, mode=mode):
                DepthwiseConv2DOptions.Start(b)
                DepthwiseConv2DOptions.AddPadding(b, 0 if mode == "SAME" else 1)
                DepthwiseConv2DOptions.AddStrideH(b, L.stride[0])
                DepthwiseConv2DOptions.AddStrideW(b, L.stride[1])
                DepthwiseConv2DOptions.AddDepthMultiplier(b, 1)
                DepthwiseConv2DOptions.AddDilationHFactor(b, L.dilation[0])
                DepthwiseConv2DOptions.AddDilationWFactor(b, L.dilation[1])
                DepthwiseConv2DOptions.AddFusedActivationFunction(b, FUSED[L.act])
                return DepthwiseConv2DOptions.End(b)
            w.op(OP.DEPTHWISE_CONV_2D, [cur, wt, bt], [out], BO.DepthwiseConv2DOptions, opts)
        elif L.kind in ("maxpool", "avgpool"):
            if L.dilation != (1, 1):
                raise InputError(f"{where}: pooling with dilation {L.dilation} has no TFLite operator")
            mode = _padding_mode(L, where)
            if mode == "PAD" and L.kind == "maxpool":  # the lowest value: never the maximum of a window
                cur, mode = pad(k, L, cur, -128 if integer else float(np.finfo(np.float32).min)), "VALID"
            elif mode == "PAD":
                raise InputError(f"{where}: average pooling with padding has no TFLite operator: use padding 0")
            out = act_tensor("output" if last else f"{k}.pool", _nhwc(L.out_shape, False), oq)

            def opts(b, L=L, mode=mode):
                Pool2DOptions.Start(b)
                Pool2DOptions.AddPadding(b, 0 if mode == "SAME" else 1)
                Pool2DOptions.AddStrideH(b, L.stride[0])
                Pool2DOptions.AddStrideW(b, L.stride[1])
                Pool2DOptions.AddFilterHeight(b, L.kernel[0])
                Pool2DOptions.AddFilterWidth(b, L.kernel[1])
                Pool2DOptions.AddFusedActivationFunction(b, FUSED[L.act])
                return Pool2DOptions.End(b)
            w.op(OP.MAX_POOL_2D if L.kind == "maxpool" else OP.AVERAGE_POOL_2D, [cur], [out], BO.Pool2DOptions, opts)
        elif L.kind == "add":  # the residual addition: ADD(branch, skip), the skip through a CONV_2D projection
            skip = outs[L.skip]
            if L.proj is not None:
                P = L.proj
                mode = _padding_mode(P, where)
                if mode == "PAD":
                    skip, mode = pad(f"{k}.proj", P, skip, None), "VALID"
                wt, bt = _weights(w, f"{k}.proj", P.weight.transpose(0, 2, 3, 1), P, integer, TT)
                proj = act_tensor(f"{k}.proj", _nhwc(P.out_shape, False), P.out_q)
                w.op(OP.CONV_2D, [skip, wt, bt], [proj], BO.Conv2DOptions, conv_opts(P, mode))
                skip = proj
            out = act_tensor(f"{k}.add", _nhwc(L.out_shape, False), oq)

            def opts(b, act=L.act):
                AddOptions.Start(b)
                AddOptions.AddFusedActivationFunction(b, FUSED[act])
                return AddOptions.End(b)
            w.op(OP.ADD, [cur, skip], [out], BO.AddOptions, opts)
        else:  # logistic / tanh (int8: the spec's fixed output quantization)
            shape = [1, L.out_shape[0]] if flat else _nhwc(L.out_shape, False)
            out = act_tensor("output" if last else f"{k}.{L.kind}", shape, oq)
            w.op(OP.LOGISTIC if L.kind == "logistic" else OP.TANH, [cur], [out])
        cur = out
        outs.append(cur)
    if not flat:  # a network ending in a map: its output as rows
        raise InputError("the network ends in a map, not a Linear layer: .tflite export needs a Linear last")
    return w.finish(inputs, [cur], description or ("shrinknet " + ("full-integer int8" if integer else "float32")))


def _weights(w: _Writer, k: int, W: np.ndarray, L: Layer, integer: bool, TT, dim: int = 0) -> tuple[int, int]:
    """The weight and bias tensors; ``dim``: the output-channel axis of ``W`` (the quantized dimension)."""
    O = W.shape[dim]
    if integer:
        s_w = L.w_scale.astype(np.float32)
        wt = w.tensor(f"{k}.weight", W.shape, TT.INT8, np.ascontiguousarray(W, np.int8).tobytes(),
                      (s_w.tolist(), [0] * O, dim))
        s_b = (np.float32(L.in_q.scale) * s_w.astype(np.float64)).tolist()
        bt = w.tensor(f"{k}.bias", [O], TT.INT32, np.ascontiguousarray(L.bias, np.int32).tobytes(), (s_b, [0] * O, 0))
    else:
        wt = w.tensor(f"{k}.weight", W.shape, TT.FLOAT32, np.ascontiguousarray(W, np.float32).tobytes())
        bt = w.tensor(f"{k}.bias", [O], TT.FLOAT32, np.ascontiguousarray(L.bias, np.float32).tobytes())
    return wt, bt


def to_tflite_input(x: np.ndarray, in_shape: tuple) -> np.ndarray:
    """Instances (N, *in_shape) in shrinknet's layout (NCHW / (C, L) / features) -> TFLite's NHWC."""
    x = np.asarray(x).reshape(len(x), *in_shape)
    if len(in_shape) == 3:
        return x.transpose(0, 2, 3, 1)
    if len(in_shape) == 2:
        return x.transpose(0, 2, 1)[:, None]
    return x


def export_tflite(model, path: str | os.PathLike, meta: dict | None = None, overwrite: bool = False,
                  input_layout: str | None = None) -> ExportResult:
    """Write ``model`` (IntegerNet, or a float network with a known input shape) to ``path`` (.tflite).

    The path is checked first as every export's (``export.check_export_paths``: a name ending in
    .tflite, never an input, an existing file replaced only with ``overwrite`` and only when
    shrinknet wrote it); the file is written whole or not at all. The Model's description is
    "shrinknet <version> <full-integer int8 | float32>" followed by ``meta`` as JSON: that is how
    :func:`shrinknet.ship.export.written_by_shrinknet` recognises the file later.
    ``ExportResult.flash_bytes``: ``IntegerNet.flash_bytes`` (full-integer) or the float32 weights and biases.
    ``input_layout`` (see :func:`tflite_model`), by default the one ``meta`` records for a network imported
    from a channels-first file (``imported.input_layout`` "NCHW": an ONNX or litert-torch CNN), else NHWC:
    the pruned file reads what the user fed the original.
    """
    import json

    from ..version import __version__
    from .export import check_export_paths

    expect = check_export_paths(path, "tflite", overwrite)
    path = Path(path)
    integer = isinstance(model, IntegerNet)
    description = f"shrinknet {__version__} {'full-integer int8' if integer else 'float32'}"
    if meta is not None:
        description += "; meta " + json.dumps(meta)
    if input_layout is None:
        recorded = ((meta or {}).get("imported") or {}).get("input_layout")
        shape = model.in_shape if isinstance(model, IntegerNet) else as_net(model).in_shape
        input_layout = "NCHW" if recorded == "NCHW" and len(shape or ()) == 3 else "NHWC"  # 2-D CNNs only
    data = tflite_model(model, description, input_layout)
    if integer:
        flash = model.flash_bytes()
    else:
        from ..store.memory import network_bytes

        flash = network_bytes(model, "float32")
    write_bytes(path, data, expect[path])
    return ExportResult([path], flash, 0, "tflite", "int8-integer" if integer else "float32")


def run_tflm(model_bytes: bytes, inputs: np.ndarray, arena_size: int | None = None) -> tuple[np.ndarray, int | None]:
    """Run every instance of ``inputs`` (N, *TFLite input shape) through TFLite Micro's Python
    interpreter; (outputs (N, out), the arena bytes TFLM's recording allocator reports, or None)."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise InputError(f"running a .tflite in TFLite Micro needs the tflite-micro package: {_INSTALL}") from None
    arena = arena_size or max(64 * 1024, 16 * len(model_bytes))
    interp = runtime.Interpreter.from_bytes(model_bytes, arena_size=arena)
    outs = []
    for x in inputs:
        interp.set_input(np.ascontiguousarray(x[None]), 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(outs), _arena_bytes(interp)


def _arena_bytes(interp) -> int | None:
    """The arena total TFLM's RecordingMicroAllocator prints (C++ stdout/stderr, captured at the fds)."""
    import ctypes
    import sys

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        try:
            for fd in saved:
                os.dup2(tmp.fileno(), fd)
            with contextlib.suppress(Exception):
                interp.print_allocations()
            libc.fflush(None)  # C's buffers, before the fds are put back
        finally:
            for fd, old in saved.items():
                os.dup2(old, fd)
                os.close(old)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    m = re.search(r"Arena allocation total (\d+) bytes", text)
    return int(m[1]) if m else None


__all__ = ["tflite_model", "export_tflite", "run_tflm", "to_tflite_input", "layers_of_float", "layers_of_integer"]
