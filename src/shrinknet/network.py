"""The network description: a feed-forward stack of Linear layers and elementwise activations.

Index letters used across shrinknet (as in the paper's eq. 5):
    n: instance (N of them), j: neuron of the layer below (its input), i: neuron of the layer above.
    ``weight[i, j]`` is the paper's w_ji: the weight from neuron j to neuron i.

Layer numbering: the paper numbers layers from the output (layer 0) backwards; shrinknet numbers
them in forward order, ``layers[0]`` reading the input and ``layers[-1]`` the output layer. A
*hidden layer* h is ``layers[h]`` for h < len(layers) - 1, and its neurons are its output units
(the Linear's rows plus the activation). Switching neuron j off sets its output o_j to 0 (§2.1),
so a mask (True = kept) multiplies the hidden outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import activations as A
from .losses import Loss

Masks = Sequence[Tensor]  # one bool tensor per hidden layer, True = kept


@dataclass(frozen=True)
class Layer:
    weight: Tensor  # (out, in); weight[i, j] = w_ji
    bias: Tensor | None  # (out,)
    act: A.Activation

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


@dataclass
class Trace:
    """One forward pass: pre-activations ``x[k]`` (N, out_k) and outputs ``o[k]`` of every layer.

    Hidden outputs are already masked; ``o[-1]`` is the network output y.
    """

    x: list[Tensor] = field(default_factory=list)
    o: list[Tensor] = field(default_factory=list)


class Net:
    """A parsed network: a tuple of Layers. Build one with :func:`as_net`."""

    def __init__(self, layers: Sequence[Layer]):
        self.layers = tuple(layers)

    # -- shape facts -------------------------------------------------------------------------
    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(layer.out_features for layer in self.layers[:-1])

    @property
    def n_hidden(self) -> int:
        return len(self.layers) - 1

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        return self.layers[-1].out_features

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    # -- masks ------------------------------------------------------------------------------
    def full_masks(self) -> list[Tensor]:
        return [torch.ones(h, dtype=torch.bool, device=self.device) for h in self.hidden_sizes]

    def check_masks(self, masks: Masks | None) -> list[Tensor]:
        """Validated masks on this network's device (all-True when ``masks`` is None)."""
        if masks is None:
            return self.full_masks()
        masks = list(masks)
        if len(masks) != self.n_hidden:
            raise ValueError(
                f"mask has {len(masks)} entries but the network has {self.n_hidden} hidden layers"
            )
        out = []
        for h, (m, size) in enumerate(zip(masks, self.hidden_sizes)):
            m = torch.as_tensor(m)
            if m.dtype != torch.bool or m.shape != (size,):
                raise ValueError(
                    f"mask for hidden layer {h} must be a bool tensor of shape ({size},), "
                    f"got {m.dtype} {tuple(m.shape)}"
                )
            if not bool(m.any()):
                raise ValueError(f"mask for hidden layer {h} removes every neuron; keep at least one")
            out.append(m.to(self.device))
        return out

    # -- evaluation -------------------------------------------------------------------------
    def forward(self, X: Tensor, masks: Masks, trace: Trace | None = None, changed: int = 0) -> Trace:
        """Forward pass with hidden outputs masked.

        Given the ``trace`` of an earlier pass and ``changed``, the lowest hidden layer whose mask
        changed since, only what depends on that mask is recomputed: the pre-activations up to
        and including layer ``changed`` are reused (masks act after the activation).
        """
        if trace is None:
            xs, os_, start = [], [], 0
        else:
            xs, os_, start = list(trace.x[: changed + 1]), list(trace.o[:changed]), changed
        h_in = X if start == 0 else os_[start - 1]
        for k in range(start, len(self.layers)):
            layer = self.layers[k]
            x = xs[k] if k < len(xs) else linear(h_in, layer)
            o = layer.act(x)
            if k < self.n_hidden:
                o = o * masks[k]
            if k == len(xs):
                xs.append(x)
            os_.append(o)
            h_in = o
        return Trace(xs, os_)

    def output_from(self, k: int, x: Tensor, masks: Masks, scratch: bool = True) -> Tensor:
        """Network output y given the pre-activation ``x`` (..., N, out_k) of layer k.

        With ``scratch`` (no autograd through this call), ``x`` and the intermediates are
        overwritten in place. Masks that keep everything are skipped.
        """
        for kk in range(k, len(self.layers)):
            layer = self.layers[kk]
            if kk > k:
                x = linear(x, layer)  # x holds the layer below's output here
            x = layer.act(x, inplace=scratch)
            if kk < self.n_hidden and not bool(masks[kk].all()):
                x = x.mul_(masks[kk]) if scratch else x * masks[kk]
        return x

    def to_sequential(self) -> nn.Sequential:
        """A fresh ``nn.Sequential`` with copies of the weights."""
        mods: list[nn.Module] = []
        for layer in self.layers:
            lin = nn.Linear(
                layer.in_features,
                layer.out_features,
                bias=layer.bias is not None,
                dtype=self.dtype,
                device=self.device,
            )
            with torch.no_grad():
                lin.weight.copy_(layer.weight)
                if layer.bias is not None:
                    lin.bias.copy_(layer.bias)
            mods.append(lin)
            act = layer.act.to_module()
            if act is not None:
                mods.append(act)
        return nn.Sequential(*mods)


