"""The emulated Cortex-M (ship/device/): integer-only C built with zig's clang and run in unicorn
equals the integer reference exactly, with no soft-float routine; float C runs too (soft-float on
the M0+, the FPU on the M4); instruction counting, stack painting and the ELF's weight bytes
checked against obvious twins.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from integer_cases import CASES, calibration, named

pytest.importorskip("ziglang")
pytest.importorskip("unicorn")
pytest.importorskip("elftools")

from shrinknet.errors import InputError  # noqa: E402
from shrinknet.ship.export import export  # noqa: E402
from shrinknet.model.parse import as_net  # noqa: E402
from shrinknet.ship.device import build  # noqa: E402
from shrinknet.ship.device.emulate import count_thumb, macs_of, run_integer_net, run_on_device  # noqa: E402
from shrinknet.store.integer import quantize_network  # noqa: E402

CPUS = ["cortex-m0plus", "cortex-m4"]


def quantized(case, n: int = 6):
    inet = quantize_network(case.build(), calibration(case))
    q = inet.quantize_input(calibration(case, n, seed=7) * torch.linspace(0.3, 2.5, n).view(-1, *[1] * len(case.shape)))
    return inet, q


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_integer_c_on_the_core_equals_the_reference(case, cpu):
    inet, q = quantized(case)
    rep = run_integer_net(inet, q, cpu)
    assert rep.matches_reference
    assert np.array_equal(rep.outputs, inet.forward(q).numpy())
    assert rep.softfloat == []
    assert rep.macs == inet.macs and rep.instructions_per_mac > 1
    assert 0 < rep.stack_bytes < 1024


def test_the_weight_bytes_in_the_elf_are_the_counted_flash(tmp_path):
    """Every weight, bias, multiplier and shift array is in the ELF's .rodata at the size
    flash_bytes() counts, except an array of one repeated value (often the shifts), which clang
    folds into the code. (A network this wide: clang also folds the arrays of a tiny layer whose
    loops it unrolls.)"""
    from torch import nn

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(40, 31), nn.ReLU(), nn.Linear(31, 23), nn.ReLU(), nn.Linear(23, 10))
    X = torch.randn(200, 40)
    inet = quantize_network(model, X)
    run_integer_net(inet, inet.quantize_input(X[:1]), "cortex-m0plus", workdir=tmp_path)
    facts = build.elf_facts(tmp_path / "net.elf")
    arrays = {n: s for n, (_, s) in facts.symbols.items() if re.fullmatch(r"layer\d+_(weight|bias|multiplier|shift)", n)}
    counted = {}  # what flash_bytes() counts, array by array, and whether the array is one repeated value
    for k, op in enumerate(inet.params):
        O = op.weight.shape[0]
        counted |= {f"layer{k}_weight": (op.weight.numel(), False), f"layer{k}_bias": (4 * O, False),
                    f"layer{k}_multiplier": (4 * O, len(set(op.multiplier.tolist())) == 1),
                    f"layer{k}_shift": (O, len(set(op.shift.tolist())) == 1)}
    assert sum(n for n, _ in counted.values()) == inet.flash_bytes()
    assert {n: counted[n][0] for n in arrays} == arrays  # each array present at exactly its counted size
    assert all(counted[n][1] for n in set(counted) - set(arrays))  # missing: only constant ones (folded)
    assert any(n.endswith("_weight") for n in arrays) and len(arrays) >= 3 * len(inet.params)
    present = sum(arrays.values())
    assert present <= facts.size(".rodata") <= present + 4 * len(arrays)  # alignment


@pytest.mark.parametrize("cpu,soft", [("cortex-m0plus", True), ("cortex-m4", False)])
def test_float_c_runs_and_shows_its_soft_float(cpu, soft, tmp_path):
    case = CASES[0]
    model = case.build()
    X = calibration(case, 4, seed=9)
    export(model, tmp_path / "f.c", format="c", dtype="float32", prefix="f")
    rep = run_on_device([tmp_path / "f.c"], X.numpy().astype(np.float32), cpu, "f", macs_of(as_net(model)))
    with torch.no_grad():
        want = model(X).numpy()
    assert np.abs(rep.outputs - want).max() <= 1e-5
    if soft:
        assert {"__aeabi_fadd", "__aeabi_fmul"} <= set(rep.softfloat)
    else:
        assert rep.softfloat == []


@pytest.mark.parametrize("kind", ["integer", "float"])
def test_block_count_equals_per_instruction_count_on_the_m0plus(kind, tmp_path):
    case = named("cnn2d-max-avg")
    if kind == "integer":
        from shrinknet.ship.c_integer import export_integer_c

        inet, q = quantized(case, 2)
        export_integer_c(inet, tmp_path / "n.c", prefix="n")
        rows = q.reshape(2, -1).numpy()
    else:  # soft-float calls (bl) on every multiply-add; a small MLP keeps the per-instruction hook quick
        case = CASES[0]
        export(case.build(), tmp_path / "n.c", format="c", dtype="int8", prefix="n")
        rows = calibration(case, 2).numpy().astype(np.float32)
    by_block = run_on_device([tmp_path / "n.c"], rows, "cortex-m0plus", "n", count="block")
    by_insn = run_on_device([tmp_path / "n.c"], rows, "cortex-m0plus", "n", count="code")
    assert by_block.instructions == by_insn.instructions and min(by_insn.instructions) > 1000


def test_count_thumb_reads_16_and_32_bit_encodings():
    movs = bytes([0x01, 0x20])  # movs r0, #1 (16-bit)
    bl = bytes([0x00, 0xF0, 0x00, 0xF8])  # bl (32-bit, first halfword 0b11110...)
    ldr_w = bytes([0xD1, 0xF8, 0x00, 0x00])  # ldr.w r0, [r1] (0b11111...)
    strd = bytes([0xC0, 0xE9, 0x00, 0x23])  # strd (0b11101...)
    assert count_thumb(movs) == 1 and count_thumb(bl) == 1 and count_thumb(ldr_w + movs + strd + movs) == 4


STACK_NET = """\
#include <stdint.h>
#include "s.h"
void s_forward(const int8_t *input, int8_t *output)
{
    volatile int8_t big[S_BIG];
    int i;
    for (i = 0; i < S_BIG; i++)
        big[i] = input[i % S_INPUT_SIZE];
    output[0] = big[S_BIG - 1];
}
"""


@pytest.mark.parametrize("big", [256, 3000])
def test_stack_painting_finds_a_local_array(big, tmp_path):
    (tmp_path / "s.h").write_text(f"#define S_INPUT_SIZE 4\n#define S_OUTPUT_SIZE 1\n#define S_BIG {big}\n"
                                  "void s_forward(const int8_t *input, int8_t *output);\n")
    (tmp_path / "s.c").write_text(STACK_NET)
    rows = np.arange(8, dtype=np.int8).reshape(2, 4)
    rep = run_on_device([tmp_path / "s.c"], rows, "cortex-m0plus", "s")
    assert big <= rep.stack_bytes <= big + 64
    assert rep.outputs[:, 0].tolist() == [rows[0][(big - 1) % 4], rows[1][(big - 1) % 4]]


def test_unknown_cpu_is_one_line():
    with pytest.raises(InputError, match="unknown cpu 'cortex-a9'.*cortex-m0plus"):
        build.cpu("cortex-a9")


def test_missing_toolchain_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "unicorn", None)  # import unicorn -> ImportError
    with pytest.raises(InputError, match=r"unicorn.*shrinknet\[device\]"):
        build.check_toolchain()
