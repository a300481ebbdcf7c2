"""The ``shrinknet`` command: a thin layer that parses, calls the library, and prints.

Every user error (bad data, model file, budget, option) ends as one line on stderr,
``error: ...``, and exit status 2, with no traceback and no partial output files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .activations import NAMES as _ACTIVATIONS
from .prune import ALGORITHMS
from .saliency import METHODS

HIDDEN_ACTIVATIONS = [a for a in _ACTIVATIONS if a != "identity"]
DEMO_DIR = "shrinknet-demo"
DEMO_BUDGET = "64KiB"
#: --refit default of prune, chosen by held-out test accuracy in benchmarks/bench_frontier.py
DEFAULT_REFIT = "final"


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class _Group(click.Group):
    """Turns the library's ValueError/TypeError/... into one-line errors with exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (ValueError, TypeError, FileNotFoundError, ImportError, IsADirectoryError, PermissionError) as e:
            raise UserError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
        except KeyboardInterrupt:
            raise UserError("interrupted; nothing was written for the unfinished step") from None


def _quiet(ctx) -> bool:
    return bool(ctx.find_root().params.get("quiet"))


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
                     help="For a plain state_dict (.pt): hidden widths, e.g. 100,100."),
        click.option("--activation", default="sigmoid", show_default=True, type=click.Choice(acts),
                     help="For a plain state_dict: the hidden activation."),
        click.option("--out-activation", default="sigmoid", show_default=True, type=click.Choice([*acts, "none"]),
                     help="For a plain state_dict: the output activation."),
    ]):
        f = opt(f)
    return f


def _load_model(path: str, hidden=None, activation="sigmoid", out_activation="sigmoid"):
    from . import modelio

    p = Path(path)
    if p.suffix in (".pt", ".pth", ".bin"):
        if hidden is None:
            raise UserError(f"{p} is a plain state_dict: give --hidden (e.g. 100,100) and --activation")
        return modelio.load_state_dict(p, hidden, activation, out_activation), {}
    return modelio.load_model(p)


def _load_data(data: str | None, meta: dict, seed: int | None, size: int | None):
    """The data set to rank on: by default exactly the split the model was trained with.

    Given the recorded data set (or no --data), its recorded split settings are kept and only
    --seed/--size override them, with a warning: another split can put training rows into the
    validation set that ranks the neurons.
    """
    from . import datasets

    recorded = meta.get("data") or {}
    if data is None and not recorded:
        raise UserError("this model does not record its data set: pass --data NAME_OR_PATH")
    if recorded and (data is None or _same_data(data, recorded.get("name", ""))):
        if seed is None and size is None:
            return datasets.reload(recorded)
        args = {k: recorded[k] for k in ("seed", "val_fraction", "test_fraction", "size", "target") if k in recorded}
        args.update({k: v for k, v in (("seed", seed), ("size", size)) if v is not None})
        if any(args.get(k) != recorded.get(k) for k in ("seed", "size")):
            click.echo("warning: --seed/--size differ from the model's training split; validation rows may "
                       "include rows the model was trained on", err=True)
        return datasets.load(recorded["name"], **args)
    return datasets.load(data, seed=0 if seed is None else seed, size=size)


def _same_data(data: str, name: str) -> bool:
    """Whether --data names the recorded data set (files are recorded by absolute path)."""
    return data == name or (Path(data).exists() and str(Path(data).resolve()) == name)


def _check_widths(model, ds, data_name):
    from .network import as_net

    net = as_net(model)
    if ds.in_features != net.in_features:
        raise UserError(f"data set {data_name} has {ds.in_features} input features but the model expects {net.in_features}")
    if ds.out_features != net.out_features:
        raise UserError(f"data set {data_name} has {ds.out_features} outputs/classes but the model has {net.out_features}")


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"this needs {module}: pip install 'shrinknet[{extra}]'")


def _loss_of(meta: dict, loss: str | None) -> str:
    return loss or meta.get("loss") or "mse"


# -- train -------------------------------------------------------------------------------------
@cli.command()
@click.option("--data", required=True, help="Built-in data set name or a .npz/.csv/IDX file.")
@click.option("--hidden", default="100,100", show_default=True, callback=lambda c, p, v: _hidden(v),
              help="Hidden widths, comma-separated.")
@click.option("--activation", default="sigmoid", show_default=True, type=click.Choice(HIDDEN_ACTIVATIONS))
@click.option("--out-activation", default="sigmoid", show_default=True, type=click.Choice([*HIDDEN_ACTIVATIONS, "none"]))
@click.option("--loss", default="mse", show_default=True, type=click.Choice(["mse", "cross_entropy"]))
@click.option("--epochs", default=300, show_default=True, type=click.IntRange(min=1), help="At most this many epochs.")
@click.option("--patience", default=20, show_default=True, type=click.IntRange(min=1), help="Stop after this many epochs without a better validation error.")
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the split, the initial weights and the batches.")
@click.option("--size", default=None, type=click.IntRange(min=10), help="Use this many instances of the data set.")
@click.option("--task", default=None, type=click.Choice(["classification", "regression"]),
              help="Override the guess from the targets (whole numbers are read as class labels).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for model.safetensors.")
