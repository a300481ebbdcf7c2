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

from .data import FIGURES, PALETTE, budget_marks, figure_data, mark_same_curves, point_text, same_curve_note
from .html import write_report

# the helpers tests/test_report.py reaches as report.<name>
from .data import _fmt, _labels, _with_dtype  # noqa: F401
from .draw import (  # noqa: F401
    _DRAW, _curves_figure, _frontier_figure, _layers_figure, _ram_figure, _size_figure,
)
from .html import _html  # noqa: F401

__all__ = ["FIGURES", "PALETTE", "budget_marks", "figure_data", "mark_same_curves", "point_text", "same_curve_note",
           "write_report"]
