"""Integer-only C99 export of a full-integer network (:class:`shrinknet.store.integer.IntegerNet`).

``export_integer_c(inet, "out/model.c", prefix="model")`` writes ``model.c`` and ``model.h`` (both
or neither, as the float C export: ``files.replace_files``). The header declares

    void <prefix>_forward(const int8_t *input, int8_t *output);

and defines ``<PREFIX>_INPUT_SIZE``, ``<PREFIX>_OUTPUT_SIZE``, ``<PREFIX>_INPUT_SCALE``,
``<PREFIX>_INPUT_ZERO_POINT``, ``<PREFIX>_OUTPUT_SCALE``, ``<PREFIX>_OUTPUT_ZERO_POINT`` (a caller
quantizes ``q = clamp(round(x / INPUT_SCALE) + INPUT_ZERO_POINT, -128, 127)`` and reads
``y = OUTPUT_SCALE * (q - OUTPUT_ZERO_POINT)``; the scales are float literals for the caller, the
.c never uses them), ``<PREFIX>_FLASH_BYTES`` (:meth:`IntegerNet.flash_bytes`: int8 weights, and
per output channel an int32 bias, an int32 multiplier and an int8 shift) and ``<PREFIX>_RAM_BYTES``
(the static int8 scratch buffer: the two largest consecutive maps side by side, ping-pong; with
residual additions the peak of the maps live at once, a skip held until its addition:
:meth:`IntegerNet.ram_bytes`, placed as ship/emit_residual.py places float maps: ``_placement``).

The .c includes only ``<stdint.h>`` and the header: no ``float``, no ``double``, no ``math.h``, no
division in any inner loop (average pooling divides once per output by its constant window size).
Its outputs equal :meth:`IntegerNet.forward` bit for bit:

* Linear / Conv / depthwise Conv (output channel o reads input channel o alone):
  ``acc = b'[o] + sum q_w q_x`` in int32, where ``b'[o] = q_b[o] - zp_x sum q_w[o]``
  folds the input zero point into the bias (CMSIS-NN's trick; the same integer as TFLM's
  ``sum q_w (q_x - zp_x) + q_b``). A padded convolution computes its interior outputs (every tap
  inside the map, a range fixed at export) without checks; at the border a padded tap reads
  ``zp_x`` (its ``q_x - zp_x`` is 0, as TFLM skips it). Then ``requantize`` -- TFLM's
  ``MultiplyByQuantizedMultiplier`` transcribed (SaturatingRoundingDoublingHighMul,
  RoundingDivideByPOT) -- plus the output zero point, clamped to the folded activation's range.
* A residual addition: TFLM's int8 ADD (``reference_integer_ops::AddFunc``), in place on the branch's
  map, the skip read where it was written (held there through the branch; through the projection's
  convolution first, if any).
* Sigmoid / tanh: a 256-entry int8 table (TFLM's LOGISTIC / TANH on every int8 input), in place.
* Max pooling over the in-bounds positions of each window; average pooling rounded half away
  from zero (TFLM's ``reference_integer_ops::AveragePool``; global average pooling is one window
  over the whole map, TFLite's AVERAGE_POOL_2D); ReLU after a pooling: a clamp.

Layout NCHW, batch 1, as the float C. ``input`` and ``output`` must not overlap. Not reentrant
(one static scratch buffer). Every identifier but ``<prefix>_forward`` is ``static``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..store.integer import IntAdd, IntClamp, IntegerNet, IntLut, IntParam, IntPool
from ..util.files import replace_files
from . import names
from .emit import c_float
from .export import ExportResult, check_export_paths, check_prefix

_REQUANTIZE = """\
/* TFLM's MultiplyByQuantizedMultiplier (tensorflow/lite/kernels/internal/common.h, double rounding):
 * RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc * 2^left, multiplier), right). */
