"""Pruning algorithms: the paper's Algorithm I (single overall ranking) and Algorithm II
(iterative re-ranking), a pair-aware variant, and the result of a run.

Scoring, choosing and cutting are separate steps: ``saliency.score_batch`` gives scores,
``_Pruner.choose`` picks the neuron(s) to switch off, and ``PruneResult.network(k)`` cuts them
out (``surgery.shrink``). Between steps only masks change; the forward pass of every data set
is cached and, after a removal in hidden layer h, recomputed from layer h+1 on only: the layers
below do not depend on it, so this is exact, not an approximation.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from . import distributed, losses, memory, network, threads as thread_policy
from .backprop2 import batches
from .losses import Loss
from .files import jsonable
from .network import Data, Network, Trace, as_net, check_positive_int
from .quantize import rounds
from .refit import DEFAULT_RIDGE, Refitter, check_refit
from .saliency import METHODS, random_scores, removed_to_inf, score_parts
from .exact import Incremental
from .speed import Chooser, Speed, settings as speed_settings
from .surgery import shrink

ALGORITHMS = ("single", "iterative", "iterative_pairs")
CLIPS = (None, "mean", "median")


@dataclass
class Step:
    """The network after one more removal (``steps[0]`` is the unpruned network)."""

    n_removed: int  # neurons removed so far
    fraction_removed: float  # n_removed / all hidden neurons
    removed: list[tuple[int, int]]  # (hidden layer, neuron) switched off at this step, original numbering
    score: float | None  # the estimate that chose them (per neuron for a pair)
    error: float  # validation error E = sum_n E_n
    accuracy: float | None  # validation accuracy (classification only)
    test_error: float | None
    test_accuracy: float | None
    params: int  # weights + biases of the physically pruned network
    bytes: int  # params at the storage dtype
    kept: list[int]  # neurons kept per hidden layer
    ram_bytes: int | None = None  # peak activation memory of a batch-1 forward (memory.ram_bytes)


@dataclass
class PruneResult:
    """A pruning run: the settings, the original network's layout and one Step per removal."""

    config: dict
    steps: list[Step]
    layout: dict  # in, hidden, out, bias, activations of the original network
    original: Network | None = field(default=None, repr=False)
    # builds the network as it will run (refit, storage round trip) from the original and masks; None: plain
    builder: Refitter | None = field(default=None, repr=False)
    # approximate speeds: at sampled removals, the exact greedy choice beside the one made (speed.py)
    agreement: list[dict] = field(default_factory=list)
    # how the work was done (passes, seconds, workers): in memory only, not saved; it differs
    # between a resumed and an uninterrupted run, whose files are the same bytes
    stats: dict = field(default_factory=dict)

    # -- masks and networks -------------------------------------------------------------------
    def masks(self, k: int) -> list[Tensor]:
        """Masks (True = kept) after steps[k]."""
        self._check_step(k)
        masks = [torch.ones(h, dtype=torch.bool) for h in self.layout["hidden"]]
        for step in self.steps[1 : k + 1]:
            for h, j in step.removed:
                masks[h][j] = False
        return masks

    def network(self, k: int) -> nn.Sequential:
        """The physically pruned ``nn.Sequential`` after steps[k]: smaller Linear layers, as it
        will run: refit when the run was (``refit``), with its weights and biases as stored at the
        run's dtype (float16: rounded to float16; int8: dequantized int8 weights)."""
        if self.original is None:
            raise ValueError(
                "this result was loaded from JSON without its network; pass model= to PruneResult.from_json"
            )
        masks = [m.to(self.original.device) for m in self.masks(k)]
        if self.builder is None and (self.config.get("refit") or rounds(self.config.get("dtype"))):
            raise ValueError("this refit run was loaded without its calibration data: pass X_calib= to "
                             "PruneResult.from_json to rebuild its networks")
        net = self.original if self.builder is None else self.builder.build(masks)
        return shrink(net, masks)

    def fit(self, budget_bytes: int | str | None, ram_budget_bytes: int | str | None = None
            ) -> tuple[int, nn.Sequential | None]:
        """(k, network): the least-validation-error step whose size fits ``budget_bytes`` (weights)
        and ``ram_budget_bytes`` (peak activation memory, ``Step.ram_bytes``) where given.

        The network is None when the result has no original network attached.
        """
        budget, ram = _limits(budget_bytes, ram_budget_bytes)
        fitting = self._fitting(budget, ram)
        if not fitting:
            if ram is None:
                raise ValueError(f"no step of this run fits {budget} bytes; the smallest reached is "
                                 f"{min(s.bytes for s in self.steps)} bytes")
            raise ValueError(f"no step of this run fits {budget if budget is not None else 'any number of'} bytes of "
                             f"weights and {ram} bytes of RAM; the smallest RAM reached is "
                             f"{min((s.ram_bytes or 0) for s in self.steps)} bytes")
        k = min(fitting, key=lambda i: (self.steps[i].error, i))
        return k, (self.network(k) if self.original is not None else None)

    def _fitting(self, budget: int | None, ram: int | None) -> list[int]:
        """Steps within the weight budget and the RAM budget (None: no such limit)."""
        return [k for k, s in enumerate(self.steps) if (budget is None or s.bytes <= budget)
                and (ram is None or (s.ram_bytes is not None and s.ram_bytes <= ram))]

    def drop(self, k: int) -> float:
        """How much worse steps[k] is than the start, in the units of ``max_drop``: accuracy points
        lost (0.01 = one point) for classification, relative increase of the validation error
        ((E_k - E_0) / E_0) for regression. Negative when steps[k] is better than the start."""
        self._check_step(k)
        return step_drop(self.steps[0], self.steps[k])

    def within(self, max_drop: float | str) -> int:
        """The smallest network (fewest bytes; ties: least error, then earliest step) of the run
        whose validation accuracy is within ``max_drop`` of the start (regression: whose error
        grew by at most that fraction). Step 0 always qualifies. ``max_drop`` as in parse_drop."""
        d = self._drop_limit(max_drop)
        ok = [k for k in range(len(self.steps)) if self.drop(k) <= d + 1e-12]
        return min(ok, key=lambda k: (self.steps[k].bytes, self.steps[k].error, k))

    def _drop_limit(self, max_drop: float | str) -> float:
        """``max_drop`` as a fraction (``parse_drop``), refusing 100 accuracy points or more."""
        d = parse_drop(max_drop)
        if self.steps[0].accuracy is not None and d >= 1:  # "1" meant as one point, most likely
            raise ValueError(f"max_drop {d:g} is 100 accuracy points or more: for {d:g} points write "
                             f"'{d:g}%' or {d / 100:g}")
        return d

    def pick(self, budget_bytes: int | str | None = None, max_drop: float | str | None = None,
             ram_budget_bytes: int | str | None = None) -> tuple[int, str]:
        """(k, "budget" or "max_drop"): the step to keep under memory budgets, an accuracy limit, or both.

        Budgets alone (weights ``budget_bytes``, RAM ``ram_budget_bytes``): ``fit`` (least error that
        fits). ``max_drop`` alone: ``within(max_drop)`` (the smallest network within the drop). Both,
        whichever is tighter: the smallest network within the drop that also fits the budgets
        ("max_drop"), else the budgets' step ("budget"; it then loses more than ``max_drop``: a
        device limit is hard).
        """
        if budget_bytes is None and max_drop is None and ram_budget_bytes is None:
            raise ValueError("give budget_bytes or max_drop (or both) to pick a step")
        if budget_bytes is None and ram_budget_bytes is None:
            return self.within(max_drop), "max_drop"
        kb = self.fit(budget_bytes, ram_budget_bytes)[0]
        if max_drop is None:
            return kb, "budget"
        d = self._drop_limit(max_drop)
        ok = [k for k in self._fitting(*_limits(budget_bytes, ram_budget_bytes)) if self.drop(k) <= d + 1e-12]
        if ok:
            return min(ok, key=lambda k: (self.steps[k].bytes, self.steps[k].error, k)), "max_drop"
        return kb, "budget"

    def _check_step(self, k: int) -> None:
        if not 0 <= k < len(self.steps):
            raise IndexError(f"step {k} out of range: this run has steps 0..{len(self.steps) - 1}")

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "shrinknet_run": 1,
            "config": self.config,
            "layout": self.layout,
            "steps": [asdict(s) for s in self.steps],
            "agreement": self.agreement,
        }

    def to_json(self) -> str:
        """Standard JSON (infinite or NaN numbers become null)."""
        return json.dumps(jsonable(self.to_dict()), indent=1)

    @classmethod
    def from_dict(cls, d: dict, model=None, X_calib=None) -> "PruneResult":
        if not isinstance(d, dict) or d.get("shrinknet_run") != 1:
            raise ValueError("not a shrinknet run: missing 'shrinknet_run': 1")
        steps = [Step(**{**s, "removed": [tuple(r) for r in s["removed"]]}) for s in d["steps"]]
        original = None
        if model is not None:
            original = as_net(model).copy()
            shape = d["layout"].get("in")
            if shape is not None and original.layout().get("in") is None:  # a CNN that has not seen data yet
                try:
                    original.bind(tuple(shape))  # its input shape, as recorded by the run
                except ValueError:
                    pass  # not this run's network: the layout check below says so
            if original.layout() != d["layout"]:
                raise ValueError(
                    f"the model ({_describe(original.layout())}) is not the one the run was made on "
                    f"({_describe(d['layout'])})"
                )
        builder = None
        cfg = d["config"]
        if original is not None and (cfg.get("refit") or rounds(cfg.get("dtype"))):
            if not cfg.get("refit") or X_calib is not None:
                Xc = None if X_calib is None else torch.as_tensor(X_calib).to(original.device, original.dtype)
                ridge = DEFAULT_RIDGE if cfg.get("ridge") is None else cfg["ridge"]
                builder = Refitter(original, Xc, ridge, refit=bool(cfg.get("refit")),
                                   storage=cfg.get("dtype") or "float32")
        return cls(cfg, steps, d["layout"], original, builder, agreement=list(d.get("agreement") or []))

    @classmethod
    def from_json(cls, text: str, model=None, X_calib=None) -> "PruneResult":
        """A run from JSON; with ``model`` its networks can be rebuilt (a refit run also needs the
        calibration inputs ``X_calib`` it was refit on)."""
        return cls.from_dict(json.loads(text), model, X_calib)

    # -- views ------------------------------------------------------------------------------
    def curve(self, key: str = "accuracy") -> tuple[list[float], list]:
        """(fraction removed, ``key``) along the run, e.g. key="error" or "test_accuracy"."""
        return [s.fraction_removed for s in self.steps], [getattr(s, key) for s in self.steps]

    def at_fraction(self, fraction: float) -> Step:
        """The last step with fraction_removed <= ``fraction`` (0 <= fraction <= 1)."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
        return [s for s in self.steps if s.fraction_removed <= fraction + 1e-12][-1]


def parse_drop(value: float | str) -> float:
    """A ``max_drop`` as a fraction: "1%" -> 0.01, "0.01" or 0.01 -> 0.01. Non-negative and finite."""
    text = str(value).strip()
    try:
        d = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"cannot read max_drop {value!r}: write e.g. 1% or 0.01") from None
    if isinstance(value, bool) or not math.isfinite(d) or d < 0:
        raise ValueError(f"max_drop must be a finite number >= 0 (e.g. 1% or 0.01), got {value!r}")
    return d


def step_drop(start: Step, step: Step) -> float:
    """Accuracy points lost from ``start`` to ``step`` (classification), else the relative increase
    of the validation error (regression; infinite when the start's error is 0 and it grows)."""
    if start.accuracy is not None and step.accuracy is not None:
        return start.accuracy - step.accuracy
    if start.error > 0:
        return (step.error - start.error) / start.error
    return math.inf if step.error > start.error else 0.0


@thread_policy.heavy
def prune(
    model,
    X,
    T,
    method: str = "brute_force",
    algorithm: str = "iterative",
    loss: str = "mse",
    budget_bytes: int | str | None = None,
    dtype: str = "float32",
    max_fraction: float | None = None,
    X_test=None,
    T_test=None,
    progress: bool = True,
    seed: int = 0,
    *,
    clip: str | None = None,
    full_curve: bool = False,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    pairs: int = 8,
    refit: str | None = None,
    ridge: float = DEFAULT_RIDGE,
    X_calib=None,
    max_drop: float | str | None = None,
    ram_budget_bytes: int | str | None = None,
    checkpoint=None,
    resume: dict | None = None,
    speed: str = "exact",
    screen_size: int | None = None,
    block_fraction: float | None = None,
    checks: int | None = None,
    threads: int | None = None,
    group=None,
) -> PruneResult:
    """Remove hidden neurons one at a time, in the best order ``method`` can find.

    Args:
        model: trained ``nn.Sequential`` of Linear layers and elementwise activations (not modified).
        X, T: validation data used for ranking: (N, in) and (N, out) or (N,) class labels.
        method: a saliency method (``shrinknet.METHODS``).
        algorithm: "single" (Algorithm I: rank once, remove in that order), "iterative"
            (Algorithm II: re-score the masked network after every removal and remove the lowest),
            or "iterative_pairs" (brute force only: at each step also try switching off the
            ``pairs`` most correlated pairs of each layer together, and take whichever removal
            costs the least error per neuron removed).
        budget_bytes: memory budget for all weights and biases at ``dtype`` (int or "16KiB").
            With a budget and no ``max_fraction``, stops as soon as the network fits unless
            ``full_curve`` is set.
        max_drop: accuracy points (classification; 0.01 or "1%" = one point) or relative error
            increase (regression) the kept network may lose against the start. Without
            ``max_fraction`` or ``full_curve`` the run stops at the first removal that loses more
            (recorded, so the crossing shows); with a budget too, once both are reached.
            ``PruneResult.pick(budget_bytes, max_drop)`` then chooses the step.
        ram_budget_bytes: budget for the peak activation memory of a batch-1 forward pass
            (``memory.ram_bytes``: the two largest consecutive float32 maps); a stopping target
            like ``budget_bytes`` (both must be met); ``fit(budget, ram_budget)`` picks the step.
            Until it is met, iterative re-ranking only removes units whose removal lowers the RAM
            peak (``_Pruner.ram_idle_layers``); the single ranking and the approximate speeds do not.
        dtype: storage dtype for byte counts: "float32", "float16", "float64" or "int8" (int8
            weights with a float32 scale per row or output channel and float32 biases, see
            ``quantize``). Scoring, refit and recorded errors use the network as stored at
            ``dtype`` (``quantize.stored``: float16 rounds every weight and bias to float16, int8
            quantizes weights; float32 and float64 leave them as they are), which is what the
            device computes; scoring switches a neuron off in the current stored network without
            storing it again, and every removal re-stores the layers it changes. A float64 model
            at float16 keeps float64 arithmetic on float16 weights; int8 refuses float64 models.
        max_fraction: stop after removing this fraction of all hidden neurons (default 1.0:
            everything but one neuron per layer). The last neuron of a layer is never removed.
        X_test, T_test: optional test data, evaluated (not used for ranking) at every step.
        progress: show a progress bar on stderr.
        seed: seed of the "random" method.
        clip: None, "mean" or "median": replace outlier scores before choosing, as the paper
            tried for second-order estimates. Outlier rule: a score more than 3 scaled median
            absolute deviations (1.4826 * MAD) above the median of the candidates' scores is
            replaced by their mean or median; nothing is clipped when the MAD is 0.
        batch_size, chunk_size: memory bounds, as in ``saliency``; they do not change results.
        refit: None (the paper's switch-off), "final" (every recorded step, ``network(k)`` and
            ``fit`` use the network whose layers above the lowest pruned layer are refit by ridge
            least squares to the unpruned network's pre-activations, see ``refit``) or
            "every_step" (the same, and each choice is scored on the refit network; with brute
            force every candidate is literally removed, the network refit and re-evaluated).
        ridge: relative ridge term of the refit (``refit.ridge_solve``).
        X_calib: calibration inputs of the refit (N, in); default ``X``. N must be at least the
            widest hidden layer + 1.
        speed: iterative brute force only: "exact" (default; every step the exact greedy choice),
            "screen" (cheap second-order screen, exact scores for a shortlist) or "fast" (screen
            plus several removals per scoring while far from the end); see ``shrinknet.speed``.
        screen_size: shortlist size per criterion for "screen"/"fast" (default 32); at least the
            number of candidates makes "screen" exact.
        block_fraction: "fast": fraction of the removals still to go taken per scoring (default 0.05).
        checks: approximate speeds: removals (spread over the run) at which the exact greedy
            choice is also computed and recorded in ``result.agreement`` (default 20; 0: none).
        threads: worker threads over candidate chunks (default: by workload size, see
            ``shrinknet.threads``; $SHRINKNET_THREADS overrides).
        group: a ``torch.distributed`` process group to split the instances over (every rank calls
            ``prune`` with the same arguments and gets the same result); None: this process alone.
        checkpoint: None, or a callable ``checkpoint(state, final=False)`` called after the first
            record and after every step, and with ``final=True`` when the loop ends or is
            interrupted (KeyboardInterrupt, SIGTERM); ``state.to_dict()`` is the JSON-ready state
            (see :mod:`shrinknet.checkpoint`; ``checkpoint.Checkpointer`` writes it to a file).
        resume: a state dict from a checkpoint of an interrupted run of this same call (same
            model, data and settings, else ValueError): the run continues from its last step
            and ends exactly as an uninterrupted run would.

    Returns:
        A :class:`PruneResult` whose ``steps[0]`` is the unpruned network.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    if algorithm == "iterative_pairs" and method != "brute_force":
        raise ValueError("algorithm 'iterative_pairs' needs method 'brute_force' (pairs are scored exactly)")
    if clip not in CLIPS:
        raise ValueError(f"unknown clip {clip!r}: choose None, 'mean' or 'median'")
    if max_fraction is not None and not 0 <= max_fraction <= 1:
        raise ValueError(f"max_fraction must be between 0 and 1, got {max_fraction}")
    speed_ = speed_settings(speed, screen_size, block_fraction, checks, method, algorithm)
    if speed_.name != "exact" and clip is not None:
        raise ValueError("clip applies to speed 'exact' only")
    if resume is not None and speed != "exact":
        raise ValueError(f"a speed {speed!r} run cannot be resumed exactly (its shortlist and blocks are not "
                         "checkpointed): start afresh")
    if group is not None and algorithm == "iterative_pairs":
        raise ValueError("algorithm 'iterative_pairs' does not run distributed; run it in one process")
    if speed != "exact" and not as_net(model).approximate_speeds:
        raise ValueError(f"speed {speed!r} handles fully connected networks; use speed 'exact' for convolutional ones")
    if speed != "exact" and (refit == "every_step" or rounds(memory.dtype_name(dtype))):
        raise ValueError(f"speed {speed!r} scores the plain network: use speed 'exact' with refit='every_step', "
                         "float16 or int8")
    net = as_net(model).copy()
    loss_ = losses.get(loss)
    dtype = memory.dtype_name(dtype)
    check_positive_int("chunk_size", chunk_size, optional=True)
    check_positive_int("pairs", pairs)
    check_positive_int("batch_size", batch_size, optional=True)
    refit = check_refit(refit)
    if dtype == "int8" and net.dtype == torch.float64:
        raise ValueError("int8 storage runs in float32 on the device; prune a float32 model (model.float()) "
                         "or choose dtype float32, float16 or float64")
    if algorithm == "iterative_pairs" and refit == "every_step":
        raise ValueError("algorithm 'iterative_pairs' scores pairs by switch-off; use refit='final' or None with it")
    if not (isinstance(ridge, (int, float)) and ridge >= 0 and math.isfinite(ridge)):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    val = network.prepare(net, X, T, loss_)
    Xc = _calibration(net, val, X_calib) if refit else None
    test = None
    if X_test is not None or T_test is not None:
        if X_test is None or T_test is None:
            raise ValueError("give both X_test and T_test, or neither")
        test = network.prepare(net, X_test, T_test, loss_)
    budget = None if budget_bytes is None else memory.parse_size(budget_bytes)
    smallest = memory.network_bytes(net, dtype, [torch.ones(1, dtype=torch.bool)] * net.n_hidden)
    if budget is not None and budget < smallest:
        raise ValueError(
            f"budget of {budget} bytes is below the smallest network reachable by removing hidden "
            f"neurons: {smallest} bytes at {dtype} (one neuron per hidden layer)"
        )
    drop = None if max_drop is None else parse_drop(max_drop)
    ram = _check_ram_budget(net, ram_budget_bytes)
    config = dict(
        method=method, algorithm=algorithm, loss=loss_.name, budget_bytes=budget, max_drop=drop, dtype=dtype,
        max_fraction=max_fraction, clip=clip, seed=seed, full_curve=full_curve,
        n_val=len(val), n_test=None if test is None else len(test),
        refit=refit, ridge=ridge if refit else None, n_calib=None if Xc is None else len(Xc),
    )
    config.update(speed_.to_config(), world_size=distributed.world_size(group))
    if ram is not None:
        config["ram_budget_bytes"] = ram
    builder = Refitter(net, Xc, ridge, refit=refit is not None, storage=dtype)
    state = None
    if checkpoint is not None or resume is not None:
        settings = {**config, "batch_size": batch_size, "chunk_size": chunk_size, "pairs": pairs}
        calib = [] if Xc is None else [Data(Xc, Xc[:, :0], None)]  # a refit's calibration inputs count too
        state = _State(ckpt.fingerprint(net, [val, test, *calib], settings))
        if resume is not None:
            ckpt.check(resume, state.fingerprint)
    val, test = _split_over(group, net, val, test, config)
    workers = thread_policy.workers_for(thread_policy.scoring_work(net, len(val)), threads)
    total = sum(net.hidden_sizes)
    limit = total - net.n_hidden
    if max_fraction is not None:
        limit = min(limit, math.floor(max_fraction * total + 1e-9))
    stop_at = budget if budget is not None and max_fraction is None and not full_curve else None
    pruner = _Pruner(net, loss_, val, test, method, clip, seed, batch_size, chunk_size, pairs,
                     builder=builder, refit=refit, trace=resume is None, speed=speed_, workers=workers, group=group,
                     limit=limit, stop_at=(stop_at, dtype), ram_target=ram)
    if resume is None:
        result = PruneResult(config, [pruner.record([], None, dtype)], net.layout(), net)
        if drop is not None:
            result.within(drop)  # refuses a drop of 100 accuracy points or more before any work
        order = pruner.single_ranking() if algorithm == "single" else None
    else:
        result, order = _resume(pruner, resume, config, net, algorithm)
    # networks handed out are built as they will run (refit, storage round trip)
    result.builder = builder if (refit or builder.rounds) else None
    if state is not None:
        state.result = result
        state.ranking = None if order is None else resume["ranking"] if resume is not None else list(order)
    bar = _progress(progress, limit, f"{algorithm} {method}")
    bar.update(pruner.n_removed)
    try:
        if checkpoint is not None:
            checkpoint(state)
        while pruner.n_removed < limit:
            if max_fraction is None and not full_curve and _stop(result, budget, drop, ram):
                break
            removed, score = pruner.choose(algorithm, order, limit - pruner.n_removed)
            pruner.remove(removed)
            result.steps.append(pruner.record(removed, score, dtype))
            bar.update(len(removed))
            if checkpoint is not None:
                checkpoint(state)
    except BaseException:
        if checkpoint is not None:  # Ctrl-C, SIGTERM, a failure: keep what is done
            with contextlib.suppress(Exception):
                checkpoint(state, final=True)
        raise
    finally:
        bar.close()
    if checkpoint is not None:
        checkpoint(state, final=True)
    result.agreement = pruner.chooser.agreement if pruner.chooser else []
    result.stats = pruner.stats()
    return result


def _split_over(group, net: Network, val: Data, test: Data | None, config: dict):
    """This rank's rows of the validation and test data, after all ranks agree on everything."""
    if group is None:
        return val, test
    tensors = [t for layer in net.layers for t in (layer.weight, layer.bias) if t is not None]
    tensors += [val.X, val.T] + ([] if test is None else [test.X, test.T])
    distributed.check_same(distributed.fingerprint(tensors, config), group, net.device)
    w = distributed.world_size(group)
    if len(val) < w or (test is not None and len(test) < w):
        raise ValueError(f"fewer instances than the {w} distributed ranks: run with fewer processes")
    shard = lambda d: None if d is None else d.rows(distributed.shard_rows(len(d), group))  # noqa: E731
    return shard(val), shard(test)


def _limits(budget_bytes, ram_budget_bytes) -> tuple[int | None, int | None]:
    """(weight budget, RAM budget) in bytes, None where not given; at least one must be."""
    if budget_bytes is None and ram_budget_bytes is None:
        memory.parse_size(budget_bytes)  # the same "not a size" error as before
    return (None if budget_bytes is None else memory.parse_size(budget_bytes),
            None if ram_budget_bytes is None else memory.parse_size(ram_budget_bytes))
    budget = None if budget_bytes is None else memory.parse_size(budget_bytes)
    d = parse_drop(max_drop)
    ok = [k for k, s in enumerate(result.steps) if result.drop(k) <= d + 1e-12 and (s.ram_bytes or 0) <= ram
          and (budget is None or s.bytes <= budget)]
    if ok:
        return min(ok, key=lambda k: (result.steps[k].bytes, result.steps[k].error, k)), "max_drop"
    return kb, "budget"


def _check_ram_budget(net, ram_budget_bytes) -> int | None:
    if ram_budget_bytes is None:
        return None
    ram = memory.parse_size(ram_budget_bytes)
    least = memory.ram_bytes(net, [torch.ones(1, dtype=torch.bool)] * net.n_hidden)
    if ram < least:
        raise ValueError(f"RAM budget of {ram} bytes is below the smallest reachable by removing hidden units: "
                         f"{least} bytes (one unit per hidden layer)")
    return ram


def _stop(result: PruneResult, budget: int | None, drop: float | None, ram: int | None) -> bool:
    """The weight/accuracy targets (``_targets_reached``) and the RAM budget are all reached."""
    if ram is None:
        return _targets_reached(result, budget, drop)
    others = budget is None and drop is None or _targets_reached(result, budget, drop)
    return others and (result.steps[-1].ram_bytes or 0) <= ram


def _calibration(net: Network, val: Data, X_calib) -> Tensor:
    """Calibration inputs of the refit, checked: enough instances for the widest hidden layer."""
    Xc = val.X if X_calib is None else torch.as_tensor(X_calib)
    try:  # an MLP's rows (N, in); a CNN's (N, C, H, W), or flat rows of the known shape
        Xc = net.prepare_input(Xc)
    except ValueError:
        shape = net.in_shape if net.in_shape is not None else ("...",)
        raise ValueError(f"X_calib must have shape (N, {', '.join(map(str, shape))}), got {tuple(Xc.shape)}") from None
    need = max(net.hidden_sizes) + 1
    if len(Xc) < need:
        raise ValueError(f"refit needs at least {need} calibration instances (the widest hidden layer, "
                         f"{need - 1} neurons, + 1 for the bias); got {len(Xc)}: give more calibration data or turn refit off")
    Xc = Xc.to(net.device, net.dtype)
    if not bool(torch.isfinite(Xc).all()):
        raise ValueError("X_calib contains NaN or infinite values")
    return Xc


def _targets_reached(result: PruneResult, budget: int | None, max_drop: float | None) -> bool:
    """Whether every stopping target given is reached: the last step fits ``budget``, and it has
    lost more than ``max_drop`` (so the curve shows where the limit is crossed). None: not given."""
    if budget is None and max_drop is None:
        return False
    last = len(result.steps) - 1
    fits = budget is None or result.steps[last].bytes <= budget
    crossed = max_drop is None or result.drop(last) > max_drop + 1e-12
    return fits and crossed


@dataclass
class _State:
    """What a checkpoint holds: enough to continue the run exactly (see shrinknet.checkpoint)."""

    fingerprint: dict
    result: PruneResult | None = None
    ranking: list | None = None  # Algorithm I's ranking of the unpruned network, whole

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "steps": [dict(vars(s)) for s in self.result.steps],
                "ranking": self.ranking}


