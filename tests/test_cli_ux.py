"""What users expect of the command: --max-drop, prune's required target, held-out --val/--test files,
train --standardize, --quiet after the subcommand, export into a new directory, --prefix, whole-command time."""

from __future__ import annotations

import json
import re
import tempfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import shrinknet
from shrinknet.ship import modelio, runs
from shrinknet.cli import cli
from shrinknet.choose.result import parse_drop

CLASSES = (2, 5, 9)  # labels that are not 0..C-1: held-out files must be mapped by value
SD_SETTINGS = ("--activation", "sigmoid", "--out-activation", "sigmoid", "--loss", "mse")  # a state_dict records none


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def blobs(n, seed, labels=CLASSES, scale=1.0, shift=0.0):
    g = np.random.default_rng(seed)
    c = g.integers(0, len(labels), n)
    # each label keeps its own cluster (the one it has in the training file), so that a file holding only some
    # of the classes is labelled as the model learnt them (else the start check rightly stops at chance)
    cluster = np.array([CLASSES.index(v) if v in CLASSES else i for i, v in enumerate(labels)])[c]
    X = (g.normal(size=(n, 4)) + np.eye(3, 4)[cluster % 3] * 2.5) * scale + shift
    return X.astype(np.float32), np.asarray(labels)[c]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ux")
    X, y = blobs(300, 0)
    np.savez(tmp / "train.npz", X=X, y=y)
    Xv, yv = blobs(90, 1, labels=(5, 9))  # only two of the three classes
    np.savez(tmp / "val.npz", X=Xv, y=yv)
    Xt, yt = blobs(70, 2)
    np.savez(tmp / "test.npz", X=Xt, y=yt)
    r = run("train", "--data", tmp / "train.npz", "--hidden", "7,5", "--epochs", "40", "--out", tmp / "m", "-q")
    assert r.exit_code == 0, r.output
    return tmp, tmp / "m" / "model.safetensors"


def accuracy_on(model, X, labels):
    """Accuracy with the file's labels mapped to the model's class indices by value (slow twin)."""
    idx = torch.as_tensor([CLASSES.index(int(v)) for v in labels])
    with torch.no_grad():
        return float((model(torch.as_tensor(X)).argmax(1) == idx).double().mean())


def one_line_error(r, fragment):
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


def test_prune_needs_a_budget_or_a_max_drop(setup, tmp_path):
    _, model = setup
    r = run("prune", model, "--out", tmp_path / "out", "-q")
    one_line_error(r, "prune needs --budget SIZE or --max-drop DROP")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [("--max-drop", "2%"), ("--max-drop", "0.05", "--budget", "250B"),
                                  ("--budget", "250B", "--max-drop", "0%")], ids=lambda a: " ".join(a))
