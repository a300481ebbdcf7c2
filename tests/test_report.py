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
from shrinknet.ship import report, runs
from shrinknet.repair import train


@pytest.fixture(scope="module")
def mlp():
    """A small trained 6-9-7-2 sigmoid MLP and its data (train 200, val 50 for training, 50 for ranking)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add overhead, more so on a busy machine
    try:
        g = torch.Generator().manual_seed(0)
        X = torch.rand(300, 6, generator=g)
        y = (X[:, 0] + X[:, 1] > 1).long()
        m = train.mlp([6, 9, 7, 2], "sigmoid", "sigmoid")
        train.train(m, X[:200], y[:200], X[200:250], y[200:250], epochs=30)
        return m, X, y
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dirs(mlp, tmp_path_factory):
    """Two classification runs of one small sigmoid MLP (analysis.json only on the first) and a
    regression run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _make_runs(tmp_path_factory.mktemp("runs"), *mlp)
    finally:
        torch.set_num_threads(threads)


def _make_runs(root, m, X, y):
    g = torch.Generator().manual_seed(1)
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
    assert [c["label"] for c in data["curves"]] == ["iterative brute force, float32", "single taylor2, float32",
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
    assert "iterative brute force, float32 (test)" in labels and "single taylor2, float32 (test)" not in labels
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
    spec = importlib.util.find_spec("shrinknet.ship.report")
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
    assert labels == ["iterative brute force, float32 (a/run)", "iterative brute force, float32 (b/run)",
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
    assert report._labels(plain) == ["iterative brute force, float32 (#1)", "iterative brute force, float32 (#2)"]


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


# -- RAM, storage dtypes in every legend, runs drawing the same curve, frontier labels ---------------
def _legend_texts(fig) -> list[str]:
    return [t.get_text() for lg in fig.legends for t in lg.get_texts()]


def _cnn_run():
    """An untrained 1x6x6 conv 3 -> pool -> conv 4 -> pool -> Linear network pruned with a RAM budget."""
    from shrinknet.store import memory
    from shrinknet.model.parse import as_net

    g = torch.Generator().manual_seed(1)
    X, y = torch.rand(60, 1, 6, 6, generator=g), torch.randint(0, 2, (60,), generator=g)
    m = train.cnn((1, 6, 6), 2, channels=(3, 4))
    net = as_net(m)
    net.bind((1, 6, 6))
    least = memory.ram_bytes(net, [torch.ones(1, dtype=torch.bool)] * net.n_hidden)
    return shrinknet.prune(m, X, y, loss="cross_entropy", progress=False, budget_bytes=10**6,
                           ram_budget_bytes=least + 16, full_curve=True)


RAM_CASES = [  # id, how the run is made, its RAM budget
    ("mlp-no-ram-budget", "mlp", None),
    ("mlp-ram-budget", "mlp", 28),  # binds: the 300 B budget alone keeps 9 neurons (36 B of RAM)
    ("cnn-ram-budget", "cnn", "least+16"),
]


@pytest.fixture(scope="module")
def ram_runs(mlp, tmp_path_factory):
    root = tmp_path_factory.mktemp("ram")
    m, X, y = mlp
    out = {}
    for case, kind, ram in RAM_CASES:
        if kind == "mlp":
            result = shrinknet.prune(m, X[250:], y[250:], progress=False, budget_bytes=300, ram_budget_bytes=ram,
                                     full_curve=True)
        else:
            result = _cnn_run()
        out[case] = runs.save_run(root / case, result)
    return out


@pytest.mark.parametrize("case", [c[0] for c in RAM_CASES])
def test_ram_figure_plots_the_steps_ram_and_the_budgets_the_run_had(ram_runs, case):
    run = runs.load_run(ram_runs[case])
    result, steps = run["result"], steps_of(ram_runs[case])
    (ram,) = report.figure_data([run])["ram"]
    assert ram["ram_bytes"] == [s["ram_bytes"] for s in steps] and ram["bytes"] == [s["bytes"] for s in steps]
    assert ram["values"] == [s["accuracy"] for s in steps]
    if case.startswith("mlp"):  # an MLP's RAM: the two widest consecutive hidden layers, float32
        assert ram["ram_bytes"] == [4 * max(a + b for a, b in zip(s["kept"], s["kept"][1:])) for s in steps]
    fig = report._ram_figure([ram])
    left, right = fig.axes[:2]
    (line,) = [ln for ln in left.lines if ln.get_label() == ram["label"]]
    np.testing.assert_array_equal(line.get_xydata(), np.column_stack([ram["bytes"], ram["ram_bytes"]]))
    np.testing.assert_array_equal(right.lines[0].get_xydata(), np.column_stack([ram["ram_bytes"], ram["values"]]))
    budget = result.config.get("ram_budget_bytes")
    horizontal = [ln for ln in left.lines if list(ln.get_ydata()) == [budget] * 2]
    vertical = [ln for ln in right.lines if list(ln.get_xdata()) == [budget] * 2]
    legend = _legend_texts(fig)
    if budget is None:
        assert "ram_budget_bytes" not in result.config
        assert not any(t.startswith("RAM budget") for t in legend) and "fits both budgets" not in legend
        assert len(left.collections) == 0  # no box that fits both
    else:
        assert len(horizontal) == len(vertical) == 1
        assert f"RAM budget {shrinknet.store.memory.format_bytes(budget)}" in legend and "fits both budgets" in legend
    assert "flash budget " + shrinknet.store.memory.format_bytes(result.config["budget_bytes"]) in legend
    k, _ = result.pick(result.config["budget_bytes"], None, budget)
    (star,) = [ln for ln in left.lines if ln.get_marker() == "*"]
    np.testing.assert_array_equal(star.get_xydata(), [[result.steps[k].bytes, result.steps[k].ram_bytes]])


def test_kept_network_table_honours_the_ram_budget(ram_runs, tmp_path):
    run = runs.load_run(ram_runs["mlp-ram-budget"])
    result = run["result"]
    k, _ = result.pick(300, None, 28)
    assert k != result.fit(300)[0]  # the RAM budget moves the kept step here
    page = report.write_report([ram_runs["mlp-ram-budget"]], tmp_path / "r", formats=("png",)).read_text("utf-8")
    s = result.steps[k]
    assert (f"<td>300 B</td><td>—</td><td>28 B</td><td>budget</td><td>{k}</td><td>{s.n_removed}</td>"
            f"<td>{s.bytes} B</td><td>{s.ram_bytes} B</td>") in page
    assert "RAM here is the peak activation memory of a batch-1 forward pass" in page
    assert page.index('alt="size"') < page.index('alt="ram"') < page.index('alt="layers"')


def test_runs_without_ram_skip_the_ram_figure(ram_runs, tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    doc = json.loads((ram_runs["mlp-no-ram-budget"] / "run.json").read_text())
    for step in doc["steps"]:
        del step["ram_bytes"]  # a run written before RAM was recorded
    (d / "run.json").write_text(json.dumps(doc))
    assert report.figure_data([runs.load_run(d)])["ram"] == []
    page = report.write_report([d], tmp_path / "r", formats=("png",)).read_text("utf-8")
    assert "Figure “ram” skipped: no run records RAM" in page and not (tmp_path / "r" / "ram.png").exists()


@pytest.fixture(scope="module")
def dtype_runs(mlp, tmp_path_factory):
    """One model pruned to one budget at float32 (refit final), int8 (refit final) and int8 (switch-off),
    with the frontier points experiments.frontier_points records."""
    from shrinknet.data import datasets
    from shrinknet.workflows import experiments

    root = tmp_path_factory.mktemp("dtypes")
    m, X, y = mlp
    Xn, yn = X.numpy(), y.numpy()
    ds = datasets.Dataset("toy", "classification", Xn[:200], yn[:200], Xn[250:], yn[250:], Xn[200:250], yn[200:250],
                          n_classes=2)
    dirs = {}
    for name, dtype, refit in (("f32", "float32", "final"), ("int8", "int8", "final"), ("int8-plain", "int8", None)):
        result = shrinknet.prune(m, Xn[250:], yn[250:], progress=False, budget_bytes=200, dtype=dtype, refit=refit,
                                 X_calib=Xn[:200], X_test=Xn[200:250], T_test=yn[200:250], full_curve=True)
        k = result.fit(200)[0]
        *_, points = experiments.frontier_points(m, {}, ds, "mse", result, k, result.network(k))
        dirs[name] = runs.save_run(root / name, result, extras={"frontier": points})
    return dirs


@pytest.mark.parametrize("figure", ["curves", "size", "ram", "frontier"])
def test_legend_labels_carry_the_storage_dtype(dtype_runs, figure):
    data = report.figure_data([runs.load_run(d) for d in dtype_runs.values()])
    assert [c["label"] for c in data["curves"]] == ["iterative brute force, float32",
                                                    "iterative brute force, int8 (int8)",
                                                    "iterative brute force, int8 (int8-plain)"]
    entries = data[figure]["runs"] if figure == "size" else data[figure]
    fig = report._DRAW[figure](data[figure])
    texts = _legend_texts(fig)
    for e in entries:
        assert any(t.startswith(e["label"]) for t in texts), (e["label"], texts)
    assert any(", float32" in t for t in texts) and any(", int8" in t for t in texts)


@pytest.mark.parametrize("name,dtype,label", [
    ("iterative brute_force", "int8", "iterative brute_force, int8"),
    ("int8 refit", "int8", "int8 refit"),  # the name says it already
    ("int8x", "int8", "int8x, int8"),  # ... but only as a whole word
    ("float16 test", "float32", "float16 test, float32"),  # another dtype in the name: the real one is added
])
def test_dtype_is_added_to_a_run_name_unless_it_says_it(name, dtype, label):
    assert report._with_dtype(name, dtype) == label


@pytest.mark.parametrize("run,kind,text", [
    ("int8", "run", "kept: refit final, int8"),
    ("int8", "plain", "same neurons: switch-off, float32"),
    ("int8-plain", "run", "kept: switch-off, int8"),
    ("int8-plain", "plain", "same neurons: switch-off, float32"),
    ("f32", "run", "kept: refit final, float32"),
])
def test_frontier_labels_come_from_each_points_dtype_and_refit(dtype_runs, run, kind, text):
    loaded = runs.load_run(dtype_runs[run])
    (frontier,) = report.figure_data([loaded])["frontier"]
    (point,) = [p for p in frontier["points"] if p["kind"] == kind]
    assert point["text"] == text
    assert text in _legend_texts(report._frontier_figure([frontier]))
    # a point saved before dtype and refit were recorded, under a stale name: named from the run's settings
    (raw,) = [p for p in loaded["extras"]["frontier"] if p["kind"] == kind]
    old = {k: v for k, v in raw.items() if k not in ("dtype", "refit")}
    assert report.point_text({**old, "name": "switch-off, float32"}, loaded["result"].config) == text


@pytest.mark.parametrize("series,groups", [
    ([[1, 2, 3], [1, 2, 3]], [[0, 2], [1, 2]]),  # identical
    ([[1, 2, 3], [1, 2]], [[0, 2], [1, 2]]),  # a run that stopped earlier lies under the other
    ([[1, 2], [1, 2, 3], [1, 5]], [[0, 2], [1, 2], [0, 1]]),
    ([[1, 2, 3], [1, 2, 4]], [[0, 1], [0, 1]]),  # apart at the last step: both show
    ([[1, None], [1, float("nan")]], [[0, 2], [1, 2]]),  # missing values are equal
])
def test_runs_drawing_the_same_curve_are_grouped(series, groups):
    entries = [{"label": f"r{i}", "y": y} for i, y in enumerate(series)]
    report.mark_same_curves(entries, ["y"])
    assert [e["same"] for e in entries] == groups
    assert [e["same_as"] is None for e in entries] == [g[0] == 0 for g in groups]


@pytest.mark.parametrize("figure", ["curves", "size", "ram"])
def test_identical_runs_stay_visible_with_distinct_markers_and_a_note(run_dirs, figure):
    a, b = runs.load_run(run_dirs[0]), {**runs.load_run(run_dirs[0]), "dir": None, "name": "copy"}
    data = report.figure_data([a, b])
    entries = data[figure]["runs"] if figure == "size" else data[figure]
    assert [e["same"] for e in entries] == [[0, 2], [1, 2]] and entries[1]["same_as"] == entries[0]["label"]
    fig = report._DRAW[figure](data[figure])
    ax = fig.axes[0]
    lines = [next(ln for ln in ax.lines if ln.get_label() == e["label"]) for e in entries]
    np.testing.assert_array_equal(lines[0].get_xydata(), lines[1].get_xydata())  # the same curve...
    assert lines[0].get_marker() != lines[1].get_marker()  # ... told apart by markers
    assert lines[0].get_markevery() != lines[1].get_markevery()  # ... that alternate along it
    assert lines[0].get_linewidth() > lines[1].get_linewidth()  # ... and the one below shows at the edges
    title = fig.legends[0].get_title().get_text()
    assert "same curve" in title and entries[0]["label"] in title and entries[1]["label"] in title
    # apart runs: no markers, no note
    solo = report.figure_data([a])
    fig = report._DRAW[figure](solo[figure])
    assert fig.axes[0].lines[0].get_marker() in ("None", None, "") and fig.legends[0].get_title().get_text() == ""


def test_budgets_and_exports_are_named_in_the_legend_not_on_the_axes(twin_runs):
    dirs, result = twin_runs
    loaded = [runs.load_run(d) for d in dirs]
    loaded[1]["result"].config["budget_bytes"] = 300  # a second budget, close to the export size
    data = report.figure_data(loaded)
    fig = report._size_figure(data["size"])
    ax = fig.axes[0]
    assert len(ax.texts) == 0  # no label drawn over the plot, so none can hide another
    texts = _legend_texts(fig)
    assert "flash budget 300 B" in texts and "flash budget 400 B" in texts
    assert "model.c, model.onnx: 190 B (iterative brute force, float32 (a/run))" in texts
    marks = report.budget_marks(data["size"]["runs"], "budget_bytes", "flash budget")
    assert [(b, t, [e["label"] for e in owners]) for b, t, owners in marks] == [
        (300, "flash budget 300 B", [data["size"]["runs"][1]["label"]]),
        (400, "flash budget 400 B", [data["size"]["runs"][0]["label"]])]  # t2 has no budget: no line
    for b, _, owners in marks:  # each budget drawn in the colours of the runs that had it
        drawn = [ln for ln in ax.lines if list(ln.get_xdata()) == [b, b]]
        assert [ln.get_color() for ln in drawn] == [e["color"] for e in owners]


def test_names_that_read_alike_are_told_apart_by_directory(run_dirs):
    a, b = runs.load_run(run_dirs[0]), runs.load_run(run_dirs[1])
    a["name"], b["name"] = "iterative brute force", "Iterative brute_force"  # as demo and prune name them
    assert report._labels([a, b]) == ["iterative brute force, float32 (bf)", "Iterative brute_force, float32 (t2)"]


def test_frontier_variants_of_one_size_are_drawn_side_by_side_at_their_exact_values(run_dirs):
    (frontier,) = report.figure_data([runs.load_run(run_dirs[0])])["frontier"]
    points = frontier["points"]  # the run's own, fine-tuned and 3 from scratch, all of one size
    assert len({p["bytes"] for p in points}) == 1
    fig = report._frontier_figure([frontier])
    ax = fig.axes[0]
    assert len(ax.collections) == len(points)
    for col, p in zip(ax.collections, points):
        np.testing.assert_array_equal(col.get_offsets(), [[p["bytes"], p["value"]]])  # the data stay exact
    fig.canvas.draw()
    x = {p["kind"]: col.get_offset_transform().transform(col.get_offsets())[0][0]
         for col, p in zip(ax.collections, points)}
    centre = ax.transData.transform([[points[0]["bytes"], points[0]["value"]]])[0][0]
    step = 8 * fig.dpi / 72  # 8 points apart, in pixels
    assert [x["run"] - centre, x["finetuned"] - centre, x["scratch"] - centre] == pytest.approx([-step, 0, step])


@pytest.mark.parametrize("cases,shared", [
    (["mlp-no-ram-budget", "mlp-ram-budget"], True),  # the same widths: one scale to compare them on
    (["mlp-no-ram-budget", "cnn-ram-budget"], False),  # 9+7 neurons beside 3+4 channels: each its own
])
def test_layers_panels_share_a_scale_only_for_runs_of_the_same_widths(ram_runs, cases, shared):
    data = report.figure_data([runs.load_run(ram_runs[c]) for c in cases])
    fig = report._layers_figure(data["layers"])
    a, b = fig.axes[:2]
    assert a.get_shared_y_axes().joined(a, b) is shared
    assert a.get_ylim()[0] == b.get_ylim()[0] == 0


@pytest.mark.parametrize("algorithm, method, stored, label", [
    ("iterative", "brute_force", None, "iterative brute force"),
    ("iterative", "brute_force", "iterative brute_force", "iterative brute force"),  # runs saved before run_label
    ("iterative", "brute_force", "iterative brute force", "iterative brute force"),  # the demo's
    ("iterative_pairs", "taylor2", None, "iterative pairs taylor2"),
    ("single", "taylor2", "my_run", "my_run"),  # a name of the user's own stays as given
], ids=["none", "old prune name", "demo name", "pairs", "own name"])
def test_one_label_for_every_run(run_dirs, algorithm, method, stored, label):
    assert runs.run_label(algorithm, method) == label or stored == "my_run"
    r = runs.load_run(run_dirs[0])
    r["result"].config.update(algorithm=algorithm, method=method)
    r["name"] = stored
    assert report._labels([r]) == [f"{label}, float32"]


def test_a_run_given_twice_is_refused(run_dirs, tmp_path):
    from click.testing import CliRunner
    from shrinknet.cli import cli

    twice = [str(run_dirs[0]), str(run_dirs[0].parent / ".." / run_dirs[0].parent.name / run_dirs[0].name)]
    r = CliRunner().invoke(cli, ["report", *twice, "--out", str(tmp_path / "rep")])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is given twice" in lines[0] and "give each run once" in lines[0], r.stderr
    assert not (tmp_path / "rep").exists()
