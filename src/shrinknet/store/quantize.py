"""Storage as the device reads it back: int8 per-output-unit quantization of weights and its byte
count, and every storage dtype's round trip (:func:`stored`; float16 rounds weights and biases).

A weight tensor W whose first axis is the output unit -- a Linear matrix (out, in), a
convolution kernel (o, c, kh, kw) or (o, c, k) -- is stored per output unit i, over the row
``w_i = W.reshape(out, -1)[i]`` (an output channel's whole kernel), as int8 values q (W's shape)
and one float32 scale: ``s_i = max_j |w_ij| / 127`` and ``q_ij = round(w_ij / s_i)`` in
[-127, 127]; the device computes with the dequantized weights ``q_ij * s_i`` (float arithmetic:
it needs an FPU). Biases stay float32. Bytes on the device: ``out * per_row`` (int8 weights) +
``4 * out`` (scales) + ``4 * out`` (biases, when the layer has them): :func:`int8_layer_bytes`.

The scales are chosen so that quantizing is idempotent on its own output: quantizing the
dequantized weights again gives back exactly the same int8 values and scales. That is what
lets ``export(network, dtype="int8")`` rebuild a run's int8 weights from the float network
``PruneResult.network(k)`` hands out.

:func:`stored` is the round trip of every storage dtype (float16 rounds weights and biases, int8
quantizes weights as above, float32 and float64 leave numbers unchanged): ``refit.Refitter``
applies it to every layer, so a run ranks, refits and records the network as stored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import dtypes

QMAX = 127  # symmetric: -127..127 (-128 unused, so that negation is exact)


def _scale(W: Tensor) -> Tensor:
    """s_i = max_j |w_ij| / 127 (float32) of W (out, per_row), 1 for an all-zero row (its q are all 0)."""
    m = W.detach().abs().amax(dim=1).to(torch.float64) / QMAX
    return torch.where(m > 0, m, torch.ones_like(m)).to(torch.float32)


def quantize_rows(W: Tensor) -> tuple[Tensor, Tensor]:
    """(q, scale): int8 q of W's shape and float32 scale (out,) with W ~ q * scale (per output unit).

    W: (out, in), or a kernel (o, c, ...) quantized per output channel (rows of W.reshape(o, -1)).
    Each |q * s - w| is at most half a step (s / 2). The scale is iterated to a fixed point (at
    most a few rounds, one in practice) so that ``quantize_rows(dequantize(q, s)) == (q, s)``.
    """
    if W.ndim < 2:
        raise ValueError(f"quantize_rows takes a weight matrix or kernel (out, ...), got shape {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("weights are not finite; cannot quantize to int8")
    shape = W.shape
    Wc = W.detach().to("cpu", torch.float64).reshape(shape[0], -1)  # (out, per_row)
    s = _scale(Wc)
    for _ in range(8):
        q = torch.round(Wc / s.double()[:, None]).clamp_(-QMAX, QMAX)
        deq = dequantize(q.to(torch.int8), s)
        s_again = _scale(deq)
        if torch.equal(s_again, s):
            break
        Wc, s = deq.double(), s_again
    return q.to(torch.int8).reshape(shape), s


def dequantize(q: Tensor, scale: Tensor) -> Tensor:
    """Float32 weights the device computes with: q_ij * s_i (q of any shape (out, ...))."""
    return q.to(torch.float32) * scale.to(torch.float32).view(-1, *([1] * (q.ndim - 1)))


def fake_quantize(W: Tensor) -> Tensor:
    """W quantized to int8 and back, on W's device and dtype."""
    q, s = quantize_rows(W)
    return dequantize(q, s).to(W.device, W.dtype)


def int8_layer_bytes(n_out: int, per_row: int, bias: bool) -> int:
    """int8 weights + one float32 scale per output unit + float32 biases; ``per_row``: weights of
    one output unit (a Linear's inputs, a convolution's in_channels * kernel size)."""
    return n_out * per_row + 4 * n_out + (4 * n_out if bias else 0)


# -- every storage dtype's round trip ------------------------------------------------------------
rounds = dtypes.rounds  # float16 and int8 change numbers; float32 and float64 store them as they are


def storage_name(storage: str | None = None, int8: bool = False) -> str:
    """The storage dtype ``storage`` names (None: "float32"), or "int8" for the older flag ``int8=True``;
    refuses an unknown dtype and a flag that contradicts ``storage``."""
    if int8 and storage not in (None, "int8"):
        raise ValueError(f"int8=True contradicts storage={storage!r}")
    return dtypes.name("int8" if int8 else storage or "float32")


def stored(t: Tensor, storage: str, weight: bool = True) -> Tensor:
    """``t`` as the device reads it back after storing it at ``storage``, on t's device and dtype.

    float16: every number rounded to the nearest float16 (``t.half()``), weights and biases; the
    arithmetic stays t's dtype (the exports compute in float32). int8: weights quantized per
    output unit (:func:`fake_quantize`), biases unchanged (stored as float32). float32, float64:
    unchanged (``t`` itself). ``weight``: whether t is a weight tensor (out, ...) or a bias.
    """
    if storage == "float16":
        h = t.half()
        if not bool(torch.isfinite(h).all()) and bool(torch.isfinite(t).all()):
            raise ValueError("a weight or bias beyond float16's range (largest magnitude 65504): "
                             "choose dtype float32 or int8")
        return h.to(t.dtype)
    if storage == "int8":
        return fake_quantize(t) if weight else t
    if storage_name(storage) in ("float32", "float64"):
        return t
