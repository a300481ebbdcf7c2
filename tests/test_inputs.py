"""Bad input everywhere gets one line and exit 2; no silent wrong answers.

One table of bad inputs, each run through the real command line (CliRunner for most, a real
subprocess for a few), each asserting: exit status, exactly one line on stderr naming the problem,
no traceback, and the directory listing unchanged (no output written, no input modified).
Then the README's state_dict flow done as a user would, and the pure checks behind it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from shrinknet.data import datasets
from shrinknet.ship import modelio
from shrinknet.choose import sanity
from shrinknet.cli import DEFAULT_REFIT, cli
from shrinknet.workflows.experiments import train_on
from shrinknet.model.network import prepare
from shrinknet.model.parse import as_net
from shrinknet.model.losses import get as get_loss


# -- shared inputs --------------------------------------------------------------------------------
def _blobs(n=300, classes=3, d=4, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, classes, n)
    X = (g.normal(size=(n, d)) + np.eye(classes, d)[y] * 2.5).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A small trained shrinknet model (4-6-5-3 sigmoid, mse, classes 0..2), its data, its header."""
    root = tmp_path_factory.mktemp("assets")
    X, y = _blobs()
    np.savez(root / "blobs.npz", X=X, y=y)
    ds = datasets.load(str(root / "blobs.npz"))
    model, meta = train_on(ds, (6, 5), epochs=25)
    modelio.save_model(root / "m.safetensors", model, meta)
    with safe_open(str(root / "m.safetensors"), framework="pt") as f:
        doc = json.loads(f.metadata()["shrinknet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {"root": root, "X": X, "y": y, "doc": doc, "tensors": tensors, "model": model, "meta": meta}


def _forge(path: Path, doc, tensors: dict) -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"shrinknet": text})


