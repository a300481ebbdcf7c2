"""Input scaling: standardize inputs for training, then fold the scaling into the first layer.

Training on standardized inputs z = (x - mean) / std and then folding the affine map into the
first Linear layer gives a network that takes the raw inputs x exactly:

    W z + b = W ((x - mean) / std) + b = W' x + b',   W' = W / std (column-wise),  b' = b - W' mean

So the saved model, its pruned versions and its ONNX and C exports all take raw inputs like the
user's data, and nothing downstream (pruning, surgery, export) needs to know about scaling.
Constant features (std 0) get std 1: they carry no information, and dividing by 0 is undefined.
Nearly constant features (a pixel that is 0 in all but a few images) have their std raised to
``STD_FLOOR`` times their own range, so no standardized training value exceeds 1 / STD_FLOOR in
magnitude: dividing by their tiny std would turn a rare non-zero value into an input of hundreds
of standard deviations, make training unstable and, once folded, give the first layer a few huge
weights that set every int8 row scale. For a typical feature (std about range / 6) it changes nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .network import as_net

UNSCALED = 10.0  # inputs beyond +-10 saturate sigmoid/tanh units at the default initialization
STD_FLOOR = 0.1  # a feature's std is at least this fraction of its range (max - min)


def fit(X) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each input feature of ``X`` (n, d), in float64; std 0 becomes 1, and a
    nearly constant feature's std is raised to ``STD_FLOOR`` times its range."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    constant = std <= 1e-12 * (1 + np.abs(mean))
    std = np.maximum(std, STD_FLOOR * (X.max(axis=0) - X.min(axis=0)))
    std[constant] = 1.0
    return mean, std


def standardize(X, mean, std) -> np.ndarray:
    """(X - mean) / std, in X's float dtype."""
    X = np.asarray(X)
    return ((X.astype(np.float64) - mean) / std).astype(X.dtype if X.dtype.kind == "f" else np.float32)


def fold(model, mean, std) -> nn.Sequential:
    """A copy of ``model`` whose first Linear layer applies ``(x - mean) / std`` first (exactly,
    up to rounding: the folded weights are computed in float64 and stored in the layer's dtype).
    A first layer without bias gets one (b' = -W' mean)."""
    net = as_net(model)
    first = net.layers[0]
    mean = torch.as_tensor(np.asarray(mean, dtype=np.float64))
    std = torch.as_tensor(np.asarray(std, dtype=np.float64))
    if mean.shape != (first.in_features,) or std.shape != (first.in_features,):
        raise ValueError(f"scaling has {mean.numel()} features but the network takes {first.in_features} inputs")
    if not bool((std > 0).all()):
        raise ValueError("scaling std must be positive")
    W = first.weight.detach().to(torch.float64, copy=True)
    b = torch.zeros(W.shape[0], dtype=torch.float64) if first.bias is None else first.bias.detach().to(torch.float64)
    W_f = W / std  # (out, in) / (in,): column i divided by std_i
    b_f = b - W_f @ mean
    dt = first.weight.dtype
    return net.with_blocks([first.with_weights(W_f.to(dt), b_f.to(dt)), *net.layers[1:]]).to_sequential()


def record(mean, std) -> dict:
    """The model-file record of a folded scaling (what ``shrinknet info`` shows)."""
    return {"standardized": True, "folded_into": "layers.0",
            "mean": [float(v) for v in np.asarray(mean)], "std": [float(v) for v in np.asarray(std)]}


def unscaled_hint(X) -> str | None:
    """A one-line hint when inputs look unscaled (some |value| beyond +-10), else None."""
    X = np.asarray(X)
    if X.size == 0:
        return None
    peak = float(np.abs(X).max())
    if peak <= UNSCALED:
        return None
    return f"inputs look unscaled (largest |value| {peak:g}); try train --standardize"
