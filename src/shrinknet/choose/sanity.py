"""Checks before any pruning: do the loss, the output activation and the targets fit together,
and is the starting network any good on the ranking data? Pure functions of (network, data, loss).

A network read with the wrong loss, activations, input scaling or data ranks its neurons by
noise; pruning it gives a useless network that looks like a result. These checks stop that.

Near chance (classification): the network's accuracy on the ranking data is at most
``majority + CHANCE_MARGIN * (1 - majority)``, where ``majority`` is the share of the most common
class there (what always answering that class scores). With CHANCE_MARGIN = 0.2 the network closes
less than a fifth of the gap between guessing and perfect: on 10 balanced classes, accuracy <= 0.28.

Logits read as probabilities (classification with mse): the network classifies well above chance
but its squared error against the one-hot targets is larger than that of always answering the class
frequencies: its outputs are not on the targets' scale, as the logits of a network trained with
cross-entropy are not. Ranking by that squared error would prune for the wrong objective.

The kept network is checked the same way (``check_kept``): a budget too tight for the model gives
a network at chance, which is refused rather than saved as a result.

Worse than the mean (regression): the network's squared error is at least ``1 - MEAN_MARGIN`` times
that of predicting every target by the targets' mean, i.e. R^2 <= MEAN_MARGIN = 0.05.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..model import losses, network
from ..model.parse import as_net
from ..errors import InputError

CHANCE_MARGIN = 0.2
MEAN_MARGIN = 0.05
#: Closed ranges of the output activations (the targets they can reach, at the limit).
RANGES = {"identity": (-math.inf, math.inf), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0),
          "relu": (0.0, math.inf), "softplus": (0.0, math.inf)}
CAUSES = "the loss, the activations, the input scaling or the data are likely not the ones it was trained with"


class StartCheckError(InputError):
    """The starting network or its setting is unfit for ranking; the message names the likely cause."""


class StartCheckWarning(UserWarning):
    """What StartCheckError says, as a warning: the Python API's default (``PruneConfig.start_check``)."""


class KeptCheckWarning(UserWarning):
    """The step kept by a budget lost much of the start's quality (``kept_loss_message``): emitted by
    ``PruneResult.fit``/``pick``; ``shrinknet prune`` prints it as a ``warning:`` line."""


#: A kept step that lost more than this (accuracy points; R^2) against the start gets a warning.
KEPT_ACCURACY_DROP = 0.10
KEPT_R2_DROP = 0.1
#: How many more weights int8 stores than these dtypes in the same bytes.
_INT8_GAIN = {"float32": 4, "float16": 2}


def kept_loss_message(metric: str, start: float, kept: float, dtype: str | None,
                      int8_option: str = "dtype='int8'") -> str | None:
    """What to say when the network a budget kept lost more than KEPT_ACCURACY_DROP accuracy points
    (``metric`` "accuracy") or KEPT_R2_DROP of R^2 (``metric`` "R^2") against the start, else None.

    Such a network is above chance (check_kept refuses one at chance) yet far worse than the start:
    the budget is likely too small for the network. At float32/float16 it suggests int8 weights
    (``int8_option``: how the caller spells it), which store 4x/2x the weights in the same bytes.
    """
    limit = KEPT_ACCURACY_DROP if metric == "accuracy" else KEPT_R2_DROP
    if not (math.isfinite(start) and start - kept > limit + 1e-12):
        return None
    lost = (f"lost {100 * (start - kept):.1f} accuracy points" if metric == "accuracy"
            else f"lost {start - kept:.3g} of R^2")
    gain = _INT8_GAIN.get(str(dtype))
    int8 = f", or {int8_option} ({gain}x the weights of {dtype} in the same bytes)" if gain else ""
    return (f"the kept network {lost} against the start (validation {metric} {kept:.3f}, from {start:.3f}): "
            f"the budget is likely too small for this network; give a larger budget{int8}")


