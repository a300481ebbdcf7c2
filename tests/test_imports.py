"""Foreign models (ONNX from torch.onnx.export, custom nn.Modules via torch.fx) -> nn.Sequential.

Each model here is a custom ``nn.Module`` with a ``twin()``: the equivalent hand-built ``nn.Sequential``
of the very same weights. Checked: the imported Sequential computes what onnxruntime computes from the
file (1e-5), pruning it equals pruning the twin bit for bit, and every refusal is one InputError line
naming the node. The .tflite importer is checked in test_imports_tflite.py.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shrinknet
from helpers import damaged_outcomes
from shrinknet import PruneConfig
from shrinknet.errors import InputError
from shrinknet.model.imports import notes_of, to_sequential

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

QUIET = PruneConfig(progress=False, start_check="skip")  # random untrained networks
SHORT = PruneConfig(progress=False, start_check="skip", max_fraction=0.3)
ACT = {"relu": (F.relu, nn.ReLU), "tanh": (torch.tanh, nn.Tanh), "sigmoid": (torch.sigmoid, nn.Sigmoid),
       "softplus": (F.softplus, nn.Softplus), "leaky": (lambda x: F.leaky_relu(x, 0.1), lambda: nn.LeakyReLU(0.1)),
       "relu6": (F.relu6, nn.ReLU6)}


def _fill(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.6 if p.ndim > 1 else 0.3))
        for b in m.modules():
            if isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)):
                b.running_mean.copy_(0.3 * torch.randn(b.num_features, generator=g))
                b.running_var.copy_(0.5 + torch.rand(b.num_features, generator=g))
    return m.eval()


class MLP(nn.Module):
    def __init__(self, act: str, softmax: bool = False, bn: bool = False, depth: int = 2, image: bool = False):
        super().__init__()
        self.act, self.softmax, self.image = act, softmax, image
        sizes = [6, 7, 5, 4][: depth + 1] + [3]
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.bn = nn.BatchNorm1d(sizes[1]) if bn else None

    def forward(self, x):
        if self.image:  # (N, 1, 2, 3) images flattened first
            x = x.view(x.size(0), -1)
        for k, lin in enumerate(self.lins):
            x = lin(x)
            if k == 0 and self.bn is not None:
                x = self.bn(x)
            if k < len(self.lins) - 1:
                x = ACT[self.act][0](x)
        return torch.softmax(x, -1) if self.softmax else x

    def twin(self):
        mods = [nn.Flatten()] if self.image else []
        for k, lin in enumerate(self.lins):
            mods += [lin] + ([self.bn] if k == 0 and self.bn is not None else [])
            mods += [ACT[self.act][1]()] if k < len(self.lins) - 1 else []
        return nn.Sequential(*mods)


class CNN(nn.Module):
    """conv (+BN) + act + pool, conv + act, flatten (three ways), Linear + act, Linear."""

    def __init__(self, dims: int, act: str, pool: str, flat: str, bn: bool, reshape_input: bool):
        super().__init__()
        Conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.dims, self.act, self.pool, self.flat, self.reshape_input = dims, act, pool, flat, reshape_input
        self.c1 = Conv(2, 4, 3, padding=1, bias=not bn)
        self.bn = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(4) if bn else None
        self.c2 = Conv(4, 3, 2)
        # 6 -> c1 (pad 1) 6 -> pool 3 -> c2 2; global: 6 -> c2 5 -> 1
        self.f, self.g = nn.Linear(3 if pool == "global" else 2**dims * 3, 5), nn.Linear(5, 3)
        self.in_shape = (2, 6) if dims == 1 else (2, 6, 6)

    def _pool(self, x):
        if self.pool == "max":
            return (F.max_pool1d if self.dims == 1 else F.max_pool2d)(x, 2)
        if self.pool == "avg":
            return (F.avg_pool1d if self.dims == 1 else F.avg_pool2d)(x, 2)
        return x

    def forward(self, x):
        if self.reshape_input:
            x = x.view(-1, *self.in_shape)
        a = ACT[self.act][0]
        x = self.c1(x)
        x = self._pool(a(self.bn(x) if self.bn is not None else x))
        x = a(self.c2(x))
        if self.pool == "global":
            x = (F.adaptive_avg_pool1d if self.dims == 1 else F.adaptive_avg_pool2d)(x, 1)
        x = {"view": lambda t: t.view(t.size(0), -1), "flatten": lambda t: t.flatten(1),
             "torch": lambda t: torch.flatten(t, 1)}[self.flat](x)
        return self.g(a(self.f(x)))

    def twin(self):
        d1 = self.dims == 1
        pool = {"max": (nn.MaxPool1d if d1 else nn.MaxPool2d)(2), "avg": (nn.AvgPool1d if d1 else nn.AvgPool2d)(2),
                "global": None}[self.pool]
        A = ACT[self.act][1]
        mods = [self.c1] + ([self.bn] if self.bn is not None else []) + [A()] + ([pool] if pool else [])
        mods += [self.c2, A()]
        mods += [(nn.AdaptiveAvgPool1d if d1 else nn.AdaptiveAvgPool2d)(1)] if self.pool == "global" else []
        return nn.Sequential(*mods, nn.Flatten(), self.f, A(), self.g)


class PaddedCNN(nn.Module):
    """A strided padded conv and a padded max pool (TFLite's SAME cannot express them: PAD ops in .tflite)."""

    def __init__(self):
        super().__init__()
        self.c, self.f, self.g = nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Linear(27, 4), nn.Linear(4, 3)
        self.in_shape = (2, 8, 8)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c(x)), 2, padding=1)
        return self.g(F.relu(self.f(torch.flatten(x, 1))))

    def twin(self):
        return nn.Sequential(self.c, nn.ReLU(), nn.MaxPool2d(2, padding=1), nn.Flatten(), self.f, nn.ReLU(), self.g)


