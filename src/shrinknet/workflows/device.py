"""What ``shrinknet device`` runs: a network on emulated Cortex-M cores, as integer-only C and as
float C, beside TFLite Micro running the same full-integer network; the figures for the terminal,
run.json and the report's "On the device" table.

``device_summary(model, calibration, X_test, y_test, cpus, clock_hz)`` quantizes ``model`` to full
integer (store/integer.py; activations calibrated by min/max over ``calibration``), exports the
integer-only C (ship/c_integer.py) and the float32 C (ship/export.py), runs the first ``rows``
test instances of each on every core (ship/device), checks the integer outputs against the
integer reference exactly and the float ones against torch, runs the int8 .tflite in TFLM
(ship/tflite.py) and records its arena bytes. Latency is instructions / clock: an instruction
count, not a cycle-accurate figure.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..model.parse import as_net
from ..ship.c_integer import export_integer_c
from ..ship.device.build import check_toolchain, cpu as get_cpu
from ..ship.device.emulate import DeviceReport, macs_of, run_on_device
from ..ship.export import export
from ..store.integer import quantize_network

_CLOCK = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(hz|khz|mhz|ghz)?\s*$", re.I)
CLOCK_MIN_HZ, CLOCK_MAX_HZ = 1e3, 2e9  # a sane range for a microcontroller's clock: 1 kHz .. 2 GHz


def parse_clock(text: str | float) -> float:
    """Hz in "64MHz", "48 mhz", "16e6Hz", "32768Hz"; InputError for anything else.

    A bare number in a string ("64") is refused, not guessed: "64" could mean 64 Hz or 64 MHz, and
    reading it as Hz gave a latency of minutes without a word. A number (int/float, the API's
    ``clock_hz``) is Hz. Either must lie in CLOCK_MIN_HZ..CLOCK_MAX_HZ (1 kHz .. 2 GHz).
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        hz = float(text)
    else:
        m = _CLOCK.match(str(text))
        if not m or float(m[1]) <= 0:
            raise InputError(f"clock {text!r} is not a frequency: give e.g. 64MHz, 48000kHz or 16e6Hz")
        if not m[2]:
            raise InputError(f"clock {text!r} has no unit: write it with one, e.g. '{m[1]}MHz' or '{m[1]}kHz'")
        hz = float(m[1]) * {"hz": 1, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}[m[2].lower()]
    if not CLOCK_MIN_HZ <= hz <= CLOCK_MAX_HZ:
        raise InputError(f"clock {text!r} is {clock_text(hz)}, outside 1 kHz .. 2 GHz: give the core's clock, "
                         "e.g. 64MHz")
    return hz


def clock_text(hz: float) -> str:
    """A frequency for people: "64 MHz", "32.768 kHz", "1.2 GHz", "500 Hz"."""
    for unit, scale in (("GHz", 1e9), ("MHz", 1e6), ("kHz", 1e3)):
        if abs(hz) >= scale:
            return f"{hz / scale:g} {unit}"
    return f"{hz:g} Hz"


def merge_device_figures(earlier, new: dict) -> list[dict]:
    """run.json's ``extras["device"]`` after one more ``shrinknet device`` call: a list of figure sets,
    one per clock, each with its cores under ``integer_c``/``float32_c``.

    The new figures are added to the earlier ones, keyed by (cpu, clock): a core measured again at
    the same clock replaces its earlier row, other cores and clocks stay. The per-network fields
    (accuracies, TFLM, calibration, MACs) of a clock are the newest call's. ``earlier`` may be None,
    one figure set (runs written before this list) or a list of them.
    """
    olds = [] if not earlier else [earlier] if isinstance(earlier, dict) else list(earlier)
    out, merged = [], False
    for old in olds:
        if old.get("clock_hz") == new["clock_hz"]:
            both = dict(old) | {k: v for k, v in new.items() if k not in ("integer_c", "float32_c")}
            for key in ("integer_c", "float32_c"):
                both[key] = dict(old.get(key) or {}) | dict(new.get(key) or {})
            out.append(both)
            merged = True
        else:
            out.append(old)
    if not merged:
        out.append(new)
    return sorted(out, key=lambda d: d["clock_hz"])


def record_device_figures(run_dir: Path, figures: dict) -> None:
    """``figures`` (DeviceSummary.to_dict) added to the run's run.json ``extras["device"]``
    (merge_device_figures), the file written whole (files.write_text); the rest of run.json unchanged."""
    import json

    from ..util.files import jsonable, write_text

    doc = json.loads((Path(run_dir) / "run.json").read_text())
    extras = doc.setdefault("extras", {})
    extras["device"] = merge_device_figures(extras.get("device"), jsonable(figures))
    write_text(Path(run_dir) / "run.json", json.dumps(jsonable(doc), indent=1))


