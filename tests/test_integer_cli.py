"""``prune --dtype int8 --integer-only``, ``export --integer-only`` and ``--format/--export tflite``
(issue #16) on the command line: the run records the full-integer network that ships (its accuracy
is the integer reference's on the same data, its bytes ``integer_bytes`` within the budget); the
integer-only C (host cc) and the .tflite (TFLite Micro) compute that reference bit for bit; exports
never replace a file shrinknet did not write; bad input gets one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_c_integer import int8_driver
from test_export import compile_and_run
from torch import nn

from shrinknet.cli import cli
from shrinknet.data import datasets
from shrinknet.ship import modelio
from shrinknet.ship.export import written_by_shrinknet
from shrinknet.store.integer import integer_bytes, quantize_network

BUDGET = 700


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A small digits MLP, its integer-only run (C and .tflite exported), and a softplus twin."""
    tmp = tmp_path_factory.mktemp("intcli")
    r = run("train", "--data", "digits", "--hidden", "12", "--activation", "relu", "--out-activation", "none",
            "--loss", "cross_entropy", "--epochs", "20", "--out", tmp / "m", "-q")
    assert r.exit_code == 0, r.output
    r = run("prune", tmp / "m" / "model.safetensors", "--budget", BUDGET, "--dtype", "int8", "--integer-only",
            "--no-analyze", "--export", "c,tflite", "--out", tmp / "run", "-q")
    assert r.exit_code == 0, r.output
    model, meta = modelio.load_model(tmp / "m" / "model.safetensors")
    soft = nn.Sequential(model[0], nn.Softplus(), model[2])
    modelio.save_model(tmp / "soft.safetensors", soft, {k: v for k, v in meta.items() if k != "training"})
    return tmp


def digits():
    return datasets.load("digits", seed=0)


def test_recorded_numbers_are_the_saved_integer_networks(made):
    """The kept step's validation accuracy and bytes, against the literal: the saved network quantized
    on the training split, its integer forward on the int8 validation inputs, argmax against the labels."""
    doc = json.loads((made / "run" / "run.json").read_text())
    k = doc["extras"]["chosen_step"]
    step = doc["steps"][k]
    ds = digits()
    small, meta = modelio.load_model(made / "run" / "model.safetensors")
    inet = quantize_network(small, ds.inputs("train"))
    q = inet.quantize_input(torch.as_tensor(ds.inputs("val")))
    pred = inet.forward(q).to(torch.int64).argmax(1).numpy()
    labels = np.asarray(ds.targets("val", "cross_entropy"))
    assert step["accuracy"] == pytest.approx(float((pred == labels).mean()), abs=1e-12)
    assert step["bytes"] == integer_bytes(small) == inet.flash_bytes() <= BUDGET
    cfg = doc["config"]
    assert cfg["integer_only"] is True and "training split of digits" in cfg["integer_calibration"]
    assert meta["pruned"]["integer_only"] is True
    assert meta["pruned"]["integer_metrics"]["val_accuracy"] == pytest.approx(step["accuracy"], abs=1e-12)


@pytest.mark.parametrize("fmt", ["c", "tflite"])
def test_exports_compute_the_integer_reference_bit_for_bit(made, fmt, tmp_path):
    ds = digits()
    small, _ = modelio.load_model(made / "run" / "model.safetensors")
    inet = quantize_network(small, ds.inputs("train"))
    q = inet.quantize_input(torch.as_tensor(ds.inputs("test")[:60]))
    q[0], q[1] = -128, 127
    want = inet.forward(q).numpy()
    if fmt == "c":
        cc = shutil.which("cc")
        if cc is None:
            pytest.skip("no C compiler")
        for name in ("model.c", "model.h"):
            shutil.copy(made / "run" / name, tmp_path / name)
        out = compile_and_run(cc, tmp_path, int8_driver("shrinknet").replace('"shrinknet.h"', '"model.h"'),
                              ["model.c"], q.numpy().tobytes())
        got = np.frombuffer(out, dtype=np.int8).reshape(want.shape)
    else:
        pytest.importorskip("tflite_micro")
        from shrinknet.ship.tflite import run_tflm, to_tflite_input

        got, _ = run_tflm((made / "run" / "model.tflite").read_bytes(), to_tflite_input(q.numpy(), inet.in_shape))
    assert np.array_equal(got, want) and len(np.unique(want)) > 3


@pytest.mark.parametrize("options, integer", [((), True), (("--integer-only",), True), (("--dtype", "float32"), False)],
                         ids=["recorded", "flag", "dtype-float32"])
def test_export_of_an_integer_only_model_is_integer_unless_a_dtype_says_otherwise(made, options, integer, tmp_path):
    """A model pruned --integer-only exports as it was pruned (its file records it): the C equals the run's own
    model.c; --dtype float32 gives the float C."""
    r = run("export", made / "run" / "model.safetensors", "--format", "c", *options, "--out", tmp_path / "model.c")
    assert r.exit_code == 0, r.output
    assert ("full-integer int8" in r.output) == integer
    def body(path):  # the code and arrays (the banner's Meta line and the header's name differ by design)
        return [line for line in path.read_text().splitlines() if "Meta:" not in line and "#include" not in line]

    got = body(tmp_path / "model.c")
    assert (got == body(made / "run" / "model.c")) == integer
    assert any("float" in line for line in got) != integer


