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

Networks whose first layer is a convolution are scaled per input channel, without centring.
A convolution pads with zeros; centring cannot be folded into it exactly, because a padded zero
stands for the mean before the fold (z = 0 <=> x = mean) and for a raw 0 after it, so the border
outputs would change. Dividing by a positive per-channel scale s_c commutes with zero padding
(0 / s_c = 0), so it folds exactly for any padding, stride and dilation:

    conv(x / s)[n, o, p] = sum_c sum_k W[o, c, k] x[n, c, stride p + dilation k - padding] / s_c + b[o]
                         = conv'(x)[n, o, p],   W'[o, c, k] = W[o, c, k] / s_c,  b' = b

(a position in the padding reads 0 on both sides)

with s_c the channel's std over all training instances and positions (``fit_channels``, the same
constant / nearly constant floor rule as ``fit``). The centring left out is the first conv's own
business: its bias (and a BatchNorm after it, which shrinknet folds into the conv when it parses
the network) absorbs the per-channel offset x_mean / s_c during training.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..model.parse import as_net

UNSCALED = 10.0  # inputs beyond +-10 saturate sigmoid/tanh units at the default initialization
STD_FLOOR = 0.1  # a feature's std is at least this fraction of its range (max - min)
_CONVS = (nn.Conv1d, nn.Conv2d)  # first layers that take per-channel scaling (fold_channels)


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


def fit_channels(X, shape) -> np.ndarray:
    """The scale s (C,) of each input channel of a convolutional network, in float64: the std of
    channel c over all instances and positions of ``X`` (n, C*positions) flat rows or (n, *shape),
    ``shape`` = (C, H, W) or (C, L); ``fit``'s rule: 1 for a constant channel, at least
    ``STD_FLOOR`` times the range for a nearly constant one."""
    shape = tuple(int(v) for v in shape)
    X = np.asarray(X, dtype=np.float64).reshape(-1, *shape)  # (n, C, *positions)
    per_position = np.moveaxis(X.reshape(len(X), shape[0], -1), 1, 2).reshape(-1, shape[0])  # (n * positions, C)
    return fit(per_position)[1]


def scale_channels(X, std, shape) -> np.ndarray:
    """x / s_c for every value of channel c, in X's float dtype and X's own layout (flat rows
    (n, C*positions), channel-major as ``X.reshape(n, *shape)`` reads them, or (n, *shape))."""
    shape = tuple(int(v) for v in shape)
    X = np.asarray(X)
    if int(np.prod(X.shape[1:])) != int(np.prod(shape)):
        raise ValueError(f"inputs have {int(np.prod(X.shape[1:]))} values each but the shape {shape} has "
                         f"{int(np.prod(shape))}")
    per_value = np.repeat(_channel_std(std, shape[0]), int(np.prod(shape[1:])))  # (C * positions,), channel-major
    return standardize(X, 0.0, per_value.reshape(X.shape[1:]))


def _channel_std(std, channels: int) -> np.ndarray:
    std = np.asarray(std, dtype=np.float64)
    if std.shape != (channels,):
        raise ValueError(f"scaling has {std.size} channels but the network takes {channels} input channels")
    if not bool((std > 0).all()):
        raise ValueError("scaling std must be positive")
    return std


def standardize(X, mean, std) -> np.ndarray:
    """(X - mean) / std, in X's float dtype."""
    X = np.asarray(X)
    return ((X.astype(np.float64) - mean) / std).astype(X.dtype if X.dtype.kind == "f" else np.float32)


def fold(model, mean, std) -> nn.Sequential:
    """A copy of ``model`` whose first Linear layer applies ``(x - mean) / std`` first (exactly,
    up to rounding: the folded weights are computed in float64 and stored in the layer's dtype).
    A first layer without bias gets one (b' = -W' mean). A network whose first layer is a
    convolution takes per-channel ``std`` and ``mean`` 0 (``fold_channels``; a centring cannot be
    folded into a zero-padded convolution)."""
    if isinstance(model, nn.Module) and isinstance(first_layer(model)[1], _CONVS):
        if np.any(np.asarray(mean, dtype=np.float64) != 0):
            raise ValueError("a convolution's inputs cannot be centred exactly (its zero padding would stand for the "
                             "mean before the fold and for 0 after it): give mean 0 and a per-channel std")
        return fold_channels(model, std)
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



