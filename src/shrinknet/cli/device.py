"""``shrinknet device``: the kept network on emulated Cortex-M cores (workflows/device.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ..ship.device.build import CPU_NAMES
from ..workflows.inputs import model_layout, read_data, read_model
from .base import _data_options, _say, cli


@cli.command()
@click.argument("run_or_model", type=click.Path())
@_data_options
@click.option("--cpu", "cpus", default="cortex-m0plus", show_default=True,
              help=f"Comma-separated cores: {', '.join(CPU_NAMES)}.")
@click.option("--clock", default="64MHz", show_default=True,
              help="Clock for the latency estimate, with its unit: e.g. 48MHz, 32768Hz (1kHz..2GHz).")
@click.option("--rows", default=4, show_default=True, type=click.IntRange(min=1, max=64),
              help="Test instances run on each emulated core (the accuracies use the whole test split).")
@click.pass_context
def device(ctx, run_or_model, data, seed, size, cpus, clock, rows):
    """Build the network's C for bare-metal Cortex-M cores, run it in an emulator, and measure it.

    \b
    RUN_OR_MODEL: a run directory of 'shrinknet prune' (its model.safetensors; the figures are
    added to its run.json for the report's "On the device" table) or a model file.
    Full-integer int8 (TFLite int8 spec; activations calibrated on the training split) and float32
    C, each checked against shrinknet's own reference; flash and RAM read from the ELF and the
    painted stack; instructions per inference and per multiply-accumulate counted in the unicorn
    emulator; TFLite Micro's arena beside it. Latency = instructions / clock: not cycle-accurate.
    Needs the [device] and [tflite] extras: pip install 'shrinknet[device,tflite]'.
    """
    from ..workflows.device import device_summary, parse_clock, record_device_figures

    path = Path(run_or_model)
    run_dir = path if path.is_dir() else None
    model_path = path / "model.safetensors" if run_dir is not None else path
    if run_dir is not None and not (run_dir / "run.json").is_file():
        raise click.UsageError(f"{path} is a directory but not a run directory of 'shrinknet prune' (no run.json)")
    clock_hz = parse_clock(clock)
    net, meta, rec = read_model(str(model_path), need_activations=False)
    ds = model_layout(read_data(data, meta, seed, size, rec), meta, net)
    split = "test" if ds.sizes().get("test", 0) else "val"
    calib, cname = (ds.inputs("train"), "the training split") if ds.sizes().get("train", 0) else \
        (ds.inputs("val"), "the validation split (there is no training split)")
    labels = ds.targets(split, "cross_entropy") if ds.task == "classification" else None
    summary = device_summary(net, calib, ds.inputs(split), labels, cpus=[c.strip() for c in cpus.split(",") if c.strip()],
                             clock_hz=clock_hz, rows=rows, calibration_name=f"{cname} of {ds.name}")
    for line in summary.lines():
        click.echo(line)
    if summary.accuracy_float is not None:
        click.echo(f"{split} accuracy: float {summary.accuracy_float:.4f}, integer-only {summary.accuracy_integer:.4f}")
    if run_dir is not None:
        record_device_figures(run_dir, summary.to_dict())
        _say(ctx, f"added the figures to {run_dir / 'run.json'}")

