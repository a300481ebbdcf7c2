"""The numbers each figure of the report plots, pulled out of loaded run directories (pure: no matplotlib).

``figure_data(runs)`` is the whole extraction; the helpers below it label, colour and group runs, find
the kept step, and format table cells. ``draw`` turns these numbers into figures, ``html`` into the page.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from pathlib import Path

from .. import runs as runs_io
from ...choose.sanity import KeptCheckWarning
from ...store.memory import format_bytes
from ...score.saliency import METHODS

FIGURES = ("curves", "estimates", "along", "gain", "layers", "size", "ram", "frontier")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # matplotlib's tab10, so figure_data needs no matplotlib
FRACTIONS = tuple(f / 10 for f in range(1, 9))  # the paper's table columns: 10% ... 80% removed
LINESTYLES = {"single": "--", "iterative": "-", "iterative_pairs": ":"}
TWIN_MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # runs drawing the same curve: one each, alternating

#: the series that make a figure's curve: runs whose series are all equal draw the same curve
_SAME_CURVE = {"curves": ("fractions", "accuracy", "error", "test_accuracy"), "size": ("bytes", "values"),
               "ram": ("bytes", "ram_bytes", "values"), "frontier": ("bytes", "values")}


def figure_data(runs: list[dict]) -> dict:
    """The numbers every figure plots, keyed by figure name (an empty list: nothing to draw).

    Args:
        runs: dicts as returned by :func:`shrinknet.runs.load_run`.

    Returns:
        {"curves": [{label, method, algorithm, loss, dtype, color, linestyle, fractions, error, accuracy,
                     test_accuracy, chosen: {step, fraction, bytes, accuracy, error, ram_bytes, by, text} or None,
                     accuracy_floor: lowest accuracy max_drop allows, or None}],
         "along": [{label, ..., fractions, spearman: {method: [...]}}],
         "estimates": [{label, ..., methods: {method: {x: true Delta E, y: estimate, layer,
                        agreement}}}] (finite pairs only; runs with estimates only),
         "gain": [{label, ..., alphas, base_error, curves: [{neuron, error, taylor1, taylor2}]}],
         "layers": [{label, ..., hidden, n_removed, kept: one list per hidden layer}],
         "size": {"metric": "accuracy" or "error", "runs": [{label, ..., bytes, values,
                  budget_bytes, export_bytes: {name: bytes}}]},
         "ram": [{label, ..., metric, bytes, ram_bytes, values, budget_bytes, ram_budget_bytes, chosen}]
                (runs whose every step records ram_bytes),
         "frontier": [{label, ..., metric, bytes, values, budget_bytes, points: [{name, kind, bytes, value,
                       text: the legend's words, from the point's dtype and refit}]}]}.
        Labels end in the run's storage dtype. Entries of curves, size, ram and frontier also carry
        ``same``: [position, count] among the runs that draw exactly the same curve in that figure
        ([0, 1]: none), and ``same_as``: the first such run's label (None for the first).
        Accuracies are None for regression runs; values are those of run.json, unrounded.
    """
    runs = list(runs)
    keys = [{**_run_key(r, label), **style} for r, label, style in zip(runs, _labels(runs), _styles(runs))]
    metric = "accuracy" if all(r["result"].steps[0].accuracy is not None for r in runs) else "error"
    data = {
        "curves": [_curve_data(r, k) for r, k in zip(runs, keys)],
        "estimates": [d for r, k in zip(runs, keys) if (d := _estimate_data(r, k))],
        "along": [d for r, k in zip(runs, keys) if (d := _along_data(r, k))],
        "gain": [d for r, k in zip(runs, keys) if (d := _gain_data(r, k))],
        "layers": [_layer_data(r, k) for r, k in zip(runs, keys)],
        "size": {"metric": metric, "runs": [_size_data(r, k, metric) for r, k in zip(runs, keys)]},
        "ram": [d for r, k in zip(runs, keys) if (d := _ram_data(r, k, metric))],
        "frontier": [d for r, k in zip(runs, keys) if (d := _frontier_data(r, k, metric))],
    }
    for name, fields in _SAME_CURVE.items():
        mark_same_curves(data[name]["runs"] if name == "size" else data[name], fields)
    return data


def mark_same_curves(entries: list[dict], fields) -> None:
    """Group the entries that draw the same curve, where both have points (the values of ``fields``
    equal over the shorter's length: a run that stopped earlier lies under the other), and give each
    ``same`` = [position in its group, group size] and ``same_as`` = the group's first label (None
    for the first). Missing values compare equal to each other."""
    def series(e):
        return [tuple(v if _finite(v) else None for v in vals) for vals in zip(*(e[f] for f in fields))]

    groups: list[tuple[list, list[dict]]] = []  # (the longest series, members)
    for e in entries:
        mine = series(e)
        for i, (longest, members) in enumerate(groups):
            n = min(len(mine), len(longest))
            if mine[:n] == longest[:n]:
                members.append(e)
                groups[i] = (mine if len(mine) > len(longest) else longest, members)
                break
        else:
            groups.append((mine, [e]))
    for _, members in groups:
        for i, e in enumerate(members):
            e["same"] = [i, len(members)]
            e["same_as"] = members[0]["label"] if i else None


def _frontier_data(run: dict, key: dict, metric: str) -> dict | None:
    """The test curve against bytes and the variants recorded at the chosen step (extras["frontier"])."""
    points = (run.get("extras") or {}).get("frontier")
    if not points:
        return None
    result = run["result"]
    return {**key, "metric": metric, "bytes": [s.bytes for s in result.steps],
            "values": [getattr(s, f"test_{metric}") for s in result.steps],
            "budget_bytes": result.config.get("budget_bytes"),
            "points": [{"name": p["name"], "kind": p.get("kind"), "bytes": p["bytes"],
                        "value": p.get(f"test_{metric}"), "text": point_text(p, result.config)} for p in points]}


def point_text(point: dict, config: dict) -> str:
    """The frontier legend's words for one recorded variant, from its own dtype and refit as
    ``experiments.frontier_points`` records them; for points saved without them, from what the kind
    means: the run's settings, but float32 switch-off for "plain" and no refit for "scratch"."""
    kind = point.get("kind")
    if kind not in ("run", "plain", "finetuned", "scratch"):
        return str(point.get("name"))
    made = {"dtype": "float32", "refit": None} if kind == "plain" else \
        {"dtype": config.get("dtype"), "refit": None if kind == "scratch" else config.get("refit")}
    made.update({k: point[k] for k in ("dtype", "refit") if k in point})
    made["dtype"] = made["dtype"] or "float32"
    if kind in ("run", "finetuned") and config.get("integer_only"):
        made["integer_only"] = True  # the run's own networks are full-integer
    if kind == "scratch":
        return f"from scratch, {made['dtype']} (each seed)"
    text = runs_io.variant_name(made)
    return {"run": f"kept: {text}", "plain": f"same neurons: {text}", "finetuned": f"kept: {text}, fine-tuned"}[kind]


