"""The ``shrinknet`` command: a thin layer that parses, calls the library, and prints.

Every user error (bad data, model file, budget, option) ends as one line on stderr,
``error: ...``, and exit status 2, with no traceback and no partial output files.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import click

from .errors import InputError
from .model.activations import NAMES as _ACTIVATIONS
from .model.losses import LOSSES
from .model.parse import as_net
from .choose.prune import ALGORITHMS
from .score.saliency import METHODS

HIDDEN_ACTIVATIONS = [a for a in _ACTIVATIONS if a != "identity"]
_QUIET_KEY = "shrinknet.quiet"
DEMO_DIR = "shrinknet-demo"
DEMO_BUDGET = "64KiB"
#: --refit default of prune, chosen by held-out test accuracy in benchmarks/bench_frontier.py
DEFAULT_REFIT = "final"


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130
#: What the library raises for bad input (InputError is raised where input is read and validated).
INPUT_ERRORS = (InputError, ValueError, TypeError, OSError, ImportError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _debug() -> bool:
    return os.environ.get("SHRINKNET_DEBUG", "") not in ("", "0")


def run_guarded(fn) -> int:
    """Run ``fn`` (the whole command) and turn every way it can end into an exit status, with at
    most one line on stderr: bad input -> 2, interrupted -> 130, a bug in shrinknet -> 1 (with a
    hint to report it; SHRINKNET_DEBUG=1 shows the traceback). Library warnings are not shown
    (SHRINKNET_DEBUG=1 shows them)."""
    try:
        with warnings.catch_warnings():
            if not _debug():
                warnings.simplefilter("ignore")
            rv = fn()
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:
        e.show()
        return e.exit_code
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "shrinknet"
        click.echo(f"error: {_first_line(click.ClickException(e.format_message())).rstrip('.')}; "
                   f"try '{where} --help'", err=True)
        return EXIT_INPUT
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:  # an interruption that escaped _Group.invoke
        _interrupted(KeyboardInterrupt())
    except INPUT_ERRORS as e:
        if _debug():
            traceback.print_exc()
        click.echo(f"error: {_first_line(e)}", err=True)
        return EXIT_INPUT
    except Exception as e:  # a bug in shrinknet, not in the input
        if _debug():
            traceback.print_exc()
        click.echo(f"internal error ({type(e).__name__}: {_first_line(e)}): this is a bug in shrinknet; please "
                   "report it with the command you ran (SHRINKNET_DEBUG=1 shows the traceback)", err=True)
        return EXIT_INTERNAL


class _Group(click.Group):
    """The one place where exceptions become exit statuses and one-line messages (run_guarded);
    an interruption (Ctrl-C, SIGTERM) exits through interrupt.py's message and status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (interrupt.Terminated)
            _interrupted(e)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = run_guarded(lambda: super(_Group, self).main(args, prog_name, complete_var,
                                                             standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


def _quiet(ctx) -> bool:
    """--quiet given before the subcommand (the group's) or after it (every subcommand's)."""
    return bool(ctx.find_root().params.get("quiet") or ctx.meta.get(_QUIET_KEY))


def _say(ctx, msg: str = "") -> None:
    if not _quiet(ctx):
        click.echo(msg)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter; errors still go to stderr.")
@click.version_option(package_name="shrinknet")
def cli(quiet):
    """Shrink a trained feed-forward network neuron by neuron until it fits a memory budget.

    \b
    Typical use:
      shrinknet train --data mnist5k --hidden 100,100 --out runs/mnist
      shrinknet prune runs/mnist/model.safetensors --budget 64KiB --out runs/mnist-64k
      shrinknet report runs/mnist-64k --out runs/report
      shrinknet export runs/mnist-64k/model.safetensors --format c --out mnist.c
      shrinknet info runs/mnist-64k/model.safetensors
    Or all of it at once: shrinknet demo
    """
    from .util import interrupt

    interrupt.reset()  # what an interruption message reports is this command's alone


# -- shared options and loaders ----------------------------------------------------------------
def _hidden(value: str | None):
    if value is None:
        return None
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths, e.g. 100,100") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter(f"{value!r}: give at least one positive width, e.g. 100 or 100,100")
    return sizes


def _data_options(f):
    for opt in reversed([
        click.option("--data", "data", help="Built-in data set name (mnist5k, digits, cosine, diamond, random-shape, "
                     "mnist5k-1vall, ...) or a .npz/.csv/IDX file. Default: the one the model was trained on."),
        click.option("--seed", default=None, type=int, help="Split seed (default: the model's, else 0)."),
        click.option("--size", default=None, type=click.IntRange(min=10), help="Use this many instances."),
    ]):
        f = opt(f)
    return f


def _model_options(f):
    acts = HIDDEN_ACTIVATIONS
    for opt in reversed([
        click.option("--hidden", default=None, callback=lambda c, p, v: _hidden(v),
                     help="Optional check: the hidden widths you expect, e.g. 100,100 (a state_dict's widths "
                     "come from its tensor shapes)."),
        click.option("--activation", default=None, type=click.Choice(acts),
                     help="The hidden activation: required for a plain state_dict; a shrinknet model file "
                     "records its own."),
        click.option("--out-activation", default=None, type=click.Choice([*acts, "none"]),
                     help="The output layer's activation: required for a plain state_dict; a shrinknet model "
                     "file records its own."),
    ]):
        f = opt(f)
    return f


def _shown(act: str | None) -> str | None:
    """Activation names as the options spell them ("none" for no activation)."""
    return "none" if act == "identity" else act


def _choices(values) -> str:
    return "|".join(values)


def _load_model(path: str, hidden=None, activation=None, out_activation=None, need_activations: bool = True):
    """(model, meta, record) from a shrinknet model file or a plain state_dict.

    A model file's record wins: an option that contradicts it is refused. A state_dict records
    nothing: its activations must be given (no silent default), its widths come from its shapes.
    """
    from .ship import modelio

    p = Path(path)
    if modelio.kind(p) == "state_dict":
        missing = [f"--activation {_choices(HIDDEN_ACTIVATIONS)}" if activation is None else "",
                   f"--out-activation {_choices([*HIDDEN_ACTIVATIONS, 'none'])}" if out_activation is None else ""]
        missing = [m for m in missing if m]
        if missing and need_activations:
            raise UserError(f"{p} is a plain state_dict, which does not record its activations: give "
                            f"{' and '.join(missing)} (the ones it was trained with)")
        model = modelio.load_state_dict(p, hidden, activation or "identity", out_activation or "identity")
        out = None if out_activation is None else ("identity" if out_activation == "none" else out_activation)
        return model, {}, modelio.Record(activation=activation, out_activation=out)
    model, meta = modelio.load_model(p)
    rec = modelio.record(model, meta)
    widths = list(as_net(model).hidden_sizes)
    if hidden is not None and list(hidden) != widths:
        raise UserError(f"{p} has hidden widths {','.join(map(str, widths))}, not {','.join(map(str, hidden))} "
                        "as --hidden says")
    for opt, given, recorded in (("--activation", activation, rec.activation),
                                 ("--out-activation", out_activation, _shown(rec.out_activation))):
        if given is not None and given != recorded:
            raise UserError(f"{opt} {given} contradicts {p}, which records {recorded}: leave {opt} out")
    return model, meta, rec


def _resolve_loss(loss: str | None, rec, path) -> str:
    """The loss to rank with: the recorded one; an explicit --loss only where none is recorded."""
    if rec.loss is not None and loss is not None and loss != rec.loss:
        raise UserError(f"--loss {loss} contradicts {path}, which records loss {rec.loss}: leave --loss out")
    if loss is None and rec.loss is None:
        raise UserError(f"{path} does not record its loss: give --loss {_choices(LOSSES)} "
                        "(the one it was trained with)")
    return loss or rec.loss


def _load_data(data: str | None, meta: dict, seed: int | None, size: int | None, rec=None):
    """The data set to rank on: by default exactly the split the model was trained with.

    Given the recorded data set (or no --data), its recorded split settings are kept and only
    --seed/--size override them, with a warning: another split can put training rows into the
    validation set that ranks the neurons. Other data is read for the recorded task, and class
    labels are numbered as the model's recorded class values (labels it does not know are refused).
    """
    from .data import datasets

    recorded = meta.get("data") or {}
    if data is None and not recorded:
        raise UserError("this model does not record its data set: pass --data NAME_OR_PATH")
    if recorded and (data is None or _same_data(data, recorded.get("name", ""))):
        if seed is None and size is None:
            ds = datasets.reload(recorded)
        else:
            args = {k: recorded[k] for k in ("seed", "val_fraction", "test_fraction", "size", "target")
                    if k in recorded}
            args.update({k: v for k, v in (("seed", seed), ("size", size)) if v is not None})
            if any(args.get(k) != recorded.get(k) for k in ("seed", "size")):
                click.echo("warning: --seed/--size differ from the model's training split; validation rows may "
                           "include rows the model was trained on", err=True)
            ds = datasets.load(recorded["name"], **args, task=recorded.get("forced_task"))
    else:
        task = rec.task if rec is not None else None
        ds = datasets.load(data, seed=0 if seed is None else seed, size=size, task=task)
    if rec is not None and rec.class_values is not None:
        ds = ds.with_classes(rec.class_values)
    elif rec is not None and rec.task is not None and ds.task != rec.task:
        raise UserError(f"{data or ds.name} is a {ds.task} data set but the model was trained for {rec.task}")
    return ds


def _heldout_options(f, test: bool = True):
    opts = [click.option("--val", "val", default=None, type=click.Path(dir_okay=False),
                         help="Rank on this held-out file (.npz/.csv/IDX), used whole, instead of the validation split.")]
    if test:
        opts.append(click.option("--test", "test", default=None, type=click.Path(dir_okay=False),
                                 help="Report test numbers on this file (.npz/.csv/IDX), used whole."))
    for opt in reversed(opts):
        f = opt(f)
    return f


def _data_with_heldout(data, meta: dict, seed, size, val, test, net_model, rec=None):
    """The data set rank/prune use: ``_load_data``'s, with its validation split (what ranks and
    chooses neurons) replaced by the whole --val file and its test split by the whole --test file.

    Each file is checked against the model: input width, and class labels mapped to the model's
    classes by value (labels it was not trained on are refused) or regression outputs. With --val
    and neither --data nor a recorded data set, there is no training split (its numbers are skipped).
    """
    import dataclasses

    import numpy as np

    from .data import datasets
    from .model.parse import as_net

    if val is None and test is None:
        return _load_data(data, meta, seed, size, rec)
    base = _load_data(data, meta, seed, size, rec) if (data is not None or meta.get("data")) else None
    if base is None and val is None:
        raise UserError("--test alone needs the model's data set: give --val FILE or --data too")
    net = as_net(net_model)
    recorded = meta.get("data") or {}
    task = (rec.task if rec is not None else None) or recorded.get("task") or (base.task if base is not None else None)
    values = list((rec.class_values if rec is not None else None) or recorded.get("class_values")
                  or (base.class_values if base is not None else ()))
    files = {}
    for opt, path in (("--val", val), ("--test", test)):
        if path is None:
            continue
        X, y = datasets.load_heldout(path, task, values, net.out_features)
        _check_width(net, X.shape[1], f"{opt} {path}")
        if y.ndim == 2 and y.shape[1] != net.out_features:
            raise UserError(f"{opt} {path} has {y.shape[1]} target columns but the model has {net.out_features} outputs")
        if y.ndim == 1 and net.out_features < 2:
            raise UserError(f"{opt} {path} has class labels but the model has one output: it is a regression model")
        task = task or ("classification" if y.ndim == 1 else "regression")
        files[opt] = (X, y)
    if base is None:
        X, y = files["--val"]
        empty = (np.empty((0, X.shape[1]), np.float32), y[:0])
        Xt, yt = files.get("--test", empty)
        classes = tuple(values or range(net.out_features)) if task == "classification" else ()
        return datasets.Dataset(name=f"{Path(val).name} (--val)", task=task, X_train=empty[0], y_train=empty[1],
                                X_val=X, y_val=y, X_test=Xt, y_test=yt, source=str(Path(val).resolve()),
                                n_classes=len(classes) or None, class_values=classes)
    ds = base
    if "--val" in files:
        ds = dataclasses.replace(ds, X_val=files["--val"][0], y_val=files["--val"][1])
    if "--test" in files:
        ds = dataclasses.replace(ds, X_test=files["--test"][0], y_test=files["--test"][1])
    return ds


def _heldout_extras(val, test) -> dict:
    return {k: str(Path(v).resolve()) for k, v in (("val_file", val), ("test_file", test)) if v is not None}


def _same_data(data: str, name: str) -> bool:
    """Whether --data names the recorded data set (files are recorded by absolute path)."""
    return data == name or (Path(data).exists() and str(Path(data).resolve()) == name)


def _check_width(net, n_features: int, what: str) -> None:
    """The data's features per instance against the model's input (a CNN's whole input shape)."""
    if net.dims and net.in_shape is None:
        raise UserError("the model file does not record its input shape (a convolutional network saved before it "
                        "saw data): save it with shrinknet.modelio.save_model(path, model, meta, input_shape=(C, H, W))")
    if n_features != net.in_features:
        raise UserError(f"{what} has {n_features} input features but the model expects {net.in_features}")


def _check_widths(model, ds, data_name):
    net = as_net(model)
    _check_width(net, ds.in_features, f"data set {data_name}")
    if ds.out_features != net.out_features:
        raise UserError(f"data set {data_name} has {ds.out_features} outputs/classes but the model has {net.out_features}")


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"this needs {module}: pip install 'shrinknet[{extra}]'")


def _start_check(model, ds, loss: str, force: bool) -> None:
    """Stop before any work when the starting network is unfit for ranking (sanity.check_start)."""
    from .choose.sanity import StartCheckError, check_start, start_quality

    try:
        check_start(model, ds.inputs("val"), ds.targets("val", loss), loss, force=force)
        if ds.sizes().get("test", 0) and not force:  # a --test file on another scale gives chance test numbers
            q = start_quality(model, ds.inputs("test"), ds.targets("test", loss), loss)
            if q.near_chance:
                score = f"accuracy {q.accuracy:.3f}" if q.accuracy is not None else f"R^2 {q.r2:.3g}"
                raise StartCheckError(f"the starting network is at chance on the test data ({score}) but not on "
                                      "the validation data: the test data are likely on another input scale or "
                                      "labelled differently")
    except StartCheckError as e:
        raise UserError(f"{e}; --force goes on anyway") from None


def _force_option(f):
    return click.option("--force", is_flag=True, help="Go on even when the starting network is at chance on the "
                        "ranking data (or no better than the mean), or loss and output activation disagree.")(f)


# -- outputs: checked before any work, written whole (files.py), interruptions (interrupt.py) ----
def _overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Replace an existing non-empty --out directory as a whole (at the end, "
                             "only once everything new is written).")(f)


def _check_out(path, kind: str = "dir", inputs=(), overwrite: bool = False, own=(), option: str = "--out") -> Path:
    """The one pre-work check of every output location (files.check_output); also registers
    the location for the interruption message. Raises OutputError (one line, exit 2)."""
    from .util import interrupt
    from .util.files import check_output

    checked = check_output(path, kind, inputs=[i for i in inputs if i], overwrite=overwrite, own=own,
                           option=option)
    interrupt.pending(path)
    return checked


def _data_path(data: str | None):
    """--data when it names a file (an input to protect), else None."""
    return data if data and Path(data).exists() else None


def _interrupted(e: KeyboardInterrupt):
    from .util import interrupt

    click.echo(interrupt.message(e), err=True)
    sys.exit(interrupt.exit_status(e))


# -- train -------------------------------------------------------------------------------------
@cli.command()
@click.option("--data", required=True, help="Built-in data set name or a .npz/.csv/IDX file.")
@click.option("--hidden", default="100,100", show_default=True, callback=lambda c, p, v: _hidden(v),
              help="Hidden widths, comma-separated.")
@click.option("--activation", default=None, type=click.Choice(HIDDEN_ACTIVATIONS),
              help="Hidden activation (default: sigmoid for --arch mlp, relu for --arch cnn).")
@click.option("--out-activation", default=None, type=click.Choice([*HIDDEN_ACTIVATIONS, "none"]),
              help="Output layer activation. Default: sigmoid for mse, none for cross_entropy (which takes logits).")
@click.option("--loss", default="mse", show_default=True, type=click.Choice(LOSSES))
@click.option("--epochs", default=300, show_default=True, type=click.IntRange(min=1), help="At most this many epochs.")
@click.option("--patience", default=20, show_default=True, type=click.IntRange(min=1), help="Stop after this many epochs without a better validation error.")
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the split, the initial weights and the batches.")
@click.option("--size", default=None, type=click.IntRange(min=10), help="Use this many instances of the data set.")
@click.option("--task", default=None, type=click.Choice(["classification", "regression"]),
              help="Override the guess from the targets (whole numbers are read as class labels).")
@click.option("--standardize", is_flag=True, help="Train on inputs scaled to mean 0, std 1 (training split), then fold "
              "the scaling into the first layer: the saved model and its exports take raw inputs. With --arch cnn "
              "each input channel is divided by its std, not centred (that folds exactly into a zero-padded conv).")
@click.option("--arch", default="mlp", show_default=True, type=click.Choice(["mlp", "cnn"]),
              help="cnn: per --channels entry conv 3x3 (conv 3 on a C,L signal) -> BatchNorm -> activation -> "
                   "max pool 2, then one Linear layer (BatchNorm is folded into the convolutions when saved). "
                   "Needs --shape.")
@click.option("--channels", default="8,16", show_default=True, callback=lambda c, p, v: _hidden(v),
              help="With --arch cnn: output channels of the conv blocks.")
@click.option("--shape", "shape", default=None,
              help="View each instance as an image or signal: 'image' (mnist5k 1x20x20, mnist5k-784 1x28x28, "
                   "digits 1x8x8, mnist1d 1x40) or C,H,W / C,L (a signal: Conv1d). Default with --arch cnn: image.")
@click.option("--out", required=True, type=click.Path(), help="Directory for model.safetensors.")
@_overwrite_option
@click.pass_context
def train(ctx, data, hidden, activation, out_activation, loss, epochs, patience, lr, batch_size, seed, size, task,
          standardize, arch, channels, shape, out, overwrite):
    """Train a network with early stopping and save it with its data split."""
    from .data import datasets
    from .ship import modelio
    from .workflows.experiments import check_trainable, train_on
    from .util.files import claim, staged_dir
    from .choose.sanity import target_problem

    if out_activation is None:
        out_activation = "none" if loss == "cross_entropy" else "sigmoid"
    _check_out(out, inputs=[_data_path(data)], overwrite=overwrite)
    if arch == "mlp" and shape is not None:
        raise UserError("--shape is for --arch cnn (an MLP reads flat feature rows)")
    activation = activation or ("relu" if arch == "cnn" else "sigmoid")
    ds = datasets.load(data, seed=seed, size=size, task=task)
    input_shape = datasets.image_shape(ds.name, ds.in_features, shape or "image") if arch == "cnn" else None
    problem = target_problem(out_activation, ds.targets("train", loss), loss, ds.out_features)
    if problem:
        raise UserError(problem)
    check_trainable(ds, channels if arch == "cnn" else hidden)
    _say(ctx, ds.describe())
    _scaling_hint(ds, standardize)
    with claim(out):
        t0 = time.perf_counter()
        model, meta = train_on(ds, channels if arch == "cnn" else hidden, activation,
                               "identity" if out_activation == "none" else out_activation,
                               loss, epochs, lr, batch_size, patience, seed, progress=not _quiet(ctx),
                               standardize=standardize, input_shape=input_shape)
        for note in meta["training"].get("notes", []):
            _say(ctx, note)
        seconds = time.perf_counter() - t0
        with staged_dir(out, overwrite=overwrite) as stage:
            modelio.save_model(stage / "model.safetensors", model, meta)
    path = Path(out) / "model.safetensors"
    m, t = meta["metrics"], meta["training"]
    acc = f", test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else ""
    _say(ctx, f"trained {t['epochs_run']} epochs (best {t['best_epoch']}) in {seconds:.1f}s: "
              f"validation error {m['val_error']:.4g}, test error {m['test_error']:.4g}{acc}")
    click.echo(f"saved {path}")


def _scaling_hint(ds, standardize: bool) -> None:
    """A hint on stderr when the training inputs look unscaled and --standardize is not given."""
    from .repair.scaling import unscaled_hint

    hint = None if standardize else unscaled_hint(ds.inputs("train"))
    if hint:
        click.echo(f"hint: {hint}", err=True)


# -- rank --------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_data_options
@_model_options
@click.option("--methods", default="brute_force,taylor1,taylor2,taylor2_exact,magnitude", show_default=True,
              help="Comma-separated saliency methods.")
@click.option("--loss", default=None, type=click.Choice(LOSSES),
              help="The loss the model was trained with: required for a plain state_dict; a model file records its own.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="Rows to print per layer.")
@_force_option
@click.option("--out", default=None, type=click.Path(), help="Directory for scores.csv and analysis.json.")
@_overwrite_option
@functools.partial(_heldout_options, test=False)
@click.pass_context
def rank(ctx, model, data, seed, size, hidden, activation, out_activation, methods, loss, top, force, out, overwrite,
         val):
    """Score every hidden neuron by each method on the validation split, with estimates-vs-truth agreement."""
    import shrinknet

    from .ship import runs
    from .util.files import claim, staged_dir, write_text

    methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"unknown method {bad[0]!r}: choose from {', '.join(METHODS)}")
    _require("scipy", "report")
    if out:
        _check_out(out, inputs=[model, _data_path(data), _data_path(val)], overwrite=overwrite)
    net_model, meta, rec = _load_model(model, hidden, activation, out_activation)
    loss = _resolve_loss(loss, rec, model)
    if out:
        ctx.with_resource(claim(out))
    ds = _data_with_heldout(data, meta, seed, size, val, None, net_model, rec)
    _check_widths(net_model, ds, data or ds.name)
    _start_check(net_model, ds, loss, force)
    X, T = ds.inputs("val"), ds.targets("val", loss)
    estimates = [m for m in methods if m not in ("brute_force", "random")]
    cmp = shrinknet.compare_estimates(net_model, X, T, loss, methods=estimates, progress=not _quiet(ctx))
    scores = {"brute_force": cmp["truth"], **cmp["scores"]}
    if "random" in methods:
        scores["random"] = shrinknet.saliency(net_model, X, T, "random", loss=loss)
    shown = [m for m in methods if m in scores]
    for h, truth in enumerate(cmp["truth"]):
        _say(ctx, f"\nhidden layer {h}: {len(truth)} neurons, the {min(top, len(truth))} with the least true ΔE")
        _say(ctx, "  neuron " + "".join(f"{m:>15}" for m in shown))
        for j in truth.argsort()[:top].tolist():
            _say(ctx, f"  {j:6d} " + "".join(f"{float(scores[m][h][j]):15.5g}" for m in shown))
    if estimates:
        _say(ctx, "\nagreement with brute force over all neurons (Pearson / Spearman / Kendall / overlap of lowest 10%):")
        for m in estimates:
            a = cmp["agreement"][m]["overall"]
            _say(ctx, f"  {m:>14}: {a['pearson']:.3f} / {a['spearman']:.3f} / {a['kendall']:.3f} / {a['overlap']:.2f}")
    if out:
        out = Path(out)
        rows = ["layer,neuron," + ",".join(shown)]
        for h, truth in enumerate(cmp["truth"]):
            for j in range(len(truth)):
                rows.append(f"{h},{j}," + ",".join(repr(float(scores[m][h][j])) for m in shown))
        with staged_dir(out, overwrite=overwrite) as stage:
            write_text(stage / "scores.csv", "\n".join(rows) + "\n")
            write_text(stage / "analysis.json", json.dumps(runs.jsonable({"estimates": cmp})))
        click.echo(f"saved {out / 'scores.csv'} and {out / 'analysis.json'}")


# -- prune -------------------------------------------------------------------------------------
def _speed_options(f):
    """--speed and friends, --threads (issue 10); their values go to prune() as they are."""
    from .choose.speed import SPEEDS

    for opt in reversed([
        click.option("--speed", default="exact", show_default=True, type=click.Choice(SPEEDS),
                     help="Iterative brute force: exact (the exact greedy choice every step), screen (second-order "
                          "screen, exact scores for a shortlist) or fast (screen plus several removals per scoring "
                          "while far from the end). Approximate runs record their agreement with exact."),
        click.option("--screen-size", default=None, type=int,
                     help="screen/fast: candidates scored exactly per step, per criterion (default 32)."),
        click.option("--block-fraction", default=None, type=float,
                     help="fast: fraction of the removals still to go taken per scoring (default 0.05)."),
        click.option("--checks", default=None, type=int,
                     help="screen/fast: removals at which the exact greedy choice is also computed (default 20)."),
        click.option("--threads", default=None, type=int,
                     help="Worker threads over candidate chunks (default: by workload size; env SHRINKNET_THREADS)."),
    ]):
        f = opt(f)
    return f


def _check_speed(speed, screen_size, block_fraction, checks, threads, method, algorithm) -> None:
    """The speed and thread settings, checked before any work (prune() checks them again)."""
    from .util import threads as thread_policy
    from .choose.speed import settings

    settings(speed, screen_size, block_fraction, checks, method, algorithm)
    thread_policy.requested(threads)


def _join_distributed():
    """Under torchrun: join the process group (gloo on CPU); ranks other than 0 go silent.
    Returns the group, or None when this process runs alone."""
    import atexit
    import os

    from .util import distributed

    group = distributed.init_from_env("cpu")
    if group is None:
        return None
    _DISTRIBUTED.append(group)
    atexit.register(_leave_distributed)
    if distributed.rank(group) != 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    return group


def _leave_distributed():
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@cli.command()
@click.argument("model", type=click.Path())
@_data_options
@_model_options
@click.option("--method", default="brute_force", show_default=True,
              type=click.Choice(METHODS))
@click.option("--algorithm", default="iterative", show_default=True, type=click.Choice(ALGORITHMS))
@click.option("--budget", default=None, help="Memory for all weights and biases, e.g. 16KiB, 48KB, 0.5MB, 20000.")
@click.option("--ram-budget", default=None, help="Peak activation RAM of a batch-1 forward pass (the two largest "
              "consecutive float32 maps, the exported C's scratch buffer), e.g. 4KiB.")
@click.option("--max-drop", default=None, help="Keep the smallest network whose validation accuracy is within this "
              "of the start: accuracy points (1% or 0.01), or for regression the relative error increase. "
              "With --budget too, whichever is tighter. prune needs --budget or --max-drop.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "float64", "int8"]),
              help="Storage dtype the budget is counted in (the dtype you will export); int8: int8 weights with a "
              "float32 scale per row (a convolution: per output channel) and float32 biases; float16 and int8 runs "
              "rank, refit, record and save the network as stored at that dtype (what the device computes).")
@click.option("--max-fraction", default=None, type=click.FloatRange(0, 1), help="Stop after removing this fraction of hidden neurons.")
@click.option("--full-curve", is_flag=True, help="Keep removing past the budget and the --max-drop crossing to "
              "record the whole curve (the kept network is chosen from all of it).")
@click.option("--clip", default=None, type=click.Choice(["mean", "median"]), help="Replace outlier scores (3 scaled MADs) by the mean or median.")
@click.option("--loss", default=None, type=click.Choice(LOSSES),
              help="The loss the model was trained with: required for a plain state_dict; a model file records its own.")
@_force_option
@click.option("--analyze/--no-analyze", default=True, show_default=True, help="Also write estimates-vs-truth, gain curves and correlated pairs.")
@click.option("--export", "export_formats", default="", help="Also export the pruned network: comma-separated onnx,c.")
@click.option("--refit", default=DEFAULT_REFIT, show_default=True, type=click.Choice(["final", "every_step", "none"]),
              help="Refit the layers above the pruned ones by ridge least squares to the unpruned network's "
              "pre-activations (training split): final = on the networks handed out, every_step = also before "
              "scoring each choice; none = the paper's plain switch-off.")
@click.option("--ridge", default=1e-3, show_default=True, type=click.FloatRange(min=0), help="Relative ridge term of --refit.")
@click.option("--finetune", default=None, type=click.IntRange(min=1), metavar="EPOCHS",
              help="Fine-tune the kept network on the training split for at most EPOCHS (early stopping on "
              "validation, best weights kept; float16 and int8 are fine-tuned in float, then rounded or re-quantized).")
@click.option("--baseline", default=None, type=click.Choice(["scratch"]),
              help="Also train networks of the kept shape from scratch (3 seeds, the model's recipe) and compare.")
@click.option("--prefix", default="shrinknet", show_default=True, help="With --export c: name prefix of the C function and macros.")
@click.option("--out", default=None, type=click.Path(),
              help="Run directory to write (required unless --resume RUN_DIR names it).")
@_overwrite_option
@click.option("--resume", default=None, is_flag=False, flag_value="", metavar="[RUN_DIR]",
              help="Continue an interrupted run from its checkpoint (RUN_DIR.checkpoint.json); give the same "
                   "options again. RUN_DIR defaults to --out.")
@click.option("--checkpoint-every", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of pruning between checkpoints (also written on Ctrl-C/SIGTERM).")
@_heldout_options
@_speed_options
@click.pass_context
def prune(ctx, model, data, seed, size, hidden, activation, out_activation, method, algorithm, budget, ram_budget,
          max_drop, dtype, max_fraction, full_curve, clip, loss, force, analyze, export_formats, prefix, out,
          overwrite, resume,
          checkpoint_every, val, test, refit, ridge, finetune, baseline, speed, screen_size, block_fraction, checks,
          threads):
    """Remove hidden neurons one at a time; save the shrunk network and the whole run.

    Needs --budget, --max-drop or both: the saved network is the least-error one that fits the
    budget, the smallest within the accuracy drop, or with both whichever is tighter.

    The run's progress is checkpointed beside the run directory (RUN_DIR.checkpoint.json) while it
    prunes; after an interruption, the same command with --resume continues where it stopped and
    ends with the same result as an uninterrupted run.

    Under torchrun (torchrun --standalone --nproc_per_node=2 -m shrinknet prune ...) the
    instances are split over the processes; rank 0 prints and writes.
    """
    from .util import distributed
    from .store import memory
    from .choose.checkpoint import Checkpointer
    from .workflows.experiments import choice_summary, shrink_and_save
    from .ship.export import check_prefix
    from .choose.result import parse_drop

    t0 = time.perf_counter()
    group = _join_distributed()
    if group is not None and resume is not None:
        raise UserError("--resume does not work under torchrun: resume the run in one process")
    scale = dict(speed=speed, screen_size=screen_size, block_fraction=block_fraction, checks=checks,
                 threads=threads, group=group)
    _check_speed(speed, screen_size, block_fraction, checks, threads, method, algorithm)
    budget_bytes = None if budget is None else memory.parse_size(budget)
    ram_bytes = None if ram_budget is None else memory.parse_size(ram_budget)
    drop = None if max_drop is None else parse_drop(max_drop)
    formats = [f.strip() for f in export_formats.split(",") if f.strip()]
    for f in formats:
        if f not in ("onnx", "c"):
            raise UserError(f"--export takes onnx and/or c, got {f!r}")
    if formats and dtype == "float64":
        raise UserError("--export writes float32 or float16 weights: use --dtype float32 or float16")
    if "c" in formats:
        check_prefix(prefix)
    if "onnx" in formats:
        _require("onnx", "export")
    if analyze:
        _require("scipy", "report")
    if distributed.rank(group) == 0:
        out, ckpt_path, saved = _prune_outputs(ctx, [model, *map(_data_path, (data, val, test))], out, overwrite, resume)
    else:  # the other ranks only compute: no output checks, claims or checkpoints
        out, ckpt_path, saved = Path(out or "."), None, None
    net_model, meta, rec = _load_model(model, hidden, activation, out_activation)
    loss = _resolve_loss(loss, rec, model)
    ds = _data_with_heldout(data, meta, seed, size, val, test, net_model, rec)
    _check_widths(net_model, ds, data or ds.name)
    _require_target(budget if ram_bytes is None else ram_bytes, max_drop)
    _check_retrain(ds, meta, finetune, baseline)
    _start_check(net_model, ds, loss, force)
    hook = None if group is not None else Checkpointer(ckpt_path, every=checkpoint_every)  # one process only
    try:
        done = shrink_and_save(net_model, meta, ds, loss, out, budget_bytes=budget_bytes, dtype=dtype,
                               formats=formats, analyze=analyze, name=f"{algorithm} {method}",
                               extras={"source_model": str(model), **_heldout_extras(val, test)},
                               progress=not _quiet(ctx), method=method, algorithm=algorithm, prefix=prefix,
                               max_fraction=max_fraction, clip=clip, full_curve=full_curve, max_drop=drop,
                               overwrite=overwrite, checkpoint=hook, resume=saved, force=force,
                               refit=None if refit == "none" else refit, ridge=ridge, finetune=finetune,
                               baseline=baseline, **scale, **({} if ram_bytes is None else {"ram_budget_bytes": ram_bytes}))
    except (ValueError, OSError) as e:  # e.g. a full disk when saving: say that the pruning done is kept
        if hook is None or not hook.writes:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{first}; the pruning so far is kept in {ckpt_path}: run the same command with --resume "
                        "to continue from it") from None
    if distributed.rank(group) != 0:
        return  # rank 0 prints and writes
    ckpt_path.unlink(missing_ok=True)  # the run is complete in `out`
    result, k = done["result"], done["step"]
    _print_steps(ctx, result)
    click.echo(choice_summary(result, budget_bytes, drop, dtype, ram_bytes))
    _print_frontier(done["frontier"])
    s0, sk = result.steps[0], result.steps[k]
    wrote = "".join(f", {out / p.name}" for e in done["exports"].values() for p in e.paths)
    click.echo(f"size {memory.format_bytes(s0.bytes)} -> {memory.format_bytes(sk.bytes)} at {dtype} "
               f"({sk.n_removed} of {sum(result.layout['hidden'])} hidden neurons removed); "
               f"saved {out / 'model.safetensors'}{wrote} and the run in {out}; "
               f"done in {time.perf_counter() - t0:.1f}s")
    _print_agreement(ctx, result)


def _require_target(budget, max_drop) -> None:
    """prune keeps the network a budget or a max drop picks; without either there is no sensible one."""
    if budget is None and max_drop is None:
        raise UserError("prune needs --budget SIZE or --max-drop DROP (or both), e.g. --max-drop 1%: "
                        "without them it would keep the one-neuron-per-layer endpoint")


def _prune_outputs(ctx, inputs, out, overwrite, resume):
    """(out, checkpoint path, saved checkpoint or None) for prune, all checked before any work;
    the output is claimed (locked) for the rest of the command."""
    from .choose import checkpoint
    from .util import interrupt
    from .util.files import check_output, claim

    if resume and out and Path(os.path.realpath(resume)) != Path(os.path.realpath(out)):
        raise UserError(f"--resume {resume} and --out {out} name different run directories: give one of them")
    out = out or resume
    if not out:
        raise UserError("give --out RUN_DIR (the directory to write), or --resume RUN_DIR")
    out = Path(out)
    ckpt = out.parent / f"{out.name}.checkpoint.json"
    _check_out(out, inputs=inputs, overwrite=overwrite)
    check_output(ckpt, "file", inputs=[i for i in inputs if i], option="checkpoint")
    ctx.with_resource(claim(out))
    saved = None
    if resume is not None:
        if ckpt.exists():
            saved = checkpoint.load(ckpt)
        else:
            click.echo(f"warning: no checkpoint at {ckpt}; starting from the beginning", err=True)
    elif ckpt.exists():
        raise UserError(f"{ckpt} is the checkpoint of an interrupted run: add --resume to continue it, "
                        "or delete it to start afresh")
    interrupt.kept(ckpt, "(run the same command with --resume to continue)")
    return out, ckpt, saved


def _print_agreement(ctx, result) -> None:
    from .choose.speed import summary

    a = summary(result.agreement)
    if a is not None:
        click.echo(f"speed {result.config['speed']}: {a['same']} of {a['checks']} checked removals were the exact greedy "
                   f"choice; exact ΔE of the removed neuron exceeded the best by {a['mean_excess_delta']:.4g} on average "
                   f"(max {a['max_excess_delta']:.4g})")


def _check_retrain(ds, meta: dict, finetune, baseline) -> None:
    """--finetune and --baseline need a training split (and the baseline the model's recipe)."""
    if (finetune or baseline) and ds.sizes().get("train", 0) == 0:
        opt = "--finetune" if finetune else "--baseline scratch"
        raise UserError(f"{opt} needs training data, and this data set has no training split: "
                        "pass --data with the data the model was trained on")
    if baseline and not meta.get("training"):
        raise UserError("--baseline scratch trains with the model's recorded recipe, and this model file records "
                        "none: train it with 'shrinknet train' or leave --baseline out")


def _print_frontier(points: list[dict]) -> None:
    from .repair.retrain import baseline_summary

    for p in points:
        if p.get("kind") == "finetuned":
            a0, a1 = p.get("before_test_accuracy"), p.get("test_accuracy")
            what = (f"test accuracy {a0:.4f} -> {a1:.4f}" if a1 is not None
                    else f"test error {p['before_test_error']:.4g} -> {p['test_error']:.4g}")
            kept = " (no epoch beat the start; kept it)" if p.get("kept_start") else ""
            click.echo(f"fine-tuned {p['epochs_run']} epochs: {what}{kept}")
    line = baseline_summary(points)
    if line:
        click.echo(line)


def _print_steps(ctx, result) -> None:
    from .store.memory import format_bytes

    _say(ctx, f"{'removed':>8} {'fraction':>8} {'kept':>14} {'bytes':>10} {'val error':>10} {'val acc':>8} {'test acc':>8}")
    shown = set()
    for f in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        s = result.at_fraction(f)
        if s.n_removed in shown:
            continue
        shown.add(s.n_removed)
        acc = "" if s.accuracy is None else f"{s.accuracy:.4f}"
        tacc = "" if s.test_accuracy is None else f"{s.test_accuracy:.4f}"
        _say(ctx, f"{s.n_removed:8d} {s.fraction_removed:8.0%} {str(s.kept):>14} {format_bytes(s.bytes):>10} "
                  f"{s.error:10.4g} {acc:>8} {tacc:>8}")


# -- report ------------------------------------------------------------------------------------
@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Directory for report.html and figures.")
@click.option("--title", default=None, help="Report title.")
@_overwrite_option
def report(run_dirs, out, title, overwrite):
    """Write an HTML report with figures from one or more run directories."""
    from .util.files import claim, staged_dir
    from .ship.report import write_report

    _check_out(out, inputs=run_dirs, overwrite=overwrite)
    with claim(out), staged_dir(out, overwrite=overwrite) as stage:
        write_report([Path(d) for d in run_dirs], stage, title=title)
    click.echo(f"wrote {Path(out) / 'report.html'}")


# -- export ------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_model_options
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "c", "safetensors"]))
@click.option("--dtype", default=None, type=click.Choice(["float32", "float16", "int8"]),
              help="Default: the dtype the model was pruned at (its file records it), else float32. int8: int8 weights "
              "with a float32 scale per row or output channel (ONNX DequantizeLinear, C int8_t), float32 biases.")
