"""``shrinknet report``, ``export`` and ``info``: the commands that read and write files."""

from __future__ import annotations

import click

from ..store import dtypes
from pathlib import Path

from .base import UserError, _check_out, _data_options, _model_options, _overwrite_option, cli
from ..workflows.inputs import read_model


# -- report ------------------------------------------------------------------------------------
@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Directory for report.html and figures.")
@click.option("--title", default=None, help="Report title.")
@_overwrite_option
def report(run_dirs, out, title, overwrite):
    """Write an HTML report with figures from one or more run directories."""
    from ..util.files import claim, staged_dir
    from ..ship.report import write_report

    _check_out(out, inputs=run_dirs, overwrite=overwrite)
    with claim(out), staged_dir(out, overwrite=overwrite) as stage:
        write_report([Path(d) for d in run_dirs], stage, title=title)
    click.echo(f"wrote {Path(out) / 'report.html'}")


# -- export ------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_model_options
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "c", "safetensors", "tflite"]),
              help="tflite: a float32 .tflite, or with --integer-only the full-integer int8 one (NHWC input).")
@click.option("--dtype", default=None, type=click.Choice(dtypes.EXPORTABLE),
              help="Default: the dtype the model was pruned at (its file records it), else float32. int8: int8 weights "
              "with a float32 scale per row or output channel (ONNX DequantizeLinear, C int8_t), float32 biases.")
@click.option("--integer-only", is_flag=True,
              help="Full-integer int8 (TFLite int8 spec; activation ranges: min/max over the training split of "
              "the model's data set or --data): --format c writes integer-only C (int8 in and out, no float), "
              "--format tflite the int8 .tflite. Needs --dtype int8 or no --dtype. Default for c and tflite without "
              "--dtype: on when the model was pruned with --integer-only (its file records it).")
@_data_options
@click.option("--prefix", default="shrinknet", show_default=True, help="C: name prefix of the forward function and macros.")
@click.option("--out", required=True, type=click.Path(),
              help="Output file (.onnx, .c with a .h beside it, .safetensors, .tflite).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export of shrinknet's at --out (for C: the .c and .h "
              "pair); files shrinknet did not write are never replaced.")
def export(model, hidden, activation, out_activation, fmt, dtype, integer_only, data, seed, size, prefix, out,
           overwrite):
    """Export a network for a device: ONNX, dependency-free C (float or integer-only), safetensors or .tflite."""
    from ..util import interrupt
    from ..util.files import claim
    from ..ship.export import check_export_paths, check_prefix
    from ..store.memory import format_bytes
    from ..workflows.shipping import check_formats

    if integer_only and dtype not in (None, "int8"):
        raise UserError(f"--integer-only is full-integer int8: use --dtype int8 or leave --dtype out, not {dtype}")
    check_export_paths(out, fmt, overwrite, inputs=[model])  # before any work; export() checks again
    if fmt == "c":
        check_prefix(prefix)
    interrupt.pending(out)
    net_model, meta, rec = read_model(model, hidden, activation, out_activation)
    # a model pruned full-integer ships full-integer unless a --dtype asks for another export
    integer_only = integer_only or bool(dtype is None and fmt in ("c", "tflite")
                                        and (meta.get("pruned") or {}).get("integer_only"))
    dtype = "int8" if integer_only else dtype or _pruned_dtype(meta, fmt)
    check_formats([fmt], dtype, integer_only)
    inet = _integer(net_model, meta, rec, data, seed, size) if integer_only else None  # InputError: nothing written
    with claim(out):  # creates a missing directory; a second export to the same file at once is refused
        res = _export_to(net_model, Path(out), fmt, dtype, prefix, meta, overwrite, inet)
    ram = f", RAM (scratch) {res.ram_bytes} B" if fmt == "c" else ""
    what = f"full-integer int8; {inet.calibration}" if inet is not None else f"at {dtype}"
    click.echo(f"wrote {', '.join(map(str, res.paths))}: flash (weights) {res.flash_bytes} B "
               f"({format_bytes(res.flash_bytes)} {what}){ram}")


def _integer(net_model, meta: dict, rec, data, seed, size):
    """The full-integer network, calibrated on the training split of the model's data set (or --data)."""
    from ..workflows.inputs import model_layout, read_data
    from ..workflows.shipping import integer_of
    from ..store.integer import integer_bytes
    from ..model.parse import as_net

    integer_bytes(net_model)  # an activation that cannot run full-integer is named before the data is read
    ds = model_layout(read_data(data, meta, seed, size, rec), meta, as_net(net_model))
    return integer_of(net_model, ds)


