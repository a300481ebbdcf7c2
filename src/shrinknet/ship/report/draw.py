"""The report's figures, drawn with matplotlib's Agg renderer from ``figure_data``'s numbers.

matplotlib is imported on first use (``_matplotlib``), never when this module is imported, so
``figure_data`` and the package import work without it. ``_DRAW`` maps each figure name to its function.
"""

from __future__ import annotations

import functools
import io
import math

from .. import names
from ...store.memory import format_bytes
from ...score.saliency import METHODS
from .data import PALETTE, TWIN_MARKERS, _any_finite, _finite, _floats, _fmt, budget_marks, same_curve_note

_RC = {  # one look for every figure
    "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8, "lines.linewidth": 1.8,
    "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "shrinknet", "svg.fonttype": "none",
    **names.FIGURE_RC,  # run names and titles are text, never mathtext: "4k_vs_$5$" draws as written
}


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
        for b, files in sorted(by_size.items()):
            who = f" ({run['label']})" if len(runs) > 1 else ""
            ax.axvline(b, color=run["color"], linestyle=":", linewidth=1.2,
                       label=f"{', '.join(files)}: {format_bytes(int(b))}{who}")
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