def linear(h: Tensor, layer: Layer) -> Tensor:
    """x_i = sum_j w_ji o_j (+ b_i)  (eq. 5); h: (..., N, in) -> (..., N, out).

    Leading dims are folded into one matmul: ``(C, N, in) @ (in, out)`` would otherwise go to a
    batched matmul that copies the weight once per batch entry (7x slower here).
    """
    x = torch.nn.functional.linear(h.reshape(-1, h.shape[-1]), layer.weight, layer.bias)  # fused bias
    return x.reshape(*h.shape[:-1], layer.out_features)


_SKIPPED = (nn.Identity, nn.Dropout)
_SUPPORTED = "nn.Linear, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Softplus (nn.Identity and nn.Dropout are skipped)"


def _flatten(seq: nn.Sequential, prefix: str = ""):
    for name, m in seq.named_children():
        if isinstance(m, nn.Sequential):
            yield from _flatten(m, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", m


def as_net(model: nn.Module | Net) -> Net:
    """Parse an ``nn.Sequential`` of Linear layers and elementwise activations into a Net.

    Raises TypeError naming the offending layer for anything else.
    """
    if isinstance(model, Net):
        return model
    if isinstance(model, nn.Sequential):
        from .layers import needs_general, parse

        if needs_general(model):  # convolutions, pooling, BatchNorm, ReLU6, LeakyReLU
            return parse(model)
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"expected a torch.nn.Sequential of Linear layers and activations, got {type(model).__name__}"
        )
    layers: list[Layer] = []
    lin: nn.Linear | None = None
    act: A.Activation | None = None
    for name, m in _flatten(model):
        where = f"layer {name} ({type(m).__name__})"
        if isinstance(m, _SKIPPED):
            continue
        if isinstance(m, nn.Linear):
            if lin is not None:
                layers.append(_layer(lin, act))
            if layers and m.in_features != layers[-1].out_features:
                raise TypeError(
                    f"{where} has in_features={m.in_features} but the previous Linear has "
                    f"out_features={layers[-1].out_features}"
                )
            lin, act = m, None
            continue
        a = A.from_module(m)
        if a is None:
            hint = ""
            if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
                hint = "; drop it and use loss='cross_entropy', which takes logits"
            raise TypeError(f"{where} is not supported: shrinknet handles {_SUPPORTED}{hint}")
        if lin is None:
            raise TypeError(f"{where} comes before any nn.Linear; the network must start with one")
        if act is not None:
            raise TypeError(f"{where} follows another activation; use one activation per Linear")
        act = a
    if lin is not None:
        layers.append(_layer(lin, act))
    if len(layers) < 2:
        raise TypeError(
            f"the network has {len(layers)} Linear layer(s); shrinknet needs at least one hidden "
            "layer (two Linear layers)"
        )
    dtypes = {(layer.weight.dtype, layer.weight.device) for layer in layers}
    if len(dtypes) > 1:
        raise TypeError(f"all layers must share one dtype and device, found {sorted(map(str, dtypes))}")
    if not layers[0].weight.dtype.is_floating_point:
        raise TypeError(f"weights must be floating point, got {layers[0].weight.dtype}")
    return Net(layers)


def _layer(lin: nn.Linear, act: A.Activation | None) -> Layer:
    bias = None if lin.bias is None else lin.bias.detach()
    return Layer(lin.weight.detach(), bias, act or A.IDENTITY)


