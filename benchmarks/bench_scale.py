"""Scale of iterative brute force (issue 10): exact vs approximate speeds, threads, processes, load.

Networks 784-W-W-10 sigmoid (MSE), trained briefly on the 3000 training digits of MNIST 5k at
28x28 (pixels / 255); ranking on its N = 1000 validation digits, float32, CPU.

Every time is also given in forward-pass equivalents ("fwd"): the run's seconds divided by the
seconds of one forward pass of the UNPRUNED network over the same 1000 instances, measured in
the same process right before and right after the run (averaged) with the same thread count. On a shared, noisy machine
these ratios are what to compare; the seconds are printed for reference.

Sections (each prints a table):
  modes    full iterative run for exact, screen and fast per size; agreement with exact (from
           the run's own exact checks) and the largest test-accuracy gap to exact's curve up to
           70% removed. Sizes in --extrapolate are run for --sample removals only and the total
           is extrapolated (labelled): mean step time x sum over the run of (1 - k/K)^2 / the
           same sum over the sampled steps (cost ~ product of the two remaining widths).
  threads  one exact scoring pass at full width (all candidates) and a sampled run, with torch's
           intra-op pool at 2 threads and no worker pool (shrinknet 0.1's way) vs the thread
           policy with 1 and 2 workers, idle and with one competing busy process.
  cnn      one exact brute-force pass over all 48 channels of a CNN (the bench_cnn.py architecture on
           1x28x28, untrained: the time does not depend on the weights' values), N = 1000: the thread
           policy with 1 and 2 workers vs torch's intra-op pool at 2 threads, idle and with one busy
           process; the load average beside each row.
  procs    the CLI's prune under torchrun with 1 and 2 processes (gloo), seconds of the pruning
           loop as recorded in run.json.
  memory   peak RSS of a few exact steps of 784-2000-2000-10 with N = 10000 (subprocess).

Run: python benchmarks/bench_scale.py                      (sizes 100,300; about 5 minutes idle)
     python benchmarks/bench_scale.py --sizes 100,300,500,1000 --extrapolate 1000
     python benchmarks/bench_scale.py --sections memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import shrinknet
from shrinknet.data import datasets
from shrinknet.score import exact
from shrinknet.score.saliency import brute_force
from shrinknet.model import losses, network
from shrinknet.model.parse import as_net
from shrinknet.util import threads
from shrinknet.choose.speed import summary
from shrinknet.repair.train import cnn, mlp, train

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = [i / 20 for i in range(15)]  # 0 .. 70% removed


def data():
    ds = datasets.load("mnist5k-784", seed=0)
    f = lambda split: torch.as_tensor(ds.inputs(split), dtype=torch.float32) / 255  # noqa: E731
    lab = lambda split: torch.as_tensor(ds.targets(split, "cross_entropy")).long()  # noqa: E731
    return {s: (f(s), lab(s)) for s in ("train", "val", "test")}


def trained(width: int, d: dict, epochs: int, cache: Path) -> torch.nn.Sequential:
    path = cache / f"w{width}-e{epochs}.pt"
    model = mlp([784, width, width, 10], "sigmoid", "sigmoid", seed=0)
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    Xtr, ytr = d["train"]
    Xv, yv = d["val"]
    onehot = lambda y: torch.nn.functional.one_hot(y, 10).float()  # noqa: E731
    train(model, Xtr, onehot(ytr), Xv, onehot(yv), loss="mse", epochs=epochs, lr=1e-3, batch_size=64,
          patience=epochs, seed=0)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def fwd_seconds(model, X, threads: int) -> float:
    """Median seconds of one forward pass of ``model`` over X with ``threads`` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(3):
                model(X)
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                model(X)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return sorted(times)[len(times) // 2]


def run(model, d, **kw):
    Xv, yv = d["val"]
    Xt, yt = d["test"]
    t0 = time.perf_counter()
    budgets = {k: kw.pop(k) for k in ("budget_bytes", "ram_budget_bytes", "method", "algorithm", "loss") if k in kw}
    r = shrinknet.prune(model, Xv, yv, X_test=Xt, T_test=yt, **budgets, config=shrinknet.PruneConfig(progress=False, **kw))
    return time.perf_counter() - t0, r


def curve_gap(a, b) -> float:
    """Largest |test accuracy difference| between runs a and b at 0, 5, ..., 70% removed."""
    return max(abs(a.at_fraction(f).test_accuracy - b.at_fraction(f).test_accuracy) for f in FRACTIONS)


def extrapolate(seconds: float, sampled: int, total: int) -> float:
    cost = lambda k: (1 - k / total) ** 2  # noqa: E731
    return seconds * sum(cost(k) for k in range(total)) / sum(cost(k) for k in range(sampled))


# -- sections ---------------------------------------------------------------------------------
def modes(args, d, cache):
    print("\n== modes: full iterative run (784-W-W-10 sigmoid, N = 1000), seconds and forward-pass equivalents ==")
    print(f"{'W':>5} {'speed':7} {'workers':>7} {'seconds':>9} {'fwd':>8} {'vs exact':>8} "
          f"{'agree':>8} {'mean excess dE':>14} {'test-acc gap<=70%':>17}  note")
    for W in args.sizes:
        model = trained(W, d, args.epochs, cache)
        total = 2 * W - 2
        sampled = W in args.extrapolate
        extra = dict(max_fraction=min(1.0, args.sample / (2 * W))) if sampled else {}
        results = {}
        for speed in args.speeds:
            tf = fwd_seconds(model, d["val"][0], args.workers)
            secs, r = run(model, d, speed=speed, threads=args.workers, **extra)
            tf = (tf + fwd_seconds(model, d["val"][0], args.workers)) / 2  # before and after: load drifts
            checks = r.stats.get("check_seconds", 0.0)
            secs -= checks  # the agreement checks are measurement, not the method
            note = f"(+{checks:.1f} s of exact checks, excluded)" if checks else ""
            if sampled:
                n = r.steps[-1].n_removed
                secs = extrapolate(secs, n, total)
                note = f"extrapolated from {n} removals"
            results[speed] = (secs, r)
            rel = "" if "exact" not in results else f"{results['exact'][0] / secs:7.1f}x"
            a = summary(r.agreement)
            agree = f"{a['same']}/{a['checks']}" if a else ("exact" if speed == "exact" else "-")
            excess = f"{a['mean_excess_delta']:.3g}" if a else ""
            gap = "" if sampled or speed == "exact" or "exact" not in results else f"{curve_gap(r, results['exact'][1]):.4f}"
            stats = r.stats
            if speed == "exact" and "full_passes" in stats:
                note += f" full/cheap passes {stats['full_passes']}/{stats['cheap_passes']}"
            print(f"{W:5d} {speed:7} {args.workers:7d} {secs:9.2f} {secs / tf:8.0f} {rel:>8} {agree:>8} {excess:>14} "
                  f"{gap:>17}  {note.strip()} (fwd {tf * 1e3:.1f} ms)", flush=True)


def _scoring_pass(model, X, T, how: str, workers: int) -> float:
    """Seconds of one exact scoring pass over every candidate at full width."""
    net = as_net(model)
    loss = losses.get("mse")
    data = network.prepare(net, X, T, loss)
    masks = net.full_masks()
    before = torch.get_num_threads()
    torch.set_num_threads(2 if how == "torch2" else 1)
    try:
        with torch.no_grad():
            trace = net.forward(data.X, masks)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                exact.all_deltas(net, loss, data, masks, trace, workers=workers)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return min(times)


def busy_process():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def threads_section(args, d, cache):
    print("\n== threads: idle vs one competing busy process (python -c 'while True: pass') ==")
    print(f"{'W':>5} {'load':5} {'how':34} {'pass s':>8} {'pass fwd':>8} {'run s':>8} {'run fwd':>8}")
    Xv, yv = d["val"]
    T = torch.nn.functional.one_hot(yv, 10).float()
    for W in args.thread_sizes:
        model = trained(W, d, args.epochs, cache)
        for load in ("idle", "busy"):
            proc = busy_process() if load == "busy" else None
            try:
                time.sleep(0.5 if proc else 0)
                tf1 = fwd_seconds(model, Xv, 1)
                for how, workers, label in (("torch2", 1, "torch intra-op 2 threads, no pool"),
                                            ("policy", 1, "policy, 1 worker"), ("policy", 2, "policy, 2 workers")):
                    tp = _scoring_pass(model, Xv, T, how, workers)
                    run_s = ""
                    if how == "policy":
                        secs, r = run(model, d, threads=workers, max_fraction=min(1.0, args.sample / (2 * W)))
                        run_s = f"{secs:8.2f} {secs / tf1:8.0f}"
                    print(f"{W:5d} {load:5} {label:34} {tp:8.3f} {tp / tf1:8.1f} {run_s}", flush=True)
            finally:
                if proc is not None:
                    os.kill(proc.pid, signal.SIGTERM)
                    proc.wait()
    print(f"(fwd = one forward pass with 1 thread in the same load; runs: first {args.sample} removals)")


def cnn_threads(args, d, cache):
    print("\n== cnn: brute force over every channel, 1 vs 2 workers (conv 16 -> pool -> conv 32 -> pool -> "
          "Linear 10, 1x28x28, N = 1000) ==")
    model = cnn((1, 28, 28), 10, (16, 32), "relu", seed=0)
    Xv, yv = d["val"]
    net = as_net(model)
    loss = losses.get("cross_entropy")
    data = network.prepare(net, Xv.reshape(-1, 1, 28, 28), yv, loss)
    masks = net.full_masks()
    work = threads.scoring_work(net, len(data))
    print(f"scoring work {work / 1e6:.0f} M multiply-adds (SMALL_WORK {threads.SMALL_WORK / 1e6:.0f} M): "
          f"the policy gives it {threads.workers_for(work)} worker(s) on this machine")
    print(f"{'load':5} {'how':36} {'seconds':>8} {'speed-up':>9} {'loadavg':>8}")
    rows = (("torch intra-op 2 threads, 1 worker", 2, 1), ("policy: intra-op 1, 1 worker", 1, 1),
            ("policy: intra-op 1, 2 workers", 1, 2))
    for load in ("idle", "busy"):
        proc = busy_process() if load == "busy" else None
        try:
            time.sleep(0.5 if proc else 0)
            seconds, scores = {label: float("inf") for label, _, _ in rows}, {}
            for _ in range(args.rounds):  # interleaved, so drifting load hits every row alike
                for label, intra, workers in rows:
                    t, scores[label] = _cnn_pass(net, loss, data, masks, intra, workers)
                    seconds[label] = min(seconds[label], t)
            one = seconds[rows[1][0]]
            for label, _, _ in rows:
                print(f"{load:5} {label:36} {seconds[label]:8.3f} {one / seconds[label]:8.2f}x "
                      f"{os.getloadavg()[0]:8.1f}", flush=True)
            same = all(torch.equal(a, b) for a, b in zip(scores[rows[1][0]], scores[rows[2][0]]))
            print(f"{load:5} 1 and 2 workers give the same bits: {same}")
        finally:
            if proc is not None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait()
    print("(speed-up: against the policy with 1 worker in the same load; best of --rounds interleaved rounds; "
          "loadavg: 1-minute, after the row)")


def _cnn_pass(net, loss, data, masks, intra: int, workers: int):
    """(seconds, scores) of one brute-force pass with ``intra`` torch threads and ``workers``."""
    before = torch.get_num_threads()
    torch.set_num_threads(intra)
    try:
        with torch.no_grad():
            trace = net.forward(data.X, masks)
            t0 = time.perf_counter()
            scores = brute_force(net, loss, data, masks, trace, workers=workers)
            return time.perf_counter() - t0, scores
    finally:
        torch.set_num_threads(before)


def procs(args, d, cache):
    print("\n== processes: shrinknet prune under torchrun, 1 vs 2 processes (gloo, one machine) ==")
    from shrinknet.ship import modelio

    W = args.proc_size
    model = trained(W, d, args.epochs, cache)
    Xv = d["val"][0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np_path = tmp / "val.npz"
        import numpy as np

        np.savez(np_path, X=Xv.numpy(), y=d["val"][1].numpy())
        modelio.save_model(tmp / "model.safetensors", model, {"loss": "mse"})
        tf = fwd_seconds(model, Xv, 1)
        for nproc in (1, 2):
            out = tmp / f"out{nproc}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "shrinknet", "-q", "prune", str(tmp / "model.safetensors"), "--data", str(np_path),
                   "--val", str(np_path), "--test", str(np_path),
                   "--no-analyze", "--budget", "1GB", "--max-fraction", str(min(1.0, args.sample / (2 * W))), "--out", str(out)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
            t0 = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error")] or p.stderr.splitlines()[-3:]
                print(f"torchrun with {nproc} failed: {errors}")
                continue
            doc = json.loads((out / "run.json").read_text())
            secs = doc["extras"]["seconds"]
            print(f"W={W} processes {nproc}: pruning {secs:.2f} s = {secs / tf:.0f} fwd (1-thread fwd {tf * 1e3:.1f} ms), "
                  f"world_size {doc['config']['world_size']}, whole command {wall:.1f} s; "
                  f"{doc['steps'][-1]['n_removed']} removals, N = {doc['config']['n_val']} validation rows",
                  flush=True)


def memory_section(args, d, cache):
    print("\n== memory: peak RSS, 784-2000-2000-10 sigmoid (untrained), N = 10000, exact, a few steps ==")
    code = f"""
import resource, time, torch, shrinknet
from shrinknet.repair.train import mlp
model = mlp([784, 2000, 2000, 10], "sigmoid", "sigmoid", seed=0)
g = torch.Generator().manual_seed(0)
X = torch.rand(10000, 784, generator=g); y = torch.randint(0, 10, (10000,), generator=g)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
r = shrinknet.prune(model, X, y, config=shrinknet.PruneConfig(progress=False, max_fraction={args.memory_steps} / 4000, threads={args.workers}))
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{{len(r.steps) - 1}} removals in {{dt:.1f}} s; peak RSS {{peak / 2**20:.2f}} GiB (model + data alone {{base / 2**20:.2f}} GiB)")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=3600)
    print(p.stdout.strip() or p.stderr.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    ap.add_argument("--sections", default="modes,threads,cnn,procs",
                    help="comma-separated: modes,threads,cnn,procs,memory")
    ap.add_argument("--sizes", type=ints, default=[100, 300], help="hidden widths W for 'modes'")
    ap.add_argument("--extrapolate", type=ints, default=[], help="widths run for --sample removals only")
    ap.add_argument("--speeds", default="exact,screen,fast")
    ap.add_argument("--sample", type=int, default=60, help="removals of sampled runs")
    ap.add_argument("--thread-sizes", type=ints, default=[300])
    ap.add_argument("--proc-size", type=int, default=300)
    ap.add_argument("--workers", type=int, default=1, help="worker threads for 'modes' and 'memory'")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs of each network")
    ap.add_argument("--memory-steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the 'cnn' section (best kept)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "shrinknet-bench-scale"))
    args = ap.parse_args()
    args.speeds = args.speeds.split(",")
    cache = Path(args.cache)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} at start; "
          "the machine may be shared: compare the ratios, measured side by side, not the seconds")
    d = data()
    sections = args.sections.split(",")
    for name, fn in (("modes", modes), ("threads", threads_section), ("cnn", cnn_threads), ("procs", procs),
                     ("memory", memory_section)):
        if name in sections:
            fn(args, d, cache)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
