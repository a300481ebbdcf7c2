"""Hostile input files (issue #19, families 3-5), each through the real command line: exit 2, exactly one
stderr line ``error: ...``, no traceback, the directory listing unchanged; the size attacks also run in a
child process whose peak memory (``ru_maxrss`` of its own children, read by a wrapper) stays bounded.

- forged model descriptions: one schema (ship/schema.py) refuses them before anything is built;
- forged checkpoints: the checkpoint schema bounds them by the model, the replay recomputes the steps;
- memory exhaustion: the data readers read headers and shapes first and refuse what the file cannot
  hold, what a compressed member would expand beyond, or what exceeds ``SHRINKNET_MAX_DATA_BYTES``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import shrinknet
from shrinknet.cli import cli
from shrinknet.repair import train
from shrinknet.ship import modelio

MiB = 2**20
#: the peak of a refused size attack, in the child running shrinknet: Python, torch and numpy
#: imported (~300-450 MiB here) plus a bounded overhead; before these fixes the attacks reached 1.5-11.7 GB
PEAK_LIMIT = 900 * MiB

_WRAPPER = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(r.returncode)
"""


def listing(root: Path) -> list:
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def run_cli(argv, cwd: Path, child: bool = False):
    """(exit status, stderr, stdout, peak bytes of the child or None)."""
    argv = [str(a) for a in argv]
    if child:
        peak_file = cwd.parent / f"{cwd.name}.peak"
        r = subprocess.run([sys.executable, "-c", _WRAPPER, str(peak_file), sys.executable, "-m", "shrinknet",
                            "--quiet", *argv], capture_output=True, text=True, cwd=cwd, timeout=300,
                           env={**os.environ, "SHRINKNET_DEBUG": "", "PYTHONPATH": os.pathsep.join(sys.path)})
        peak = int(peak_file.read_text())
        peak_file.unlink()
        return r.returncode, r.stderr, r.stdout, peak
    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(cli, ["--quiet", *argv], prog_name="shrinknet", catch_exceptions=False)
    finally:
        os.chdir(old)
    return r.exit_code, r.stderr, r.stdout, None


def assert_refused(argv, cwd: Path, words: str, child: bool = False) -> int | None:
    """Exit 2, one line ``error: ...`` holding ``words``, no traceback, nothing written; the peak."""
    before = listing(cwd)
    code, err, out, peak = run_cli(argv, cwd, child)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert code == 2, err
    assert words in lines[0], err
    assert listing(cwd) == before
    if peak is not None:
        assert peak < PEAK_LIMIT, f"peak {peak / MiB:.0f} MiB"
    return peak


# == family 5: forged model descriptions ==========================================================
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """An MLP file and a CNN file (classes 0..3), as ``prune``/``train`` save them."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 4))
    meta = {"loss": "cross_entropy", "task": "classification", "class_values": [0, 1, 2, 3],
            "metrics": {"test_accuracy": 0.5}}
    modelio.save_model(root / "mlp.safetensors", mlp, meta)
    cnn = shrinknet.as_net(train.cnn((1, 8, 8), 4, (3, 4), activation="relu", seed=0).eval()).to_sequential()
    modelio.save_model(root / "cnn.safetensors", cnn, meta)
    return root


def forge(src: Path, dst: Path, edit) -> None:
    """``dst``: ``src`` with its description edited by ``edit(doc)``; a returned string replaces the JSON."""
    with safe_open(str(src), "pt") as f:
        doc = json.loads(f.metadata()["shrinknet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    text = edit(doc)
    save_file(tensors, str(dst), metadata={"shrinknet": text if isinstance(text, str) else json.dumps(doc)})


def _set(path: str, value):
    """An edit setting ``doc[a][b]...`` for the path "a.b..." (list indices as numbers)."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def edit(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


def _text(replace_from: str, replace_to: str):
    """An edit of the JSON text itself (for NaN, which json.dumps writes only as a float)."""
    return lambda doc: json.dumps(doc).replace(replace_from, replace_to)


