"""Cost of checkpointing a pruning run, and of resuming one.

Network 784-100-100-10 sigmoid (random weights: speed does not depend on training), 1000
validation and 1000 test instances, Algorithm II brute force over all 200 hidden neurons, CPU.
Prints, side by side in one run (best of --repeat):
  - prune() without a checkpoint hook;
  - with the CLI's default hook (Checkpointer, a write at most every 30 s);
  - with a write after every step (the worst case, --checkpoint-every 0);
  - resuming from the checkpoint taken half-way (restore + the remaining half) against the
    uninterrupted run, with the results checked equal.

Run: python benchmarks/bench_checkpoint.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import shrinknet
from shrinknet.choose import checkpoint
from shrinknet.repair.train import mlp


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = mlp([784, 100, 100, 10], "sigmoid", "sigmoid", seed=0)
    X, T = torch.rand(1000, 784), torch.randint(0, 10, (1000,))
    Xt, Tt = torch.rand(1000, 784), torch.randint(0, 10, (1000,))

    def run(**kw):
        return shrinknet.prune(model, X, T, X_test=Xt, T_test=Tt, config=shrinknet.PruneConfig(progress=False, **kw))

    tmp = Path(tempfile.mkdtemp())
    variants = {  # run round-robin, so that load from other processes hits every variant alike
        "no checkpoint": lambda: None,
        "default hook (every 30 s)": lambda: checkpoint.Checkpointer(tmp / "a.json", every=30),
        "a write after every step": lambda: checkpoint.Checkpointer(tmp / "b.json", every=0),
    }
    best = {name: float("inf") for name in variants}
    writes = {}
    want = None
    for _ in range(args.repeat):
        for name, make in variants.items():
            hook = make()
            t0 = time.perf_counter()
            res = run(checkpoint=hook)
            best[name] = min(best[name], time.perf_counter() - t0)
            writes[name] = None if hook is None else hook.writes
            want = want or res
    base = best["no checkpoint"]
    rows = [(name, best[name], writes[name]) for name in variants]
    size = (tmp / "b.json").stat().st_size

    half = []
    run(checkpoint=lambda state, final=False: half.append(json.loads(checkpoint.dumps(state.to_dict())))
        if len(state.result.steps) == 101 and not half else None)
    state = checkpoint.decode(half[0])
    t, got = timed(lambda: run(resume=state), args.repeat)
    assert got.steps == want.steps, "resumed run differs from the uninterrupted one"
    rows.append(("resume at step 100 (rest of the run)", t, None))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeat}; "
          f"784-100-100-10, 1000 val + 1000 test, iterative brute force, 200 steps")
    print(f"{'variant':<40}{'seconds':>10}{'vs none':>10}{'writes':>8}")
    for name, t, writes in rows:
        w = "" if writes is None else str(writes)
        print(f"{name:<40}{t:10.2f}{t / base:10.2f}{w:>8}")
    print(f"checkpoint file after 200 steps: {size / 1024:.1f} KiB; resumed run equal to the uninterrupted one: yes")


if __name__ == "__main__":
    main()