def _changed(doc: dict, fn) -> dict:
    doc = json.loads(json.dumps(doc))
    fn(doc)
    return doc


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _sd(path: Path, *shapes, nan=False):
    """A plain state_dict of Linear layers with the given (out, in) shapes (bias (out,) each)."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, (o, i) in enumerate(shapes):
        sd[f"{2 * k}.weight"] = torch.randn(o, i, generator=g)
        sd[f"{2 * k}.bias"] = torch.randn(o, generator=g)
    if nan:
        sd["0.weight"][0, 0] = float("nan")
    torch.save(sd, path)
    return sd


# -- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    id: str
    argv: tuple  # relative paths: commands run in the case's own directory
    fragment: str  # the one stderr line must contain this
    setup: object = None  # setup(dir, assets) writes the case's input files
    subprocess: bool = False  # run as a real process (python -m shrinknet) instead of CliRunner
    code: int = 2
    also: tuple = field(default=())  # further fragments of the same line


def _put(name, fn):
    def setup(d: Path, a):
        fn(d / name, a)
    return setup


def _tensors_with(a, **changes):
    t = dict(a["tensors"])
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is None:
            t.pop(k)
        else:
            t[k] = v
    return t


def _npz(name, X=None, y=None):
    def write(p, a):
        np.savez(p, X=a["X"] if X is None else X, y=a["y"] if y is None else y)
    return _put(name, write)


def _csv(name, rows):
    return _put(name, lambda p, a: p.write_text("\n".join(rows) + "\n"))


def _nested_run(p, a):
    p.mkdir()
    (p / "run.json").write_text("[" * 100000 + "]" * 100000)


def _regression_sd(p, a):
    torch.manual_seed(3)
    torch.save(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid()).state_dict(), p)


G = np.random.default_rng(5)
REG_X = G.normal(size=(200, 2)).astype(np.float32)
REG_LARGE = (25 + 321 * G.random((200, 1))).astype(np.float32)  # targets 25..346
REG_UNIT = (0.5 + 0.4 * np.sin(REG_X[:, :1] * 2)).astype(np.float32)  # targets in (0.1, 0.9)
PRUNE = ("prune", "m.safetensors")
OUT = ("--out", "out")
SD_ACTS = ("--activation", "sigmoid", "--out-activation", "sigmoid")

BAD = [
    # -- model files: forged, broken or not model files at all
    Bad("integer tensors", ("info", "f.safetensors"), "holds int32 numbers",
        _put("f.safetensors", lambda p, a: _forge(p, a["doc"], _tensors_with(
            a, layers__0__weight=a["tensors"]["layers.0.weight"].to(torch.int32))))),
    Bad("metadata is a list", ("info", "f.safetensors"), "the description must be a JSON object",
        _put("f.safetensors", lambda p, a: _forge(p, "[1, 2]", a["tensors"]))),
    Bad("metadata is a string", ("info", "f.safetensors"), "the description must be a JSON object",
        _put("f.safetensors", lambda p, a: _forge(p, '"layers"', a["tensors"]))),
    Bad("meta is a list", ("info", "f.safetensors"), "meta must be a JSON object",
        _put("f.safetensors", lambda p, a: _forge(p, _changed(a["doc"], lambda d: d.update(meta=[])), a["tensors"]))),
    Bad("deeply nested header", ("info", "f.safetensors"), "nested too deeply",
        _put("f.safetensors", lambda p, a: _forge(p, "[" * 100000 + "]" * 100000, a["tensors"])), subprocess=True),
    Bad("zero-width layer", ("info", "f.safetensors"), "out must be a whole number in 1..",
        _put("f.safetensors", lambda p, a: _forge(
            p, _changed(a["doc"], lambda d: (d["layers"][0].update(out=0), d["layers"][1].update({"in": 0}))),
            _tensors_with(a, layers__0__weight=torch.zeros(0, 4), layers__0__bias=torch.zeros(0),
                          layers__1__weight=torch.zeros(5, 0))))),
    Bad("zero-width state_dict", ("info", "z.pt"), "every layer needs at least one neuron",
        _put("z.pt", lambda p, a: torch.save({"0.weight": torch.zeros(0, 4), "1.weight": torch.zeros(3, 0)}, p))),
    Bad("bias length mismatch", ("info", "b.pt"), "one entry per row",
        _put("b.pt", lambda p, a: torch.save({"0.weight": torch.zeros(5, 4), "0.bias": torch.zeros(4),
                                              "1.weight": torch.zeros(3, 5)}, p))),
    Bad("extra tensor", ("info", "f.safetensors"), "does not use (layers.9.weight)",
        _put("f.safetensors", lambda p, a: _forge(p, a["doc"], _tensors_with(a, layers__9__weight=torch.ones(2, 2))))),
    Bad("description shorter than the file", ("info", "f.safetensors"), "does not use (layers.2.bias, layers.2.weight)",
        _put("f.safetensors", lambda p, a: _forge(
            p, _changed(a["doc"], lambda d: d.update(layers=d["layers"][:2])), a["tensors"]))),
    Bad("bias false with a bias tensor", ("info", "f.safetensors"), "described without a bias",
        _put("f.safetensors", lambda p, a: _forge(
            p, _changed(a["doc"], lambda d: d["layers"][0].update(bias=False)), a["tensors"]))),
    Bad("NaN weight in a model file", ("info", "f.safetensors"), "1 NaN or infinite value(s)",
        _put("f.safetensors", lambda p, a: _forge(p, a["doc"], _tensors_with(
            a, layers__1__bias=torch.tensor([0.0, float("inf"), 0.0, 0.0, 0.0]))))),
    Bad("NaN weight in a state_dict", ("info", "n.pt"), "NaN or infinite",
        _put("n.pt", lambda p, a: _sd(p, (5, 4), (3, 5), nan=True))),
    Bad("BatchNorm tensors in a state_dict", ("info", "bn.pt"), "not Linear weights or biases",
        _put("bn.pt", lambda p, a: torch.save(nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
                                              .state_dict(), p))),
    Bad("state_dict missing a weight", ("info", "w.pt"), "has 2.bias but no 2.weight",
        _put("w.pt", lambda p, a: torch.save({k: v for k, v in nn.Sequential(
            nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).state_dict().items() if k != "2.weight"}, p))),
    Bad("CNN state_dict", ("info", "c.pt"), "holds convolution kernels (0.weight)",
        _put("c.pt", lambda p, a: torch.save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                                                           nn.Linear(8, 3)).state_dict(), p))),
    Bad("Keras .h5 as the model", ("info", "k.h5"), "is a Keras/HDF5 file, which shrinknet does not read",
        _put("k.h5", lambda p, a: p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600)))),
    Bad("CSV as the model", ("info", "d.csv"), ".pt/.pth/.bin, .onnx and .tflite files",
        _put("d.csv", lambda p, a: p.write_text("1,2,3\n"))),
    Bad("directory as the model", ("prune", "run", *OUT), "run is a directory",
        _put("run", lambda p, a: p.mkdir())),
    Bad("ONNX file to info", ("info", "m.onnx"), "m.onnx: the graph has 0 inputs",
        _put("m.onnx", lambda p, a: p.write_bytes(b"\x08\x08\x12\x09shrinknet")), subprocess=True),
    Bad("missing model", ("prune", "nope.safetensors", *OUT), "does not exist"),
    Bad("truncated model", ("info", "t.safetensors"), "not a readable",
        _put("t.safetensors", lambda p, a: p.write_bytes((a["root"] / "m.safetensors").read_bytes()[:300]))),
    Bad("random bytes", ("info", "r.safetensors"), "not a readable",
        _put("r.safetensors", lambda p, a: p.write_bytes(np.random.default_rng(1).bytes(4000)))),
    Bad("pickle as model", ("info", "model.pkl"), "not a readable",
        _put("model.pkl", lambda p, a: p.write_bytes(pickle.dumps({"weights": [1, 2, 3]})))),
    Bad("malicious pickle", ("prune", "evil.pt", *SD_ACTS, "--loss", "mse", "--data", "digits", *OUT), "refused",
        _put("evil.pt", lambda p, a: p.write_bytes(pickle.dumps(Evil()))), subprocess=True),
    Bad("nested run.json", ("report", "run", "--out", "rep"), "nested too deeply", _put("run", _nested_run)),
    # -- options and sizes
    Bad("budget 1e999", (*PRUNE, "--budget", "1e999", *OUT), "too large to be a size"),
    Bad("budget potatoes", (*PRUNE, "--budget", "12 potatoes", *OUT), "cannot read '12 potatoes'"),
    Bad("budget too small", (*PRUNE, "--budget", "40", *OUT), "smallest network"),
    Bad("unsupported dtype", (*PRUNE, "--dtype", "int4", *OUT), "Invalid value for '--dtype'",
        also=("try 'shrinknet prune --help'",)),
    Bad("unknown option", (*PRUNE, "--bogus", *OUT), "No such option", also=("try 'shrinknet prune --help'",)),
    Bad("missing argument", ("prune", *OUT), "Missing argument 'MODEL'"),
    Bad("bad hidden", ("train", "--data", "digits", "--hidden", "10,x", *OUT), "comma-separated list of widths"),
    Bad("train a network too big for memory", ("train", "--data", "blobs.npz", "--hidden", "100000000", *OUT),
        "needs at least", _npz("blobs.npz"), subprocess=True),
    Bad("export float64", (*PRUNE, "--dtype", "float64", "--export", "c", *OUT), "--export writes"),
    Bad("unknown experiment", ("reproduce", "9.9", *OUT), "unknown experiment"),
    # -- what a model is for: records, missing settings, contradictions
    Bad("state_dict without activations", ("prune", "sd.pt", "--data", "blobs.npz", *OUT),
        "does not record its activations, loss or data: give --activation sigmoid|tanh|relu|softplus, "
        "--out-activation sigmoid|tanh|relu|softplus|none, --loss mse|cross_entropy (the ones it was trained with)",
        lambda d, a: (_sd(d / "sd.pt", (6, 4), (3, 6)), _npz("blobs.npz")(d, a))),
    Bad("state_dict without loss", ("prune", "sd.pt", "--data", "blobs.npz", *SD_ACTS, *OUT),
        "does not record its activations, loss or data: give --loss mse|cross_entropy (the ones",
        lambda d, a: (_sd(d / "sd.pt", (6, 4), (3, 6)), _npz("blobs.npz")(d, a))),
    Bad("state_dict with nothing given: all asked at once", ("prune", "sd.pt", *OUT),
        "give --activation sigmoid|tanh|relu|softplus, --out-activation sigmoid|tanh|relu|softplus|none, "
        "--loss mse|cross_entropy, --data NAME_OR_PATH (or --val FILE) (the ones it was trained with)",
        lambda d, a: _sd(d / "sd.pt", (6, 4), (3, 6))),
    Bad("--loss contradicts the record", (*PRUNE, "--loss", "cross_entropy", *OUT),
        "--loss cross_entropy contradicts m.safetensors, which records loss mse"),
    Bad("--activation contradicts the record", ("rank", "m.safetensors", "--activation", "relu"),
        "--activation relu contradicts m.safetensors, which records sigmoid"),
    Bad("--out-activation contradicts the record", (*PRUNE, "--out-activation", "none", *OUT),
        "which records sigmoid"),
    Bad("--hidden contradicts the file", (*PRUNE, "--hidden", "6,6", *OUT), "has hidden widths 6,5"),
    Bad("cross_entropy with a sigmoid output", ("prune", "sd.pt", "--data", "blobs.npz", *SD_ACTS,
                                                "--loss", "cross_entropy", "--budget", "1KiB", *OUT),
        "cross_entropy reads the outputs as logits, but the output layer applies sigmoid",
        lambda d, a: (_sd(d / "sd.pt", (6, 4), (3, 6)), _npz("blobs.npz")(d, a)), also=("--force",)),
    Bad("train cross_entropy with a sigmoid output", ("train", "--data", "blobs.npz", "--loss", "cross_entropy",
                                                      "--out-activation", "sigmoid", *OUT),
        "--out-activation none", _npz("blobs.npz")),
    Bad("train regression targets outside sigmoid", ("train", "--data", "reg.npz", *OUT),
        "the targets span", _npz("reg.npz", REG_X, REG_LARGE), also=("only reaches [0, 1]",)),
    Bad("prune regression targets outside sigmoid", ("prune", "r.pt", "--data", "reg.npz", "--activation", "tanh",
                                                     "--out-activation", "sigmoid", "--loss", "mse", "--budget",
                                                     "1KiB", *OUT),
        "the targets span", lambda d, a: (_regression_sd(d / "r.pt", a), _npz("reg.npz", REG_X, REG_LARGE)(d, a))),
    Bad("one-output cross-entropy", ("train", "--data", "cosine", "--size", "50", "--loss", "cross_entropy", *OUT),
        "cross_entropy needs at least 2 outputs"),
    # -- data the model was not trained on
    Bad("width mismatch", (*PRUNE, "--data", "wide.npz", *OUT), "9 input features",
        _npz("wide.npz", np.zeros((50, 9), np.float32), np.arange(50) % 3)),
    Bad("labels the model was not trained on", (*PRUNE, "--data", "four.npz", *OUT),
        "class label(s) 3 that the model was not trained on (it knows 0, 1, 2)",
        _npz("four.npz", y=np.arange(300) % 4)),
    Bad("string labels", (*PRUNE, "--data", "names.npz", *OUT), "class labels are text (strings 'cat', 'cow', 'dog') but the model's classes are integers (0, 1, 2)",
        _npz("names.npz", y=np.array(["cat", "dog", "cow"])[np.arange(300) % 3])),
    Bad("non-integer labels", (*PRUNE, "--data", "half.npz", *OUT), "whole-number labels",
        _npz("half.npz", y=(np.arange(300) % 3) + 0.5)),
    Bad("labels beyond int64", (*PRUNE, "--data", "huge.csv", *OUT), "whole-number labels (below 2**53)",
        _csv("huge.csv", [f"{i % 7},{i % 5},{i % 3},{i % 2},{(i % 3 + 1) * 1e20:.0f}" for i in range(60)])),
    Bad("regression data for a classifier", (*PRUNE, "--data", "reg4.npz", *OUT), "whole-number labels",
        _npz("reg4.npz", np.zeros((200, 4), np.float32), REG_UNIT)),
    Bad("NaN in CSV", ("train", "--data", "nan.csv", *OUT), "line 8",
        _csv("nan.csv", ["a,b,c,d,label"] + [("1,nan,2,3,0" if i == 6 else f"{i},1,2,3,{i % 3}") for i in range(40)])),
    Bad("unknown data set", ("train", "--data", "imagenet-22k", *OUT), "unknown data set"),
    # -- the starting network is no good on the ranking data
    Bad("classifier at chance", (*PRUNE, "--data", "shuffled.npz", "--budget", "1KiB", *OUT),
        "the starting network is at chance on the ranking data", _npz("shuffled.npz", y=np.arange(300) % 3),
        also=("--force goes on anyway", "loss, the activations, the input scaling or the data")),
    Bad("regression no better than the mean", ("rank", "r.pt", "--data", "unit.npz", "--activation", "tanh",
                                               "--out-activation", "sigmoid", "--loss", "mse"),
        "predicts no better than the mean", lambda d, a: (_regression_sd(d / "r.pt", a),
                                                          _npz("unit.npz", REG_X, REG_UNIT)(d, a))),
]


def _listing(root: Path) -> list:
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _run(argv, cwd: Path, use_subprocess: bool, stdout: bool = False):
    """(exit status, stderr), or (exit status, stderr, stdout) with ``stdout``."""
    if use_subprocess:
        r = subprocess.run([sys.executable, "-m", "shrinknet", "--quiet", *argv], capture_output=True, text=True,
                           cwd=cwd, timeout=300, env={**os.environ, "SHRINKNET_DEBUG": ""})
        return (r.returncode, r.stderr, r.stdout) if stdout else (r.returncode, r.stderr)
    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(cli, ["--quiet", *argv], prog_name="shrinknet", catch_exceptions=False)
    finally:
        os.chdir(old)
    return (r.exit_code, r.stderr, r.stdout) if stdout else (r.exit_code, r.stderr)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_input_gets_one_line_and_exit_2(case, assets, tmp_path):
    (tmp_path / "m.safetensors").write_bytes((assets["root"] / "m.safetensors").read_bytes())
    if case.setup is not None:
        case.setup(tmp_path, assets)
    before = _listing(tmp_path)
    code, err, out = _run(case.argv, tmp_path, case.subprocess, stdout=True)
    lines = err.strip().splitlines()
    assert out == "", out  # no half output
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert code == case.code, err
    for fragment in (case.fragment, *case.also):
        assert fragment in lines[0], err
    assert lines[0].startswith("error: ")
    assert _listing(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_bad_input_ids_are_unique():
    assert len({c.id for c in BAD}) == len(BAD)


def test_a_bug_is_an_internal_error_not_bad_input(assets, tmp_path, monkeypatch):
    """Anything but input errors is shrinknet's fault: one line saying so, exit 1, traceback only on request."""
    import shrinknet.ship.modelio

    def broken(*args, **kwargs):
        raise KeyError("layers")

    monkeypatch.setattr(shrinknet.ship.modelio, "load_model", broken)
    code, err = _run(("info", str(assets["root"] / "m.safetensors")), tmp_path, False)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("internal error (KeyError: 'layers')") and "SHRINKNET_DEBUG=1" in err
    monkeypatch.setenv("SHRINKNET_DEBUG", "1")
    code, err = _run(("info", str(assets["root"] / "m.safetensors")), tmp_path, False)
    assert code == 1 and "Traceback" in err