DESCRIPTIONS = {  # id -> (model, edit, words of the one-line refusal)
    "cnn-tail-string": ("cnn", _set("blocks.0.tail", ["relu"]), "a tail op must be an object"),
    "cnn-tail-number": ("cnn", _set("blocks.0.tail", [3]), "a tail op must be an object"),
    "cnn-tail-unknown-op": ("cnn", _set("blocks.0.tail", [{"op": "softmax"}]), "a tail op must be an object"),
    "cnn-in-shape-float": ("cnn", _set("in_shape", [1, 8.5, 8]), "in_shape must be null or a list"),
    "cnn-in-shape-8.0": ("cnn", _set("in_shape", [1, 8.0, 8]), "in_shape must be null or a list"),
    "cnn-version-true": ("cnn", _set("version", True), "must be version 1"),
    "cnn-dims-string": ("cnn", _set("dims", "2"), "dims must be 0, 1 or 2"),
    "cnn-block-1e30": ("cnn", _set("blocks.2.param.block", 10**30), "block must be a whole number in 1.."),
    "cnn-block-true": ("cnn", _set("blocks.2.param.block", True), "block must be a whole number"),
    "cnn-stride-huge": ("cnn", _set("blocks.0.param.stride", [2**40, 1]), "stride must be a list of whole numbers"),
    "cnn-shape-float": ("cnn", _set("blocks.0.shape", [3, 1, 3.0, 3]), "shape must be the weight's"),
    "cnn-bias-string": ("cnn", _set("blocks.0.bias", "yes"), "bias must be true or false"),
    "cnn-no-param": ("cnn", lambda d: d["blocks"][0].pop("param"), "a layer must be an object with param"),
    "cnn-beta-zero": ("cnn", _set("blocks.0.tail", [{"op": "act", "name": "softplus", "beta": 0}]),
                      "beta must be a number in [1e-6, 1e6]"),
    "mlp-version-true": ("mlp", _set("version", True), "version must be 1 or 2"),
    "mlp-width-8.5": ("mlp", _set("layers.0.out", 8.5), "out must be a whole number"),
    "mlp-width-true": ("mlp", _set("layers.0.in", True), "in must be a whole number"),
    "mlp-width-1e30": ("mlp", _set("layers.0.in", 10**30), "in must be a whole number"),
    "mlp-activation-name": ("mlp", _set("layers.0.activation", {"name": "gelu"}), "activation must be an object"),
    "mlp-threshold-nan": ("mlp", _set("layers.0.activation", {"name": "softplus", "threshold": float("nan")}),
                          "threshold must be a number in [-1e6, 1e6] or +Infinity"),
    "format-unknown": ("mlp", _set("format", "shrinknet-rnn"), "format must be shrinknet-mlp or shrinknet-seq"),
    "not-an-object": ("mlp", lambda d: "[1, 2]", "the description must be a JSON object"),
    "metrics-string": ("mlp", _set("meta.metrics", {"test_accuracy": "high"}), "a metric must be a number"),
    "metrics-list": ("cnn", _set("meta.metrics", [0.5]), "metrics must be an object of numbers"),
    "class-values-duplicate": ("mlp", _set("meta.class_values", [0, 1, 1, 3]), "class_values must be a list of distinct"),
    "class-values-int-and-float": ("mlp", _set("meta.class_values", [0, 1, 2, 2.0]), "class_values must be"),
    "class-values-nan": ("mlp", _text("[0, 1, 2, 3]", "[0, 1, 2, NaN]"), "class_values must be"),
    "class-values-bool": ("cnn", _set("meta.class_values", [False, True, 2, 3]), "class_values must be"),
    "class-values-object": ("mlp", _set("meta.class_values", [{"a": 1}, 1, 2, 3]), "class_values must be"),
    "data-class-values": ("mlp", _set("meta.data", {"class_values": [1, 1]}), "class_values must be"),
    "loss-unknown": ("mlp", _set("meta.loss", "hinge"), "loss must be one of mse, cross_entropy"),
}


@pytest.mark.parametrize("command", ["info", "prune"])
@pytest.mark.parametrize("key", list(DESCRIPTIONS))
def test_a_forged_description_is_refused_in_one_line(model_files, tmp_path, key, command):
    kind, edit, words = DESCRIPTIONS[key]
    forge(model_files / f"{kind}.safetensors", tmp_path / "m.safetensors", edit)
    argv = {"info": ["info", "m.safetensors"],
            "prune": ["prune", "m.safetensors", "--data", "digits", "--budget", "1KiB", "--out", "run"]}[command]
    assert_refused(argv, tmp_path, words)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_the_unforged_files_load(model_files, kind):
    """The table's edits are what makes them fail: the originals load, and info prints their metrics."""
    code, err, out, _ = run_cli(["info", f"{kind}.safetensors"], model_files)
    assert code == 0, err
    assert kind == "cnn" or "test_accuracy 0.5" in out