@click.option("--prefix", default="shrinknet", show_default=True, help="C: name prefix of the forward function and macros.")
@click.option("--out", required=True, type=click.Path(), help="Output file (.onnx, .c with a .h beside it, .safetensors).")
def export(model, hidden, activation, out_activation, fmt, dtype, prefix, out):
    """Export a network for a device: ONNX, dependency-free C, or safetensors."""
    from .util.files import claim
    from .store.memory import format_bytes

    _check_out(out, "file", inputs=[model])
    if fmt == "c" and Path(out).suffix == ".c":
        _check_out(Path(out).with_suffix(".h"), "file", inputs=[model], option="header")
    net_model, meta, _ = _load_model(model, hidden, activation, out_activation)
    dtype = dtype or _pruned_dtype(meta, fmt)
    with claim(out):  # creates a missing directory; a second export to the same file at once is refused
        res = _export_to(net_model, Path(out), fmt, dtype, prefix, meta)
    ram = f", RAM (scratch) {res.ram_bytes} B" if fmt == "c" else ""
    click.echo(f"wrote {', '.join(map(str, res.paths))}: flash (weights) {res.flash_bytes} B "
               f"({format_bytes(res.flash_bytes)} at {dtype}){ram}")


def _pruned_dtype(meta: dict, fmt: str) -> str:
    """ONNX and C: the storage dtype a pruned model file records (what its budget was counted in);
    float32 otherwise. A safetensors model file stays float32, as prune saves it (a float16 or int8
    run's file holds the stored values in float32, so that torch computes in float32)."""
    dtype = (meta.get("pruned") or {}).get("dtype")
    return dtype if fmt != "safetensors" and dtype in ("float16", "int8") else "float32"