def apply_start_check(model, X, T, loss: str, how: str) -> None:
    """check_start as ``PruneConfig.start_check`` says: "refuse" raises StartCheckError, "warn" warns
    (StartCheckWarning) with the same message, "skip" does nothing."""
    if how == "skip":
        return
    try:
        check_start(model, X, T, loss)
    except StartCheckError as e:
        if how == "refuse":
            raise
        warnings.warn(f"{e}; prune goes on (PruneConfig(start_check='refuse') refuses, 'skip' is silent)",
                      StartCheckWarning, stacklevel=4)


@dataclass(frozen=True)
class StartQuality:
    """How the starting network does on the ranking data.

    classification: accuracy and chance (the majority-class share); regression: r2 = 1 - SSE / SSE(mean).
    """

    task: str
    error: float
    accuracy: float | None = None
    chance: float | None = None
    r2: float | None = None
    prior_sse: float | None = None  # classification: squared error of always answering the class frequencies
    sse: float | None = None  # the network's squared error against the (one-hot) targets

    @property
    def near_chance(self) -> bool:
        if self.task == "classification":
            return self.accuracy <= self.chance + CHANCE_MARGIN * (1 - self.chance)
        return self.r2 <= MEAN_MARGIN

    @property
    def off_scale(self) -> bool:
        """Classifies above chance, yet further from the one-hot targets than the class frequencies are."""
        return self.task == "classification" and not self.near_chance and self.sse > self.prior_sse


def setting_problem(model, T, loss: str) -> str | None:
    """What makes ``loss`` with this output activation and these targets wrong, or None.

    cross_entropy reads the outputs as logits: an output activation is refused. Targets outside the
    output activation's range cannot be reached: refused (e.g. targets 25..346 with a sigmoid output).
    """
    net = as_net(model)
    return target_problem(net.layers[-1].act.name, T, loss, net.out_features)


def target_problem(out: str, T, loss: str, out_features: int) -> str | None:
    """``setting_problem`` for an output activation named ``out`` and ``out_features`` outputs."""
    out = "identity" if out == "none" else out
    if loss == "cross_entropy" and out_features < 2:
        return "cross_entropy needs at least 2 outputs (one logit per class); this network has 1: use loss mse"
    if loss == "cross_entropy" and out != "identity":
        return (f"cross_entropy reads the outputs as logits, but the output layer applies {out}: use an output "
                f"layer without activation (--out-activation none) or loss mse")
    T = torch.as_tensor(T)
    if not T.dtype.is_floating_point or T.ndim == 1 and out_features > 1 or T.numel() == 0:
        return None  # class labels: the loss makes its own targets
    lo, hi = RANGES[out]
    tmin, tmax = float(T.min()), float(T.max())
    if tmin < lo or tmax > hi:
        return (f"the targets span {tmin:.4g}..{tmax:.4g} but the output activation {out} only reaches "
                f"{_interval(lo, hi)}: scale the targets into that range as in training, or use an output "
                f"activation that reaches them (--out-activation none)")
    return None


def start_quality(model, X, T, loss: str) -> StartQuality:
    """Error, and accuracy vs chance (classification) or R^2 (regression), of ``model`` on (X, T)."""
    from ..model.evaluate import error_and_accuracy

    net = as_net(model)
    loss_ = losses.get(loss)
    with torch.no_grad():
        data = network.prepare(net, X, T, loss_)
        trace = net.forward(data.X, net.full_masks())
        err, acc = error_and_accuracy(loss_, [(data, trace)])
        y = trace.o[-1]
        sse = float(((y - data.T) ** 2).sum())
        if data.labels is not None:
            counts = torch.bincount(data.labels, minlength=data.T.shape[1])
            chance = float(counts.max()) / len(data)
            prior = (counts.to(data.T.dtype) / len(data))  # the class frequencies as one output row
            prior_sse = float(((prior - data.T) ** 2).sum())
            return StartQuality("classification", err, accuracy=acc, chance=chance, prior_sse=prior_sse, sse=sse)
        mean_sse = float(((data.T - data.T.mean(0)) ** 2).sum())
        r2 = 1 - sse / mean_sse if mean_sse > 0 else (1.0 if sse == 0 else -math.inf)
        return StartQuality("regression", err, r2=r2)


