"""workflows/device.py: the summary ``shrinknet device`` prints and records, on a small MLP and CNN;
the clock parser."""

from __future__ import annotations

import json
import re

import pytest
import torch
from integer_cases import calibration, named

pytest.importorskip("unicorn")
pytest.importorskip("ziglang")
pytest.importorskip("tflite_micro")

from shrinknet.errors import InputError  # noqa: E402
from shrinknet.workflows.device import clock_text, device_summary, merge_device_figures, parse_clock  # noqa: E402


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


@pytest.mark.parametrize("text,hz", [("64MHz", 64e6), ("48 mhz", 48e6), ("32768Hz", 32768.0), ("16e6Hz", 16e6),
                                     ("8000kHz", 8e6), ("1kHz", 1e3), ("2GHz", 2e9), (1e6, 1e6)])
def test_parse_clock(text, hz):
    assert parse_clock(text) == hz


@pytest.mark.parametrize("bad, fragment", [
    ("fast", "not a frequency"), ("-3MHz", "not a frequency"), ("0", "not a frequency"),
    ("64 MHz extra", "not a frequency"), ("12 parsecs", "not a frequency"),
    ("64", "has no unit: write it with one, e.g. '64MHz'"), ("16e6", "has no unit"),
    ("999Hz", "outside 1 kHz .. 2 GHz"), ("3GHz", "outside 1 kHz .. 2 GHz"), (64, "outside 1 kHz .. 2 GHz"),
], ids=["word", "negative", "zero", "trailing", "unknown unit", "bare 64", "bare 16e6", "below 1 kHz",
        "above 2 GHz", "API number in Hz"])
def test_bad_clock_is_one_line(bad, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)) as e:
        parse_clock(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("hz, text", [(64e6, "64 MHz"), (32768.0, "32.768 kHz"), (1.2e9, "1.2 GHz"), (500.0, "500 Hz")])
def test_clock_text(hz, text):
    assert clock_text(hz) == text


def _figs(clock, *cpus, acc=0.5):
    return {"clock_hz": clock, "accuracy_float": acc, "integer_c": {c: {"flash_bytes": clock + i} for i, c in enumerate(cpus)},
            "float32_c": {c: {"flash_bytes": -clock - i} for i, c in enumerate(cpus)}}


@pytest.mark.parametrize("earlier, new, want", [
    (None, _figs(64e6, "m0"), [_figs(64e6, "m0")]),
    (_figs(64e6, "m0"), _figs(48e6, "m0"), [_figs(48e6, "m0"), _figs(64e6, "m0")]),
    ([_figs(64e6, "m0")], _figs(64e6, "m4"), [{**_figs(64e6, "m4"), "integer_c": {"m0": {"flash_bytes": 64e6}, "m4": {"flash_bytes": 64e6}},
                                              "float32_c": {"m0": {"flash_bytes": -64e6}, "m4": {"flash_bytes": -64e6}}}]),
    ([_figs(64e6, "m0", "m4")], _figs(64e6, "m4", acc=0.9),
     [{**_figs(64e6, "m0", "m4", acc=0.9), "integer_c": {"m0": {"flash_bytes": 64e6}, "m4": {"flash_bytes": 64e6}},
       "float32_c": {"m0": {"flash_bytes": -64e6}, "m4": {"flash_bytes": -64e6}}}]),
], ids=["first call", "other clock added", "other cpu added", "same cpu and clock replaced"])
def test_new_device_figures_are_added_not_wiped(earlier, new, want):
    assert merge_device_figures(earlier, new) == want
