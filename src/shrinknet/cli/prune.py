"""``shrinknet prune``: parse the options, call workflows.experiments.shrink_and_save, print."""

from __future__ import annotations

import click

from ..store import dtypes
import os
import time
from ..choose.prune import ALGORITHMS
from ..model.losses import LOSSES
from ..score.saliency import METHODS
from pathlib import Path

from .base import DEFAULT_REFIT, UserError, _check_out, _data_options, _data_path, _force_option, _heldout_options, _model_options, _overwrite_option, _quiet, _say, cli
from ..workflows.inputs import check_widths, data_with_heldout, heldout_extras, read_model, require, resolve_loss, start_check


# -- prune -------------------------------------------------------------------------------------
#: set when this process joined a torch.distributed group (main() then leaves it on exit)
_DISTRIBUTED: list = []


def _speed_options(f):
    """--speed and friends, --threads (issue 10); their values go to prune() as they are."""
    from ..choose.speed import SPEEDS

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
    from ..util import threads as thread_policy
    from ..choose.speed import settings

    settings(speed, screen_size, block_fraction, checks, method, algorithm)
    thread_policy.requested(threads)


def _join_distributed():
    """Under torchrun: join the process group (gloo on CPU); ranks other than 0 go silent.
    Returns the group, or None when this process runs alone."""
    import atexit
    import os

    from ..util import distributed

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
    from ..util import distributed

    distributed.leave()


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
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(dtypes.STORAGE),
              help="Storage dtype the budget is counted in (the dtype you will export); int8: int8 weights with a "
              "float32 scale per row (a convolution: per output channel) and float32 biases; float16 and int8 runs "
              "rank, refit, record and save the network as stored at that dtype (what the device computes).")
@click.option("--integer-only", is_flag=True, help="With --dtype int8: put the full-integer network in the loop (int8 "
              "weights and activations, int32 biases; the TFLite int8 spec, what the integer-only C and the int8 "
              ".tflite compute): the recorded numbers are its, brute force scores it, and the budget counts its "
              "bytes (int8 weights, int32 biases, per-channel multipliers and shifts), --ram-budget its int8 maps. "
              "Activation ranges: min/max "
              "over the training split. --export c then writes integer-only C, --export tflite the int8 .tflite.")
@click.option("--max-fraction", default=None, type=click.FloatRange(0, 1), help="Stop after removing this fraction of hidden neurons.")
@click.option("--full-curve", is_flag=True, help="Keep removing past the budget and the --max-drop crossing to "
              "record the whole curve (the kept network is chosen from all of it).")
@click.option("--clip", default=None, type=click.Choice(["mean", "median"]), help="Replace outlier scores (3 scaled MADs) by the mean or median.")
@click.option("--loss", default=None, type=click.Choice(LOSSES),
              help="The loss the model was trained with: required for a plain state_dict; a model file records its own.")
