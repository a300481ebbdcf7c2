"""Running exported C on an emulated Cortex-M (``unicorn``, ARM Thumb, M-class) and measuring it.

``run_on_device(c_files, inputs, cpu)`` builds the C (build.py), loads the ELF's loadable segments
as a flash programmer would, runs ``shrinknet_device_init`` once, then for every input row writes
it into the harness's input buffer, paints the stack region, calls ``shrinknet_device_run`` and
reads the output buffer. It returns a :class:`DeviceReport`:

* outputs: what the device computed, row by row;
* flash: .isr_vector + .text + .rodata + .data of the ELF (code, weights and constants);
* static RAM: .data + .bss (the network's scratch and the harness's input/output buffers, which
  are given separately as ``io_bytes``); stack: the high-water mark, the most stack any
  inference used, found by painting the region between .bss and the top of RAM with 0xCD before
  each call and finding the lowest byte that changed; ``ram_bytes`` = static RAM + stack;
* instructions per inference (executed instructions, counted by the emulator; the same on every
  row for these branch-free-in-data networks unless a kernel branches on values, e.g. max pooling
  or ReLU clamps, so the mean and the maximum are both kept), and per multiply-accumulate;
* the soft-float routines linked in (``__aeabi_f*`` ...), empty for integer-only code on any core.

Latency at a clock is ``instructions / clock``: an instruction count, not a cycle-accurate
figure (a Cortex-M0+ takes 1-3 cycles per instruction, more for a taken branch or a load on a
slow flash; an M4/M7 may dual-issue or stall).

Instructions are counted by a hook on every executed instruction (``UC_HOOK_CODE``). On the
Cortex-M0+ (ARMv6-M: no IT blocks) a faster count per translated block (``UC_HOOK_BLOCK``, each
block's instructions counted by their Thumb encodings, 16 or 32 bits) gives the same number and
is used (``count="auto"``); on Thumb-2 cores it over-counts (a block's size there covers
instructions a conditional exit skips), so they always use the per-instruction hook.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .build import FLASH_ORIGIN, FLASH_SIZE, RAM_ORIGIN, RAM_SIZE, build_elf, cpu as get_cpu, elf_facts, harness

PAINT = 0xCD
SCS = 0xE000E000  # system control space page (CPACR is at 0xE000ED88), mapped as plain memory
MAX_INSTRUCTIONS = 2_000_000_000


@dataclass
class DeviceReport:
    """Figures of one network run on one emulated core (see the module docstring)."""

    cpu: str
    outputs: np.ndarray
    flash_bytes: int
    text_bytes: int
    rodata_bytes: int
    data_bytes: int
    bss_bytes: int
    io_bytes: int
    stack_bytes: int
    instructions: list = field(default_factory=list)  # per inference
    macs: int | None = None
    softfloat: list = field(default_factory=list)
    matches_reference: bool | None = None  # set by callers that compare (e.g. :func:`run_integer_net`)

    @property
    def static_ram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes

    @property
    def ram_bytes(self) -> int:
        """.data + .bss + the stack high-water mark (the harness's input/output buffers included)."""
        return self.static_ram_bytes + self.stack_bytes

    @property
    def instructions_per_inference(self) -> float:
        return float(np.mean(self.instructions))

    @property
    def instructions_per_mac(self) -> float | None:
        return self.instructions_per_inference / self.macs if self.macs else None

    def latency_s(self, clock_hz: float) -> float:
        """Instructions / clock: an instruction count, not cycle-accurate (module docstring)."""
        return self.instructions_per_inference / float(clock_hz)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("outputs")
        d["instructions_max"] = int(max(self.instructions))
        d.pop("instructions")
        d |= {"static_ram_bytes": self.static_ram_bytes, "ram_bytes": self.ram_bytes,
              "instructions_per_inference": self.instructions_per_inference,
              "instructions_per_mac": self.instructions_per_mac}
        return d


def count_thumb(code: bytes) -> int:
    """Instructions in a run of Thumb code: a halfword whose top five bits are 0b11101, 0b11110 or
    0b11111 starts a 32-bit instruction (ARMv7-M ARM, A5.1), any other is a 16-bit one."""
    i = n = 0
    while i + 1 < len(code):
        hw = code[i] | code[i + 1] << 8
        i += 4 if hw >> 11 in (0x1D, 0x1E, 0x1F) else 2
        n += 1
    return n


def header_int(header: str, prefix: str, name: str) -> int:
    m = re.search(rf"#define {prefix.upper()}_{name} (\d+)", header)
    if not m:
        raise ValueError(f"the header does not define {prefix.upper()}_{name}: is {prefix!r} the export's prefix?")
    return int(m[1])


class Emulator:
    """One loaded ELF on one unicorn core: ``call(symbol)`` runs a function to its return."""

    def __init__(self, elf: Path, core, count: str = "auto"):
        import unicorn
        import unicorn.arm_const as A

        self.A, self.facts = A, elf_facts(elf)
        self.uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB | unicorn.UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(getattr(A, core.unicorn))
        self.uc.mem_map(FLASH_ORIGIN, FLASH_SIZE)
        self.uc.mem_map(RAM_ORIGIN, RAM_SIZE)
        self.uc.mem_map(SCS, 0x1000)
        for addr, data in self.facts.segments:
            self.uc.mem_write(addr, data)
        self.count = 0
        if count == "code" or count == "auto" and core.thumb2:
            self.uc.hook_add(unicorn.UC_HOOK_CODE, self._on_instruction)
        else:
            self._blocks: dict = {}
            self.uc.hook_add(unicorn.UC_HOOK_BLOCK, self._on_block)
        self.stack_top = RAM_ORIGIN + RAM_SIZE
        self.stack_bottom = (self.facts.ram_end + 7) & ~7

    def _on_instruction(self, uc, address, size, user):
        self.count += 1

    def _on_block(self, uc, address, size, user):
        n = self._blocks.get((address, size))
        if n is None:
            n = self._blocks[(address, size)] = count_thumb(bytes(uc.mem_read(address, size)))
        self.count += n

    def address(self, name: str) -> int:
        return self.facts.symbols[name][0]

    def call(self, name: str) -> int:
        """Run the function ``name`` until it returns; the instructions it executed."""
        A = self.A
        halt = self.address("shrinknet_device_halt") & ~1
        self.uc.reg_write(A.UC_ARM_REG_SP, self.stack_top)
        self.uc.reg_write(A.UC_ARM_REG_LR, halt | 1)
        before = self.count
        self.uc.emu_start(self.address(name) | 1, halt, count=MAX_INSTRUCTIONS)
        if self.uc.reg_read(A.UC_ARM_REG_PC) & ~1 != halt:
            raise RuntimeError(f"{name} did not return on the emulated core")
        return self.count - before

    def paint_stack(self) -> None:
        self.uc.mem_write(self.stack_bottom, bytes([PAINT]) * (self.stack_top - self.stack_bottom))

    def stack_used(self) -> int:
        mem = np.frombuffer(bytes(self.uc.mem_read(self.stack_bottom, self.stack_top - self.stack_bottom)), np.uint8)
        touched = np.nonzero(mem != PAINT)[0]
        return 0 if len(touched) == 0 else len(mem) - int(touched[0])


def run_on_device(c_files, inputs: np.ndarray, cpu: str = "cortex-m0plus", prefix: str = "shrinknet",
                  macs: int | None = None, workdir=None, count: str = "auto", opt: str = "-O2") -> DeviceReport:
    """Build ``c_files`` (an exported network's ``.c``; its ``.h`` beside it) for ``cpu`` and run
    every row of ``inputs`` through ``<prefix>_forward`` on the emulated core.

    inputs: (N, INPUT_SIZE) int8 (the integer-only C) or float32 (the float C). ``macs``: the
    network's multiply-accumulates per inference, for ``instructions_per_mac``. ``workdir``: where
    the build goes (a temporary directory by default).
    """
    core = get_cpu(cpu)
    c_files = [Path(c) for c in c_files]
    inputs = np.asarray(inputs)
    ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.float32): "float"}.get(inputs.dtype)
    if ctype is None:
        raise ValueError(f"inputs must be int8 (integer-only C) or float32 (float C), got {inputs.dtype}")
    header_path = c_files[0].with_suffix(".h")
    header = header_path.read_text()
    n_in, n_out = header_int(header, prefix, "INPUT_SIZE"), header_int(header, prefix, "OUTPUT_SIZE")
    inputs = inputs.reshape(len(inputs), -1)
    if inputs.shape[1] != n_in:
        raise ValueError(f"each input row must hold {n_in} numbers, got {inputs.shape[1]}")
    with tempfile.TemporaryDirectory(prefix="shrinknet-device-") as tmp:
        elf = build_elf(c_files, harness(header_path.name, prefix, ctype), core, Path(workdir or tmp), opt)
        emu = Emulator(elf, core, count)
        emu.call("shrinknet_device_init")
        a_in, a_out = emu.address("shrinknet_device_input"), emu.address("shrinknet_device_output")
        outs, counts, stack = [], [], 0
        for row in inputs:
            emu.uc.mem_write(a_in, row.tobytes())
            emu.paint_stack()
            counts.append(emu.call("shrinknet_device_run"))
            stack = max(stack, emu.stack_used())
            outs.append(np.frombuffer(bytes(emu.uc.mem_read(a_out, n_out * inputs.itemsize)), inputs.dtype))
        f = emu.facts
    return DeviceReport(core.name, np.stack(outs) if outs else np.zeros((0, n_out), inputs.dtype),
                        f.flash_bytes, f.size(".text") + f.size(".isr_vector"), f.size(".rodata"), f.size(".data"),
                        f.size(".bss"), (n_in + n_out) * inputs.itemsize, stack, counts, macs, f.softfloat)


