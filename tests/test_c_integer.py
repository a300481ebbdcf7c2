"""Integer-only C (ship/c_integer.py): compiled with the host cc, its int8 outputs equal the integer
reference (store/integer.py) bit for bit; the header's macros; no float, double, math.h or
division in inner loops in the .c; bad prefix/path refused with nothing written.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from integer_cases import CASES, calibration, named
from test_export import cc, compile_and_run, defines  # noqa: F401  (cc: the fixture)

from shrinknet.ship.c_integer import export_integer_c
from shrinknet.store.integer import quantize_network

N = 300


def int8_driver(prefix: str) -> str:
    P = prefix.upper()
    return f"""\
#include <stdio.h>
#include "{prefix}.h"

int main(void)
{{
    static int8_t in[{P}_INPUT_SIZE], out[{P}_OUTPUT_SIZE];
    while (fread(in, sizeof in, 1, stdin) == 1) {{
        {prefix}_forward(in, out);
        fwrite(out, sizeof out, 1, stdout);
    }}
    return 0;
}}
"""


def make_inputs(case, inet) -> torch.Tensor:
    """Quantized instances: calibration-like, beyond the calibration range, and the int8 extremes."""
    X = calibration(case, N, seed=5) * torch.linspace(0.2, 3.0, N).view(-1, *([1] * len(case.shape)))
    q = inet.quantize_input(X)
    q[0] = -128
    q[1] = 127
    return q


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_integer_c_equals_the_reference_bit_for_bit(case, cc, tmp_path):  # noqa: F811
    inet = quantize_network(case.build(), calibration(case))
    res = export_integer_c(inet, tmp_path / "net.c", prefix="net")
    assert res.paths == [tmp_path / "net.c", tmp_path / "net.h"]
    q = make_inputs(case, inet)
    out = compile_and_run(cc, tmp_path, int8_driver("net"), ["net.c"], q.numpy().tobytes())
    got = np.frombuffer(out, dtype=np.int8).reshape(N, inet.out_features)
    want = inet.forward(q).numpy()
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 3  # the outputs are not all clamped to one value


@pytest.mark.parametrize("case", [CASES[0], named("cnn2d-max-avg")], ids=lambda c: c.name)
def test_header_states_sizes_quantization_and_bytes(case, tmp_path):
    inet = quantize_network(case.build(), calibration(case))
    res = export_integer_c(inet, tmp_path / "m.c", prefix="m")
    header = res.paths[1].read_text()
    want = {"INPUT_SIZE": inet.in_features, "OUTPUT_SIZE": inet.out_features, "FLASH_BYTES": inet.flash_bytes(),
            "RAM_BYTES": inet.ram_bytes()}
    want |= {f"{n}_ZERO_POINT": q.zero_point for n, q in (("INPUT", inet.input_q), ("OUTPUT", inet.output_q))
             if q.zero_point >= 0}  # defines() reads non-negative numbers; the regex below reads all
    assert {k: v for k, v in defines(header, "m").items() if not k.endswith("_SCALE")} == want
    for name, q in (("INPUT", inet.input_q), ("OUTPUT", inet.output_q)):
        scale = float(re.search(rf"#define M_{name}_SCALE (\S+)f", header)[1])
        assert np.float32(scale) == np.float32(q.scale)
        zp = int(re.search(rf"#define M_{name}_ZERO_POINT (-?\d+)", header)[1])
        assert zp == q.zero_point
    assert "void m_forward(const int8_t *input, int8_t *output);" in header
    assert (res.flash_bytes, res.ram_bytes) == (inet.flash_bytes(), inet.ram_bytes())
    # flash: int8 weights + 4 (bias) + 4 (multiplier) + 1 (shift) per output channel
    want = sum(op.weight.numel() + 9 * op.weight.shape[0] for op in inet.params)
    assert inet.flash_bytes() == want


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_source_has_no_float_and_no_division_in_inner_loops(case, tmp_path):
    inet = quantize_network(case.build(), calibration(case))
    source = export_integer_c(inet, tmp_path / "m.c", prefix="m").paths[0].read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # comments out
    assert not re.search(r"\b(float|double)\b|math\.h|\d\.\d|\bf\b", code)
    assert re.findall(r"#include\s*(\S+)", code) == ["<stdint.h>", '"m.h"']
    divisions = [line for line in code.splitlines() if "/" in line]
    # only average pooling divides, once per output, by its constant window size
    assert all(re.search(r"\(m [+-] \d+\) / \d+", line) for line in divisions)
    assert len(divisions) == sum(op.kind == "avgpool" for op in inet.ops)


@pytest.mark.parametrize("bad", ["prefix", "suffix"])
def test_bad_prefix_or_path_writes_nothing(bad, tmp_path):
    case = CASES[0]
    inet = quantize_network(case.build(), calibration(case))
    with pytest.raises(ValueError) as e:
        if bad == "prefix":
            export_integer_c(inet, tmp_path / "m.c", prefix="9lives")
        else:
            export_integer_c(inet, tmp_path / "m.txt")
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
