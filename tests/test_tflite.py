""".tflite export (ship/tflite.py): TFLite Micro's interpreter computes exactly the integer reference
(and so exactly the integer-only C), the float32 model computes the torch network; read back with
the schema bindings, the file holds what the spec asks (int8 per-channel weights, int32 biases);
bad input refused in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from integer_cases import CASES, calibration, named
from helpers import litert_outputs
from torch import nn

pytest.importorskip("tflite")
pytest.importorskip("tflite_micro")

from shrinknet.errors import InputError  # noqa: E402
from shrinknet.model.parse import as_net  # noqa: E402
from shrinknet.ship.tflite import export_tflite, run_tflm, tflite_model, to_tflite_input  # noqa: E402
from shrinknet.store.integer import quantize_network  # noqa: E402

FLOAT_ONLY = [  # sigmoid and tanh: float32 .tflite only (LOGISTIC, TANH)
    ("mlp-sigmoid-tanh", lambda: nn.Sequential(nn.Linear(6, 9), nn.Sigmoid(), nn.Linear(9, 5), nn.Tanh(),
                                               nn.Linear(5, 3)), (6,)),
    ("cnn-pool-then-sigmoid", lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.Sigmoid(), nn.Flatten(),
                                                     nn.Linear(3 * 3 * 3, 2)), (1, 8, 8)),
]


def integer_case(case, n: int = 40):
    inet = quantize_network(case.build(), calibration(case))
    q = inet.quantize_input(calibration(case, n, seed=4) * torch.linspace(0.2, 2.5, n).view(-1, *[1] * len(case.shape)))
    return inet, q


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tflm_int8_equals_the_integer_reference_exactly(case):
    inet, q = integer_case(case)
    out, arena = run_tflm(tflite_model(inet), to_tflite_input(q.numpy(), inet.in_shape))
    want = inet.forward(q).numpy()
    assert out.dtype == np.int8 and np.array_equal(out, want)
    assert len(np.unique(want)) > 3
    assert arena is not None and arena > inet.ram_bytes()


def test_tflm_equals_the_integer_c(tmp_path):
    """The chain closed directly: TFLM's int8 outputs and the integer-only C's, compiled with cc."""
    from test_c_integer import int8_driver
    from test_export import compile_and_run
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    from shrinknet.ship.c_integer import export_integer_c

    case = named("cnn2d-max-avg")
    inet, q = integer_case(case)
    export_integer_c(inet, tmp_path / "net.c", prefix="net")
    c_out = compile_and_run(shutil.which("cc"), tmp_path, int8_driver("net"), ["net.c"], q.numpy().tobytes())
    tflm, _ = run_tflm(tflite_model(inet), to_tflite_input(q.numpy(), inet.in_shape))
    assert np.array_equal(np.frombuffer(c_out, np.int8).reshape(tflm.shape), tflm)


@pytest.mark.parametrize("name,make,shape", [(c.name, c.make, c.shape) for c in CASES] + FLOAT_ONLY,
                         ids=lambda v: v if isinstance(v, str) else "")
def test_tflm_float32_computes_the_torch_network(name, make, shape):
    torch.manual_seed(0)
    model = make()
    net = as_net(model)
    X = torch.randn(16, *shape)
    net.prepare_input(X)
    out, _ = run_tflm(tflite_model(net), to_tflite_input(X.numpy(), shape).astype(np.float32))
    with torch.no_grad():
        want = model(X).numpy()
    assert np.abs(out - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("case", [CASES[0], named("cnn2d-max-avg")], ids=lambda c: c.name)
def test_litert_runs_the_file_too(case):
    """The standard runtime (LiteRT, optimized kernels) loads the same file: float32 as torch, int8
    within one step (its optimized kernels round differently from TFLM's reference ones)."""
    pytest.importorskip("ai_edge_litert.interpreter")
    inet, q = integer_case(case, 12)
    got = litert_outputs(tflite_model(inet), to_tflite_input(q.numpy(), inet.in_shape))
    assert np.abs(got.astype(int) - inet.forward(q).numpy()).max() <= 1


def test_file_holds_per_channel_int8_weights_and_int32_biases(tmp_path):
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    case = named("cnn2d-max-avg")
    inet, _ = integer_case(case, 2)
    res = export_tflite(inet, tmp_path / "m.tflite")
    m = tflite.Model.GetRootAsModel(res.paths[0].read_bytes(), 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    ops = [names[m.OperatorCodes(g.Operators(i).OpcodeIndex()).BuiltinCode()] for i in range(g.OperatorsLength())]
    assert ops == ["CONV_2D", "MAX_POOL_2D", "CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]
    t_in = g.Tensors(g.Inputs(0))
    assert t_in.Type() == TensorType.INT8 and list(t_in.ShapeAsNumpy()) == [1, 11, 11, 2]  # NHWC
    assert t_in.Quantization().ZeroPoint(0) == inet.input_q.zero_point
    for i, op in enumerate(inet.params):
        o = g.Operators([k for k, n in enumerate(ops) if n in ("CONV_2D", "FULLY_CONNECTED")][i])
        w, b = g.Tensors(o.Inputs(1)), g.Tensors(o.Inputs(2))
        assert w.Type() == TensorType.INT8 and b.Type() == TensorType.INT32
        qw = w.Quantization()
        assert qw.QuantizedDimension() == 0 and np.array_equal(qw.ScaleAsNumpy(), op.w_scale.numpy())
        assert not qw.ZeroPointAsNumpy().any()
        data = m.Buffers(b.Buffer()).DataAsNumpy().view(np.int32)
        assert np.array_equal(data, op.bias.numpy())


@pytest.mark.parametrize("what", ["softplus", "avgpool-padding", "suffix"])
def test_what_tflite_cannot_express_is_one_line(what, tmp_path):
    if what == "softplus":
        net = as_net(nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 2)))
        call = lambda: tflite_model(net)  # noqa: E731
    elif what == "avgpool-padding":
        net = as_net(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(32, 2)))
        net.bind((1, 8, 8))
        call = lambda: tflite_model(net)  # noqa: E731
    else:
        inet, _ = integer_case(CASES[0], 2)
        call = lambda: export_tflite(inet, tmp_path / "m.onnx")  # noqa: E731
    with pytest.raises(InputError) as e:
        call()
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
