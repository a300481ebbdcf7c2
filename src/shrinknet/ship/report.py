"""Figures and a self-contained HTML report from run directories (what ``shrinknet report`` makes).

``figure_data(runs)`` extracts the numbers each figure plots (pure: no matplotlib);
``write_report(run_dirs, out_dir)`` draws them with matplotlib's Agg renderer (imported only
when a report is drawn), writes every figure as PNG and SVG, and ``report.html`` with the PNGs
embedded, so the report is one file with no external resource.

Figures, after the paper's (Wolfe et al. 2017, section 4):

    curves     accuracy and error vs fraction of hidden neurons removed, one line per run
               (colour = method, line style = algorithm; runs sharing both get a colour each),
               the kept step (budget and/or max drop) marked on every curve
    along      Spearman agreement of each estimate with brute force along the run
    estimates  estimated vs true Delta E (brute force) per estimate, with rank agreement
    gain       error as one neuron's output is scaled by alpha, with the Taylor models
    layers     neurons kept per hidden layer vs neurons removed
    size       accuracy (error for regression) vs flash bytes, with the budget and exported sizes
    ram        RAM (peak activations of a batch-1 forward) against flash bytes, with both budgets,
               and accuracy against RAM (runs that record RAM)
    frontier   test accuracy vs bytes with the variants recorded at the kept step

Every legend names each run's storage dtype (run labels end in ", float32", ", int8", ...);
runs that draw the same curve (or the start of another's) get alternating markers and a note in
the legend, so none hides another; budgets and exports are named in the legend, not over the plot.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import os
import re
from collections import Counter
from pathlib import Path

from . import names
from . import runs as runs_io
from ..util.files import staged_dir, write_bytes, write_text
from ..store.memory import format_bytes
from ..score.saliency import METHODS

FIGURES = ("curves", "estimates", "along", "gain", "layers", "size", "ram", "frontier")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")  # matplotlib's tab10, so figure_data needs no matplotlib
FRACTIONS = tuple(f / 10 for f in range(1, 9))  # the paper's table columns: 10% ... 80% removed
LINESTYLES = {"single": "--", "iterative": "-", "iterative_pairs": ":"}
TWIN_MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # runs drawing the same curve: one each, alternating
TOP_PAIRS = 10

_CAPTIONS = {
    "curves": "Validation accuracy and error as hidden neurons are removed; colour = method, "
              "line style = algorithm (dashed: single ranking, solid: iterative, dotted: iterative pairs); "
              "runs sharing a method and algorithm get a colour each. A star marks the kept network (the "
              "budget and/or max-drop step); a dotted horizontal line, the lowest accuracy the max drop allows.",
    "estimates": "Estimated against true change in error (brute force) when each neuron is switched off "
                 "on the unpruned network; the dashed line is y = x.",
    "along": "Spearman rank correlation of each estimate with brute force on the partly pruned network, "
             "as neurons are removed (1: the same order as the truth).",
    "gain": "Error as one neuron's output is scaled by alpha (0: switched off, 1: as trained), with the "
            "first-order line and second-order parabola drawn from alpha = 1.",
    "layers": "Neurons kept in each hidden layer as neurons are removed.",
    "size": "Validation accuracy (error for regression) against flash: the bytes of all weights and biases at "
            "each run's storage dtype (named in the legend), so an int8 run sits left of the float32 run with the "
            "same neurons. A star marks the kept network; dashed lines are budgets, in the colours of the runs that "
            "had them; dotted lines, exported files of another size than the kept network.",
    "ram": "RAM here is the peak activation memory of a batch-1 forward pass: the two largest consecutive "
           "float32 feature maps (for an MLP, the two widest consecutive hidden layers), which the exported C "
           "holds in one static scratch buffer; weights and biases live in flash. Left: RAM against flash at every "
           "removal, with the flash (vertical) and RAM (horizontal) budgets; the shaded box fits both. Right: "
           "validation accuracy (error for regression) against RAM; a vertical run of points is removals that "
           "saved flash but no RAM. A star marks the kept network.",
    "frontier": "Test accuracy (error for regression) against bytes on the device: each run's curve (as its "
                "networks are saved: refit and float16 or int8 storage included), and at the kept step, in the "
                "run's colour, its own network (circle), the plain switch-off float32 network of the same neurons "
                "(square), the "
                "fine-tuned one (triangle) and networks of the same shape trained from scratch (crosses); "
                "variants of the same size are drawn side by side.",
}
_SKIPPED = {
    "ram": "no run records RAM (its steps have no ram_bytes: written by an older shrinknet)",
    "frontier": "no run records its variants (written by 'shrinknet prune')",
    "estimates": "no run directory has an analysis.json with estimates",
    "gain": "no run directory has an analysis.json with gain curves",
    "along": "no run directory has an analysis.json with agreement along the run",
}
_RC = {  # one look for every figure
    "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8, "lines.linewidth": 1.8,
    "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "shrinknet", "svg.fonttype": "none",
    **names.FIGURE_RC,  # run names and titles are text, never mathtext: "4k_vs_$5$" draws as written
}


# -- numbers ------------------------------------------------------------------------------------
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
    if kind == "scratch":
        return f"from scratch, {made['dtype']} (each seed)"
    text = runs_io.variant_name(made)
    return {"run": f"kept: {text}", "plain": f"same neurons: {text}", "finetuned": f"kept: {text}, fine-tuned"}[kind]


def _labels(runs: list[dict]) -> list[str]:
    """Distinct labels: the run name (or "algorithm method") and its storage dtype ("..., int8"; left
    out when the name already says it); a label shared by several runs gets as much of its directory
    path as tells them apart, and failing that its position (#i)."""
    base = [_with_dtype(r.get("name") or "{algorithm} {method}".format(**r["result"].config),
                        r["result"].config.get("dtype") or "float32") for r in runs]
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


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _any_finite(values) -> bool:
    return any(_finite(v) for v in values)


# -- figures ------------------------------------------------------------------------------------
def _matplotlib():
    """matplotlib, imported on first use; a clear ImportError when it is not installed."""
    try:
        import matplotlib
        import matplotlib.backend_bases  # noqa: F401
        import matplotlib.backends.backend_agg  # noqa: F401  (the renderer every figure uses)
        import matplotlib.figure  # noqa: F401
        import matplotlib.lines  # noqa: F401
        import matplotlib.ticker  # noqa: F401
        import matplotlib.transforms  # noqa: F401
    except ImportError as e:
        raise ImportError("shrinknet's figures and report need matplotlib: pip install 'shrinknet[report]'") from e
    return matplotlib


def _styled(draw):
    """Run a figure helper inside the report's rc settings."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with _matplotlib().rc_context(_RC):
            return draw(*args, **kwargs)
    return wrapper


def _new_figure(n_panels: int, ncols: int, panel: tuple[float, float], **subplot_kw):
    """(Figure, axes list) on the Agg canvas, a grid of ``n_panels``; spare cells hidden.

    The figure is not registered with pyplot, so nothing global holds it once it is dropped.
    """
    mpl = _matplotlib()
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = mpl.figure.Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    mpl.backends.backend_agg.FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _style(run: dict) -> dict:
    """Line style of a run, from figure_data (see _styles)."""
    return {"color": run["color"], "linestyle": run["linestyle"]}


def _line_kw(run: dict, n_points: int) -> dict:
    """Line style of a run in a figure that compares runs: its colour and dashes; when other runs
    draw the same curve (``same``, see mark_same_curves), alternating markers and a line thinner
    than the one below it, so every run of the group shows."""
    kw = _style(run)
    i, n = run.get("same") or (0, 1)
    if n > 1:
        every = max(n, n_points // 12)  # at least one step per run of the group, so markers alternate
        kw.update(marker=TWIN_MARKERS[i % len(TWIN_MARKERS)], markersize=6, markevery=(i * every // n, every),
                  markeredgecolor="k", markeredgewidth=0.5, linewidth=1.4 + 1.8 * (n - 1 - i))
    return kw


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


def _budget_lines(draw, marks) -> None:
    """One budget line per mark with ``draw`` (ax.axvline or ax.axhline), dashed in the colours of the
    runs that had it, alternating along the line; the first run's dashes carry the legend text."""
    for b, text, owners in marks:
        n = len(owners)
        for i, e in enumerate(owners):
            draw(b, color=e["color"], linewidth=1.3, linestyle=(4 * i, (4, 4 * (n - 1) or 2)),
                 label=text if i == 0 else None)


def _bytes_axis(ax, which: str, values, ticks: int = 9) -> None:
    """Byte ticks (512 B, 16 KiB) on axis ``which`` ("x" or "y"); a log2 scale with at most ``ticks``
    ticks at powers of two when the values span more than a factor of 8 (devices come in powers of two)."""
    mpl = _matplotlib()
    axis = ax.xaxis if which == "x" else ax.yaxis
    v = [x for x in values if _finite(x) and x > 0]
    if v and max(v) / min(v) > 8:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=2)
        axis.set_major_locator(mpl.ticker.LogLocator(base=2, numticks=ticks))
        axis.set_minor_locator(mpl.ticker.NullLocator())
    else:
        step = 2.0 ** math.ceil(math.log2(max([1.0, *v]) / 8))  # 4-8 ticks at a power-of-two number of bytes
        axis.set_major_locator(mpl.ticker.MultipleLocator(max(step, 1.0)))
    axis.set_major_formatter(mpl.ticker.FuncFormatter(lambda x, _: _tick_bytes(x)))