@_force_option
@click.option("--analyze/--no-analyze", default=True, show_default=True, help="Also write estimates-vs-truth, gain curves and correlated pairs.")
@click.option("--export", "export_formats", default="", help="Also export the pruned network: comma-separated onnx, c, "
              "tflite (float32, or full-integer with --integer-only).")
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
          max_drop, dtype, integer_only, max_fraction, full_curve, clip, loss, force, analyze, export_formats, prefix, out,
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
    instances are split over the processes; rank 0 prints and writes. A rank that fails or stalls
    is named by rank 0 (util/distributed.py, failures_named).
    """
    from ..util import distributed

    t0 = time.perf_counter()
    group = _join_distributed()
    with distributed.failures_named(group):
        _prune(ctx, group, t0, model, data, seed, size, hidden, activation, out_activation, method, algorithm, budget,
               ram_budget, max_drop, dtype, integer_only, max_fraction, full_curve, clip, loss, force, analyze, export_formats,
               prefix, out, overwrite, resume, checkpoint_every, val, test, refit, ridge, finetune, baseline, speed,
               screen_size, block_fraction, checks, threads)


def _prune(ctx, group, t0, model, data, seed, size, hidden, activation, out_activation, method, algorithm, budget,
           ram_budget, max_drop, dtype, integer_only, max_fraction, full_curve, clip, loss, force, analyze, export_formats, prefix,
           out, overwrite, resume, checkpoint_every, val, test, refit, ridge, finetune, baseline, speed, screen_size,
           block_fraction, checks, threads):
    """The prune command's work, on every rank (rank 0 checks outputs, prints and writes)."""
    from ..util import distributed
    from ..store import memory
    from ..choose.checkpoint import Checkpointer
    from ..workflows.experiments import choice_summary, shrink_and_save
    from ..ship import runs
    from ..ship.export import check_prefix
    from ..choose.result import parse_drop
    from ..choose.config import PruneConfig
    from ..workflows.shipping import check_formats

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
        if f not in ("onnx", "c", "tflite"):
            raise UserError(f"--export takes onnx, c and/or tflite, got {f!r}")
    if formats and dtype == "float64":
        raise UserError("--export writes float32 or float16 weights: use --dtype float32 or float16")
    PruneConfig(dtype=dtype, integer_only=integer_only)  # --integer-only needs --dtype int8: one line, before any work
    check_formats(formats, dtype, integer_only, option="--export")
    if "c" in formats:
        check_prefix(prefix)
    if "onnx" in formats:
        require("onnx", "export")
    if analyze:
        require("scipy", "report")
    if distributed.rank(group) == 0:
        out, ckpt_path, saved = _prune_outputs(ctx, [model, *map(_data_path, (data, val, test))], out, overwrite, resume)
    else:  # the other ranks only compute: no output checks, claims or checkpoints
        out, ckpt_path, saved = Path(out or "."), None, None
    net_model, meta, rec = read_model(model, hidden, activation, out_activation, loss=loss,
                                      need=("loss",) + (("data",) if data is None and val is None and test is None else ()))
    loss = resolve_loss(loss, rec, model)
    if integer_only:  # an activation TFLM cannot run in int8 is named before any work
        from ..store.integer import integer_bytes

        integer_bytes(net_model)
    ds = data_with_heldout(data, meta, seed, size, val, test, net_model, rec)
    check_widths(net_model, ds, data or ds.name)
    _require_target(budget if ram_bytes is None else ram_bytes, max_drop)
    _check_retrain(ds, meta, finetune, baseline)
    start_check(net_model, ds, loss, force)
    if refit != "none" and ds.sizes().get("train", 0) == 0:
        click.echo("note: with no training split the refit is calibrated on the validation data, which also ranks "
                   "and chooses the removals: the validation numbers are optimistic, the test numbers are not", err=True)
    hook = None if group is not None else Checkpointer(ckpt_path, every=checkpoint_every)  # one process only
    try:
        done = shrink_and_save(net_model, meta, ds, loss, out, budget_bytes=budget_bytes, dtype=dtype,
                               formats=formats, analyze=analyze, name=runs.run_label(algorithm, method),
                               extras={"source_model": str(model), **heldout_extras(val, test)},
                               progress=not _quiet(ctx), method=method, algorithm=algorithm, prefix=prefix,
                               max_fraction=max_fraction, clip=clip, full_curve=full_curve, max_drop=drop,
                               overwrite=overwrite, checkpoint=hook, resume=saved, force=force,
                               refit=None if refit == "none" else refit, ridge=ridge, finetune=finetune,
                               baseline=baseline, **({"integer_only": True} if integer_only else {}), **scale, **({} if ram_bytes is None else {"ram_budget_bytes": ram_bytes}))
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
    _print_steps(ctx, result, k, ds)
    click.echo(choice_summary(result, budget_bytes, drop, dtype + (" full-integer" if integer_only else ""), ram_bytes))
    if warning := result.kept_warning(k, done["chosen_by"], int8_option="--dtype int8"):
        click.echo(f"warning: {warning}", err=True)
    _print_frontier(done["frontier"])
    s0, sk = result.steps[0], result.steps[k]
    wrote = "".join(f", {out / p.name}" for e in done["exports"].values() for p in e.paths)
    click.echo(f"size {memory.format_bytes(s0.bytes)} -> {memory.format_bytes(sk.bytes)} at {dtype}"
               f"{' full-integer' if integer_only else ''} "
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
    from ..choose import checkpoint
    from ..util import interrupt
    from ..util.files import check_output, claim

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
    from ..choose.speed import summary

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
    from ..repair.retrain import baseline_summary

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


def _print_steps(ctx, result, kept: int, ds=None) -> None:
    """The run at every tenth of the removals and at the kept step (marked *). Classification: validation
    error and accuracy, test accuracy; regression: validation error, RMSE and R^2, test RMSE and R^2."""
    from ..store.memory import format_bytes
    from ..workflows.experiments import regression_on

    regression = ds is not None and ds.task == "regression"
    cols = ("val rmse", "val R^2", "test rmse", "test R^2") if regression else ("val acc", "test acc")
    _say(ctx, f"{'removed':>9} {'fraction':>8} {'kept':>14} {'bytes':>10} {'val error':>10} "
              + " ".join(f"{c:>9}" for c in cols))
    steps = {result.at_fraction(f).n_removed: result.at_fraction(f) for f in [i / 10 for i in range(11)]}
    steps[result.steps[kept].n_removed] = result.steps[kept]
    for n in sorted(steps):
        s = steps[n]
        if regression:
            k = result.steps.index(s)
            net = result.network(k)
            m = {split: regression_on(net, ds, split) for split in ("val", "test") if ds.sizes().get(split, 0)}
            vals = [m.get(split, {}).get(key) for split in ("val", "test") for key in ("rmse", "r2")]
        else:
            vals = [s.accuracy, s.test_accuracy]
        shown = " ".join(f"{'' if v is None else f'{v:.4g}' if regression else f'{v:.4f}':>9}" for v in vals)
        mark = "*" if s is result.steps[kept] else " "
        _say(ctx, f"{n:8d}{mark} {s.fraction_removed:8.0%} {str(s.kept):>14} {format_bytes(s.bytes):>10} "
                  f"{s.error:10.4g} {shown}")
