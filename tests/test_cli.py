"""The shrinknet command through its real entry point: the full flow on tiny data, and bad input."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import shrinknet
from shrinknet.data import datasets
from shrinknet.ship import modelio, runs
from shrinknet.cli import cli
from shrinknet.workflows.experiments import evaluate, prune_on

from helpers import train_blobs

SUBCOMMANDS = ["train", "rank", "prune", "report", "export", "info", "reproduce", "demo"]


def shrinknet_cmd(*args, cwd=None):
    """Run ``python -m shrinknet`` as a user would (the console script calls the same main)."""
    return subprocess.run([sys.executable, "-m", "shrinknet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def invoke(*args):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """train -> prune -> report on a tiny generated classification set saved as .npz."""
    tmp = tmp_path_factory.mktemp("flow")
    model = train_blobs(invoke, tmp, "model")
    r = invoke("prune", model, "--budget", "300B", "--full-curve", "--export", "onnx,c", "--out", tmp / "run")
    assert r.exit_code == 0, r.output
    return tmp, model


def test_help_of_every_subcommand():
    out = shrinknet_cmd("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in SUBCOMMANDS)
    for c in SUBCOMMANDS:
        r = CliRunner().invoke(cli, [c, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output and "--" in r.output, c


def test_train_saves_a_model_that_loads_back(flow):
    tmp, model = flow
    net, meta = modelio.load_model(model)
    assert [m.out_features for m in net if isinstance(m, torch.nn.Linear)] == [7, 5, 3]
    assert meta["loss"] == "mse" and meta["data"]["n_classes"] == 3
    assert meta["metrics"]["test_accuracy"] > 0.8


def test_prune_run_agrees_with_the_api(flow):
    tmp, model = flow
    got = runs.load_run(tmp / "run")
    net, meta = modelio.load_model(model)
    ds = datasets.reload(meta["data"])
    want = prune_on(net, ds, "mse", budget_bytes=300, full_curve=True, refit="final")  # the CLI default
    assert [s.removed for s in got["result"].steps] == [s.removed for s in want.steps]
    assert [s.error for s in got["result"].steps] == pytest.approx([s.error for s in want.steps], rel=1e-6)
    # the budget lands where the JSON says, and the saved network is that step's
    k = got["extras"]["chosen_step"]
    assert got["result"].steps[k].bytes <= 300
    assert k == want.fit(300)[0]
    small, _ = modelio.load_model(tmp / "run" / "model.safetensors")
    assert shrinknet.network_bytes(small) == got["result"].steps[k].bytes
    X = torch.as_tensor(ds.inputs("test"))
    torch.testing.assert_close(small(X), want.network(k)(X))
    csv_lines = (tmp / "run" / "steps.csv").read_text().splitlines()
    assert len(csv_lines) == len(got["result"].steps) + 1
    assert got["analysis"]["estimates"]["agreement"]["taylor2"]["overall"]["n"] == 12
    for name in ("model.onnx", "model.c", "model.h"):
        assert (tmp / "run" / name).stat().st_size > 0


def test_rank_writes_scores_equal_to_saliency(flow, tmp_path):
    tmp, model = flow
    r = invoke("rank", model, "--methods", "brute_force,taylor2", "--out", tmp_path / "rank")
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "rank" / "scores.csv").read_text().splitlines()
    assert lines[0] == "layer,neuron,brute_force,taylor2"
    net, meta = modelio.load_model(model)
    ds = datasets.reload(meta["data"])
    bf = shrinknet.saliency(net, ds.inputs("val"), ds.targets("val", "mse"), "brute_force")
    t2 = shrinknet.saliency(net, ds.inputs("val"), ds.targets("val", "mse"), "taylor2")
    assert len(lines) == 1 + 12
    for line in lines[1:]:
        h, j, b, t = line.split(",")
        assert float(b) == pytest.approx(float(bf[int(h)][int(j)]), rel=1e-6, abs=1e-7)
        assert float(t) == pytest.approx(float(t2[int(h)][int(j)]), rel=1e-6, abs=1e-7)


def test_report_and_export_from_the_run(flow, tmp_path):
    tmp, _ = flow
    r = invoke("report", tmp / "run", "--out", tmp_path / "report")
    assert r.exit_code == 0, r.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html
    r = invoke("export", tmp / "run" / "model.safetensors", "--format", "c", "--dtype", "float16", "--out", tmp_path / "m.c")
    assert r.exit_code == 0, r.output
    small, _ = modelio.load_model(tmp / "run" / "model.safetensors")
    flash = shrinknet.network_bytes(small, "float16")
    assert f"flash (weights) {flash} B" in r.output
    assert f"{flash}" in (tmp_path / "m.h").read_text()


def test_info_shows_layers_sizes_and_metrics(flow):
    tmp, model = flow
    r = invoke("info", tmp / "run" / "model.safetensors")
    assert r.exit_code == 0, r.output
    small, meta = modelio.load_model(tmp / "run" / "model.safetensors")
    assert f"{shrinknet.format_bytes(shrinknet.network_bytes(small, 'float16'))} at float16" in r.output
    assert "pruned:" in r.output
    # the metrics are the pruned network's own, not the original's
    assert f"test_accuracy {meta['metrics']['test_accuracy']:.4g}" in r.output
    assert meta["metrics"] == evaluate(small, datasets.reload(meta["data"]), "mse")


def test_plain_state_dict_ranks_like_its_model_file(flow, tmp_path):
    """A state_dict's widths come from its shapes; given the activations and loss the model file records,
    it ranks exactly as the model file does (the bad-input table in test_inputs.py covers the refusals)."""
    tmp, model = flow
    net, _ = modelio.load_model(model)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    r = invoke("rank", tmp_path / "sd.pt", "--data", tmp / "blobs.npz", "--activation", "sigmoid",
               "--out-activation", "sigmoid", "--loss", "mse", "--methods", "taylor1", "--out", tmp_path / "sd")
    assert r.exit_code == 0, r.output
    r = invoke("rank", model, "--data", tmp / "blobs.npz", "--methods", "taylor1", "--out", tmp_path / "file")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sd" / "scores.csv").read_text() == (tmp_path / "file" / "scores.csv").read_text()


def test_reproduce_quick_runs_the_experiments_and_compares_with_the_paper(tmp_path):
    r = invoke("reproduce", "4.3", "4.6", "--quick", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    md = (tmp_path / "results.md").read_text()
    for exp in ("4.3", "4.6-diamond", "4.6-random"):
        assert f"### {exp} " in md
        res = runs.load_run(tmp_path / exp / "iterative-brute_force")
        assert res["result"].steps[-1].kept == [1] * len(res["result"].layout["hidden"])
        assert (tmp_path / exp / "report" / "report.html").is_file()
    assert "(0.994)" in md and "(0.940)" in md  # the paper's numbers beside ours (4.6 diamond, 4.3 first order)
    # the table's numbers are the runs' own: 4.3 iterative brute force at 10% removed
    res = runs.load_run(tmp_path / "4.3" / "iterative-brute_force")["result"]
    row = next(line for line in md.splitlines() if line.startswith("| iterative brute force") and "(0.994)" in line)
    assert f"{res.at_fraction(0.1).test_accuracy:.3f} (0.994)" in row


@pytest.mark.parametrize("exp_id, legend", [("4.1a", "ours only: the paper gives no numbers"),
                                             ("4.3", "cells: ours (paper)")])
def test_reproduce_says_whose_numbers_a_table_holds(exp_id, legend):
    """A table without the paper's numbers does not claim to show them (its cells are ours only)."""
    from shrinknet.workflows import experiments as E

    exp = E.EXPERIMENTS[exp_id]
    table = {key: (0.5,) * len(E.FRACTIONS) for key in [("iterative", "brute_force")]}
    md = E.comparison_table({"experiment": exp, "table": table, "start": 0.9})
    assert legend in md and ("(0.994)" in md) == bool(exp.paper)


