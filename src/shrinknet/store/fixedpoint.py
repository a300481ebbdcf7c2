"""TFLM's fixed-point arithmetic (tensorflow/lite/kernels/internal/common.h, quantization_util.cc) and the
int8 quantization parameters of one tensor, as store/integer.py's module docstring reads the TFLite
int8 spec (the integer reference's building blocks; store/integer.py re-exports them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
SUPPORTED_ACTS = ("identity", "relu", "relu6", "sigmoid", "tanh")
FOLDED = ("relu", "relu6")  # a clamp in the layer's requantization


# -- TFLM's fixed-point arithmetic (tensorflow/lite/kernels/internal/common.h, quantization_util.cc) --
def tflite_round(x: np.ndarray | float) -> np.ndarray:
    """TfLiteRound (std::round): half away from zero."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLM ``QuantizeMultiplier``: (M, shift) with real ~= M * 2^shift / 2^31, M in [2^30, 2^31).

    q, shift = frexp(real); M = round(q * 2^31) (half away from zero); M == 2^31 -> M / 2, shift + 1;
    shift < -31 -> (0, 0). real == 0 -> (0, 0).
    """
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(tflite_round(q * (1 << 31)))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def _trunc_div(a: Tensor, d: int) -> Tensor:
    return torch.div(a, d, rounding_mode="trunc")  # C's integer division


def saturating_rounding_doubling_high_mul(a: Tensor, b: Tensor) -> Tensor:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int64 tensors holding int32 values:
    (a * b + nudge) / 2^31 (C division), nudge = 2^30 for a * b >= 0 else 1 - 2^30;
    INT32_MAX for a == b == INT32_MIN."""
    ab = a * b
    nudge = torch.where(ab >= 0, torch.full_like(ab, 1 << 30), torch.full_like(ab, 1 - (1 << 30)))
    out = _trunc_div(ab + nudge, 1 << 31)
    return torch.where((a == INT32_MIN) & (b == INT32_MIN), torch.full_like(out, INT32_MAX), out)


def rounding_divide_by_pot(x: Tensor, exponent: Tensor) -> Tensor:
    """gemmlowp ``RoundingDivideByPOT``: x / 2^exponent rounded to nearest, ties away from zero."""
    mask = (torch.ones_like(x) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(x.dtype)
    return (x >> exponent) + (remainder > threshold).to(x.dtype)


def multiply_by_quantized_multiplier(x: Tensor, multiplier: Tensor, shift: Tensor) -> Tensor:
    """TFLM ``MultiplyByQuantizedMultiplier(int32 x, int32 M, int shift)`` (double rounding),
    elementwise on int64 tensors (M and shift broadcast, e.g. per output channel)."""
    left = shift.clamp(min=0)
    right = (-shift).clamp(min=0)
    shifted = x * (torch.ones_like(left) << left)
    if bool(((shifted < INT32_MIN) | (shifted > INT32_MAX)).any()):
        raise OverflowError("an accumulator overflows int32 when shifted left by its requantization shift")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


# -- quantization parameters ------------------------------------------------------------------
@dataclass(frozen=True)
class QParams:
    """One int8 tensor's quantization: real = scale * (q - zero_point); scale is a float32 number."""

    scale: float
    zero_point: int

    @classmethod
    def from_range(cls, rmin: float, rmax: float) -> "QParams":
        """The min/max rule (module docstring): [rmin, rmax] widened to include 0 onto -128..127."""
        rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
        if rmax == rmin:
            return cls(1.0, 0)
        scale = float(np.float32((rmax - rmin) / 255.0))
        zp = int(np.clip(tflite_round(INT8_MIN - rmin / scale), INT8_MIN, INT8_MAX))
        return cls(scale, zp)

    def quantize(self, x: Tensor) -> Tensor:
        """TFLM ``AffineQuantize``: clamp(round(x / scale) + zp) with x / scale in float32."""
        v = x.detach().cpu().to(torch.float32) / np.float32(self.scale)
        q = torch.sign(v) * torch.floor(v.abs() + 0.5)
        return (q.to(torch.int64) + self.zero_point).clamp(INT8_MIN, INT8_MAX).to(torch.int8)

    def dequantize(self, q: Tensor) -> Tensor:
        return (q.to(torch.float64) - self.zero_point) * self.scale

    def level(self, real: float) -> int:
        """The int8 level of ``real`` (unclamped), as ``CalculateActivationRangeQuantized`` does."""
        return self.zero_point + int(tflite_round(np.float32(real) / np.float32(self.scale)))


def act_range(act: str, q: QParams) -> tuple[int, int]:
    """The clamp of a folded activation in the output's quantization (TFLM CalculateActivationRangeQuantized)."""
    if act == "relu":
        return max(INT8_MIN, q.level(0.0)), INT8_MAX
    if act == "relu6":
        return max(INT8_MIN, q.level(0.0)), min(INT8_MAX, q.level(6.0))
    return INT8_MIN, INT8_MAX
