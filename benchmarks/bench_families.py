"""Depthwise-separable and residual CNNs (issue #18): speed of brute force and accuracy at byte budgets.

Network: ``train.dscnn`` -- a small stand-in for MLPerf Tiny's keyword-spotting DS-CNN (its data,
Speech Commands, cannot be downloaded here; mnist1d's 1x40 signals stand in): Conv1d 3 stride 2 ->
BN -> ReLU, then per further channel count a depthwise Conv1d 3 -> BN -> ReLU -> pointwise 1x1 ->
BN -> ReLU, global average pooling, Linear 10; cross-entropy, trained here (Adam, early stopping).
A unit is a producer channel with its depthwise channel (model/layers/depthwise.py). Float32, CPU.

Prints, side by side in one run:
  1. brute force over all units: shrinknet's batched pass vs a naive loop of masked forward
     passes, one per unit (ratio, and their largest relative difference);
  2. test accuracy at 25%, 50% and 75% of the float32 weight bytes, without retraining:
     shrinknet (iterative brute force, refit="final" on the training split), shrinknet at int8
     storage at the same bytes (refit="final"), Torch-Pruning (Taylor importance with its
     dependency graph, global ranking, pruned step by step on the validation data until the same
     bytes, BatchNorm counted folded), and the kept shape of shrinknet's float32 run trained from
     scratch with the original's recipe (``retrain.scratch_baseline``, --seeds seeds, their mean);
     with flash and RAM (a batch-1 forward's two largest consecutive maps, float32) of each kept
     network.

The same rows for ``train.resnet`` -- a small stand-in for MLPerf Tiny's ResNet-8 (its data,
CIFAR-10, cannot be downloaded here; mnist5k-784's 1x28x28 digits stand in): conv 3 -> BN -> ReLU,
then per stage a ``shrinknet.Residual`` of two conv 3 (identity skip in the first stage, a 1x1
stride-2 projection in the others) followed by ReLU, global average pooling, Linear 10. A unit is a
channel of a group of channels joined by additions (model/layers/resnet.py); brute force on the
validation images is exact, the naive loop is the same masked network re-run per unit.

Run: python benchmarks/bench_families.py [--nets dscnn,resnet] [--epochs 30] [--repeats 3] [--seeds 1]
(Torch-Pruning: the [bench] extra)
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import shrinknet
from shrinknet.data import datasets
from shrinknet.model import losses, network
from shrinknet.repair.train import dscnn, resnet, train
from shrinknet.store.memory import network_bytes, ram_bytes

FRACTIONS = (0.75, 0.5, 0.25)
CHANNELS = (16, 32, 32)
RESNET_CHANNELS = (8, 16, 32)  # ResNet-8's stages halved (16, 32, 64): CPU time on a shared machine


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def naive_brute_force(net, data, loss):
    """Switch off each unit in turn and run the whole masked network again."""
    masks = net.full_masks()
    with torch.no_grad():
        E0 = loss.per_instance(net.forward(data.X, masks).o[-1], data.T).sum()
        out = []
        for h, size in enumerate(net.hidden_sizes):
            s = torch.empty(size)
            for c in range(size):
                m = [mm.clone() for mm in masks]
                m[h][c] = False
                s[c] = loss.per_instance(net.forward(data.X, m).o[-1], data.T).sum() - E0
            out.append(s)
    return out


def folded_bytes(model) -> int:
    """float32 bytes of the model with its BatchNorm folded (as shrinknet stores it)."""
    return network_bytes(shrinknet.as_net(copy.deepcopy(model).eval()).to_sequential())


def accuracy(model, X, y) -> float:
    with torch.no_grad():
        return float((model(X).argmax(1) == y).float().mean())


def torch_pruning_at(model, Xv, yv, budget: int):
    """Torch-Pruning, Taylor importance, global ranking, small iterative steps until <= budget bytes."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(m, torch.zeros(1, *Xv.shape[1:]), importance=tp.importance.TaylorImportance(),
                                  global_pruning=True, pruning_ratio=0.97, iterative_steps=200,
                                  ignored_layers=[last])
    for _ in range(200):
        if folded_bytes(m) <= budget:
            break
        m.zero_grad()
        nn.functional.cross_entropy(m(Xv), yv, reduction="sum").backward()
        pruner.step()
    return m