def _export_to(net_model, out: Path, fmt: str, dtype: str, prefix: str, meta: dict):
    """export() to ``out``; a failure to write is reported with the file the user asked for (and
    its .h for C), not the temporary name it was being written under."""
    from .ship.export import export as export_network

    try:
        return export_network(net_model, out, format=fmt, dtype=dtype, prefix=prefix, meta=meta)
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
    from .store.memory import STORAGE_DTYPES, format_bytes, network_bytes
    from .model.parse import as_net

    net_model, meta, rec = _load_model(model, hidden, activation, out_activation, need_activations=False)
    net = as_net(net_model)
    if getattr(net, "general", False):
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
    from .store.memory import STORAGE_DTYPES, format_bytes, network_bytes, ram_bytes

    shape = "x".join(map(str, net.in_shape)) if net.in_shape else "unknown"
    click.echo(f"{model}: input {shape}, {len(net.hidden_sizes)} hidden layers of {list(net.hidden_sizes)} "
               f"channels/features ({sum(net.hidden_sizes)} units)")
    for k, d in enumerate(net.describe()):
        click.echo(f"  layer {k}: {d}")
    click.echo("size: " + ", ".join(f"{format_bytes(network_bytes(net, d))} at {d}" for d in STORAGE_DTYPES))
    if net.in_shape:
        click.echo(f"RAM: {format_bytes(ram_bytes(net))} (peak activations of a batch-1 forward pass, float32)")