def _star(ax, chosen: dict | None, x: str, y: str, color: str) -> None:
    """The kept step as a black-edged star at (chosen[x], chosen[y]) when both are numbers."""
    if chosen and _finite(chosen.get(x)) and _finite(chosen.get(y)):
        ax.plot([chosen[x]], [chosen[y]], marker="*", markersize=13, color=color, markeredgecolor="k",
                markeredgewidth=0.6, linestyle="none", zorder=5)


def _legend(ax, entries: list[dict], handles=None, star: bool = True, below: bool = False) -> None:
    """The legend right of (or ``below``) the figure: ``handles`` (default: ax's labelled artists), a
    "kept network" star and, as its title, the note on runs that draw the same curve."""
    mpl = _matplotlib()
    handles = list(ax.get_legend_handles_labels()[0] if handles is None else handles)
    if star:
        handles.append(mpl.lines.Line2D([], [], marker="*", markersize=11, color="w", markeredgecolor="k",
                                        linestyle="none", label="kept network"))
    note = same_curve_note(entries)
    ax.figure.legend(handles=handles, loc="outside lower center" if below else "outside right upper", title=note,
                     title_fontsize=7.5, alignment="left", ncols=2 if below else 1)


def _floats(values) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _log_if_wide(ax, values) -> None:
    """Log y scale when the values are positive and span more than two decades."""
    v = [x for x in values if _finite(x)]
    if v and min(v) > 0 and max(v) / min(v) > 100:
        ax.set_yscale("log")