def _labels(runs: list[dict]) -> list[str]:
    """Distinct labels: the run name (or "algorithm method") and its storage dtype ("..., int8"; left
    out when the name already says it); a label shared by several runs gets as much of its directory
    path as tells them apart, and failing that its position (#i)."""
    base = [_with_dtype(_name(r),
                        (r["result"].config.get("dtype") or "float32")
                        + (" full-integer" if r["result"].config.get("integer_only") else "")) for r in runs]
    same = [b.replace("_", " ").casefold() for b in base]  # "brute_force" and "Brute force" read alike
    count = Counter(same)
    labels = list(base)
    for key in [k for k, c in count.items() if c > 1]:
        idx = [i for i, k in enumerate(same) if k == key]
        parts = [Path(str(runs[i].get("dir") or "")).resolve().parts if runs[i].get("dir") else () for i in idx]
        tails, depth = [""] * len(idx), 0
        for depth in range(1, max(map(len, parts), default=0) + 1):
            tails = ["/".join(p[-depth:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        for n, (i, p) in enumerate(zip(idx, parts)):
            tail = "/".join(p[-depth:]) if p and len(set(tails)) == len(tails) else f"#{n + 1}"
            labels[i] = f"{base[i]} ({tail})"
    return labels


def _name(run: dict) -> str:
    """The run's name; the default one (older runs stored "iterative brute_force") as runs.run_label spells it."""
    cfg = run["result"].config
    name = run.get("name")
    default = runs_io.run_label(cfg["algorithm"], cfg["method"])
    return default if not name or name.replace("_", " ") == default else name


def _with_dtype(name: str, dtype: str) -> str:
    """``name``, then ", dtype" unless the name already has that word."""
    return name if re.search(rf"(?<![\w.]){re.escape(dtype)}(?![\w.])", name) else f"{name}, {dtype}"


def _styles(runs: list[dict]) -> list[dict]:
    """{"color", "linestyle"} per run: colour = method and dashes = algorithm, as in the paper's
    figures; when runs share a method and algorithm, every run gets its own colour instead."""
    cfgs = [(r["result"].config["method"], r["result"].config["algorithm"]) for r in runs]
    shared = len(set(cfgs)) < len(cfgs)
    out = []
    for i, (method, algorithm) in enumerate(cfgs):
        c = i if shared else (METHODS.index(method) if method in METHODS else len(METHODS))
        out.append({"color": _color(c, len(runs) if shared else len(PALETTE)),
                    "linestyle": LINESTYLES.get(algorithm, "-.")})
    return out


def _color(i: int, n: int) -> str:
    """The i-th of n distinct colours: tab10 up to 10, evenly spaced hues beyond."""
    if n <= len(PALETTE):
        return PALETTE[i % len(PALETTE)]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(i / n, 0.75, 0.8)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _kept(result) -> tuple[int, str] | str | None:
    """(k, by): the step ``PruneResult.pick`` keeps for the run's budget, max drop and RAM budget;
    None without any of them; the reason as a string when no step qualifies."""
    cfg = result.config
    budget, drop, ram = cfg.get("budget_bytes"), cfg.get("max_drop"), cfg.get("ram_budget_bytes")
    if budget is None and drop is None and ram is None:
        return None
    try:
        with warnings.catch_warnings():  # a drawing re-reads a finished run: prune said what there was to say
            warnings.simplefilter("ignore", KeptCheckWarning)
            return result.pick(budget, drop, ram)
    except ValueError as e:
        return str(e)


def _chosen(run: dict) -> dict | None:
    """The kept step (see _kept), or None without a budget, max drop or RAM budget."""
    result = run["result"]
    kept = _kept(result)
    if not isinstance(kept, tuple):
        return None
    (k, by), cfg = kept, result.config
    budget, drop, ram = cfg.get("budget_bytes"), cfg.get("max_drop"), cfg.get("ram_budget_bytes")
    s = result.steps[k]
    parts = ([f"budget {format_bytes(budget)}"] if budget is not None else []) + \
        ([f"max drop {_drop_text(drop, s.accuracy is not None)}"] if drop is not None else []) + \
        ([f"RAM {format_bytes(s.ram_bytes)} of {format_bytes(ram)}"] if ram is not None and s.ram_bytes else [])
    return {"step": k, "fraction": s.fraction_removed, "bytes": s.bytes, "accuracy": s.accuracy, "error": s.error,
            "ram_bytes": s.ram_bytes,
            "by": by, "text": " + ".join(parts) + (f" (by {by.replace('_', ' ')})" if len(parts) > 1 else "")}


def _drop_text(drop: float, classification: bool) -> str:
    return f"{drop * 100:g} pt" if classification else f"{drop:.0%} error"


def _run_key(run: dict, label: str) -> dict:
    cfg = run["result"].config
    return {"label": label, "method": cfg["method"], "algorithm": cfg["algorithm"], "loss": cfg.get("loss"),
            "dtype": cfg.get("dtype") or "float32"}


def _curve_data(run: dict, key: dict) -> dict:
    result = run["result"]
    fractions, error = result.curve("error")
    drop, a0 = result.config.get("max_drop"), result.steps[0].accuracy
    return {**key, "fractions": fractions, "error": error, "accuracy": result.curve("accuracy")[1],
            "test_accuracy": result.curve("test_accuracy")[1], "chosen": _chosen(run),
            "accuracy_floor": a0 - drop if drop is not None and a0 is not None else None}


def _along_data(run: dict, key: dict) -> dict | None:
    rows = (run.get("analysis") or {}).get("along_run")
    if not rows:
        return None
    methods = list(dict.fromkeys(m for row in rows for m in row["overall"]))
    return {**key, "fractions": [row["fraction"] for row in rows],
            "spearman": {m: [(row["overall"].get(m) or {}).get("spearman") for row in rows] for m in methods}}


def _estimate_data(run: dict, key: dict) -> dict | None:
    est = (run.get("analysis") or {}).get("estimates")
    if not est:
        return None
    methods = {}
    for m, scores in est["scores"].items():
        pts = [(t, s, h) for h, (tl, sl) in enumerate(zip(est["truth"], scores))
               for t, s in zip(tl, sl) if _finite(t) and _finite(s)]
        methods[m] = {"x": [p[0] for p in pts], "y": [p[1] for p in pts], "layer": [p[2] for p in pts],
                      "agreement": est.get("agreement", {}).get(m, {}).get("overall", {})}
    return {**key, "methods": methods} if methods else None


def _gain_data(run: dict, key: dict) -> dict | None:
    gain = (run.get("analysis") or {}).get("gain")
    if not gain or not gain.get("curves"):
        return None
    return {**key, "alphas": gain["alphas"], "base_error": gain.get("base_error"), "curves": gain["curves"]}


def _layer_data(run: dict, key: dict) -> dict:
    result = run["result"]
    return {**key, "hidden": list(result.layout["hidden"]), "n_removed": [s.n_removed for s in result.steps],
            "kept": [list(k) for k in zip(*(s.kept for s in result.steps))]}


def _size_data(run: dict, key: dict, metric: str) -> dict:
    result, extras = run["result"], run.get("extras") or {}
    export = extras.get("export_bytes")
    if isinstance(export, dict):
        export = {str(k): v for k, v in export.items() if _finite(v)}
    else:
        export = {"exported": export} if _finite(export) else {}
    exports = extras.get("exports")
    if isinstance(exports, dict) and exports:
        export = {str(name): e.get("flash_bytes") for name, e in exports.items()
                  if isinstance(e, dict) and _finite(e.get("flash_bytes"))}
    return {**key, "bytes": [s.bytes for s in result.steps], "values": [getattr(s, metric) for s in result.steps],
            "budget_bytes": result.config.get("budget_bytes"), "export_bytes": export, "chosen": _chosen(run)}


def _ram_data(run: dict, key: dict, metric: str) -> dict | None:
    """Flash, RAM and ``metric`` at every step, the budgets and the kept step; None when a step has no RAM."""
    result = run["result"]
    if any(s.ram_bytes is None for s in result.steps):
        return None
    return {**key, "metric": metric, "bytes": [s.bytes for s in result.steps],
            "ram_bytes": [s.ram_bytes for s in result.steps], "values": [getattr(s, metric) for s in result.steps],
            "budget_bytes": result.config.get("budget_bytes"),
            "ram_budget_bytes": result.config.get("ram_budget_bytes"), "chosen": _chosen(run)}


# -- shared by the figures and the tables ------------------------------------------------------
def same_curve_note(entries: list[dict]) -> str | None:
    """The legend's note naming the runs of a figure that draw one curve ("A\n= B"), or None."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        if e.get("same_as"):
            groups.setdefault(e["same_as"], []).append(e["label"])
    if not groups:
        return None
    return "same curve where both have points (alternating markers):\n" + "\n".join(
        "\n= ".join([first, *later]) for first, later in groups.items())


def budget_marks(entries: list[dict], key: str, what: str) -> list[tuple[float, str, list[dict]]]:
    """(bytes, legend text, the entries that had it) for each distinct budget ``key`` of the entries,
    e.g. (4096, "RAM budget 4.00 KiB", [run]). Runs without that budget give none."""
    by: dict[float, list[dict]] = {}
    for e in entries:
        if _finite(b := e.get(key)):
            by.setdefault(b, []).append(e)
    return [(b, f"{what} {format_bytes(int(b))}", owners) for b, owners in sorted(by.items())]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _any_finite(values) -> bool:
    return any(_finite(v) for v in values)


def _floats(values) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _fmt(v, spec: str = ".4g") -> str:
    """A table cell: None and NaN as a dash, floats with ``spec``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)
