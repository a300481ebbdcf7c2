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
(``SHRINKNET_DIST_TIMEOUT`` seconds, default 600) and, before any work, the ranks compare a
fingerprint of model + data + settings: ranks that disagree stop with one line instead of hanging
or silently computing different things.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

ENV_TIMEOUT = "SHRINKNET_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0


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
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
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
    dist.broadcast(t, src=dist.get_global_rank(group, 0), group=group)
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
    dist.all_gather(every, mine, group=group)
    differ = [r for r, d in enumerate(every) if not torch.equal(d, every[0])]
    if differ:
        raise ValueError(
            f"distributed ranks disagree on the model, data or settings (rank {differ[0]} differs from rank 0): "
            "start every rank with the same command, model file and data"
        )