@pytest.mark.parametrize("integer", [True, False], ids=["full-integer", "float32"])
def test_export_tflite_replaces_only_its_own_files(made, integer, tmp_path):
    pytest.importorskip("tflite")
    from shrinknet.ship.tflite import tflite_model

    args = ["export", made / "run" / "model.safetensors", "--format", "tflite", *(["--integer-only"] * integer)]
    mine, foreign = tmp_path / "mine.tflite", tmp_path / "foreign.tflite"
    r = run(*args, "--out", mine)
    assert r.exit_code == 0, r.output
    assert mine.read_bytes()[4:8] == b"TFL3" and written_by_shrinknet(mine, "tflite")
    first = mine.read_bytes()
    r = run(*args, "--out", mine)
    assert r.exit_code == 2 and "--overwrite" in r.stderr and mine.read_bytes() == first
    r = run(*args, "--out", mine, "--overwrite")
    assert r.exit_code == 0, r.output
    small, _ = modelio.load_model(made / "run" / "model.safetensors")
    inet = quantize_network(small, digits().inputs("train"))
    for data in (b"not a flatbuffer at all", tflite_model(inet, description="TOCO Converted.")):
        foreign.write_bytes(data)
        assert not written_by_shrinknet(foreign, "tflite")
        r = run(*args, "--out", foreign, "--overwrite")
        assert r.exit_code == 2 and "not written by shrinknet" in r.stderr, r.output
        assert foreign.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.tflite", "mine.tflite"]


def _csv(path, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("case", ["no int8", "integer onnx", "export dtype", "constant data", "nan data",
                                  "softplus export", "softplus prune", "softplus device", "float16 tflite",
                                  "no toolchain", "run without its model"])
def test_bad_input_gets_one_line_and_writes_nothing(made, case, tmp_path, monkeypatch):
    model = made / "m" / "model.safetensors"
    soft = made / "soft.safetensors"
    out = tmp_path / "out"
    const = _csv(tmp_path / "const.csv", [[0.5] * 64 + [i % 10] for i in range(80)])
    nan = _csv(tmp_path / "nan.csv", [[0.5 + i] * 63 + ["nan" if i == 3 else 0.1] + [i % 10] for i in range(80)])
    args, fragment = {
        "no int8": (["prune", model, "--budget", BUDGET, "--integer-only", "--out", out], "--dtype int8"),
        "integer onnx": (["export", model, "--format", "onnx", "--integer-only", "--out", out / "m.onnx"],
                         "--integer-only exports c or tflite"),
        "export dtype": (["export", model, "--format", "c", "--integer-only", "--dtype", "float16", "--out",
                          out / "m.c"], "--dtype int8"),
        "constant data": (["export", model, "--format", "c", "--integer-only", "--data", const, "--out", out / "m.c"],
                          "constant"),
        "nan data": (["export", model, "--format", "c", "--integer-only", "--data", nan, "--out", out / "m.c"],
                     "not a finite number"),  # the reader refuses it before calibration (the API test: the library)
        "softplus export": (["export", soft, "--format", "tflite", "--integer-only", "--out", out / "m.tflite"],
                            "softplus"),
        "softplus prune": (["prune", soft, "--budget", BUDGET, "--dtype", "int8", "--integer-only", "--out", out],
                           "softplus"),
        "softplus device": (["device", soft, "--rows", "1"], "softplus"),
        "float16 tflite": (["prune", model, "--budget", "2KiB", "--dtype", "float16", "--export", "tflite", "--out",
                            out], "float32 or a full-integer"),
        "no toolchain": (["device", model, "--rows", "1"], "shrinknet[device]"),
        "run without its model": (["device", tmp_path / "bare", "--rows", "1"], "model.safetensors does not exist"),
    }[case]
    (tmp_path / "bare").mkdir()
    shutil.copy(made / "run" / "run.json", tmp_path / "bare" / "run.json")  # a run directory, its model missing
    if case == "no toolchain":
        monkeypatch.setitem(__import__("sys").modules, "unicorn", None)  # import unicorn -> ImportError
    before = sorted(p.name for p in made.iterdir())
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert not out.exists() and sorted(p.name for p in made.iterdir()) == before
    assert not any(p.name.startswith(("m.", "out")) for p in tmp_path.iterdir())
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["run.json"]
    assert (tmp_path / "bare" / "run.json").read_bytes() == (made / "run" / "run.json").read_bytes()


def test_run_json_says_how_the_integer_network_was_calibrated(made):
    doc = json.loads((made / "run" / "run.json").read_text())
    assert doc["extras"]["integer_calibration"].startswith("activation ranges: min/max over 1079 instance(s) of the "
                                                            "training split of digits")
    exports = doc["extras"]["exports"]
    assert {e["dtype"] for e in exports.values()} == {"int8-integer"}
    assert exports["model.c"]["flash_bytes"] == doc["steps"][doc["extras"]["chosen_step"]]["bytes"]


@pytest.mark.parametrize("damage", ["truncated", "garbage after the identifier", "offsets past the end"])
def test_written_by_shrinknet_reads_a_damaged_tflite_safely(made, damage, tmp_path):
    """Any damaged or forged file is answered True/False from bounded reads, never an exception."""
    good = (made / "run" / "model.tflite").read_bytes()
    rng = np.random.default_rng(0)
    if damage == "truncated":
        variants = [good[:n] for n in range(0, 200, 3)]
    elif damage == "garbage after the identifier":
        variants = [rng.integers(0, 256, 4).astype(np.uint8).tobytes() + b"TFL3" + rng.integers(0, 256, 60).astype(
            np.uint8).tobytes() for _ in range(50)]
    else:
        variants = [(2**32 - 1 - i).to_bytes(4, "little") + good[4:] for i in range(0, 40, 4)]
    for i, data in enumerate(variants):
        p = tmp_path / f"v{i}.tflite"
        p.write_bytes(data)
        assert written_by_shrinknet(p, "tflite") in (True, False)
    assert written_by_shrinknet(made / "run" / "model.tflite", "tflite")
    assert not written_by_shrinknet(tmp_path / "v0.tflite", "tflite")  # empty or forged: not ours