def _info_scaling(sc) -> None:
    from .repair.scaling import describe

    if not isinstance(sc, dict) or not sc.get("standardized"):
        return
    click.echo(describe(sc))


# -- reproduce ---------------------------------------------------------------------------------
@cli.command()
@click.argument("experiments", nargs=-1)
@click.option("--quick", is_flag=True, help="Reduced size (600 instances, 60 epochs): minutes become seconds.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--out", default="shrinknet-reproduce", show_default=True, type=click.Path())
@_overwrite_option
@click.pass_context
def reproduce(ctx, experiments, quick, seed, out, overwrite):
    """Run the paper's experiments (4.1a 4.1b 4.3 4.4 4.5 4.6, or all) and compare with its numbers.

    --out is written as a whole at the end; an earlier reproduce output there is replaced, reusing
    its trained networks.
    """
    import shutil

    from .workflows import experiments as E
    from .util.files import claim, staged_dir, write_text

    chosen = E.expand(list(experiments))
    own = (*E.EXPERIMENTS, "results.md")
    _check_out(out, overwrite=overwrite, own=own)
    out = Path(out)
    parts = ["# shrinknet reproduce: ours (paper)", "",
             f"seed {seed}{', quick (reduced size)' if quick else ''}; test-set numbers; paper numbers read off its figures (±0.01)", ""]
    t0 = time.perf_counter()
    with claim(out), staged_dir(out, overwrite=overwrite, own=own) as stage:
        for exp in chosen:
            cached = out / exp.id / "model.safetensors"  # the earlier run's trained network, reused if it fits
            if cached.is_file():
                (stage / exp.id).mkdir()
                shutil.copyfile(cached, stage / exp.id / "model.safetensors")
            res = E.run_experiment(exp, stage, quick=quick, seed=seed, progress=not _quiet(ctx),
                                   log=lambda m: _say(ctx, m))
            table = E.comparison_table(res)
            report = out / Path(res["report"]).relative_to(stage)
            parts += [table, f"report: {report}; {res['seconds']:.0f}s", ""]
            _say(ctx, table)
        parts.append(f"total {time.perf_counter() - t0:.0f}s")
        write_text(stage / "results.md", "\n".join(parts) + "\n")
    click.echo(f"wrote {out / 'results.md'} ({time.perf_counter() - t0:.0f}s)")


