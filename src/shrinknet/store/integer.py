"""Full-integer quantization of a parsed network, following the TFLite int8 quantization spec, and
its integer reference forward pass (what TFLite Micro's reference kernels and the integer-only C
export compute, bit for bit).

The spec (https://ai.google.dev/edge/litert/models/quantization_spec), as read here:

* real = scale * (q - zero_point) for every int8 tensor.
* Weights: int8, symmetric per output channel (zero point 0), values in -127..127:
  ``s_w[o] = max |w[o, :]| / 127`` -- exactly :func:`shrinknet.store.quantize.quantize_rows`, the
  quantization the int8-weight storage already uses, so both agree on every weight.
* Activations (the input, and the output of every Linear/Conv with its folded activation): int8
  asymmetric per tensor. Calibration rule (the TFLite converter's min/max rule): rmin and rmax are
  the minimum and maximum of the float network's tensor over the whole calibration set, widened
  to include 0; ``scale = (rmax - rmin) / 255`` (float32) and ``zero_point = round(-128 - rmin /
  scale)`` clamped to -128..127. A tensor that is 0 on every calibration row gets scale 1 (any
  scale represents 0 exactly).
* Biases: int32 at scale ``s_in * s_w[o]``, ``q_b = round(b / (s_in * s_w[o]))``, zero point 0.
* Requantization (TFLM ``reference_integer_ops::FullyConnected`` / ``ConvPerChannel``):
  ``acc = sum (q_w) (q_x - zp_x) + q_b`` in int32, then
  ``out = MultiplyByQuantizedMultiplier(acc, M[o], shift[o]) + zp_out`` clamped to the
  activation range; ``(M, shift) = QuantizeMultiplier(double(s_in) * double(s_w[o]) /
  double(s_out))`` -- TFLM's ``PopulateConvolutionQuantizationParams``.
  ``MultiplyByQuantizedMultiplier`` is TFLM's double-rounding one (``TFLITE_SINGLE_ROUNDING``
  off, TFLM's default): ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^left,
  M), right)``.
* Depthwise convolution (channel multiplier 1; TFLM ``reference_integer_ops::DepthwiseConvPerChannel``):
  channel c alone, ``acc = sum_taps q_w[c] (q_x[c] - zp_x) + q_b[c]`` (taps outside the map
  skipped), then the same per-channel ``MultiplyByQuantizedMultiplier``, zero point and clamp as a
  convolution; weights symmetric per channel (``quantize_rows`` over each channel's kernel; in the
  .tflite the filter is [1, kh, kw, C] with ``quantized_dimension = 3``), multipliers from the same
  ``PopulateConvolutionQuantizationParams``. Its output is calibrated like a layer's.
* Global average pooling (``AdaptiveAvgPool(1)``, and any adaptive pooling with even windows) is
  TFLite's ``AVERAGE_POOL_2D`` with the full window, not ``MEAN``: TFLM's int8 MEAN with equal
  input/output quantization is ``reference_ops::Mean`` -- the raw int8 sum divided by the count
  with C's truncating division (a bias toward zero that depends on the zero point) -- and with
  different quantization ``QuantizedMeanOrSum``, which computes in float. AVERAGE_POOL_2D
  (``reference_integer_ops::AveragePool``) is integer-only and rounds half away from zero:
  ``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` over the int32 window sum, n = H*W.
* ReLU / ReLU6 right after a layer are folded into its clamp (``CalculateActivationRangeQuantized``):
  ``[max(-128, zp), min(127, zp + round(6 / scale))]``; after a pooling layer they are a clamp
  op in the pooling's quantization. Max and average pooling keep their input's scale and zero
  point (the spec requires it); average pooling rounds half away from zero as TFLM's
  ``reference_integer_ops::AveragePool`` (windows must lie inside the map: padding 0).
* Rounding of floats (input quantization, zero points, biases, activation bounds) is
  ``TfLiteRound``: half away from zero.

* A residual addition (layers/resnet.py's ``Add``): TFLM's int8 ADD (:class:`IntAdd` gives the
  equations), its output calibrated by min/max over the sum (after a ReLU/ReLU6 right after it, which
  is its clamp); a projection is an int8 convolution of the skip tensor, calibrated as a layer.
* Sigmoid and tanh: TFLM's int8 LOGISTIC and TANH (gemmlowp fixed point, transcribed in
  store/integer_act.py and tabulated over the 256 int8 inputs); their input is the layer's
  calibrated pre-activation, their output has the spec's fixed quantization (1/256, -128 and
  1/128, 0).

Not supported (InputError naming it): softplus and leaky ReLU (no int8 kernel in TFLM), average
pooling with padding, and adaptive average pooling whose windows are not one plain average pooling.

The integer reference (:meth:`IntegerNet.forward`) computes in torch int64 only: integer matmuls
(``einsum`` over int64), shifts and masks; no float touches a value after the input is quantized.
Maps are NCHW as in torch (a 1-D network's (C, L) is (C, 1, L)); after a flatten the order is
torch's (channel-major), the order the weights of the following Linear are in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .fixedpoint import (FOLDED, INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, SUPPORTED_ACTS,
                         QParams, _trunc_div, act_range, multiply_by_quantized_multiplier, quantize_multiplier,
                         rounding_divide_by_pot, saturating_rounding_doubling_high_mul, tflite_round)
from .quantize import quantize_rows


# -- the integer ops --------------------------------------------------------------------------
@dataclass(frozen=True)
class IntParam:
    """A Linear (``kind == "linear"``, weight (O, I)), a Conv (weight (O, C, kh, kw)) or a depthwise
    Conv (``kind == "depthwise"``, weight (C, 1, kh, kw), channel c reads input channel c) in int8.

    in_q / out_q: the input's and output's quantization; bias: int32 (O,) at s_in * w_scale;
    multiplier / shift: TFLM's per-channel requantization; act_min / act_max: the clamp (folded
    ReLU/ReLU6, else the int8 range); shapes per instance (C, H, W) ((F, 1, 1) for a row).
    """

    kind: str
    weight: Tensor  # int8
    w_scale: Tensor  # float32 (O,)
    bias: Tensor  # int64 holding int32 values (O,)
    multiplier: Tensor  # int64 (O,)
    shift: Tensor  # int64 (O,)
    in_q: QParams
    out_q: QParams
    act: str
    act_min: int
    act_max: int
    in_shape: tuple
    out_shape: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)

    def accumulate(self, x: Tensor) -> Tensor:
        """int32 accumulators (N, O, H', W'): sum q_w (q_x - zp_x) + q_b, in int64 (TFLM's int32 sum)."""
        xs = x.to(torch.int64) - self.in_q.zero_point
        W = self.weight.to(torch.int64)
        if self.kind == "linear":
            acc = torch.einsum("ni,oi->no", xs.reshape(xs.shape[0], -1), W)
            acc = acc[:, :, None, None]
        else:
            (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
            _, OH, OW = self.out_shape
            xp = torch.nn.functional.pad(xs, (pw, pw, ph, ph))  # padded inputs are skipped: (q - zp) = 0
            acc = torch.zeros(xs.shape[0], W.shape[0], OH, OW, dtype=torch.int64)
            for i in range(W.shape[2]):
                for j in range(W.shape[3]):
                    patch = xp[:, :, i * dh: i * dh + sh * (OH - 1) + 1: sh, j * dw: j * dw + sw * (OW - 1) + 1: sw]
                    if self.kind == "depthwise":
                        acc += patch * W[:, 0, i, j].view(1, -1, 1, 1)
                    else:
                        acc += torch.einsum("nchw,oc->nohw", patch, W[:, :, i, j])
        acc = acc + self.bias.view(1, -1, 1, 1)
        if bool(((acc < INT32_MIN) | (acc > INT32_MAX)).any()):
            raise OverflowError("an int32 accumulator overflows")
        return acc

    def forward(self, x: Tensor) -> Tensor:
        acc = self.accumulate(x)
        out = multiply_by_quantized_multiplier(acc, self.multiplier.view(1, -1, 1, 1), self.shift.view(1, -1, 1, 1))
        return (out + self.out_q.zero_point).clamp(self.act_min, self.act_max).to(torch.int8)

    @property
    def macs(self) -> int:
        return math.prod(self.out_shape) * math.prod(self.weight.shape[1:])


@dataclass(frozen=True)
class IntPool:
    """Max pooling (``kind == "maxpool"``: padded positions skipped) or average pooling
    (``"avgpool"``, padding 0; TFLM's rounding), then the clamp [act_min, act_max]; the input's
    quantization is kept."""

    kind: str
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    q: QParams
    act_min: int
    act_max: int
    in_shape: tuple
    out_shape: tuple

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        _, OH, OW = self.out_shape
        fill = INT8_MIN - 1 if self.kind == "maxpool" else 0  # below every int8: a padded position never wins
        xp = torch.nn.functional.pad(x.to(torch.int64), (pw, pw, ph, ph), value=fill)
        acc = None
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, :, i * dh: i * dh + sh * (OH - 1) + 1: sh, j * dw: j * dw + sw * (OW - 1) + 1: sw]
                acc = patch.clone() if acc is None else (torch.maximum(acc, patch) if self.kind == "maxpool"
                                                         else acc + patch)
        if self.kind == "avgpool":  # TFLM: acc > 0 ? (acc + n/2) / n : (acc - n/2) / n, C division
            n = kh * kw
            acc = torch.where(acc > 0, _trunc_div(acc + n // 2, n), _trunc_div(acc - n // 2, n))
        return acc.clamp(self.act_min, self.act_max).to(torch.int8)


@dataclass(frozen=True)
class IntClamp:
    """ReLU/ReLU6 after a pooling layer: a clamp in the pooled map's quantization."""

    act: str
    q: QParams
    act_min: int
    act_max: int
    in_shape: tuple
    out_shape: tuple
    kind = "clamp"

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(self.act_min, self.act_max)


@dataclass(frozen=True)
class IntLut:
    """Sigmoid (``act == "sigmoid"``, output scale 1/256, zero point -128) or tanh (1/128, 0) as
    TFLM's int8 LOGISTIC / TANH compute them, tabulated over the 256 inputs (store/integer_act.py)."""

    act: str
    in_q: QParams
    out_q: QParams
    table: Tensor  # int8 (256,): output of input q at index q + 128
    in_shape: tuple
    out_shape: tuple
    kind = "lut"

    @classmethod
    def make(cls, act: str, in_q: QParams, in_shape: tuple, out_shape: tuple) -> "IntLut":
        from .integer_act import logistic_table, tanh_table

        if act == "sigmoid":
            table, out_q = logistic_table(in_q.scale, in_q.zero_point), QParams(1.0 / 256, -128)
        else:
            table, out_q = tanh_table(in_q.scale, in_q.zero_point), QParams(1.0 / 128, 0)
        return cls(act, in_q, out_q, torch.from_numpy(table), in_shape, out_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.table[x.to(torch.int64) + 128]


@dataclass(frozen=True)
class IntAdd:
    """A residual addition as TFLM's int8 ADD (``reference_integer_ops::AddFunc``, its parameters from
    ``CalculateOpDataAdd`` in micro/kernels/add_common.cc): the branch's map x (``in_q``) plus the skip
    tensor, the output of op ``skip`` (through the int8 convolution ``proj`` first, if any; ``skip_q``
    its quantization). With left_shift = 20, twice = 2 max(s1, s2) (float32 scales, in double):
    ``v_i = MBQMSmallerThanOneExp((q_i - zp_i) << 20, M_i, shift_i)`` with (M_i, shift_i) =
    QuantizeMultiplier(s_i / twice), then ``out = MBQMSmallerThanOneExp(v_1 + v_2, M_o, shift_o) + zp_out``
    with (M_o, shift_o) = QuantizeMultiplier(twice / (2^20 s_out)), clamped to [act_min, act_max] (a
    following ReLU/ReLU6 fused, as a layer's). MBQMSmallerThanOneExp(x, M, s) =
    RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, M), -s)."""

    skip: int
    proj: IntParam | None
    in_q: QParams
    skip_q: QParams
    out_q: QParams
    act: str
    act_min: int
    act_max: int
    params: tuple  # (M1, shift1, M2, shift2, Mo, shift_o)
    in_shape: tuple
    out_shape: tuple
    kind = "add"
    LEFT_SHIFT = 20

    @classmethod
    def make(cls, skip: int, proj, in_q: QParams, skip_q: QParams, out_q: QParams, act: str, shape: tuple):
        twice = 2 * float(max(np.float32(in_q.scale), np.float32(skip_q.scale)))
        real = (float(np.float32(in_q.scale)) / twice, float(np.float32(skip_q.scale)) / twice,
                twice / ((1 << cls.LEFT_SHIFT) * float(np.float32(out_q.scale))))
        ms = [quantize_multiplier(r) for r in real]
        if any(sh > 0 for _, sh in ms):  # QuantizeMultiplierSmallerThanOneExp: TFLITE_CHECK_LE(shift, 0)
            raise InputError("a residual addition's output scale is below 2^-20 of its inputs': TFLite's int8 ADD "
                             "cannot rescale it")
        return cls(skip, proj, in_q, skip_q, out_q, act, *act_range(act, out_q), tuple(v for m in ms for v in m),
                   shape, shape)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.proj is not None:
            skip = self.proj.forward(skip)
        m1, s1, m2, s2, mo, so = (torch.tensor(v, dtype=torch.int64) for v in self.params)

        def scaled(q, zp, m, s):  # MultiplyByQuantizedMultiplierSmallerThanOneExp
            return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(
                (q.to(torch.int64) - zp) * (1 << self.LEFT_SHIFT), m), -s)

        raw = scaled(x, self.in_q.zero_point, m1, s1) + scaled(skip, self.skip_q.zero_point, m2, s2)
        out = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(raw, mo), -so) + self.out_q.zero_point
        return out.clamp(self.act_min, self.act_max).to(torch.int8)


@dataclass
class IntegerNet:
    """A full-integer network: ``ops`` in order (IntParam / IntPool / IntClamp / IntLut / IntAdd), the input's and
    output's quantization, and how it was calibrated (``calibration``, a sentence)."""

    ops: list
    in_shape: tuple  # one instance as the user gives it
    input_q: QParams
    output_q: QParams
    calibration: str = ""
    describe: list = field(default_factory=list)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.ops[-1].out_shape)

    @property
    def params(self) -> list[IntParam]:
        """Every int8 layer with weights, a residual projection included."""
        return [p for op in self.ops for p in ([op] if isinstance(op, IntParam) else
                                               [op.proj] if op.kind == "add" and op.proj is not None else [])]

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.params)

    def quantize_input(self, X: Tensor) -> Tensor:
        """Float instances (N, *in_shape) or flat rows -> int8 (N, *in_shape) (TFLM's QUANTIZE)."""
        return self.input_q.quantize(X.reshape(X.shape[0], *self.in_shape))

    def dequantize_output(self, q: Tensor) -> Tensor:
        return self.output_q.dequantize(q)

    def internal(self, q: Tensor) -> Tensor:
        """int8 (N, *in_shape) -> the NCHW map the first op reads."""
        return q.reshape(q.shape[0], *self.ops[0].in_shape)

    def trace(self, q: Tensor) -> list[Tensor]:
        """Every op's int8 output (N, C, H, W) for the int8 input ``q`` (N, *in_shape)."""
        x = self.internal(q)
        outs = []
        for op in self.ops:
            x = op.forward(x, outs[op.skip]) if op.kind == "add" else op.forward(x)
            outs.append(x)
        return outs

    def forward(self, q: Tensor) -> Tensor:
        """The integer reference: int8 input (N, *in_shape) -> int8 output (N, out)."""
        return self.trace(q)[-1].reshape(q.shape[0], -1)

    def __call__(self, X: Tensor) -> Tensor:
        """Float in, float out: quantize, the integer forward, dequantize (float64)."""
        return self.dequantize_output(self.forward(self.quantize_input(X)))

    def flash_bytes(self) -> int:
        """Stored bytes: int8 weights, and per output channel an int32 bias, an int32 multiplier
        and an int8 shift (:func:`integer_layer_bytes`); 256 bytes per sigmoid/tanh table."""
        return (sum(integer_layer_bytes(op.weight.shape[0], math.prod(op.weight.shape[1:])) for op in self.params)
                + 256 * sum(op.kind == "lut" for op in self.ops))

    def maps(self) -> list[int]:
        """int8 bytes of every intermediate map of a batch-1 pass (clamps, tables and additions work in place)."""
        return [math.prod(op.out_shape) for op in self.ops[:-1] if op.kind not in ("clamp", "lut", "add")]

    def ram_bytes(self) -> int:
        """Scratch bytes of the integer-only C, the RAM rule of a batch-1 pass: the peak over the ops of
        the int8 bytes of every buffer live at that op. A buffer is live from the op that writes it
        through the last op that reads it (a residual skip through its addition); clamps, tables and
        additions work in place; a projection's map is live while its addition runs; the caller's input
        and output are not counted. For a chain this is the two largest consecutive maps side by side;
        for a residual network ``ResNet.ram_floats`` in bytes (layers/resnet.py's tape, the same rule)."""
        buf, size, until = [], {}, {}
        for j, op in enumerate(self.ops):  # buffer id: the op that wrote it
            buf.append(buf[-1] if j and op.kind in ("clamp", "lut", "add") else j)
            size[buf[j]] = math.prod(op.out_shape)
            for read in ([buf[j - 1]] if j else []) + ([buf[op.skip]] if op.kind == "add" else []):
                until[read] = max(until.get(read, 0), j)
            until.setdefault(buf[j], j)
        out_id, peak = len(self.ops) - 1, 0
        for j, op in enumerate(self.ops):
            live = sum(size[i] for i in size if i != out_id and i <= j <= until[i])
            peak = max(peak, live + (size[buf[j]] if op.kind == "add" and op.proj is not None else 0))
        return peak