def _resume(pruner: "_Pruner", saved: dict, config: dict, net: Network, algorithm: str):
    """Replay a checkpoint's steps into ``pruner`` (masks, and Algorithm I's ranking), then
    recompute the cached forward passes from scratch: the continued run is then the same,
    bit for bit, as one that never stopped."""
    try:
        steps = [Step(**{**s, "removed": [tuple(r) for r in s["removed"]]}) for s in saved["steps"]]
        order = None if saved.get("ranking") is None else deque(tuple(r) for r in saved["ranking"])
    except (TypeError, KeyError, ValueError):
        raise ValueError("the checkpoint's steps are damaged: start afresh without --resume") from None
    if (algorithm == "single") != (order is not None):
        raise ValueError("the checkpoint was made by another algorithm: start afresh without --resume")
    for step in steps[1:]:
        if order is not None:
            chosen, _ = pruner.choose("single", order, 1)
            if chosen != step.removed:
                raise ValueError("the checkpoint's steps do not follow its ranking: start afresh without --resume")
        for h, j in step.removed:
            pruner.masks[h] = pruner.masks[h].clone()
            pruner.masks[h][j] = False
        pruner.n_removed += len(step.removed)
    if pruner.n_removed != steps[-1].n_removed:
        raise ValueError("the checkpoint's steps are damaged: start afresh without --resume")
    pruner._rebuild()
    pruner._refresh(None)
    if pruner.incremental is not None:
        pruner.incremental.resume([step.removed for step in steps[1:]])
    return PruneResult(config, steps, net.layout(), net), order