def run_integer_net(inet, q_inputs, cpu: str = "cortex-m0plus", workdir=None, prefix: str = "shrinknet"
                    ) -> DeviceReport:
    """Export ``inet`` (store/integer.py ``IntegerNet``) as integer-only C, run the int8 rows
    ``q_inputs`` (N, *in_shape) on the emulated ``cpu`` and compare with the integer reference:
    ``matches_reference`` is True when every output equals it exactly."""
    import torch

    from ..c_integer import export_integer_c

    q = torch.as_tensor(np.asarray(q_inputs)).to(torch.int8)
    with tempfile.TemporaryDirectory(prefix="shrinknet-int-") as tmp:
        res = export_integer_c(inet, Path(tmp) / "net.c", prefix=prefix)
        rep = run_on_device([res.paths[0]], q.reshape(len(q), -1).numpy(), cpu, prefix, inet.macs, workdir)
    want = inet.forward(q.reshape(len(q), *inet.in_shape)).numpy()
    rep.matches_reference = bool(np.array_equal(rep.outputs, want))
    return rep


def macs_of(net) -> int:
    """Multiply-accumulates of one inference of a parsed network (every Linear and Conv, and every
    depthwise Conv in a block's tail)."""
    shapes = net.map_shapes()
    if not shapes:
        return 0
    return sum(b.param.macs(shapes[k][0]) + sum(op.macs(shapes[k][i + 1]) for i, op in b.weighted)
               for k, b in enumerate(net.blocks))


__all__ = ["DeviceReport", "run_on_device", "run_integer_net", "count_thumb", "macs_of"]