def _error_label(runs: list[dict]) -> str:
    losses = {r["loss"] for r in runs}
    return f"validation error E ({losses.pop()})" if len(losses) == 1 else "validation error E"


@_styled
def _curves_figure(curves: list[dict]):
    """Accuracy (if any run has it) and error vs fraction removed; one line per run and panel.

    Line labels are the run labels (test accuracy: label + " (test)"), in the order of ``curves``.
    """
    tested = any(_any_finite(c["test_accuracy"]) for c in curves)
    panels = (["accuracy"] if any(_any_finite(c["accuracy"]) for c in curves) else []) + ["error"]
    ylabels = {"accuracy": "accuracy (thin: test set)" if tested else "validation accuracy",
               "error": _error_label(curves)}
    fig, axes = _new_figure(len(panels), 2, (5.2, 3.9))
    for ax, key in zip(axes, panels):
        for c in curves:
            kw = _line_kw(c, len(c["fractions"]))
            if _any_finite(c[key]):
                ax.plot(c["fractions"], _floats(c[key]), label=c["label"], **kw)
            if key == "accuracy" and _any_finite(c["test_accuracy"]):
                ax.plot(c["fractions"], _floats(c["test_accuracy"]), label=f"{c['label']} (test)",
                        alpha=0.45, linewidth=1, **_style(c))
            if key == "accuracy" and _finite(c["accuracy_floor"]):
                ax.axhline(c["accuracy_floor"], color=c["color"], linestyle=":", linewidth=1)
            ch = c["chosen"]
            if ch and _finite(ch[key]):
                ax.plot([ch["fraction"]], [ch[key]], marker="*", markersize=13, color=c["color"],
                        markeredgecolor="k", markeredgewidth=0.6, linestyle="none", zorder=5,
                        label=f"kept: {ch['text']}" if key == panels[-1] else None)
        ax.set_xlabel("fraction of hidden neurons removed")
        ax.set_ylabel(ylabels[key])
        ax.set_title(f"{key.capitalize()} vs neurons removed")
        ax.set_xlim(0, max(max(c["fractions"]) for c in curves) or 1)
    _log_if_wide(axes[-1], [v for c in curves for v in c["error"]])
    _legend(axes[-1], curves, star=False)  # outside: the lines fill the panels; stars have their own entries
    return fig


@_styled
def _along_figure(along: list[dict]):
    """One panel per run: Spearman correlation of each estimate with brute force vs fraction removed."""
    fig, axes = _new_figure(len(along), 3, (4.2, 3.2), sharey=True)
    for ax, run in zip(axes, along):
        for m, values in run["spearman"].items():
            i = METHODS.index(m) if m in METHODS else len(METHODS)
            ax.plot(run["fractions"], _floats(values), marker="o", markersize=3.5, color=PALETTE[i % len(PALETTE)],
                    label=m)
        ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(run["label"])
        ax.set_xlabel("fraction of hidden neurons removed")
        ax.set_ylabel("Spearman with brute force")
        ax.legend(loc="lower left")
    return fig


