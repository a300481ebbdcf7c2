"""Retraining, for users who can: fine-tuning a pruned network, and the from-scratch baseline.

``finetune`` trains a (pruned) network further on training data with early stopping on
validation data and keeps the best weights -- where the start itself competes, so fine-tuning
never returns a network with lower validation accuracy (or, for regression, higher validation
error) than it was given. Networks stored at float16 or int8 are fine-tuned in float and stored
again (``quantize.stored``: float16 rounds weights and biases, int8 re-quantizes weights per row),
and the stored network is what competes with the start.

``scratch_baseline`` trains networks of exactly a given shape from fresh initial weights with a
training recipe (3 seeds by default): what a user gets without pruning at all. A network is
rebuilt the way its recipe built the original (``train.mlp``; ``train.cnn`` for ``arch: cnn``,
with its BatchNorm layers, folded after training as ``train --arch cnn`` folds them), only with
the kept widths.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..model import losses, network
from . import train
from . import scaling as sc
from ..model.parse import as_net
from ..model.evaluate import error_and_accuracy
from ..store.quantize import rounds, storage_name, stored

#: The recipe used when a model records none (shrinknet train's defaults).
DEFAULT_RECIPE = {"epochs": 300, "lr": 0.01, "batch_size": 64, "patience": 20}


def evaluate(model, X, T, loss: str) -> tuple[float, float | None]:
    """(error summed over instances, accuracy or None) of ``model`` on (X, T)."""
    net = as_net(model)
    loss_ = losses.get(loss)
    data = network.prepare(net, X, T, loss_)
    with torch.no_grad():
        return error_and_accuracy(loss_, [(data, net.forward(data.X, net.full_masks()))])


def _better(a: tuple[float, float | None], b: tuple[float, float | None]) -> bool:
    """Whether (error, accuracy) a is strictly better than b: accuracy first, then error."""
    if a[1] is not None and b[1] is not None and a[1] != b[1]:
        return a[1] > b[1]
    return a[0] < b[0]


def _store(model: nn.Sequential, storage: str) -> nn.Sequential:
    """``model`` with every weight and bias replaced, in place, by its stored value (``quantize.stored``)."""
    if not rounds(storage):
        return model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):  # per row / per output channel
                m.weight.copy_(stored(m.weight, storage))
                if m.bias is not None:
                    m.bias.copy_(stored(m.bias, storage, weight=False))
    return model


def finetune(model, X, T, X_val, T_val, loss: str = "mse", epochs: int = 20, lr: float = 1e-3,
             batch_size: int = 64, patience: int = 5, seed: int = 0, int8: bool = False,
             progress: bool = False, storage: str | None = None) -> tuple[nn.Sequential, dict]:
    """Fine-tune a copy of ``model`` (not modified); returns (network, facts).

    Args:
        model: the pruned ``nn.Sequential`` (as stored: at int8 with dequantized int8 weights).
        X, T: training data; X_val, T_val: validation data for early stopping and selection.
        epochs, lr, batch_size, patience, seed: Adam training as in ``train.train``.
        storage: the storage dtype ("float32" default, "float16", "float64", "int8"); the
            fine-tuned weights and biases are stored at it (``quantize.stored``) before they
            compete with the start. int8=True: the older spelling of storage="int8".

    facts: start and final validation error/accuracy, epochs run, best epoch, and ``kept_start``
    (True when no fine-tuned network beat the start, which is then returned unchanged).
    """
    network.check_positive_int("epochs", epochs)
    storage = storage_name(storage, int8)
    start = evaluate(model, X_val, T_val, loss)
    tuned = copy.deepcopy(model)
    log = train.train(tuned, X, T, X_val, T_val, loss=loss, epochs=epochs, lr=lr, batch_size=batch_size,
                      patience=patience, seed=seed)
    _store(tuned, storage)
    end = evaluate(tuned, X_val, T_val, loss)
    kept_start = not _better(end, start)
    best = copy.deepcopy(model) if kept_start else tuned
    final = start if kept_start else end
    return best, {
        "epochs": epochs, "epochs_run": log.epochs, "best_epoch": log.best_epoch, "lr": lr, "seed": seed,
        "storage": storage, "int8_requantized": storage == "int8", "kept_start": kept_start,
        "start_val_error": start[0], "start_val_accuracy": start[1],
        "val_error": final[0], "val_accuracy": final[1],
    }


def scratch_baseline(model, X, T, X_val, T_val, X_test, T_test, loss: str = "mse", recipe: dict | None = None,
                     seeds=(0, 1, 2), int8: bool = False, progress: bool = False,
                     scaling: dict | None = None, storage: str | None = None) -> list[dict]:
    """Train fresh networks of exactly ``model``'s shape (widths, activations, bias) with
    ``recipe`` (epochs, lr, batch_size, patience; default ``DEFAULT_RECIPE``), one per seed;
    their weights and biases are then stored at ``storage`` (``quantize.stored``: float16 rounded,
    int8 quantized per row; int8=True is storage="int8"); without X_test the test numbers
    are None. ``scaling`` (a model file's record, ``{"mean", "std"}``, of ``train --standardize``;
    ``per_channel`` for a CNN's): train on scaled inputs and fold the scaling into the first layer,
    as the model was.
    Returns one dict per seed:
    seed, test_error, test_accuracy, val_error, val_accuracy, epochs_run."""
    net = as_net(model)
    storage = storage_name(storage, int8)
    r = {**DEFAULT_RECIPE, **{k: v for k, v in (recipe or {}).items() if k in DEFAULT_RECIPE}}
    build = _builder(net, recipe or {})
    out = []
    for seed in seeds:
        fresh = build(seed)
        Xs, Xvs = X, X_val
        if scaling and scaling.get("per_channel"):  # a CNN's: x / s_c per input channel (scaling.fold_channels)
            Xs, Xvs = (sc.scale_channels(x, scaling["std"], recipe["input_shape"]) for x in (X, X_val))
        elif scaling:
            Xs, Xvs = (sc.standardize(x, scaling["mean"], scaling["std"]) for x in (X, X_val))
        log = train.train(fresh, Xs, T, Xvs, T_val, loss=loss, epochs=r["epochs"], lr=r["lr"],
                          batch_size=r["batch_size"], patience=r["patience"], seed=seed, progress=progress)
        fresh = as_net(fresh.eval()).to_sequential()  # a CNN's BatchNorm folded, as train --arch cnn saves it
        if scaling:
            fresh = sc.fold(fresh, scaling["mean"], scaling["std"])
        _store(fresh, storage)
        verr, vacc = evaluate(fresh, X_val, T_val, loss)
        terr, tacc = (None, None) if X_test is None else evaluate(fresh, X_test, T_test, loss)
        out.append({"seed": seed, "test_error": terr, "test_accuracy": tacc, "val_error": verr,
                    "val_accuracy": vacc, "epochs_run": log.epochs})
    return out


def _builder(net, recipe: dict):
    """seed -> a freshly initialised network of ``net``'s shape, built as the recipe built the original."""
    if recipe.get("arch") == "resnet":  # two channel groups per stage (train.resnet)
        channels = recipe.get("channels") or []
        if net.n_hidden != 2 * len(channels) or not recipe.get("input_shape"):
            raise ValueError(f"the scratch baseline rebuilds train --arch resnet's network ({2 * len(channels)} channel "
                             f"groups), but this network has {net.n_hidden}")
        return lambda seed: train.resnet(recipe["input_shape"], net.out_features, channels,
                                         recipe.get("activation", "relu"), recipe.get("out_activation", "identity"),
                                         seed=seed, dtype=net.dtype, widths=net.hidden_sizes)
    if recipe.get("arch") in train.ARCHS:  # cnn, dscnn: one hidden layer per entry of channels
        arch, channels = recipe["arch"], recipe.get("channels") or []
        if len(net.hidden_sizes) != len(channels) or not recipe.get("input_shape"):
            raise ValueError(f"the scratch baseline rebuilds train --arch {arch}'s network ({len(channels)} conv "
                             f"blocks, then one Linear layer), but this network has {net.n_hidden} hidden layers")
        return lambda seed: train.ARCHS[arch](recipe["input_shape"], net.out_features, net.hidden_sizes,
                                              recipe.get("activation", "relu"), recipe.get("out_activation", "identity"),
                                              seed=seed, dtype=net.dtype)
    if net.dims:  # convolutions and pooling: only the CNN recipe says how to rebuild them
        raise ValueError("the scratch baseline of a convolutional network needs the recipe train --arch cnn records "
                         "(recipe={'arch': 'cnn', 'input_shape': ..., 'channels': ...})")
    sizes = [net.in_features, *net.hidden_sizes, net.out_features]
    hidden_act, out_act = net.layers[0].act, net.layers[-1].act
    if any(layer.act.to_dict() != hidden_act.to_dict() for layer in net.layers[:-1]):
        raise ValueError("the scratch baseline needs one activation for every hidden layer")
    bias = net.layers[0].bias is not None

    def build(seed: int) -> nn.Sequential:
        fresh = train.mlp(sizes, hidden_act.name, out_act.name, bias=bias, seed=seed, dtype=net.dtype)
        _copy_activations(fresh, net)
        return fresh

    return build


def _copy_activations(fresh: nn.Sequential, net) -> None:
    """Give ``fresh`` the exact activation modules (e.g. Softplus beta) of ``net``."""
    acts = [layer.act.to_module() for layer in net.layers]
    i = 0
    for idx, m in enumerate(fresh):
        if isinstance(m, nn.Linear):
            i += 1
        elif acts[i - 1] is not None:
            fresh[idx] = acts[i - 1]


def baseline_summary(points: list[dict]) -> str | None:
    """One line: the saved network's test accuracy (or error) beside the from-scratch ones, and plainly
    whether pruning beat them (their mean)."""
    scratch = [p for p in points if p.get("kind") == "scratch"]
    if not scratch:
        return None
    mine = [p for p in points if p.get("kind") == "finetuned"] or [p for p in points if p.get("kind") == "run"]
    me = mine[0]
    keys = [k for k in ("test_accuracy", "test_error", "val_accuracy", "val_error")
            if all(p.get(k) is not None for p in [me, *scratch])]
    if not keys:
        return None
    key = keys[0]
    vals = [p[key] for p in scratch]
    mean = sum(vals) / len(vals)
    better = me[key] > mean if key.endswith("accuracy") else me[key] < mean
    what = key.replace("_", " ")
    verdict = ("pruning beat training from scratch" if better else
               "pruning did NOT beat training this shape from scratch: consider training the small network directly")
    return (f"{what}: pruned ({me['name']}) {me[key]:.4g} vs from scratch at the same shape "
            f"{' / '.join(f'{v:.4g}' for v in vals)} (mean {mean:.4g}, {len(vals)} seeds): {verdict}")