@click.pass_context
def train(ctx, data, hidden, activation, out_activation, loss, epochs, patience, lr, batch_size, seed, size, task, out):
    """Train a network with early stopping and save it with its data split."""
    from . import datasets, modelio
    from .experiments import train_on

    ds = datasets.load(data, seed=seed, size=size, task=task)
    _say(ctx, ds.describe())
    model, meta = train_on(ds, hidden, activation, "identity" if out_activation == "none" else out_activation,
                           loss, epochs, lr, batch_size, patience, seed, progress=not _quiet(ctx))
    Path(out).mkdir(parents=True, exist_ok=True)
    path = modelio.save_model(Path(out) / "model.safetensors", model, meta)
    m, t = meta["metrics"], meta["training"]
    acc = f", test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else ""
    _say(ctx, f"trained {t['epochs_run']} epochs (best {t['best_epoch']}) in {t['seconds']:.1f}s: "
              f"validation error {m['val_error']:.4g}, test error {m['test_error']:.4g}{acc}")
    click.echo(f"saved {path}")


# -- rank --------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_data_options
@_model_options
@click.option("--methods", default="brute_force,taylor1,taylor2,taylor2_exact,magnitude", show_default=True,
              help="Comma-separated saliency methods.")
@click.option("--loss", default=None, type=click.Choice(["mse", "cross_entropy"]), help="Default: the model's.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="Rows to print per layer.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Directory for scores.csv and analysis.json.")
@click.pass_context
def rank(ctx, model, data, seed, size, hidden, activation, out_activation, methods, loss, top, out):
    """Score every hidden neuron by each method on the validation split, with estimates-vs-truth agreement."""
    import shrinknet

    from . import runs
    from .files import staged_dir, write_text

    methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"unknown method {bad[0]!r}: choose from {', '.join(METHODS)}")
    _require("scipy", "report")
    net_model, meta = _load_model(model, hidden, activation, out_activation)
    ds = _load_data(data, meta, seed, size)
    _check_widths(net_model, ds, data or ds.name)
    loss = _loss_of(meta, loss)
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
        with staged_dir(out) as stage:
            write_text(stage / "scores.csv", "\n".join(rows) + "\n")
            write_text(stage / "analysis.json", json.dumps(runs.jsonable({"estimates": cmp})))
        click.echo(f"saved {out / 'scores.csv'} and {out / 'analysis.json'}")


# -- prune -------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_data_options
@_model_options
@click.option("--method", default="brute_force", show_default=True,
              type=click.Choice(METHODS))
@click.option("--algorithm", default="iterative", show_default=True, type=click.Choice(ALGORITHMS))
@click.option("--budget", default=None, help="Memory for all weights and biases, e.g. 16KiB, 48KB, 0.5MB, 20000.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "float64", "int8"]),
              help="Storage dtype the budget is counted in (the dtype you will export); int8: int8 weights with a "
              "float32 scale per row and float32 biases, ranked and recorded as the device computes.")
@click.option("--max-fraction", default=None, type=click.FloatRange(0, 1), help="Stop after removing this fraction of hidden neurons.")
@click.option("--full-curve", is_flag=True, help="With --budget: keep removing past the budget to record the whole "
              "curve (without --budget the whole curve is always recorded).")
@click.option("--clip", default=None, type=click.Choice(["mean", "median"]), help="Replace outlier scores (3 scaled MADs) by the mean or median.")
@click.option("--loss", default=None, type=click.Choice(["mse", "cross_entropy"]), help="Default: the model's.")
@click.option("--analyze/--no-analyze", default=True, show_default=True, help="Also write estimates-vs-truth, gain curves and correlated pairs.")
@click.option("--export", "export_formats", default="", help="Also export the pruned network: comma-separated onnx,c.")
@click.option("--refit", default=DEFAULT_REFIT, show_default=True, type=click.Choice(["final", "every_step", "none"]),
              help="Refit the layers above the pruned ones by ridge least squares to the unpruned network's "
              "pre-activations (training split): final = on the networks handed out, every_step = also before "
              "scoring each choice; none = the paper's plain switch-off.")
@click.option("--ridge", default=1e-3, show_default=True, type=click.FloatRange(min=0), help="Relative ridge term of --refit.")
@click.option("--finetune", default=None, type=click.IntRange(min=1), metavar="EPOCHS",
              help="Fine-tune the kept network on the training split for at most EPOCHS (early stopping on "
              "validation, best weights kept; int8 is fine-tuned in float and re-quantized).")
