"""Parsing an ``nn.Sequential`` (nested allowed) into layer modules, with BatchNorm folded.

Both networks are made of the same blocks (layer module + tail): a stack of Linear layers and
the MLP activations becomes the MLP's :class:`~shrinknet.network.Net` (``parse_mlp``: its
specialised fast brute force), anything with convolutions, pooling, BatchNorm, ReLU6 or
LeakyReLU becomes a :class:`SeqNet` (``parse``). :func:`as_net`, the entry point, chooses (``needs_general``).

A depthwise convolution (groups = in_channels = out_channels) is not a layer of its own: it joins
the tail of the block whose channels it reads (layers/depthwise.py), its channel c riding along
with that block's unit c. Other grouped convolutions, a channel multiplier > 1, and custom
modules inside the Sequential are refused with one line. ``shrinknet.Residual(block, projection)``
(model/residual.py) is a residual addition: its block's layers join the chain, and the addition
joins channels into groups (layers/resnet.py: the network is then a ``ResNet``).

BatchNorm (eval mode, running statistics) right after a Conv, Linear or depthwise conv is folded into it exactly:
    y = gamma (x - mean) / sqrt(var + eps) + beta  =>  W' = s W, b' = s (b - mean) + beta,
with s = gamma / sqrt(var + eps) per output channel.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import activations as A
from .layers.act import Act
from .layers.conv import Conv
from .layers.depthwise import Depthwise
from .layers.linear import Dense
from .layers.net import Block, SeqNet
from .layers.resnet import Add, ResNet
from .residual import Residual
from .layers.pool import AdaptiveAvgPool, AvgPool, MaxPool
from .mlp import Net
from .network import Network

SUPPORTED = ("nn.Conv1d/Conv2d (groups=1, or depthwise: groups=in_channels=out_channels), nn.BatchNorm1d/2d (eval mode), nn.Linear, nn.Sigmoid, nn.Tanh, "
             "nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Softplus, nn.MaxPool1d/2d, nn.AvgPool1d/2d, "
             "nn.AdaptiveAvgPool1d/2d, nn.Flatten (nn.Identity and nn.Dropout are skipped)")

_GENERAL_ONLY = (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d,
                 nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten,
                 Residual)


_SKIPPED = (nn.Identity, nn.Dropout)
_MLP_SUPPORTED = "nn.Linear, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Softplus (nn.Identity and nn.Dropout are skipped)"


class _Open(tuple):
    """Where a ``Residual`` starts (its branch follows) in the flattened walk."""


class _Close(tuple):
    """Where a ``Residual`` ends: its addition."""


def _flatten(seq: nn.Sequential, prefix: str = ""):
    for name, m in seq.named_children():
        if isinstance(m, nn.Sequential):
            yield from _flatten(m, f"{prefix}{name}.")
        elif isinstance(m, Residual):  # marks around its branch's layers (parse reads them)
            yield f"{prefix}{name}", _Open((m,))
            if isinstance(m.block, nn.Sequential):
                yield from _flatten(m.block, f"{prefix}{name}.block.")
            else:
                yield f"{prefix}{name}.block", m.block
            yield f"{prefix}{name}", _Close((m,))
        else:
            yield f"{prefix}{name}", m


def parse_mlp(model: nn.Sequential) -> Net:
    """Parse an ``nn.Sequential`` of Linear layers and elementwise activations into the MLP's Net.

    Raises TypeError naming the offending layer for anything else.
    """
    layers: list[Block] = []
    lin: nn.Linear | None = None
    act: A.Activation | None = None

    def close():
        layers.append(Block.linear(lin.weight.detach(), None if lin.bias is None else lin.bias.detach(),
                                   act or A.IDENTITY))

    for name, m in _flatten(model):
        where = f"layer {name} ({type(m).__name__})"
        if isinstance(m, _SKIPPED):
            continue
        if isinstance(m, nn.Linear):
            if lin is not None:
                close()
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
            raise TypeError(f"{where} is not supported: shrinknet handles {_MLP_SUPPORTED}{hint}")
        if lin is None:
            raise TypeError(f"{where} comes before any nn.Linear; the network must start with one")
        if act is not None:
            raise TypeError(f"{where} follows another activation; use one activation per Linear")
        act = a
    if lin is not None:
        close()
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


def needs_general(model: nn.Module) -> bool:
    """Whether ``model`` has a layer only the general path handles (else it is an MLP)."""
    return any(isinstance(m, _GENERAL_ONLY) for m in model.modules())


def _pair(v, dims: int, fill: int = 1) -> tuple[int, int]:
    """A 2-D setting from torch's int or tuple; a 1-D layer gets ``fill`` in the dummy H slot
    (1 for kernel, stride and dilation; 0 for padding)."""
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims
    return (fill, int(t[0])) if dims == 1 else (int(t[0]), int(t[1]))


def _pad(m, where: str, dims: int) -> tuple[int, int]:
    p = m.padding
    if p == "valid":
        return (0, 0)
    if p == "same":
        k = _pair(m.kernel_size, dims)
        d = _pair(m.dilation, dims)
        if any(dd * (kk - 1) % 2 for kk, dd in zip(k, d)):
            raise TypeError(f"{where} uses padding='same' with an even effective kernel (uneven padding): "
                            "give explicit padding")
        return tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
    return _pair(p, dims, 0)


def parse(model: nn.Module, in_shape: tuple | None = None) -> SeqNet:
    """Parse ``model`` into a SeqNet. Raises TypeError with one line naming the offending layer.

    ``in_shape`` (one instance, e.g. (1, 20, 20)) defaults to the model's ``shrinknet_input_shape``
    attribute, which ``SeqNet.to_sequential`` and ``train.cnn`` set; else it is bound from data.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected a torch.nn.Sequential, got {type(model).__name__}")
    blocks: list[Block] = []
    param = None  # the current block's Conv/Dense, not yet closed
    tail: list = []
    dims = 0
    flat = False  # a Flatten was seen: only Linear layers and activations may follow
    notes = []
    pname = ""
    dw_names: list[str] = []  # module names of the depthwise convs seen

    sources: list[tuple] = []  # per block: (module name, "param" | "depthwise") of what it is made of
    src: list = []

    def close():
        nonlocal param, tail, src
        if param is not None:
            blocks.append(Block(param, tuple(tail)))
            sources.append(tuple(src))
        param, tail, src = None, [], []

    items = list(_flatten(model))
    named = {n: m for n, m in items if not isinstance(m, tuple)}
    adds: list[Add] = []
    res = None  # (name, source block) of the Residual whose branch is being read
    after_add = False  # the current block's last op is a residual addition (nothing folds into it)
    for name, m in items:
        where = f"layer {name} ({type(m).__name__})"
        if isinstance(m, _Open):
            if res is not None:
                raise TypeError(f"Residual {name} is nested inside Residual {res[0]}: shrinknet reads residual "
                                "blocks one after another, not one inside another")
            if param is None and not blocks or flat or (param or blocks[-1].param).kind != "conv":
                raise TypeError(f"Residual {name} must follow a convolution (its skip is that layer's output); a residual "
                                "first in the network or after a Linear/Flatten is not supported")
            close()
            res, after_add = (name, len(blocks) - 1), False
            continue
        if isinstance(m, _Close):
            adds.append(_residual_add(name, m[0], res[1], len(blocks), param, tail, dims, blocks))
            res, after_add = None, True
            continue
        if isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        if res is not None and isinstance(m, (nn.Linear, nn.Flatten)):
            raise TypeError(f"{where} inside Residual {res[0]}: a residual branch holds convolutions, BatchNorm, "
                            "activations and pooling only")
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            d = 1 if isinstance(m, nn.Conv1d) else 2
            if m.padding_mode != "zeros":
                raise TypeError(f"{where} has padding_mode={m.padding_mode!r}; shrinknet handles 'zeros' only")
            if m.groups != 1:
                if adds or res is not None:
                    raise TypeError(f"{where}: a depthwise convolution in a network with residual additions is not "
                                    "supported (its removed channel's constant cannot be folded through the sum)")
                tail.append(_depthwise(m, where, d, param, flat, dims))
                dw_names.append(name)
                src.append((name, "depthwise"))
                continue
            if flat or (blocks or param is not None) and (param or blocks[-1].param).kind == "linear":
                raise TypeError(f"{where} is not supported after a Linear or nn.Flatten layer: convolutions "
                                "come first, then nn.Flatten, then Linear layers")
            if dims and d != dims:
                raise TypeError(f"{where} mixes 1-D and 2-D layers")
            if blocks or param is not None:
                prev = param.out_units if param is not None else blocks[-1].param.out_units
                if m.in_channels != prev:
                    raise TypeError(f"{where} has in_channels={m.in_channels} but the layer before has {prev} outputs")
            close()
            dims, after_add = d, False
            W = m.weight.detach()
            if d == 1:
                W = W.unsqueeze(2)  # (o, c, 1, k)
            param = Conv(W, None if m.bias is None else m.bias.detach(), _pair(m.stride, d), _pad(m, where, d),
                         _pair(m.dilation, d))
            pname = name
            src = [(name, "param")]
            continue
        if isinstance(m, nn.Linear):
            prev_conv = (param.kind == "conv") if param is not None else (bool(blocks) and blocks[-1].param.kind == "conv")
            if prev_conv and not flat:
                conv_where = f"layer {pname} ({type(named[pname]).__name__})"
                raise TypeError(f"{conv_where} is not supported here: its output reaches {where} without "
                                "nn.Flatten; add nn.Flatten() before the Linear layer")
            block = 1
            if blocks or param is not None:
                prev = param.out_units if param is not None else blocks[-1].param.out_units
                if m.in_features % prev:
                    raise TypeError(f"{where} has in_features={m.in_features}, not a multiple of the "
                                    f"{prev} units of the layer before")
                block = m.in_features // prev
                if not prev_conv and block != 1:
                    raise TypeError(f"{where} has in_features={m.in_features} but the layer before has {prev} outputs")
            close()
            after_add = False
            param = Dense(m.weight.detach(), None if m.bias is None else m.bias.detach(), block)
            pname = name
            src = [(name, "param")]
            continue
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.training:
                raise TypeError(f"{where} is in training mode: call model.eval() first (shrinknet folds "
                                "BatchNorm's running statistics into the layer before)")
            if m.running_mean is None:
                raise TypeError(f"{where} keeps no running statistics (track_running_stats=False); it cannot be folded")
            if param is not None and tail and tail[-1].kind == "depthwise":  # right after a depthwise conv
                if m.num_features != tail[-1].channels:
                    raise TypeError(f"{where} has {m.num_features} features but the layer before has "
                                    f"{tail[-1].channels}")
                tail[-1] = _fold(tail[-1], m)
                src.append((name, "depthwise"))
                notes.append(f"{type(m).__name__} (module {name}) folded into the {type(named[dw_names[-1]]).__name__} "
                             f"before it (module {dw_names[-1]}); exact: eval-mode statistics")
                continue
            if param is None or tail or after_add:
                raise TypeError(f"{where} does not directly follow a Conv or Linear layer (a residual addition is not "
                                "one); only then can it be folded")
            if m.num_features != param.out_units:
                raise TypeError(f"{where} has {m.num_features} features but the layer before has {param.out_units}")
            param = _fold(param, m)
            src.append((name, "param"))
            notes.append(f"{type(m).__name__} (module {name}) folded into the {type(named[pname]).__name__} before it "
                         f"(module {pname}); exact: eval-mode statistics")
            continue
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise TypeError(f"{where} must flatten dims 1..-1 (start_dim=1, end_dim=-1)")
            flat = True
            continue
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            d = 1 if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d)) else 2
            if param is None or param.kind != "conv" or flat:
                raise TypeError(f"{where} must follow a convolution (before nn.Flatten)")
            if d != dims:
                raise TypeError(f"{where} is {d}-D after a {dims}-D convolution")
            tail.append(_pool(m, where, d))
            continue
        a = A.from_module_general(m)
        if a is None:
            if not type(m).__module__.startswith("torch.nn"):  # a custom module: its forward is not read
                raise TypeError(f"{where} is a custom module, which shrinknet does not read inside an nn.Sequential "
                                "(residual additions, concatenations and other branches): write a residual as "
                                "shrinknet.Residual(block, projection), or give the custom model itself (traced by "
                                f"torch.fx); shrinknet handles {SUPPORTED}")
            raise TypeError(f"{where} is not supported: shrinknet handles {SUPPORTED}")
        if param is None:
            raise TypeError(f"{where} comes before any Conv or Linear layer; the network must start with one")
        since = [op.kind for op in tail][max([-1] + [i for i, op in enumerate(tail) if op.kind == "depthwise"]) + 1:]
        if "act" in since:
            raise TypeError(f"{where} follows another activation; use one activation per layer")
        tail.append(Act(a))
    close()
    if len(blocks) < 2:
        raise TypeError(f"the network has {len(blocks)} layer(s) with weights; shrinknet needs at least two")
    if blocks[-1].param.kind != "linear":
        raise TypeError("the network must end with nn.Linear (its outputs are the network's outputs)")
    _check_depthwise_folds(blocks)
    kinds = {(b.weight.dtype, b.weight.device) for b in blocks}
    if len(kinds) > 1:
        raise TypeError(f"all layers must share one dtype and device, found {sorted(map(str, kinds))}")
    if not blocks[0].weight.dtype.is_floating_point:
        raise TypeError(f"weights must be floating point, got {blocks[0].weight.dtype}")
    if adds and any(b.weighted for b in blocks):
        raise TypeError("a depthwise convolution in a network with residual additions is not supported (its "
                        "removed channel's constant cannot be folded through the sum)")
    if adds:
        net = ResNet(blocks, dims, None, notes, sources, adds)
    else:
        net = SeqNet(blocks, dims, None, notes, sources)
    in_shape = in_shape or getattr(model, "shrinknet_input_shape", None)  # set by SeqNet.to_sequential
    if in_shape is not None:
        net.bind(in_shape)
    elif blocks[0].param.kind == "linear" and not isinstance(next(iter(named.values()), None), nn.Flatten):
        net.in_shape = (blocks[0].weight.shape[1],)  # (a leading nn.Flatten: the instance shape is bound from data)
    return net