class MatMulMLP(nn.Module):
    """x @ W + b (as tf2onnx writes dense layers): MatMul + Add in the file."""

    def __init__(self):
        super().__init__()
        self.W1, self.b1 = nn.Parameter(torch.zeros(6, 5)), nn.Parameter(torch.zeros(5))
        self.W2 = nn.Parameter(torch.zeros(5, 3))

    def forward(self, x):
        return torch.tanh(x @ self.W1 + self.b1) @ self.W2

    def twin(self):
        l1, l2 = nn.Linear(6, 5), nn.Linear(5, 3, bias=False)
        with torch.no_grad():
            l1.weight.copy_(self.W1.T), l1.bias.copy_(self.b1), l2.weight.copy_(self.W2.T)
        return nn.Sequential(l1, nn.Tanh(), l2)


MODELS = {
    "mlp-relu-softmax": lambda: MLP("relu", softmax=True),
    "mlp-tanh-bn": lambda: MLP("tanh", bn=True),
    "mlp-sigmoid-d3": lambda: MLP("sigmoid", depth=3),
    "mlp-softplus": lambda: MLP("softplus"),
    "mlp-leaky": lambda: MLP("leaky"),
    "mlp-relu6": lambda: MLP("relu6", depth=1),
    "mlp-image-input": lambda: MLP("tanh", image=True),
    "cnn2d-relu-max-view-bn": lambda: CNN(2, "relu", "max", "view", True, False),
    "cnn2d-tanh-avg-flatten-reshapein": lambda: CNN(2, "tanh", "avg", "flatten", False, True),
    "cnn2d-sigmoid-global-torch": lambda: CNN(2, "sigmoid", "global", "torch", True, False),
    "cnn1d-relu6-max-torch": lambda: CNN(1, "relu6", "max", "torch", False, False),
    "cnn1d-leaky-avg-view-bn-reshapein": lambda: CNN(1, "leaky", "avg", "view", True, True),
    "cnn2d-strided-padded": PaddedCNN,
    "matmul-add": MatMulMLP,
}