# -- demo --------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", default=DEMO_DIR, show_default=True, type=click.Path())
@click.option("--budget", default=DEMO_BUDGET, show_default=True, help="Memory budget for the weights.")
@click.option("--size", default=None, type=click.IntRange(min=100), help="Use this many MNIST digits (default: all 5000).")
@_overwrite_option
@click.pass_context
def demo(ctx, out, budget, size, overwrite):
    """Train (or reuse) a sigmoid 2-hidden-layer net on MNIST 5k, prune it to a budget, report and export.

    --out is written as a whole at the end; an earlier demo output there is replaced, reusing its
    trained network.
    """
    from .data import datasets
    from .store import memory
    from .workflows.experiments import budget_summary, shrink_and_save, trained_model
    from .util.files import claim

    budget_bytes = memory.parse_size(budget)
    _require("onnx", "export")
    _require("matplotlib", "report")
    _require("scipy", "report")
    t0 = time.perf_counter()
    own = ("trained.safetensors", "model.safetensors", "model.onnx", "model.c", "model.h", "run", "report")
    _check_out(out, overwrite=overwrite, own=own)
    out = Path(out)
    ctx.with_resource(claim(out))
    ds = datasets.load("mnist5k", seed=0, size=size)
    _say(ctx, ds.describe())
    model, meta, reused = trained_model(out / "trained.safetensors", ds, (100, 100), epochs=300,
                                        progress=not _quiet(ctx), save=False)
    if reused:
        _say(ctx, f"reusing {out / 'trained.safetensors'}")
    _say(ctx, f"trained 400-100-100-10 sigmoid: test accuracy {meta['metrics']['test_accuracy']:.4f}")
    done = shrink_and_save(model, meta, ds, "mse", out, budget_bytes=budget_bytes, formats=("onnx", "c"),
                           name="iterative brute force", prefix="mnist", full_curve=True, progress=not _quiet(ctx),
                           report_title="shrinknet demo: MNIST 5k, 400-100-100-10 sigmoid", overwrite=overwrite,
                           own=own, models={"trained.safetensors": (model, meta)}, refit=DEFAULT_REFIT)
    result, k, c = done["result"], done["step"], done["exports"]["c"]
    s0, sk = result.steps[0], result.steps[k]
    click.echo(
        f"\nshrunk {memory.format_bytes(s0.bytes)} -> {memory.format_bytes(sk.bytes)} "
        f"(budget {memory.format_bytes(budget_bytes)}): kept {sk.kept} of {result.layout['hidden']} hidden neurons\n"
        f"test accuracy {s0.test_accuracy:.4f} -> {sk.test_accuracy:.4f} (iterative brute force, refit "
        f"{DEFAULT_REFIT}, as prune does by default; the paper's plain switch-off: shrinknet reproduce)\n"
        f"{budget_summary(result, budget_bytes, 'float32')}\n"
        f"wrote {out / 'model.safetensors'}, {out / 'model.onnx'}, {out / 'model.c'} (+ .h: {c.flash_bytes} B "
        f"flash, {c.ram_bytes} B RAM), report {out / 'report' / 'report.html'}\n"
        f"done in {time.perf_counter() - t0:.0f}s"
    )


def _quiet_after_subcommand(ctx, param, value):
    if value:
        ctx.meta[_QUIET_KEY] = True


for _command in cli.commands.values():  # --quiet also after the subcommand: shrinknet prune ... --quiet
    _command.params.append(click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_quiet_after_subcommand,
                                        help="No progress bars or chatter; errors still go to stderr."))


def main(argv=None) -> None:
    from .util import interrupt

    interrupt.install()  # SIGTERM cleans up like Ctrl-C; see _interrupted for the exit status
    try:
        cli.main(args=argv, prog_name="shrinknet")
    except SystemExit as e:
        if _DISTRIBUTED:
            _exit_distributed(e.code)
        raise


_DISTRIBUTED: list = []  # set when this process joined a torch.distributed group


def _exit_distributed(code) -> None:
    """Leave the process group and end the process without interpreter teardown: with gloo
    (torch 2.13) a rank that exits normally aborts now and then ("terminate called without an
    active exception", SIGABRT) after destroy_process_group, which torchrun reports as a failure."""
    import os
    import sys

    _leave_distributed()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    main()