def _residual_add(name: str, m: Residual, src: int, dst: int, param, tail, dims: int, blocks) -> Add:
    """The addition a ``Residual`` makes: the output of block ``src`` (or its projection) into the
    still open block ``dst`` before its tail op ``len(tail)``; TypeError with one line where it
    is not a pure channel-for-channel sum of two maps of one group's channels."""
    if param is None or dst == src + 1 and param is None:
        raise TypeError(f"Residual {name}: its block has no convolution; shrinknet needs a layer with weights in it")
    c_src = blocks[src].param.out_units
    proj, pname = None, f"{name}.projection"
    if m.projection is not None:
        seq = list(m.projection) if isinstance(m.projection, nn.Sequential) else [m.projection]
        seq = [x for x in seq if not isinstance(x, (nn.Identity, nn.Dropout))]
        conv = seq[0] if seq else None
        if isinstance(m.projection, nn.Sequential):
            pname = f"{pname}.0"
        if (not isinstance(conv, (nn.Conv1d, nn.Conv2d)) or conv.groups != 1 or len(seq) > 2
                or len(seq) == 2 and not isinstance(seq[1], (nn.BatchNorm1d, nn.BatchNorm2d))):
            raise TypeError(f"Residual {name}: its projection must be one nn.Conv1d/Conv2d (groups=1), optionally "
                            "followed by its BatchNorm in an nn.Sequential")
        d = 1 if isinstance(conv, nn.Conv1d) else 2
        if d != dims or conv.padding_mode != "zeros":
            raise TypeError(f"Residual {name}: its projection must be a {dims}-D convolution with zero padding")
        if conv.in_channels != c_src:
            raise TypeError(f"Residual {name}: its projection reads {conv.in_channels} channels but the skip has {c_src}")
        W = conv.weight.detach()
        proj = Conv(W.unsqueeze(2) if d == 1 else W, None if conv.bias is None else conv.bias.detach(),
                    _pair(conv.stride, d), _pad(conv, f"Residual {name} projection", d), _pair(conv.dilation, d))
        if len(seq) == 2:
            if seq[1].training or seq[1].running_mean is None:
                raise TypeError(f"Residual {name}: its projection's BatchNorm must be in eval mode with running statistics")
            proj = _fold(proj, seq[1])
        c_skip = proj.out_units
    else:
        c_skip = c_src
    if c_skip != param.out_units:
        raise TypeError(f"Residual {name} adds tensors with different channel counts ({param.out_units} from its "
                        f"block, {c_skip} from its {'projection' if proj is not None else 'skip'}); give it a "
                        "projection to match them")
    return Add(src, dst, len(tail), proj, pname if proj is not None else "")