@_styled
def _estimates_figure(estimates: list[dict]):
    """One row per run, one panel per estimate: estimate vs true Delta E, coloured by layer."""
    ncols = max(len(e["methods"]) for e in estimates)
    fig, axes = _new_figure(len(estimates) * ncols, ncols, (3.5, 3.2))
    panels = [(axes[r * ncols + c], e, m, d) for r, e in enumerate(estimates)
              for c, (m, d) in enumerate(e["methods"].items())]
    for ax in set(axes) - {p[0] for p in panels}:  # rows of runs with fewer estimates
        ax.set_visible(False)
    for ax, run, method, d in panels:
        for h in sorted(set(d["layer"])):
            pts = [(x, y) for x, y, l in zip(d["x"], d["y"], d["layer"]) if l == h]
            ax.scatter(*zip(*pts), s=14, color=f"C{h}", label=f"hidden layer {h}")
        if d["x"] and method != "magnitude":  # magnitude is a score in other units, not a Delta E
            lo, hi = min(d["x"] + d["y"]), max(d["x"] + d["y"])
            ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=0.8, label="y = x")
        a = d["agreement"]
        stats = ", ".join(f"{n} {_fmt(a.get(n.lower()), '.2f')}" for n in ("Pearson", "Spearman", "Kendall"))
        who = f"{method} ({run['label']})" if len(estimates) > 1 else method
        ax.set_title(f"{who}\n{stats}")
        ax.set_xlabel("true ΔE (brute force)")
        ax.set_ylabel("magnitude score" if method == "magnitude" else f"estimated ΔE ({method})")
    panels[0][0].legend(loc="best")
    return fig


@_styled
def _gain_figure(gains: list[dict]):
    """One panel per (run, neuron): true error vs alpha (solid), Taylor models (dashed)."""
    panels = [(g, c) for g in gains for c in g["curves"]]
    fig, axes = _new_figure(len(panels), 4, (3.4, 2.9))
    for ax, (g, c) in zip(axes, panels):
        a, err = _floats(g["alphas"]), _floats(c["error"])
        ax.plot(a, err, color="k", label="true error E(α)")
        ax.plot(a, _floats(c["taylor1"]), color="C1", linestyle="--", linewidth=1.2, label="first order (taylor1)")
        ax.plot(a, _floats(c["taylor2"]), color="C2", linestyle="--", linewidth=1.2, label="second order (taylor2)")
        for alpha, marker, text in ((0.0, "o", "α = 0: switched off"), (1.0, "s", "α = 1: as trained")):
            i = min(range(len(a)), key=lambda i: abs(a[i] - alpha))
            if abs(a[i] - alpha) < 1e-6:
                ax.plot([a[i]], [err[i]], marker=marker, color="C3", linestyle="none", label=text)
        near = [v for k in ("error", "taylor1", "taylor2") for x, v in zip(a, _floats(c[k]))
                if (k == "error" or x <= 1.5) and math.isfinite(v)]  # the Taylor models leave the frame fast
        if near:
            pad = 0.08 * (max(near) - min(near) or 1.0)
            ax.set_ylim(min(near) - pad, max(near) + pad)
        h, j = c["neuron"]
        ax.set_title(f"neuron {j} of hidden layer {h}" + (f"\n{g['label']}" if len(gains) > 1 else ""))
        ax.set_xlabel("α (output scale)")
        ax.set_ylabel("error E")
    axes[0].legend(loc="best")
    return fig


@_styled
def _layers_figure(layers: list[dict]):
    """One panel per run: neurons kept in each hidden layer vs neurons removed (one y scale when the
    runs start from the same widths; else each its own, so 8 channels are not flattened by 100 neurons)."""
    mpl = _matplotlib()
    same = len({tuple(run["hidden"]) for run in layers}) == 1
    fig, axes = _new_figure(len(layers), 3, (3.8, 3.0), sharey=same)
    for ax, run in zip(axes, layers):
        for h, kept in enumerate(run["kept"]):
            ax.plot(run["n_removed"], kept, drawstyle="steps-post", color=f"C{h}",
                    label=f"hidden layer {h} ({run['hidden'][h]})")
        ax.set_title(run["label"])
        for axis in (ax.xaxis, ax.yaxis):  # counts: whole ticks
            axis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("neurons removed")
        ax.set_ylabel("neurons kept")
        ax.legend(loc="best")
    return fig


def _metric_label(metric: str, entries: list[dict]) -> str:
    return "validation accuracy" if metric == "accuracy" else _error_label(entries)


@_styled
def _size_figure(size: dict):
    """Accuracy (or error) vs flash bytes per run, the kept step starred; budgets, and exports of
    another size than the kept step, as vertical lines named in the legend."""
    runs, metric = size["runs"], size["metric"]
    fig, (ax,) = _new_figure(1, 1, (8.4, 4.2))
    for run in runs:
        ax.plot(run["bytes"], _floats(run["values"]), label=run["label"], **_line_kw(run, len(run["bytes"])))
        _star(ax, run.get("chosen"), "bytes", metric, run["color"])
    budgets = budget_marks(runs, "budget_bytes", "flash budget")
    _budget_lines(ax.axvline, budgets)
    marks = [b for b, _, _ in budgets]
    for run in runs:  # an export the size of the kept step is that star: the exports table lists it
        kept = (run.get("chosen") or {}).get("bytes")
        by_size: dict[float, list[str]] = {}
        for name, b in run["export_bytes"].items():
            if b != kept:
                by_size.setdefault(b, []).append(name)
        for b, names in sorted(by_size.items()):
            who = f" ({run['label']})" if len(runs) > 1 else ""
            ax.axvline(b, color=run["color"], linestyle=":", linewidth=1.2,
                       label=f"{', '.join(names)}: {format_bytes(int(b))}{who}")
            marks.append(b)
    _bytes_axis(ax, "x", [*(v for r in runs for v in r["bytes"]), *marks])
    ax.set_xlabel("flash: bytes of weights and biases at each run's storage dtype")
    ax.set_ylabel(_metric_label(metric, runs))
    if metric == "error":
        _log_if_wide(ax, [v for r in runs for v in r["values"]])
    _legend(ax, runs, star=any(r.get("chosen") for r in runs))
    ax.set_title("Accuracy vs flash" if metric == "accuracy" else "Error vs flash")
    return fig


