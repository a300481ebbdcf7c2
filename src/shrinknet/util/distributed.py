"""Several processes, several machines: a pruning run's instances split over torch.distributed ranks.

Scoring is a sum over instances, so each rank scores every candidate on its own contiguous block
of the validation (and test) rows, one ``all_reduce`` adds the partial scores, and every rank then
holds the same totals and makes the same choice (rank 0's choice is also broadcast, so a last-bit
difference can never split the ranks). Only rank 0 writes outputs (the CLI's job).

Launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT:

    torchrun --standalone --nproc_per_node=2 -m shrinknet prune MODEL --budget 64KiB --out OUT
    torchrun --nnodes=2 --node_rank=R --nproc_per_node=2 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m shrinknet prune MODEL ...            (on each node)

Backend: gloo on CPU, NCCL when the model lives on a CUDA device. Every collective has a timeout
(``SHRINKNET_DIST_TIMEOUT`` seconds, default 300: five minutes is far more than one pruning step's
scoring takes between two collectives on one rank, and a stalled rank is named after at most that)
and, before any work, the ranks compare a fingerprint of model + data + settings: ranks that
disagree stop with one line instead of hanging or silently computing different things.

Failures name their rank (:func:`failures_named`): a rank that fails records why in the launcher's
key-value store (``shrinknet/failed/<rank>``) and closes its connections; a rank whose collective
then fails (:class:`RankLost`: a peer closed, died or timed out) reads the cause and stops with one
line naming that rank and its message, or -- when no rank recorded anything within a few seconds
-- naming the ranks that did not answer. A failed rank other than 0 waits (at most
``REPORT_WAIT`` seconds) until rank 0 has reported and left (:func:`leave`), so that the launcher
does not stop rank 0 before it printed the cause.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import InputError

ENV_TIMEOUT = "SHRINKNET_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
REPORT_WAIT = 10.0  # seconds a failed rank waits for rank 0's report; rank 0 waits as long for a cause
_KEY = "shrinknet/"


class RankLost(RuntimeError):
    """A collective failed: another rank closed its connections, died or did not answer in time."""


class RankFailed(InputError):
    """Another rank stopped (its message, one line) or did not answer: the run cannot go on."""


def _collective(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (dist.DistError, RuntimeError) as e:
        raise RankLost(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from e


def launched() -> bool:
    """Whether this process was started by torchrun (or another env:// launcher) with WORLD_SIZE > 1."""
    try:
        return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def timeout_seconds() -> float:
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{ENV_TIMEOUT}={text!r} is not a positive number of seconds")
    return value


def init_from_env(device: str | torch.device = "cpu"):
    """Join the process group torchrun describes in the environment; returns the group, or None
    when this process runs alone. The backend is NCCL for a CUDA device, else gloo."""
    if not launched():
        return None
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return dist.group.WORLD


def rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


def world_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def shard_rows(n: int, group) -> slice:
    """This rank's contiguous block of ``n`` rows (blocks differ in size by at most one)."""
    r, w = rank(group), world_size(group)
    lo = r * n // w
    return slice(lo, (r + 1) * n // w)


def all_reduce_sum(tensors: list[Tensor], group) -> list[Tensor]:
    """Sum each tensor over the ranks (in place, one collective for all of them)."""
    if group is None or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM, group=group)
    pos = 0
    for t in tensors:
        t.copy_(flat[pos: pos + t.numel()].view_as(t))
        pos += t.numel()
    return tensors


def broadcast_ints(values: list[int], group, device) -> list[int]:
    """Rank 0's list of ints (of the same length on every rank)."""
    if group is None:
        return values
    t = torch.tensor(values, dtype=torch.int64, device=device)
    _collective(dist.broadcast, t, src=dist.get_global_rank(group, 0), group=group)
    return [int(v) for v in t.tolist()]


def fingerprint(tensors: list[Tensor], settings: dict) -> bytes:
    """SHA-256 of the tensors' bytes, shapes and dtypes and of the settings (as JSON)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.digest()


def check_same(digest: bytes, group, device) -> None:
    """Raise ValueError on every rank unless all ranks hold the same ``digest``."""
    if group is None:
        return
    mine = torch.tensor(list(digest), dtype=torch.uint8, device=device)
    every = [torch.empty_like(mine) for _ in range(world_size(group))]
    _collective(dist.all_gather, every, mine, group=group)
    differ = [r for r, d in enumerate(every) if not torch.equal(d, every[0])]
    if differ:
        raise ValueError(
            f"distributed ranks disagree on the model, data or settings (rank {differ[0]} differs from rank 0): "
            "start every rank with the same command, model file and data"
        )


# -- failures name their rank ---------------------------------------------------------------------
_failed: list[int] = []  # this process's rank, once its failure is recorded


def _store():
    return dist.distributed_c10d._get_default_store()


def _has(store, key: str) -> bool:
    try:
        return store.check([_KEY + key])
    except Exception:  # the launcher's store is gone: nothing to read
        return False


def _kind(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, (ValueError, TypeError, OSError, ImportError)) or getattr(e, "exit_code", None) == 2:
        return "input"
    return "bug"


def _message(e: BaseException) -> str:
    fmt = getattr(e, "format_message", None)
    text = (fmt() if callable(fmt) else str(e)).strip()
    return " ".join(text.split("\n")) or type(e).__name__


@contextlib.contextmanager
def failures_named(group):
    """Run a distributed command so that every failure names its rank (see the module docstring).

    This rank's own failure is recorded for the others and raised as it is. A :class:`RankLost`
    becomes :class:`RankFailed` with the first recorded cause ("distributed rank R of W stopped:
    MESSAGE"; a bug on that rank stays an internal error), or naming the ranks that recorded
    nothing within ``REPORT_WAIT`` seconds as stalled.
    """
    if group is None:
        yield
        return
    try:
        yield
    except RankLost as e:
        raise _cause(group, e) from None
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        me = rank(group)
        with contextlib.suppress(Exception):
            _store().set(f"{_KEY}failed/{me}", f"{_kind(e)}\t{_message(e)}")
            _failed.append(me)
        raise


def _cause(group, lost: RankLost) -> BaseException:
    me, w = rank(group), world_size(group)
    store = _store()
    with contextlib.suppress(Exception):
        store.set(f"{_KEY}lost/{me}", "1")
    others = [r for r in range(w) if r != me]
    deadline = time.monotonic() + min(REPORT_WAIT, timeout_seconds())
    while True:
        failed = [r for r in others if _has(store, f"failed/{r}")]
        if failed:
            kind, msg = store.get(f"{_KEY}failed/{failed[0]}").decode("utf-8", "replace").split("\t", 1)
            where = f"distributed rank {failed[0]} of {w}"
            if kind == "bug":
                return RuntimeError(f"{where} hit an internal error: {msg}")
            return RankFailed(f"{where} stopped{' (interrupted)' if kind == 'interrupted' else ''}: {msg}")
        silent = [r for r in others if not _has(store, f"lost/{r}")]
        if not silent or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not silent:
        return RankFailed(f"distributed ranks lost each other ({lost}): check the network between the machines")
    who = "rank " + ", ".join(map(str, silent)) if len(silent) == 1 else "ranks " + ", ".join(map(str, silent))
    return RankFailed(f"distributed {who} of {w} did not answer within {timeout_seconds():g} s ({ENV_TIMEOUT}): it "
                      "stalled or died without a message; nothing was written")


def leave() -> None:
    """Leave the process group. Rank 0 then marks the run as reported; another rank whose failure
    was recorded closes its connections first (so rank 0 notices at once) and waits at most
    ``REPORT_WAIT`` seconds for that mark before its process ends."""
    if not dist.is_initialized():
        return
    me = dist.get_rank()
    store = _store()
    dist.destroy_process_group()
    if me == 0:
        with contextlib.suppress(Exception):
            store.set(f"{_KEY}reported", "1")
    elif _failed:
        deadline = time.monotonic() + REPORT_WAIT
        while time.monotonic() < deadline and not _has(store, "reported"):
            time.sleep(0.05)
