"""int8 sigmoid and tanh exactly as TFLite Micro's LOGISTIC and TANH kernels compute them.

TFLM (``kernels/logistic_common.cc``, ``tanh_common.cc``; ``reference_integer_ops::Logistic`` and
``Tanh``) rescales ``x - zp_in`` into a 32-bit fixed-point number with 4 integer bits
(``input_multiplier``, ``input_left_shift`` from ``frexp(s_in * 2^27)``), saturates outside
``input_range_radius`` and evaluates gemmlowp's fixed-point ``logistic`` / ``tanh``
(``fixedpoint/fixedpoint.h``: exp on [-1/4, 0) by a Taylor expansion around -1/8, a barrel
shifter of exp(-2^k) constants, Newton-Raphson division with 48/17 and -32/17). The outputs have
the spec's fixed quantization: sigmoid scale 1/256, zero point -128; tanh scale 1/128, zero point 0.

An int8 input has 256 values, so each kernel is transcribed here once, in Python integers with
int32 wrap-around where C would wrap, and tabulated: :func:`logistic_table` / :func:`tanh_table`
give the 256 outputs (index ``q + 128``). The integer reference and the integer-only C both look
the table up, so they equal TFLM wherever this transcription does (tests/test_tflite.py checks it
against the TFLM interpreter).
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INPUT_INTEGER_BITS = 4


def _w(v: int) -> int:
    """int32 wrap-around."""
    return (v + 2**31) % 2**32 - 2**31


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    return _c_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)


def rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def srmbpot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent>."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return _w(x << exponent)


def rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    return _w(_c_div(s + (1 if s >= 0 else -1), 2))


def one(bits: int) -> int:
    """F<bits>::One()."""
    return INT32_MAX if bits == 0 else 1 << (31 - bits)


def constant_pot(bits: int, exponent: int) -> int:
    return 1 << (31 - bits + exponent)


def mul(a: int, b: int) -> int:
    """F<a_bits> * F<b_bits> -> F<a_bits + b_bits>: SRDHM on the raw values."""
    return srdhm(a, b)


def rescale(x: int, src_bits: int, dst_bits: int) -> int:
    return srmbpot(x, src_bits - dst_bits)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """F0 -> F0."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = _w(a + constant_pot(0, -3))
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = srmbpot(x4, -2)
    poly = srmbpot(_w(mul(_w(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return _w(constant_term + mul(constant_term, _w(x + poly)))  # AddSaturatingIf16Bit: plain add for int32


BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242)]


def exp_on_negative_values(a: int, bits: int) -> int:
    """F<bits> (a <= 0) -> F0."""
    frac = 31 - bits
    one_quarter = constant_pot(bits, -2)
    mask = one_quarter - 1
    a_mod = _w((a & mask) - one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(a_mod, bits, 0))
    remainder = _w(a_mod - a)
    for exponent, multiplier in BARREL:
        if bits > exponent:
            shift = frac + exponent
            if remainder & (1 << shift):
                result = mul(result, multiplier)
    if bits > 5:
        clamp = -(1 << (36 - bits))
        if a < clamp:
            result = 0
    return one(0) if a == 0 else result


def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    half_denominator = rounding_half_sum(a, one(0))
    x = _w(1515870810 + mul(half_denominator, -1010580540))  # F2: 48/17 - 32/17 * d
    for _ in range(3):
        hdx = mul(half_denominator, x)  # F0 * F2 -> F2
        omhdx = _w(one(2) - hdx)
        x = _w(x + rescale(mul(x, omhdx), 4, 2))  # F2 * F2 = F4 -> F2
    return rescale(x, 2 - 1, 0)  # ExactMulByPot<-1>: F2 -> F1 (same raw), then Rescale<0>


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    half_denominator = rounding_half_sum(a, one(0))
    x = _w(1515870810 + mul(half_denominator, -1010580540))
    for _ in range(3):
        hdx = mul(half_denominator, x)
        omhdx = _w(one(2) - hdx)
        x = _w(x + rescale(mul(x, omhdx), 4, 2))
    return rescale(_w(x - one(2)), 2, 0)


def logistic_fixed(a: int, bits: int) -> int:
    """gemmlowp logistic: F<bits> -> F0."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else _w(-a)
    pos = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(_w(-abs_a), bits))
    return pos if a > 0 else _w(one(0) - pos)


def tanh_fixed(a: int, bits: int) -> int:
    """gemmlowp tanh: F<bits> -> F0 (neg_tanh_on_negative_values: exp of ExactMulByPot<1>, i.e. the
    same raw read as F<bits + 1>)."""
    if a == 0:
        return 0
    n = a if a < 0 else _w(-a)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, bits + 1))
    return _w(-t) if a < 0 else t


def input_rescale(scale: float) -> tuple[int, int, int]:
    """TFLM's (input_multiplier, input_left_shift, input_range_radius) for an int8 input of ``scale``."""
    real = float(np.float32(scale)) * float(1 << (31 - INPUT_INTEGER_BITS))
    q, shift = math.frexp(real)
    multiplier = int(np.sign(q) * np.floor(abs(q) * (1 << 31) + 0.5))
    radius = math.floor(1.0 * ((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS)) / (1 << shift)) \
        if shift >= 0 else math.floor(1.0 * ((1 << INPUT_INTEGER_BITS) - 1) * (1 << (31 - INPUT_INTEGER_BITS))
                                      * (1 << -shift))
    return multiplier, shift, radius


def _mbqm(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(_w(x * (1 << left)), m), right)


def logistic_table(scale: float, zero_point: int) -> np.ndarray:
    """TFLM's int8 LOGISTIC for every input q in -128..127 (index q + 128); output scale 1/256, zp -128."""
    return _table(scale, zero_point, logistic_fixed, 31 - 8, -128)


def tanh_table(scale: float, zero_point: int) -> np.ndarray:
    """TFLM's int8 TANH for every input q in -128..127 (index q + 128); output scale 1/128, zp 0."""
    return _table(scale, zero_point, tanh_fixed, 31 - 7, 0)


def _table(scale: float, zero_point: int, fixed, shift: int, out_zero: int) -> np.ndarray:
    """Both tables: inputs beyond the radius saturate; inside it, the input rescaled to Q(INPUT_INTEGER_BITS),
    ``fixed`` (the Q0.31 function), then a rounding shift by ``shift`` to 8 bits around ``out_zero``."""
    m, s, radius = input_rescale(scale)
    out = []
    for q in range(-128, 128):
        x = q - zero_point
        if x <= -radius:
            out.append(-128)
        elif x >= radius:
            out.append(127)
        else:
            v = rdbpot(fixed(_mbqm(x, m, s), INPUT_INTEGER_BITS), shift)
            out.append(min(max(v + out_zero, -128), 127))
    return np.array(out, dtype=np.int8)