@_styled
def _ram_figure(ram: list[dict]):
    """Left: RAM vs flash at every step, with the flash and RAM budgets and the box that fits both;
    right: accuracy (or error) vs RAM with the RAM budgets. The kept step starred on both."""
    metric = ram[0]["metric"]
    fig, (left, right) = _new_figure(2, 2, (4.8, 4.6))
    for run in ram:
        kw = _line_kw(run, len(run["bytes"]))
        left.plot(run["bytes"], run["ram_bytes"], label=run["label"], **kw)
        right.plot(run["ram_bytes"], _floats(run["values"]), **kw)
        _star(left, run["chosen"], "bytes", "ram_bytes", run["color"])
        _star(right, run["chosen"], "ram_bytes", metric, run["color"])
    flash = budget_marks(ram, "budget_bytes", "flash budget")
    rams = budget_marks(ram, "ram_budget_bytes", "RAM budget")
    _budget_lines(left.axvline, flash)
    _budget_lines(left.axhline, rams)
    _budget_lines(right.axvline, rams)
    _bytes_axis(left, "x", [*(v for r in ram for v in r["bytes"]), *(b for b, _, _ in flash)], ticks=6)
    _bytes_axis(left, "y", [*(v for r in ram for v in r["ram_bytes"]), *(b for b, _, _ in rams)])
    _bytes_axis(right, "x", [*(v for r in ram for v in r["ram_bytes"]), *(b for b, _, _ in rams)], ticks=6)
    boxes = {}  # (flash, RAM budget) -> the first run's colour
    for r in ram:
        if _finite(r["budget_bytes"]) and _finite(r["ram_budget_bytes"]):
            boxes.setdefault((r["budget_bytes"], r["ram_budget_bytes"]), r["color"])
    # a linear byte axis starts at 0, so the box that fits both budgets is drawn whole
    x0 = 0 if left.get_xscale() == "linear" else left.get_xlim()[0]
    y0 = 0 if left.get_yscale() == "linear" else left.get_ylim()[0]
    for i, ((b, r), color) in enumerate(boxes.items()):  # drawn once the limits are known; they stay
        left.fill_between([x0, b], [y0, y0], [r, r], color=color, alpha=0.12, linewidth=0, zorder=0,
                          label="fits both budgets" if i == 0 else None)
    left.set_xlim(x0, None)
    left.set_ylim(y0, None)
    left.set_xlabel("flash: bytes of weights and biases")
    left.set_ylabel("RAM: peak activation bytes (batch 1)")
    left.set_title("RAM vs flash")
    right.set_xlabel("RAM: peak activation bytes (batch 1)")
    right.set_ylabel(_metric_label(metric, ram))
    if metric == "error":
        _log_if_wide(right, [v for r in ram for v in r["values"]])
    right.set_title("Accuracy vs RAM" if metric == "accuracy" else "Error vs RAM")
    _legend(right, ram, handles=left.get_legend_handles_labels()[0], star=any(r["chosen"] for r in ram), below=True)
    return fig


_MARKERS = {"run": "o", "plain": "s", "finetuned": "^", "scratch": "x"}