def build(name: str, seed: int = 0):
    m = _fill(MODELS[name](), seed)
    shape = (6,) if not isinstance(m, (CNN, PaddedCNN)) else \
        ((int(np.prod(m.in_shape)),) if getattr(m, "reshape_input", False) else m.in_shape)
    shape = (1, 2, 3) if getattr(m, "image", False) else shape
    X = torch.randn(10, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return m, X


def export(m: nn.Module, X: torch.Tensor, path, **kw) -> None:
    """torch.onnx.export's TorchScript exporter (dynamo=False: the dynamo one needs onnxscript), eval
    BatchNorm kept as a node (PRESERVE) so the file has BatchNormalization."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (X,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}}, training=torch.onnx.TrainingMode.PRESERVE, **kw)


def runtime(path, X: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X.numpy()})[0]


def run(seq: nn.Sequential, X: torch.Tensor) -> torch.Tensor:
    shape = getattr(seq, "shrinknet_input_shape", None)
    with torch.no_grad():
        y = seq(X.reshape(len(X), *shape) if shape and X.ndim == 2 else X)
    return torch.softmax(y, -1) if any("Softmax taken off" in s for s in notes_of(seq)) else y


def steps(result) -> list[dict]:
    return [dataclasses.asdict(s) for s in result.steps]


def prune_both(a, Xa, b, Xb):
    T = torch.randn(len(Xa), 3, generator=torch.Generator().manual_seed(7))
    kw = dict(method="brute_force", algorithm="iterative", config=QUIET)
    return steps(shrinknet.prune(a, Xa, T, **kw)), steps(shrinknet.prune(b, Xb, T, **kw))


# -- ONNX ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_matches_runtime_and_prunes_like_twin(name, tmp_path):
    m, X = build(name)
    path = tmp_path / "m.onnx"
    export(m, X, path)
    seq = to_sequential(path)
    assert isinstance(seq, nn.Sequential)
    np.testing.assert_allclose(run(seq, X).numpy(), runtime(path, X), atol=1e-5, rtol=0)
    twin = m.twin()
    Xt = X.reshape(len(X), *m.in_shape) if getattr(m, "reshape_input", False) else X
    got, want = prune_both(seq, X, twin, Xt)
    assert got == want  # bit for bit: same weights, same parse
    if m.__dict__.get("softmax"):
        assert any("Softmax taken off" in s for s in notes_of(seq))


def _quantize_weights(model, fp16: bool):
    """Rewrite every 2-D+ float initializer as int8 + DequantizeLinear(axis 0), per channel (or as float16 +
    Cast to float32): what quantization tools and float16 converters write, made here with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    new_inits, new_nodes = [], []
    for t in list(g.initializer):
        w = numpy_helper.to_array(t)
        if w.dtype != np.float32 or (w.ndim < 2 and not fp16):
            new_inits.append(t)
            continue
        if fp16:
            new_inits.append(numpy_helper.from_array(w.astype(np.float16), t.name + "_f16"))
            new_nodes.append(helper.make_node("Cast", [t.name + "_f16"], [t.name], to=TensorProto.FLOAT))
            continue
        scale = (np.abs(w).reshape(len(w), -1).max(1) / 127).astype(np.float32)
        q = np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))).astype(np.int8)
        new_inits += [numpy_helper.from_array(q, t.name + "_q"), numpy_helper.from_array(scale, t.name + "_s"),
                      numpy_helper.from_array(np.zeros(len(w), np.int8), t.name + "_z")]
        new_nodes.append(helper.make_node("DequantizeLinear", [t.name + "_q", t.name + "_s", t.name + "_z"],
                                          [t.name], axis=0))
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return model


@pytest.mark.parametrize("fp16", [False, True], ids=["int8-qdq", "float16"])
@pytest.mark.parametrize("name", ["mlp-tanh-bn", "cnn2d-relu-max-view-bn", "matmul-add"])
def test_onnx_quantized_weights_dequantized(name, fp16, tmp_path):
    m, X = build(name)
    export(m, X, tmp_path / "f.onnx")
    model = _quantize_weights(onnx.load(str(tmp_path / "f.onnx")), fp16)
    path = tmp_path / "q.onnx"
    onnx.save(model, str(path))
    seq = to_sequential(path)
    np.testing.assert_allclose(run(seq, X).numpy(), runtime(path, X), atol=1e-5, rtol=0)
    assert any(("dequantized" if not fp16 else "float16") in s for s in notes_of(seq))
    shrinknet.prune(seq, X, torch.randn(len(X), 3), config=SHORT)


