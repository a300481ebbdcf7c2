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

from . import activations as A
from . import losses, network


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
    net = network.as_net(model)
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
