"""int8 storage: symmetric per-row quantization of weights, and its byte count.

A weight matrix W (out, in) is stored as int8 values q (out, in) and one float32 scale per
output row: ``s_i = max_j |w_ij| / 127`` and ``q_ij = round(w_ij / s_i)`` in [-127, 127]; the
device computes with the dequantized weights ``q_ij * s_i`` (float arithmetic: it needs an FPU).
Biases stay float32. Bytes on the device: ``out * in`` (int8 weights) + ``4 * out`` (scales)
+ ``4 * out`` (biases, when the layer has them).

The scales are chosen so that quantizing is idempotent on its own output: quantizing the
dequantized weights again gives back exactly the same int8 values and scales. That is what
lets ``export(network, dtype="int8")`` rebuild a run's int8 weights from the float network
``PruneResult.network(k)`` hands out.
"""

from __future__ import annotations

import torch
from torch import Tensor

QMAX = 127  # symmetric: -127..127 (-128 unused, so that negation is exact)


def _scale(W: Tensor) -> Tensor:
    """s_i = max_j |w_ij| / 127 (float32), 1 for an all-zero row (its q are all 0)."""
    m = W.detach().abs().amax(dim=1).to(torch.float64) / QMAX
    return torch.where(m > 0, m, torch.ones_like(m)).to(torch.float32)


def quantize_rows(W: Tensor) -> tuple[Tensor, Tensor]:
    """(q, scale): int8 q (out, in) and float32 scale (out,) with W ~ q * scale[:, None].

    Each |q * s - w| is at most half a step (s / 2). The scale is iterated to a fixed point (at
    most a few rounds, one in practice) so that ``quantize_rows(dequantize(q, s)) == (q, s)``.
    """
    if W.ndim != 2:
        raise ValueError(f"quantize_rows takes a 2-D weight matrix, got shape {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("weights are not finite; cannot quantize to int8")
    Wc = W.detach().to("cpu", torch.float64)
    s = _scale(Wc)
    for _ in range(8):
        q = torch.round(Wc / s.double()[:, None]).clamp_(-QMAX, QMAX)
        deq = dequantize(q.to(torch.int8), s)
        s_again = _scale(deq)
        if torch.equal(s_again, s):
            break
        Wc, s = deq.double(), s_again
    return q.to(torch.int8), s


def dequantize(q: Tensor, scale: Tensor) -> Tensor:
    """Float32 weights the device computes with: q_ij * s_i."""
    return q.to(torch.float32) * scale.to(torch.float32)[:, None]


def fake_quantize(W: Tensor) -> Tensor:
    """W quantized to int8 and back, on W's device and dtype."""
    q, s = quantize_rows(W)
    return dequantize(q, s).to(W.device, W.dtype)


def int8_layer_bytes(n_out: int, n_in: int, bias: bool) -> int:
    """int8 weights + one float32 scale per row + float32 biases."""
    return n_out * n_in + 4 * n_out + (4 * n_out if bias else 0)

