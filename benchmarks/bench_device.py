"""On the device: the README demo's networks as float32 C, int8-weight C and integer-only C, built for
a bare-metal Cortex-M0+ and Cortex-M4 with zig's clang and run in the unicorn emulator
(shrinknet.ship.device), beside TFLite Micro running the same full-integer network as a .tflite.

    PYTHONPATH=src python benchmarks/bench_device.py [--demo DIR] [--rows 3]

Networks: the demo's trained 400-100-100-10 sigmoid MLP (unpruned) and the demo's network pruned to
64 KiB (kept [35, 43]); run ``shrinknet demo --out DIR`` first, or let this script run it (about a
minute). ``--model NAME=FILE`` adds any model file, e.g. the default CNN (``shrinknet train --data
mnist5k --arch cnn --loss cross_entropy --out-activation none --out runs/cnn``) and its pruned run. Full-integer: activations calibrated by min/max over the demo's 3000 training instances.

The official route, beside them (benchmarks/litert_route.py; in a venv with ``pip install -e ".[litert]"``,
else one skip line): each network converted by ``litert-torch``, made full-integer by ``ai-edge-quantizer``'s
static_wi8_ai8 recipe calibrated on the same training split, and run in TFLM: flash = the .tflite's bytes
(TFLM reads the flatbuffer in place; TFLM's own code is not counted), RAM = TFLM's arena, and the test
accuracy of what TFLM computes (every test instance). For a pruned network whose unpruned model is known
(the demo's, or ``--model NAME=PRUNED@UNPRUNED``), Torch-Pruning's Taylor importance prunes the unpruned
network to the same float32 weight bytes (global ranking, small steps; as it is, and after fine-tuning on
the training split), and goes the same route. No instruction counts for this route: TFLM is not built for
the emulated cores here.

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

sys.path.insert(0, str(Path(__file__).parent))
import litert_route  # noqa: E402

CPUS = ("cortex-m0plus", "cortex-m4")


def accuracy(scores: torch.Tensor, y: np.ndarray) -> float:
    return float((scores.argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="shrinknet-demo", help="the demo's output directory (made when missing)")
    ap.add_argument("--rows", type=int, default=3, help="test instances run on each emulated core")
    ap.add_argument("--opt", default="-O2", help="the compiler's optimization flag (-O2, -Os, ...)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FILE[@UNPRUNED]",
                    help="also measure this model file (e.g. a trained or pruned CNN run's model.safetensors); "
                         "its data set is the one it records. @UNPRUNED: the model it was pruned from (adds "
                         "Torch-Pruning's Taylor pruning at the same bytes to the official route)")
    ap.add_argument("--finetune", type=int, default=20, help="epochs of fine-tuning after Torch-Pruning (0: none)")
    ap.add_argument("--no-official", action="store_true", help="skip the litert-torch / ai-edge-quantizer rows")
    args = ap.parse_args()
    demo = Path(args.demo)
    if not (demo / "model.safetensors").exists():
        print(f"running shrinknet demo --out {demo} ...", flush=True)
        subprocess.run([sys.executable, "-m", "shrinknet", "demo", "--out", str(demo)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nets = []
    files = [("unpruned 400-100-100-10", demo / "trained.safetensors", None),
             ("pruned to 64 KiB", demo / "model.safetensors", demo / "trained.safetensors")]
    for m in args.model:
        name, spec = m.split("=", 1)
        file, _, base = spec.partition("@")
        files.append((name, file, base or None))
    for name, file, base in files:
        model, meta = load_model(file)
        nets.append((name, model.eval(), meta, base))
    official_skip = "--no-official" if args.no_official else litert_route.missing()
    official = []
    header = (f"{'network':<36}{'variant':<16}{'cpu':<15}{'flash B':>9}{'RAM B':>8}{'stack B':>8}{'instr/inf':>12}"
              f"{'instr/MAC':>10}{'test acc':>9}  device check, soft-float")
    print(header)
    print("-" * len(header))
    for name, model, meta, base in nets:
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
        reps = {}
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
                    reps[prefix, cpu] = rep
                    if prefix == "i8":
                        check = "equal to the integer reference" if np.array_equal(rep.outputs, want) else "DIFFERS"
                    else:
                        check = f"max |device - torch| {np.abs(rep.outputs - want).max():.1e}"
                    soft = ", ".join(rep.softfloat[:4]) + (" ..." if len(rep.softfloat) > 4 else "") or "none"
                    print(f"{label:<36}{variant:<16}{cpu:<15}{rep.flash_bytes:>9}{rep.ram_bytes:>8}{rep.stack_bytes:>8}"
                          f"{rep.instructions_per_inference:>12.0f}{rep.instructions_per_mac:>10.2f}{acc:>9.4f}  "
                          f"{check}; soft-float: {soft}", flush=True)
        own_tflite = tflite_model(inet)
        out, arena = run_tflm(own_tflite, to_tflite_input(q_rows.numpy(), inet.in_shape))
        _, arena32 = run_tflm(tflite_model(net), to_tflite_input(rows.numpy(), inet.in_shape).astype(np.float32))
        same = "equal to the integer reference" if np.array_equal(out, want_int) else "DIFFERS"
        print(f"{label:<36}{'TFLM .tflite':<16}{'(host)':<15}{'':>9}{arena:>8}{'':>8}{'':>12}{'':>10}{acc_int:>9.4f}  "
              f"int8 arena {arena} B ({same}); float32 arena {arena32} B; integer flash (weights) "
              f"{inet.flash_bytes()} B, integer C scratch {inet.ram_bytes()} B; {macs} MACs")
        print()
        if official_skip is None:
            i8 = reps["i8", CPUS[0]]
            own = [("shrinknet integer-only C (ELF, cortex-m0plus)", i8.flash_bytes, i8.ram_bytes),
                   ("shrinknet's own full-integer .tflite -> TFLM", len(own_tflite), arena)]
            official += official_rows(label, model, meta, base, X_train, X_test, y_test.numpy(), own, acc_int,
                                      args.finetune)
    print("The official route: litert-torch -> ai-edge-quantizer static int8 (calibrated on the training split) "
          "-> TFLM; shrinknet's integer-only rows for comparison. flash: the ELF's code + weights, or the .tflite's "
          "bytes (TFLM's own code not counted); RAM: the ELF's data + bss + stack, or TFLM's arena")
    if official_skip is not None:
        print(f"skipped: {official_skip}")
        return
    head = "| network | route | flash B | RAM B | test acc | notes |"
    print(head)
    print("|---|---|---|---|---|---|")
    print("\n".join(official))


def official_rows(label, model, meta, base, X_train, X_test, y_test, own, acc_int, finetune: int) -> list[str]:
    """Markdown rows: shrinknet's integer-only network (``own``: (route, flash, RAM): its C's ELF, and its
    own .tflite in TFLM), then ``model`` through litert-torch -> ai-edge-quantizer -> TFLM (float32 and
    int8), then Torch-Pruning's Taylor pruning of ``base`` at ``model``'s float32 bytes, the same route."""
    import shrinknet

    rows = [f"| {label} | {what} | {flash} | {ram} | {acc_int:.4f} | |" for what, flash, ram in own]
    variants = [("litert-torch", model, "")]
    if base is not None:
        budget = shrinknet.network_bytes(model)
        b_model, b_meta = load_model(base)
        tp = torch_pruning_taylor(b_model.eval(), b_meta, X_train, budget)
        variants.append(("Torch-Pruning Taylor", tp, f"pruned to {shrinknet.network_bytes(tp)} B <= {budget} B, "
                         "no fine-tuning"))
        if finetune:
            ft = finetuned(tp, b_meta, X_train, finetune)
            variants.append((f"Torch-Pruning Taylor + {finetune} epochs", ft, "fine-tuned on the training split"))
    cal = X_train.numpy().astype(np.float32)
    for what, m, note in variants:
        f32 = litert_route.convert(m, X_train[:1])
        i8 = litert_route.full_int8(f32, cal)
        out32, arena32 = litert_route.run_float_in_tflm(f32, X_test.numpy())
        out8, arena8 = litert_route.run_int8_in_tflm(i8, X_test.numpy())
        hidden = "-".join(str(b.param.out_units) for b in as_net(m).blocks)
        extra = f"{note}; " if note else ""
        rows.append(f"| {label} | {what} float32 -> TFLM | {len(f32)} | {arena32} | {accuracy(torch.from_numpy(out32), y_test):.4f} "
                    f"| {extra}kept {hidden} |")
        rows.append(f"| {label} | {what} -> AEQ int8 -> TFLM | {len(i8)} | {arena8} | {accuracy(torch.from_numpy(out8), y_test):.4f} "
                    f"| {extra}kept {hidden} |")
    return rows


def _loss_of(meta):
    from shrinknet.model import losses

    return losses.get(meta.get("loss") or "mse")


def _targets(net, X, meta, split: str):
    """The training split's targets as the loss reads them (labels, or one-hot for mse)."""
    from shrinknet.model import network

    ds = datasets.reload(meta["data"])
    return network.prepare(net, X, torch.from_numpy(getattr(ds, f"y_{split}")), _loss_of(meta)).T