def integer_layer_bytes(n_out: int, per_row: int) -> int:
    """A full-integer layer's stored bytes: int8 weights + per output unit an int32 bias, an int32
    multiplier and an int8 shift."""
    return n_out * per_row + 9 * n_out


def integer_bytes(model, masks=None) -> int:
    """What the full-integer network of ``model`` stores, without calibrating it: per Linear/Conv
    and depthwise Conv :func:`integer_layer_bytes`, 256 per sigmoid/tanh table -- :meth:`IntegerNet.flash_bytes` of
    any calibration (the byte budget of an integer-only run). With ``masks`` (True = kept, one per
    hidden layer) the pruned network's: the layers at their kept sizes (``Network.kept_sizes``).
    Refuses what cannot run full-integer (InputError naming the layer and its activation)."""
    from ..model.parse import as_net

    net = as_net(model)
    tables = 0
    for k, b in enumerate(net.blocks):
        for op in b.tail:
            if op.kind == "act":
                _refuse(op.act, f"layer {k}")
                tables += op.act.name in ("sigmoid", "tanh")
    return (sum(integer_layer_bytes(n_out, p.row_size(n_in)) for p, n_out, n_in in net.kept_sizes(masks))
            + 256 * tables)


# -- quantizing a network ----------------------------------------------------------------------
def _check_calibration(X: Tensor) -> Tensor:
    X = torch.as_tensor(X)
    if X.ndim < 2 or X.shape[0] < 1:
        raise InputError(f"calibration data must have one row per instance, got shape {tuple(X.shape)}")
    Xf = X.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(Xf).all()):
        raise InputError("calibration data has NaN or infinite values: give finite inputs")
    if bool((Xf == Xf[:1]).all()):
        raise InputError("calibration data is constant (every instance the same): give real, varied inputs, "
                         "e.g. the training set")
    return X