def test_prune_keeps_the_step_pick_chooses(setup, tmp_path, args):
    _, model = setup
    r = run("prune", model, *args, "--no-analyze", "--out", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    got = runs.load_run(tmp_path / "out")
    result, extras = got["result"], got["extras"]
    budget = None if "--budget" not in args else 250
    drop = parse_drop(args[args.index("--max-drop") + 1])
    k, by = result.pick(budget, drop)
    assert (extras["chosen_step"], extras["chosen_by"], result.config["max_drop"]) == (k, by, drop)
    small, meta = modelio.load_model(tmp_path / "out" / "model.safetensors")
    assert shrinknet.network_bytes(small) == result.steps[k].bytes
    assert meta["pruned"]["chosen_by"] == by
    assert f"kept step {k} by the {by.replace('_', ' ')}" in r.output
    if budget is not None:
        assert result.steps[k].bytes <= budget


def test_whole_command_time_covers_more_than_pruning(setup, tmp_path):
    _, model = setup
    r = run("prune", model, "--max-drop", "1%", "--out", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    total = float(re.search(r"done in ([\d.]+)s", r.output)[1])
    assert total >= runs.load_run(tmp_path / "out")["extras"]["seconds"] - 0.05  # printed with one decimal


def test_val_and_test_files_are_used_whole_with_classes_mapped_by_value(setup, tmp_path):
    tmp, model = setup
    r = run("prune", model, "--budget", "250B", "--val", tmp / "val.npz", "--test", tmp / "test.npz",
            "--refit", "none", "--no-analyze", "--out", tmp_path / "out", "-q")  # networks rebuilt below as switch-off
    assert r.exit_code == 0, r.output
    got = runs.load_run(tmp_path / "out")
    result = got["result"]
    net, _ = modelio.load_model(model)
    Xv, yv = np.load(tmp / "val.npz")["X"], np.load(tmp / "val.npz")["y"]
    Xt, yt = np.load(tmp / "test.npz")["X"], np.load(tmp / "test.npz")["y"]
    assert result.config["n_val"] == 90 and result.config["n_test"] == 70
    assert result.steps[0].accuracy == pytest.approx(accuracy_on(net, Xv, yv), abs=1e-12)
    assert result.steps[0].test_accuracy == pytest.approx(accuracy_on(net, Xt, yt), abs=1e-12)
    k = got["extras"]["chosen_step"]
    assert result.steps[k].test_accuracy == pytest.approx(accuracy_on(_net_at(result, net, k), Xt, yt), abs=1e-12)
    assert got["extras"]["val_file"].endswith("val.npz") and got["extras"]["test_file"].endswith("test.npz")


@pytest.mark.parametrize("held, n_calib, n_test", [(("--val", "--test"), 300, 70), (("--val",), 240, 60)],
                         ids=["val-and-test", "val-only"])
def test_a_data_file_is_not_cut_for_the_splits_held_out_files_replace(setup, tmp_path, held, n_calib, n_test):
    """With --val and --test the --data file trains whole (the refit calibrates on all 300 rows); with
    --val alone only its 20% test split is cut off (0.3 cut 40% and used neither)."""
    tmp, model = setup
    files = [a for h in held for a in (h, tmp / f"{h[2:]}.npz")]
    r = run("prune", model, "--budget", "250B", "--data", tmp / "train.npz", *files, "--no-analyze",
            "--out", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    config = runs.load_run(tmp_path / "out")["result"].config
    assert (config["n_calib"], config["n_val"], config["n_test"]) == (n_calib, 90, n_test)


def test_a_refit_calibrated_on_the_validation_data_says_its_numbers_are_optimistic(setup, tmp_path):
    tmp, model = setup
    r = run("prune", tmp / "m" / "model.safetensors", "--budget", "250B", "--val", tmp / "val.npz",
            "--no-analyze", "--out", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    assert "note:" not in r.stderr  # the model's recorded training split calibrates
    sd = tmp_path / "sd.pt"  # records no data set: the --val file is all there is, and it calibrates
    torch.save(modelio.load_model(model)[0].state_dict(), sd)
    X, y = blobs(60, 5, labels=(0, 1, 2))
    np.savez(tmp_path / "v.npz", X=X, y=y)
    r = run("prune", sd, "--hidden", "7,5", *SD_SETTINGS, "--val", tmp_path / "v.npz", "--max-drop", "1%",
            "--no-analyze", "--out", tmp_path / "out2", "-q")
    assert r.exit_code == 0, r.output
    assert "validation numbers are optimistic" in r.stderr


def _net_at(result, net, k):
    return shrinknet.PruneResult.from_dict(result.to_dict(), net).network(k)


def test_rank_on_a_val_file_scores_that_file(setup, tmp_path):
    tmp, model = setup
    r = run("rank", model, "--val", tmp / "val.npz", "--methods", "brute_force", "--out", tmp_path / "rank", "-q")
    assert r.exit_code == 0, r.output
    net, _ = modelio.load_model(model)
    f = np.load(tmp / "val.npz")
    T = torch.as_tensor([CLASSES.index(int(v)) for v in f["y"]])
    bf = shrinknet.saliency(net, torch.as_tensor(f["X"]), T, "brute_force")
    rows = (tmp_path / "rank" / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == 12
    for line in rows:
        h, j, b = line.split(",")
        assert float(b) == pytest.approx(float(bf[int(h)][int(j)]), rel=1e-6, abs=1e-7)


def test_val_file_alone_with_a_plain_state_dict(setup, tmp_path):
    """No recorded data set: the --val file ranks, labels are class indices, no training split."""
    tmp, model = setup
    net, _ = modelio.load_model(model)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    X, y = blobs(60, 5, labels=(0, 1, 2))
    np.savez(tmp_path / "v.npz", X=X, y=y)
    r = run("prune", tmp_path / "sd.pt", "--hidden", "7,5", *SD_SETTINGS, "--val", tmp_path / "v.npz", "--max-drop", "1%",
            "--no-analyze", "--out", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    small, meta = modelio.load_model(tmp_path / "out" / "model.safetensors")
    assert set(meta["metrics"]) == {"val_error", "val_accuracy"}


@pytest.mark.parametrize("case", ["unknown label", "width", "builtin name", "test alone", "regression file"])
def test_bad_heldout_files_get_one_line(setup, tmp_path, case):
    tmp, model = setup
    g = np.random.default_rng(3)
    X, y = blobs(40, 3)
    files = {
        "unknown label": (X, np.where(y == 2, 7, y)),
        "width": (g.normal(size=(40, 6)).astype(np.float32), y),
        "regression file": (X, g.normal(size=40).astype(np.float32)),
    }
    if case in files:
        np.savez(tmp_path / "bad.npz", X=files[case][0], y=files[case][1])
    opt = {"unknown label": ("--val", tmp_path / "bad.npz"), "width": ("--test", tmp_path / "bad.npz"),
           "builtin name": ("--val", "digits"), "test alone": ("--test", tmp / "test.npz"),
           "regression file": ("--val", tmp_path / "bad.npz")}[case]
    if case == "test alone":  # a plain state_dict records no data set
        net, _ = modelio.load_model(model)
        torch.save(net.state_dict(), tmp_path / "sd.pt")
        model = tmp_path / "sd.pt"
    fragment = {"unknown label": "class label(s) 7 that the model was not trained on (its classes: 2, 5, 9)",
                "width": "6 features per instance but the model takes 4", "builtin name": "built-in data set name", "test alone": "--test alone",
                "regression file": "not whole-number class labels"}[case]
    r = run("prune", model, *(("--hidden", "7,5", *SD_SETTINGS) if case == "test alone" else ()), *opt, "--max-drop", "1%",
            "--out", tmp_path / "out", "-q")
    one_line_error(r, fragment)
    assert not (tmp_path / "out").exists()


def test_quiet_after_the_subcommand_equals_quiet_before(setup, tmp_path):
    tmp, model = setup
    after = run("prune", model, "--max-drop", "1%", "--no-analyze", "--out", tmp_path / "a", "--quiet")
    before = run("--quiet", "prune", model, "--max-drop", "1%", "--no-analyze", "--out", tmp_path / "b")
    loud = run("prune", model, "--max-drop", "1%", "--no-analyze", "--out", tmp_path / "c")
    strip = lambda s: re.sub(r"done in [\d.]+s|\S*/(a|b|c)\b", "", s)  # noqa: E731
    assert after.exit_code == before.exit_code == loud.exit_code == 0
    assert strip(after.stdout) == strip(before.stdout)
    assert "val error" in loud.stdout and "val error" not in after.stdout  # the step table is chatter
    short = run("train", "--data", tmp / "train.npz", "--hidden", "3", "--epochs", "2", "--out", tmp_path / "t", "-q",
                "--force")  # 2 epochs may end at chance, which train refuses without --force
    assert short.stdout.strip().splitlines() == [f"saved {tmp_path / 't' / 'model.safetensors'}"]


def test_export_creates_its_directory_and_names_the_users_file(setup, tmp_path, monkeypatch):
    _, model = setup
    out = tmp_path / "new" / "dir" / "m.c"
    r = run("export", model, "--format", "c", "--prefix", "blob", "--out", out)
    assert r.exit_code == 0, r.output
    assert "blob_forward" in (out.parent / "m.h").read_text()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "other" / ".m.onnx.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    bad = tmp_path / "other" / "sub" / "m.onnx"
    r = run("export", model, "--format", "onnx", "--out", bad)
    one_line_error(r, f"cannot write {bad}: Permission denied")
    assert ".tmp" not in r.stderr


def test_prune_prefix_names_the_c_code_and_a_bad_one_is_refused_before_work(setup, tmp_path):
    _, model = setup
    r = run("prune", model, "--max-drop", "1%", "--export", "c", "--prefix", "blob", "--no-analyze",
            "--out", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    header = (tmp_path / "out" / "model.h").read_text()
    assert "void blob_forward(" in header and "BLOB_FLASH_BYTES" in header
    r = run("prune", model, "--max-drop", "1%", "--export", "c", "--prefix", "9lives", "--out", tmp_path / "x", "-q")
    one_line_error(r, "not a C identifier")
    assert not (tmp_path / "x").exists()


def test_train_standardize_folds_the_scaling_and_hints_when_unscaled(tmp_path):
    X, y = blobs(300, 0, scale=80.0, shift=120.0)  # raw, pixel-like inputs
    np.savez(tmp_path / "raw.npz", X=X, y=y)
    r = run("train", "--data", tmp_path / "raw.npz", "--hidden", "7,5", "--epochs", "40", "--out", tmp_path / "raw")
    assert r.exit_code == 0 and "hint: inputs look unscaled" in r.stderr and "--standardize" in r.stderr
    r = run("train", "--data", tmp_path / "raw.npz", "--hidden", "7,5", "--epochs", "40", "--standardize",
            "--out", tmp_path / "std")
    assert r.exit_code == 0 and "hint" not in r.stderr
    model, meta = modelio.load_model(tmp_path / "std" / "model.safetensors")
    assert meta["scaling"]["standardized"] and len(meta["scaling"]["mean"]) == 4
    assert accuracy_on(model, X, y) > 0.8  # takes the raw inputs
    info = run("info", tmp_path / "std" / "model.safetensors")
    assert "inputs: trained standardized" in info.stdout and "take raw inputs" in info.stdout
    json.dumps(meta)  # the record is plain JSON


def test_regression_runs_report_rmse_mae_and_r2(tmp_path):
    """Regression gets regression metrics: the printed table (with the kept step, marked *), the saved
    model's metrics and the run's frontier points; checked against a literal computation."""
    g = np.random.default_rng(0)
    X = g.normal(size=(300, 5)).astype(np.float32)
    y = (X @ g.normal(size=(5, 2)) + 0.1 * g.normal(size=(300, 2))).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=y)
    r = run("train", "--data", tmp_path / "reg.npz", "--task", "regression", "--hidden", "12,8", "--activation", "tanh",
            "--out-activation", "none", "--epochs", "60", "--out", tmp_path / "m", "-q")
    assert r.exit_code == 0, r.output
    r = run("prune", tmp_path / "m" / "model.safetensors", "--max-drop", "5%", "--no-analyze", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if "val error" in line)
    assert header.split()[-8:] == ["val", "rmse", "val", "R^2", "test", "rmse", "test", "R^2"]
    got = runs.load_run(tmp_path / "p")
    k = got["extras"]["chosen_step"]
    assert re.search(rf"^\s+{got['result'].steps[k].n_removed}\*", r.output, re.M)  # the kept row is there
    small, meta = modelio.load_model(tmp_path / "p" / "model.safetensors")
    from shrinknet.data import datasets
    ds = datasets.reload(meta["data"])
    with torch.no_grad():
        out = small(torch.as_tensor(ds.inputs("test"))).double()
    t = torch.as_tensor(ds.targets("test")).double()
    sse = float(((out - t) ** 2).sum())
    assert meta["metrics"]["test_rmse"] == pytest.approx((sse / t.numel()) ** 0.5, rel=1e-6)
    assert meta["metrics"]["test_mae"] == pytest.approx(float((out - t).abs().mean()), rel=1e-6)
    assert meta["metrics"]["test_r2"] == pytest.approx(1 - sse / float(((t - t.mean(0)) ** 2).sum()), rel=1e-6)
    run_point = next(p for p in got["extras"]["frontier"] if p["kind"] == "run")
    assert run_point["test_r2"] == pytest.approx(meta["metrics"]["test_r2"], rel=1e-9)
