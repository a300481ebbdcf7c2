"""The CNN path through the command line: train --arch cnn, rank, prune --ram-budget --export (float32 and
int8), export, info, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinknet.ship import modelio, runs
from shrinknet.cli import cli
from shrinknet.store.memory import network_bytes


def invoke(*args):
    return CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("sklearn")
    tmp = tmp_path_factory.mktemp("cnn")
    r = invoke("train", "--data", "digits", "--arch", "cnn", "--channels", "3,4", "--size", "300", "--epochs", "25", "--patience", "25",
               "--loss", "cross_entropy", "--out-activation", "none", "--out", tmp / "m")
    assert r.exit_code == 0, r.output
    return tmp, r.output


def test_train_cnn_folds_batchnorm_and_records_the_shape(trained):
    tmp, output = trained
    assert "BatchNorm2d (module 1) folded into the Conv2d before it (module 0); exact" in output
    assert "BatchNorm2d (module 5) folded into the Conv2d before it (module 4); exact" in output
    model, meta = modelio.load_model(tmp / "m" / "model.safetensors")
    assert meta["input_shape"] == [1, 8, 8] and meta["training"]["arch"] == "cnn"
    assert model.shrinknet_input_shape == (1, 8, 8)


def test_prune_cnn_with_ram_budget_and_exports(trained):
    pytest.importorskip("onnx")
    tmp, _ = trained
    r = invoke("--quiet", "prune", tmp / "m" / "model.safetensors", "--budget", "1KiB", "--ram-budget", "600",
               "--export", "onnx,c", "--no-analyze", "--out", tmp / "p")
    assert r.exit_code == 0, r.output
    line = next(l for l in r.output.splitlines() if l.startswith("kept step"))
    ram = int(line.split(" B RAM")[0].rsplit(" ", 1)[1])
    assert ram <= 600 and "RAM budget 600 B" in line
    pytest.importorskip("matplotlib")
    from shrinknet.ship import report, runs

    chosen = report.figure_data([runs.load_run(tmp / "p")])["curves"][0]["chosen"]  # the report marks the same step
    assert f"kept step {chosen['step']} " in line and chosen["ram_bytes"] == ram and "RAM" in chosen["text"]
    header = (tmp / "p" / "model.h").read_text()
    assert f"#define SHRINKNET_RAM_BYTES {ram}" in header
    r = invoke("--quiet", "export", tmp / "p" / "model.safetensors", "--format", "c", "--out", tmp / "again.c")
    assert r.exit_code == 0, r.output
    assert f"#define SHRINKNET_RAM_BYTES {ram}" in (tmp / "again.h").read_text()  # the shape is in the model file


@pytest.mark.parametrize("args,needle", [
    (["--data", "digits", "--shape", "image"], "--shape is for --arch cnn"),
    (["--data", "cosine", "--arch", "cnn"], "has no image shape"),
    (["--data", "digits", "--arch", "cnn", "--shape", "2,5,5"], "product of 64"),
])
def test_bad_shapes_are_one_line_exit_2(args, needle, tmp_path):
    pytest.importorskip("sklearn")
    r = CliRunner().invoke(cli, ["train", *args, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_info_describes_the_cnn(trained):
    tmp, _ = trained
    r = invoke("info", tmp / "m" / "model.safetensors")
    assert r.exit_code == 0, r.output
    assert "input 1x8x8" in r.output and "layer 0: conv 1 -> 3 channels" in r.output and "RAM: " in r.output
    # int8 (3 + 4 channels, 3x3 kernels, Linear 16 -> 10): 3*9 + 2*4*3 | 4*27 + 2*4*4 | 10*16 + 2*4*10
    assert "431 B at int8" in r.output and (27 + 24) + (108 + 32) + (160 + 80) == 431


C_ARRAYS = re.compile(r"static const \w+ layer\d+_\w+\[\d+\] = \{[^}]*\};")


def test_prune_cnn_at_int8_exports_what_it_counted(trained):
    """prune --dtype int8 --export onnx,c on a CNN: the kept step fits, the exports state its bytes,
    ONNX computes what the saved (dequantized) network computes, and export --dtype int8 of the saved
    model file rebuilds exactly the same int8 arrays."""
    ort = pytest.importorskip("onnxruntime")
    tmp, _ = trained
    out = tmp / "int8"
    r = invoke("--quiet", "prune", tmp / "m" / "model.safetensors", "--budget", "350", "--dtype", "int8",
               "--export", "onnx,c", "--no-analyze", "--out", out)
    assert r.exit_code == 0, r.output
    run = runs.load_run(out)
    step = run["result"].steps[run["extras"]["chosen_step"]]
    assert run["result"].config["dtype"] == "int8" and run["result"].config["refit"] == "final"
    assert step.bytes <= 350 and f"{step.bytes} B flash" in r.output
    saved, meta = modelio.load_model(out / "model.safetensors")
    assert network_bytes(saved, "int8") == step.bytes and meta["pruned"]["dtype"] == "int8"
    header = (out / "model.h").read_text()
    assert f"#define SHRINKNET_FLASH_BYTES {step.bytes}\n" in header and f"Flash: {step.bytes} bytes of int8" in header
    assert f"#define SHRINKNET_RAM_BYTES {step.ram_bytes}\n" in header
    X = torch.as_tensor(np.random.default_rng(0).random((50, 1, 8, 8)), dtype=torch.float32)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(["output"], {"input": X.numpy()})
    with torch.no_grad():
        assert np.abs(y - saved(X).numpy()).max() <= 1e-5
    r = invoke("--quiet", "export", out / "model.safetensors", "--format", "c", "--dtype", "int8", "--out", tmp / "again.c",
               "--overwrite")  # again.c: the float32 export of an earlier test
    assert r.exit_code == 0 and f"flash (weights) {step.bytes} B" in r.output, r.output
    arrays = C_ARRAYS.findall((out / "model.c").read_text())
    assert len(arrays) == 9 and C_ARRAYS.findall((tmp / "again.c").read_text()) == arrays  # weight, scale, bias x 3
