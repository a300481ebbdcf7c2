"""``shrinknet device`` (issue #16): a pruned run on an emulated Cortex-M0+, its figures in run.json and
in the report's "On the device" table; bad input gets one line and exit 2 with nothing written."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shrinknet.cli import cli
from shrinknet.ship import runs


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("device")
    r = run("train", "--data", "digits", "--hidden", "12", "--activation", "relu", "--out-activation", "none",
            "--loss", "cross_entropy", "--epochs", "20", "--out", tmp / "m", "-q")
    assert r.exit_code == 0, r.output
    r = run("prune", tmp / "m" / "model.safetensors", "--budget", "1KiB", "--dtype", "int8", "--no-analyze",
            "--out", tmp / "run", "-q")
    assert r.exit_code == 0, r.output
    return tmp


def test_device_measures_a_run_and_records_it(pruned):
    before = json.loads((pruned / "run" / "run.json").read_text())
    r = run("device", pruned / "run", "--cpu", "cortex-m0plus", "--rows", "2")
    assert r.exit_code == 0, r.output
    integer = next(line for line in r.output.splitlines() if line.startswith("integer-only C"))
    assert "outputs equal the integer reference" in integer and "soft-float" not in integer
    floats = next(line for line in r.output.splitlines() if line.startswith("float32 C"))
    assert "__aeabi_f" in floats  # the M0+ has no FPU: float C calls soft-float routines
    [dev] = runs.load_run(pruned / "run")["extras"]["device"]
    rep = dev["integer_c"]["cortex-m0plus"]
    assert rep["matches_reference"] is True and rep["softfloat"] == []
    assert rep["instructions_per_mac"] < dev["float32_c"]["cortex-m0plus"]["instructions_per_mac"]
    assert rep["latency_s"] == pytest.approx(rep["instructions_per_inference"] / dev["clock_hz"])
    after = json.loads((pruned / "run" / "run.json").read_text())
    assert {k: v for k, v in after.items() if k != "extras"} == {k: v for k, v in before.items() if k != "extras"}
    r = run("report", pruned / "run", "--out", pruned / "report", "-q")
    assert r.exit_code == 0, r.output
    page = (pruned / "report" / "report.html").read_text()
    assert "<h2>On the device</h2>" in page and "equal to the integer reference" in page


@pytest.mark.parametrize("args, fragment", [
    (("--cpu", "cortex-m99"), "cortex-m99"),
    (("--clock", "fast"), "is not a frequency"),
    (("--clock", "64"), "has no unit: write it with one, e.g. '64MHz'"),
    (("--clock", "5GHz"), "outside 1 kHz .. 2 GHz"),
    (("--clock", "10Hz"), "outside 1 kHz .. 2 GHz"),
], ids=["unknown cpu", "bad clock", "bare number", "too fast", "too slow"])
def test_bad_device_input_gets_one_line(pruned, args, fragment):
    before = (pruned / "run" / "run.json").read_bytes()
    r = run("device", pruned / "run", *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert (pruned / "run" / "run.json").read_bytes() == before


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    r = run("device", tmp_path)
    assert r.exit_code == 2 and "not a run directory" in r.stderr


def test_a_second_call_adds_its_figures_and_the_header_stays_apart(pruned):
    r = run("device", pruned / "run", "--cpu", "cortex-m4", "--clock", "32768Hz", "--rows", "1")
    assert r.exit_code == 0, r.output
    header = r.output.splitlines()[0]
    assert "instr/MAC  ms @ 32.768 kHz" in header, header
    r = run("device", pruned / "run", "--cpu", "cortex-m0plus", "--rows", "1")  # 64MHz again: replaces its row
    assert r.exit_code == 0, r.output
    devs = runs.load_run(pruned / "run")["extras"]["device"]
    assert [(d["clock_hz"], sorted(d["integer_c"])) for d in devs] == [(32768.0, ["cortex-m4"]),
                                                                     (64e6, ["cortex-m0plus"])]
    r = run("report", pruned / "run", "--out", pruned / "report2", "-q")
    assert r.exit_code == 0, r.output
    page = (pruned / "report2" / "report.html").read_text()
    assert "clock 0.032768 MHz" in page and "clock 64 MHz" in page


def test_help_lists_exactly_the_cores_accepted():
    from shrinknet.ship.device.build import CPUS

    text = " ".join(run("device", "--help").output.split())
    assert f"Comma-separated cores: {', '.join(CPUS)}." in text
