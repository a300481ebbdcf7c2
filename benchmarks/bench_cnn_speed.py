"""Brute force on CNNs: shrinknet's batched pass against a naive masked loop, on the two networks
issue #18 names (a speed-only companion of bench_cnn.py and bench_families.py, which train longer
and go on to accuracy tables).

Networks (trained here for a few epochs; speed does not depend on how well they are trained):
  cnn    bench_cnn.py's: conv 3x3 16 -> BN -> ReLU -> max pool 2 -> conv 3x3 32 -> BN -> ReLU ->
         max pool 2 -> Linear 10, on mnist5k 1x20x20 (1000 validation images, 48 channels);
  dscnn  bench_families.py's DS-CNN (16, 32, 32) on mnist1d 1x40 (1000 validation signals, 80 units).

Prints, side by side in one run, per network (best of --rounds interleaved rounds of --repeats;
wall and CPU seconds; the machine is shared and noisy):
  1. one brute-force scoring of every unit: the naive loop (switch each unit off, run the whole
     masked network again), shrinknet.saliency(..., "brute_force") and the ratio, with the largest
     relative difference between the two;
  2. with --chunks: the same scoring at fixed chunk sizes (candidates per batched pass), to see
     where the automatic choice stands;
  3. with --prune N: N steps of iterative brute force (shrinknet.prune, Algorithm II) at each speed
     (exact, screen, fast): seconds per step and, for the approximate speeds, their agreement with
     the exact greedy choice (PruneResult.agreement).

With --threads 1 both sides run on one core (torch's pool at 1 thread for the naive loop, one
shrinknet worker): the like-for-like comparison, and the steadier one on a busy machine, where
torch's 2-thread pool waits at every op for a descheduled thread.

Run: python benchmarks/bench_cnn_speed.py [--epochs 2] [--repeats 3] [--rounds 2] [--threads 2] [--chunks 1,4,16,64] [--prune 20]
"""

from __future__ import annotations

import argparse
import time

import torch

import shrinknet
from shrinknet.choose import speed as speed_mod
from shrinknet.data import datasets
from shrinknet.model import losses, network
from shrinknet.repair.train import cnn, dscnn, train


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process, all its threads) over ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def naive_brute_force(net, data, loss):
    """Switch off each unit in turn and run the whole masked network again (bench_cnn.py's loop)."""
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


def network_of(name: str, epochs: int):
    if name == "cnn":
        ds, shape, model = datasets.load("mnist5k"), (1, 20, 20), cnn((1, 20, 20), 10, (16, 32))
    else:
        ds, shape, model = datasets.load("mnist1d"), (1, 40), dscnn((1, 40), 10, (16, 32, 32))
    view = lambda a: torch.as_tensor(a).reshape(len(a), *shape)  # noqa: E731
    Xtr, Xv = view(ds.inputs("train")), view(ds.inputs("val"))
    ytr, yv = (torch.as_tensor(ds.targets(s, "cross_entropy")).long() for s in ("train", "val"))
    if epochs:
        train(model, Xtr, ytr, Xv, yv, loss="cross_entropy", epochs=epochs, lr=3e-3, batch_size=64, patience=3)
    return model.eval(), Xv, yv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of naive and shrinknet timings")
    ap.add_argument("--nets", default="cnn,dscnn")
    ap.add_argument("--chunks", default="", help="comma-separated fixed chunk sizes to time as well")
    ap.add_argument("--prune", type=int, default=0, help="iterative steps to time at each speed (0: none)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads of the naive loop; shrinknet gets the same count of workers with "
                         "--threads 1, its own policy otherwise (default 2, as bench_cnn.py)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    workers = 1 if args.threads == 1 else None
    rows = []
    for name in args.nets.split(","):
        model, Xv, yv = network_of(name, args.epochs)
        net = shrinknet.as_net(model)
        loss = losses.get("cross_entropy")
        data = network.prepare(net, Xv, yv, loss)
        fast = shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy", threads=workers)
        slow = naive_brute_force(net, data, loss)
        worst = max(float(((a - b).abs() / b.abs().clamp_min(1e-6)).max()) for a, b in zip(fast, slow))
        t_slow, t_fast = (0.0, 0.0), (0.0, 0.0)
        for _ in range(args.rounds):  # interleaved rounds: a burst of load hits both sides
            t_slow = _best(t_slow, best_of(lambda: naive_brute_force(net, data, loss), args.repeats))
            t_fast = _best(t_fast, best_of(lambda: shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy",
                                                                      threads=workers), args.repeats))
        rows.append((name, "auto", t_slow, t_fast, worst))
        for c in [int(c) for c in args.chunks.split(",") if c]:
            t = best_of(lambda: shrinknet.saliency(model, Xv, yv, "brute_force", loss="cross_entropy", chunk_size=c,
                                                   threads=workers), args.repeats)
            rows.append((name, str(c), t_slow, t, float("nan")))
        if args.prune:
            for speed in ("exact", "screen", "fast"):
                t0 = time.perf_counter()
                try:
                    r = shrinknet.prune(model, Xv, yv, method="brute_force", algorithm="iterative", loss="cross_entropy",
                                        config=shrinknet.PruneConfig(max_fraction=args.prune / sum(net.hidden_sizes),
                                                                     speed=speed, progress=False, threads=workers))
                except ValueError as e:
                    print(f"{name:6} speed {speed}: {e}")
                    continue
                dt = time.perf_counter() - t0
                steps = len(r.steps) - 1
                ag = speed_mod.summary(r.agreement) if r.agreement else None
                same = "" if ag is None else (f"   agreement: {ag['same']}/{ag['checks']} checked removals the exact "
                                              f"greedy choice, mean excess dE {ag['mean_excess_delta']:.3g}")
                print(f"{name:6} prune {steps} steps at speed {speed:6}: {dt:7.2f}s ({dt / steps:.3f}s/step; agreement checks "
                      f"{r.stats.get('check_seconds', 0.0):.2f}s of it){same}")
    print(f"\nbrute force over every unit, 1000 validation instances (best of {args.rounds} x {args.repeats}; "
          f"{args.threads} thread(s); shared, noisy machine); CPU: seconds of CPU time of the process")
    print(f"{'network':8} {'chunk':>6} {'naive s':>9} {'shrinknet s':>12} {'ratio':>8} | {'naive CPU':>9} "
          f"{'shrinknet CPU':>13} {'ratio':>8} | max rel. diff")
    for name, chunk, (ws, cs), (wf, cf), worst in rows:
        print(f"{name:8} {chunk:>6} {ws:9.3f} {wf:12.3f} {ws / wf:7.2f}x | {cs:9.3f} {cf:13.3f} {cs / cf:7.2f}x | "
              f"{worst:.1e}")


def _best(a: tuple, b: tuple) -> tuple:
    return b if a == (0.0, 0.0) else (min(a[0], b[0]), min(a[1], b[1]))

if __name__ == "__main__":
    main()
