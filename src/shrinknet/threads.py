"""Thread policy: how many cores shrinknet's heavy work uses, decided in this one place.

Why: torch's intra-op pool splits every op across all cores and spin-waits at the end of each
one. On a small op (the per-candidate tensors of a small network take microseconds) the split
costs more than it saves, and when another process holds one of the cores the whole pool waits
for the descheduled thread at every op: shrinknet 0.1 became 4-50x slower on a busy machine.

The policy, applied by :func:`policy` around the library's heavy entry points (``prune``,
``saliency``, ``compare_estimates``):

- torch's intra-op pool is set to ONE thread for the duration (the caller's setting is restored
  afterwards, also on error);
- parallelism comes from shrinknet itself, over independent chunks of candidate neurons
  (``exact.layer_deltas``), handed out to worker threads from a shared queue: a worker whose core
  is taken by another process simply finishes fewer chunks, nobody waits at a barrier per op;
- the number of workers is 1 for small work (below ``SMALL_WORK`` multiply-adds per scoring pass,
  where thread hand-off costs more than it saves), else the cores this process may run on divided
  by the processes torchrun started on this machine;
- override with the environment variable ``SHRINKNET_THREADS`` (a positive integer) or the
  ``threads=`` argument of those functions (CLI: ``--threads``); an explicit value is used as is.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

import torch

ENV = "SHRINKNET_THREADS"

#: Below this many multiply-adds per scoring pass one worker is faster than several.
SMALL_WORK = 20_000_000


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


def scoring_work(net, n_instances: int) -> float:
    """Multiply-adds of one brute-force pass over every hidden neuron of ``net`` (sizes as now).

    A candidate of hidden layer h costs about n * (sum of the widths above it, each times its
    fan-in); summed over candidates.
    """
    if not net.scoring_threads:  # scored by the layer modules' general code, one worker
        return 0.0
    widths = [layer.out_features for layer in net.layers]
    total = 0.0
    for h in range(net.n_hidden):
        above = sum(net.layers[k].out_features * net.layers[k].in_features for k in range(h + 2, len(widths)))
        total += widths[h] * n_instances * (widths[h + 1] + above)
    return total
