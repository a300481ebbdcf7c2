"""The report page: ``write_report`` draws the figures and writes them with ``report.html``, a
self-contained page (PNGs embedded) of the run tables, figures with captions and analysis tables.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .. import names
from .. import runs as runs_io
from ...errors import InputError
from ...util.files import staged_dir, write_bytes, write_text
from ...store.memory import format_bytes
from .data import FIGURES, FRACTIONS, _drop_text, _finite, _fmt, _kept, _labels, figure_data
from .draw import _DRAW, _check_formats, _render

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
    seen = {}
    for d in run_dirs:  # the same run twice would draw one curve over itself under two labels
        key = Path(d).resolve()
        if key in seen:
            raise InputError(f"run {d} is given twice ({seen[key]} is the same directory): give each run once")
        seen[key] = d
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
    from ...choose.speed import summary

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


def _frontier_table(runs: list[dict], labels: list[str]) -> str:
    """Every recorded variant with its bytes and test numbers, and the plain verdict on the baseline."""
    from ...repair.retrain import baseline_summary

    parts = []
    for r, label in zip(runs, labels):
        points = (r.get("extras") or {}).get("frontier")
        if not points:
            continue
        regression = any("test_r2" in p for p in points)  # regression metrics instead of an accuracy
        rows = [[p["name"], p["bytes"], *((p.get("test_rmse"), p.get("test_mae"), p.get("test_r2")) if regression
                                          else (p.get("test_accuracy"),)), p.get("test_error"),
                 p.get("before_test_accuracy") if p.get("kind") == "finetuned" else ""] for p in points]
        metrics = ["test RMSE", "test MAE", "test R^2"] if regression else ["test accuracy"]
        parts.append(f"<h3>{names.html_text(label)}</h3>"
                     + _table(["variant", "bytes", *metrics, "test error", "before fine-tuning"], rows))
        if line := baseline_summary(points):
            parts.append(f'<p class="note">{names.html_text(line)}</p>')
    return "\n".join(parts)


def _device_table(runs: list[dict], labels: list[str]) -> str:
    """What ``shrinknet device`` measured on the emulated cores, per run that has it (run.json extras)."""
    parts = []
    for r, label in zip(runs, labels):
        found = (r.get("extras") or {}).get("device") or []
        for dev in [found] if isinstance(found, dict) else found:  # one clock's figures (older runs) or a list
            parts.extend(_device_clock(dev, label))
    return "\n".join(["<h2>On the device</h2>", *parts]) if parts else ""


def _device_clock(dev: dict, label: str) -> list[str]:
    """One clock's table of ``shrinknet device`` figures and its note."""
    parts = []
    rows = [[name, cpu, rep["flash_bytes"], rep["ram_bytes"], rep["instructions_per_inference"],
             rep["instructions_per_mac"], 1e3 * rep["latency_s"],
             _device_check(rep), ", ".join(rep.get("softfloat", [])[:3])]
            for name, key in (("integer-only C", "integer_c"), ("float32 C", "float32_c"))
            for cpu, rep in dev.get(key, {}).items()]
    mhz = dev["clock_hz"] / 1e6
    parts.append(f"<h3>{names.html_text(f'{label}, clock {mhz:g} MHz')}</h3>" + _table(
        ["variant", "cpu", "flash B", "RAM B", "instructions / inference", "instructions / MAC",
         f"ms at {mhz:g} MHz", "check", "soft-float calls"], rows))
    tflm = dev.get("tflm") or {}
    notes = [dev.get("note", ""), f"activations calibrated on {dev.get('calibration', '?')}"]
    if tflm.get("arena_bytes") is not None:
        notes.append(f"TFLite Micro arena {tflm['arena_bytes']} B for the same int8 network")
    if dev.get("accuracy_integer") is not None:
        notes.append(f"accuracy float {dev['accuracy_float']:.4f}, integer-only {dev['accuracy_integer']:.4f}")
    parts.append(f'<p class="note">{names.html_text("; ".join(n for n in notes if n))}.</p>')
    return parts


def _device_check(rep: dict) -> str:
    """Integer C: equal to shrinknet's integer reference or not; float C: its largest difference from torch."""
    if "max_diff_vs_torch" in rep:
        return f"max |device - torch| {rep['max_diff_vs_torch']:.1e}"
    return {True: "equal to the integer reference", False: "DIFFERENT from the integer reference"}.get(
        rep.get("matches_reference"), "")


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
        "<h2>Gain curves</h2>", fig["gain"], _device_table(runs, labels),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{names.html_text(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
