"""Report: figure numbers equal run.json, plotted lines equal the steps, a self-contained HTML,
runs without analysis, and bad run directories refused before anything is written."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys

import numpy as np
import pytest
import torch

import shrinknet
from shrinknet import report, runs, train


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """Two classification runs of one small sigmoid MLP (analysis.json only on the first) and a
    regression run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add overhead, more so on a busy machine
    try:
        return _make_runs(tmp_path_factory.mktemp("runs"))
    finally:
        torch.set_num_threads(threads)


def _make_runs(root):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(300, 6, generator=g)
    y = (X[:, 0] + X[:, 1] > 1).long()
    m = train.mlp([6, 9, 7, 2], "sigmoid", "sigmoid")
    train.train(m, X[:200], y[:200], X[200:250], y[200:250], epochs=30)
    Xv, yv = X[250:], y[250:]
    bf = shrinknet.prune(m, Xv, yv, progress=False, budget_bytes=400, full_curve=True,
                         X_test=X[200:250], T_test=y[200:250])
    methods = ("taylor1", "taylor2", "magnitude")
    analysis = {
        "estimates": shrinknet.compare_estimates(m, Xv, yv, methods=methods),
        "along_run": shrinknet.estimates_along_run(bf, m, Xv, yv, methods=methods, fractions=[0.0, 0.5]),
        "gain": shrinknet.gain_curves(m, Xv, yv, [(0, 1), (1, 2)]),
        "pairs": shrinknet.correlated_pairs(m, Xv, yv, top=3),
    }
    t2 = shrinknet.prune(m, Xv, yv, method="taylor2", algorithm="single", progress=False)
    Xr = torch.rand(120, 1, generator=g)
    Tr = torch.cos(3 * Xr)
    mr = train.mlp([1, 5, 4, 1], "sigmoid")
    train.train(mr, Xr[:80], Tr[:80], Xr[80:100], Tr[80:100], epochs=20)
    reg = shrinknet.prune(mr, Xr[100:], Tr[100:], progress=False)
    return [
        runs.save_run(root / "bf", bf, analysis=analysis,
                      extras={"budget_bytes": 400, "export_bytes": 380, "frontier": _frontier(bf, 400)}),
        runs.save_run(root / "t2", t2),
        runs.save_run(root / "reg", reg, name="cos regression"),
    ]


def _frontier(result, budget):
    """Variant points as shrink_and_save records them (the run's own, fine-tuned, from scratch)."""
    k = result.fit(budget)[0]
    s = result.steps[k]
    own = {"name": "switch-off, float32", "kind": "run", "bytes": s.bytes, "test_accuracy": s.test_accuracy,
           "test_error": s.test_error}
    return [own, {**own, "name": "fine-tuned", "kind": "finetuned", "test_accuracy": 1.0,
                  "before_test_accuracy": s.test_accuracy},
            *[{**own, "name": f"from scratch, seed {i}", "kind": "scratch", "test_accuracy": 0.5 + i / 10}
              for i in range(3)]]