@_styled
def _frontier_figure(frontier: list[dict]):
    """Test accuracy (or error) vs bytes: every run's curve and, in its colour, its variants as
    markers (one marker per kind) named from their dtype and refit; the budgets."""
    mpl = _matplotlib()
    fig, (ax,) = _new_figure(1, 1, (8.4, 4.2))
    order = list(_MARKERS)
    for run in frontier:
        ax.plot(run["bytes"], _floats(run["values"]), label=f"{run['label']}: test curve",
                **_line_kw(run, len(run["bytes"])))
        drawn = [p for p in run["points"] if _finite(p["value"])]
        kinds_at: dict[float, list] = {}  # bytes -> the kinds drawn there, in _MARKERS order
        for p in sorted(drawn, key=lambda p: order.index(p["kind"]) if p["kind"] in order else len(order)):
            kinds_at.setdefault(p["bytes"], [])
            if p["kind"] not in kinds_at[p["bytes"]]:
                kinds_at[p["bytes"]].append(p["kind"])
        seen = set()
        for p in drawn:
            marker = _MARKERS.get(p["kind"], "o")
            edge = {} if marker == "x" else {"edgecolors": "k", "linewidths": 0.6}
            kinds = kinds_at[p["bytes"]]  # variants of one size side by side, 8 points apart (the data stay exact)
            dx = 8 * (kinds.index(p["kind"]) - (len(kinds) - 1) / 2)
            ax.scatter([p["bytes"]], [p["value"]], marker=marker, s=46, zorder=4, color=run["color"],
                       label=None if p["text"] in seen else p["text"],
                       transform=mpl.transforms.offset_copy(ax.transData, fig=fig, x=dx, units="points"), **edge)
            seen.add(p["text"])
    marks = budget_marks(frontier, "budget_bytes", "flash budget")
    _budget_lines(ax.axvline, marks)
    _bytes_axis(ax, "x", [*(v for r in frontier for v in r["bytes"]), *(b for b, _, _ in marks)])
    ax.set_xlabel("bytes on the device (weights, biases, int8 scales)")
    metric = frontier[0]["metric"]
    ax.set_ylabel("test accuracy" if metric == "accuracy" else "test error")
    if metric == "error":
        _log_if_wide(ax, [v for r in frontier for v in r["values"]])
    _legend(ax, frontier, star=False)
    ax.set_title("Size/accuracy frontier" if metric == "accuracy" else "Size/error frontier")
    return fig


def _frontier_table(runs: list[dict], labels: list[str]) -> str:
    """Every recorded variant with its bytes and test numbers, and the plain verdict on the baseline."""
    from ..repair.retrain import baseline_summary

    parts = []
    for r, label in zip(runs, labels):
        points = (r.get("extras") or {}).get("frontier")
        if not points:
            continue
        rows = [[p["name"], p["bytes"], p.get("test_accuracy"), p.get("test_error"),
                 p.get("before_test_accuracy") if p.get("kind") == "finetuned" else ""] for p in points]
        parts.append(f"<h3>{names.html_text(label)}</h3>"
                     + _table(["variant", "bytes", "test accuracy", "test error", "before fine-tuning"], rows))
        if line := baseline_summary(points):
            parts.append(f'<p class="note">{names.html_text(line)}</p>')
    return "\n".join(parts)


def _tick_bytes(v: float) -> str:
    """Axis label for a byte count: 0, 512 B, 16 KiB, 1.5 MiB (no trailing zeros)."""
    if v < 0:
        return ""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if v >= scale:
            return f"{v / scale:g} {unit}"
    return f"{v:g} B"


_DRAW = {"curves": _curves_figure, "estimates": _estimates_figure, "along": _along_figure, "gain": _gain_figure,
         "layers": _layers_figure, "size": _size_figure, "ram": _ram_figure, "frontier": _frontier_figure}


def _render(fig, formats) -> dict[str, bytes]:
    """The figure's bytes in each format (PNG always, for the HTML)."""
    out = {}
    with _matplotlib().rc_context(_RC):
        for fmt in dict.fromkeys(["png", *formats]):
            buf = io.BytesIO()
            metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)  # reproducible files
            fig.savefig(buf, format=fmt, dpi=110, metadata=metadata)
            out[fmt] = buf.getvalue()
    return out