@dataclass
class DeviceSummary:
    """The figures of one network on the cores (module docstring)."""

    clock_hz: float
    macs: int
    weights_bytes_integer: int  # what the integer network stores (IntegerNet.flash_bytes)
    accuracy_float: float | None
    accuracy_integer: float | None
    integer: dict = field(default_factory=dict)  # cpu -> DeviceReport of the integer-only C
    float32: dict = field(default_factory=dict)  # cpu -> DeviceReport of the float32 C
    float_max_diff: dict = field(default_factory=dict)  # cpu -> max |device - torch|
    tflm_arena_bytes: int | None = None
    tflm_matches_reference: bool | None = None
    calibration: str = ""

    def to_dict(self) -> dict:
        """JSON-ready (run.json)."""
        def rep(r: DeviceReport) -> dict:
            return r.to_dict() | {"latency_s": r.latency_s(self.clock_hz)}

        return {"clock_hz": self.clock_hz, "macs": self.macs, "weights_bytes_integer": self.weights_bytes_integer,
                "accuracy_float": self.accuracy_float, "accuracy_integer": self.accuracy_integer,
                "integer_c": {c: rep(r) for c, r in self.integer.items()},
                "float32_c": {c: rep(r) | {"max_diff_vs_torch": self.float_max_diff[c]} for c, r in self.float32.items()},
                "tflm": {"arena_bytes": self.tflm_arena_bytes, "matches_reference": self.tflm_matches_reference},
                "calibration": self.calibration,
                "note": "instructions counted in the unicorn emulator; latency = instructions / clock, not cycle-accurate"}

    def lines(self) -> list[str]:
        """The terminal's table: one row per variant and core, then TFLM's arena."""
        at = f"ms @ {clock_text(self.clock_hz)}"
        width = max(14, len(at) + 2)  # at least two spaces after instr/MAC, whatever the clock
        out = [f"{'variant':<16}{'cpu':<15}{'flash B':>9}{'RAM B':>8}{'instr/inf':>11}{'instr/MAC':>10}"
               f"{at:>{width}}  check"]
        for name, reports in (("integer-only C", self.integer), ("float32 C", self.float32)):
            for c, r in reports.items():
                if name == "integer-only C":
                    check = "outputs equal the integer reference" if r.matches_reference else "OUTPUTS DIFFER"
                else:
                    check = f"max |device - torch| {self.float_max_diff[c]:.1e}"
                soft = f"; soft-float {', '.join(r.softfloat[:3])}{' ...' if len(r.softfloat) > 3 else ''}" \
                    if r.softfloat else ""
                out.append(f"{name:<16}{c:<15}{r.flash_bytes:>9}{r.ram_bytes:>8}{r.instructions_per_inference:>11.0f}"
                           f"{r.instructions_per_mac:>10.2f}{1e3 * r.latency_s(self.clock_hz):>{width}.3f}  {check}{soft}")
        if self.tflm_arena_bytes is not None:
            same = "equal to" if self.tflm_matches_reference else "DIFFERENT FROM"
            out.append(f"TFLite Micro: arena {self.tflm_arena_bytes} B for the int8 .tflite (outputs {same} the integer "
                       "reference)")
        out.append("RAM = .data + .bss + stack high-water mark (input/output buffers included); instructions counted by "
                   "an emulator, not cycles")
        return out


def _accuracy(scores: torch.Tensor, y) -> float | None:
    if y is None:
        return None
    y = torch.as_tensor(np.asarray(y))
    if y.ndim != 1 or scores.shape[1] < 2:
        return None
    return float((scores.argmax(1).cpu() == y.cpu()).double().mean())


def device_summary(model, calibration, X_test, y_test=None, cpus=("cortex-m0plus",), clock_hz=64e6,
                   rows: int = 4, calibration_name: str = "the calibration data", tflm: bool = True,
                   input_shape=None) -> DeviceSummary:
    """Run ``model`` on every core in ``cpus`` as integer-only and float32 C; see the module docstring.

    InputError for an unknown cpu, a missing toolchain package (naming the ``[device]`` extra), bad
    calibration data or a layer that cannot run full-integer.
    """
    check_toolchain()
    cores = [get_cpu(c).name for c in cpus]
    clock = parse_clock(clock_hz)
    net = as_net(model)
    if input_shape is not None:
        net.bind(tuple(input_shape))
    inet = quantize_network(net, torch.as_tensor(calibration), calibration_name=calibration_name)
    X_test = torch.as_tensor(X_test).to(net.dtype)
    X_test = X_test.reshape(len(X_test), *inet.in_shape)
    if len(X_test) == 0:
        raise InputError("no test instances to run on the device")
    with torch.no_grad():
        seq = net.to_sequential().eval()
        acc_f = _accuracy(seq(X_test), y_test)
        acc_i = _accuracy(inet(X_test), y_test)
        rows_x = X_test[:rows]
        want_f = seq(rows_x).float().numpy()
    q = inet.quantize_input(rows_x)
    want_i = inet.forward(q).numpy()
    macs = macs_of(net)
    s = DeviceSummary(clock, macs, inet.flash_bytes(), acc_f, acc_i, calibration=inet.calibration)
    with tempfile.TemporaryDirectory(prefix="shrinknet-device-") as tmp:
        tmp = Path(tmp)
        export_integer_c(inet, tmp / "int.c", prefix="int")
        export(net, tmp / "flt.c", format="c", dtype="float32", prefix="flt")
        for c in cores:
            r = run_on_device([tmp / "int.c"], q.reshape(len(q), -1).numpy(), c, "int", inet.macs)
            r.matches_reference = bool(np.array_equal(r.outputs, want_i))
            s.integer[c] = r
            f = run_on_device([tmp / "flt.c"], rows_x.reshape(len(rows_x), -1).float().numpy(), c, "flt", macs)
            s.float32[c] = f
            s.float_max_diff[c] = float(np.abs(f.outputs - want_f).max())
    if tflm:
        from ..ship.tflite import run_tflm, tflite_model, to_tflite_input

        out, arena = run_tflm(tflite_model(inet), to_tflite_input(q.numpy(), inet.in_shape))
        s.tflm_arena_bytes, s.tflm_matches_reference = arena, bool(np.array_equal(out, want_i))
    return s
