"""Building and training the feed-forward networks the paper prunes.

The paper gives no optimizer, learning rate or epoch count; shrinknet trains with Adam on
mini-batches and stops early when the validation error has not improved for ``patience``
epochs, keeping the best weights (the paper prunes an "optimally trained" network).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..model import activations as A
from ..model import losses, network
from ..model.parse import as_net


def mlp(sizes, activation: str = "sigmoid", out_activation: str = "identity", bias: bool = True,
        seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """An ``nn.Sequential`` MLP with layer widths ``sizes`` = [in, hidden..., out]."""
    sizes = list(sizes)
    if len(sizes) < 3 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must be [in, hidden..., out] with at least one hidden layer, got {sizes}")
    gen = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        lin = nn.Linear(sizes[k], sizes[k + 1], bias=bias, dtype=dtype)
        bound = 1 / sizes[k] ** 0.5  # torch's default init, drawn from our seeded generator
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            if bias:
                lin.bias.uniform_(-bound, bound, generator=gen)
        mods.append(lin)
        act = A.from_name(activation if k < len(sizes) - 2 else out_activation).to_module()
        if act is not None:
            mods.append(act)
    return nn.Sequential(*mods)


#: The default small CNN of ``train --arch cnn``: two conv blocks, then one Linear layer.
CNN_CHANNELS = (8, 16)


def cnn(in_shape, n_out: int, channels=CNN_CHANNELS, activation: str = "relu", out_activation: str = "identity",
        seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A small CNN for (C, H, W) or (C, L) inputs: per entry of ``channels`` a block
    conv 3 (padding 1) -> BatchNorm -> activation -> max pool 2, then Flatten -> Linear(n_out).

    Returned in eval mode (BatchNorm uses running statistics; ``train`` switches modes itself);
    shrinknet folds the BatchNorm into the convolutions when it parses the network.
    """
    in_shape = tuple(int(s) for s in in_shape)
    if len(in_shape) not in (2, 3) or not channels:
        raise ValueError(f"cnn needs an input shape (C, H, W) or (C, L) and at least one conv block, got {in_shape}")
    dims = len(in_shape) - 1
    Conv, BN, Pool = ((nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d))
    mods: list[nn.Module] = []
    c, spatial = in_shape[0], list(in_shape[1:])
    for ch in channels:
        act = A.from_name(activation, names=A.GENERAL_NAMES).to_module()
        mods += [Conv(c, ch, 3, padding=1, dtype=dtype), BN(ch, dtype=dtype), *([act] if act else []), Pool(2)]
        c, spatial = ch, [s // 2 for s in spatial]
        if min(spatial) < 1:
            raise ValueError(f"input {in_shape} is too small for {len(channels)} conv blocks (each halves it)")
    mods += [nn.Flatten(), nn.Linear(c * int(torch.tensor(spatial).prod()), n_out, dtype=dtype)]
    return _seeded(mods, out_activation, seed, in_shape)


def _seeded(mods: list, out_activation: str, seed: int, in_shape) -> nn.Sequential:
    """``mods`` then the output activation as an eval-mode ``nn.Sequential``, its weights drawn as
    torch's default init (uniform, bound 1/sqrt(fan in)) from a generator seeded with ``seed``."""
    out = A.from_name(out_activation).to_module()
    model = nn.Sequential(*mods, *([out] if out is not None else [])).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                bound = 1 / (m.weight[0].numel()) ** 0.5
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    model.shrinknet_input_shape = in_shape
    return model


def _kit(dims: int, activation: str):
    """(Conv, BatchNorm, AdaptiveAvgPool, act) for ``dims``-D maps; ``act()`` is a list of one fresh
    activation module (empty for the identity)."""
    Conv, BN, Pool = ((nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d) if dims == 1
                      else (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d))

    def act():
        m = A.from_name(activation, names=A.GENERAL_NAMES).to_module()
        return [m] if m is not None else []

    return Conv, BN, Pool, act


#: The default channels of ``train --arch dscnn``: the first convolution, then one per separable block.
DSCNN_CHANNELS = (16, 32, 32)


def dscnn(in_shape, n_out: int, channels=DSCNN_CHANNELS, activation: str = "relu", out_activation: str = "identity",
          seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A small depthwise-separable CNN in the shape of MLPerf Tiny's keyword-spotting DS-CNN (a
    stand-in: its data, Speech Commands, cannot be downloaded here): conv 3 stride 2 (padding 1)
    -> BatchNorm -> activation, then per further entry of ``channels`` a separable block:
    depthwise conv 3 (padding 1) -> BatchNorm -> activation -> pointwise 1x1 conv -> BatchNorm ->
    activation; then global average pooling, Flatten, Linear(n_out). For (C, L) signals (Conv1d,
    e.g. mnist1d 1x40) or (C, H, W) images. Returned in eval mode, like :func:`cnn`."""
    in_shape = tuple(int(s) for s in in_shape)
    channels = tuple(int(c) for c in channels)
    if len(in_shape) not in (2, 3) or len(channels) < 2:
        raise ValueError(f"dscnn needs an input shape (C, H, W) or (C, L) and at least two channel counts (the first "
                         f"convolution and one separable block), got {in_shape} and {channels}")
    Conv, BN, Pool, act = _kit(len(in_shape) - 1, activation)

    mods: list[nn.Module] = [Conv(in_shape[0], channels[0], 3, stride=2, padding=1, dtype=dtype),
                             BN(channels[0], dtype=dtype), *act()]
    for c, ch in zip(channels, channels[1:]):
        mods += [Conv(c, c, 3, padding=1, groups=c, dtype=dtype), BN(c, dtype=dtype), *act(),
                 Conv(c, ch, 1, dtype=dtype), BN(ch, dtype=dtype), *act()]
    mods += [Pool(1), nn.Flatten(), nn.Linear(channels[-1], n_out, dtype=dtype)]
    return _seeded(mods, out_activation, seed, in_shape)


#: The default stage widths of ``train --arch resnet``: MLPerf Tiny's ResNet-8 (16, 32, 64).
RESNET_CHANNELS = (16, 32, 64)


def resnet(in_shape, n_out: int, channels=RESNET_CHANNELS, activation: str = "relu", out_activation: str = "identity",
           seed: int = 0, dtype: torch.dtype = torch.float32, widths=None) -> nn.Sequential:
    """A small residual network in the shape of MLPerf Tiny's ResNet-8 (a stand-in: its data,
    CIFAR-10, cannot be downloaded here; shrinknet trains it on mnist5k-784 images): conv 3 (padding
    1) -> BatchNorm -> activation with ``channels[0]`` channels, then one residual stage per entry
    of ``channels``: ``shrinknet.Residual`` of conv 3 (stride 2 from the second stage on) -> BatchNorm
    -> activation -> conv 3 -> BatchNorm, with an identity skip in the first stage and a 1x1 stride-2
    projection (with BatchNorm) in the others, each followed by the activation; then global average
    pooling, Flatten, Linear(n_out). For (C, H, W) images or (C, L) signals. ``widths``: every channel
    group's width instead (the pruned network's ``hidden_sizes``, as the scratch baseline rebuilds
    it): the stem's group, then per stage its inner conv and (from the second stage on) its output.
    Returned in eval mode, like :func:`cnn`."""
    from ..model.residual import Residual

    in_shape = tuple(int(s) for s in in_shape)
    channels = tuple(int(c) for c in channels)
    if len(in_shape) not in (2, 3) or not channels:
        raise ValueError(f"resnet needs an input shape (C, H, W) or (C, L) and at least one stage width, got "
                         f"{in_shape} and {channels}")
    if widths is None:
        widths = [channels[0], channels[0]] + [w for c in channels[1:] for w in (c, c)]
    widths = [int(w) for w in widths]
    if len(widths) != 2 * len(channels):
        raise ValueError(f"resnet with {len(channels)} stages has {2 * len(channels)} channel groups, got {len(widths)} widths")
    Conv, BN, Pool, act = _kit(len(in_shape) - 1, activation)

    c = widths[0]
    mods: list[nn.Module] = [Conv(in_shape[0], c, 3, padding=1, dtype=dtype), BN(c, dtype=dtype), *act()]
    for i in range(len(channels)):
        inner = widths[1] if i == 0 else widths[2 * i]
        out = c if i == 0 else widths[2 * i + 1]
        stride = 1 if i == 0 else 2
        body = nn.Sequential(Conv(c, inner, 3, stride, 1, dtype=dtype), BN(inner, dtype=dtype), *act(),
                             Conv(inner, out, 3, padding=1, dtype=dtype), BN(out, dtype=dtype))
        proj = None if i == 0 else nn.Sequential(Conv(c, out, 1, stride, dtype=dtype), BN(out, dtype=dtype))
        mods += [Residual(body, proj), *act()]
        c = out
    mods += [Pool(1), nn.Flatten(), nn.Linear(c, n_out, dtype=dtype)]
    o = A.from_name(out_activation).to_module()
    if o is not None:
        mods.append(o)
    model = nn.Sequential(*mods).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # torch's default init (uniform, bound 1/sqrt(fan in)), from our seeded generator
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                bound = 1 / (m.weight[0].numel()) ** 0.5
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    model.shrinknet_input_shape = in_shape
    return model


ARCHS = {"cnn": cnn, "dscnn": dscnn, "resnet": resnet}  # convolutional architectures of ``train --arch``


@dataclass
class TrainLog:
    epochs: int  # epochs run
    best_epoch: int
    train_error: list[float]  # per epoch, summed over the training set
    val_error: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def train(model: nn.Sequential, X, T, X_val, T_val, loss: str = "mse", epochs: int = 200, lr: float = 1e-2,
          batch_size: int = 64, patience: int = 20, seed: int = 0, progress: bool = False) -> TrainLog:
    """Train ``model`` in place with Adam and early stopping; the best validation weights are kept.

    Errors are summed over instances (the paper's E); the optimizer minimizes their mean per batch.
    """
    net = as_net(model)
    loss_ = losses.get(loss)
    tr = network.prepare(net, X, T, loss_)
    va = network.prepare(net, X_val, T_val, loss_)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    log = TrainLog(0, 0, [], [])
    from tqdm.auto import tqdm

    bar = tqdm(range(epochs), desc="training", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(tr), generator=gen).to(tr.X.device)
        total = 0.0
        for start in range(0, len(tr), batch_size):
            idx = perm[start : start + batch_size]
            e = loss_.per_instance(model(tr.X[idx]), tr.T[idx])
            opt.zero_grad()
            e.mean().backward()
            opt.step()
            total += float(e.detach().sum())
        model.eval()
        with torch.no_grad():
            val_err = float(loss_.per_instance(model(va.X), va.T).sum())
        log.train_error.append(total)
        log.val_error.append(val_err)
        log.epochs = epoch + 1
        if val_err < best[0]:
            best = (val_err, epoch, copy.deepcopy(model.state_dict()))
        bar.set_postfix(val_error=f"{val_err:.4g}")
        if epoch - best[1] >= patience:
            break
    bar.close()
    model.load_state_dict(best[2])
    log.best_epoch = best[1] + 1
    return log