static int32_t requantize(int32_t acc, int32_t multiplier, int shift)
{
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    int32_t a = (int32_t)((uint32_t)acc << left);
    int64_t ab = (int64_t)a * (int64_t)multiplier;
    int64_t nudge = ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
    int64_t sum = ab + nudge;
    /* sum / 2^31 rounded toward zero, as C's division; by shifts */
    int32_t high = (int32_t)((sum < 0 ? sum + (int64_t)0x7fffffff : sum) >> 31);
    uint32_t mask = ((uint32_t)1 << right) - 1u;
    uint32_t remainder = (uint32_t)high & mask;
    uint32_t threshold = (mask >> 1) + (high < 0 ? 1u : 0u);
    if (a == INT32_MIN && multiplier == INT32_MIN)
        return INT32_MAX;
    return (high >> right) + (remainder > threshold ? 1 : 0);
}
"""


def _array(name: str, values, ctype: str) -> str:
    items = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = ",\n    ".join(", ".join(items[i:i + 16]) for i in range(0, len(items), 16))
    return f"static const {ctype} {name}[{len(items)}] = {{\n    {lines}\n}};\n"


def _clamp(v: str, lo: int, hi: int) -> str:
    if lo == -128 and hi == 127:
        return f"(int8_t)({v} < -128 ? -128 : ({v} > 127 ? 127 : {v}))"
    return f"(int8_t)({v} < {lo} ? {lo} : ({v} > {hi} ? {hi} : {v}))"


def _param_arrays(k: int, op: IntParam) -> str:
    O = op.weight.shape[0]
    W = op.weight.to(dtype=op.weight.dtype).reshape(O, -1).numpy().astype(np.int64)
    folded = op.bias.numpy().astype(np.int64) - op.in_q.zero_point * W.sum(axis=1)
    if np.abs(folded).max(initial=0) >= 2**31:
        raise ValueError(f"layer {k}: a bias with the input zero point folded in overflows int32")
    return (_array(f"layer{k}_weight", W, "int8_t")
            + _array(f"layer{k}_bias", folded, "int32_t")
            + _array(f"layer{k}_multiplier", op.multiplier.numpy(), "int32_t")
            + _array(f"layer{k}_shift", op.shift.numpy(), "int8_t"))


def _linear_code(k: int, op: IntParam, src: str, dst: str) -> str:
    O, n = op.weight.shape[0], math.prod(op.weight.shape[1:])
    return f"""{{ /* layer {k}: linear {n} -> {O}, int8; output zero point {op.out_q.zero_point}, clamp [{op.act_min}, {op.act_max}] */
        int i, j;
        for (i = 0; i < {O}; i++) {{
            const int8_t *w = layer{k}_weight + i * {n};
            int32_t acc = layer{k}_bias[i];
            for (j = 0; j < {n}; j++) /* a plain loop: clang unrolls it better than a hand-unrolled one */
                acc += (int32_t)w[j] * {src}[j];
            acc = requantize(acc, layer{k}_multiplier[i], layer{k}_shift[i]) + {op.out_q.zero_point};
            {dst}[i] = {_clamp("acc", op.act_min, op.act_max)};
        }}
    }}"""


def _interior(n: int, n_out: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """[lo, hi): the outputs along one axis whose every tap lies inside the map (o s - p >= 0 and
    o s - p + (k - 1) d < n); an empty range (lo = hi) when there is none."""
    inside = [o for o in range(n_out) if o * s - p >= 0 and o * s - p + (k - 1) * d < n]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)


def _conv_code(k: int, op: IntParam, src: str, dst: str) -> str:
    """A convolution's loop nest; a depthwise one (TFLM's DepthwiseConvPerChannel) is the same nest
    with output channel o reading input channel o alone (the channel loop runs once, c = o)."""
    C, H, W = op.in_shape
    O, OH, OW = op.out_shape
    kh, kw = op.weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
    zp = op.in_q.zero_point
    depthwise = op.kind == "depthwise"
    what = f"depthwise convolution {C} channels" if depthwise else f"convolution {C} -> {O} channels"
    head = (f"/* layer {k}: {what}, kernel {kh}x{kw}, stride {op.stride}, padding "
            f"{op.padding}, dilation {op.dilation}, int8; output zero point {op.out_q.zero_point}, clamp "
            f"[{op.act_min}, {op.act_max}] */")
    channels = "c = o; c <= o; c++" if depthwise else f"c = 0; c < {C}; c++"
    per_o = kh * kw if depthwise else C * kh * kw
    fast = f"""for ({channels})
                        for (i = 0; i < {kh}; i++) {{
                            const int8_t *row = {src} + (c * {H} + oh * {sh} - {ph} + i * {dh}) * {W} + ow * {sw} - {pw};
                            for (j = 0; j < {kw}; j++)
                                acc += (int32_t)*w++ * row[j * {dw}];
                        }}"""
    if ph == 0 and pw == 0:
        inner = fast
    else:  # interior outputs as unpadded; at the border a padded tap reads zp_x (its q - zp is 0, as TFLM skips it)
        (h0, h1), (w0, w1) = (_interior(n, o, k_, s_, p_, d_) for n, o, k_, s_, p_, d_ in
                              zip((H, W), (OH, OW), (kh, kw), op.stride, op.padding, op.dilation))
        inner = f"""if (oh >= {h0} && oh < {h1} && ow >= {w0} && ow < {w1}) {{
                        {fast}
                    }} else {{
                        for ({channels})
                            for (i = 0; i < {kh}; i++) {{
                                int ih = oh * {sh} - {ph} + i * {dh};
                                for (j = 0; j < {kw}; j++) {{
                                    int iw = ow * {sw} - {pw} + j * {dw};
                                    int32_t v = (ih < 0 || ih >= {H} || iw < 0 || iw >= {W}) ? {zp}
                                                : {src}[(c * {H} + ih) * {W} + iw];
                                    acc += (int32_t)*w++ * v;
                                }}
                            }}
                    }}"""
    return f"""{{ {head}
        int o, oh, ow, c, i, j;
        for (o = 0; o < {O}; o++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    const int8_t *w = layer{k}_weight + o * {per_o};
                    int32_t acc = layer{k}_bias[o];
                    {inner}
                    acc = requantize(acc, layer{k}_multiplier[o], layer{k}_shift[o]) + {op.out_q.zero_point};
                    {dst}[(o * {OH} + oh) * {OW} + ow] = {_clamp("acc", op.act_min, op.act_max)};
                }}
    }}"""


def _pool_code(op: IntPool, src: str, dst: str) -> str:
    C, H, W = op.in_shape
    _, OH, OW = op.out_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = op.kernel, op.stride, op.padding, op.dilation
    if op.kind == "maxpool":
        init, step = "-128", "if (v > m) m = v;"
        finish = _clamp("m", op.act_min, op.act_max)
        what = f"max pooling {op.kernel} stride {op.stride} padding {op.padding} dilation {op.dilation}"
    else:
        n = kh * kw
        init, step = "0", "m += v;"
        finish = _clamp(f"(m > 0 ? (m + {n // 2}) / {n} : (m - {n // 2}) / {n})", op.act_min, op.act_max)
        what = f"average pooling {op.kernel} stride {op.stride} (TFLM's rounding: half away from zero)"
    return f"""{{ /* {what}, int8 */
        int c, oh, ow, i, j;
        for (c = 0; c < {C}; c++)
            for (oh = 0; oh < {OH}; oh++)
                for (ow = 0; ow < {OW}; ow++) {{
                    int32_t m = {init};
                    for (i = 0; i < {kh}; i++) {{
                        int ih = oh * {sh} - {ph} + i * {dh};
                        if (ih < 0 || ih >= {H}) continue;
                        for (j = 0; j < {kw}; j++) {{
                            int iw = ow * {sw} - {pw} + j * {dw};
                            int32_t v;
                            if (iw < 0 || iw >= {W}) continue;
                            v = {src}[(c * {H} + ih) * {W} + iw];
                            {step}
                        }}
                    }}
                    {dst}[(c * {OH} + oh) * {OW} + ow] = {finish};
                }}
    }}"""


def _clamp_code(op: IntClamp, src: str, dst: str) -> str:
    return f"""{{ /* {op.act} after pooling: clamp [{op.act_min}, {op.act_max}] */
        int i;
        for (i = 0; i < {math.prod(op.out_shape)}; i++) {{
            int32_t v = {src}[i];
            {dst}[i] = {_clamp("v", op.act_min, op.act_max)};
        }}
    }}"""


def _placement(inet: IntegerNet) -> tuple[list, dict]:
    """Where every op writes in the scratch buffer of ``inet.ram_bytes()`` bytes (None: the caller's
    output), and each projection's map ({add op: offset}): ship/emit_residual.py's placement on the
    int8 ops. Every map goes to one end of the free region [lo, hi): outside a branch consecutive maps
    at opposite ends (ping-pong; in-place ops -- clamps, tables, additions -- keep their input's);
    at a branch's first op the skip (the current map) is held at its end and the branch runs in the
    rest, its first map at the end that leaves the map the addition writes into at the far end from
    the skip; a projection's map at the end the branch's map does not hold. The maps in use at an op
    are then the live maps ``ram_bytes`` sums, so they fit."""
    ops, S = inet.ops, inet.ram_bytes()
    in_place = ("clamp", "lut", "add")
    starts = {op.skip + 1: j for j, op in enumerate(ops) if op.kind == "add"}
    lo, hi, cur_size, cur_low, held, first = 0, S, 0, False, None, None
    place, proj_at = [], {}
    for j, op in enumerate(ops):
        size = math.prod(op.out_shape)
        if j in starts:  # hold the skip at its end; the branch's writes alternate in the rest
            held = (lo, hi)
            lo, hi = (lo + cur_size, hi) if cur_low else (lo, hi - cur_size)
            n = sum(ops[i].kind not in in_place for i in range(j, starts[j]))
            first = (not cur_low) if n % 2 == 1 else cur_low
        if j == len(ops) - 1:
            place.append(None)
        elif j and op.kind in in_place:
            place.append(place[-1])
        else:
            cur_low = first if first is not None else not cur_low
            first, cur_size = None, size
            place.append(lo if cur_low else hi - size)
        if op.kind == "add":
            if op.proj is not None:
                proj_at[j] = hi - size if cur_low else lo
            lo, hi = held
        for off in ([place[j]] if place[j] is not None else []) + ([proj_at[j]] if j in proj_at else []):
            if not 0 <= off <= S - size:
                raise RuntimeError(f"integer C placement: op {j} at {off}+{size} outside the {S}-byte buffer")
    return place, proj_at


def _add_code(op: IntAdd, src: str, skip: str, dst: str) -> str:
    """TFLM's int8 ADD (``reference_integer_ops::AddFunc``): each side's (q - zp) << 20 scaled by
    MultiplyByQuantizedMultiplierSmallerThanOneExp -- ``requantize`` with a shift <= 0 is exactly it --
    summed, scaled by the output multiplier, plus the output zero point, clamped."""
    m1, s1, m2, s2, mo, so = op.params
    return f"""{{ /* residual addition: TFLM's int8 ADD; output zero point {op.out_q.zero_point}, clamp [{op.act_min}, {op.act_max}] */
        int i;
        for (i = 0; i < {math.prod(op.out_shape)}; i++) {{
            int32_t a = requantize(((int32_t){src}[i] - ({op.in_q.zero_point})) * (1 << {op.LEFT_SHIFT}), {m1}, {s1});
            int32_t b = requantize(((int32_t){skip}[i] - ({op.skip_q.zero_point})) * (1 << {op.LEFT_SHIFT}), {m2}, {s2});
            int32_t v = requantize(a + b, {mo}, {so}) + {op.out_q.zero_point};
            {dst}[i] = {_clamp("v", op.act_min, op.act_max)};
        }}
    }}"""


def _lut_code(name: str, op: IntLut, src: str, dst: str) -> str:
    return f"""{{ /* {op.act}: TFLM's int8 {'LOGISTIC' if op.act == 'sigmoid' else 'TANH'}, tabulated; output zero point {op.out_q.zero_point} */
        int i;
        for (i = 0; i < {math.prod(op.out_shape)}; i++)
            {dst}[i] = {name}[{src}[i] + 128];
    }}"""


def integer_c_sources(inet: IntegerNet, prefix: str, header_name: str, meta: dict | None = None) -> tuple[str, str]:
    """(header, source) of the integer-only C of ``inet`` (module docstring)."""
    from ..version import __version__
    import json

    macro = names.c_prefix(prefix).upper()
    flash, ram = inet.flash_bytes(), inet.ram_bytes()
    scratch, (place, proj_at) = max(ram, 1), _placement(inet)
    residual = any(op.kind == "add" for op in inet.ops)
    lines = [f"Generated by shrinknet {__version__}; do not edit, export again instead.",
             f"Full-integer network (int8 weights and activations, int32 accumulators; TFLite int8 spec), input "
             f"{'x'.join(map(str, inet.in_shape))} ({'NCHW' if len(inet.in_shape) > 1 else 'features'}), batch 1:",
             *(f"  layer {k}: {d}" for k, d in enumerate(inet.describe)),
             f"Flash: {flash} bytes of int8 weights, per-channel int32 biases, int32 multipliers and int8 shifts, "
             "and 256-byte sigmoid/tanh tables, not counting code.",
             f"RAM:   {ram} bytes of int8 scratch (the two largest consecutive maps"
             + ("; the peak of the maps live at once: a residual skip is held until its addition" if residual else "")
             + "), plus the caller's input and output.",
             f"Calibration: {inet.calibration}."]
    if meta:
        lines.append("Meta:  " + json.dumps(meta))
    banner = "/*\n" + "".join(f" * {names.c_comment(line)}".rstrip() + "\n" for line in lines) + " */\n"
    guard = f"{macro}_H"
    header = f"""{banner}
#ifndef {guard}
#define {guard}

#include <stdint.h>

#define {macro}_INPUT_SIZE {inet.in_features}
#define {macro}_OUTPUT_SIZE {inet.out_features}
#define {macro}_INPUT_SCALE {c_float(inet.input_q.scale)}
#define {macro}_INPUT_ZERO_POINT {inet.input_q.zero_point}
#define {macro}_OUTPUT_SCALE {c_float(inet.output_q.scale)}
#define {macro}_OUTPUT_ZERO_POINT {inet.output_q.zero_point}
#define {macro}_FLASH_BYTES {flash}
#define {macro}_RAM_BYTES {ram}

#ifdef __cplusplus
extern "C" {{
#endif

/* output[{macro}_OUTPUT_SIZE] = network(input[{macro}_INPUT_SIZE]), int8 in and out:
 * q_in = clamp(round(x / {macro}_INPUT_SCALE) + {macro}_INPUT_ZERO_POINT, -128, 127),
 * y = {macro}_OUTPUT_SCALE * (q_out - {macro}_OUTPUT_ZERO_POINT).
 * input and output must not overlap. Not reentrant: uses a static scratch buffer. */
void {prefix}_forward(const int8_t *input, int8_t *output);

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""
    arrays, body = [], []
    n_param, src, outs = 0, "input", []
    for k, op in enumerate(inet.ops):
        dst = "output" if place[k] is None else f"(scratch + {place[k]})"
        if isinstance(op, IntAdd):
            skip = outs[op.skip]
            if op.proj is not None:
                j = n_param
                n_param += 1
                arrays.append(f"/* {names.c_comment(f'layer {j}: projection of the skip')} */\n"
                              + _param_arrays(j, op.proj))
                body.append(_conv_code(j, op.proj, skip, f"(scratch + {proj_at[k]})"))
                skip = f"(scratch + {proj_at[k]})"
            body.append(_add_code(op, src, skip, dst))
        elif isinstance(op, IntParam):
            j = n_param
            n_param += 1
            arrays.append(f"/* {names.c_comment(f'layer {j}: {op.kind}')} */\n" + _param_arrays(j, op))
            body.append((_linear_code if op.kind == "linear" else _conv_code)(j, op, src, dst))
        elif isinstance(op, IntPool):
            body.append(_pool_code(op, src, dst))
        elif isinstance(op, IntLut):
            name = f"table{k}"
            arrays.append(f"/* {op.act} table of operator {k} */\n" + _array(name, op.table.numpy(), "int8_t"))
            body.append(_lut_code(name, op, src, dst))
        else:
            body.append(_clamp_code(op, src, dst))
        src = dst
        outs.append(dst)
    source = (banner + f'\n#include <stdint.h>\n\n#include "{names.c_include_name(header_name)}"\n\n' + _REQUANTIZE + "\n"
              + "\n".join(arrays) + f"\nstatic int8_t scratch[{scratch}];\n\n"
              + f"void {prefix}_forward(const int8_t *input, int8_t *output)\n{{\n    "
              + "\n    ".join(body) + "\n}\n")
    return header, source


def export_integer_c(inet: IntegerNet, path: str | os.PathLike, prefix: str = "shrinknet",
                     meta: dict | None = None, overwrite: bool = False) -> ExportResult:
    """Write the integer-only C of ``inet`` to ``path`` (a ``.c``; the ``.h`` beside it), both or neither.

    The paths are checked as every export's (``export.check_export_paths``): a name ending in .c, a
    header name that can stand in ``#include``, never an input, an existing file replaced only with
    ``overwrite`` and only when shrinknet wrote it. Raises ValueError (OutputError, InputError) for
    those and for a prefix that is not a C identifier. ``ExportResult.dtype`` is ``"int8-integer"``.
    """
    check_prefix(prefix)
    expect = check_export_paths(path, "c", overwrite)
    path = Path(path)
    header = path.with_suffix(".h")
    h_text, c_text = integer_c_sources(inet, prefix, header.name, meta)
    replace_files([(header, h_text), (path, c_text)], expect)
    return ExportResult([path, header], inet.flash_bytes(), inet.ram_bytes(), "c", "int8-integer")
