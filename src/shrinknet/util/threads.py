"""Thread policy: how many cores shrinknet's heavy work uses, decided in this one place.

Why: torch's intra-op pool splits every op across all cores and spin-waits at the end of each
one. On a small op (the per-candidate tensors of a small network take microseconds) the split
costs more than it saves, and when another process holds one of the cores the whole pool waits
for the descheduled thread at every op: shrinknet 0.1 became 4-50x slower on a busy machine.

The policy, applied by :func:`policy` around the library's heavy entry points (``prune``,
``saliency``, ``compare_estimates``):

- torch's intra-op pool is set to ONE thread for the duration (the caller's setting is restored
  afterwards, also on error);
- parallelism comes from shrinknet itself, over independent chunks of candidate units (an MLP's
  ``exact.layer_deltas``, a CNN's ``SeqNet.brute_force``), handed out to worker threads from a
  shared queue by :func:`run_chunks`: a worker whose core is taken by another process simply
  finishes fewer chunks, nobody waits at a barrier per op;
- the number of workers is 1 for small work (below ``SMALL_WORK`` multiply-adds per scoring pass,
  where thread hand-off costs more than it saves), else the cores this process may run on divided
  by the processes torchrun started on this machine;
- override with the environment variable ``SHRINKNET_THREADS`` (a positive integer) or the
  ``threads=`` argument of those functions (CLI: ``--threads``); an explicit value is used as is.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

ENV = "SHRINKNET_THREADS"

#: Below this many multiply-adds per scoring pass one worker is faster than several.
SMALL_WORK = 20_000_000


def l2_bytes() -> int:
    """L2 cache of one core in bytes (Linux sysfs), or 1 MiB if unknown: what brute force sizes its
    blocks of candidates x instances by (score/exact.py for an MLP, layers/net.py for a CNN)."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip().upper()
        unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
        return int(text.rstrip("KM")) * unit
    except (OSError, ValueError, IndexError):
        return 1 << 20


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def requested(threads: int | None = None) -> int | None:
    """The explicit thread count: ``threads`` if given, else $SHRINKNET_THREADS, else None."""
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        return threads
    env = os.environ.get(ENV)
    if env is None or env.strip() == "":
        return None
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV}={env!r} is not a positive integer; unset it or set e.g. {ENV}=1")
    return value


def workers_for(work: float, threads: int | None = None) -> int:
    """Worker threads for a job of ``work`` multiply-adds (one scoring pass over all candidates)."""
    explicit = requested(threads)
    if explicit is not None:
        return explicit
    return 1 if work < SMALL_WORK else max(1, available_cores() // processes_per_machine())


def processes_per_machine() -> int:
    """Processes torchrun started on this machine (LOCAL_WORLD_SIZE), 1 otherwise: they share the cores."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


@contextmanager
def policy(work: float, threads: int | None = None):
    """Run heavy work under the thread policy; yields the number of shrinknet worker threads.

    torch's intra-op threads are 1 inside (restored on exit); shrinknet's own candidate-chunk
    workers get the yielded count.
    """
    n = workers_for(work, threads)
    with single_intra_op():
        yield n


@contextmanager
def single_intra_op():
    """torch's intra-op pool at one thread inside; the caller's setting restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def heavy(fn):
    """Decorator for a heavy entry point: runs it under :func:`single_intra_op` (the function
    picks its worker count with :func:`workers_for` once it knows the workload)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_intra_op():
            return fn(*args, **kwargs)

    return wrapper


def run_chunks(task, starts, workers: int = 1, bar=None) -> None:
    """Run ``task(start)`` for every start, on ``workers`` threads fed from a shared queue.

    ``task`` computes one independent chunk of candidates, writes its results in place and returns
    how many candidates it did (``bar.update`` gets that, in the calling thread). The chunks are the
    caller's; this only decides which thread computes each, so a caller whose chunks do not depend
    on ``workers`` (``SeqNet.brute_force``) gets the same bits for any count.
    """
    starts = list(starts)
    if workers <= 1 or len(starts) <= 1:
        for lo in starts:
            done = task(lo)
            if bar is not None:
                bar.update(done)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(starts))) as pool:
        for done in pool.map(task, starts):
            if bar is not None:
                bar.update(done)


def candidate_work(net, h: int, n_instances: int, shapes: list | None = None) -> float:
    """Multiply-adds of brute force for ONE candidate unit of hidden layer h, over n instances.

    Switching the unit off changes layer h+1's pre-activation by that unit's contribution (a
    Linear's column block: out * P; a convolution: the unit's slice of the kernel over the output
    map: o * kh * kw * H' * W', i.e. the layer's multiply-adds / its input units), then every layer
    above runs forward in full (``macs``: conv.py, linear.py). Pooling and activations are not
    counted. ``shapes``: ``net.map_shapes()``, if already at hand.
    """
    shapes = net.map_shapes() if shapes is None else shapes
    macs = [b.param.macs(s[0]) for b, s in zip(net.blocks, shapes)]  # per instance
    nxt = net.blocks[h + 1].param
    return n_instances * (macs[h + 1] / nxt.in_units + sum(macs[h + 2:]))


def scoring_work(net, n_instances: int) -> float:
    """Multiply-adds of one brute-force pass over every hidden unit of ``net`` (sizes as now):
    the sum over units of :func:`candidate_work`. 0 for a network without scoring threads."""
    if not net.scoring_threads:
        return 0.0
    shapes = net.map_shapes()
    return sum(width * candidate_work(net, h, n_instances, shapes) for h, width in enumerate(net.hidden_sizes))
