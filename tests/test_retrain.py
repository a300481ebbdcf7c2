"""Fine-tuning, the from-scratch baseline, and the prune command's refit / int8 / retraining options."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinknet.ship import modelio, runs
from shrinknet.repair import retrain, scaling
from shrinknet.cli import UserError, cli
from shrinknet.cli.prune import _check_retrain
from shrinknet.store.memory import network_bytes
from shrinknet.repair.train import mlp


def blobs(n=300, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    X = (g.normal(size=(n, 4)) + np.eye(3, 4)[y] * 1.5).astype(np.float32)
    return X, y


def invoke(*args):
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrain")
    X, y = blobs()
    np.savez(tmp / "blobs.npz", X=X, y=y)
    r = invoke("train", "--data", tmp / "blobs.npz", "--hidden", "9,7", "--epochs", "30", "--out", tmp / "model")
    assert r.exit_code == 0, r.output
    return tmp, tmp / "model" / "model.safetensors"


def small_problem(seed=0):
    X, y = blobs(seed=seed)
    model = mlp([4, 6, 5, 3], "sigmoid", "sigmoid", seed=seed)
    T = np.eye(3, dtype=np.float32)[y]
    return model, (X[:150], T[:150]), (X[150:225], T[150:225]), (X[225:], T[225:])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("int8", [False, True])
def test_finetune_never_lowers_validation_accuracy_and_is_reproducible(seed, int8):
    model, tr, va, _ = small_problem(seed)
    before = [p.detach().clone() for p in model.parameters()]
    start = retrain.evaluate(model, *va, "mse")
    a, fa = retrain.finetune(model, *tr, *va, epochs=8, lr=0.05, seed=seed, int8=int8)
    b, fb = retrain.finetune(model, *tr, *va, epochs=8, lr=0.05, seed=seed, int8=int8)
    assert all(torch.equal(x, y) for x, y in zip(before, model.parameters()))  # input untouched
    assert fa == fb and all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert fa["start_val_accuracy"] == start[1]
    assert retrain.evaluate(a, *va, "mse")[1] >= start[1]
    assert fa["val_accuracy"] == retrain.evaluate(a, *va, "mse")[1]


def test_finetune_keeps_the_start_when_training_only_hurts():
    model, tr, va, _ = small_problem(0)
    # train on shuffled labels: nothing learned can beat the start on validation, so it is kept
    bad_T = tr[1][np.random.default_rng(0).permutation(len(tr[1]))]
    tuned0, _ = retrain.finetune(model, tr[0], tr[1], *va, epochs=30, lr=0.05)
    start = retrain.evaluate(tuned0, *va, "mse")
    tuned, facts = retrain.finetune(tuned0, tr[0], bad_T, *va, epochs=5, lr=0.5)
    assert retrain.evaluate(tuned, *va, "mse")[1] >= start[1]
    if facts["kept_start"]:
        assert all(torch.equal(x, y) for x, y in zip(tuned.parameters(), tuned0.parameters()))


def test_scratch_baseline_is_seeded_and_has_the_shape():
    model, tr, va, te = small_problem(0)
    recipe = {"epochs": 5, "lr": 0.01, "batch_size": 32, "patience": 3}
    a = retrain.scratch_baseline(model, *tr, *va, *te, recipe=recipe, seeds=(0, 1))
    b = retrain.scratch_baseline(model, *tr, *va, *te, recipe=recipe, seeds=(0, 1))
    assert a == b and [r["seed"] for r in a] == [0, 1] and a[0] != a[1]
    line = retrain.baseline_summary([{"name": "pruned", "kind": "run", "test_accuracy": 0.0, "test_error": 1.0},
                                     *[{"kind": "scratch", **r} for r in a]])
    assert "did NOT beat" in line


def test_prune_int8_refit_finetune_baseline_end_to_end(trained, tmp_path):
    tmp, model = trained
    out = tmp_path / "run"
    r = invoke("prune", model, "--budget", "200B", "--dtype", "int8", "--refit", "final", "--finetune", "5",
               "--baseline", "scratch", "--export", "onnx,c", "--no-analyze", "--out", out)
    assert r.exit_code == 0, r.output
    assert "fine-tuned" in r.output and "from scratch at the same shape" in r.output
    run = runs.load_run(out)
    k = run["extras"]["chosen_step"]
    step = run["result"].steps[k]
    assert step.bytes <= 200
    assert run["result"].config["refit"] == "final" and run["result"].config["dtype"] == "int8"
    kinds = [p["kind"] for p in run["extras"]["frontier"]]
    assert kinds[:3] == ["run", "plain", "finetuned"] and kinds.count("scratch") == 3
    saved, meta = modelio.load_model(out / "model.safetensors")
    assert network_bytes(saved, "int8") == step.bytes and meta["pruned"]["refit"] == "final"
    header = (out / "model.h").read_text()
    assert re.search(rf"#define SHRINKNET_FLASH_BYTES {step.bytes}\b", header)
    r = invoke("report", out, "--out", tmp_path / "report")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert (tmp_path / "report" / "frontier.png").is_file() and "from scratch" in page


def test_retrain_options_need_training_data_and_a_recipe():
    class NoTrain:
        def sizes(self):
            return {"train": 0, "val": 10, "test": 10}

    class WithTrain:
        def sizes(self):
            return {"train": 10, "val": 10, "test": 10}

    with pytest.raises(UserError, match="--finetune needs training data"):
        _check_retrain(NoTrain(), {"training": {}}, 5, None)
    with pytest.raises(UserError, match="--baseline scratch needs training data"):
        _check_retrain(NoTrain(), {"training": {"lr": 0.01}}, None, "scratch")
    with pytest.raises(UserError, match="records none"):
        _check_retrain(WithTrain(), {}, None, "scratch")
    _check_retrain(WithTrain(), {"training": {"lr": 0.01}}, 5, "scratch")


def test_refit_with_too_few_calibration_instances_is_one_line(trained, tmp_path):
    tmp, model = trained
    X, _ = blobs(n=15, seed=3)
    y = np.arange(15) % 3  # 5 per class: 9 training rows, fewer than the 9 + 1 the refit needs
    np.savez(tmp_path / "few.npz", X=X, y=y)
    r = CliRunner().invoke(cli, ["prune", str(model), "--data", str(tmp_path / "few.npz"), "--budget", "1KiB", "--no-analyze",
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert re.fullmatch(r"error: refit needs at least 10 calibration instances .*turn refit off\n", r.output)
    assert not (tmp_path / "out").exists()


def test_scratch_baseline_with_identity_scaling_is_the_plain_one():
    """The standardize-and-fold path of the baseline, with mean 0 and std 1, trains the same networks."""
    model, tr, va, te = small_problem(1)
    recipe = {"epochs": 4, "lr": 0.01, "batch_size": 32, "patience": 3}
    plain = retrain.scratch_baseline(model, *tr, *va, *te, recipe=recipe, seeds=(0,))
    ident = {"mean": np.zeros(4), "std": np.ones(4)}
    scaled = retrain.scratch_baseline(model, *tr, *va, *te, recipe=recipe, seeds=(0,), scaling=ident)
    assert scaled[0]["test_accuracy"] == plain[0]["test_accuracy"]
    assert scaled[0]["test_error"] == pytest.approx(plain[0]["test_error"], rel=1e-5)


def _digits_images(n=240, seed=0):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(X))[:n]
    return (X[idx] / 16).astype(np.float32), y[idx]


@pytest.mark.parametrize("int8,scaled", [(False, False), (True, False), (False, True)],
                         ids=["float32", "int8", "per-channel-scaled"])
def test_scratch_baseline_of_a_cnn_trains_the_kept_cnn_literally(int8, scaled):
    """A CNN's baseline is train --arch cnn's network with the kept channels (BatchNorm and all), trained
    with the recipe and folded: checked against doing exactly that by hand (it used to train an MLP whose
    hidden widths were the channel counts)."""
    pytest.importorskip("sklearn")
    from shrinknet.repair import train
    from shrinknet.model.parse import as_net
    from shrinknet.store.quantize import fake_quantize

    X, y = _digits_images()
    T = np.eye(10, dtype=np.float32)[y]
    recipe = {"arch": "cnn", "input_shape": [1, 8, 8], "channels": [4, 6], "activation": "relu",
              "out_activation": "identity", "epochs": 3, "lr": 0.01, "batch_size": 32, "patience": 3}
    kept = as_net(train.cnn((1, 8, 8), 10, (3, 2), seed=5).eval()).to_sequential()  # a pruned shape: [3, 2]
    tr, va, te = (X[:120], T[:120]), (X[120:180], T[120:180]), (X[180:], T[180:])
    rec = scaling.record_channels([0.25], "0") if scaled else None
    got = retrain.scratch_baseline(kept, *tr, *va, *te, loss="cross_entropy", recipe=recipe, seeds=(1,), int8=int8,
                                   scaling=rec)

    fresh = train.cnn((1, 8, 8), 10, (3, 2), "relu", "identity", seed=1)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fresh)
    s = 0.25 if scaled else 1.0  # trained on x / s, then W[:, 0] / s folded into the first convolution
    log = train.train(fresh, tr[0] / s, tr[1], va[0] / s, va[1], loss="cross_entropy", epochs=3, lr=0.01,
                      batch_size=32, patience=3, seed=1)
    folded = as_net(fresh.eval()).to_sequential()
    with torch.no_grad():
        folded[0].weight.copy_((folded[0].weight.double() / s).float())
    if int8:
        with torch.no_grad():
            for m in folded:
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    m.weight.copy_(fake_quantize(m.weight.reshape(len(m.weight), -1)).view_as(m.weight))
    assert [m.out_channels for m in folded if isinstance(m, torch.nn.Conv2d)] == [3, 2]
    terr, tacc = retrain.evaluate(folded, *te, "cross_entropy")
    verr, vacc = retrain.evaluate(folded, *va, "cross_entropy")
    assert got == [{"seed": 1, "test_error": terr, "test_accuracy": tacc, "val_error": verr, "val_accuracy": vacc,
                    "epochs_run": log.epochs}]


def test_scratch_baseline_of_a_cnn_without_its_recipe_is_refused():
    from shrinknet.repair import train

    kept = train.cnn((1, 8, 8), 10, (3, 2), seed=0)
    X, y = _digits_images(60)
    with pytest.raises(ValueError, match="recipe train --arch cnn records"):
        retrain.scratch_baseline(kept, X, y, X, y, None, None, loss="cross_entropy", recipe={"epochs": 1})
    with pytest.raises(ValueError, match="conv blocks"):
        retrain.scratch_baseline(kept, X, y, X, y, None, None, loss="cross_entropy",
                                 recipe={"arch": "cnn", "input_shape": [1, 8, 8], "channels": [4, 6, 8]})