def _depthwise(m, where: str, d: int, param, flat: bool, dims: int) -> Depthwise:
    """A depthwise conv (groups = in_channels = out_channels) as a tail op of the block before it
    (depthwise.py); TypeError with one line for any other grouped convolution or placement."""
    if m.groups != m.in_channels:
        raise TypeError(f"{where} has groups={m.groups} with {m.in_channels} input channels; shrinknet handles "
                        "groups=1 and depthwise convolutions (groups=in_channels=out_channels) only")
    if m.out_channels != m.in_channels:
        raise TypeError(f"{where} has groups={m.groups}: a depthwise convolution with channel multiplier "
                        f"{m.out_channels // m.in_channels}; shrinknet handles multiplier 1 only (out_channels == in_channels)")
    if param is None or param.kind != "conv" or flat:
        raise TypeError(f"{where} must follow a convolution (its channels are that convolution's units); a "
                        "depthwise convolution first in the network or after a Linear is not supported")
    if dims and d != dims:
        raise TypeError(f"{where} mixes 1-D and 2-D layers")
    if m.in_channels != param.out_units:
        raise TypeError(f"{where} has in_channels={m.in_channels} but the layer before has {param.out_units} outputs")
    W = m.weight.detach()
    if d == 1:
        W = W.unsqueeze(2)  # (c, 1, 1, k)
    return Depthwise(W, None if m.bias is None else m.bias.detach(), _pair(m.stride, d), _pad(m, where, d),
                     _pair(m.dilation, d))


