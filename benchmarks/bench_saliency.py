"""Speed of the saliency criteria on an MNIST-sized sigmoid net (784-300-100-10, N = 2000, float32).

Prints ratios measured side by side in one run (machines here are shared and noisy):
  - vectorized brute force vs a naive loop of K masked forward passes (the paper's §2.1 as written)
  - taylor2 (forward + second-derivative sweep) vs one autograd forward + backward pass
  - taylor2_exact (autograd Hessian diagonal) vs taylor2
  - achieved GFLOP/s of brute force vs this machine's measured matmul GFLOP/s

Run: python benchmarks/bench_saliency.py [--n 2000] [--repeat 3] [--threads T]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import shrinknet
from shrinknet.repair.train import mlp


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_brute_force(model, X, T):
    """K full forward passes, neuron k's output zeroed by a forward hook: the literal §2.1."""
    base = 0.5 * ((model(X) - T) ** 2).sum()
    out = []
    for idx, mod in enumerate(model):
        if not isinstance(mod, nn.Linear) or idx == len(model) - 1 or idx + 2 >= len(model):
            continue
        act = model[idx + 1]  # the activation right after the Linear
        scores = torch.empty(mod.out_features)
        for j in range(mod.out_features):
            def hook(m, inp, o, j=j):
                o = o.clone()
                o[:, j] = 0
                return o
            handle = act.register_forward_hook(hook)
            scores[j] = 0.5 * ((model(X) - T) ** 2).sum() - base
            handle.remove()
        out.append(scores)
    return out


def brute_force_flops(sizes, n) -> float:
    """Multiply-adds x 2 of the batched passes: for each candidate of hidden layer h, the rank-1
    update of layer h+1 (N x out_{h+1}) and every matmul above it."""
    total = 0
    for h in range(1, len(sizes) - 1):  # sizes[h] = width of hidden layer h-1 (0-based)
        cand = sizes[h]
        per = 2 * n * sizes[h + 1]
        per += sum(2 * n * sizes[k] * sizes[k + 1] for k in range(h + 1, len(sizes) - 1))
        total += cand * per
    return total


def matmul_gflops(repeat: int) -> float:
    a, b = torch.randn(2000, 1000), torch.randn(1000, 1000)
    t = timeit(lambda: a @ b, repeat + 2)
    return 2 * 2000 * 1000 * 1000 / t / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [784, 300, 100, 10]
    model = mlp(sizes, "sigmoid", "sigmoid", seed=0)
    X = torch.rand(args.n, 784)
    T = torch.nn.functional.one_hot(torch.randint(0, 10, (args.n,)), 10).float()
    K = sum(sizes[1:-1])
    print(f"network {'-'.join(map(str, sizes))} sigmoid, N = {args.n}, float32, CPU, "
          f"{torch.get_num_threads()} threads, K = {K} hidden neurons, torch {torch.__version__}")

    with torch.no_grad():
        # correctness first: the fast path and the naive loop agree
        fast = shrinknet.saliency(model, X, T, "brute_force")
        slow = naive_brute_force(model, X, T)
        # reference: the same ΔE in float64 (the test suite checks float64 brute force against the
        # literal loop to 1e-10); errors relative to the largest |ΔE|
        ref = shrinknet.saliency(copy.deepcopy(model).double(), X.double(), T.double(), "brute_force")
        scale = max(float(r.abs().max()) for r in ref)
        err_fast = max(float((a.double() - r).abs().max()) for a, r in zip(fast, ref)) / scale
        err_slow = max(float((a.double() - r).abs().max()) for a, r in zip(slow, ref)) / scale
        t_fast = timeit(lambda: shrinknet.saliency(model, X, T, "brute_force"), args.repeat)
        t_naive = timeit(lambda: naive_brute_force(model, X, T), 1)

    def fwd_bwd():
        model.zero_grad()
        (0.5 * ((model(X) - T) ** 2).sum()).backward()

    t_fb = timeit(fwd_bwd, args.repeat)
    with torch.no_grad():
        t_t1 = timeit(lambda: shrinknet.saliency(model, X, T, "taylor1"), args.repeat)
        t_t2 = timeit(lambda: shrinknet.saliency(model, X, T, "taylor2"), args.repeat)
        t_t2x = timeit(lambda: shrinknet.saliency(model, X, T, "taylor2_exact"), 1)
    flops = brute_force_flops(sizes, args.n)
    peak = matmul_gflops(args.repeat)
    achieved = flops / t_fast / 1e9

    rows = [
        ("brute_force, vectorized", t_fast, ""),
        ("brute_force, naive loop of K passes", t_naive, f"{t_naive / t_fast:.1f}x slower than vectorized (aim >= 10x)"),
        ("one forward + backward (autograd)", t_fb, ""),
        ("taylor1", t_t1, f"{t_t1 / t_fb:.2f}x forward+backward"),
        ("taylor2 (eqs. 73-75 sweep)", t_t2, f"{t_t2 / t_fb:.2f}x forward+backward (aim <= 3x)"),
        ("taylor2_exact (autograd diagonal)", t_t2x, f"{t_t2x / t_t2:.0f}x taylor2"),
    ]
    print(f"\n{'what':40} {'seconds':>10}  ratio")
    for name, t, note in rows:
        print(f"{name:40} {t:10.4f}  {note}")
    print(f"\nbrute force: {flops / 1e9:.2f} GFLOP (rank-1 updates + downstream matmuls) in {t_fast:.3f}s = "
          f"{achieved:.1f} GFLOP/s; matmul on this machine {peak:.1f} GFLOP/s -> {achieved / peak:.0%} of it (aim >= 30%)")
    print(f"float32 error vs float64 brute force, relative to max |ΔE|: vectorized {err_fast:.1e}, "
          f"naive loop {err_slow:.1e} (the loop subtracts two large totals)")


if __name__ == "__main__":
    main()
