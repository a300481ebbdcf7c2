"""One checked configuration of a pruning run: everything beyond the model, the data, the loss, the
criterion, the algorithm and the budgets.

A :class:`PruneConfig` only stores settings and checks them once, when it is made (as
scikit-learn's constructors store and Torch-Pruning's pruners are configured once and then
stepped); :func:`~shrinknet.choose.prune.prune` then checks only what needs the network or the
data. Each field's meaning, units and edge cases are documented below; the errors are the
one-line ``ValueError`` messages prune() has always raised.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

from ..model.network import check_positive_int
from ..repair.refit import DEFAULT_RIDGE, check_refit
from ..store import memory
from ..store.quantize import rounds
from .result import parse_drop
from .speed import Speed, settings as speed_settings

CLIPS = (None, "mean", "median")
START_CHECKS = ("warn", "refuse", "skip")


@dataclass(frozen=True)
class PruneConfig:
    """Settings of a pruning run, validated when made (``ValueError`` naming the field and what to do).

    Storage and stopping:
        dtype: storage dtype for byte counts and for the network scored, refit and recorded:
            "float32", "float16", "float64" or "int8" (int8 weights with a float32 scale per row
            or output channel and float32 biases, see ``store.quantize``). The network is used as
            stored (``quantize.stored``: float16 rounds every weight and bias, int8 quantizes
            weights; float32/float64 are the identity), which is what the device computes. A
            float64 model at float16 keeps float64 arithmetic on float16 weights; int8 refuses
            float64 models.
        integer_only: with dtype "int8", the full-integer network (``store.integer``: int8 weights
            and activations, int32 biases and accumulators, the TFLite int8 spec; what the
            integer-only C and the int8 .tflite compute) is the one in the loop: brute-force scores,
            every recorded validation/test number (and so max_drop and the kept step) are the
            integer network's, and the byte budget counts ``integer_bytes`` (int8 weights, int32
            biases, int32 multipliers and int8 shifts per output channel, 256 per sigmoid/tanh
            table). Its activation ranges are calibrated by min/max over ``X_calib`` (the CLI: the
            training split). Criteria that need gradients score the int8-weight float network
            (choose/integer_loop.py says why).
        max_fraction: stop after removing this fraction of all hidden units (default: everything
            but one unit per layer; the last unit of a layer is never removed).
        max_drop: accuracy points (classification; 0.01 or "1%" = one point) or relative error
            increase (regression) the kept network may lose against the start. Without
            ``max_fraction`` or ``full_curve`` the run stops at the first removal that loses more
            (recorded, so the crossing shows); with a budget too, once both are reached.
        full_curve: with a budget, go on past it to the end (the whole curve) instead of stopping.
    Repair:
        refit: None (the paper's switch-off), "final" (recorded steps and networks use the layers
            above the lowest pruned layer refit by ridge least squares to the unpruned network's
            pre-activations) or "every_step" (each choice is also scored on the refit network).
        ridge: relative ridge term of the refit (``model.lstsq.ridge_solve``), finite and >= 0.
        X_calib: calibration inputs of the refit and of ``integer_only``'s activation ranges (N, in...);
            default: the ranking data ``X``. A refit needs N at least the widest hidden layer + 1.
    Speed (iterative brute force only; see ``choose.speed``):
        speed: "exact" (every step the exact greedy choice), "screen" (second-order screen, exact
            scores for a shortlist) or "fast" (screen plus several removals per scoring).
        screen_size: shortlist size per criterion (default 32); >= the candidates makes "screen" exact.
        block_fraction: "fast": fraction of the removals still to go taken per scoring (default 0.05).
        checks: removals at which the exact greedy choice is also computed and recorded in
            ``result.agreement`` (default 20; 0: none).
    Choosing:
        clip: None, "mean" or "median": replace outlier scores (more than 3 scaled MADs above the
            median) before choosing, as the paper tried for second-order estimates.
        pairs: "iterative_pairs": correlated pairs tried per layer and step.
        seed: seed of the "random" criterion.
    Resources (they never change results):
        batch_size, chunk_size: memory bounds of scoring, as in ``saliency``.
        threads: worker threads over candidate chunks (default: by workload; $SHRINKNET_THREADS).
        group: a ``torch.distributed`` process group to split the instances over (every rank
            calls prune with the same arguments and gets the same result).
        progress: show a progress bar on stderr.
    Start check (``choose.sanity``: loss vs output activation vs targets; a starting network at
    chance, no better than the mean, or with logits read as probabilities ranks its units by noise):
        start_check: "warn" (default: a ``StartCheckWarning`` naming the likely cause and the fix, then
            the run goes on, for researchers who prune untrained or odd networks on purpose),
            "refuse" (``StartCheckError``, as the command line does without --force) or "skip".
    Interruption:
        checkpoint: None, or a callable ``checkpoint(state, final=False)`` called after the first
            record and every step, and with ``final=True`` when the loop ends or is interrupted.
        resume: a state dict from a checkpoint of an interrupted run of this same call (same model,
            data and settings, else ValueError); the run ends exactly as an uninterrupted one.
    """

    dtype: str = "float32"
    integer_only: bool = False
    max_fraction: float | None = None
    max_drop: float | str | None = None
    full_curve: bool = False
    refit: str | None = None
    ridge: float = DEFAULT_RIDGE
    X_calib: Any = None
    speed: str = "exact"
    screen_size: int | None = None
    block_fraction: float | None = None
    checks: int | None = None
    clip: str | None = None
    pairs: int = 8
    seed: int = 0
    batch_size: int | None = None
    chunk_size: int | None = None
    threads: int | None = None
    group: Any = None
    progress: bool = True
    start_check: str = "warn"
    checkpoint: Callable | None = None
    resume: dict | None = None

    def __post_init__(self):
        object.__setattr__(self, "dtype", memory.dtype_name(self.dtype))
        if not isinstance(self.integer_only, bool):
            raise ValueError(f"integer_only must be True or False, got {self.integer_only!r}")
        if self.integer_only and self.dtype != "int8":
            raise ValueError(f"integer_only=True needs dtype='int8' (full-integer int8), got dtype {self.dtype!r}: "
                             "on the command line, --integer-only goes with --dtype int8")
        if self.start_check not in START_CHECKS:
            raise ValueError(f"unknown start_check {self.start_check!r}: choose 'warn', 'refuse' or 'skip'")
        if self.clip not in CLIPS:
            raise ValueError(f"unknown clip {self.clip!r}: choose None, 'mean' or 'median'")
        if self.max_fraction is not None and not 0 <= self.max_fraction <= 1:
            raise ValueError(f"max_fraction must be between 0 and 1, got {self.max_fraction}")
        if self.max_drop is not None:
            parse_drop(self.max_drop)
        check_positive_int("chunk_size", self.chunk_size, optional=True)
        check_positive_int("pairs", self.pairs)
        check_positive_int("batch_size", self.batch_size, optional=True)
        object.__setattr__(self, "refit", check_refit(self.refit))
        if not (isinstance(self.ridge, (int, float)) and self.ridge >= 0 and math.isfinite(self.ridge)):
            raise ValueError(f"ridge must be a finite number >= 0, got {self.ridge!r}")

    @property
    def drop(self) -> float | None:
        """``max_drop`` as a fraction (None: not given)."""
        return None if self.max_drop is None else parse_drop(self.max_drop)

    def speed_for(self, method: str, algorithm: str) -> Speed:
        """The speed settings, checked against the criterion and algorithm they serve, with the
        settings that only some algorithms or speeds allow (ValueError with what to do)."""
        speed = speed_settings(self.speed, self.screen_size, self.block_fraction, self.checks, method, algorithm)
        if speed.name != "exact" and self.clip is not None:
            raise ValueError("clip applies to speed 'exact' only")
        if self.resume is not None and self.speed != "exact":
            raise ValueError(f"a speed {self.speed!r} run cannot be resumed exactly (its shortlist and blocks are "
                             "not checkpointed): start afresh")
        if self.group is not None and algorithm == "iterative_pairs":
            raise ValueError("algorithm 'iterative_pairs' does not run distributed; run it in one process")
        if self.speed != "exact" and (self.refit == "every_step" or rounds(self.dtype)):
            raise ValueError(f"speed {self.speed!r} scores the plain network: use speed 'exact' with "
                             "refit='every_step', float16 or int8")
        if algorithm == "iterative_pairs" and self.integer_only:
            raise ValueError("algorithm 'iterative_pairs' scores pairs on the float network; with integer_only use "
                             "algorithm 'iterative' or 'single'")
        if algorithm == "iterative_pairs" and self.refit == "every_step":
            raise ValueError("algorithm 'iterative_pairs' scores pairs by switch-off; use refit='final' or None with it")
        return speed


FIELDS = tuple(f.name for f in fields(PruneConfig))
_warned: set[str] = set()


def from_keywords(config: PruneConfig | None, legacy: dict) -> PruneConfig:
    """The configuration of a prune() call: ``config`` (default: all defaults) with the keywords of
    shrinknet <= 0.3 (``prune(..., dtype="int8", refit="final")``) applied on top. Those keep working
    for this version, with one FutureWarning per keyword and process; anything else is a TypeError,
    as for any function."""
    unknown = sorted(set(legacy) - set(FIELDS))
    if unknown:
        raise TypeError(f"prune() got an unexpected keyword argument {unknown[0]!r}")
    config = PruneConfig() if config is None else config
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a shrinknet.PruneConfig, got {type(config).__name__}")
    for name in sorted(set(legacy) - _warned):
        _warned.add(name)
        warnings.warn(f"prune({name}=...) is deprecated and will be removed after shrinknet 0.4: "
                      f"pass config=shrinknet.PruneConfig({name}=...)", FutureWarning, stacklevel=4)  # the caller of prune(), past its thread-policy wrapper
    return replace(config, **legacy) if legacy else config