def test_data_defaults_to_the_models_own_split(tmp_path, monkeypatch):
    """rank/prune must rank on the split the model was trained with, whatever --data spelling."""
    from shrinknet.workflows.inputs import read_data as _load_data

    ds = datasets.load("digits", seed=3, size=600)
    meta = {"data": ds.meta()}
    for data, seed, size in [(None, None, None), ("digits", None, None), ("digits", 3, None), (None, None, 600)]:
        assert _load_data(data, meta, seed, size).fingerprint() == ds.fingerprint(), (data, seed, size)
    g = np.random.default_rng(0)
    rows = ["a,b,c"] + [f"{x:.3f},{y:.3f},{int(x + y > 1)}" for x, y in g.random((60, 2))]
    (tmp_path / "u.csv").write_text("\n".join(rows) + "\n")
    csv = datasets.load(str(tmp_path / "u.csv"), seed=5)
    monkeypatch.chdir(tmp_path)
    assert _load_data("u.csv", {"data": csv.meta()}, None, None).fingerprint() == csv.fingerprint()
    assert _load_data("digits", meta, 4, None).fingerprint() != ds.fingerprint()  # an explicit other split


def test_demo_writes_every_file_and_names_its_run(tmp_path):
    """The README's main command, at a reduced size: every promised file, the run named by what it did
    (not by a file it also saved), the kept network within the budget, pruned as prune does by default."""
    import json

    from shrinknet.store import memory
    from shrinknet.ship import modelio

    out = tmp_path / "demo"
    r = invoke("demo", "--size", "300", "--budget", "24KiB", "--out", out)
    assert r.exit_code == 0, r.output
    for f in ("model.safetensors", "model.onnx", "model.c", "model.h", "trained.safetensors",
              "run/run.json", "run/steps.csv", "report/report.html"):
        assert (out / f).is_file(), f
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["name"] == "iterative brute force"
    assert run["config"]["refit"] == "final"
    model, _ = modelio.load_model(out / "model.safetensors")
    assert memory.network_bytes(model, "float32") <= 24 * 1024


def test_prune_float16_saves_the_network_whose_numbers_it_recorded(flow, tmp_path):
    """The saved model holds float16 numbers (in float32), and its recorded metrics (``info``) are the
    run's own numbers of the kept step: both re-evaluated from the loaded file."""
    tmp, model = flow
    r = invoke("prune", model, "--budget", "200B", "--dtype", "float16", "--no-analyze", "--out", tmp_path / "p16")
    assert r.exit_code == 0, r.output
    got = runs.load_run(tmp_path / "p16")
    step = got["result"].steps[got["extras"]["chosen_step"]]
    small, meta = modelio.load_model(tmp_path / "p16" / "model.safetensors")
    assert all(torch.equal(p.half().float(), p) for p in small.parameters())
    recorded = {"val_error": step.error, "val_accuracy": step.accuracy, "test_error": step.test_error,
                "test_accuracy": step.test_accuracy}
    assert {k: meta["metrics"][k] for k in recorded} == pytest.approx(recorded, rel=1e-6)
    assert meta["metrics"] == evaluate(small, datasets.reload(meta["data"]), "mse")  # the file reproduces them
    r = invoke("info", tmp_path / "p16" / "model.safetensors")
    assert r.exit_code == 0, r.output
    assert f"test_accuracy {step.test_accuracy:.4g}" in r.output and f"val_error {step.error:.4g}" in r.output