class _Pruner:
    """Masks and cached forward passes of one run.

    ``scoring`` is the network choices are scored on (the original as stored at the dtype, refit with
    "every_step"); ``device`` is the network as it will be saved, whose errors are recorded.
    Both keep the original shapes (removed inputs weigh 0) and change only above a removal.
    """

    def __init__(self, net: Network, loss: Loss, val: Data, test: Data | None, method: str,
                 clip: str | None, seed: int, batch_size: int | None, chunk_size: int | None, pairs: int,
                 builder: Refitter | None = None, refit: str | None = None,
                 trace: bool = True, *, speed: Speed | None = None, workers: int = 1, group=None,
                 limit: int | None = None, stop_at: tuple = (None, "float32"), ram_target: int | None = None):
        self.net, self.loss, self.method, self.clip, self.seed = net, loss, method, clip, seed
        self.ram_target = ram_target  # the RAM budget in bytes (see ``ram_idle_layers``)
        self.builder = builder or Refitter(net, None, refit=False)
        self.every = refit == "every_step"
        self.final = refit == "final"
        self.score_builder = self.builder if self.every else Refitter(net, None, refit=False,
                                                                      storage=self.builder.storage)
        self.chunk_size, self.pairs = chunk_size, pairs
        self.workers, self.group, self.stop_at = workers, group, stop_at
        self.masks = net.full_masks()
        self.val = [[b, None] for b in batches(val, batch_size)]
        self.test = None if test is None else [[b, None] for b in batches(test, batch_size)]
        self.n_removed = 0
        self.total = sum(net.hidden_sizes)
        self.limit = self.total - net.n_hidden if limit is None else limit
        self._rebuild()
        if trace:
            self._refresh(None)
        exact_mode = speed is None or speed.name == "exact"
        # exact brute force reuses work between steps where that is exact (exact.Incremental); it
        # scores the plain network, so not with refit="every_step", float16 or int8 (their scoring net changes)
        plain = not self.every and not self.builder.rounds and net.incremental_brute_force
        self.incremental = (Incremental(net, loss, self.val, workers, chunk_size)
                            if method == "brute_force" and exact_mode and plain else None)
        self.chooser = None if exact_mode else Chooser(net, loss, self.val, speed, workers, chunk_size, group, self.limit)
        self.score_seconds = 0.0

    def stats(self) -> dict:
        """How the work was done (for run.json; not part of the result's numbers)."""
        out = {"world_size": distributed.world_size(self.group), "workers": self.workers,
               "score_seconds": round(self.score_seconds, 3)}
        if self.incremental is not None:
            out.update(full_passes=self.incremental.full_passes, cheap_passes=self.incremental.cheap_passes)
        if self.chooser is not None:
            out.update(exact_evaluations=self.chooser.exact_evaluations, scorings=self.chooser.scorings,
                       check_seconds=round(self.chooser.check_seconds, 3))
        return out

    def gap(self) -> int:
        """Removals still to go: to the end of the run, or (estimated) to the budget."""
        room = self.limit - self.n_removed
        budget, dtype = self.stop_at
        if budget is None:
            return room
        size = memory.network_bytes(self.net, dtype, self.masks)
        smallest = memory.network_bytes(self.net, dtype, [torch.ones(1, dtype=torch.bool)] * self.net.n_hidden)
        removable = sum(int(m.sum()) for m in self.masks) - self.net.n_hidden
        if size <= budget or removable <= 0:
            return 1
        per_neuron = (size - smallest) / removable
        return max(1, min(room, math.ceil((size - budget) / per_neuron)))

    def _rebuild(self) -> None:
        self.scoring = self.score_builder.build(self.masks)
        self.device = self.builder.build(self.masks) if self.final else self.scoring

    def _refresh(self, changed: int | None) -> None:
        for parts in (self.val, self.test or []):
            for p in parts:
                trace = None if changed is None else p[1]
                p[1] = self.scoring.forward(p[0].X, self.masks, trace=trace, changed=changed or 0)

    # -- scoring ----------------------------------------------------------------------------
    def scores(self) -> list[Tensor]:
        """Scores of every neuron on the current masked network; removed ones +inf."""
        t0 = time.perf_counter()
        if self.method == "random":
            s = random_scores(self.net, self.seed + self.n_removed)
        else:
            if self.every and self.method == "brute_force":
                s = self.refit_brute_force()
            else:
                with torch.no_grad():
                    if self.incremental is not None:
                        s = self.incremental.scores(self.masks)
                    else:
                        s = score_parts(self.method, self.scoring, self.loss, self.val, self.masks, self.chunk_size,
                                        workers=self.workers)
            distributed.all_reduce_sum(s, self.group)  # partial sums over each rank's rows
        self.score_seconds += time.perf_counter() - t0
        return _clip(removed_to_inf(s, self.masks), self.clip)

    def refit_brute_force(self) -> list[Tensor]:
        """Exact Delta E of removing each kept neuron and refitting the layers above it
        (refit="every_step"): the network is rebuilt and re-evaluated for every candidate."""
        with torch.no_grad():
            err0 = total_error(self.loss, self.val)
            out = []
            for h, m in enumerate(self.masks):
                s = torch.full(m.shape, math.inf, dtype=torch.float64)
                if int(m.sum()) > 1:
                    for j in m.nonzero().squeeze(1).tolist():
                        masks = list(self.masks)
                        masks[h] = m.clone()
                        masks[h][j] = False
                        net = self.score_builder.build(masks, start=h + 1, base=self.scoring)
                        err = total_error(self.loss, ((d, net.forward(d.X, masks, trace=t, changed=h)) for d, t in self.val))
                        s[j] = err - err0
                out.append(s.to(self.net.dtype))
        return out

    def single_ranking(self) -> deque[tuple[int, int, float]]:
        """All neurons, ascending by score on the unpruned network (ties: layer, then index)."""
        s = self.scores()
        flat = [(float(v), h, j) for h, layer in enumerate(s) for j, v in enumerate(layer.tolist())]
        return deque((h, j, v) for v, h, j in sorted(flat))

    def choose(self, algorithm: str, order, room: int) -> tuple[list[tuple[int, int]], float]:
        if algorithm == "single":
            while order:
                h, j, v = order.popleft()
                if self.masks[h][j] and int(self.masks[h].sum()) > 1:
                    return [(h, j)], v
            raise AssertionError("ranking exhausted before the removal limit")
        if self.chooser is not None:
            t0 = time.perf_counter()
            with torch.no_grad():
                (h, j), score = self.chooser.next(self.masks, self.n_removed, self.gap())
            self.score_seconds += time.perf_counter() - t0
            h, j = distributed.broadcast_ints([h, j], self.group, self.net.device)
            return [(h, j)], score
        s = self.scores()  # fresh tensors: safe to overwrite
        idle = self.ram_idle_layers()
        for h, m in enumerate(self.masks):
            if int(m.sum()) == 1 or h in idle:
                s[h][:] = math.inf  # never remove the last neuron of a layer; wait where RAM gains nothing
        best = min(((float(x.min()), h, int(x.argmin())) for h, x in enumerate(s)))
        h, j = distributed.broadcast_ints([best[1], best[2]], self.group, self.net.device)
        removed, score = [(h, j)], best[0]
        if algorithm == "iterative_pairs" and room >= 2:
            pair, pair_score = self.best_pair(skip=idle)
            if pair is not None and pair_score < score:
                removed, score = pair, pair_score
        return removed, score

    def ram_idle_layers(self) -> list[int]:
        """While a RAM budget is not met, the hidden layers where removing a unit frees no RAM (the
        peak is set by other maps): iterative re-ranking skips their units until it is met, since
        such a removal costs accuracy and brings the binding limit no closer. Empty when there is
        no RAM budget, it is met, or no layer would lower the peak (then every unit competes)."""
        if self.ram_target is None:
            return []
        now = memory.ram_bytes(self.net, self.masks)
        if now <= self.ram_target:
            return []
        open_, idle = [], []
        for h, m in enumerate(self.masks):
            if int(m.sum()) <= 1:
                continue
            open_.append(h)
            fewer = list(self.masks)
            fewer[h] = m.clone()
            fewer[h][int(m.nonzero()[0])] = False  # RAM counts units, not which ones
            if memory.ram_bytes(self.net, fewer) >= now:
                idle.append(h)
        return idle if len(idle) < len(open_) else []

    def best_pair(self, skip=()) -> tuple[list[tuple[int, int]] | None, float]:
        """The most correlated pairs of each layer (but the layers in ``skip``), switched off
        together by brute force; returns the pair with the least Delta E per neuron removed."""
        from .analysis import top_pairs, unit_correlation

        best, best_score = None, math.inf
        for h in range(self.net.n_hidden):
            if int(self.masks[h].sum()) <= 2 or h in skip:
                continue
            o = torch.cat([t.o[h] for _, t in self.val])
            corr = unit_correlation(self.scoring, o, h)
            for j, k, _ in top_pairs(corr, self.masks[h], self.pairs):
                delta = sum(
                    float(switch_off_delta(self.scoring, self.loss, d, self.masks, t, h, [j, k])) for d, t in self.val
                )
                if delta / 2 < best_score:
                    best, best_score = [(h, j), (h, k)], delta / 2
        return best, best_score

    # -- cutting and recording ----------------------------------------------------------------
    def remove(self, removed: list[tuple[int, int]]) -> None:
        for h, j in removed:
            self.masks[h] = self.masks[h].clone()
            self.masks[h][j] = False
        self.n_removed += len(removed)
        self._rebuild()
        self._refresh(min(h for h, _ in removed))
        if self.incremental is not None:
            self.incremental.removed(removed)

    def record(self, removed, score, dtype) -> Step:
        """The step as the network will be saved (refit, storage round trip included)."""
        val, test = self.val, self.test
        if self.device is not self.scoring:
            with torch.no_grad():
                val = [(d, self.device.forward(d.X, self.masks)) for d, _ in self.val]
                test = None if self.test is None else [(d, self.device.forward(d.X, self.masks)) for d, _ in self.test]
        err, acc = error_and_accuracy(self.loss, val, self.group)
        terr, tacc = error_and_accuracy(self.loss, test, self.group) if test else (None, None)
        kept = [int(m.sum()) for m in self.masks]
        params = memory.network_params(self.net, self.masks)
        return Step(
            n_removed=self.n_removed, fraction_removed=self.n_removed / self.total,
            removed=list(removed), score=score, error=err, accuracy=acc, test_error=terr,
            test_accuracy=tacc, params=params, bytes=memory.network_bytes(self.net, dtype, self.masks), kept=kept,
            ram_bytes=memory.ram_bytes(self.net, self.masks),
        )