@pytest.fixture(scope="module")
def full_report(run_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "nested" / "out"  # created by write_report
    return report.write_report(run_dirs[:2], out, title="Two runs")


def steps_of(run_dir):
    return json.loads((run_dir / "run.json").read_text())["steps"]


def test_report_writes_every_figure_in_every_format(full_report):
    out = full_report.parent
    assert full_report == out / "report.html"
    for name in report.FIGURES:
        png, svg = (out / f"{name}.png").read_bytes(), (out / f"{name}.svg").read_text()
        assert png.startswith(b"\x89PNG") and len(png) > 1000
        assert "<svg" in svg and len(svg) > 1000
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporary file


def test_html_is_self_contained(full_report):
    text = full_report.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(report.FIGURES)
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    assert not re.search(r"https?://", text)
    assert "<script" not in text and "<link" not in text
    assert "<h1>Two runs</h1>" in text
    assert "skipped" not in text
    for heading in ("The kept network: memory budget and max drop", "Estimates against the truth",
                    "Most correlated neuron pairs", "Size/accuracy frontier", "pruning beat training from scratch"):
        assert heading in text


def test_figure_data_curves_are_the_run_json_numbers(run_dirs):
    loaded = [runs.load_run(d) for d in run_dirs]
    data = report.figure_data(loaded)
    for d, curve in zip(run_dirs, data["curves"]):
        steps = steps_of(d)
        assert curve["fractions"] == [s["fraction_removed"] for s in steps]
        assert curve["error"] == [s["error"] for s in steps]
        assert curve["accuracy"] == [s["accuracy"] for s in steps]
        assert curve["test_accuracy"] == [s["test_accuracy"] for s in steps]
    assert [c["label"] for c in data["curves"]] == ["iterative brute_force, float32", "single taylor2, float32",
                                                    "cos regression, float32"]  # every label says the dtype
    assert data["size"]["metric"] == "error"  # one regression run: no accuracy to compare
    size = data["size"]["runs"][0]
    assert size["budget_bytes"] == 400 and size["export_bytes"] == {"exported": 380}
    assert size["bytes"] == [s["bytes"] for s in steps_of(run_dirs[0])]
    assert len(data["estimates"]) == len(data["gain"]) == 1  # only the first run has analysis.json
    assert [layer["kept"] for layer in data["layers"]][0] == [list(k) for k in zip(*(s["kept"] for s in steps_of(run_dirs[0])))]


def test_estimates_keep_finite_pairs_only(run_dirs):
    run = runs.load_run(run_dirs[0])
    before = report.figure_data([run])["estimates"][0]["methods"]["taylor1"]
    assert len(before["x"]) == 9 + 7
    run["analysis"]["estimates"]["truth"][0][3] = None  # a removed neuron: +inf saved as null
    after = report.figure_data([run])["estimates"][0]["methods"]["taylor1"]
    assert len(after["x"]) == len(after["y"]) == len(after["layer"]) == 9 + 7 - 1
    assert after["x"] == before["x"][:3] + before["x"][4:]


def test_plotted_curves_are_the_steps(run_dirs):
    data = report.figure_data([runs.load_run(d) for d in run_dirs[:2]])
    fig = report._curves_figure(data["curves"])
    acc_ax, err_ax = fig.axes[:2]
    for d, curve in zip(run_dirs, data["curves"]):
        steps = steps_of(d)
        x = [s["fraction_removed"] for s in steps]
        for ax, key in ((acc_ax, "accuracy"), (err_ax, "error")):
            (line,) = [ln for ln in ax.lines if ln.get_label() == curve["label"]]
            np.testing.assert_array_equal(line.get_xydata(), np.column_stack([x, [s[key] for s in steps]]))
    labels = [ln.get_label() for ln in acc_ax.lines]
    assert "iterative brute_force, float32 (test)" in labels and "single taylor2, float32 (test)" not in labels
    assert acc_ax.lines[0].get_linestyle() == "-" and acc_ax.lines[-1].get_linestyle() == "--"


def test_regression_run_plots_error_only(run_dirs):
    data = report.figure_data([runs.load_run(run_dirs[2])])
    fig = report._curves_figure(data["curves"])
    assert len(fig.axes) == 1 and "error" in fig.axes[0].get_ylabel()
    size_fig = report._size_figure(data["size"])
    np.testing.assert_array_equal(size_fig.axes[0].lines[0].get_ydata(), data["curves"][0]["error"])


def test_run_without_analysis_reports_and_notes_skipped_figures(run_dirs, tmp_path):
    path = report.write_report([run_dirs[1]], tmp_path, formats=("png",))
    text = path.read_text(encoding="utf-8")
    for name in ("curves", "layers", "size", "ram"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    for name in ("estimates", "gain"):
        assert not (tmp_path / f"{name}.png").exists()
        assert f"Figure “{name}” skipped: no run directory has an analysis.json" in text
    assert text.count("data:image/png;base64,") == 4  # curves, size, ram, layers
    assert not list(tmp_path.glob("*.svg"))


def test_html_escapes_run_names_and_title(run_dirs, tmp_path):
    run = runs.load_run(run_dirs[1])
    run["name"] = "<b>x</b> & y"
    text = report._html("<i>title</i>", [run], {})
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt; &amp; y" in text
    assert "<i>title</i>" not in text and "&lt;i&gt;title&lt;/i&gt;" in text


@pytest.mark.parametrize("bad", ["missing", "corrupt", "foreign"])
def test_bad_run_dir_is_refused_before_writing(run_dirs, tmp_path, bad):
    d = tmp_path / "run"
    d.mkdir()
    if bad == "corrupt":
        (d / "run.json").write_text('{"shrinknet_run": 1, "steps": [')
    elif bad == "foreign":
        (d / "run.json").write_text('{"hello": "world"}')
    out = tmp_path / "out"
    message = {"missing": "is not a shrinknet run directory \\(no run.json\\)",
               "corrupt": "is not a valid shrinknet run", "foreign": "is not a valid shrinknet run"}[bad]
    with pytest.raises(ValueError, match=message):
        report.write_report([run_dirs[0], d], out)
    assert not (out / "report.html").exists()


def test_malformed_analysis_is_a_value_error(run_dirs, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "run.json").write_text((run_dirs[0] / "run.json").read_text())
    (d / "analysis.json").write_text('{"estimates": {"truth": 3}}')
    with pytest.raises(ValueError, match="unexpected layout"):
        report.write_report([d], tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists()


def test_no_run_dirs_and_bad_format_are_refused(run_dirs, tmp_path):
    with pytest.raises(ValueError, match="no run directories"):
        report.write_report([], tmp_path)
    with pytest.raises(ValueError, match="unsupported figure format"):
        report.write_report([run_dirs[1]], tmp_path, formats=("png", "docx"))
    assert not (tmp_path / "report.html").exists()


def test_missing_matplotlib_says_what_to_install(run_dirs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ImportError, match=re.escape("pip install 'shrinknet[report]'")):
        report.write_report([run_dirs[1]], tmp_path)


def test_report_module_and_figure_data_work_without_matplotlib(run_dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    spec = importlib.util.find_spec("shrinknet.report")
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)  # a module-level "import matplotlib" would raise here
    assert fresh.figure_data([runs.load_run(run_dirs[1])])["curves"][0]["label"] == "single taylor2, float32"


# -- runs sharing a method and algorithm, the kept step, exports, test accuracy, along the run --------
@pytest.fixture(scope="module")
def twin_runs(run_dirs, tmp_path_factory):
    """The first run saved twice under directories with the same last name, with a budget and a
    max drop, and exports listed; plus the single taylor2 run."""
    root = tmp_path_factory.mktemp("twins")
    loaded = runs.load_run(run_dirs[0])
    result, analysis = loaded["result"], loaded["analysis"]
    result.config["max_drop"] = 0.02
    exports = {"model.c": {"files": ["model.c", "model.h"], "format": "c", "dtype": "float16",
                           "flash_bytes": 190, "ram_bytes": 64},
               "model.onnx": {"files": ["model.onnx"], "format": "onnx", "dtype": "float16",
                              "flash_bytes": 190, "ram_bytes": None}}
    dirs = [runs.save_run(root / "a" / "run", result, analysis=analysis, extras={"exports": exports}),
            runs.save_run(root / "b" / "run", result, analysis=analysis),
            run_dirs[1]]
    return dirs, result


def test_runs_sharing_method_and_algorithm_get_distinct_colours_and_labels(twin_runs):
    dirs, _ = twin_runs
    data = report.figure_data([runs.load_run(d) for d in dirs])
    labels = [c["label"] for c in data["curves"]]
    assert labels == ["iterative brute_force, float32 (a/run)", "iterative brute_force, float32 (b/run)",
                      "single taylor2, float32"]
    styles = [(c["color"], c["linestyle"]) for c in data["curves"]]
    assert len(set(c for c, _ in styles)) == 3
    fig = report._curves_figure(data["curves"])
    drawn = {ln.get_label(): ln.get_color() for ln in fig.axes[0].lines}
    assert len({drawn[label] for label in labels}) == 3
    # without a shared pair, colour = method as in the paper's figures
    solo = report.figure_data([runs.load_run(d) for d in dirs[1:]])["curves"]
    assert [c["color"] for c in solo] == [report.PALETTE[shrinknet.METHODS.index(m)]
                                         for m in ("brute_force", "taylor2")]
    # no directories at all: still distinct
    plain = [{**runs.load_run(dirs[0]), "dir": None} for _ in range(2)]
    assert report._labels(plain) == ["iterative brute_force, float32 (#1)", "iterative brute_force, float32 (#2)"]


def test_the_kept_step_is_marked_on_the_curves_and_the_size_figure(twin_runs):
    dirs, result = twin_runs
    data = report.figure_data([runs.load_run(dirs[0])])
    k, by = result.pick(400, 0.02)
    ch = data["curves"][0]["chosen"]
    assert (ch["step"], ch["by"], ch["bytes"]) == (k, by, result.steps[k].bytes)
    assert data["curves"][0]["accuracy_floor"] == pytest.approx(result.steps[0].accuracy - 0.02)
    fig = report._curves_figure(data["curves"])
    for ax, key in zip(fig.axes[:2], ("accuracy", "error")):
        stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
        assert len(stars) == 1
        np.testing.assert_array_equal(stars[0].get_xydata(), [[result.steps[k].fraction_removed,
                                                               getattr(result.steps[k], key)]])
    floor = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == ":"]
    assert floor and floor[0].get_ydata()[0] == pytest.approx(result.steps[0].accuracy - 0.02)
    size = report._size_figure(data["size"])
    (star,) = [ln for ln in size.axes[0].lines if ln.get_marker() == "*"]
    np.testing.assert_array_equal(star.get_xydata(), [[result.steps[k].bytes, result.steps[k].accuracy]])


def test_html_lists_exports_and_test_accuracy_and_plots_along_the_run(twin_runs, tmp_path):
    dirs, result = twin_runs
    page = report.write_report(dirs, tmp_path / "r").read_text(encoding="utf-8")
    assert "<td>model.c, model.h</td><td>c</td><td>float16</td><td>190</td><td>64</td>" in page
    assert "<td>model.onnx</td><td>onnx</td><td>float16</td><td>190</td><td>—</td>" in page
    k, _ = result.pick(400, 0.02)
    s = result.steps[k]
    row = f"<td>{report._fmt(s.accuracy)}</td><td>{report._fmt(s.test_accuracy)}</td>"
    assert row in page and "<th>test accuracy</th>" in page
    assert (tmp_path / "r" / "along.png").is_file()
    assert "along the run</h3>" not in page  # a figure now, not a long table
    along = report.figure_data([runs.load_run(dirs[0])])["along"][0]
    rows = runs.load_run(dirs[0])["analysis"]["along_run"]
    assert along["fractions"] == [r["fraction"] for r in rows]
    assert along["spearman"]["taylor2"] == [r["overall"]["taylor2"]["spearman"] for r in rows]
