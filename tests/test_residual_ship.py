"""Residual networks (issue #18, part 2) shipped: model files, ONNX (against onnxruntime) and C
(compiled, against torch) exports with the skip's RAM, and ``train --arch resnet`` end to end. The
networks and the forward-hook twins are test_residual.py's."""

from __future__ import annotations

import pytest
import torch
from test_export import cc  # noqa: F401  (a fixture)
from test_residual import IDS, N_OUT, SETTINGS, SOME, _ram_by_hooks, build
from torch.testing import assert_close

import shrinknet
from shrinknet import Residual
from shrinknet.errors import InputError
from shrinknet.store.memory import network_bytes


# -- model files ------------------------------------------------------------------------------------
def _rewrite(path, edit):
    """The model file at ``path`` with its description edited by ``edit(doc)`` (tensors unchanged)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        doc = json.loads(f.metadata()["shrinknet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
    edit(doc)
    save_file(tensors, str(path), metadata={"shrinknet": json.dumps(doc)})


@pytest.mark.parametrize("s", SETTINGS[:3], ids=IDS[:3])
def test_model_file_round_trip_and_refusals(s, tmp_path):
    model, _, _, X, _ = build(s)
    path = shrinknet.save_model(tmp_path / "m.safetensors", model, input_shape=tuple(X.shape[1:]))
    back, _ = shrinknet.load_model(path)
    with torch.no_grad():
        assert_close(back(X), model(X), rtol=1e-12, atol=1e-12)
    for name, edit, words in [
        ("v1", lambda d: d.update(version=1), "version 2"),
        ("channels", lambda d: d["adds"][0].update(src=d["adds"][0]["dst"] - 1), "different channel counts"),
        ("at", lambda d: d["adds"][0].update(at=9), "not one residual block"),
    ]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(path.read_bytes())
        _rewrite(bad, edit)
        with pytest.raises(InputError) as e:
            shrinknet.load_model(bad)
        assert words in str(e.value) and "\n" not in str(e.value), name


# -- exports ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", SOME[1:], ids=[s.id for s in SOME[1:]])
def test_onnx_and_c_match_torch(s, cc, tmp_path):  # noqa: F811
    import re

    import numpy as np
    from test_cnn_export import _reference
    from test_export import TOL, compile_and_run

    from shrinknet.ship.export import export

    ort = pytest.importorskip("onnxruntime")
    model, _, _, X, _ = build(s)
    net = shrinknet.as_net(model)
    shape = tuple(X.shape[1:])
    net.bind(shape)
    masks = net.full_masks()
    for m in masks:
        m[0] = False
    small = net.shrink(masks).to_sequential().float()
    X = torch.randn(20, *shape, generator=torch.Generator().manual_seed(5))
    ram = 4 * _ram_by_hooks(small, shape)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for dtype in ("float32", "float16", "int8"):
        res = export(small, tmp_path / f"{dtype}.onnx", format="onnx", dtype=dtype, input_shape=shape)
        assert res.flash_bytes == network_bytes(small, dtype)
        sess = ort.InferenceSession(str(res.paths[0]), opts, providers=["CPUExecutionProvider"])
        (y,) = sess.run(["output"], {"input": X.numpy()})
        assert np.abs(y - _reference(small, X, dtype)).max() <= TOL[dtype]
        res = export(small, tmp_path / f"{dtype}.c", format="c", dtype=dtype, prefix=dtype, input_shape=shape)
        assert res.ram_bytes == ram and res.flash_bytes == network_bytes(small, dtype)
        source = res.paths[0].read_text()
        weight_t = re.search(r"typedef (\w+) weight_t;", source).group(1)
        size = {"float": 4, "int8_t": 1, "uint16_t": 2}
        arrays = sum(int(n) * size[weight_t if ctype == "weight_t" else ctype] for ctype, n in re.findall(
            r"static const (\w+) layer\d+(?:_skip)?_(?:weight|scale|bias)\[(\d+)\]", source))
        assert arrays == res.flash_bytes  # the projection's arrays counted too
        assert f"static float scratch[{ram // 4}];" in source
    driver = """\
