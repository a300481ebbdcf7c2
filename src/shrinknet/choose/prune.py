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
import math
import time
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from . import checkpoint as ckpt
from ..util import distributed, threads as thread_policy
from ..model import losses, network
from ..store import memory
from ..model.backprop2 import batches
from ..model.losses import Loss
from ..model.network import Data, Network
from ..model.parse import as_net
from ..repair.refit import Refitter
from ..score.saliency import METHODS, random_scores, removed_to_inf, score_parts
from ..score.exact import Incremental
from .speed import Chooser, Speed
from .config import PruneConfig, from_keywords
from .integer_loop import RULE, IntegerLoop
from .sanity import apply_start_check
from .result import PruneResult, Step, _describe, parse_drop, step_drop, target_sst  # noqa: F401  (re-exported)
from ..model.evaluate import error_and_accuracy, total_error

ALGORITHMS = ("single", "iterative", "iterative_pairs")


@thread_policy.heavy
def prune(
    model,
    X,
    T,
    method: str = "brute_force",
    algorithm: str = "iterative",
    loss: str = "mse",
    budget_bytes: int | str | None = None,
    ram_budget_bytes: int | str | None = None,
    config: PruneConfig | None = None,
    X_test=None,
    T_test=None,
    **legacy,
) -> PruneResult:
    """Remove hidden units one at a time, in the best order ``method`` can find.

    Args:
        model: a trained network (not modified): an ``nn.Sequential`` of Linear/Conv layers,
            activations and pooling; any ``nn.Module`` whose forward is such a chain (traced by
            ``torch.fx``); a path to an ``.onnx`` or ``.tflite`` file; or a parsed
            :class:`~shrinknet.Network` (``as_net``).
        X, T: ranking (validation) data: X (N, in) or (N, C, H, W); T (N, out) targets or (N,)
            class labels.
        method: a criterion of ``shrinknet.METHODS`` (the paper's brute force, Taylor 1/2, ...).
        algorithm: "single" (Algorithm I: rank once, remove in that order), "iterative"
            (Algorithm II: re-score the masked network after every removal and remove the lowest),
            or "iterative_pairs" (brute force only: at each step also try switching off the
            ``config.pairs`` most correlated pairs of each layer together, and take whichever
            removal costs the least error per unit removed).
        loss: "mse" or "cross_entropy" (the error E = sum_n E_n of eq. 1 that ranks removals).
        budget_bytes: budget for all weights and biases at ``config.dtype`` (int or "16KiB").
            With a budget and no ``max_fraction``, stops as soon as the network fits unless
            ``config.full_curve``; ``PruneResult.fit`` / ``pick`` choose the kept step.
        ram_budget_bytes: budget for the peak activation memory of a batch-1 forward pass
            (``memory.ram_bytes``); a stopping target like ``budget_bytes`` (both must be met).
            Until it is met, iterative re-ranking only removes units whose removal lowers the RAM
            peak; the single ranking and the approximate speeds do not.
        config: a :class:`~shrinknet.PruneConfig` with everything else (storage dtype, stopping,
            refit, speed, resources, checkpoints); default ``PruneConfig()``.
        X_test, T_test: optional test data, evaluated (not used for ranking) at every step.
        **legacy: the keywords of shrinknet 0.3 (``dtype=``, ``refit=``, ``max_drop=`` ...: the
            fields of PruneConfig), applied on top of ``config`` with a FutureWarning.

    Returns:
        A :class:`PruneResult` whose ``steps[0]`` is the unpruned network.

    Defaults that differ from ``shrinknet prune`` on the command line, and why:
        - ``refit=None`` (the CLI: "final"): the paper's switch-off, so criteria compare as published;
          ``PruneConfig(refit="final")`` gives the CLI's more accurate kept networks.
        - ``start_check="warn"`` (the CLI refuses unless --force): a researcher may prune an untrained or
          deliberately odd network; the warning still names the likely cause and the fix.
        - ``loss="mse"``, as the paper: give ``loss="cross_entropy"`` for a network trained with it (the
          start check warns when logits are read as probabilities). The CLI reads the loss a model
          file records and asks for it otherwise.
        - no budget and no ``max_drop`` runs the whole curve (the CLI requires one: it keeps one network).
    """
    cfg = from_keywords(config, legacy)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    if algorithm == "iterative_pairs" and method != "brute_force":
        raise ValueError("algorithm 'iterative_pairs' needs method 'brute_force' (pairs are scored exactly)")
    speed_ = cfg.speed_for(method, algorithm)
    if cfg.speed != "exact" and not as_net(model).approximate_speeds:
        raise ValueError(f"speed {cfg.speed!r} handles fully connected networks; use speed 'exact' for convolutional ones")
    dtype, refit, ridge, drop = cfg.dtype, cfg.refit, cfg.ridge, cfg.drop
    max_fraction, full_curve, group, checkpoint, resume = cfg.max_fraction, cfg.full_curve, cfg.group, cfg.checkpoint, cfg.resume
    batch_size, chunk_size, pairs = cfg.batch_size, cfg.chunk_size, cfg.pairs
    net = as_net(model).copy()
    loss_ = losses.get(loss)
    if dtype == "int8" and net.dtype == torch.float64:
        raise ValueError("int8 storage runs in float32 on the device; prune a float32 model (model.float()) "
                         "or choose dtype float32, float16 or float64")
    val = network.prepare(net, X, T, loss_)
    apply_start_check(net, val.X, T, loss_.name, cfg.start_check)
    Xc = _calibration(net, val, cfg.X_calib) if refit else None
    integer = IntegerLoop(net, val.X if cfg.X_calib is None else cfg.X_calib,
                          "the ranking data" if cfg.X_calib is None else "X_calib") if cfg.integer_only else None
    test = None
    if X_test is not None or T_test is not None:
        if X_test is None or T_test is None:
            raise ValueError("give both X_test and T_test, or neither")
        test = network.prepare(net, X_test, T_test, loss_)
    budget = None if budget_bytes is None else memory.parse_size(budget_bytes)
    ones = [torch.ones(1, dtype=torch.bool)] * net.n_hidden
    smallest = integer.bytes(ones) if integer else memory.network_bytes(net, dtype, ones)
    if budget is not None and budget < smallest:
        raise ValueError(
            f"budget of {budget} bytes is below the smallest network reachable by removing hidden "
            f"neurons: {smallest} bytes at {dtype}{' full-integer' if integer else ''} (one neuron per hidden layer)"
        )
    ram = _check_ram_budget(net, ram_budget_bytes, 1 if integer else 4)  # integer_only: int8 maps
    config = dict(
        method=method, algorithm=algorithm, loss=loss_.name, budget_bytes=budget, max_drop=drop, dtype=dtype,
        max_fraction=max_fraction, clip=cfg.clip, seed=cfg.seed, full_curve=full_curve,
        n_val=len(val), n_test=None if test is None else len(test),
        refit=refit, ridge=ridge if refit else None, n_calib=None if Xc is None else len(Xc),
    )
    config.update(speed_.to_config(), world_size=distributed.world_size(group))
    if integer is not None:  # only then: the runs (and checkpoints) of other settings stay as they were
        config.update(integer_only=True, integer_calibration=f"{RULE}: {len(integer.X)} instance(s) of {integer.name}")
    if ram is not None:
        config["ram_budget_bytes"] = ram
    builder = Refitter(net, Xc, ridge, refit=refit is not None, storage=dtype)
    state = None
    if checkpoint is not None or resume is not None:
        settings = {**config, "batch_size": batch_size, "chunk_size": chunk_size, "pairs": pairs}
        calib = [Data(x, x[:, :0], None) for x in (Xc, integer and integer.X) if x is not None]  # calibrations too
        state = _State(ckpt.fingerprint(net, [val, test, *calib], settings))
        if resume is not None:
            ckpt.for_model(resume, net.hidden_sizes)  # before anything in it is used
            ckpt.check(resume, state.fingerprint)
    sst, (val, test) = target_sst(val), _split_over(group, net, val, test, config)  # SST of all rows: kept_warning
    workers = thread_policy.workers_for(thread_policy.scoring_work(net, len(val)), cfg.threads)
    total = sum(net.hidden_sizes)
    limit = total - net.n_hidden
    if max_fraction is not None:
        limit = min(limit, math.floor(max_fraction * total + 1e-9))
    stop_at = budget if budget is not None and max_fraction is None and not full_curve else None
    pruner = _Pruner(net, loss_, val, test, method, cfg.clip, cfg.seed, batch_size, chunk_size, pairs,
                     builder=builder, refit=refit, trace=resume is None, speed=speed_, workers=workers, group=group,
                     limit=limit, stop_at=(stop_at, dtype), ram_target=ram, integer=integer)
    if resume is None:
        result = PruneResult(config, [pruner.record([], None, dtype)], net.layout(), net)
        if drop is not None:
            result.within(drop)  # refuses a drop of 100 accuracy points or more before any work
        order = pruner.single_ranking() if algorithm == "single" else None
    else:
        result, order = _resume(pruner, resume, config, net, algorithm)
    # networks handed out are built as they will run (refit, storage round trip)
    result.builder = builder if (refit or builder.rounds) else None
    result.integer, result.val_sst = integer, sst
    if state is not None:
        state.result = result
        state.ranking = None if order is None else resume["ranking"] if resume is not None else list(order)
    bar = _progress(cfg.progress, limit, f"{algorithm} {method}")
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