def _check_depthwise_folds(blocks) -> None:
    """A switched-off unit of a depthwise block outputs a map z that does not depend on the input;
    surgery folds the next layer's response to it into that layer's bias, which is exact only when
    the response is the same at every position (depthwise.py). Proved here from the structure:
    z is constant per channel when nothing after the depthwise op pads with zeros (an average
    pooling with padding would not keep it constant), and a constant map gives a constant response
    from a Linear or a convolution without padding. TypeError with one line otherwise."""
    for k, b in enumerate(blocks[:-1]):
        if b.split == len(b.tail):
            continue
        for op in b.tail[b.split:]:
            if op.kind == "avgpool" and any(op.padding):
                raise TypeError(f"layer {k}: average pooling with padding after a depthwise convolution: a removed "
                                "channel's constant output would not stay constant, so its removal cannot be folded "
                                "exactly; use padding=0")
        nxt = blocks[k + 1].param
        if nxt.kind == "conv" and any(nxt.padding):
            raise TypeError(f"layer {k + 1}: a convolution with padding {nxt.padding} after a depthwise convolution: "
                            "a removed channel's constant output cannot be folded into its bias exactly; use "
                            "padding=0 (e.g. a pointwise 1x1 convolution)")


def _fold(param, bn):
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    beta = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    s = s.to(param.weight.dtype)
    b = param.bias if param.bias is not None else torch.zeros_like(s)
    W = param.weight * s.view(-1, *([1] * (param.weight.ndim - 1)))
    from dataclasses import replace

    return replace(param, weight=W, bias=(b - bn.running_mean.to(s.dtype)) * s + beta.to(s.dtype))


