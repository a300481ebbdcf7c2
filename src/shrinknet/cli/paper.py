"""``shrinknet reproduce`` (the paper's experiments) and ``shrinknet demo``."""

from __future__ import annotations

import click
import time
from pathlib import Path

from .base import DEFAULT_REFIT, DEMO_BUDGET, DEMO_DIR, _check_out, _overwrite_option, _quiet, _say, cli
from ..workflows.inputs import require


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

    from ..workflows import experiments as E
    from ..util.files import claim, staged_dir, write_text

    chosen = E.expand(list(experiments))
    own = (*E.EXPERIMENTS, "results.md")
    _check_out(out, overwrite=overwrite, own=own)
    out = Path(out)
    parts = ["# shrinknet reproduce: ours against the paper", "",
             f"seed {seed}{', quick (reduced data and sizes: not comparable with the paper)' if quick else ''}; "
             "test-set numbers; a cell reads ours (paper) where the paper gives a number, read off its figures (±0.01)",
             ""]
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
    from ..data import datasets
    from ..store import memory
    from ..ship.runs import run_label
    from ..workflows.experiments import budget_summary, shrink_and_save, trained_model
    from ..util.files import claim

    budget_bytes = memory.parse_size(budget)
    require("onnx", "export")
    require("matplotlib", "report")
    require("scipy", "report")
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
                           name=run_label("iterative", "brute_force"), prefix="mnist", full_curve=True, progress=not _quiet(ctx),
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