def family(name, arch, builder, channels, data, shape, args):
    """Train ``builder(shape, 10, channels)`` on ``data`` viewed as ``shape`` and print its rows."""
    ds = datasets.load(data)
    view = lambda a: torch.as_tensor(a).reshape(len(a), *shape)  # noqa: E731
    Xtr, Xv, Xte = view(ds.inputs("train")), view(ds.inputs("val")), view(ds.inputs("test"))
    ytr, yv, yte = (torch.as_tensor(ds.targets(s, "cross_entropy")).long() for s in ("train", "val", "test"))
    recipe = {"arch": arch, "input_shape": shape, "channels": list(channels), "activation": "relu",
              "out_activation": "identity", "epochs": args.epochs, "lr": 3e-3, "batch_size": 64, "patience": 5}
    model = builder(shape, 10, channels)
    t0 = time.perf_counter()
    log = train(model, Xtr, ytr, Xv, yv, loss="cross_entropy", epochs=recipe["epochs"], patience=recipe["patience"],
                lr=recipe["lr"], batch_size=recipe["batch_size"])
    model.eval()
    if args.val:  # rank (and time brute force) on fewer validation instances
        Xv, yv = Xv[: args.val], yv[: args.val]
    full = folded_bytes(model)
    print(f"\n== {name} {channels} on {data} {'x'.join(map(str, shape))}: trained {log.epochs} epochs in "
          f"{time.perf_counter() - t0:.1f}s; test accuracy {accuracy(model, Xte, yte):.4f}; {full} B of float32 "
          f"weights (BatchNorm folded), RAM {ram_bytes(model, input_shape=shape)} B")

    net = shrinknet.as_net(model)
    loss = losses.get("cross_entropy")
    data = network.prepare(net, Xv, yv, loss)
    fast = shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy")
    slow = naive_brute_force(net, data, loss)
    worst = max(float(((a - b).abs() / b.abs().clamp_min(1e-6)).max()) for a, b in zip(fast, slow))
    t_fast = best_of(lambda: shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy"), args.repeats)
    t_slow = best_of(lambda: naive_brute_force(net, data, loss), args.repeats)
    print(f"\nbrute force on {len(Xv)} validation instances, {sum(net.hidden_sizes)} units "
          f"(best of {args.repeats}; shared, noisy 2-core machine)")
    print(f"{'':34} {'seconds':>9} {'ratio':>7}")
    print(f"{'naive masked loop':34} {t_slow:9.3f} {1:7.2f}")
    print(f"{'shrinknet':34} {t_fast:9.3f} {t_slow / t_fast:7.2f}x faster   (max rel. diff {worst:.1e})")

    smallest = int(full * min(FRACTIONS))
    cfg = {"method": "brute_force", "algorithm": "iterative", "loss": "cross_entropy", "budget_bytes": smallest,
           "X_test": Xte, "T_test": yte}
    t0 = time.perf_counter()
    f32 = shrinknet.prune(model, Xv, yv, **cfg, config=shrinknet.PruneConfig(progress=False, refit="final", X_calib=Xtr))
    t32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    q8 = shrinknet.prune(model.float(), Xv, yv, **cfg,
                         config=shrinknet.PruneConfig(progress=False, refit="final", X_calib=Xtr, dtype="int8"))
    t8 = time.perf_counter() - t0
    print(f"\nshrinknet iterative brute force (refit final) to {smallest} B: {len(f32.steps) - 1} units in {t32:.1f}s "
          f"(float32); {len(q8.steps) - 1} in {t8:.1f}s (int8)")
    from shrinknet.repair.retrain import scratch_baseline

    print("\ntest accuracy, no retraining; B: flash bytes (float32, int8 for the int8 column); RAM: bytes of a "
          "batch-1 forward")
    print(f"{'budget':>12} | {'shrinknet kept':>16} {'acc':>6} {'B':>6} {'RAM':>5} | {'int8 kept':>14} {'acc':>6} "
          f"{'B':>6} | {'Torch-Pruning kept':>18} {'acc':>6} {'B':>6} {'RAM':>5} | {'scratch':>7}")
    for frac in FRACTIONS:
        budget = int(full * frac)
        k, small = f32.fit(budget)
        s = f32.steps[k]
        kq, _ = q8.fit(budget)
        q = q8.steps[kq]
        tp_model = torch_pruning_at(model, Xv, yv, budget)
        tp_kept = shrinknet.as_net(copy.deepcopy(tp_model).eval()).hidden_sizes
        scratch = float("nan")
        if args.seeds:
            r = scratch_baseline(small, Xtr, ytr, Xv, yv, Xte, yte, loss="cross_entropy", recipe=recipe,
                                 seeds=range(args.seeds))
            scratch = sum(x["test_accuracy"] for x in r) / len(r)
        print(f"{int(frac * 100):>3}% {budget:>6} B | {list(s.kept)!s:>16} {s.test_accuracy:6.4f} {s.bytes:>6} "
              f"{ram_bytes(small, input_shape=shape):>5} | {list(q.kept)!s:>14} {q.test_accuracy:6.4f} {q.bytes:>6} | "
              f"{list(tp_kept)!s:>18} {accuracy(tp_model, Xte, yte):6.4f} {folded_bytes(tp_model):>6} "
              f"{ram_bytes(tp_model, input_shape=shape):>5} | {scratch:7.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="dscnn,resnet", help="which networks: dscnn, resnet or both")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1, help="from-scratch seeds per kept shape (0: no baseline)")
    ap.add_argument("--val", type=int, default=0, help="use only this many validation instances (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    nets = args.nets.split(",")
    if "dscnn" in nets:
        family("DS-CNN", "dscnn", dscnn, CHANNELS, "mnist1d", (1, 40), args)
    if "resnet" in nets:
        family("ResNet-8-shaped stand-in", "resnet", resnet, RESNET_CHANNELS, "mnist5k-784", (1, 28, 28), args)


if __name__ == "__main__":
    main()