def _check_formats(formats) -> list[str]:
    formats = [formats] if isinstance(formats, str) else list(formats)
    formats = list(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    supported = _matplotlib().backend_bases.FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise ValueError(f"unsupported figure format(s) {', '.join(bad)}: choose from {', '.join(sorted(supported))}")
    return formats


# -- the report ---------------------------------------------------------------------------------
def write_report(run_dirs, out_dir: str | os.PathLike, title: str | None = None,
                 formats=("png", "svg")) -> Path:
    """Draw the figures of ``run_dirs`` and write them and ``report.html`` into ``out_dir``.

    Args:
        run_dirs: run directories written by :func:`shrinknet.runs.save_run`.
        out_dir: created if missing; gets ``<figure>.<format>`` per drawn figure and report.html.
        title: the report's heading (default "shrinknet report").
        formats: file formats of the figures (any matplotlib can write); the HTML embeds PNGs.

    Returns:
        The path of report.html. All files are staged and moved in together: on any error
        nothing new appears in ``out_dir``.

    Raises:
        ValueError: no run directories, a directory that is not a valid run, a bad format.
        ImportError: matplotlib is not installed.
    """
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    if not run_dirs:
        raise ValueError("no run directories given: pass directories written by 'shrinknet prune'")
    runs = [_load(d) for d in run_dirs]
    formats = _check_formats(formats)
    data = figure_data(runs)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    pngs = {}
    with staged_dir(out_dir) as stage:  # the figures and the page, or nothing
        for name in FIGURES:
            if not data[name]:
                continue
            blobs = _render(_DRAW[name](data[name]), formats)
            for fmt in formats:
                write_bytes(stage / f"{name}.{fmt}", blobs[fmt])
            pngs[name] = blobs["png"]
        write_text(stage / "report.html", _html(title or "shrinknet report", runs, pngs))
    return out_dir / "report.html"


def _load(run_dir) -> dict:
    """runs.load_run, plus a check that the figures and tables can read the run and its analysis."""
    run = runs_io.load_run(run_dir)
    try:
        figure_data([run])
        _html("", [run], {})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ValueError(f"{run_dir}: analysis.json or run.json has an unexpected layout ({type(e).__name__}: {e})") from None
    return run


def _fmt(v, spec: str = ".4g") -> str:
    """A table cell: None and NaN as a dash, floats with ``spec``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    """An HTML table; every cell is formatted with _fmt and escaped."""
    head = "".join(f"<th>{names.html_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{names.html_text(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(name: str, png: bytes | None) -> str:
    if png is None:
        return f'<p class="note">Figure “{name}” skipped: {names.html_text(_SKIPPED.get(name, "no data"))}.</p>'
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{name}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{names.html_text(_CAPTIONS[name])}</figcaption></figure>")


def _reached(result, fraction: float):
    """result.at_fraction(fraction), or None when the run stopped before reaching it."""
    step = result.at_fraction(fraction)
    total = sum(result.layout["hidden"])
    if step is result.steps[-1] and step.fraction_removed + 1 / total <= fraction + 1e-12:
        return None
    return step


def _summary(runs: list[dict]) -> str:
    nets = {"→".join(map(str, [r["result"].layout["in"], *r["result"].layout["hidden"], r["result"].layout["out"]]))
            for r in runs}
    methods = sorted({r["result"].config["method"] for r in runs})
    algorithms = sorted({r["result"].config["algorithm"] for r in runs})
    return (f"{len(runs)} run(s) — methods: {', '.join(methods)}; algorithms: {', '.join(algorithms)}; "
            f"network(s): {', '.join(sorted(nets))}. Errors are summed over the validation set (the paper's E).")


def _budget_cells(result) -> list:
    """budget, max drop, RAM budget, chosen by, step, removed, flash, RAM, validation and test accuracy
    and error of the step ``PruneResult.pick`` keeps for the run's budget, max drop and RAM budget."""
    cfg = result.config
    b, d, ram = cfg.get("budget_bytes"), cfg.get("max_drop"), cfg.get("ram_budget_bytes")
    limits = [None if b is None else format_bytes(b),
              None if d is None else _drop_text(d, result.steps[0].accuracy is not None),
              None if ram is None else format_bytes(ram)]
    kept = _kept(result)
    if not isinstance(kept, tuple):
        return [*limits, kept or "no budget or max drop", *[None] * 9]
    k, by = kept
    s = result.steps[k]
    return [*limits, by.replace("_", " "), k, s.n_removed, format_bytes(s.bytes),
            None if s.ram_bytes is None else format_bytes(s.ram_bytes), s.accuracy, s.test_accuracy,
            s.error, s.test_error]


def _export_rows(runs: list[dict], labels: list[str]) -> list[list]:
    """run, file, format, dtype, flash bytes, RAM bytes of every exported file the runs record."""
    rows = []
    for r, label in zip(runs, labels):
        extras = r.get("extras") or {}
        exports = extras.get("exports")
        if isinstance(exports, dict):
            for name, e in exports.items():
                if isinstance(e, dict):
                    files = ", ".join(e.get("files") or [name])
                    rows.append([label, files, e.get("format"), e.get("dtype"), e.get("flash_bytes"), e.get("ram_bytes")])
        elif _finite(extras.get("export_bytes")):  # runs written before exports were listed
            ram = next((v for k, v in extras.items() if k.endswith("_ram_bytes") and _finite(v) and v), None)
            rows.append([label, "exported", None, None, extras["export_bytes"], ram])
    return rows


def _run_tables(runs: list[dict], labels: list[str]) -> str:
    """Settings and start of each run; accuracy and error at 10%...80% removed; the budget step."""
    settings, budget, at = [], [], {"accuracy": [], "error": []}
    for r, label in zip(runs, labels):
        res, cfg = r["result"], r["result"].config
        s0 = res.steps[0]
        settings.append([label, cfg["method"], cfg["algorithm"], cfg.get("loss"), cfg.get("dtype"),
                         s0.error, s0.accuracy, res.steps[-1].n_removed, res.steps[-1].fraction_removed])
        for key in at:
            at[key].append([label, *(getattr(step, key) if (step := _reached(res, f)) else None for f in FRACTIONS)])
        budget.append([label, *_budget_cells(res)])
    cols = [f"{f:.0%}" for f in FRACTIONS]
    parts = ["<h2>Runs</h2>", _table(["run", "method", "algorithm", "loss", "dtype", "start error",
                                      "start accuracy", "removed at end", "fraction at end"], settings)]
    if any(a is not None for row in at["accuracy"] for a in row[1:]):
        parts += ["<h3>Validation accuracy by fraction of neurons removed</h3>", _table(["run", *cols], at["accuracy"])]
    parts += ["<h3>Validation error by fraction of neurons removed</h3>", _table(["run", *cols], at["error"]),
              "<h3>The kept network: memory budget and max drop</h3>",
              "<p>The step <code>PruneResult.pick</code> keeps: the least-error step that fits the budget, the "
              "smallest network within the max drop of the starting validation accuracy, or with both the "
              "tighter of the two; with a RAM budget, only steps that fit it too. Flash: weights and biases at "
              "the run's dtype; RAM: the peak activations of a batch-1 forward pass.</p>",
              _table(["run", "budget", "max drop", "RAM budget", "chosen by", "step", "removed", "flash", "RAM",
                      "val accuracy", "test accuracy", "val error", "test error"], budget)]
    exports = _export_rows(runs, labels)
    if exports:
        parts += ["<h3>Exported files</h3>",
                  "<p>Flash: bytes of all weights and biases at the export's dtype; RAM: the C code's static "
                  "scratch buffer (ONNX's working memory belongs to its runtime).</p>",
                  _table(["run", "file(s)", "format", "dtype", "flash bytes", "RAM bytes"], exports)]
    return "".join(parts)


def _analysis_tables(runs: list[dict], labels: list[str]) -> str:
    """Agreement of estimates with brute force (at the start and along the run), correlated pairs."""
    agree, pairs = [], []
    for r, label in zip(runs, labels):
        an = r.get("analysis") or {}
        for m, a in (an.get("estimates") or {}).get("agreement", {}).items():
            o = a.get("overall", {})
            agree.append([label, m, o.get("n"), o.get("pearson"), o.get("spearman"), o.get("kendall"),
                          o.get("k"), o.get("overlap")])
        top = sorted(an.get("pairs") or [], key=lambda p: -abs(p.get("corr") or 0))[:TOP_PAIRS]
        pairs += [[label, *(p.get(c) for c in ("layer", "j", "k", "corr", "delta_j", "delta_k", "delta_both",
                                                "interaction"))] for p in top]
    parts = []
    if agree:
        parts += ["<h3>Estimates against the truth (unpruned network)</h3>",
                  "<p>Correlation of each estimate with the brute-force ΔE over all hidden neurons; "
                  "overlap = share of the k lowest that both agree on.</p>",
                  _table(["run", "estimate", "n", "Pearson", "Spearman", "Kendall", "k", "overlap"], agree)]
    if pairs:
        parts += [f"<h3>Most correlated neuron pairs (top {TOP_PAIRS} per run)</h3>",
                  "<p>ΔE of switching off the first, the second, and both; interaction = both − first − second "
                  "(large and positive: a cancelling pair that one-at-a-time removal misjudges).</p>",
                  _table(["run", "layer", "j", "k", "correlation", "ΔE j", "ΔE k", "ΔE both", "interaction"], pairs)]
    return "".join(parts)


def _speed_table(runs: list[dict], labels: list[str]) -> str:
    """Approximate speeds (screen/fast): how often their removal was the exact greedy choice."""
    from ..choose.speed import summary

    rows = []
    for r, label in zip(runs, labels):
        res = r["result"]
        a = summary(res.agreement)
        if a is not None:
            rows.append([label, res.config.get("speed"), res.config.get("screen_size"), res.config.get("block_fraction"),
                         f"{a['same']} / {a['checks']}", a["mean_best_delta"], a["mean_excess_delta"],
                         a["max_excess_delta"]])
    if not rows:
        return ""
    return "".join([
        "<h3>Approximate speeds against exact brute force</h3>",
        "<p>At sampled removals the run also scored every candidate exactly: how often its removal was the exact "
        "greedy choice, and how much more the removed neuron's exact ΔE was than the best one's.</p>",
        _table(["run", "speed", "screen size", "block fraction", "same as exact", "mean best ΔE",
                "mean excess ΔE", "max excess ΔE"], rows)])


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; background: #fff6e0; padding: 0.5em 0.8em; border-left: 3px solid #e0a000; }
"""


def _html(title: str, runs: list[dict], pngs: dict[str, bytes]) -> str:
    """The whole report: header, run tables and figures in reading order, analysis tables."""
    labels = _labels(runs)
    fig = {name: _figure_html(name, pngs.get(name)) for name in FIGURES}
    body = [
        f"<h1>{names.html_text(title)}</h1>", f"<p>{names.html_text(_summary(runs))}</p>",
        "<h2>Accuracy and error as neurons are removed</h2>", fig["curves"],
        _run_tables(runs, labels), _speed_table(runs, labels),
        "<h2>Size: flash and RAM</h2>", fig["size"], fig["ram"], fig["layers"],
        "<h2>Size/accuracy frontier</h2>", fig["frontier"], _frontier_table(runs, labels),
        "<h2>How good are the estimates?</h2>", fig["estimates"], fig["along"], _analysis_tables(runs, labels),
        "<h2>Gain curves</h2>", fig["gain"],
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{names.html_text(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
