"""Size/accuracy frontier: test accuracy at 8, 16, 32 and 64 KiB for every way shrinknet makes a
small network, beside Torch-Pruning's Taylor importance and networks trained from scratch.

    python benchmarks/bench_frontier.py            # both networks (mnist5k and its 784-input variant)
    python benchmarks/bench_frontier.py --quick    # mnist5k only, 2 scratch seeds

Needs ``pip install 'shrinknet[bench]'`` (torch-pruning). Rows, per network (sigmoid 2 x 100, MSE,
trained with shrinknet's recipe: Adam, early stopping; ranking on the validation split, numbers on
the held-out test split):

- switch-off f32: the paper (iterative brute force, no compensation, float32)
- refit final / every_step f32: + least-squares refit (calibrated on the training split)
- switch-off int8 / refit final int8: int8 weights, per-row scales, float32 biases
- ... + finetune: that network fine-tuned (<= 20 epochs, lr 1e-3, early stopping on validation)
- TP taylor f32 (+ finetune): Torch-Pruning 1.6 Taylor importance, global, one-shot, at the same
  byte count (the largest of its networks that fits), with and without the same fine-tuning
- scratch f32 / int8: the shape of "refit final" at that budget trained from scratch (mean of seeds)

The 784-input network is trained (and its from-scratch twins too) on standardized inputs folded
into the first layer (``train --standardize``): on raw 0..255 pixels this recipe stops at ~0.65.

At each budget a shrinknet row is the step of its run with the least validation error that fits.
One run per row covers every budget (it stops once it fits the smallest).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import shrinknet
from shrinknet.data import datasets
from shrinknet.store import memory
from shrinknet.repair import retrain
from shrinknet.workflows.experiments import evaluate, prune_on, train_on
from shrinknet.model.parse import as_net

BUDGETS = ("8KiB", "16KiB", "32KiB", "64KiB")
FT = dict(epochs=20, lr=1e-3, batch_size=64, patience=5)


def acc(model, ds) -> float:
    return evaluate(model, ds, "mse")["test_accuracy"]


def finetuned(model, ds, int8=False):
    net, _ = retrain.finetune(model, ds.inputs("train"), ds.targets("train", "mse"), ds.inputs("val"),
                              ds.targets("val", "mse"), loss="mse", int8=int8, **FT)
    return net


def tp_taylor(model, ds, budget: int):
    """Torch-Pruning's Taylor importance, global, one shot: the least pruning that fits ``budget``
    bytes at float32 (bisection on the pruning ratio)."""
    import torch_pruning as tp

    X = torch.as_tensor(ds.inputs("val"))
    T = torch.as_tensor(ds.targets("val", "mse"))

    def pruned(ratio):
        m = copy.deepcopy(model)
        lins = [x for x in m if isinstance(x, nn.Linear)]
        pruner = tp.pruner.MetaPruner(m, X[:1], importance=tp.importance.TaylorImportance(),
                                      global_pruning=True, pruning_ratio=ratio, ignored_layers=[lins[-1]])
        m.zero_grad()
        (0.5 * ((m(X) - T) ** 2).sum()).backward()
        pruner.step()
        m.zero_grad()
        return m

    # Torch-Pruning skips a group that would lose every channel, so very high ratios can prune *less*
    # (0.995 keeps the first layer whole here): start the bisection at the highest ratio that fits.
    lo, hi, best = 0.0, None, None
    for r in (0.98, 0.97, 0.95, 0.9):
        best = pruned(r)
        if memory.network_bytes(best, "float32") <= budget:
            hi = r
            break
    if hi is None:
        return None
    for _ in range(14):
        mid = (lo + hi) / 2
        m = pruned(mid)
        if memory.network_bytes(m, "float32") <= budget:
            hi, best = mid, m
        else:
            lo = mid
    return best


def bench(name: str, seeds: int) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    ds = datasets.load(name, seed=0)
    standardize = name.endswith("784")  # unnormalized pixels (0..255) saturate sigmoid units otherwise
    model, meta = train_on(ds, (100, 100), epochs=300, lr=0.01, batch_size=64, patience=20, seed=0,
                           standardize=standardize)
    times = {"train": time.perf_counter() - t0}
    smallest = min(memory.parse_size(b) for b in BUDGETS)
    variants = {
        "switch-off f32": dict(refit=None, dtype="float32"),
        "refit final f32": dict(refit="final", dtype="float32"),
        "refit every_step f32": dict(refit="every_step", dtype="float32"),
        "switch-off int8": dict(refit=None, dtype="int8"),
        "refit final int8": dict(refit="final", dtype="int8"),
    }
    runs = {}
    for label, kw in variants.items():
        t = time.perf_counter()
        budget = smallest
        if kw["dtype"] == "int8":  # int8 reaches the smallest budgets with many more neurons: run to the end
            budget = None
        runs[label] = prune_on(model, ds, "mse", budget_bytes=budget, progress=False, **kw)
        times[label] = time.perf_counter() - t
    table: dict[str, dict[str, float | None]] = {}

    def put(row, b, v):
        table.setdefault(row, {})[b] = v

    t = time.perf_counter()
    for b in BUDGETS:
        nb = memory.parse_size(b)
        nets = {}
        for label, res in runs.items():
            try:
                k, net = res.fit(nb)
            except ValueError:
                put(label, b, None)
                continue
            nets[label] = net
            put(label, b, res.steps[k].test_accuracy)
        for label in ("refit final f32", "refit final int8"):
            if label in nets:
                put(label + " + finetune", b, acc(finetuned(nets[label], ds, int8="int8" in label), ds))
        tp_net = tp_taylor(model, ds, nb)
        put("TP taylor f32", b, None if tp_net is None else acc(tp_net, ds))
        put("  (shape TP)", b, None if tp_net is None else str(as_net(tp_net).hidden_sizes))
        put("TP taylor f32 + finetune", b, None if tp_net is None else acc(finetuned(tp_net, ds), ds))
        for label, int8 in (("refit final f32", False), ("refit final int8", True)):
            if label not in nets:
                put(f"scratch {'int8' if int8 else 'f32'}", b, None)
                continue
            r = retrain.scratch_baseline(nets[label], ds.inputs("train"), ds.targets("train", "mse"),
                                         ds.inputs("val"), ds.targets("val", "mse"), ds.inputs("test"),
                                         ds.targets("test", "mse"), loss="mse", recipe=meta["training"],
                                         seeds=range(seeds), int8=int8, scaling=meta.get("scaling"))
            put(f"scratch {'int8' if int8 else 'f32'}", b, sum(x["test_accuracy"] for x in r) / len(r))
            put(f"  (shape {'int8' if int8 else 'f32'})", b, str(as_net(nets[label]).hidden_sizes))
    times["finetune, TP, scratch"] = time.perf_counter() - t
    table["_start"] = {"test": meta["metrics"]["test_accuracy"]}
    return table, times


def show(name: str, table: dict, times: dict) -> str:
    start = table.pop("_start")["test"]
    inputs = ", standardized inputs" if name.endswith("784") else ""
    lines = [f"### {name} (2 x 100 sigmoid{inputs}, unpruned test accuracy {start:.3f})", "", "| variant | " + " | ".join(BUDGETS) + " |", "|---" * (len(BUDGETS) + 1) + "|"]
    for row, cells in table.items():
        vals = [cells.get(b) for b in BUDGETS]
        lines.append(f"| {row} | " + " | ".join("—" if v is None else v if isinstance(v, str) else f"{v:.3f}"
                                                for v in vals) + " |")
    lines += ["", "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="mnist5k only, 2 scratch seeds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["mnist5k", "mnist5k-784"], help="one network only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = ["mnist5k"] if args.quick else ["mnist5k", "mnist5k-784"]
    if args.only:
        names = [args.only]
    t0 = time.perf_counter()
    for name in names:
        table, times = bench(name, 2 if args.quick else 3)
        print(show(name, table, times), flush=True)
    print(f"total {time.perf_counter() - t0:.0f}s on {args.threads} thread(s), shrinknet {shrinknet.__version__}")


if __name__ == "__main__":
    main()