def _refuse(act, where: str) -> None:
    if act.name not in SUPPORTED_ACTS:
        raise InputError(f"{where}: activation {act.name} cannot run full-integer (int8): supported are "
                         f"{', '.join(SUPPORTED_ACTS)}")


def _c3(s: tuple) -> tuple:
    return s if len(s) == 3 else (s[0], 1, 1)


def _pool_op(op, k: int) -> tuple:
    """(kind, kernel, stride, padding, dilation) of a pooling tail op, or InputError."""
    if op.kind == "maxpool":
        return "maxpool", op.kernel, op.stride, op.padding, op.dilation
    if op.kind == "avgpool":
        if any(op.padding):
            raise InputError(f"layer {k}: average pooling with padding {op.padding} cannot run full-integer "
                             "(TFLite averages only inside the map): use padding 0")
        return "avgpool", op.kernel, op.stride, (0, 0), (1, 1)
    raise InputError(f"layer {k}: {op.describe()} cannot run full-integer: supported after a layer are "
                     f"ReLU/ReLU6/sigmoid/tanh, MaxPool, AvgPool, AdaptiveAvgPool and depthwise convolutions")


def _adaptive_as_avgpool(op, shape: tuple, k: int) -> tuple:
    _, H, W = shape
    oh, ow = op.size
    if H % oh or W % ow:
        raise InputError(f"layer {k}: adaptive average pooling {H}x{W} -> {oh}x{ow} has uneven windows and "
                         "cannot run full-integer: use an input size divisible by the output size")
    kern = (H // oh, W // ow)
    return "avgpool", kern, kern, (0, 0), (1, 1)


def quantize_network(model, calibration: Tensor, input_shape=None, calibration_name: str = "the given data"
                     ) -> IntegerNet:
    """Full-integer quantization of ``model`` (nn.Sequential or parsed network) per the TFLite int8
    spec (module docstring), activations calibrated by min/max over ``calibration`` (N, *in_shape)
    or flat rows; ``calibration_name`` says in :attr:`IntegerNet.calibration` which data it was.

    Raises InputError for calibration data with NaN/inf or that is constant, and for a layer that
    cannot run full-integer (naming it and its activation).
    """
    from ..model.parse import as_net

    net = as_net(model)
    adds = {a.dst: a for a in getattr(net, "adds", ())}  # layers/resnet.py's Add(src, dst, at, proj)
    X = _check_calibration(calibration)
    if input_shape is not None:
        net.bind(tuple(input_shape))
    X = net.prepare_input(X.to(net.dtype))
    for k, b in enumerate(net.blocks):  # refuse before computing anything
        for op in b.tail:
            if op.kind == "act":
                _refuse(op.act, f"layer {k}")
            elif op.kind not in ("adaptive_avgpool", "depthwise"):
                _pool_op(op, k)
    shapes = net.map_shapes()
    with torch.no_grad():
        h = net._internal(X)
        if h.ndim == 2:
            h = h[:, :, None, None]
        in_q = QParams.from_range(float(X.min()), float(X.max()))
        ops, q = [], in_q
        cur = _c3((net.in_shape[0], 1, net.in_shape[1]) if net.dims == 1 else tuple(net.in_shape))
        ends: dict[int, tuple] = {}  # block -> (index of the op giving o[k], o[k] in float, its quantization)
        for k, b in enumerate(net.blocks):
            items, shp = [b.param, *b.tail], [_c3(s) for s in shapes[k]]  # shp[i]: the output of items[i]
            at = adds[k].at + 1 if k in adds else -1  # the addition comes before items[at]
            i = 0
            while i <= len(items):
                if i == at:  # the residual addition (IntAdd); a ReLU/ReLU6 right after it is its clamp
                    h, q, i = _int_add(ops, adds[k], ends[adds[k].src], h, q, items, i, cur)
                    at = -1
                    continue
                if i == len(items):
                    break
                op = items[i]
                if i == 0 or op.kind == "depthwise":  # a layer with weights; a ReLU/ReLU6 after it is its clamp
                    x, act = op.forward(h), "identity"
                    if (i + 1 < len(items) and i + 1 != at and items[i + 1].kind == "act"
                            and items[i + 1].act.name in FOLDED):
                        i += 1
                        act, x = items[i].act.name, items[i].forward(x)
                    if x.ndim == 2:
                        x = x[:, :, None, None]
                    ops.append(_int_param(op, x, q, act, cur, shp[i]))
                    h, q = x, ops[-1].out_q
                else:
                    h = op.forward(h)
                    if op.kind == "act" and op.act.name in ("sigmoid", "tanh"):
                        ops.append(IntLut.make(op.act.name, q, cur, shp[i]))
                        q = ops[-1].out_q
                    elif op.kind == "act":
                        if op.act.name != "identity":
                            ops.append(IntClamp(op.act.name, q, *act_range(op.act.name, q), cur, shp[i]))
                    else:
                        spec = _adaptive_as_avgpool(op, cur, k) if op.kind == "adaptive_avgpool" else _pool_op(op, k)
                        ops.append(IntPool(*spec, q, INT8_MIN, INT8_MAX, cur, shp[i]))
                cur = shp[i]
                i += 1
            ends[k] = (len(ops) - 1, h, q)
    n = X.shape[0]
    return IntegerNet(ops, tuple(net.in_shape), in_q, q,
                      f"activation ranges: min/max over {n} instance(s) of {calibration_name}, widened to include 0",
                      net.describe())


def _int_param(p, x: Tensor, q: QParams, act: str, in_shape: tuple, out_shape: tuple) -> IntParam:
    """The int8 op of a Linear / Conv / depthwise Conv ``p`` whose float output (its folded ``act``
    applied) on the calibration data is ``x``, reading a map quantized by ``q`` (module docstring)."""
    out_q = QParams.from_range(float(x.min()), float(x.max()))
    Wq, s_w = quantize_rows(p.weight)
    s_in = np.float32(q.scale)
    real = [float(np.float64(s_in) * np.float64(s) / np.float64(np.float32(out_q.scale))) for s in s_w.tolist()]
    ms = [quantize_multiplier(r) for r in real]
    bias_f = p.bias.detach().cpu().double() if p.bias is not None else torch.zeros(len(s_w), dtype=torch.float64)
    qb = tflite_round((bias_f / (float(s_in) * s_w.double())).numpy())
    qb = torch.from_numpy(np.clip(qb, INT32_MIN, INT32_MAX).astype(np.int64))
    conv = dict(stride=p.stride, padding=p.padding, dilation=p.dilation) if p.kind != "linear" else {}
    W = Wq if p.kind != "linear" else Wq.reshape(Wq.shape[0], -1)
    return IntParam(p.kind, W, s_w, qb, torch.tensor([m for m, _ in ms], dtype=torch.int64),
                    torch.tensor([s for _, s in ms], dtype=torch.int64), q, out_q, act, *act_range(act, out_q),
                    in_shape, out_shape, **conv)


def _int_add(ops: list, a, end: tuple, h: Tensor, q: QParams, items: list, i: int, shape: tuple):
    """Append the IntAdd of the addition ``a`` (o[a.src] = ``end``: (op index, float map, quantization))
    to the branch's float map ``h`` (quantized by ``q``) at ``items[i]``; a ReLU/ReLU6 there is folded
    into its clamp. The output (and a projection's) calibrated by min/max as a layer's. Returns
    (the float sum, its quantization, the next item)."""
    j, s_float, s_q = end
    proj = None
    if a.proj is not None:
        p_float = a.proj.forward(s_float)
        proj = _int_param(a.proj, p_float, s_q, "identity", _c3(tuple(s_float.shape[1:])), shape)
        s_float, s_q = p_float, proj.out_q
    x, act = h + s_float, "identity"
    if i < len(items) and items[i].kind == "act" and items[i].act.name in FOLDED:
        act, x = items[i].act.name, items[i].forward(x)
        i += 1
    out_q = QParams.from_range(float(x.min()), float(x.max()))
    ops.append(IntAdd.make(j, proj, q, s_q, out_q, act, shape))
    return x, out_q, i