@pytest.mark.parametrize("name", ["cnn2d-relu-max-view-bn", "mlp-tanh-bn", "mlp-sigmoid-d3", "mlp-relu-softmax"])
def test_onnx_static_qdq_from_onnxruntime_tools(name, tmp_path):
    """onnxruntime.quantization's QDQ graph: weights dequantized (within half a step), the activations'
    fake quantization dropped, and the ReLUs that the tool folds into a QuantizeLinear kept."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    m, X = build(name)
    export(m, X, tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter({"x": X[i: i + 1].numpy()} for i in range(len(X)))

        def get_next(self):
            return next(self.rows, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    seq = to_sequential(tmp_path / "q.onnx")
    twin = nn.Sequential(*[x for x in m.twin() if not (m.__dict__.get("softmax") and x is None)])
    assert [type(x) for x in seq] == [type(x) for x in twin]  # no Relu node is left in the file, yet ReLUs are
    for a, b in zip(seq.parameters(), twin.parameters()):
        if a.ndim > 1:
            dims = tuple(range(1, b.ndim))
            assert torch.all((a - b).abs().amax(dim=dims) <= b.abs().amax(dim=dims) / 127 / 2 * 1.01 + 1e-7)
    assert any("fake quantization" in s for s in notes_of(seq))


# -- refusals ----------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.b(h + x)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(8, 3)

    def forward(self, x):
        return self.c(torch.cat([torch.tanh(self.a(x)), torch.sigmoid(self.b(x))], 1))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x, y):
        return self.b(F.relu(self.a(x)) * y)


class Exp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.exp(self.a(x)))


def _export_args(m, X):
    return (X, torch.randn(len(X), 4)) if isinstance(m, TwoInputs) else (X,)


def _custom_op(model):
    n = [n for n in model.graph.node if n.op_type == "Relu"][0]
    n.op_type, n.domain = "MyRelu", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    return model


ONNX_REFUSALS = {  # name: (module, graph edit, words the one line must hold)
    "residual-add": (Residual, None, ["Add node", "two activations"]),
    "concat": (Concat, None, ["Concat node", "two activations"]),
    "two-inputs": (TwoInputs, None, ["2 inputs"]),
    "unsupported-op": (Exp, None, ["Exp node", "not supported"]),
    "custom-op": (lambda: MLP("relu"), _custom_op, ["MyRelu node", "custom op"]),
}


@pytest.mark.parametrize("name", list(ONNX_REFUSALS))
def test_onnx_refusals_one_line(name, tmp_path):
    cls, edit, words = ONNX_REFUSALS[name]
    m = _fill(cls(), 0)
    X = torch.randn(4, 6)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, _export_args(m, X), str(path), dynamo=False)
    if edit is not None:
        onnx.save(edit(onnx.load(str(path))), str(path))
    with pytest.raises(InputError) as e:
        to_sequential(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg


def _forge_dims(model):
    t = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    t.dims[:] = [2**31, 2**31]  # 2^62 values declared: materializing it would need exabytes
    return model


def _external(model):
    t = model.graph.initializer[0]
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="/etc/passwd")
    return model


@pytest.mark.parametrize("forge,words", [(_forge_dims, "declares"), (_external, "external data")],
                         ids=["huge-declared-shape", "external-data"])
def test_onnx_forged_initializers_refused_before_allocating(forge, words, tmp_path):
    m, X = build("mlp-tanh-bn")
    export(m, X, tmp_path / "m.onnx")
    path = tmp_path / "forged.onnx"
    path.write_bytes(forge(onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)).SerializeToString())
    with pytest.raises(InputError, match=words):
        to_sequential(path)


@pytest.mark.parametrize("seed", range(4))
def test_onnx_damaged_bytes_never_crash(seed, tmp_path):
    """Truncations and random byte flips: a Sequential or one InputError line, nothing else."""
    m, X = build("cnn2d-relu-max-view-bn")
    export(m, X, tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    rng = np.random.RandomState(seed)
    assert "InputError" in damaged_outcomes(data, tmp_path / "bad.onnx", 40, rng)


# -- custom modules via torch.fx ---------------------------------------------------------------------
# x @ W reads a parameter directly, and a softmax in forward is the user's to drop: both refused, below
FX_MODELS = [n for n in MODELS if n not in ("matmul-add", "mlp-relu-softmax")]


@pytest.mark.parametrize("name", FX_MODELS)
def test_fx_traced_equals_twin_bit_for_bit(name):
    m, X = build(name)
    seq = to_sequential(m)
    twin = m.twin()
    Xt = X.reshape(len(X), *m.in_shape) if getattr(m, "reshape_input", False) else X
    assert torch.equal(run(seq, X), run(twin, Xt))
    assert torch.equal(run(seq, X), m(X).detach())
    got, want = prune_both(m, X, twin, Xt)  # shrinknet.prune on the custom module itself
    assert got == want
    r = shrinknet.prune(m, X, torch.randn(len(X), 3), config=SHORT)
    assert isinstance(r.network(len(r.steps) - 1), nn.Sequential)


def test_sequential_passes_through_untouched():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert to_sequential(seq) is seq


class ParamDirect(MatMulMLP):
    pass


class SizeOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)).view(x.size(1), -1))


FX_REFUSALS = {
    "residual-add": (Residual, ["add", "two activations", "test_imports.py:", "h + x"]),
    "concat": (Concat, ["cat", "two activations", "torch.cat"]),
    "two-inputs": (TwoInputs, ["second input"]),
    "unsupported-function": (Exp, ["exp", "not supported", "torch.exp"]),
    "parameter-used-directly": (ParamDirect, ["W1", "parameter"]),
    "size-not-batch": (SizeOne, ["size", "batch"]),
    "softmax": (lambda: MLP("relu", softmax=True), ["softmax", "cross_entropy"]),
}


@pytest.mark.parametrize("name", list(FX_REFUSALS))
def test_fx_refusals_name_node_and_source_line(name):
    cls, words = FX_REFUSALS[name]
    with pytest.raises(InputError) as e:
        shrinknet.prune(_fill(cls(), 0), torch.randn(4, 6), torch.randn(4, 3), config=QUIET)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


# -- shrinknet's own exports come back in ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("name", ["mlp-tanh-bn", "cnn2d-relu-max-view-bn", "cnn1d-relu6-max-torch"])
def test_own_onnx_export_reimports(name, dtype, tmp_path):
    m, X = build(name)
    twin = m.twin()
    Xt = X.reshape(len(X), *m.in_shape) if getattr(m, "reshape_input", False) else X
    path = tmp_path / "own.onnx"
    shrinknet.export(twin, path, format="onnx", dtype=dtype, input_shape=tuple(Xt.shape[1:]))
    seq = to_sequential(path)
    np.testing.assert_allclose(run(seq, Xt).numpy(), runtime(path, Xt), atol=1e-5, rtol=0)
    if dtype == "float32":
        folded = shrinknet.as_net(twin).to_sequential()  # what the file holds: BatchNorm folded, as export does
        got, want = prune_both(seq, Xt, folded, Xt)
        assert got == want
    else:
        assert notes_of(seq)  # the dequantization is said


# -- fx over the existing CNN and MLP grids --------------------------------------------------------------
class Functional(nn.Module):
    """A custom module computing what ``seq`` computes, with F.* calls and views where torch has them."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        self.layers = nn.ModuleList(seq)

    def forward(self, x):
        for m in self.layers:
            if type(m) is nn.ReLU:
                x = F.relu(x)
            elif type(m) is nn.Tanh:
                x = torch.tanh(x)
            elif type(m) is nn.Sigmoid:
                x = x.sigmoid()
            elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
                f = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
                x = f(x, m.kernel_size, m.stride, m.padding, m.dilation)
            elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
                f = F.avg_pool1d if isinstance(m, nn.AvgPool1d) else F.avg_pool2d
                x = f(x, m.kernel_size, m.stride, m.padding)
            elif isinstance(m, nn.Flatten):
                x = x.view(x.shape[0], -1)
            else:
                x = m(x)
        return x