def torch_pruning_taylor(model, meta, X_train, budget: int):
    """Torch-Pruning's Taylor importance (global ranking, 200 small steps) until the float32 weight bytes
    (shrinknet.network_bytes) are <= budget; gradients of the model's own loss on the training split.
    The output layer is not pruned (its units are the classes)."""
    import copy

    import torch_pruning as tp

    import shrinknet

    m = copy.deepcopy(model).eval()
    loss = _loss_of(meta)
    T = _targets(as_net(m), X_train, meta, "train")
    last = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    pruner = tp.pruner.MetaPruner(m, X_train[:1], importance=tp.importance.TaylorImportance(), global_pruning=True,
                                  pruning_ratio=0.97, iterative_steps=200, ignored_layers=[last])
    for _ in range(200):
        if shrinknet.network_bytes(m) <= budget:
            break
        m.zero_grad()
        loss.per_instance(m(X_train), T).sum().backward()
        pruner.step()
    return m.eval()


def finetuned(model, meta, X_train, epochs: int):
    """``model`` fine-tuned with shrinknet's trainer (Adam, early stopping on the validation split)."""
    import copy

    from shrinknet.repair.train import train

    m = copy.deepcopy(model)
    ds = datasets.reload(meta["data"])
    net = as_net(m)
    Xv = net.prepare_input(torch.from_numpy(ds.X_val))
    train(m, X_train, torch.from_numpy(ds.y_train), Xv, torch.from_numpy(ds.y_val), loss=meta.get("loss") or "mse",
          epochs=epochs, lr=1e-3)
    return m.eval()


if __name__ == "__main__":
    main()
