"""MNIST-1D (the built-in 'mnist1d'): exactly the mnist1d package's own data, generated offline, the same in
every process, the global RNGs left as they were; end to end: train --arch cnn builds a Conv1d network, prune
cuts it to a budget, the exported C (compiled and run) and ONNX agree with torch, info describes the result."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shrinknet
from shrinknet.data import datasets as D
from shrinknet.repair import train as T
from shrinknet.cli import cli
from shrinknet.ship.modelio import load_model

from test_export import TOL, cc, compile_and_run, stream_driver  # noqa: F401  (cc is a fixture)

mnist1d = pytest.importorskip("mnist1d.data")

SRC = Path(shrinknet.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}

# What the package itself makes, run literally in a fresh process (its global seeding cannot leak into ours).
PACKAGE = """
import sys, numpy as np
from mnist1d.data import get_dataset_args, make_dataset
d = make_dataset(get_dataset_args())
np.savez(sys.argv[1], X=np.concatenate([d["x"], d["x_test"]]), y=np.concatenate([d["y"], d["y_test"]]))
"""

# shrinknet's loader in a fresh process whose sockets all refuse, from the first import on.
NO_NETWORK = """
import json, random, socket, sys
class Refused(socket.socket):
    def __init__(self, *args, **kwargs):
        raise OSError("mnist1d opened a socket")
