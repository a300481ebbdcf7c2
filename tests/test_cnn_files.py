"""A CNN model file whose description was forged or corrupted is refused in one line (exit 2), whatever
the command; int8 is never written as a safetensors model file (it would hold truncated floats)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

import shrinknet
from shrinknet.ship import modelio
from shrinknet.repair import train
from shrinknet.cli import cli


def _invoke(*args):
    return CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    model = shrinknet.as_net(train.cnn((1, 8, 8), 4, (3, 4), activation="leaky_relu", seed=0).eval()).to_sequential()
    path = tmp_path_factory.mktemp("cnnfile") / "model.safetensors"
    modelio.save_model(path, model, {"loss": "cross_entropy", "task": "classification", "class_values": [0, 1, 2, 3]})
    return path


def _forge(src, dst, edit):
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta["shrinknet"])
    edit(doc)
    save_file(tensors, str(dst), metadata={"shrinknet": json.dumps(doc)})
    return dst


def _block(doc, k):
    return doc["blocks"][k]


def _tail(doc, op):
    return next(t for b in doc["blocks"] for t in b["tail"] if t["op"] == op)


FORGERIES = {  # id -> (edit of the description, words the one-line error must contain)
    "conv-stride-0": (lambda d: _block(d, 0)["param"].update(stride=[0, 0]), "stride must be a list of whole numbers >= 1"),
    "conv-dilation-0": (lambda d: _block(d, 0)["param"].update(dilation=[0, 1]), "dilation must be"),
    "conv-padding-negative": (lambda d: _block(d, 1)["param"].update(padding=[-1, 1]), "padding must be"),
    "conv-stride-string": (lambda d: _block(d, 0)["param"].update(stride="11"), "stride must be"),
    "conv-stride-float": (lambda d: _block(d, 0)["param"].update(stride=[1.5, 1]), "stride must be"),
    "pool-stride-0": (lambda d: _tail(d, "maxpool").update(stride=[0, 0]), "stride must be"),
    "pool-kernel-0": (lambda d: _tail(d, "maxpool").update(kernel=[0, 0]), "kernel must be"),
    "pool-padding-over-half": (lambda d: _tail(d, "maxpool").update(padding=[2, 2]), "more than half the kernel"),
    "slope-nan": (lambda d: _tail(d, "act").update(slope=float("nan")), "slope must be a number in [-1e6, 1e6]"),
    "linear-block-0": (lambda d: _block(d, 2)["param"].update(block=0), "block must be"),
    "no-blocks": (lambda d: d.update(blocks=[]), "at least two layers"),
    "dims-3": (lambda d: d.update(dims=3), "dims must be"),
    "version-9": (lambda d: d.update(version=9), "version 1"),
}


@pytest.mark.parametrize("key", list(FORGERIES))
@pytest.mark.parametrize("command", ["info", "export-c", "prune"])
def test_a_forged_cnn_description_is_refused_in_one_line(cnn_file, tmp_path, key, command):
    edit, words = FORGERIES[key]
    bad = _forge(cnn_file, tmp_path / "forged.safetensors", edit)
    before = bad.read_bytes()
    out = tmp_path / "out"
    args = {"info": ["info", bad], "export-c": ["export", bad, "--format", "c", "--out", out / "m.c"],
            "prune": ["prune", bad, "--data", "digits", "--budget", "1KiB", "--out", out]}[command]
    r = _invoke(*args)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and words in r.stderr, r.stderr
    assert "Traceback" not in r.output and not out.exists() and bad.read_bytes() == before


def test_int8_is_never_written_as_a_safetensors_model_file(cnn_file, tmp_path):
    model, _ = modelio.load_model(cnn_file)
    with pytest.raises(ValueError, match="int8 storage is exported as onnx or c"):
        modelio.save_model(tmp_path / "q.safetensors", model, dtype="int8")
    with pytest.raises(ValueError, match="int8 storage is exported as onnx or c"):
        shrinknet.export(model, tmp_path / "q.safetensors", format="safetensors", dtype="int8")
    r = _invoke("export", cnn_file, "--format", "safetensors", "--dtype", "int8", "--out", tmp_path / "q.safetensors")
    assert r.exit_code == 2 and "int8 storage is exported as onnx or c" in r.stderr
    assert not (tmp_path / "q.safetensors").exists()
    assert torch.equal(modelio.load_model(cnn_file)[0][0].weight, model[0].weight)  # the input untouched


def test_a_cnn_saved_before_it_saw_data_is_explained_and_save_model_takes_its_shape(tmp_path):
    """The command line needs a CNN's input shape to read flat rows: a file without it gets one line saying
    so (it said '64 input features but the model expects 1', the channel count); with save_model's
    input_shape the same network prunes."""
    pytest.importorskip("sklearn")
    model = train.cnn((1, 8, 8), 10, (3, 4), seed=0).eval()
    del model.shrinknet_input_shape  # as a network built in plain PyTorch carries no shape
    meta = {"loss": "cross_entropy", "task": "classification", "class_values": list(range(10))}
    modelio.save_model(tmp_path / "noshape.safetensors", model, meta)
    r = _invoke("prune", tmp_path / "noshape.safetensors", "--data", "digits", "--size", 300, "--budget", "2KiB",
                "--force", "--out", tmp_path / "a")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "does not record its input shape" in r.stderr and not (tmp_path / "a").exists()
    modelio.save_model(tmp_path / "shaped.safetensors", model, meta, input_shape=(1, 8, 8))
    assert modelio.load_model(tmp_path / "shaped.safetensors")[1]["input_shape"] == [1, 8, 8]
    r = _invoke("--quiet", "prune", tmp_path / "shaped.safetensors", "--data", "digits", "--size", 300, "--budget",
                "2KiB", "--force", "--no-analyze", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    with pytest.raises(ValueError, match="must have shape"):
        modelio.save_model(tmp_path / "bad.safetensors", model, meta, input_shape=(3, 8, 8))


@pytest.mark.parametrize("dtype", ["int8", "float16", "float32"])
def test_export_defaults_to_the_dtype_the_model_was_pruned_at(tmp_path, dtype):
    """A model pruned to fit a budget at int8 exported without --dtype used to come out at float32 (4x the
    flash the budget counted); without --dtype the recorded dtype is used, and --dtype still wins."""
    pytest.importorskip("sklearn")
    r = _invoke("--quiet", "train", "--data", "digits", "--size", 300, "--hidden", "12", "--epochs", 40,
                "--loss", "cross_entropy", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    r = _invoke("--quiet", "prune", tmp_path / "m" / "model.safetensors", "--budget", "700", "--dtype", dtype,
                "--force", "--no-analyze", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    pruned = tmp_path / "p" / "model.safetensors"
    small, meta = modelio.load_model(pruned)
    assert meta["pruned"]["dtype"] == dtype
    r = _invoke("export", pruned, "--format", "c", "--out", tmp_path / "e" / "m.c")
    assert r.exit_code == 0, r.output
    want = shrinknet.network_bytes(small, dtype)
    assert f"flash (weights) {want} B" in r.output and f"at {dtype})" in r.output and want <= 700
    r = _invoke("export", pruned, "--format", "c", "--dtype", "float32", "--out", tmp_path / "f" / "m.c")
    assert f"flash (weights) {shrinknet.network_bytes(small, 'float32')} B" in r.output
    r = _invoke("export", pruned, "--format", "safetensors", "--out", tmp_path / "s" / "m.safetensors")
    assert r.exit_code == 0, r.output  # a model file stays float32, as prune saved it
    assert "at float32)" in r.output


def test_save_model_with_its_arguments_swapped_says_so(tmp_path):
    """export takes (model, path), save_model (path, model): the swapped call is named, nothing is written."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"takes the path first .* write save_model\('.*m.safetensors', model\)"):
        shrinknet.save_model(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