@click.option("--baseline", default=None, type=click.Choice(["scratch"]),
              help="Also train networks of the kept shape from scratch (3 seeds, the model's recipe) and compare.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.pass_context
def prune(ctx, model, data, seed, size, hidden, activation, out_activation, method, algorithm, budget, dtype,
          max_fraction, full_curve, clip, loss, analyze, export_formats, refit, ridge, finetune, baseline, out):
    """Remove hidden neurons one at a time; save the shrunk network and the whole run."""
    from . import memory
    from .experiments import budget_summary, shrink_and_save

    budget_bytes = None if budget is None else memory.parse_size(budget)
    formats = [f.strip() for f in export_formats.split(",") if f.strip()]
    for f in formats:
        if f not in ("onnx", "c"):
            raise UserError(f"--export takes onnx and/or c, got {f!r}")
    if formats and dtype == "float64":
        raise UserError("--export writes float32 or float16 weights: use --dtype float32 or float16")
    if "onnx" in formats:
        _require("onnx", "export")
    if analyze:
        _require("scipy", "report")
    net_model, meta = _load_model(model, hidden, activation, out_activation)
    ds = _load_data(data, meta, seed, size)
    _check_widths(net_model, ds, data or ds.name)
    loss = _loss_of(meta, loss)
    _check_retrain(ds, meta, finetune, baseline)
    out = Path(out)
    done = shrink_and_save(net_model, meta, ds, loss, out, budget_bytes=budget_bytes, dtype=dtype, formats=formats,
                           analyze=analyze, name=f"{algorithm} {method}", extras={"source_model": str(model)},
                           progress=not _quiet(ctx), method=method, algorithm=algorithm,
                           max_fraction=max_fraction, clip=clip, full_curve=full_curve,
                           refit=None if refit == "none" else refit, ridge=ridge, finetune=finetune, baseline=baseline)
    result, k = done["result"], done["step"]
    _print_steps(ctx, result)
    if budget_bytes is not None:
        click.echo(budget_summary(result, budget_bytes, dtype))
    _print_frontier(done["frontier"])
    s0, sk = result.steps[0], result.steps[k]
    click.echo(f"size {memory.format_bytes(s0.bytes)} -> {memory.format_bytes(sk.bytes)} at {dtype} "
               f"({sk.n_removed} of {sum(result.layout['hidden'])} hidden neurons removed) in {done['seconds']:.1f}s; "
               f"saved {out / 'model.safetensors'} and the run in {out}")


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
    from .retrain import baseline_summary

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
    from .memory import format_bytes

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
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for report.html and figures.")
@click.option("--title", default=None, help="Report title.")
def report(run_dirs, out, title):
    """Write an HTML report with figures from one or more run directories."""
    from .report import write_report

    path = write_report([Path(d) for d in run_dirs], Path(out), title=title)
    click.echo(f"wrote {path}")


# -- export ------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_model_options
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "c", "safetensors"]))
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "int8"]),
              help="int8: int8 weights with a float32 scale per row (ONNX DequantizeLinear, C int8_t), float32 biases.")
@click.option("--prefix", default="shrinknet", show_default=True, help="C: name prefix of the forward function and macros.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file (.onnx, .c with a .h beside it, .safetensors).")
def export(model, hidden, activation, out_activation, fmt, dtype, prefix, out):
    """Export a network for a device: ONNX, dependency-free C, or safetensors."""
    from .export import export as export_network
    from .memory import format_bytes

    net_model, meta = _load_model(model, hidden, activation, out_activation)
    res = export_network(net_model, out, format=fmt, dtype=dtype, prefix=prefix, meta=meta)
    ram = f", RAM (scratch) {res.ram_bytes} B" if fmt == "c" else ""
    click.echo(f"wrote {', '.join(map(str, res.paths))}: flash (weights) {res.flash_bytes} B "
               f"({format_bytes(res.flash_bytes)}){ram}")