def switch_off_delta(net: Network, loss: Loss, data: Data, masks, trace: Trace, h: int, neurons: list[int]) -> Tensor:
    """Exact Delta E (summed over the batch) of switching off ``neurons`` of hidden layer h together."""
    return net.switch_off_delta(loss, data, masks, trace, h, neurons)


def total_error(loss: Loss, parts) -> float:
    """E = sum_n E_n over (Data, Trace) pairs (any iterable), summed part by part in float."""
    return sum((float(loss.per_instance(trace.o[-1], data.T).sum()) for data, trace in parts), 0.0)


def error_and_accuracy(loss: Loss, parts, group=None) -> tuple[float, float | None]:
    """Total error and accuracy (None without class labels) over a list of (Data, Trace) pairs
    (and over the ranks of ``group``, each holding its own rows)."""
    err, correct, n, labelled = total_error(loss, parts), 0, 0, True
    for data, trace in parts:
        if data.labels is None:
            labelled = False
        else:
            correct += int((trace.o[-1].argmax(1) == data.labels).sum())
        n += len(data)
    if group is not None:
        device = parts[0][0].X.device
        err_t, counts = torch.tensor([err], dtype=torch.float64, device=device), torch.tensor([correct, n], device=device)
        distributed.all_reduce_sum([err_t, counts], group)
        err, correct, n = float(err_t), int(counts[0]), int(counts[1])
    return err, (correct / n if labelled else None)


def _clip(scores: list[Tensor], how: str | None) -> list[Tensor]:
    """Replace large outlier scores by the mean or median of the candidates' scores.

    Outlier rule: a finite score above median + 3 * 1.4826 * MAD (a robust 3-sigma) is replaced.
    Only the large side is clipped, as the paper replaced large second-order values. With a MAD of
    0 (most scores equal, e.g. dead ReLU units all at exactly 0) nothing is clipped: the rule
    would otherwise flag every other score.
    """
    if how is None:
        return scores
    flat = torch.cat(scores)
    finite = flat[torch.isfinite(flat)]
    if finite.numel() < 3:
        return scores
    med = finite.median()
    mad = 1.4826 * (finite - med).abs().median()
    if float(mad) == 0.0:
        return scores
    fill = finite.mean() if how == "mean" else med
    return [torch.where(torch.isfinite(s) & (s > med + 3 * mad), fill, s) for s in scores]


def _describe(layout: dict) -> str:
    acts = "/".join(a["name"] for a in layout["activations"])
    return "-".join(map(str, [layout["in"], *layout["hidden"], layout["out"]])) + f" {acts}"




def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="neuron", leave=False, disable=not enabled)
