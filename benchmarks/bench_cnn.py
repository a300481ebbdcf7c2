"""CNN channel pruning on MNIST 5k (1x20x20): speed ratios and accuracy at a byte budget.

Network (the issue's): conv 3x3 16 -> BN -> ReLU -> max pool 2 -> conv 3x3 32 -> BN -> ReLU ->
max pool 2 -> Linear 10, cross-entropy, trained here for a few epochs (Adam, early stopping on the
validation split); BatchNorm is folded into the convolutions when shrinknet parses it. Float32, CPU.

Prints, side by side in one run:
  1. brute force over all 48 channels: shrinknet's vectorized pass (a chunk of candidates batched
     through the layers above) vs a naive loop of masked forward passes, one per channel (ratio);
  2. taylor2 (one forward pass and the second-derivative sweep) vs one torch forward+backward;
  3. test accuracy at 4, 8, 16 and 32 KiB (shrinknet also with refit="final": ridge least squares
     of the layers above on the training split, over every position) of float32 weights: shrinknet (iterative brute force,
     Algorithm II) vs Torch-Pruning's Taylor importance (global ranking, pruned step by step on
     the same validation data until the same byte count; BatchNorm counted folded), without
     retraining and then after the same fine-tuning (``retrain.finetune``: Adam, --finetune epochs,
     early stopping on validation) of each pruned network. Torch-Pruning's network keeps its
     BatchNorm layers, which fine-tuning also updates; shrinknet's has them folded.
     Beside them, shrinknet at int8 storage (``dtype="int8"``: int8 kernels with a float32 scale per
     output channel, float32 biases; refit="final"; the budget counts all three) at the same budgets;
  4. the honest baseline at each budget: the kept shape of shrinknet's float32 run (and of its int8 run,
     quantized per output channel after training) trained from scratch with the recipe the original was
     trained with (``retrain.scratch_baseline``: ``train.cnn`` with the kept channels, BatchNorm folded
     after training; --seeds seeds, their mean), beside the pruned networks' test accuracy. A shape met
     twice (e.g. int8 at 16 and 32 KiB) is trained once.

Run: python benchmarks/bench_cnn.py [--epochs 8] [--repeats 3] [--seeds 3]   (needs torch-pruning: the [bench] extra)
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
from shrinknet.repair.train import cnn, train

BUDGETS_KIB = (4, 8, 16, 32)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def naive_brute_force(net, data, loss):
    """Switch off each channel in turn and run the whole masked network again."""
    masks = net.full_masks()
    E0 = loss.per_instance(net.forward(data.X, masks).o[-1], data.T).sum()
    out = []
    with torch.no_grad():
        for h, size in enumerate(net.hidden_sizes):
            s = torch.empty(size)
            for c in range(size):
                m = [mm.clone() for mm in masks]
                m[h][c] = False
                s[c] = loss.per_instance(net.forward(data.X, m).o[-1], data.T).sum() - E0
            out.append(s)
    return out


def flash_bytes_folded(model) -> int:
    """float32 bytes of conv and linear weights and biases (BatchNorm folded into the conv bias)."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n += m.weight.numel() + (m.bias.numel() if m.bias is not None else m.out_channels)
    return 4 * n


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
        if flash_bytes_folded(m) <= budget:
            break
        m.zero_grad()
        nn.functional.cross_entropy(m(Xv), yv, reduction="sum").backward()
        pruner.step()
    return m


def cnn_recipe(shape, channels, epochs: int) -> dict:
    """The recipe ``main`` trains the original with, in ``retrain.scratch_baseline``'s words."""
    return {"arch": "cnn", "input_shape": shape, "channels": list(channels), "activation": "relu",
            "out_activation": "identity", "epochs": epochs, "lr": 3e-3, "batch_size": 64, "patience": 3}