def check_positive_int(name: str, value, optional: bool = False) -> None:
    """Raise ValueError unless ``value`` is a positive int (or None when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")


# -- data -------------------------------------------------------------------------------------
@dataclass
class Data:
    """Checked data on the network's device and dtype.

    X: (N, in); T: (N, out) float targets (one-hot for class labels);
    labels: (N,) int64 class labels, or None for regression.
    """

    X: Tensor
    T: Tensor
    labels: Tensor | None

    def __len__(self) -> int:
        return self.X.shape[0]

    def rows(self, sl: slice) -> "Data":
        return Data(self.X[sl], self.T[sl], None if self.labels is None else self.labels[sl])


def prepare(net: Net, X, T, loss: Loss) -> Data:
    """Validate X and T against ``net`` and bring them to its dtype and device.

    T may be (N, out) floats; (N,) floats when out == 1; or (N,) integer class labels,
    which become one-hot rows (for either loss) when out > 1.
    """
    X = _as_tensor("X", X)
    T = _as_tensor("T", T)
    if getattr(net, "general", False):  # an instance shape, checked (and bound) by the network
        X = _prepare_general_input(net, X)
    elif X.ndim != 2:
        raise ValueError(f"X must be 2-D (instances x features), got shape {tuple(X.shape)}")
    elif X.shape[1] != net.in_features:
        raise ValueError(
            f"X has {X.shape[1]} features per instance but the network's first Linear expects "
            f"{net.in_features}"
        )
    if X.shape[0] == 0:
        raise ValueError("X has no instances")
    if not X.dtype.is_floating_point:
        X = X.to(net.dtype)
    if not bool(torch.isfinite(X).all()):
        raise ValueError("X contains NaN or infinite values; clean or impute the data first")
    if T.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} instances but T has {T.shape[0]}")
    labels = None
    out = net.out_features
    if loss.name == "cross_entropy" and out < 2:
        raise ValueError(
            "cross_entropy needs at least 2 outputs (one logit per class); this network has 1: use loss='mse'"
        )
    if T.ndim == 1 and T.dtype.is_floating_point and out > 1:
        raise ValueError(
            f"T is 1-D with float values but the network has {out} outputs: give integer class labels "
            f"or ({X.shape[0]}, {out}) targets"
        )
    if T.ndim == 1 and not T.dtype.is_floating_point and out > 1:
        if T.dtype == torch.bool or int(T.min()) < 0 or int(T.max()) >= out:
            raise ValueError(
                f"class labels in T must be integers in [0, {out - 1}] for a network with {out} outputs"
            )
        labels = T.long()
        T = torch.nn.functional.one_hot(labels, out)
    elif T.ndim == 1 and out == 1:
        T = T.reshape(-1, 1)
    if T.ndim != 2 or T.shape[1] != out:
        raise ValueError(
            f"T must have shape ({X.shape[0]}, {out}) (or ({X.shape[0]},) class labels), "
            f"got {tuple(T.shape)}"
        )
    T = T.to(net.dtype)
    if not bool(torch.isfinite(T).all()):
        raise ValueError("T contains NaN or infinite values; clean the targets first")
    if loss.name == "cross_entropy" and bool((T < 0).any()):
        raise ValueError("cross_entropy targets must be class labels or non-negative probability rows")
    if labels is None and out > 1 and _is_one_hot(T):
        labels = T.argmax(1)
    device = net.device
    return Data(X.to(device, net.dtype), T.to(device), None if labels is None else labels.to(device))


def _is_one_hot(T: Tensor) -> bool:
    return bool(((T == 0) | (T == 1)).all()) and bool((T.sum(1) == 1).all())


def _prepare_general_input(net, X: Tensor) -> Tensor:
    """Check X against a general network's instance shape (binding it at first use)."""
    if X.ndim < 2:
        raise ValueError(f"X must have one row per instance, got shape {tuple(X.shape)}")
    if net.in_shape is not None and X.ndim == 2 and len(net.in_shape) > 1 and X.shape[1] == net.in_features:
        X = X.reshape(X.shape[0], *net.in_shape)  # flat rows of a known image shape
    net.bind(tuple(X.shape[1:]))
    return X


def _as_tensor(what: str, a) -> Tensor:
    """``a`` as a tensor, refusing (ValueError) what cannot be numbers: strings, objects, labels
    beyond int64, unsigned tensors that torch cannot compare."""
    if isinstance(a, Tensor):
        if a.dtype in (torch.uint16, torch.uint32, torch.uint64):
            raise ValueError(f"{what} is a {a.dtype} tensor: give class labels as int64")
        return a
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{what} cannot be read as an array of numbers: {e}") from None
    if arr.dtype.kind in "USO":
        raise ValueError(f"{what} holds {'strings' if arr.dtype.kind in 'US' else 'Python objects'}, not numbers"
                         + (": number the classes 0..C-1 first, e.g. np.unique(y, return_inverse=True)"
                            if what == "T" else ""))
    if arr.dtype.kind == "u" and arr.dtype.itemsize >= 2:
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{what} has values beyond int64 ({int(arr.max())}): class labels must be 0..C-1")
        arr = arr.astype(np.int64)
    return torch.as_tensor(arr)