#include <stdio.h>
#include "float32.h"
#include "float16.h"
#include "int8.h"
int main(void)
{
    static float in[FLOAT32_INPUT_SIZE], out[FLOAT32_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        float32_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        float16_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        int8_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }
    return 0;
}
"""
    out = compile_and_run(cc, tmp_path, driver, ["float32.c", "float16.c", "int8.c"], X.numpy().tobytes())
    ys = np.frombuffer(out, dtype=np.float32).reshape(len(X), 3, N_OUT).transpose(1, 0, 2)
    for y, dtype in zip(ys, ("float32", "float16", "int8")):
        assert np.abs(y - _reference(small, X, dtype)).max() <= TOL[dtype], dtype


# -- train --arch resnet, end to end --------------------------------------------------------------------
def test_train_resnet_prune_int8_export_and_scratch_baseline(cc, tmp_path):  # noqa: F811
    """train --arch resnet on mnist5k-784 images (the CIFAR-10 stand-in), prune to an int8 budget
    with C and ONNX exports; the C agrees with torch; the scratch baseline rebuilds the kept ResNet;
    brute force with threads and instance batches equals the single-threaded whole-batch scores."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    from click.testing import CliRunner
    from test_cnn_export import _reference
    from test_export import TOL, compile_and_run

    from shrinknet.cli import cli
    from shrinknet.data import datasets as D
    from shrinknet.repair.retrain import scratch_baseline
    from shrinknet.ship.modelio import load_model

    def invoke(*args):
        r = CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    invoke("train", "--data", "mnist5k-784", "--arch", "resnet", "--size", 100, "--channels", "3,4", "--epochs", 1,
           "--patience", 1, "--loss", "cross_entropy", "--force", "--out", tmp_path / "m")  # 1 epoch may sit at chance
    trained, meta = load_model(tmp_path / "m" / "model.safetensors")
    assert meta["training"]["arch"] == "resnet" and meta["input_shape"] == [1, 28, 28]
    assert [type(m) for m in trained if isinstance(m, Residual)] == [Residual, Residual]
    assert shrinknet.as_net(trained).hidden_sizes == (3, 3, 4, 4)
    budget = int(network_bytes(trained, "int8") * 0.6)
    invoke("prune", tmp_path / "m" / "model.safetensors", "--budget", budget, "--dtype", "int8", "--force",
           "--export", "onnx,c", "--no-analyze", "--out", tmp_path / "p")
    small, _ = load_model(tmp_path / "p" / "model.safetensors")
    assert network_bytes(small, "int8") <= budget
    ds = D.load("mnist5k-784", size=100)
    X = ds.X_test[:20].reshape(-1, 1, 28, 28)
    with torch.no_grad():
        want = _reference(small, torch.from_numpy(X), "int8")
    driver = """\
#include <stdio.h>
#include "model.h"
int main(void)
{
    static float in[SHRINKNET_INPUT_SIZE], out[SHRINKNET_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        shrinknet_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }
    return 0;
}
"""
    y = compile_and_run(cc, tmp_path / "p", driver, ["model.c"], X.tobytes())
    assert np.abs(np.frombuffer(y, np.float32).reshape(want.shape) - want).max() <= TOL["int8"]
    recipe = {**meta["training"], "epochs": 1, "patience": 1}
    view = lambda split: ds.inputs(split)[:60].reshape(-1, 1, 28, 28)
    runs = scratch_baseline(small, view("train"), ds.targets("train", "cross_entropy")[:60], view("val"),
                            ds.targets("val", "cross_entropy")[:60], None, None, loss="cross_entropy", recipe=recipe,
                            seeds=(0,), storage="int8")
    assert len(runs) == 1 and 0 <= runs[0]["val_accuracy"] <= 1
    Xr, Tr = torch.from_numpy(view("train")[:30]), torch.from_numpy(ds.targets("train", "cross_entropy")[:30])
    one = shrinknet.saliency(trained, Xr, Tr, "brute_force", loss="cross_entropy", threads=1)
    two = shrinknet.saliency(trained, Xr, Tr, "brute_force", loss="cross_entropy", threads=2, batch_size=11)
    for a, b in zip(one, two):
        assert_close(a, b, rtol=1e-4, atol=1e-4)