# -- the README's state_dict flow, as a user does it -------------------------------------------
def _user_model(tmp: Path):
    """What a user brings: a ReLU MLP trained with cross-entropy in plain PyTorch on scikit-learn's
    bundled digits (pixels 0..16, as sklearn gives them), saved as a state_dict."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    X, y = bunch.data.astype(np.float32), bunch.target
    np.savez(tmp / "digits.npz", X=X, y=y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    torch.save(model.state_dict(), tmp / "m.pt")
    return model, X, y


def test_readme_state_dict_flow_prunes_right_or_stops(tmp_path):
    from shrinknet.workflows.experiments import prune_on

    model, X, y = _user_model(tmp_path)
    assert float((model(torch.as_tensor(X)).argmax(1).numpy() == y).mean()) > 0.95  # the user's model is good
    # the 0.1 README way: no activations, no loss -> asked for, with the choices
    code, err = _run(("prune", "m.pt", "--data", "digits.npz", "--budget", "4KiB", "--out", "p0"), tmp_path, False)
    assert code == 2 and "--activation sigmoid|tanh|relu|softplus" in err and not (tmp_path / "p0").exists()
    # exactly as the README says now, as a real process
    argv = ("prune", "m.pt", "--data", "digits.npz", "--activation", "relu", "--out-activation", "none",
            "--loss", "cross_entropy", "--budget", "4KiB", "--no-analyze", "--out", "p")
    code, err = _run(argv, tmp_path, True)
    assert code == 0, err
    small, meta = modelio.load_model(tmp_path / "p" / "model.safetensors")
    rec = modelio.record(small, meta)
    assert (rec.loss, rec.task, rec.class_values, rec.activation, rec.out_activation) == (
        "cross_entropy", "classification", tuple(range(10)), "relu", "identity")
    # the same run through the API on the same split, with the right settings
    ds = datasets.load(str(tmp_path / "digits.npz"))
    want = prune_on(model, ds, "cross_entropy", budget_bytes=4096, refit=DEFAULT_REFIT)  # prune's default refit
    k = want.fit(4096)[0]
    X_test = torch.as_tensor(ds.inputs("test"))
    torch.testing.assert_close(small(X_test), want.network(k)(X_test))
    assert meta["metrics"]["test_accuracy"] > 0.8
    # wrong settings: never a chance-level model with exit 0; 0.1's defaults (sigmoid, mse) stop here
    stopped = set()
    for acts in (("sigmoid", "sigmoid", "mse"), ("sigmoid", "none", "cross_entropy")):
        out = f"wrong-{'-'.join(acts)}"
        argv = ("prune", "m.pt", "--data", "digits.npz", "--activation", acts[0], "--out-activation", acts[1],
                "--loss", acts[2], "--budget", "4KiB", "--no-analyze", "--out", out)
        code, err = _run(argv, tmp_path, False)
        if code == 0:
            pruned, _ = modelio.load_model(tmp_path / out / "model.safetensors")
            q = sanity.start_quality(pruned, ds.inputs("val"), ds.targets("val", acts[2]), acts[2])
            assert not q.near_chance, (acts, q)
        else:
            assert code == 2 and "the starting network is at chance" in err and not (tmp_path / out).exists()
            stopped.add(acts)
    assert stopped == {("sigmoid", "sigmoid", "mse"), ("sigmoid", "none", "cross_entropy")}
    # --force goes on anyway
    code, err = _run(("prune", "m.pt", "--data", "digits.npz", *SD_ACTS, "--loss", "mse", "--budget", "1MiB",
                      "--max-fraction", "0.05",
                      "--no-analyze", "--force", "--out", "forced"), tmp_path, False)
    assert code == 0 and (tmp_path / "forced" / "model.safetensors").is_file(), err


# -- model records ------------------------------------------------------------------------------
def test_train_records_loss_task_and_classes(assets):
    rec = modelio.record(assets["model"], assets["meta"])
    assert (rec.loss, rec.task, rec.class_values, rec.activation, rec.out_activation) == (
        "mse", "classification", (0, 1, 2), "sigmoid", "sigmoid")


def test_a_version_1_file_still_loads_and_its_record_comes_from_its_data(assets, tmp_path):
    """0.1 files: version 1, loss in meta, task and classes only in meta["data"]."""
    doc = _changed(assets["doc"], lambda d: (d.update(version=1), d["meta"].pop("task"), d["meta"].pop("class_values")))
    _forge(tmp_path / "old.safetensors", doc, assets["tensors"])
    model, meta = modelio.load_model(tmp_path / "old.safetensors")
    assert modelio.record(model, meta) == modelio.record(assets["model"], assets["meta"])
    X = torch.as_tensor(assets["X"])
    torch.testing.assert_close(model(X), assets["model"](X))


def test_a_subset_of_the_classes_is_numbered_as_at_training():
    ds = datasets.load("digits", size=400)
    # keep classes 2, 5, 7 only, numbered 0..2 as np.unique would number them
    keep = {s: np.isin(getattr(ds, "y_" + s), [2, 5, 7]) for s in ("train", "val", "test")}
    small = datasets.Dataset("sub", "classification",
                             *[a for s in ("train", "val", "test") for a in (
                                 ds.inputs(s)[keep[s]],
                                 np.searchsorted([2, 5, 7], getattr(ds, "y_" + s)[keep[s]]))],
                             n_classes=3, class_values=(2, 5, 7))
    back = small.with_classes(ds.class_values)
    for s in ("train", "val", "test"):
        assert np.array_equal(back.targets(s, "cross_entropy"), getattr(ds, "y_" + s)[keep[s]])
    assert back.n_classes == 10 and back.targets("val", "mse").shape[1] == 10
    assert ds.with_classes(ds.class_values) is ds  # same classes: nothing to renumber
    with pytest.raises(datasets.DataError, match="not trained on"):
        small.with_classes((2, 5))
    assert small.with_classes(("2", "5", "7")) is small  # labels written as text in a CSV header match


def test_string_labels_are_class_names(tmp_path):
    X, y = _blobs(90)
    np.savez(tmp_path / "s.npz", X=X, y=np.array(["b", "a", "c"])[y])
    ds = datasets.load(str(tmp_path / "s.npz"))
    assert ds.class_values == ("a", "b", "c") and ds.task == "classification"


@pytest.mark.parametrize("T, fragment", [
    (np.array(["a", "b"] * 5), "holds strings"),
    (np.array([2**64 - 1] + [0] * 9, dtype=np.uint64), "beyond int64"),
    ([2**70] + [0] * 9, "Python objects"),
    (torch.zeros(10, dtype=torch.uint64), "int64"),
], ids=["strings", "uint64", "python-ints", "uint64-tensor"])
def test_prepare_refuses_labels_that_are_not_numbers(T, fragment):
    net = as_net(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match=fragment):
        prepare(net, np.zeros((10, 2), np.float32), T, get_loss("cross_entropy"))


def test_state_dict_widths_come_from_shapes_and_hidden_is_only_a_check(tmp_path):
    _sd(tmp_path / "m.pt", (7, 3), (5, 7), (2, 5))
    model = modelio.load_state_dict(tmp_path / "m.pt", activation="relu", out_activation="identity")
    assert as_net(model).hidden_sizes == (7, 5)
    assert modelio.load_state_dict(tmp_path / "m.pt", [7, 5], "relu").state_dict().keys() == model.state_dict().keys()
    with pytest.raises(modelio.ModelFileError, match="--hidden says 7,6"):
        modelio.load_state_dict(tmp_path / "m.pt", [7, 6])
    # a safetensors state_dict (no shrinknet description) is read the same way
    save_file(torch.load(tmp_path / "m.pt", weights_only=True), str(tmp_path / "m.safetensors"))
    assert modelio.kind(tmp_path / "m.safetensors") == "state_dict"
    X = torch.randn(4, 3)
    torch.testing.assert_close(modelio.load_state_dict(tmp_path / "m.safetensors", activation="relu")(X),
                               modelio.load_state_dict(tmp_path / "m.pt", activation="relu")(X))


# -- the start check: definitions against slow twins --------------------------------------------
@pytest.mark.parametrize("accuracy, chance, near", [
    (0.10, 0.10, True), (0.28, 0.10, True), (0.29, 0.10, False), (0.95, 0.10, False),
    (0.68, 0.68, True), (0.74, 0.68, True), (0.75, 0.68, False), (0.05, 0.10, True),
])
def test_near_chance_is_within_a_fifth_of_the_gap(accuracy, chance, near):
    q = sanity.StartQuality("classification", 1.0, accuracy=accuracy, chance=chance)
    assert q.near_chance is near


def test_start_quality_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    X = torch.randn(50, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (50,), generator=g)
    q = sanity.start_quality(model, X, y, "cross_entropy")
    with torch.no_grad():
        out = model(X)
    assert q.accuracy == pytest.approx(float((out.argmax(1) == y).double().mean()))
    assert q.chance == pytest.approx(max(int((y == c).sum()) for c in range(4)) / 50)
    assert q.error == pytest.approx(float(nn.functional.cross_entropy(out, y, reduction="sum")))
    # regression: R^2 = 1 - SSE / SSE(mean)
    reg = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    T = torch.randn(50, 2, generator=g, dtype=torch.float64)
    q = sanity.start_quality(reg, X, T, "mse")
    with torch.no_grad():
        sse = float(((reg(X) - T) ** 2).sum())
    assert q.r2 == pytest.approx(1 - sse / float(((T - T.mean(0)) ** 2).sum()))
    assert q.near_chance is (q.r2 <= sanity.MEAN_MARGIN)


@pytest.mark.parametrize("out, T, loss, fragment", [
    ("sigmoid", np.array([[25.0], [346.0]]), "mse", "span 25..346"),
    ("tanh", np.array([[-2.0], [0.0]]), "mse", "reaches [-1, 1]"),
    ("relu", np.array([[-0.5], [1.0]]), "mse", "reaches [0, inf]"),
    ("sigmoid", np.array([[0.0], [1.0]]), "mse", None),  # the limits are reachable
    ("none", np.array([[-1e6], [1e6]]), "mse", None),
    ("sigmoid", np.array([0, 1]), "cross_entropy", "logits"),
    ("none", np.array([0, 1]), "cross_entropy", None),
    ("sigmoid", np.eye(2), "mse", None),  # one-hot targets of a sigmoid classifier
])
def test_targets_and_loss_fit_the_output_activation(out, T, loss, fragment):
    problem = sanity.target_problem(out, T, loss, T.shape[1] if T.ndim == 2 else 2)
    assert (problem is None) if fragment is None else (fragment in problem), problem


def test_regression_targets_out_of_range_raise_before_any_work():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1), nn.Sigmoid())
    X = torch.randn(20, 2)
    with pytest.raises(sanity.StartCheckError, match="span"):
        sanity.check_start(model, X, 25 + 300 * torch.rand(20, 1), "mse")
    q = sanity.check_start(model, X, 25 + 300 * torch.rand(20, 1), "mse", force=True)
    assert q.r2 < 0 and math.isfinite(q.error)


def test_csv_class_names_are_read_as_classes(tmp_path):
    rows = ["a,b,animal"] + [f"{i % 7},{i % 5},{('cat', 'dog', 'cow')[i % 3]}" for i in range(60)]
    (tmp_path / "named.csv").write_text("\n".join(rows) + "\n")
    ds = datasets.load(str(tmp_path / "named.csv"))
    assert ds.task == "classification" and ds.class_values == ("cat", "cow", "dog") and ds.in_features == 2
    rows[5] = "1,oops,cat"  # a non-number among the features is still refused, naming the cell
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(datasets.DataError, match="line 6, column 2"):
        datasets.load(str(tmp_path / "bad.csv"))