def _pool(m, where: str, d: int):
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        if m.ceil_mode or m.return_indices:
            raise TypeError(f"{where}: ceil_mode and return_indices are not supported")
        k = _pair(m.kernel_size, d)
        return MaxPool(k, _pair(m.stride if m.stride is not None else m.kernel_size, d), _pair(m.padding, d, 0),
                       _pair(m.dilation, d))
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
        if m.ceil_mode or not m.count_include_pad or getattr(m, "divisor_override", None) is not None:
            raise TypeError(f"{where}: only ceil_mode=False, count_include_pad=True and no divisor_override are supported")
        k = _pair(m.kernel_size, d)
        return AvgPool(k, _pair(m.stride if m.stride is not None else m.kernel_size, d), _pair(m.padding, d, 0))
    size = _pair(m.output_size, d)
    if any(s is None for s in size):
        raise TypeError(f"{where}: give every output size (None is not supported)")
    return AdaptiveAvgPool(size)


def as_net(model: nn.Module | Network) -> Network:
    """Parse an ``nn.Sequential`` into a network: the MLP :class:`Net` for Linear layers and
    elementwise activations, ``layers.net.SeqNet`` when there are convolutions, pooling,
    BatchNorm, ReLU6 or LeakyReLU. The parsing entry point (the walk is ``parse`` / ``parse_mlp`` below).
    Any other ``nn.Module`` is first traced by ``torch.fx`` into an equivalent ``nn.Sequential``
    (model/imports/fx.py: InputError naming the node and source line when it is not a chain);
    an ``nn.Sequential`` is parsed as it is (the very object). A path to an ``.onnx`` or ``.tflite`` file
    is imported (model/imports/); the network then takes channels-first rows (N, C, H, W) even where the
    file is NHWC (``model.imports.to_model_layout`` permutes a user's NHWC rows; the CLI does it for you).

    Raises TypeError naming the offending layer for anything else.
    """
    if isinstance(model, Network):
        return model
    if isinstance(model, (str, os.PathLike)):  # an .onnx or .tflite file (model/imports/)
        from .imports import to_sequential

        model = to_sequential(model)
    if isinstance(model, nn.Module) and not isinstance(model, nn.Sequential):
        if type(model).__module__.startswith("torch.nn."):
            model = nn.Sequential(model)  # one torch layer alone: a chain of one (fx would trace into its forward)
        else:
            from .imports import to_sequential  # a custom module: traced by torch.fx into a chain

            model = to_sequential(model)
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"expected a torch.nn.Module (an nn.Sequential, or a module whose forward is one chain of layers), "
            f"got {type(model).__name__}"
        )
    return parse(model) if needs_general(model) else parse_mlp(model)
