"""The result of a pruning run: one :class:`Step` per removal, and the rules that pick the kept
step (``fit`` by the budgets, ``within`` by the accuracy drop, ``pick`` by both). It rebuilds any
step's network as it will run (refit, storage round trip) and round-trips through JSON."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..model.network import Network
from ..model.parse import as_net
from ..model.surgery import shrink
from ..repair.refit import DEFAULT_RIDGE, Refitter
from ..store import memory
from ..store.quantize import rounds
from ..util.files import jsonable
from .sanity import KeptCheckWarning, kept_loss_message


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
    # integer_only runs: builds the full-integer network of any masks (choose/integer_loop.py); in memory only
    integer: object | None = field(default=None, repr=False)
    # approximate speeds: at sampled removals, the exact greedy choice beside the one made (speed.py)
    agreement: list[dict] = field(default_factory=list)
    # how the work was done (passes, seconds, workers): in memory only, not saved; it differs
    # between a resumed and an uninterrupted run, whose files are the same bytes
    stats: dict = field(default_factory=dict)
    # regression: sum over the validation targets of their squared deviation from the mean (SST), so that a
    # step's R^2 = 1 - 2 E / SST (E = sum 0.5 ||y - t||^2, eq. 5); in memory only (kept_warning)
    val_sst: float | None = field(default=None, repr=False)

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

    def integer_network(self, k: int):
        """The full-integer network (``store.integer.IntegerNet``) of steps[k] of an ``integer_only`` run, as
        its numbers were recorded: ``network(k)`` quantized, activations calibrated on the run's inputs."""
        if self.integer is None or self.original is None:
            raise ValueError("this result has no integer network: it is not an integer_only run made in this process")
        masks = [m.to(self.original.device) for m in self.masks(k)]
        return self.integer.network(self.original if self.builder is None else self.builder.build(masks), masks)

    def fit(self, budget_bytes: int | str | None, ram_budget_bytes: int | str | None = None
            ) -> tuple[int, nn.Sequential | None]:
        """(k, network): the least-validation-error step whose size fits ``budget_bytes`` (weights)
        and ``ram_budget_bytes`` (peak activation memory, ``Step.ram_bytes``) where given.

        The network is None when the result has no original network attached. Warns
        (KeptCheckWarning, ``kept_warning``) when that step lost much of the start's quality.
        """
        k = self._fit(budget_bytes, ram_budget_bytes)
        self._warn_kept(k, "budget")
        return k, (self.network(k) if self.original is not None else None)

    def kept_warning(self, k: int, chosen_by: str = "budget", int8_option: str = "dtype='int8'") -> str | None:
        """What to warn about steps[k] kept by ``chosen_by``, or None: a step a budget kept (not one within
        a max drop the caller gave) that lost more than 10 accuracy points, or more than 0.1 of R^2
        (regression, when ``val_sst`` is known), against the start (sanity.kept_loss_message)."""
        self._check_step(k)
        if chosen_by != "budget":
            return None
        s0, s = self.steps[0], self.steps[k]
        dtype = None if self.config.get("integer_only") else self.config.get("dtype")
        if s0.accuracy is not None:
            return kept_loss_message("accuracy", s0.accuracy, s.accuracy, dtype, int8_option)
        if self.val_sst and self.config.get("loss") == "mse":
            r2 = [1 - 2 * step.error / self.val_sst for step in (s0, s)]
            return kept_loss_message("R^2", r2[0], r2[1], dtype, int8_option)
        return None

    def _warn_kept(self, k: int, chosen_by: str) -> None:
        if msg := self.kept_warning(k, chosen_by):
            warnings.warn(msg, KeptCheckWarning, stacklevel=3)

    def _fit(self, budget_bytes, ram_budget_bytes) -> int:
        budget, ram = _limits(budget_bytes, ram_budget_bytes)
        fitting = self._fitting(budget, ram)
        if not fitting:
            if ram is None:
                raise ValueError(f"no step of this run fits {budget} bytes; the smallest reached is "
                                 f"{min(s.bytes for s in self.steps)} bytes")
            raise ValueError(f"no step of this run fits {budget if budget is not None else 'any number of'} bytes of "
                             f"weights and {ram} bytes of RAM; the smallest RAM reached is "
                             f"{min((s.ram_bytes or 0) for s in self.steps)} bytes")
        return min(fitting, key=lambda i: (self.steps[i].error, i))

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
            points = f"{d:g} accuracy point{'' if d == 1 else 's'}"
            raise ValueError(f"max_drop {d:g} is 100 accuracy points or more: for {points} write "
                             f"'{d:g}%' or {d / 100:g}")
        return d

    def pick(self, budget_bytes: int | str | None = None, max_drop: float | str | None = None,
             ram_budget_bytes: int | str | None = None) -> tuple[int, str]:
        """(k, "budget" or "max_drop"): the step to keep under memory budgets, an accuracy limit, or both.

        Budgets alone (weights ``budget_bytes``, RAM ``ram_budget_bytes``): ``fit`` (least error that
        fits). ``max_drop`` alone: ``within(max_drop)`` (the smallest network within the drop). Both,
        whichever is tighter: the smallest network within the drop that also fits the budgets
        ("max_drop"), else the budgets' step ("budget"; it then loses more than ``max_drop``: a
        device limit is hard). A step kept by the budgets warns as ``fit`` does (KeptCheckWarning).
        """
        k, by = self._pick(budget_bytes, max_drop, ram_budget_bytes)
        self._warn_kept(k, by)
        return k, by

    def _pick(self, budget_bytes, max_drop, ram_budget_bytes) -> tuple[int, str]:
        if budget_bytes is None and max_drop is None and ram_budget_bytes is None:
            raise ValueError("give budget_bytes or max_drop (or both) to pick a step")
        if budget_bytes is None and ram_budget_bytes is None:
            return self.within(max_drop), "max_drop"
        kb = self._fit(budget_bytes, ram_budget_bytes)
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


def target_sst(data) -> float | None:
    """Regression data (no class labels): sum over its targets of their squared deviation from their
    column means (SST, R^2's denominator); None for class labels."""
    if data.labels is not None:
        return None
    T = data.T.double()
    return float(((T - T.mean(0)) ** 2).sum())


def _limits(budget_bytes, ram_budget_bytes) -> tuple[int | None, int | None]:
    """(weight budget, RAM budget) in bytes, None where not given; at least one must be."""
    if budget_bytes is None and ram_budget_bytes is None:
        memory.parse_size(budget_bytes)  # the same "not a size" error as before
    return (None if budget_bytes is None else memory.parse_size(budget_bytes),
            None if ram_budget_bytes is None else memory.parse_size(ram_budget_bytes))


def _describe(layout: dict) -> str:
    acts = "/".join(a["name"] for a in layout["activations"])
    return "-".join(map(str, [layout["in"], *layout["hidden"], layout["out"]])) + f" {acts}"