def first_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of the first module ``model`` applies (nested Sequentials walked in order;
    nn.Identity and nn.Dropout skipped, as the parser skips them)."""
    for name, m in model.named_modules():
        if next(m.children(), None) is None and not isinstance(m, (nn.Identity, nn.Dropout)):
            return name, m
    raise ValueError("the network has no layers")


def fold_channels(model: nn.Sequential, std) -> nn.Sequential:
    """A copy of ``model`` (first layer a Conv1d/Conv2d, groups 1) that takes raw inputs x where
    ``model`` took x / s_c per input channel c (``std`` (C,)): W'[o, c] = W[o, c] / s_c, bias and
    every other module unchanged (a BatchNorm after the conv sees the same conv output). Exact for
    any padding, stride and dilation, up to rounding: W' is computed in float64 and stored in the
    layer's dtype."""
    name, conv = first_layer(model)
    if not isinstance(conv, _CONVS):
        raise ValueError(f"per-channel scaling folds into a first convolution, and the first layer is "
                         f"{type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(f"per-channel scaling folds into a convolution with groups=1, and {name} has "
                         f"groups={conv.groups}")
    std = torch.as_tensor(_channel_std(std, conv.in_channels))
    folded = copy.deepcopy(model)
    first = folded.get_submodule(name)
    with torch.no_grad():  # W'[o, c, k...] = W[o, c, k...] / s_c
        W = first.weight.detach().to(torch.float64)
        first.weight.copy_((W / std.view(1, -1, *[1] * (W.dim() - 2))).to(first.weight.dtype))
    return folded


def record(mean, std) -> dict:
    """The model-file record of a folded scaling (what ``shrinknet info`` shows)."""
    return {"standardized": True, "folded_into": "layers.0",
            "mean": [float(v) for v in np.asarray(mean)], "std": [float(v) for v in np.asarray(std)]}


def record_channels(std, folded_into: str) -> dict:
    """The model-file record of a per-channel scaling folded into the first convolution
    ``folded_into``: ``mean`` 0 (not centred) and ``std`` per input channel, ``per_channel`` true.
    Data needs no handling downstream: the folded model takes raw inputs."""
    std = [float(v) for v in np.asarray(std)]
    return {"standardized": True, "per_channel": True, "centered": False, "folded_into": folded_into,
            "mean": [0.0] * len(std), "std": std}


def describe(rec: dict) -> str:
    """One line for ``shrinknet info`` about a model file's scaling record."""
    mean, std = rec.get("mean") or [], rec.get("std") or []
    rng = lambda v: f"{min(v):.4g}..{max(v):.4g}" if v else "?"  # noqa: E731
    if rec.get("per_channel"):
        which = f"std {std[0]:.4g} of the one input channel" if len(std) == 1 else \
            f"std {rng(std)} over {len(std)} input channels"
        return (f"inputs: trained scaled per channel (divided by {which}, not centred: a zero-padded convolution "
                f"cannot absorb a centring exactly), scaling folded into the first convolution: the model and its "
                f"exports take raw inputs")
    return (f"inputs: trained standardized (mean {rng(mean)}, std {rng(std)} over {len(mean)} features), "
            f"scaling folded into the first layer: the model and its exports take raw inputs")


def unscaled_hint(X) -> str | None:
    """A one-line hint when inputs look unscaled (some |value| beyond +-10), else None."""
    X = np.asarray(X)
    if X.size == 0:
        return None
    peak = float(np.abs(X).max())
    if peak <= UNSCALED:
        return None
    return f"inputs look unscaled (largest |value| {peak:g}); try train --standardize"
