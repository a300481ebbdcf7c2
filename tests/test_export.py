"""Export: ONNX (run in onnxruntime), C99 (compiled with the system cc), safetensors, bad input.

Every exported network is compared with torch on the same random inputs: float32 exports against
the float32 network, float16 exports against the network whose weights were rounded to float16.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from shrinknet.ship.export import DTYPES, ExportResult, export
from shrinknet.store.memory import network_bytes
from shrinknet.ship.modelio import load_model
from shrinknet.model.parse import as_net
from shrinknet.model.surgery import shrink

ACTS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "softplus_b1.5": lambda: nn.Softplus(beta=1.5),
    # a low threshold so that torch's linear branch (beta * x > threshold -> x) is taken often
    "softplus_b1.5_t2": lambda: nn.Softplus(beta=1.5, threshold=2.0),
    # no linear branch: a threshold no format can write as a constant becomes the plain formula
    "softplus_tinf": lambda: nn.Softplus(beta=1.0, threshold=float("inf")),
    "none": None,
}
IN, HIDDEN, OUT = 7, (5, 9, 3), 3  # odd widths
N_INPUTS = 200
TOL = {"float32": 1e-5, "float16": 1e-3, "int8": 1e-5}  # int8: against the dequantized network


@dataclass(frozen=True)
class Case:
    act: str  # hidden activation
    depth: int  # hidden layers
    bias: bool
    out_act: str = "none"
    pruned: bool = False  # built wider, then cut down with surgery.shrink

    @property
    def id(self) -> str:
        bias = "bias" if self.bias else "nobias"
        return f"{self.act}-d{self.depth}-{bias}-out_{self.out_act}{'-pruned' if self.pruned else ''}"


def cases() -> list[Case]:
    """Every hidden activation at every depth, bias alternating; a few output activations; three
    networks pruned by surgery."""
    table = []
    for a, act in enumerate(a for a in ACTS if a != "none"):
        for depth in (1, 2, 3):
            out_act = "sigmoid" if (a, depth) == (0, 2) else "tanh" if (a, depth) == (1, 3) else "none"
            table.append(Case(act, depth, bias=(a + depth) % 2 == 0, out_act=out_act))
    table += [
        Case("relu", 2, bias=True, pruned=True),
        Case("sigmoid", 3, bias=False, pruned=True),
        Case("softplus_b1.5_t2", 3, bias=True, out_act="softplus", pruned=True),
        Case("softplus_tinf", 2, bias=True, out_act="softplus_tinf"),
    ]
    return table


CASES = cases()


def build(case: Case, seed: int = 0) -> nn.Sequential:
    """A float32 network of ``case``; pruned ones start 2 neurons wider per hidden layer."""
    g = torch.Generator().manual_seed(seed)
    hidden = [h + 2 * case.pruned for h in HIDDEN[: case.depth]]
    sizes = [IN, *hidden, OUT]
    mods: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        lin = nn.Linear(sizes[k], sizes[k + 1], bias=case.bias)
        with torch.no_grad():  # outputs of order 1, so that an absolute tolerance means something
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / sizes[k] ** 0.5)
            if case.bias:
                lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=g))
        act = ACTS[case.out_act if k == len(sizes) - 2 else case.act]
        mods += [lin] if act is None else [lin, act()]
    model = nn.Sequential(*mods)
    if case.pruned:  # remove every third neuron (starting with the second) of every hidden layer
        masks = [torch.arange(h) % 3 != 1 for h in hidden]
        model = shrink(model, masks)
        assert as_net(model).hidden_sizes == tuple(int(m.sum()) for m in masks)
    return model


def inputs(seed: int = 1) -> torch.Tensor:
    return 1.5 * torch.randn(N_INPUTS, IN, generator=torch.Generator().manual_seed(seed))


def int8_by_spec(W) -> tuple[np.ndarray, np.ndarray]:
    """(q, s): int8 storage of a weight matrix or kernel written from its spec (the docstring of
    shrinknet/quantize.py), without the package's code; q has W's shape, s one scale per output unit.

    Per output unit i, over its row w_i = W.reshape(out, -1)[i] (a Linear row, a convolution's output
    channel's whole kernel):
        s_i  = max_j |w_ij| / 127, a float32; an all-zero row: s_i = 1 and every q_ij = 0
        q_ij = round(w_ij / s_i), half to even (as torch.round), clamped to [-127, 127]
    and s_i is iterated to a fixed point: requantizing the dequantized row (float32 q_ij * s_i) must
    give back the same s_i, else the dequantized row is quantized again (the docstring's idempotence).
    Reading taken: the quotients are formed in float64 from the weights as given (float32 or float64,
    both exact in a Python float; one rounding each), then s_i is rounded to float32 -- Python floats
    here, one weight at a time.
    """
    W = np.asarray(W)
    rows = W.reshape(W.shape[0], -1)
    q = np.zeros(rows.shape, dtype=np.int8)
    s = np.ones(len(rows), dtype=np.float32)

    def scale_of(values) -> np.float32:
        m = max(abs(float(v)) for v in values)
        return np.float32(m / 127) if m > 0 else np.float32(1.0)

    for i, row in enumerate(rows):
        w = [float(v) for v in row]
        for _ in range(8):
            scale = scale_of(w)
            qi = [min(127, max(-127, round(v / float(scale)))) for v in w]  # round(): half to even
            deq = [np.float32(np.float32(k) * scale) for k in qi]  # the device's float32 product
            if scale_of(deq) == scale:
                break
            w = [float(v) for v in deq]
        else:
            raise AssertionError(f"row {i}: the scale reached no fixed point in 8 rounds")
        q[i], s[i] = qi, scale
    return q.reshape(W.shape), s


def dequantized_by_spec(W) -> np.ndarray:
    """The float32 weights the device computes with: q_ij * s_i (a float32 product) from
    :func:`int8_by_spec`."""
    q, s = int8_by_spec(W)
    return (q.astype(np.float32) * s.reshape(-1, *[1] * (q.ndim - 1))).astype(np.float32)


def reference(model: nn.Sequential, dtype: str) -> np.ndarray:
    """torch's float32 outputs on ``inputs()``, with weights rounded to ``dtype`` first (int8:
    each weight row quantized and dequantized by the spec's twin, biases float32)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if dtype == "int8" and name.endswith("weight"):
                p.copy_(torch.from_numpy(dequantized_by_spec(p.detach().float().numpy())))
            elif dtype == "int8":
                p.copy_(p.float())
            else:
                p.copy_(p.to(getattr(torch, dtype)).float())
        return ref(inputs()).numpy()


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def widest(model) -> int:
    return max(as_net(model).hidden_sizes)


# -- ONNX -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_matches_torch(case, dtype, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'shrinknet[export]'")
    model = build(case)
    res = export(model, tmp_path / "model.onnx", format="onnx", dtype=dtype)
    assert res == ExportResult([tmp_path / "model.onnx"], network_bytes(model, dtype), 0, "onnx", dtype)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(res.paths[0]), opts, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input", ["batch", IN], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("output", ["batch", OUT], "tensor(float)")
    (y,) = sess.run(["output"], {"input": inputs().numpy()})
    assert max_diff(y, reference(model, dtype)) <= TOL[dtype]


def test_onnx_stores_float16_initializers_and_meta(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'shrinknet[export]'")
    model = build(CASES[0])
    export(as_net(model), tmp_path / "m.onnx", dtype="float16", meta={"dataset": "digits"})
    proto = onnx.load(str(tmp_path / "m.onnx"))
    weights = [t for t in proto.graph.initializer if t.name.endswith((".weight", ".bias"))]
    assert weights and {t.data_type for t in weights} == {onnx.TensorProto.FLOAT16}
    assert {p.key: p.value for p in proto.metadata_props} == {"shrinknet.meta": '{"dataset": "digits"}'}
    assert proto.opset_import[0].version == 17


# -- C ----------------------------------------------------------------------------------------
CFLAGS = ["-std=c99", "-pedantic", "-O2", "-Wall", "-Wextra", "-Werror"]


@pytest.fixture(scope="module")
def cc() -> str:
    path = shutil.which("cc")
    if path is None:
        pytest.skip("no C compiler: 'cc' is not on PATH, so the generated C cannot be compiled")
    return path


def stream_driver(header: str = "model.h", prefix: str = "shrinknet") -> str:
    """A C main that runs ``<prefix>_forward`` on every instance read from stdin, writing the outputs."""
    P = prefix.upper()
    return f"""\
#include <stdio.h>
#include "{header}"

int main(void)
{{
    static float in[{P}_INPUT_SIZE], out[{P}_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {{
        {prefix}_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }}
    return 0;
}}
"""


def compile_and_run(cc: str, tmp_path, driver: str, sources: list[str], stdin: bytes = b"") -> bytes:
    (tmp_path / "driver.c").write_text(driver)
    exe = tmp_path / "driver"
    subprocess.run([cc, *CFLAGS, "-o", str(exe), "driver.c", *sources, "-lm"], cwd=tmp_path, check=True,
                   capture_output=True, text=True)
    return subprocess.run([str(exe)], input=stdin, capture_output=True, check=True).stdout


DRIVER = """\
#include <stdio.h>
#include <string.h>
#include "float32.h"
#include "float16.h"
#include "int8.h"

/* Reads float32 rows of FLOAT32_INPUT_SIZE from stdin; for each writes the float32 network's
 * output, the float16 network's output, and the float32 output computed in place. */
int main(void)
{
    float in[FLOAT32_INPUT_SIZE], out[FLOAT32_OUTPUT_SIZE];
    float both[FLOAT32_INPUT_SIZE > FLOAT32_OUTPUT_SIZE ? FLOAT32_INPUT_SIZE : FLOAT32_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {
        float32_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        float16_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        int8_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
        memcpy(both, in, sizeof in);
        float32_forward(both, both);
        fwrite(both, sizeof out, 1, stdout);
    }
    return 0;
}
"""


def defines(header: str, prefix: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(rf"#define {prefix.upper()}_(\w+) (\d+)", header)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_c_matches_torch(case, cc, tmp_path):
    """One compile per network: both dtypes, linked side by side under different prefixes."""
    model = build(case)
    for dtype in DTYPES:
        res = export(model, tmp_path / f"{dtype}.c", format="c", dtype=dtype, prefix=dtype)
        flash = network_bytes(model, dtype)
        paths = [tmp_path / f"{dtype}.c", tmp_path / f"{dtype}.h"]
        assert (res.paths, res.flash_bytes, res.format, res.dtype) == (paths, flash, "c", dtype)
        assert 0 < res.ram_bytes <= 2 * widest(model) * 4
        header = res.paths[1].read_text()
        assert defines(header, dtype) == {
            "INPUT_SIZE": IN, "OUTPUT_SIZE": OUT, "FLASH_BYTES": flash, "RAM_BYTES": res.ram_bytes,
        }
        assert f"Flash: {flash} bytes" in header and f"RAM:   {res.ram_bytes} bytes" in header
    out = compile_and_run(cc, tmp_path, DRIVER, ["float32.c", "float16.c", "int8.c"], inputs().numpy().tobytes())
    y32, y16, y8, y32_in_place = np.frombuffer(out, dtype=np.float32).reshape(N_INPUTS, 4, OUT).transpose(1, 0, 2)
    assert max_diff(y8, reference(model, "int8")) <= TOL["int8"]
    assert max_diff(y32, reference(model, "float32")) <= TOL["float32"]
    assert max_diff(y16, reference(model, "float16")) <= TOL["float16"]
    assert np.array_equal(y32_in_place, y32)


HALF_DRIVER = """\
#include <stdio.h>
#include "net.c"

int main(void)
{
    long i;
    for (i = 0; i < 65536L; i++) {
        float f = half_to_float((uint16_t)i);
        fwrite(&f, sizeof f, 1, stdout);
    }
    return 0;
}
"""


def test_c_half_decoder_is_exact_for_every_bit_pattern(cc, tmp_path):
    """The generated float16 -> float converter against numpy, on all 65536 patterns
    (zeros, subnormals, normals, infinities, NaNs)."""
    export(build(CASES[0]), tmp_path / "net.c", format="c", dtype="float16")
    got = np.frombuffer(compile_and_run(cc, tmp_path, HALF_DRIVER, []), dtype=np.float32)
    want = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # signed zeros too


# -- safetensors ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "int8"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_safetensors_round_trip(case, dtype, tmp_path):
    model = build(case)
    res = export(model, tmp_path / "m.safetensors", format="safetensors", dtype=dtype, meta={"case": case.id})
    assert res == ExportResult([tmp_path / "m.safetensors"], network_bytes(model, dtype), 0, "safetensors", dtype)
    loaded, meta = load_model(res.paths[0], dtype=torch.float32)
    assert meta == {"case": case.id}
    with torch.no_grad():
        y = loaded(inputs()).numpy()
    np.testing.assert_allclose(y, reference(model, dtype), rtol=1e-6, atol=1e-6)


# -- bad input --------------------------------------------------------------------------------
FORMAT_PATHS = {"onnx": "m.onnx", "c": "m.c", "safetensors": "m.safetensors"}


def test_unknown_format_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'.*onnx, c, safetensors"):
        export(build(CASES[0]), tmp_path / "m.tflite", format="tflite")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", FORMAT_PATHS)
def test_unknown_dtype_names_the_choices(fmt, tmp_path):
    with pytest.raises(ValueError, match="unknown export dtype 'int4'.*float32, float16, int8"):
        export(build(CASES[0]), tmp_path / FORMAT_PATHS[fmt], format=fmt, dtype="int4")
    assert not any(tmp_path.iterdir())


def test_safetensors_refuses_int8(tmp_path):
    with pytest.raises(ValueError, match="safetensors export stores float weights.*onnx or c"):
        export(build(CASES[0]), tmp_path / "m.safetensors", format="safetensors", dtype="int8")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", FORMAT_PATHS)
def test_missing_directory_writes_nothing(fmt, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(build(CASES[0]), tmp_path / "missing" / FORMAT_PATHS[fmt], format=fmt)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", FORMAT_PATHS)
def test_unsupported_network_is_named(fmt, tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.Conv1d(1, 1, 3), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"layer 1 \(Conv1d\) is not supported"):
        export(model, tmp_path / FORMAT_PATHS[fmt], format=fmt)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("prefix", ["1net", "my-net", "net.v2", ""])
def test_c_prefix_must_be_an_identifier(prefix, tmp_path):
    with pytest.raises(ValueError, match="not a C identifier"):
        export(build(CASES[0]), tmp_path / "m.c", format="c", prefix=prefix)


def test_c_path_must_end_in_dot_c(tmp_path):
    with pytest.raises(ValueError, match="ending in .c"):
        export(build(CASES[0]), tmp_path / "m.h", format="c")
    assert not any(tmp_path.iterdir())


def test_c_header_removed_when_source_cannot_be_written(tmp_path):
    (tmp_path / "m.c").mkdir()  # refused by the check before any work (export's own, not only the CLI's)
    with pytest.raises(ValueError, match="is a directory"):
        export(build(CASES[0]), tmp_path / "m.c", format="c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.c"]
    assert not any((tmp_path / "m.c").iterdir())


@pytest.mark.parametrize("fmt", FORMAT_PATHS)
def test_weights_beyond_float16_range_are_refused(fmt, tmp_path):
    model = build(CASES[0])
    with torch.no_grad():
        model[0].weight[0, 0] = 1e5
    with pytest.raises(ValueError, match="layer 0 weight .*not finite at float16"):
        export(model, tmp_path / FORMAT_PATHS[fmt], format=fmt, dtype="float16")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["onnx", "c"])
@pytest.mark.parametrize("threshold, beta", [(float("nan"), 1.0), (float("-inf"), 1.0), (20.0, float("inf")),
                                             (20.0, 1e39)], ids=["nan-threshold", "-inf-threshold", "inf-beta",
                                                                 "beta-beyond-float32"])
def test_softplus_constants_that_cannot_be_written_are_refused(fmt, threshold, beta, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="onnx is not installed: pip install 'shrinknet[export]'")
    model = nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=beta, threshold=threshold), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="layer 0: softplus .* cannot be exported"):
        export(model, tmp_path / FORMAT_PATHS[fmt], format=fmt)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt,name", [("onnx", "b.c"), ("onnx", "b.safetensors"), ("safetensors", "b.onnx")])
def test_export_refuses_a_file_name_that_says_another_format(tmp_path, fmt, name):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=f"ending in .{fmt}"):
        export(model, tmp_path / name, format=fmt)
    assert list(tmp_path.iterdir()) == []


# -- one export path: the layer modules write the MLP's ONNX and C (issue #11) ---------------
# Their outputs were bitwise those of shrinknet 0.2's own MLP exporter on this grid when the move
# was made; what stays pinned is that every format computes the stored network to float32
# rounding (far inside TOL), the scratch is exactly the stated RAM, and int8 files hold exactly
# the int8 values and scales of the spec (int8_by_spec).
def linears(model) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def ram_by_hand(model) -> int:
    """Slow twin of the C scratch of an MLP: the two widest consecutive hidden layers (h_0 alone
    for one hidden layer), float32."""
    h = [lin.out_features for lin in linears(model)[:-1]]
    return 4 * max([h[0]] + [a + b for a, b in zip(h, h[1:])])


def assert_float32_rounding(y: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_onnx_computes_the_stored_network_to_float32_rounding(case, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'shrinknet[export]'")
    model = build(case)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for dtype in DTYPES:
        export(model, tmp_path / f"{dtype}.onnx", format="onnx", dtype=dtype)
        sess = ort.InferenceSession(str(tmp_path / f"{dtype}.onnx"), opts, providers=["CPUExecutionProvider"])
        assert_float32_rounding(sess.run(["output"], {"input": inputs().numpy()})[0], reference(model, dtype))


def test_c_computes_the_stored_network_to_float32_rounding(cc, tmp_path):
    """Every case at every dtype linked into one program (each under its own prefix: the static
    identifiers keep them apart); the scratch buffer of each is exactly the hand-counted RAM."""
    prefixes = []
    for i, case in enumerate(CASES):
        model = build(case)
        for dtype in DTYPES:
            prefix = f"c{i}_{dtype}"
            res = export(model, tmp_path / f"{prefix}.c", format="c", dtype=dtype, prefix=prefix)
            assert res.ram_bytes == ram_by_hand(model), case.id
            assert f"static float scratch[{res.ram_bytes // 4}];" in res.paths[0].read_text()
            prefixes.append(prefix)
    driver = ("#include <stdio.h>\n" + "".join(f'#include "{p}.h"\n' for p in prefixes)
              + f"int main(void)\n{{\n    static float in[{IN}], out[{OUT}];\n"
              + "    while (fread(in, sizeof in, 1, stdin) == 1) {\n"
              + "".join(f"        {p}_forward(in, out);\n        fwrite(out, sizeof out, 1, stdout);\n"
                        for p in prefixes)
              + "    }\n    return 0;\n}\n")
    out = compile_and_run(cc, tmp_path, driver, [f"{p}.c" for p in prefixes], inputs().numpy().tobytes())
    ys = np.frombuffer(out, dtype=np.float32).reshape(N_INPUTS, len(prefixes), OUT).transpose(1, 0, 2)
    for i, case in enumerate(CASES):
        model = build(case)
        for j, dtype in enumerate(DTYPES):
            assert_float32_rounding(ys[i * len(DTYPES) + j], reference(model, dtype))


def c_array(source: str, name: str) -> np.ndarray:
    """The numbers of ``static const <type> <name>[n] = {...};`` in a C source, as written (int8
    values, or float32 decimals that read back exactly)."""
    m = re.search(rf"static const \w+ {name}\[(\d+)\] = \{{(.*?)\}};", source, re.S)
    items = [v.strip() for v in m.group(2).split(",")]
    assert len(items) == int(m.group(1))
    if items[0].endswith("f"):
        return np.array([float(v[:-1]) for v in items], dtype=np.float32)
    return np.array([int(v) for v in items], dtype=np.int8)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_int8_files_hold_exactly_the_spec_int8(case, tmp_path):
    """ONNX initializers and C arrays rebuild bit for bit the spec's int8 values and scales of
    every layer (and the float32 biases); ONNX: a DequantizeLinear along axis 0 feeds each Gemm;
    the documented names, opset 17 and IR version 8."""
    onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'shrinknet[export]'")
    from onnx import numpy_helper

    model = build(case)
    export(model, tmp_path / "m.onnx", format="onnx", dtype="int8")
    source = export(model, tmp_path / "m.c", format="c", dtype="int8").paths[0].read_text()
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert (proto.ir_version, [o.version for o in proto.opset_import]) == (8, [17])
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    for k, lin in enumerate(linears(model)):
        q, scale = map(torch.from_numpy, int8_by_spec(lin.weight.detach().numpy()))
        p = f"layers.{k}"
        assert inits[f"{p}.weight"].dtype == np.int8 and np.array_equal(inits[f"{p}.weight"], q.numpy())
        assert inits[f"{p}.weight_scale"].dtype == np.float32
        assert np.array_equal(inits[f"{p}.weight_scale"].view(np.uint32), scale.numpy().view(np.uint32))
        assert inits[f"{p}.weight_zero_point"].dtype == np.int8 and not inits[f"{p}.weight_zero_point"].any()
        (gemm,) = [n for n in proto.graph.node if n.name == f"{p}.linear"]
        deq = producer[gemm.input[1]]
        assert (deq.op_type, list(deq.input)) == ("DequantizeLinear", [f"{p}.weight", f"{p}.weight_scale",
                                                                       f"{p}.weight_zero_point"])
        assert [a.i for a in deq.attribute if a.name == "axis"] == [0]
        assert np.array_equal(c_array(source, f"layer{k}_weight"), q.numpy().reshape(-1))
        assert np.array_equal(c_array(source, f"layer{k}_scale").view(np.uint32), scale.numpy().view(np.uint32))
        if lin.bias is None:
            assert f"{p}.bias" not in inits and f"layer{k}_bias" not in source
        else:
            bias = lin.bias.detach().numpy()
            assert np.array_equal(inits[f"{p}.bias"], bias) and np.array_equal(c_array(source, f"layer{k}_bias"), bias)
