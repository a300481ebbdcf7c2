"""Per-channel input scaling folded into a first convolution (train --arch cnn --standardize).

Slow twins: the unfolded network run on x / s (the division done literally, float64) for the fold;
a loop over channels of numpy's std and the floor rule for ``fit_channels``; a loop over instances
and channels for ``scale_channels``; the unfolded training pipeline written out for ``train_on``;
torch on raw inputs for the ONNX and C exports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shrinknet
from shrinknet.data import datasets
from shrinknet.ship import modelio
from shrinknet.repair import scaling, train
from shrinknet.cli import cli
from shrinknet.workflows.experiments import evaluate, train_on

from test_export import TOL, cc, compile_and_run, stream_driver  # noqa: F401  (cc is a fixture)


@dataclass(frozen=True)
class Case:
    dims: int  # 1: Conv1d, 2: Conv2d
    c_in: int
    padding: int
    stride: int = 1
    dilation: int = 1
    batchnorm: bool = False
    constant: bool = False  # the last input channel is constant (its scale is 1)

    @property
    def id(self) -> str:
        return (f"conv{self.dims}d-c{self.c_in}-p{self.padding}-s{self.stride}-d{self.dilation}"
                f"{'-bn' if self.batchnorm else ''}{'-const' if self.constant else ''}")


CASES = [
    Case(1, 1, 0), Case(1, 3, 1, stride=2, batchnorm=True), Case(1, 3, 2, dilation=2, constant=True),
    Case(2, 1, 0, batchnorm=True), Case(2, 1, 1), Case(2, 3, 1, stride=2, constant=True),
    Case(2, 3, 2, dilation=2), Case(2, 3, 2, stride=2, dilation=2, batchnorm=True, constant=True),
]


def _shape(c: Case) -> tuple:
    return (c.c_in, 11) if c.dims == 1 else (c.c_in, 9, 8)


def raw_images(c: Case, n: int = 16, seed: int = 0) -> torch.Tensor:
    """Channels on very different scales and offsets (pixel-like, tiny, ordinary); the last one
    constant (7) in a ``constant`` case: what unscaled images look like."""
    g = torch.Generator().manual_seed(seed)
    shape = _shape(c)
    scale = torch.tensor([255.0, 0.01, 3.0])[: c.c_in]
    shift = torch.tensor([128.0, -5.0, 1.0])[: c.c_in]
    view = (1, -1, *[1] * (len(shape) - 1))
    X = torch.randn(n, *shape, generator=g, dtype=torch.float64) * scale.view(view) + shift.view(view)
    if c.constant:
        X[:, -1] = 7.0
    return X


def conv_net(c: Case, seed: int = 1) -> nn.Sequential:
    """conv (the case's settings) -> [BatchNorm, eval, random statistics] -> tanh -> conv -> relu
    -> flatten -> linear, float64, random weights."""
    Conv, BN = (nn.Conv1d, nn.BatchNorm1d) if c.dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    torch.manual_seed(seed)
    first = Conv(c.c_in, 4, 3, stride=c.stride, padding=c.padding, dilation=c.dilation)
    mods = [first, *([BN(4)] if c.batchnorm else []), nn.Tanh(), Conv(4, 3, 2, padding=1), nn.ReLU(), nn.Flatten()]
    model = nn.Sequential(*mods).double().eval()
    with torch.no_grad():
        n_flat = model(torch.zeros(1, *_shape(c), dtype=torch.float64)).shape[1]
        if c.batchnorm:
            bn = model[1]
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    model.append(nn.Linear(n_flat, 2).double())
    return model.eval()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_folded_conv_on_raw_inputs_equals_the_network_on_scaled_inputs(case):
    X = raw_images(case)
    s = scaling.fit_channels(X.numpy(), _shape(case))
    model = conv_net(case)
    folded = scaling.fold(model, np.zeros(case.c_in), s)
    with torch.no_grad():
        # the slow twin: the unfolded network on x / s_c, the division written out per channel
        Z = X.clone()
        for ch in range(case.c_in):
            Z[:, ch] = X[:, ch] / float(s[ch])
        want = model(Z)
        torch.testing.assert_close(folded(X), want, rtol=1e-12, atol=1e-12)
        # shrinknet's own parse of it (BatchNorm folded too) takes raw inputs the same way
        torch.testing.assert_close(shrinknet.as_net(folded).to_sequential()(X), want, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(folded(X), model(X))  # the fold did something: these inputs are unscaled
    # only the first conv's weight changed: W'[o, c] = W[o, c] / s_c; its bias, a BatchNorm and the rest kept
    W, W_f = model[0].weight, folded[0].weight
    for ch in range(case.c_in):
        torch.testing.assert_close(W_f[:, ch] * float(s[ch]), W[:, ch], rtol=1e-14, atol=0)
    assert torch.equal(folded[0].bias, model[0].bias)
    for a, b in zip(list(model.state_dict().items())[2:], list(folded.state_dict().items())[2:]):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert torch.equal(model[0].weight, W) and model is not folded  # the input model is left alone


@pytest.mark.parametrize("padding", [1, 2], ids=lambda p: f"p{p}")
def test_centring_cannot_be_folded_into_a_zero_padded_conv(padding):
    """Why there is no centring: folding (x - m) / s as b' = b - sum W' m matches in the interior
    but not where the kernel reaches the padding (a padded 0 meant x = m before, x = 0 after)."""
    case = Case(2, 1, padding)
    X = raw_images(case)
    m, s = float(X.mean()), float(X.std())
    conv = conv_net(case)[0]
    centred = nn.Conv2d(1, 4, 3, padding=padding).double()
    with torch.no_grad():
        centred.weight.copy_(conv.weight / s)
        centred.bias.copy_(conv.bias - centred.weight.sum(dim=(1, 2, 3)) * m)
        want, got = conv((X - m) / s), centred(X)
    inner = (slice(None), slice(None), slice(padding, -padding), slice(padding, -padding))
    torch.testing.assert_close(got[inner], want[inner], rtol=1e-10, atol=1e-9)
    assert (got - want).abs().max() > 0.1  # the border differs by far more than rounding (1e-12)
    with pytest.raises(ValueError, match="cannot be centred exactly"):
        scaling.fold(conv_net(case), np.array([m]), np.array([s]))


def test_fit_channels_is_the_floor_rule_per_channel():
    """The slow twin: numpy's std of each channel's values over all instances and positions, then
    fit's rule by hand: 1 for a constant channel, at least STD_FLOOR x range for a nearly constant one."""
    g = np.random.default_rng(0)
    X = np.zeros((200, 4, 5, 6))
    X[:, 0] = g.normal(size=(200, 5, 6)) * 40 + 100  # ordinary
    X[7, 1, 2, 3] = 255.0  # nearly constant: 0 but at one position of one image
    X[:, 2] = 3.0  # constant
    X[:, 3] = g.uniform(0, 1, size=(200, 5, 6))  # ordinary, small
    s = scaling.fit_channels(X.reshape(200, -1), (4, 5, 6))
    for c in range(4):
        v = X[:, c].ravel()
        want = 1.0 if v.std() <= 1e-12 * (1 + abs(v.mean())) else max(v.std(), scaling.STD_FLOOR * (v.max() - v.min()))
        assert s[c] == pytest.approx(want, rel=1e-12)
    assert s[0] == pytest.approx(X[:, 0].std(), rel=1e-12) and s[3] == pytest.approx(X[:, 3].std(), rel=1e-12)
    assert s[1] == pytest.approx(scaling.STD_FLOOR * 255.0) and X[:, 1].std() < s[1]
    assert s[2] == 1.0
    centred = (X - X.mean(axis=(0, 2, 3), keepdims=True)) / s.reshape(1, 4, 1, 1)
    assert np.abs(centred).max() <= 1 / scaling.STD_FLOOR + 1e-9  # the floor's bound, per channel
    np.testing.assert_array_equal(scaling.fit_channels(X, (4, 5, 6)), s)  # shaped or flat rows alike


@pytest.mark.parametrize("shape", [(1, 7), (3, 7), (1, 4, 5), (3, 4, 5)], ids=lambda s: "x".join(map(str, s)))
def test_scale_channels_divides_each_channel_in_either_layout(shape):
    g = np.random.default_rng(1)
    X = (g.normal(size=(6, *shape)) * 50).astype(np.float32)
    s = g.uniform(0.5, 20, size=shape[0])
    want = np.empty_like(X)
    for n in range(len(X)):
        for c in range(shape[0]):
            want[n, c] = (X[n, c].astype(np.float64) / s[c]).astype(np.float32)
    got = scaling.scale_channels(X, s, shape)
    assert got.dtype == np.float32 and got.shape == X.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(scaling.scale_channels(X.reshape(6, -1), s, shape), want.reshape(6, -1))


def test_fold_of_unit_scales_changes_nothing():
    model = conv_net(CASES[5])
    folded = scaling.fold_channels(model, np.ones(3))
    for (ka, a), (kb, b) in zip(model.state_dict().items(), folded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)


def test_fold_channels_refuses_what_it_cannot_fold():
    model = conv_net(CASES[5])  # 3 input channels
    with pytest.raises(ValueError, match="scaling has 2 channels but the network takes 3 input channels"):
        scaling.fold_channels(model, np.ones(2))
    with pytest.raises(ValueError, match="scaling std must be positive"):
        scaling.fold_channels(model, np.array([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="the first layer is Linear"):
        scaling.fold_channels(train.mlp([4, 3, 2]), np.ones(4))
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten())
    with pytest.raises(ValueError, match="groups=2"):
        scaling.fold_channels(grouped, np.ones(2))
    with pytest.raises(ValueError, match="values each but the shape"):
        scaling.scale_channels(np.ones((2, 10)), np.ones(1), (1, 3, 3))


def test_first_layer_walks_nested_sequentials_and_skips_identity():
    conv = nn.Conv2d(1, 2, 3)
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Dropout(), conv, nn.ReLU()), nn.Flatten())
    assert scaling.first_layer(model) == ("1.1", conv)