# -- info --------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path())
@_model_options
def info(model, hidden, activation, out_activation):
    """Show a model file's layers, size at each storage dtype, data set and recorded metrics."""
    from .memory import STORAGE_DTYPES, format_bytes, network_bytes
    from .network import as_net

    net_model, meta = _load_model(model, hidden, activation, out_activation)
    net = as_net(net_model)
    widths = [net.in_features, *net.hidden_sizes, net.out_features]
    acts = [layer.act.name for layer in net.layers]
    click.echo(f"{model}: {'-'.join(map(str, widths))}, activations {', '.join(acts)}, "
               f"{sum(net.hidden_sizes)} hidden neurons")
    click.echo("size: " + ", ".join(f"{format_bytes(network_bytes(net, d))} at {d}" for d in STORAGE_DTYPES))
    if meta.get("data"):
        d = meta["data"]
        click.echo(f"data: {d.get('name')} (seed {d.get('seed')}, {d.get('n_train')}/{d.get('n_val')}/{d.get('n_test')} "
                   f"train/val/test), loss {meta.get('loss')}")
    if meta.get("metrics"):
        click.echo("metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in meta["metrics"].items()))
    if meta.get("pruned"):
        click.echo("pruned: " + ", ".join(f"{k} {v}" for k, v in meta["pruned"].items()))


# -- reproduce ---------------------------------------------------------------------------------
@cli.command()
@click.argument("experiments", nargs=-1)
@click.option("--quick", is_flag=True, help="Reduced size (600 instances, 60 epochs): minutes become seconds.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--out", default="shrinknet-reproduce", show_default=True, type=click.Path(file_okay=False))
@click.pass_context
def reproduce(ctx, experiments, quick, seed, out):
    """Run the paper's experiments (4.1a 4.1b 4.3 4.4 4.5 4.6, or all) and compare with its numbers."""
    from . import experiments as E
    from .files import write_text

    chosen = E.expand(list(experiments))
    Path(out).mkdir(parents=True, exist_ok=True)
    parts = ["# shrinknet reproduce: ours (paper)", "",
             f"seed {seed}{', quick (reduced size)' if quick else ''}; test-set numbers; paper numbers read off its figures (±0.01)", ""]
    t0 = time.perf_counter()
    for exp in chosen:
        res = E.run_experiment(exp, Path(out), quick=quick, seed=seed, progress=not _quiet(ctx),
                               log=lambda m: _say(ctx, m))
        table = E.comparison_table(res)
        parts += [table, f"report: {res['report']}; {res['seconds']:.0f}s", ""]
        _say(ctx, table)
    parts.append(f"total {time.perf_counter() - t0:.0f}s")
    write_text(Path(out) / "results.md", "\n".join(parts) + "\n")
    click.echo(f"wrote {Path(out) / 'results.md'} ({time.perf_counter() - t0:.0f}s)")


# -- demo --------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", default=DEMO_DIR, show_default=True, type=click.Path(file_okay=False))
@click.option("--budget", default=DEMO_BUDGET, show_default=True, help="Memory budget for the weights.")
@click.option("--size", default=None, type=click.IntRange(min=100), help="Use this many MNIST digits (default: all 5000).")
@click.pass_context
def demo(ctx, out, budget, size):
    """Train (or reuse) a sigmoid 2-hidden-layer net on MNIST 5k, prune it to a budget, report and export."""
    from . import datasets, memory
    from .experiments import budget_summary, shrink_and_save, trained_model

    budget_bytes = memory.parse_size(budget)
    _require("onnx", "export")
    _require("matplotlib", "report")
    _require("scipy", "report")
    t0 = time.perf_counter()
    out = Path(out)
    ds = datasets.load("mnist5k", seed=0, size=size)
    _say(ctx, ds.describe())
    model, meta, reused = trained_model(out / "trained.safetensors", ds, (100, 100), epochs=300,
                                        progress=not _quiet(ctx))
    if reused:
        _say(ctx, f"reusing {out / 'trained.safetensors'}")
    _say(ctx, f"trained 400-100-100-10 sigmoid: test accuracy {meta['metrics']['test_accuracy']:.4f}")
    done = shrink_and_save(model, meta, ds, "mse", out, budget_bytes=budget_bytes, formats=("onnx", "c"),
                           name="iterative brute force", prefix="mnist", full_curve=True, progress=not _quiet(ctx),
                           report_title="shrinknet demo: MNIST 5k, 400-100-100-10 sigmoid")
    result, k, c = done["result"], done["step"], done["exports"]["c"]
    s0, sk = result.steps[0], result.steps[k]
    click.echo(
        f"\nshrunk {memory.format_bytes(s0.bytes)} -> {memory.format_bytes(sk.bytes)} "
        f"(budget {memory.format_bytes(budget_bytes)}): kept {sk.kept} of {result.layout['hidden']} hidden neurons\n"
        f"test accuracy {s0.test_accuracy:.4f} -> {sk.test_accuracy:.4f}\n"
        f"{budget_summary(result, budget_bytes, 'float32')}\n"
        f"wrote {out / 'model.safetensors'}, {out / 'model.onnx'}, {out / 'model.c'} (+ .h: {c.flash_bytes} B "
        f"flash, {c.ram_bytes} B RAM), report {out / 'report' / 'report.html'}\n"
        f"done in {time.perf_counter() - t0:.0f}s"
    )


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="shrinknet")


if __name__ == "__main__":
    main()