def scratch_table(result, refit, int8, recipe, Xtr, ytr, Xv, yv, Xte, yte, seeds: int) -> None:
    """Print, per budget, the pruned networks (no retraining) beside their kept shapes trained from scratch
    with ``recipe`` (mean of ``seeds`` seeds; int8: quantized per output channel after training)."""
    from shrinknet.repair.retrain import scratch_baseline

    cache: dict = {}

    def scratch(small, kept, q8: bool) -> list[float]:
        key = (tuple(kept), q8)
        if key not in cache:
            r = scratch_baseline(small, Xtr, ytr, Xv, yv, Xte, yte, loss="cross_entropy", recipe=recipe,
                                 seeds=range(seeds), int8=q8)
            cache[key] = [x["test_accuracy"] for x in r]
        return cache[key]

    t0 = time.perf_counter()
    print(f"\nthe honest baseline: each kept shape trained from scratch with the original's recipe (train.cnn, "
          f"Adam lr {recipe['lr']}, batch {recipe['batch_size']}, {recipe['epochs']} epochs, patience "
          f"{recipe['patience']}; BatchNorm folded), seeds 0..{seeds - 1}; test accuracy")
    print(f"{'budget':>8} | {'f32 kept':>9} {'acc':>7} {'refit':>7} {'scratch':>7}  {'(seeds)':<22} | "
          f"{'int8 kept':>9} {'refit':>7} {'scratch':>7}  (seeds)")
    for kib in BUDGETS_KIB:
        k, small = result.fit(kib * 1024)
        f = result.steps[k]
        r = refit.steps[refit.fit(kib * 1024)[0]]
        s32 = scratch(small, f.kept, False)
        kq, small8 = int8.fit(kib * 1024)
        q = int8.steps[kq]
        s8 = scratch(small8, q.kept, True)
        seeds32 = " ".join(f"{a:.4f}" for a in s32)
        seeds8 = " ".join(f"{a:.4f}" for a in s8)
        note = "" if r.kept == f.kept else f"   (refit kept {r.kept})"
        print(f"{kib:>5} KiB | {str(f.kept):>9} {f.test_accuracy:7.4f} {r.test_accuracy:7.4f} "
              f"{sum(s32) / len(s32):7.4f}  {seeds32:<22} | {str(q.kept):>9} {q.test_accuracy:7.4f} "
              f"{sum(s8) / len(s8):7.4f}  {seeds8:<22}{note}".rstrip())
    print(f"({len(cache)} shapes x {seeds} seeds trained from scratch in {time.perf_counter() - t0:.1f}s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--finetune", type=int, default=5, help="fine-tuning epochs (0: none)")
    ap.add_argument("--seeds", type=int, default=3, help="from-scratch seeds per kept shape (0: no baseline)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ds = datasets.load("mnist5k")
    shape = (1, 20, 20)
    view = lambda a: torch.as_tensor(a).reshape(len(a), *shape)  # noqa: E731
    Xtr, Xv, Xte = view(ds.inputs("train")), view(ds.inputs("val")), view(ds.inputs("test"))
    ytr, yv, yte = (torch.as_tensor(ds.targets(s, "cross_entropy")).long() for s in ("train", "val", "test"))
    recipe = cnn_recipe(shape, (16, 32), args.epochs)
    model = cnn(shape, 10, recipe["channels"], recipe["activation"])
    t0 = time.perf_counter()
    log = train(model, Xtr, ytr, Xv, yv, loss="cross_entropy", epochs=recipe["epochs"], patience=recipe["patience"],
                lr=recipe["lr"], batch_size=recipe["batch_size"])
    model.eval()
    print(f"trained {log.epochs} epochs in {time.perf_counter() - t0:.1f}s; test accuracy {accuracy(model, Xte, yte):.4f}; "
          f"{flash_bytes_folded(model)} B of float32 weights (BatchNorm folded)")

    net = shrinknet.as_net(model)
    loss = losses.get("cross_entropy")
    data = network.prepare(net, Xv, yv, loss)
    fast = shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy")
    slow = naive_brute_force(net, data, loss)
    worst = max(float(((a - b).abs() / b.abs().clamp_min(1e-6)).max()) for a, b in zip(fast, slow))
    t_fast = best_of(lambda: shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy"), args.repeats)
    t_slow = best_of(lambda: naive_brute_force(net, data, loss), args.repeats)
    t_t2 = best_of(lambda: shrinknet.saliency(model, Xv, yv, "taylor2", loss="cross_entropy"), args.repeats)

    def fwd_bwd():
        m = copy.deepcopy(model)
        nn.functional.cross_entropy(m(Xv), yv, reduction="sum").backward()

    t_fb = best_of(fwd_bwd, args.repeats)
    print(f"\nspeed on {len(Xv)} validation images, 48 channels (best of {args.repeats}; shared, noisy 2-core machine)")
    print(f"{'':34} {'seconds':>9} {'ratio':>7}")
    print(f"{'brute force, naive masked loop':34} {t_slow:9.3f} {1:7.2f}")
    print(f"{'brute force, shrinknet':34} {t_fast:9.3f} {t_slow / t_fast:7.2f}x faster   (max rel. diff {worst:.1e})")
    print(f"{'one forward+backward (torch)':34} {t_fb:9.3f} {1:7.2f}")
    print(f"{'taylor2 (forward + 2nd-order sweep)':34} {t_t2:9.3f} {t_t2 / t_fb:7.2f}x its time")

    t0 = time.perf_counter()
    result = shrinknet.prune(model, Xv, yv, method="brute_force", algorithm="iterative", loss="cross_entropy",
                             budget_bytes=min(BUDGETS_KIB) * 1024, X_test=Xte, T_test=yte,
                             config=shrinknet.PruneConfig(progress=False))
    t_prune = time.perf_counter() - t0
    refit = shrinknet.prune(model, Xv, yv, method="brute_force", algorithm="iterative", loss="cross_entropy",
                            budget_bytes=min(BUDGETS_KIB) * 1024, X_test=Xte, T_test=yte,
                            config=shrinknet.PruneConfig(progress=False, refit="final", X_calib=Xtr))
    t0 = time.perf_counter()
    int8 = shrinknet.prune(model, Xv, yv, method="brute_force", algorithm="iterative", loss="cross_entropy",
                           budget_bytes=min(BUDGETS_KIB) * 1024, X_test=Xte, T_test=yte,
                           config=shrinknet.PruneConfig(progress=False, refit="final", X_calib=Xtr, dtype="int8"))
    t_int8 = time.perf_counter() - t0
    print(f"\nshrinknet iterative brute force down to {min(BUDGETS_KIB)} KiB: {len(result.steps) - 1} channels removed "
          f"in {t_prune:.1f}s at float32; at int8 (refit final) {len(int8.steps) - 1} from "
          f"{int8.steps[0].bytes} B in {t_int8:.1f}s")
    from shrinknet.repair.retrain import finetune

    def tuned(m):
        if args.finetune == 0:
            return float("nan")
        best, _ = finetune(m, Xtr, ytr, Xv, yv, loss="cross_entropy", epochs=args.finetune, lr=1e-3, patience=2)
        return accuracy(best.eval(), Xte, yte)

    print(f"\ntest accuracy (no retraining | after {args.finetune} epochs of the same fine-tuning; int8: refit final)")
    print(f"{'budget':>8} | {'shrinknet B':>11} {'kept':>9} {'acc':>7} {'refit':>7} {'tuned':>7} | "
          f"{'int8 B':>7} {'kept':>9} {'refit':>7} | {'Torch-Pruning B':>15} {'kept':>9} {'acc':>7} {'tuned':>7}")
    for kib in BUDGETS_KIB:
        k, small = result.fit(kib * 1024)
        q = int8.steps[int8.fit(kib * 1024)[0]]
        tp_model = torch_pruning_at(model, Xv, yv, kib * 1024)
        tp_kept = [m.out_channels for m in tp_model.modules() if isinstance(m, nn.Conv2d)]
        print(f"{kib:>5} KiB | {result.steps[k].bytes:>11} {str(result.steps[k].kept):>9} "
              f"{result.steps[k].test_accuracy:7.4f} {refit.steps[refit.fit(kib * 1024)[0]].test_accuracy:7.4f} "
              f"{tuned(small):7.4f} | {q.bytes:>7} {str(q.kept):>9} {q.test_accuracy:7.4f} | "
              f"{flash_bytes_folded(tp_model):>15} {str(tp_kept):>9} {accuracy(tp_model, Xte, yte):7.4f} "
              f"{tuned(tp_model):7.4f}")
    if args.seeds > 0:
        scratch_table(result, refit, int8, recipe, Xtr, ytr, Xv, yv, Xte, yte, args.seeds)


if __name__ == "__main__":
    main()