def _grid():
    import cnn_helpers
    import helpers

    cases = [pytest.param(lambda s=s: cnn_helpers.build(s), id="cnn-" + s.id) for s in cnn_helpers.SETTINGS[::2]]
    cases += [pytest.param(lambda s=s: helpers.build(s), id="mlp-" + s.id) for s in helpers.SETTINGS[::5]]
    return cases


@pytest.mark.parametrize("make", _grid())
def test_fx_on_existing_grid_bit_for_bit(make):
    model, _, X, T = make()
    loss = "mse" if T.dtype.is_floating_point else "cross_entropy"
    custom = Functional(model)
    with torch.no_grad():
        assert torch.equal(to_sequential(custom)(X), model(X))
    kw = dict(method="brute_force", algorithm="iterative", loss=loss, config=QUIET)
    assert steps(shrinknet.prune(custom, X, T, **kw)) == steps(shrinknet.prune(model, X, T, **kw))


def test_onnx_modelproto_in_memory(tmp_path):
    m, X = build("mlp-sigmoid-d3")
    export(m, X, tmp_path / "m.onnx")
    a, b = to_sequential(onnx.load(str(tmp_path / "m.onnx"))), to_sequential(tmp_path / "m.onnx")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_path_given_to_the_api_is_imported(tmp_path):
    """shrinknet.prune("m.onnx", ...) prunes exactly what prune(to_sequential("m.onnx"), ...) does; a
    safetensors path gets one line naming load_model."""
    m, X = build("mlp-sigmoid-d3")
    export(m, X, tmp_path / "m.onnx")
    T = torch.randn(len(X), 3, generator=torch.Generator().manual_seed(7))
    kw = dict(method="brute_force", algorithm="iterative", config=QUIET)
    assert steps(shrinknet.prune(str(tmp_path / "m.onnx"), X, T, **kw)) == steps(
        shrinknet.prune(to_sequential(tmp_path / "m.onnx"), X, T, **kw))
    with pytest.raises(shrinknet.InputError, match="imports .onnx and .tflite model files here"):
        shrinknet.as_net(tmp_path / "m.safetensors")