def test_saving_a_meta_the_schema_refuses_writes_nothing(tmp_path):
    mlp = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 2))
    with pytest.raises(shrinknet.errors.InputError, match="class_values must be"):
        modelio.save_model(tmp_path / "m.safetensors", mlp, {"class_values": [True, False]})
    assert list(tmp_path.iterdir()) == []


# == family 4: checkpoints forged into a model =====================================================
PRUNE = ["--budget", "300B", "--full-curve", "--no-analyze", "--checkpoint-every", "0"]


def _invoke(*args):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A trained 4-7-5-3 model and the checkpoint of a ``prune`` interrupted after 6 removals, made
    through the CLI; then the uninterrupted run's steps, which resuming the genuine checkpoint gives."""
    from helpers import train_blobs
    from shrinknet.choose import checkpoint

    root = tmp_path_factory.mktemp("ckpt")
    model = train_blobs(_invoke, root, "m")
    write, calls = checkpoint.Checkpointer.write, {"n": 0}

    def write_then_stop(self, state):
        write(self, state)
        calls["n"] += 1
        if calls["n"] == 7:  # the start, then 6 removals
            raise KeyboardInterrupt

    checkpoint.Checkpointer.write = write_then_stop
    try:
        r = _invoke("prune", model, *PRUNE, "--out", root / "run")
    finally:
        checkpoint.Checkpointer.write = write
    assert r.exit_code == 130 and (root / "run.checkpoint.json").is_file(), r.output
    return model, json.loads((root / "run.checkpoint.json").read_text())


def _steps(k: int, edit):
    def forge(doc):
        edit(doc["steps"][k])
    return forge


def _swap(doc):
    """The removals of steps 2 and 4 exchanged (both steps' counts and sizes stay consistent)."""
    s = doc["steps"]
    s[2]["removed"], s[4]["removed"] = s[4]["removed"], s[2]["removed"]


def _duplicate(doc):
    doc["steps"][3]["removed"] = doc["steps"][2]["removed"]


def _replace_unit(doc):
    """Step 5 removes another unit of the same layer, every recorded number kept."""
    h, j = doc["steps"][5]["removed"][0]
    gone = {tuple(r) for s in doc["steps"] for r in s["removed"]}
    doc["steps"][5]["removed"] = [[h, next(u for u in range(7) if (h, u) not in gone)]]


def _huge(doc):
    doc["steps"][1]["removed"] = [[0, 1]] * 3_000_000


def _many_steps(doc):
    doc["steps"] = doc["steps"] + [doc["steps"][-1]] * 100


CHECKPOINTS = {  # id -> (edit of the checkpoint document, words of the one-line refusal)
    "swapped-removals": (_swap, "the checkpoint was modified: its step 2 records"),
    "other-unit-same-numbers": (_replace_unit, "the checkpoint was modified: its step 5 records"),
    "negative-unit": (_steps(3, lambda s: s.update(removed=[[0, -1]])), "a removal must be [hidden layer, unit]"),
    "out-of-range-layer": (_steps(3, lambda s: s.update(removed=[[7, 0]])), "a removal must be [hidden layer, unit]"),
    "out-of-range-unit": (_steps(3, lambda s: s.update(removed=[[1, 5]])), "a removal must be [hidden layer, unit]"),
    "float-unit": (_steps(3, lambda s: s.update(removed=[[0, 1.0]])), "a removal must be [hidden layer, unit]"),
    "duplicated-removal": (_duplicate, "already removed"),
    "same-unit-twice-in-a-step": (_steps(3, lambda s: s.update(removed=[[0, 1], [0, 1]])), "removed must list one or two"),
    "forged-accuracy": (_steps(4, lambda s: s.update(accuracy=0.999)), "records accuracy 0.999 but replaying"),
    "forged-accuracy-above-1": (_steps(4, lambda s: s.update(accuracy=1.5)), "an accuracy is in [0, 1]"),
    "forged-test-error": (_steps(6, lambda s: s.update(test_error=0.0)), "records test_error 0.0 but replaying"),
    "forged-start": (_steps(0, lambda s: s.update(error=0.0)), "its step 0 records error 0.0"),
    "forged-n-removed": (_steps(6, lambda s: s.update(n_removed=5)), "records n_removed 5"),
    "forged-kept": (_steps(6, lambda s: s.update(kept=[7, 5])), "kept"),
    "forged-bytes-bool": (_steps(6, lambda s: s.update(bytes=True)), "bytes must be a whole number >= 0"),
    "extra-field": (_steps(6, lambda s: s.update(code="x")), "a step must be an object with the fields"),
    "3-million-removals": (_huge, "JSON lists, more than a checkpoint can"),
    "more-steps-than-units": (_many_steps, "steps must list 1 to 13 steps"),
    "3-million-removals-at-the-end": (lambda d: d["steps"][-1].update(removed=[[0, 1]] * 3_000_000), "JSON lists, more than"),
    "steps-not-a-list": (lambda d: d.update(steps="all"), "steps must list"),
    "version-true": (lambda d: d.update(version=True), "version must be 1"),
}


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_a_forged_checkpoint_is_refused_in_one_line(interrupted, tmp_path, key):
    model, doc = interrupted
    edit, words = CHECKPOINTS[key]
    doc = json.loads(json.dumps(doc))
    edit(doc)
    (tmp_path / "run.checkpoint.json").write_text(json.dumps(doc))
    assert_refused(["prune", model, *PRUNE, "--out", "run", "--resume"], tmp_path, words,
                   child=key.startswith("3-million"))


