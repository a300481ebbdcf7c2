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
import math
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
                      "beta must be a positive finite number"),
    "mlp-version-true": ("mlp", _set("version", True), "version must be 1 or 2"),
    "mlp-width-8.5": ("mlp", _set("layers.0.out", 8.5), "out must be a whole number"),
    "mlp-width-true": ("mlp", _set("layers.0.in", True), "in must be a whole number"),
    "mlp-width-1e30": ("mlp", _set("layers.0.in", 10**30), "in must be a whole number"),
    "mlp-activation-name": ("mlp", _set("layers.0.activation", {"name": "gelu"}), "activation must be an object"),
    "mlp-threshold-nan": ("mlp", _set("layers.0.activation", {"name": "softplus", "threshold": float("nan")}),
                          "threshold must be a finite number or +Infinity"),
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