def _check_ram_budget(net, ram_budget_bytes, bytes_per: int = 4) -> int | None:
    if ram_budget_bytes is None:
        return None
    ram = memory.parse_size(ram_budget_bytes)
    least = memory.ram_bytes(net, [torch.ones(1, dtype=torch.bool)] * net.n_hidden, bytes_per=bytes_per)
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
    bit for bit, as one that never stopped.

    A checkpoint is input: ``prune`` has checked it against this network (``checkpoint.for_model``:
    indices in range, lengths bounded by its units); here every step is replayed as the run made it
    (``remove`` without scoring) and its record recomputed: a unit removed twice, a layer emptied,
    or any recorded number that differs (errors and accuracies to 1e-9 relative, counts exactly)
    refuses the checkpoint as modified. The replay costs one forward pass of the data per step."""
    steps = [Step(**{**s, "removed": [tuple(r) for r in s["removed"]]}) for s in saved["steps"]]
    order = None if saved.get("ranking") is None else deque(tuple(r) for r in saved["ranking"])
    if (algorithm == "single") != (order is not None):
        raise ckpt.CheckpointError("the checkpoint was made by another algorithm: start afresh without --resume")
    dtype = config["dtype"]
    pruner._refresh(None)
    _same_step(0, steps[0], pruner.record([], None, dtype))
    for k, step in enumerate(steps[1:], start=1):
        if not step.removed:
            raise _modified(k, "removes nothing")
        if order is not None:
            chosen, _ = pruner.choose("single", order, 1)
            if chosen != step.removed:
                raise ckpt.CheckpointError("the checkpoint's steps do not follow its ranking: it was modified; "
                                           "start afresh without --resume")
        for h, j in step.removed:
            if not pruner.masks[h][j]:
                raise _modified(k, f"removes unit {j} of hidden layer {h}, already removed")
            if int(pruner.masks[h].sum()) == 1:
                raise _modified(k, f"removes the last unit of hidden layer {h}")
            pruner.masks[h] = pruner.masks[h].clone()
            pruner.masks[h][j] = False
        pruner.n_removed += len(step.removed)
        pruner._rebuild()
        pruner._refresh(min(h for h, _ in step.removed))
        _same_step(k, step, pruner.record(step.removed, step.score, dtype))
    pruner._rebuild()
    pruner._refresh(None)
    if pruner.incremental is not None:
        pruner.incremental.resume([step.removed for step in steps[1:]])
    return PruneResult(config, steps, net.layout(), net), order


def _modified(k: int, what: str) -> ValueError:
    return ckpt.CheckpointError(f"the checkpoint was modified: its step {k} {what}; start afresh without --resume")


def _same_step(k: int, saved: Step, replayed: Step) -> None:
    """Refuse a recorded step that its replay does not give (``_resume``)."""
    for name, want in vars(replayed).items():
        got = getattr(saved, name)
        if name in ("removed", "score"):  # the step's own input, checked by the replay
            continue
        close = (got is None) == (want is None) and (
            want is None or math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12) or got == want
            or (math.isnan(got) and math.isnan(want))
            if isinstance(want, float) else got == want)
        if not close:
            raise _modified(k, f"records {name} {got!r} but replaying its removals gives {want!r}")


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
                 limit: int | None = None, stop_at: tuple = (None, "float32"), ram_target: int | None = None,
                 integer: IntegerLoop | None = None):
        self.net, self.loss, self.method, self.clip, self.seed = net, loss, method, clip, seed
        self.integer, self.ram_unit = integer, 1 if integer else 4  # integer_only: its network, int8 maps (integer_loop.py)
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
        size = self.bytes(dtype, self.masks)
        smallest = self.bytes(dtype, [torch.ones(1, dtype=torch.bool)] * self.net.n_hidden)
        removable = sum(int(m.sum()) for m in self.masks) - self.net.n_hidden
        if size <= budget or removable <= 0:
            return 1
        per_neuron = (size - smallest) / removable
        return max(1, min(room, math.ceil((size - budget) / per_neuron)))

    def bytes(self, dtype: str, masks) -> int:
        """Stored bytes of the network of ``masks``: at ``dtype``, or the integer network's."""
        return self.integer.bytes(masks) if self.integer is not None else memory.network_bytes(self.net, dtype, masks)

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
            if self.integer is not None and self.method == "brute_force":  # on the integer network
                s = self.integer.brute_force(self.score_builder, self.masks, self.val, self.loss)
            elif self.every and self.method == "brute_force":
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
        now = memory.ram_bytes(self.net, self.masks, bytes_per=self.ram_unit)
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
            if memory.ram_bytes(self.net, fewer, bytes_per=self.ram_unit) >= now:
                idle.append(h)
        return idle if len(idle) < len(open_) else []

    def best_pair(self, skip=()) -> tuple[list[tuple[int, int]] | None, float]:
        """The most correlated pairs of each layer (but the layers in ``skip``), switched off
        together by brute force; returns the pair with the least Delta E per neuron removed."""
        from ..score.analysis import top_pairs, unit_correlation

        best, best_score = None, math.inf
        for h in range(self.net.n_hidden):
            if int(self.masks[h].sum()) <= 2 or h in skip:
                continue
            o = torch.cat([t.o[h] for _, t in self.val])
            corr = unit_correlation(self.scoring, o, h)
            for j, k, _ in top_pairs(corr, self.masks[h], self.pairs):
                delta = sum(
                    float(self.scoring.switch_off_delta(self.loss, d, self.masks, t, h, [j, k])) for d, t in self.val
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
        if self.integer is not None:  # the full-integer network that ships (integer_loop.py)
            inet = self.integer.network(self.device, self.masks)
            val, test = self.integer.traces(inet, val), self.test and self.integer.traces(inet, self.test)
        elif self.device is not self.scoring:
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
            test_accuracy=tacc, params=params, bytes=self.bytes(dtype, self.masks), kept=kept,
            ram_bytes=memory.ram_bytes(self.net, self.masks, bytes_per=self.ram_unit),
        )


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


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="neuron", leave=False, disable=not enabled)
