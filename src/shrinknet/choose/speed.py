"""Speed settings of iterative brute force: exact, screening, blocks, and how approximate they were.

    exact   every step scores every candidate exactly (``exact.Incremental``) and removes the
            least important: the paper's Algorithm II, unchanged.
    screen  every step scores every candidate cheaply (second-order Taylor, eq. 8, one sweep),
            then exactly, on all instances, only a shortlist: the ``screen_size`` lowest by the
            screen plus the ``screen_size`` lowest by their last exact score; removes the lowest
            exact score of the shortlist. With screen_size >= the candidates it IS exact.
    fast    screen, plus blocks: each scoring removes the ``block_fraction`` x (removals still
            to go before the budget or the end) lowest-scoring neurons at once, one at a time
            (with a fresh scoring) once that is below 2.

Approximate runs measure themselves: at ``checks`` removals spread over the run they also score
every candidate exactly and record whether the neuron they removed is the exact greedy choice
and the exact Delta E of both (``PruneResult.agreement``; the report shows it).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from ..util import distributed
from ..score import exact
from ..model.losses import Loss
from ..model.network import Network
from ..model.network import Masks
from ..score.saliency import score_parts

SPEEDS = ("exact", "screen", "fast")
DEFAULT_SCREEN = 32
DEFAULT_BLOCK = 0.05
DEFAULT_CHECKS = 20


@dataclass(frozen=True)
class Speed:
    name: str
    screen: int | None  # shortlist size per criterion; None: every candidate exactly
    block: float | None  # fraction of the remaining removals taken per scoring; None: one
    checks: int  # removals at which an approximate run compares itself with exact (0: none)

    def to_config(self) -> dict:
        return {"speed": self.name, "screen_size": self.screen, "block_fraction": self.block,
                "agreement_checks": self.checks if self.name != "exact" else 0}


def settings(speed: str, screen_size: int | None, block_fraction: float | None, checks: int | None,
             method: str, algorithm: str) -> Speed:
    """Validated speed settings; raises ValueError with what to do."""
    if speed not in SPEEDS:
        raise ValueError(f"unknown speed {speed!r}: choose one of {', '.join(SPEEDS)}")
    if screen_size is not None and (not isinstance(screen_size, int) or isinstance(screen_size, bool) or screen_size < 1):
        raise ValueError(f"screen_size must be a positive integer (candidates scored exactly per step), got {screen_size!r}")
    if block_fraction is not None and (isinstance(block_fraction, bool) or not isinstance(block_fraction, (int, float))
                                       or not 0 < block_fraction <= 1):
        raise ValueError(f"block_fraction must be in (0, 1], got {block_fraction!r}")
    if checks is not None and (not isinstance(checks, int) or isinstance(checks, bool) or checks < 0):
        raise ValueError(f"checks must be a non-negative integer, got {checks!r}")
    if speed == "exact":
        if screen_size is not None or block_fraction is not None:
            raise ValueError("screen_size and block_fraction need speed='screen' or 'fast'")
        return Speed("exact", None, None, 0)
    if method != "brute_force" or algorithm != "iterative":
        raise ValueError(f"speed {speed!r} applies to method 'brute_force' with algorithm 'iterative'; "
                         f"use speed='exact' with {method!r}/{algorithm!r}")
    if speed == "screen" and block_fraction is not None:
        raise ValueError("block_fraction needs speed='fast'")
    block = None if speed == "screen" else float(block_fraction or DEFAULT_BLOCK)
    return Speed(speed, screen_size or DEFAULT_SCREEN, block, DEFAULT_CHECKS if checks is None else checks)


def _allowed(masks: Masks) -> list[Tensor]:
    """Kept neurons that may go: not the last one of its layer."""
    return [m.clone() if int(m.sum()) > 1 else torch.zeros_like(m) for m in masks]


def lowest(scores: list[Tensor], allowed: list[Tensor], k: int) -> list[tuple[int, int]]:
    """The k lowest finite scores among allowed neurons, (layer, neuron), ties by layer then index."""
    flat = [(float(v), h, j) for h, (s, a) in enumerate(zip(scores, allowed))
            for j, v in zip(a.nonzero().squeeze(1).tolist(), s[a].tolist()) if math.isfinite(v)]
    return [(h, j) for _, h, j in sorted(flat)[:k]]


def layer_deltas(net, loss: Loss, data, masks: Masks, trace, h: int, J: Tensor, workers: int,
                 chunk_size: int | None) -> Tensor:
    """Exact Delta E of switching off each unit in J of hidden layer h: exact.py's fused kernels
    for an MLP (``fused_brute_force``), else the network's batched pass (``SeqNet.layer_deltas``)."""
    if net.fused_brute_force:
        return exact.layer_deltas(net, loss, data, masks, trace, h, J, workers=workers, chunk_size=chunk_size)
    return net.layer_deltas(loss, data, masks, trace, h, J, chunk_size, None, workers)


