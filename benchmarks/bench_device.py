"""On the device: the README demo's networks as float32 C, int8-weight C and integer-only C, built for
a bare-metal Cortex-M0+ and Cortex-M4 with zig's clang and run in the unicorn emulator
(shrinknet.ship.device), beside TFLite Micro running the same full-integer network as a .tflite.

    PYTHONPATH=src python benchmarks/bench_device.py [--demo DIR] [--rows 3]

Networks: the demo's trained 400-100-100-10 sigmoid MLP (unpruned) and the demo's network pruned to
64 KiB (kept [35, 43]); run ``shrinknet demo --out DIR`` first, or let this script run it (about a
minute). ``--model NAME=FILE`` adds any model file, e.g. the default CNN (``shrinknet train --data
mnist5k --arch cnn --loss cross_entropy --out-activation none --out runs/cnn``) and its pruned run. Full-integer: activations calibrated by min/max over the demo's 3000 training instances.

Printed per network, variant and core: flash (.text + .rodata + .data of the ELF: code and weights),
RAM (.data + .bss + the painted stack's high-water mark; the harness's input/output buffers are
in .bss), instructions per inference and per multiply-accumulate (emulator counts, not cycles),
the soft-float routines linked, and the test accuracy of what runs (torch for the float networks,
the integer reference for the integer one; the device's outputs on the first rows are checked
against them: exactly for integer-only C). TFLM: its arena bytes for the .tflite (int8 and float32).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from shrinknet.data import datasets
from shrinknet.model.parse import as_net
from shrinknet.ship.c_integer import export_integer_c
from shrinknet.ship.device.emulate import macs_of, run_on_device
from shrinknet.ship.export import export
from shrinknet.ship.modelio import load_model
from shrinknet.ship.tflite import run_tflm, tflite_model, to_tflite_input
from shrinknet.store.integer import quantize_network
from shrinknet.store.quantize import fake_quantize

CPUS = ("cortex-m0plus", "cortex-m4")


def accuracy(scores: torch.Tensor, y: np.ndarray) -> float:
    return float((scores.argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="shrinknet-demo", help="the demo's output directory (made when missing)")
    ap.add_argument("--rows", type=int, default=3, help="test instances run on each emulated core")
    ap.add_argument("--opt", default="-O2", help="the compiler's optimization flag (-O2, -Os, ...)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FILE",
                    help="also measure this model file (e.g. a trained or pruned CNN run's model.safetensors); "
                         "its data set is the one it records")
    args = ap.parse_args()
    demo = Path(args.demo)
    if not (demo / "model.safetensors").exists():
        print(f"running shrinknet demo --out {demo} ...", flush=True)
        subprocess.run([sys.executable, "-m", "shrinknet", "demo", "--out", str(demo)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nets = []
    files = [("unpruned 400-100-100-10", demo / "trained.safetensors"), ("pruned to 64 KiB", demo / "model.safetensors")]
    files += [tuple(m.split("=", 1)) for m in args.model]
    for name, file in files:
        model, meta = load_model(file)
        nets.append((name, model.eval(), meta))
    header = (f"{'network':<36}{'variant':<16}{'cpu':<15}{'flash B':>9}{'RAM B':>8}{'stack B':>8}{'instr/inf':>12}"
              f"{'instr/MAC':>10}{'test acc':>9}  device check, soft-float")
    print(header)
    print("-" * len(header))
    for name, model, meta in nets:
        net = as_net(model)
        ds = datasets.reload(meta["data"])
        X_train, X_test, y_test = (torch.from_numpy(a) for a in (ds.X_train, ds.X_test, ds.y_test))
        X_train, X_test = (net.prepare_input(X) for X in (X_train, X_test))  # flat rows -> the model's instances
        rows = X_test[: args.rows]
        macs = macs_of(net)
        hidden = "-".join(str(b.param.out_units) for b in net.blocks)
        label = f"{name} ({hidden})"
        with torch.no_grad():
            acc32 = accuracy(model(X_test), y_test.numpy())
            q8 = as_net(model).with_blocks([b.with_weights(fake_quantize(b.weight), b.bias) for b in net.blocks])
            acc8 = accuracy(q8.to_sequential()(X_test), y_test.numpy())
        inet = quantize_network(model, X_train, calibration_name="the demo's training split")
        acc_int = accuracy(inet(X_test), y_test.numpy())
        q_rows = inet.quantize_input(rows)
        want_int = inet.forward(q_rows).numpy()
        with torch.no_grad():
            want32 = model(rows).numpy()
            want8 = q8.to_sequential()(rows).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            export(model, tmp / "f32.c", format="c", dtype="float32", prefix="f32")
            export(model, tmp / "w8.c", format="c", dtype="int8", prefix="w8")
            export_integer_c(inet, tmp / "i8.c", prefix="i8")
            flat = rows.reshape(len(rows), -1).numpy().astype(np.float32)
            variants = [("float32 C", "f32", flat, want32, acc32),
                        ("int8-weight C", "w8", flat, want8, acc8),
                        ("integer-only C", "i8", q_rows.reshape(len(q_rows), -1).numpy(), want_int, acc_int)]
            for variant, prefix, inputs, want, acc in variants:
                for cpu in CPUS:
                    rep = run_on_device([tmp / f"{prefix}.c"], inputs, cpu, prefix, macs, opt=args.opt)
                    if prefix == "i8":
                        check = "equal to the integer reference" if np.array_equal(rep.outputs, want) else "DIFFERS"
                    else:
                        check = f"max |device - torch| {np.abs(rep.outputs - want).max():.1e}"
                    soft = ", ".join(rep.softfloat[:4]) + (" ..." if len(rep.softfloat) > 4 else "") or "none"
                    print(f"{label:<36}{variant:<16}{cpu:<15}{rep.flash_bytes:>9}{rep.ram_bytes:>8}{rep.stack_bytes:>8}"
                          f"{rep.instructions_per_inference:>12.0f}{rep.instructions_per_mac:>10.2f}{acc:>9.4f}  "
                          f"{check}; soft-float: {soft}", flush=True)
        out, arena = run_tflm(tflite_model(inet), to_tflite_input(q_rows.numpy(), inet.in_shape))
        _, arena32 = run_tflm(tflite_model(net), to_tflite_input(rows.numpy(), inet.in_shape).astype(np.float32))
        same = "equal to the integer reference" if np.array_equal(out, want_int) else "DIFFERS"
        print(f"{label:<36}{'TFLM .tflite':<16}{'(host)':<15}{'':>9}{arena:>8}{'':>8}{'':>12}{'':>10}{acc_int:>9.4f}  "
              f"int8 arena {arena} B ({same}); float32 arena {arena32} B; integer flash (weights) "
              f"{inet.flash_bytes()} B, integer C scratch {inet.ram_bytes()} B; {macs} MACs")
        print()


if __name__ == "__main__":
    main()
