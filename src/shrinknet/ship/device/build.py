"""Building exported C for a bare-metal Cortex-M, and reading the ELF.

The compiler is the clang that the ``ziglang`` package ships (``python -m ziglang cc``), with the
target ``thumb-freestanding-eabi`` (Cortex-M0+, no FPU: float arithmetic becomes compiler-rt's
soft-float routines ``__aeabi_f*``) or ``thumb-freestanding-eabihf`` (Cortex-M4/M7 with their
single-precision FPU), ``-O2 -ffreestanding -ffunction-sections -fdata-sections``, linked with
``--gc-sections`` against compiler-rt (zig links it for freestanding targets; no libc).

Around the exported ``.c`` go a start-up file and a linker script of our own (:data:`LINKER_SCRIPT`,
:data:`STARTUP`): flash at 0x00000000 (vector table, .text, .rodata, the load image of .data),
RAM at 0x20000000 (.data, .bss, then the stack growing down from the top of RAM).
``shrinknet_device_init`` copies .data, zeroes .bss and, with an FPU, enables CP10/CP11 in CPACR;
a harness (:func:`harness`) holds the input and output buffers and calls ``<prefix>_forward``.

The float C's ``#include <math.h>`` is served by a small header of ours (INFINITY and the
declarations of expf/tanhf/log1pf); no libm is linked: the definitions come from zig's
compiler-rt where it has them (expf does: the demo's sigmoid float C links), and a missing one
fails the link with an error naming it.

:func:`elf_facts` reads, with ``pyelftools``, the section sizes -- flash = .isr_vector + .text +
.rodata + .data, static RAM = .data + .bss -- and the symbols, among them the soft-float routines.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError

FLASH_ORIGIN, FLASH_SIZE = 0x00000000, 2 * 1024 * 1024
RAM_ORIGIN, RAM_SIZE = 0x20000000, 512 * 1024
DEVICE_EXTRA = "pip install 'shrinknet[device]'"


@dataclass(frozen=True)
class Cpu:
    name: str  # the user's name, e.g. "cortex-m0plus"
    mcpu: str  # clang's (zig's) -mcpu
    target: str  # zig's target triple
    unicorn: str  # unicorn.arm_const CPU model constant
    fpu: bool

    @property
    def thumb2(self) -> bool:
        """Whether the core runs Thumb-2 (IT blocks, conditional execution): all but ARMv6-M."""
        return self.name != "cortex-m0plus"


CPUS = {
    "cortex-m0plus": Cpu("cortex-m0plus", "cortex_m0plus", "thumb-freestanding-eabi", "UC_CPU_ARM_CORTEX_M0", False),
    "cortex-m3": Cpu("cortex-m3", "cortex_m3", "thumb-freestanding-eabi", "UC_CPU_ARM_CORTEX_M3", False),
    # zig's cortex_m4 / cortex_m7 leave the FPU out: named as a feature (FPv4-SP-D16, FPv5-D16)
    "cortex-m4": Cpu("cortex-m4", "cortex_m4+vfp4d16sp", "thumb-freestanding-eabihf", "UC_CPU_ARM_CORTEX_M4", True),
    "cortex-m7": Cpu("cortex-m7", "cortex_m7+fp_armv8d16", "thumb-freestanding-eabihf", "UC_CPU_ARM_CORTEX_M7", True),
}
CPU_NAMES = tuple(CPUS)  # the cores ``shrinknet device --cpu`` accepts (its --help lists these)


def cpu(name: str) -> Cpu:
    """The Cpu named ``name`` ("cortex-m0plus", "cortex-m4", ...; "_" for "-" accepted), else InputError."""
    key = str(name).lower().replace("_", "-")
    if key not in CPUS:
        raise InputError(f"unknown cpu {name!r}: choose one of {', '.join(CPUS)}")
    return CPUS[key]


LINKER_SCRIPT = f"""\
MEMORY
{{
    FLASH (rx)  : ORIGIN = {FLASH_ORIGIN:#010x}, LENGTH = {FLASH_SIZE}
    RAM   (rwx) : ORIGIN = {RAM_ORIGIN:#010x}, LENGTH = {RAM_SIZE}
}}
ENTRY(Reset_Handler)
SECTIONS
{{
    .isr_vector : {{ KEEP(*(.isr_vector)) }} > FLASH
    .text : {{ KEEP(*(.text.shrinknet_device_halt)) *(.text*) . = ALIGN(4); }} > FLASH
    .rodata : {{ *(.rodata*) . = ALIGN(4); }} > FLASH
    .data : {{ __data_start = .; *(.data*) . = ALIGN(4); __data_end = .; }} > RAM AT > FLASH
    __data_load = LOADADDR(.data);
    .bss (NOLOAD) : {{ __bss_start = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end = .; }} > RAM
    __stack_top = ORIGIN(RAM) + LENGTH(RAM);
    /DISCARD/ : {{ *(.ARM.exidx*) *(.ARM.extab*) *(.comment) }}
}}
"""

STARTUP = """\
#include <stdint.h>

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[], __stack_top[];
void shrinknet_device_run(void);

/* .data from its load image in flash, .bss zeroed; with an FPU, CP10 and CP11 enabled (CPACR) */
__attribute__((noinline)) void shrinknet_device_init(void)
{
    uint32_t *src = __data_load, *dst = __data_start;
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
#endif
}

/* where a call from the emulator returns to */
__attribute__((noinline)) void shrinknet_device_halt(void)
{
    for (;;) {
    }
}

void Reset_Handler(void)
{
    shrinknet_device_init();
    for (;;)
        shrinknet_device_run();
}

/* initial stack pointer, reset, NMI (the halt loop: it also keeps it linked) */
__attribute__((section(".isr_vector"), used)) static void *const vectors[3] = {
    (void *)__stack_top, (void *)Reset_Handler, (void *)shrinknet_device_halt,
};
"""

MATH_H = """\
/* shrinknet's bare-metal stand-in for <math.h>: no libm is linked */
#ifndef SHRINKNET_DEVICE_MATH_H
#define SHRINKNET_DEVICE_MATH_H
#define INFINITY __builtin_inff()
float expf(float);
float tanhf(float);
float log1pf(float);
#endif
"""


def harness(header: str, prefix: str, ctype: str) -> str:
    """The harness: input/output buffers of ``ctype`` and ``shrinknet_device_run`` calling the network."""
    P = prefix.upper()
    return f"""\
#include <stdint.h>
#include "{header}"

{ctype} shrinknet_device_input[{P}_INPUT_SIZE];
{ctype} shrinknet_device_output[{P}_OUTPUT_SIZE];

void shrinknet_device_run(void)
{{
    {prefix}_forward(shrinknet_device_input, shrinknet_device_output);
}}
"""


def check_toolchain() -> None:
    """InputError naming the extra when ziglang, unicorn or pyelftools is missing."""
    for mod in ("ziglang", "unicorn", "elftools"):
        try:
            __import__(mod)
        except ImportError:
            raise InputError(f"running on an emulated device needs the {mod} package: {DEVICE_EXTRA}") from None


def build_elf(c_files: list[Path], harness_text: str, core: Cpu, workdir: Path, opt: str = "-O2") -> Path:
    """Compile and link ``c_files`` with the harness, start-up and linker script into ``workdir/net.elf``.

    RuntimeError with the compiler's first error lines when it fails (e.g. a libm function)."""
    check_toolchain()
    workdir.mkdir(parents=True, exist_ok=True)
    inc = workdir / "include"
    inc.mkdir(exist_ok=True)
    (inc / "math.h").write_text(MATH_H)
    (workdir / "link.ld").write_text(LINKER_SCRIPT)
    (workdir / "startup.c").write_text(STARTUP)
    (workdir / "harness.c").write_text(harness_text)
    elf = workdir / "net.elf"
    dirs = sorted({str(Path(c).resolve().parent) for c in c_files})
    # -g: zig strips the symbol table at -Os without it (debug sections are not loaded: flash is unchanged)
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", core.target, f"-mcpu={core.mcpu}", opt, "-g", "-std=c99",
           "-ffreestanding", "-ffunction-sections", "-fdata-sections", "-fno-pie", "-I", str(inc),
           *(f"-I{d}" for d in dirs), "-T", str(workdir / "link.ld"), "-Wl,--gc-sections", "-Wl,-e,Reset_Handler",
           "-o", str(elf), str(workdir / "startup.c"), str(workdir / "harness.c"), *(str(Path(c).resolve()) for c in c_files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()] or \
            (proc.stderr + proc.stdout).splitlines()
        raise RuntimeError(f"building for {core.name} failed: " + " | ".join(lines[:4]))
    return elf


#: Soft-float routines: the ARM EABI names (__aeabi_fadd, __aeabi_dmul, __aeabi_i2f, __aeabi_f2iz, ...)
#: and the compiler-rt/libgcc ones (__addsf3, __mulsf3, __floatsisf, __fixsfsi, __extendsfdf2, ...).
SOFTFLOAT = re.compile(r"^__(aeabi_([fd](add|sub|rsub|mul|div|neg|cmp\w*|2\w+|un\w*)|u?[il]2[fd]|ul?2[fd])"
                       r"|(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord|extend|trunc|fix|fixuns|float|floatun|pow)"
                       r"\w*[sd]f\d*\w*)$")


@dataclass(frozen=True)
class ElfFacts:
    sections: dict  # name -> (address, size)
    symbols: dict  # name -> (address, size)
    segments: list  # (physical address, bytes) of every loadable segment

    def size(self, name: str) -> int:
        return self.sections.get(name, (0, 0))[1]

    @property
    def flash_bytes(self) -> int:
        return sum(self.size(s) for s in (".isr_vector", ".text", ".rodata", ".data"))

    @property
    def static_ram_bytes(self) -> int:
        return self.size(".data") + self.size(".bss")

    @property
    def ram_end(self) -> int:
        """The first RAM address after .data and .bss: where the stack region starts."""
        ends = [a + s for n, (a, s) in self.sections.items() if n in (".data", ".bss") and s]
        return max(ends, default=RAM_ORIGIN)

    @property
    def softfloat(self) -> list[str]:
        return sorted(n for n in self.symbols if SOFTFLOAT.match(n))


def elf_facts(elf: Path) -> ElfFacts:
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        e = ELFFile(f)
        sections = {s.name: (s["sh_addr"], s["sh_size"]) for s in e.iter_sections() if s["sh_flags"] & 0x2}  # ALLOC
        symbols = {}
        tab = e.get_section_by_name(".symtab")
        for sym in tab.iter_symbols() if tab else ():
            if sym.name and sym["st_shndx"] != "SHN_UNDEF":
                symbols[sym.name] = (sym["st_value"], sym["st_size"])
        segments = [(seg["p_paddr"], seg.data()) for seg in e.iter_segments()
                    if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
    return ElfFacts(sections, symbols, segments)