socket.socket = Refused
import numpy as np, torch
random.seed(5); np.random.seed(5); torch.manual_seed(5)
before = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist())
from shrinknet.data import datasets
prints = [datasets.load("mnist1d", seed=seed, size=size).fingerprint() for seed, size in json.loads(sys.argv[1])]
after = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist())
print(json.dumps({"fingerprints": prints, "rng_kept": before == after, "mnist1d": "mnist1d" in sys.modules}))
"""
SEEDS_SIZES = [(0, None), (3, 500), (4, 500)]


def _python(script: str, *args) -> str:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=ENV, check=True, timeout=300).stdout


def _rows(X, y) -> np.ndarray:
    """(n, d + 1) rows [x, label] in lexicographic order: equal arrays mean equal multisets of instances."""
    A = np.column_stack([np.asarray(X, np.float64), y])
    return A[np.lexsort(A.T[::-1])]


def _global_rngs():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _assert_same_rngs(a, b):
    assert a[0] == b[0], "random's global state changed"
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:], "numpy's changed"
    assert torch.equal(a[2], b[2]), "torch's changed"


@pytest.fixture
def fresh():
    """Generate mnist1d anew in this test (the per-process cache emptied before and after)."""
    D._mnist1d.cache_clear()
    yield
    D._mnist1d.cache_clear()


def test_splits_hold_exactly_the_packages_own_instances(tmp_path):
    _python(PACKAGE, tmp_path / "package.npz")
    with np.load(tmp_path / "package.npz", allow_pickle=False) as f:
        X, y = f["X"], f["y"]
    ds = D.load("mnist1d", seed=1)
    ours = [(getattr(ds, "X_" + s), getattr(ds, "y_" + s)) for s in D.SPLITS]
    np.testing.assert_array_equal(_rows(np.concatenate([a for a, _ in ours]), np.concatenate([b for _, b in ours])),
                                  _rows(X.astype(np.float32), y))
    assert ds.class_values == tuple(range(10)) and "mnist1d package" in ds.source and "seed 42" in ds.source


def test_same_seed_same_data_in_another_process_without_network():
    child = json.loads(_python(NO_NETWORK, json.dumps(SEEDS_SIZES)))
    assert child["mnist1d"], "the child really imported the package with its sockets refused"
    assert child["rng_kept"]
    here = [D.load("mnist1d", seed=seed, size=size).fingerprint() for seed, size in SEEDS_SIZES]
    assert child["fingerprints"] == here and len(set(here)) == len(here), "same seed same data; others differ"


def test_generating_opens_no_socket(monkeypatch, fresh):
    class Refused(socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError("mnist1d opened a socket")

    monkeypatch.setattr(socket, "socket", Refused)
    with pytest.raises(OSError, match="opened a socket"):
        socket.create_connection(("127.0.0.1", 9))  # the patch does stop a connection
    assert D.load("mnist1d", size=300).sizes() == {"train": 180, "val": 60, "test": 60}


def test_global_rng_states_are_left_as_they_were(fresh):
    def seed_all():
        random.seed(11)
        np.random.seed(11)
        torch.manual_seed(11)

    def next_draws():
        return random.random(), float(np.random.rand()), torch.rand(1).item()

    seed_all()
    before = _global_rngs()
    D.load("mnist1d", seed=2, size=400)
    _assert_same_rngs(before, _global_rngs())
    after_load = next_draws()
    seed_all()
    assert after_load == next_draws(), "the next draws are those that would have come without the load"


def test_global_rng_states_are_restored_when_the_generator_fails(monkeypatch, fresh):
    def seeds_then_fails(args):
        mnist1d.set_seed(args.seed)  # as make_dataset starts
        np.random.rand(3)
        random.random()
        raise RuntimeError("generator failed")

    monkeypatch.setattr(mnist1d, "make_dataset", seeds_then_fails)
    before = _global_rngs()
    with pytest.raises(RuntimeError, match="generator failed"):
        D.load("mnist1d")
    _assert_same_rngs(before, _global_rngs())


def test_documented_shape_classes_and_stratified_splits():
    ds = D.load("mnist1d")
    assert (ds.in_features, ds.n_classes, ds.task) == (40, 10, "classification")
    for split, n in (("train", 300), ("val", 100), ("test", 100)):  # 500 per class, 60/20/20
        assert np.bincount(ds.targets(split, "cross_entropy"), minlength=10).tolist() == [n] * 10
    assert D.image_shape("mnist1d", 40) == D.image_shape("mnist1d-7vall", 40) == (1, 40)
    with pytest.raises(D.DataError, match="mnist1d has 60 features, not the 1x40 of --shape image"):
        D.image_shape("mnist1d", 60)  # e.g. a package version whose default length is not 40
    model = T.cnn(D.image_shape("mnist1d", 40), 10)  # the default CNN follows the input: 1-D
    assert {type(m) for m in model} >= {nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d}
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)) for m in model)


def test_cli_missing_package_names_the_extra(monkeypatch, fresh, tmp_path):
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # makes the import fail
    r = CliRunner().invoke(cli, ["train", "--data", "mnist1d", "--arch", "cnn", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        "error: mnist1d needs the mnist1d package: pip install 'shrinknet[data]'"], r.output
    assert not (tmp_path / "m").exists()


# -- end to end ---------------------------------------------------------------------------------
DRIVER = stream_driver("model.h", "shrinknet")


def _invoke(*args):
    r = CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_train_conv1d_prune_export_info_end_to_end(cc, tmp_path):  # noqa: F811
    ort = pytest.importorskip("onnxruntime")
    _invoke("train", "--data", "mnist1d", "--arch", "cnn", "--size", 600, "--channels", "4,8", "--epochs", 15,
            "--patience", 15, "--loss", "cross_entropy", "--out", tmp_path / "m")
    trained, meta = load_model(tmp_path / "m" / "model.safetensors")
    assert meta["input_shape"] == [1, 40] and meta["data"]["name"] == "mnist1d"
    assert [type(m) for m in trained if not isinstance(m, (nn.ReLU, nn.Flatten))] == [
        nn.Conv1d, nn.MaxPool1d, nn.Conv1d, nn.MaxPool1d, nn.Linear]  # BatchNorm1d folded away
    budget = 3000
    out = _invoke("prune", tmp_path / "m" / "model.safetensors", "--budget", budget, "--export", "onnx,c",
                  "--no-analyze", "--out", tmp_path / "p")
    assert "kept step" in out
    small, pmeta = load_model(tmp_path / "p" / "model.safetensors")
    flash = sum(p.numel() for p in small.parameters()) * 4
    assert flash <= budget < sum(p.numel() for p in trained.parameters()) * 4
    assert isinstance(small[0], nn.Conv1d) and pmeta["input_shape"] == [1, 40]

    X = D.load("mnist1d", size=600).X_test.reshape(-1, 1, 40)  # real signals of the held-out split
    with torch.no_grad():
        want = small(torch.from_numpy(X)).numpy()
    y = compile_and_run(cc, tmp_path / "p", DRIVER, ["model.c"], X.tobytes())
    assert np.abs(np.frombuffer(y, np.float32).reshape(want.shape) - want).max() <= TOL["float32"]
    sess = ort.InferenceSession(str(tmp_path / "p" / "model.onnx"), providers=["CPUExecutionProvider"])
    (y_onnx,) = sess.run(["output"], {"input": X})
    assert np.abs(y_onnx - want).max() <= TOL["float32"]
    assert f"#define SHRINKNET_FLASH_BYTES {flash}" in (tmp_path / "p" / "model.h").read_text()

    info = _invoke("info", tmp_path / "p" / "model.safetensors")
    kept = [m.out_channels for m in small if isinstance(m, nn.Conv1d)]
    assert "input 1x40" in info and f"hidden layers of {kept}" in info and "data: mnist1d" in info