# -- training and the command line ----------------------------------------------------------------
SHAPE = (1, 8, 8)  # digits as images (pixels 0..1: the scale s, about 2.5, still changes the weights)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits", size=300, seed=0)


def test_train_on_standardize_is_the_unfolded_pipeline_folded(digits):
    """The slow twin written out: fit the scales, train the same CNN (same seed) on x / s, parse it
    (BatchNorm folded); train_on's folded model on raw inputs gives its outputs on x / s."""
    kw = dict(epochs=3, lr=1e-2, batch_size=64, patience=20, seed=0)
    model, meta = train_on(digits, (4, 8), "relu", "identity", "cross_entropy", standardize=True, input_shape=SHAPE,
                           **kw)
    s = scaling.fit_channels(digits.inputs("train"), SHAPE)
    twin = train.cnn(SHAPE, digits.out_features, (4, 8), "relu", "identity", seed=0)
    view = lambda X: torch.as_tensor(X / s[0], dtype=torch.float32).reshape(len(X), *SHAPE)  # noqa: E731
    train.train(twin, view(digits.inputs("train")), digits.targets("train", "cross_entropy"),
                view(digits.inputs("val")), digits.targets("val", "cross_entropy"), loss="cross_entropy", **kw)
    twin = shrinknet.as_net(twin.eval()).to_sequential()
    X = digits.inputs("test")
    with torch.no_grad():
        torch.testing.assert_close(model(torch.as_tensor(X).reshape(-1, *SHAPE)), twin(view(X)), rtol=1e-5, atol=1e-5)
    rec = meta["scaling"]
    assert rec["per_channel"] and not rec["centered"] and rec["mean"] == [0.0] and rec["folded_into"] == "0"
    assert rec["std"] == pytest.approx(s.tolist(), rel=1e-12)
    assert meta["metrics"] == evaluate(model, digits, "cross_entropy")  # the folded model, on raw inputs
    assert any("folded into the first convolution" in n for n in meta["training"]["notes"])


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_train_cnn_standardize_end_to_end(cc, tmp_path):  # noqa: F811
    ort = pytest.importorskip("onnxruntime")
    data, shape = datasets.load("mnist5k-784", size=300, seed=0), (1, 28, 28)  # pixels 0..255
    common = ("train", "--data", "mnist5k-784", "--size", 300, "--arch", "cnn", "--channels", "4,8", "--epochs", 4,
              "--loss", "cross_entropy")
    r = _run(*common, "--out", tmp_path / "raw")
    assert r.exit_code == 0, r.output
    assert "hint: inputs look unscaled (largest |value| 255); try train --standardize" in r.stderr  # the way out
    r = _run(*common, "--standardize", "--out", tmp_path / "std")
    assert r.exit_code == 0, r.output
    assert "hint" not in r.stderr and "folded into the first convolution" in r.stdout
    path = tmp_path / "std" / "model.safetensors"
    model, meta = modelio.load_model(path)
    assert meta["scaling"]["per_channel"] and meta["scaling"]["mean"] == [0.0]
    assert meta["scaling"]["std"] == pytest.approx(scaling.fit_channels(data.inputs("train"), shape).tolist())
    X = np.ascontiguousarray(data.inputs("test").reshape(-1, *shape), dtype=np.float32)  # raw pixels 0..255
    with torch.no_grad():
        want = model(torch.from_numpy(X)).numpy()
    assert (want.argmax(1) == data.y_test).mean() == pytest.approx(meta["metrics"]["test_accuracy"])
    assert meta["metrics"]["test_accuracy"] > 0.5  # learned on raw inputs (chance 0.1)

    info = _run("info", path)
    assert info.exit_code == 0
    assert ("inputs: trained scaled per channel (divided by std "
            f"{meta['scaling']['std'][0]:.4g} of the one input channel, not centred" in info.stdout)
    assert "folded into the first convolution: the model and its exports take raw inputs" in info.stdout

    for fmt in ("onnx", "c"):
        r = _run("export", path, "--format", fmt, "--out", tmp_path / "e" / f"model.{fmt}")
        assert r.exit_code == 0, r.output
    y = compile_and_run(cc, tmp_path / "e", C_DRIVER, ["model.c"], X.tobytes())
    assert np.abs(np.frombuffer(y, np.float32).reshape(want.shape) - want).max() <= TOL["float32"]
    sess = ort.InferenceSession(str(tmp_path / "e" / "model.onnx"), providers=["CPUExecutionProvider"])
    (y_onnx,) = sess.run(["output"], {"input": X})
    assert np.abs(y_onnx - want).max() <= TOL["float32"]

    # prune reads the raw inputs of the recorded split: nothing to do for the scaling
    r = _run("--quiet", "prune", path, "--budget", 12000, "--no-analyze", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    small, pmeta = modelio.load_model(tmp_path / "p" / "model.safetensors")
    assert sum(p.numel() for p in small.parameters()) * 4 <= 12000
    assert pmeta["scaling"] == meta["scaling"]  # surgery cuts output channels; the first conv's inputs stay as folded
    # the from-scratch baseline trains the kept CNN on x / s_c and folds it, as train did
    r = _run("--quiet", "prune", path, "--budget", 12000, "--no-analyze", "--baseline", "scratch", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert "from scratch at the same shape" in r.stdout


C_DRIVER = stream_driver("model.h", "shrinknet")


def test_describe_says_what_the_record_holds():
    per_channel = scaling.describe(scaling.record_channels([0.25, 2.0, 1.0], "0"))
    assert "divided by std 0.25..2 over 3 input channels, not centred" in per_channel
    assert "first convolution" in per_channel
    # the MLP line, as info printed it before per-channel records existed
    assert scaling.describe(scaling.record([1.0, -2.0], [0.5, 3.0])) == (
        "inputs: trained standardized (mean -2..1, std 0.5..3 over 2 features), scaling folded into the first "
        "layer: the model and its exports take raw inputs")


def test_fold_still_takes_a_parsed_mlp():
    """fold's MLP path accepts a parsed Net as before (the conv check looks at nn.Modules only)."""
    model = train.mlp([3, 4, 2], "sigmoid", seed=0, dtype=torch.float64)
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    a, b = scaling.fold(shrinknet.as_net(model), mean, std), scaling.fold(model, mean, std)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
