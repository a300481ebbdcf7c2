"""Speed (and quality) of a full iterative brute-force pruning run.

Network 784-100-100-10 sigmoid, 1000 validation instances, float32, CPU: the issue's yardstick.
Prints, side by side in one run:
  - shrinknet.prune (Algorithm II, brute force, all 200 neurons): cached forward passes, recomputing
    only what a removal changed, vectorized scoring;
  - the same loop calling the public ``saliency`` from scratch every step (no caching);
  - the naive literal loop (switch off each neuron, re-evaluate) timed on its first steps and
    extrapolated over the run (its per-step cost is proportional to the neurons left);
  - with --quality: on a network trained on MNIST 5k, test accuracy of iterative vs iterative_pairs.

Run: python benchmarks/bench_prune.py [--quality]
"""

from __future__ import annotations

import argparse
import time

import torch

import shrinknet
from shrinknet.repair.train import mlp


def naive_step_seconds(model, X, T, masks) -> float:
    """One step of the literal algorithm: K forward passes with one more neuron switched off."""
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    t0 = time.perf_counter()
    with torch.no_grad():
        for h, m in enumerate(masks):
            for j in range(len(m)):
                if not m[j]:
                    continue
                hdl = []
                for hh, mm in enumerate(masks):
                    keep = mm.clone()
                    if hh == h:
                        keep[j] = False
                    act = model[2 * hh + 1]
                    hdl.append(act.register_forward_hook(lambda mod, i, o, keep=keep: o * keep))
                float(0.5 * ((model(X) - T) ** 2).sum())
                for x in hdl:
                    x.remove()
    del lins
    return time.perf_counter() - t0


def uncached_run(model, X, T, steps: int) -> float:
    """Algorithm II through the public API: full saliency() every step."""
    masks = [torch.ones(100, dtype=torch.bool), torch.ones(100, dtype=torch.bool)]
    t0 = time.perf_counter()
    for _ in range(steps):
        s = shrinknet.saliency(model, X, T, "brute_force", mask=masks)
        for h in range(2):
            if int(masks[h].sum()) == 1:
                s[h][:] = float("inf")
        h = int(torch.stack([x.min() for x in s]).argmin())
        masks[h] = masks[h].clone()
        masks[h][int(s[h].argmin())] = False
    return time.perf_counter() - t0


def speed():
    torch.manual_seed(0)
    model = mlp([784, 100, 100, 10], "sigmoid", "sigmoid", seed=0)
    X = torch.rand(1000, 784)
    T = torch.nn.functional.one_hot(torch.randint(0, 10, (1000,)), 10).float()
    print(f"784-100-100-10 sigmoid, N = 1000 validation instances, float32, {torch.get_num_threads()} threads")
    shrinknet.prune(model, X, T, config=shrinknet.PruneConfig(progress=False, max_fraction=0.05))  # warm-up
    t0 = time.perf_counter()
    r = shrinknet.prune(model, X, T, config=shrinknet.PruneConfig(progress=False))
    t_ours = time.perf_counter() - t0
    n = len(r.steps) - 1
    t_uncached = uncached_run(model, X, T, n)
    masks = [torch.ones(100, dtype=torch.bool), torch.ones(100, dtype=torch.bool)]
    t_step = min(naive_step_seconds(model, X, T, masks) for _ in range(2))
    t_naive = t_step * sum((200 - k) / 200 for k in range(n))
    print(f"{'what':52} {'seconds':>9}  ratio")
    print(f"{'shrinknet.prune, iterative brute force, ' + str(n) + ' removals':52} {t_ours:9.2f}")
    print(f"{'same loop, saliency() from scratch each step':52} {t_uncached:9.2f}  {t_uncached / t_ours:.1f}x ours")
    print(f"{'naive literal loop (extrapolated from one step)':52} {t_naive:9.0f}  {t_naive / t_ours:.0f}x ours")


def quality():
    from shrinknet.data import datasets
    from shrinknet.workflows.experiments import FRACTIONS, curve_at, prune_on, train_on

    ds = datasets.load("mnist5k", seed=0)
    model, meta = train_on(ds, (50, 50), epochs=300)
    print(f"\nMNIST 5k 400-50-50-10 sigmoid, test accuracy {meta['metrics']['test_accuracy']:.4f}")
    print(f"{'algorithm':18} {'seconds':>8} " + " ".join(f"{int(f * 100):>5}%" for f in FRACTIONS))
    for algorithm in ("iterative", "iterative_pairs"):
        t0 = time.perf_counter()
        r = prune_on(model, ds, "mse", algorithm=algorithm)
        dt = time.perf_counter() - t0
        accs = curve_at(r, "accuracy")
        print(f"{algorithm:18} {dt:8.1f} " + " ".join(f"{a:6.3f}" for a in accs))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quality", action="store_true", help="also compare iterative and iterative_pairs on MNIST 5k")
    args = ap.parse_args()
    speed()
    if args.quality:
        quality()