class Chooser:
    """Chooses removals for iterative brute force at an approximate speed, and checks itself."""

    def __init__(self, net: Network, loss: Loss, parts: list, speed: Speed, workers: int, chunk_size: int | None,
                 group, limit: int):
        self.net, self.loss, self.parts, self.speed = net, loss, parts, speed
        self.workers, self.chunk_size, self.group = workers, chunk_size, group
        self.last_exact = [torch.full((w,), math.inf, dtype=net.dtype, device=net.device) for w in net.hidden_sizes]
        self.planned: deque = deque()
        self.every = max(1, math.ceil(limit / speed.checks)) if speed.checks else 0
        self.agreement: list[dict] = []
        self.exact_evaluations = 0  # candidates scored exactly (excluding checks)
        self.check_seconds = 0.0  # time spent on the agreement checks
        self.scorings = 0  # screen + shortlist evaluations (one per block)

    def _reduce(self, tensors: list[Tensor]) -> list[Tensor]:
        return distributed.all_reduce_sum(tensors, self.group)

    def shortlist_scores(self, masks: Masks) -> list[Tensor]:
        """Exact scores of the shortlist (+inf elsewhere)."""
        allowed = _allowed(masks)
        self.scorings += 1
        screen = self._reduce(score_parts("taylor2", self.net, self.loss, self.parts, masks))
        k = self.speed.screen
        short = set(lowest(screen, allowed, k)) | set(lowest(self.last_exact, allowed, k))
        out = [torch.full_like(s, math.inf) for s in self.last_exact]
        per_layer = [sorted(j for hh, j in short if hh == h) for h in range(self.net.n_hidden)]
        J = [torch.tensor(js, dtype=torch.long, device=self.net.device) for js in per_layer]
        parts = [torch.zeros(len(j), dtype=self.net.dtype, device=self.net.device) for j in J]
        for data, trace in self.parts:
            for h in range(self.net.n_hidden):
                if len(J[h]):
                    parts[h] += layer_deltas(self.net, self.loss, data, masks, trace, h, J[h], self.workers,
                                             self.chunk_size)
        self._reduce(parts)
        for h in range(self.net.n_hidden):
            out[h][J[h]] = parts[h]
            self.last_exact[h][J[h]] = parts[h]
            self.exact_evaluations += len(J[h])
        return out

    def next(self, masks: Masks, n_removed: int, gap: int) -> tuple[tuple[int, int], float]:
        """The next removal (layer, neuron) and the score that chose it.

        ``gap``: removals still to go before the budget or the end of the run.
        """
        if not self.planned:
            scores = self.shortlist_scores(masks)
            b = 1 if self.speed.block is None else max(1, math.floor(self.speed.block * gap))
            kept = [int(m.sum()) for m in masks]
            picks = []
            for h, j in lowest(scores, _allowed(masks), sum(kept)):
                if len(picks) == b:
                    break
                if kept[h] > 1:  # never empty a layer within a block either
                    picks.append(((h, j), float(scores[h][j])))
                    kept[h] -= 1
            self.planned.extend(picks)
        choice, score = self.planned.popleft()
        if self.every and n_removed % self.every == 0:
            self.check(masks, n_removed, choice)
        return choice, score

    def check(self, masks: Masks, n_removed: int, choice: tuple[int, int]) -> None:
        """Record the exact greedy choice at this point beside ``choice``."""
        t0 = time.perf_counter()
        truth = self._reduce(score_parts("brute_force", self.net, self.loss, self.parts, masks, self.chunk_size,
                                         workers=self.workers))
        (best,) = lowest(truth, _allowed(masks), 1)
        h, j = choice
        self.agreement.append({
            "n_removed": n_removed, "chosen": [h, j], "best": list(best),
            "chosen_delta": float(truth[h][j]), "best_delta": float(truth[best[0]][best[1]]),
            "same": tuple(best) == (h, j) or float(truth[h][j]) == float(truth[best[0]][best[1]]),
        })
        self.check_seconds += time.perf_counter() - t0


def summary(agreement: list[dict]) -> dict | None:
    """Share of checked removals equal to the exact greedy choice, and the excess Delta E."""
    if not agreement:
        return None
    same = sum(1 for a in agreement if a["same"])
    excess = [a["chosen_delta"] - a["best_delta"] for a in agreement]
    return {"checks": len(agreement), "same": same, "same_fraction": same / len(agreement),
            "mean_excess_delta": sum(excess) / len(excess), "max_excess_delta": max(excess),
            "mean_best_delta": sum(a["best_delta"] for a in agreement) / len(agreement)}
