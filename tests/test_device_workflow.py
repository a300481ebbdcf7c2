"""workflows/device.py: the summary ``shrinknet device`` prints and records, on a small MLP and CNN;
the clock parser."""

from __future__ import annotations

import json

import pytest
import torch
from integer_cases import calibration, named

pytest.importorskip("unicorn")
pytest.importorskip("ziglang")
pytest.importorskip("tflite_micro")

from shrinknet.errors import InputError  # noqa: E402
from shrinknet.workflows.device import device_summary, parse_clock  # noqa: E402


@pytest.mark.parametrize("name", ["mlp-relu", "cnn2d-max-avg"])
def test_summary_checks_every_core_and_records_json(name):
    case = named(name)
    model = case.build()
    X = calibration(case, 50, seed=11)
    y = torch.randint(0, 2, (50,))
    s = device_summary(model, calibration(case), X, y, cpus=("cortex-m0plus", "cortex-m4"), clock_hz="48MHz", rows=3)
    assert set(s.integer) == set(s.float32) == {"cortex-m0plus", "cortex-m4"}
    assert all(r.matches_reference and r.softfloat == [] for r in s.integer.values())
    assert all(d <= 1e-5 for d in s.float_max_diff.values())
    assert s.float32["cortex-m0plus"].softfloat and not s.float32["cortex-m4"].softfloat
    assert s.tflm_matches_reference and s.tflm_arena_bytes > 0
    r = s.integer["cortex-m0plus"]
    assert r.latency_s(s.clock_hz) == pytest.approx(r.instructions_per_inference / 48e6)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["integer_c"]["cortex-m4"]["matches_reference"] is True and d["clock_hz"] == 48e6
    lines = s.lines()
    assert len(lines) == 1 + 4 + 2 and "ms @ 48 MHz" in lines[0]


@pytest.mark.parametrize("text,hz", [("64MHz", 64e6), ("48 mhz", 48e6), ("32768Hz", 32768.0), ("16e6", 16e6),
                                     ("8000kHz", 8e6), (1e6, 1e6)])
def test_parse_clock(text, hz):
    assert parse_clock(text) == hz


@pytest.mark.parametrize("bad", ["fast", "-3MHz", "0", "64 MHz extra", "12 parsecs"])
def test_bad_clock_is_one_line(bad):
    with pytest.raises(InputError, match="not a frequency"):
        parse_clock(bad)