def check_start(model, X, T, loss: str, force: bool = False) -> StartQuality:
    """Raise StartCheckError (one line, naming the likely cause) when the setting is wrong or the
    starting network is near chance / no better than the mean on (X, T); ``force`` skips both."""
    problem = setting_problem(model, T, loss)
    if problem and not force:
        raise StartCheckError(problem)
    q = start_quality(model, X, T, loss)
    if q.near_chance and not force:
        if q.task == "classification":
            raise StartCheckError(
                f"the starting network is at chance on the ranking data (accuracy {q.accuracy:.3f}; always "
                f"answering the most common class scores {q.chance:.3f}): {CAUSES}")
        raise StartCheckError(
            f"the starting network predicts no better than the mean of the targets on the ranking data "
            f"(R^2 {q.r2:.3g}): {CAUSES}")
    if loss == "mse" and q.off_scale and not force:
        raise StartCheckError(
            f"the starting network classifies (accuracy {q.accuracy:.3f}) but its outputs are further from the "
            f"0/1 targets than the class frequencies are (squared error {q.sse:.4g} vs {q.prior_sse:.4g}): they "
            "look like logits of a network trained with cross-entropy; use loss cross_entropy with no output "
            "activation (--loss cross_entropy --out-activation none)")
    return q


def check_kept(model, X, T, loss: str, by: str, force: bool = False) -> StartQuality:
    """Raise StartCheckError when the network a pruning run keeps (by ``by``: "the budget", ...) is
    at chance (or no better than the mean) on (X, T): a limit too tight for the model is refused
    rather than saved as a result; ``force`` keeps it anyway."""
    q = start_quality(model, X, T, loss)
    if q.near_chance and not force:
        what = (f"is at chance (accuracy {q.accuracy:.3f}; the most common class scores {q.chance:.3f})"
                if q.task == "classification" else f"predicts no better than the mean (R^2 {q.r2:.3g})")
        raise StartCheckError(
            f"the network kept by {by} {what} on the validation data: the limit is too tight for this model; "
            "give a larger budget or a max drop, or --force (force=True) to save it anyway")
    return q


def check_trained(model, X, T, loss: str, force: bool = False, unscaled: str | None = None) -> StartQuality:
    """Raise StartCheckError when a network just trained is at chance (or no better than the mean)
    on (X, T), the start check's rule applied after training: such a network learned nothing (inputs
    on an extreme scale, e.g. values near float32's limit, too few epochs, or labels unrelated to the
    inputs) and is refused rather than saved as a result; ``force`` keeps it anyway.

    ``unscaled``: the trainer's hint that the training inputs look unscaled (scaling.unscaled_hint;
    None when they do not or they were standardized); the refusal then names it first, in its one line.
    Without it, inputs beyond 1e3 on (X, T) are named."""
    q = start_quality(model, X, T, loss)
    if q.near_chance and not force:
        what = (f"is at chance (accuracy {q.accuracy:.3f}; always answering the most common class scores "
                f"{q.chance:.3f})" if q.task == "classification" else f"predicts no better than the mean (R^2 {q.r2:.3g})")
        X = torch.as_tensor(X)
        big = float(X.abs().max()) if X.numel() else 0.0
        scale = f"{unscaled}; otherwise " if unscaled else \
            f"inputs as large as {big:.3g} (try --standardize), " if big > 1e3 else ""
        raise StartCheckError(
            f"the trained network {what} on the validation data: it learned nothing; {scale}too few epochs, or "
            "labels unrelated to the inputs are likely causes; --force saves it anyway")
    return q


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:g}, {hi:g}]"
