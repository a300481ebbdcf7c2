"""The CNN path through the command line: train --arch cnn, rank, prune --ram-budget --export, export, bad input."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from shrinknet import modelio
from shrinknet.cli import cli


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
    assert "BatchNorm2d 1 folded into layer 0" in output and "BatchNorm2d 5 folded into layer 4" in output
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
    from shrinknet import report, runs

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
    assert "int8" not in r.output


def test_prune_cnn_refuses_int8_before_any_work(trained):
    tmp, _ = trained
    r = CliRunner().invoke(cli, ["--quiet", "prune", str(tmp / "m" / "model.safetensors"), "--budget", "1KiB",
                                 "--dtype", "int8", "--no-analyze", "--out", str(tmp / "int8")])
    assert r.exit_code == 2 and "--dtype int8 is not supported for convolutional networks" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp / "int8").exists()