def _pruned_dtype(meta: dict, fmt: str) -> str:
    """ONNX and C: the storage dtype a pruned model file records (what its budget was counted in);
    float32 otherwise. A safetensors model file stays float32, as prune saves it (a float16 or int8
    run's file holds the stored values in float32, so that torch computes in float32)."""
    dtype = (meta.get("pruned") or {}).get("dtype")
    return dtype if fmt not in ("safetensors", "tflite") and dtype in ("float16", "int8") else "float32"


def _export_to(net_model, out: Path, fmt: str, dtype: str, prefix: str, meta: dict, overwrite: bool, inet=None):
    """The export to ``out``; a failure to write is reported with the file the user asked for (and
    its .h for C), not the temporary name it was being written under."""
    from ..workflows.shipping import export_one

    try:
        return export_one(net_model, out, fmt, dtype, prefix, meta, overwrite, inet)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and str(out) in str(e):
            raise  # already names it
        also = f" (and {out.with_suffix('.h')})" if fmt == "c" else ""
        raise UserError(f"cannot write {out}{also}: {e.strerror or e}") from None


# -- info --------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_model_options
def info(model, hidden, activation, out_activation):
    """Show a model file's layers, size at each storage dtype, data set and recorded metrics."""
    from ..store.memory import STORAGE_DTYPES, format_bytes, network_bytes
    from ..model.parse import as_net

    net_model, meta, rec = read_model(model, hidden, activation, out_activation, need_activations=False)
    net = as_net(net_model)
    if net.general:  # the layer-by-layer layout (an MLP shows its widths)
        _info_general(model, net)
    else:
        widths = [net.in_features, *net.hidden_sizes, net.out_features]
        acts = [layer.act.name for layer in net.layers]
        if rec.activation is None or rec.out_activation is None:  # a state_dict without --activation/--out-activation
            acts = ["not recorded (plain state_dict)"]
        click.echo(f"{model}: {'-'.join(map(str, widths))}, activations {', '.join(acts)}, "
                   f"{sum(net.hidden_sizes)} hidden neurons")
        if rec.loss or rec.class_values:
            classes = f", classes {', '.join(map(str, rec.class_values))}" if rec.class_values else ""
            click.echo(f"trained for: {rec.task or 'unknown task'}, loss {rec.loss or 'not recorded'}{classes}")
        click.echo("size: " + ", ".join(f"{format_bytes(network_bytes(net, d))} at {d}" for d in STORAGE_DTYPES))
    if meta.get("data"):
        d = meta["data"]
        click.echo(f"data: {d.get('name')} (seed {d.get('seed')}, {d.get('n_train')}/{d.get('n_val')}/{d.get('n_test')} "
                   f"train/val/test), loss {meta.get('loss')}")
    if meta.get("metrics"):
        click.echo("metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in meta["metrics"].items()))
    if meta.get("pruned"):
        click.echo("pruned: " + ", ".join(f"{k} {v}" for k, v in meta["pruned"].items()))
    _info_scaling(meta.get("scaling"))


def _info_general(model, net) -> None:
    """info for a convolutional network: its layers, flash at each storage dtype, RAM."""
    from ..store.memory import STORAGE_DTYPES, format_bytes, network_bytes, ram_bytes

    shape = "x".join(map(str, net.in_shape)) if net.in_shape else "unknown"
    click.echo(f"{model}: input {shape}, {len(net.hidden_sizes)} hidden layers of {list(net.hidden_sizes)} "
               f"channels/features ({sum(net.hidden_sizes)} units)")
    for k, d in enumerate(net.describe()):
        click.echo(f"  layer {k}: {d}")
    click.echo("size: " + ", ".join(f"{format_bytes(network_bytes(net, d))} at {d}" for d in STORAGE_DTYPES))
    if net.in_shape:
        click.echo(f"RAM: {format_bytes(ram_bytes(net))} (peak activations of a batch-1 forward pass, float32)")


def _info_scaling(sc) -> None:
    from ..repair.scaling import describe

    if not isinstance(sc, dict) or not sc.get("standardized"):
        return
    click.echo(describe(sc))