def test_the_genuine_checkpoint_resumes(interrupted, tmp_path):
    """The table's edits are what makes it fail: the checkpoint as written resumes, to the same steps
    as the run that was never interrupted."""
    model, doc = interrupted
    (tmp_path / "run.checkpoint.json").write_text(json.dumps(doc))
    r = _invoke("prune", model, *PRUNE, "--out", tmp_path / "run", "--resume")
    assert r.exit_code == 0, r.output
    r = _invoke("prune", model, *PRUNE, "--out", tmp_path / "whole")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "steps.csv").read_bytes() == (tmp_path / "whole" / "steps.csv").read_bytes()


# == family 3: memory exhaustion from small files ==================================================
def _idx_bomb(d: Path, n: int = 684_784):
    """gzipped IDX images of n 28x28 zeros (512 MiB, ~0.5 MB on disk) and their labels beside them."""
    with gzip.open(d / "bomb-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x03" + struct.pack(">3I", n, 28, 28))
        zeros = bytes(2**20)
        for _ in range(n * 784 // len(zeros)):
            f.write(zeros)
        f.write(bytes(n * 784 % len(zeros)))
    with gzip.open(d / "bomb-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x01" + struct.pack(">I", n) + bytes(n))
    return "bomb-images-idx3-ubyte.gz"


def _npz_zeros(d: Path, columns: int = 4):
    """An .npz of deflated zeros: 128 MiB of X in about 130 KB."""
    with zipfile.ZipFile(d / "zeros.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in (("X", np.zeros((2**25 // columns, columns), np.float32)), ("y", np.zeros(2**25 // columns, np.int64))):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a)
            z.writestr(f"{name}.npy", buf.getvalue())
    return "zeros.npz"


def _npz_declared(d: Path):
    """An .npz whose X header declares (1e7, 1e6) float32 over 64 bytes of data."""
    with zipfile.ZipFile(d / "huge.npz", "w", zipfile.ZIP_STORED) as z:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**7, 10**6)})
        z.writestr("X.npy", buf.getvalue() + bytes(64))
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.zeros(10**7, np.int64)[:16])
        z.writestr("y.npy", buf.getvalue())
    return "huge.npz"


def _pt_deflated(d: Path):
    """torch.save's zip archive of a 2-layer state_dict, re-zipped deflated: 64 MiB of zeros in ~70 KB."""
    torch.save({"0.weight": torch.zeros(4096, 4096), "1.weight": torch.zeros(3, 4096)}, d / "plain.pt")
    with zipfile.ZipFile(d / "plain.pt") as src, zipfile.ZipFile(d / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    (d / "plain.pt").unlink()
    return "deflated.pt"


def _sparse_safetensors(d: Path):
    """A sparse 4 GiB safetensors file: a header declaring 4 GiB of float32, then holes."""
    n = 2**30
    header = json.dumps({"0.weight": {"dtype": "F32", "shape": [2**20, 2**10], "data_offsets": [0, 4 * n]},
                         "1.weight": {"dtype": "F32", "shape": [1, 2**20], "data_offsets": [4 * n, 4 * n + 2**22]}})
    header += " " * (-len(header) % 8)
    with open(d / "sparse.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header.encode())
        f.truncate(8 + len(header) + 4 * n + 2**22)
    return "sparse.safetensors"


def _csv_bomb(d: Path):
    """A gzipped CSV of 256 MiB of zero rows (~0.3 MB)."""
    with gzip.open(d / "zeros.csv.gz", "wb") as f:
        rows = b"0,0,0,0,1\n" * 2**20
        for _ in range(2**28 // len(rows)):
            f.write(rows)
    return "zeros.csv.gz"


def _genuine_npz(d: Path):
    """A genuine 4 MiB .npz (2**18 rows of 4 features), refused only under SHRINKNET_MAX_DATA_BYTES=1MiB."""
    g = np.random.default_rng(0)
    np.savez(d / "big.npz", X=g.normal(size=(2**18, 4)).astype(np.float32), y=g.integers(0, 4, 2**18))
    return "big.npz"


HELD_OUT = ["--loss", "cross_entropy", "--budget", "1KiB", "--out", "run"]
SIZES = {  # id -> (make the file in a folder and return its name, argv given that name, words, extra environment)
    "idx-gz-bomb-against-the-model": (_idx_bomb, lambda f: ["prune", "m.safetensors", "--val", f, *HELD_OUT],
                                      "has 784 features per instance but the model takes 4", {}),
    "idx-gz-bomb-to-train": (_idx_bomb, lambda f: ["train", "--data", f, "--out", "run"], "decompression bomb", {}),
    "npz-deflated-zeros": (_npz_zeros, lambda f: ["prune", "m.safetensors", "--val", f, *HELD_OUT],
                           "decompression bomb", {}),
    "npz-declares-1e7-by-1e6": (_npz_declared, lambda f: ["train", "--data", f, "--out", "run"],
                                "SHRINKNET_MAX_DATA_BYTES allows", {}),
    "pt-deflated": (_pt_deflated, lambda f: ["info", f, "--activation", "relu", "--out-activation", "none"],
                    "decompression bomb", {}),
    "safetensors-sparse-4GiB": (_sparse_safetensors, lambda f: ["info", f, "--activation", "relu",
                                                                 "--out-activation", "none"],
                                "SHRINKNET_MAX_DATA_BYTES allows", {}),
    "csv-gz-bomb": (_csv_bomb, lambda f: ["train", "--data", f, "--out", "run"], "decompression bomb", {}),
    "limit-set-lower": (_genuine_npz, lambda f: ["train", "--data", f, "--out", "run"],
                        "more than the 1 MiB SHRINKNET_MAX_DATA_BYTES allows", {"SHRINKNET_MAX_DATA_BYTES": "1MiB"}),
}


@pytest.mark.parametrize("key", list(SIZES))
def test_a_small_hostile_file_fails_fast_with_bounded_memory(model_files, tmp_path, key, monkeypatch):
    make, argv, words, env = SIZES[key]
    (tmp_path / "m.safetensors").write_bytes((model_files / "mlp.safetensors").read_bytes())
    name = make(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    peak = assert_refused(argv(name), tmp_path, words, child=True)
    print(f"{key}: peak {peak / MiB:.0f} MiB")


def test_the_readers_still_read_what_the_bounds_let_through(tmp_path):
    """The same formats, genuine and small, load to the same float32 values as a direct read."""
    from shrinknet.data import datasets

    g = np.random.default_rng(1)
    X, y = g.integers(0, 256, (60, 3, 4)).astype(np.uint8), g.integers(0, 3, 60).astype(np.uint8)
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x03" + struct.pack(">3I", 60, 3, 4) + X.tobytes())
    with gzip.open(tmp_path / "t-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x01" + struct.pack(">I", 60) + y.tobytes())
    got_X, got_y = datasets.load_heldout(tmp_path / "t-images-idx3-ubyte.gz", None, n_classes=3, in_features=12)
    assert np.array_equal(got_X, (X.reshape(60, 12) / 255).astype(np.float32))  # float64 division, as before
    assert np.array_equal(got_y, y)
    Xf = g.normal(size=(40, 2, 3))
    np.savez_compressed(tmp_path / "f.npz", X=np.asfortranarray(Xf), y=g.random(40))
    got_X, _ = datasets.load_heldout(tmp_path / "f.npz", "regression")
    assert np.array_equal(got_X, Xf.reshape(40, 6).astype(np.float32))
