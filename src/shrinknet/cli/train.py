"""``shrinknet train`` and ``shrinknet rank``."""

from __future__ import annotations

import click
import functools
import json
import time
from ..model.losses import LOSSES
from ..score.saliency import METHODS
from pathlib import Path

from .base import UserError, _check_out, _data_options, _data_path, _force_option, _heldout_options, _hidden, _model_options, _overwrite_option, _quiet, _say, cli
from ..workflows.inputs import HIDDEN_ACTIVATIONS, check_widths, data_with_heldout, read_model, require, resolve_loss, start_check


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
@click.option("--arch", default="mlp", show_default=True, type=click.Choice(["mlp", "cnn", "dscnn", "resnet"]),
              help="cnn: per --channels entry conv 3x3 (conv 3 on a C,L signal) -> BatchNorm -> activation -> "
                   "max pool 2, then one Linear layer (BatchNorm is folded into the convolutions when saved). "
                   "dscnn: a small stand-in for MLPerf Tiny's DS-CNN: conv 3 stride 2, then per further --channels "
                   "entry depthwise conv 3 -> pointwise 1x1 conv (each with BatchNorm and activation), global "
                   "average pooling, one Linear layer. resnet: a small stand-in for MLPerf Tiny's ResNet-8 (CIFAR-10 "
                   "cannot be downloaded here): conv 3, then per --channels entry a residual stage (two conv 3, "
                   "identity skip in the first, 1x1 stride-2 projection in the others), global average pooling, "
                   "one Linear layer. All take --shape.")
@click.option("--channels", default=None, callback=lambda c, p, v: v if v is None else _hidden(v),
              help="With --arch cnn/dscnn/resnet: output channels of the conv blocks (default: 8,16 for cnn; 16,32,32 "
                   "for dscnn: the first convolution, then each separable block; 16,32,64 for resnet: each stage).")
@click.option("--shape", "shape", default=None,
              help="View each instance as an image or signal: 'image' (mnist5k 1x20x20, mnist5k-784 1x28x28, "
                   "digits 1x8x8, mnist1d 1x40) or C,H,W / C,L (a signal: Conv1d). Default with --arch cnn: image.")
@click.option("--out", required=True, type=click.Path(), help="Directory for model.safetensors.")
@_overwrite_option
@click.option("--force", is_flag=True, help="Save the network even when it ends at chance on the validation data "
              "(or no better than the mean): by default such a network is refused, not saved.")
@click.pass_context
def train(ctx, data, hidden, activation, out_activation, loss, epochs, patience, lr, batch_size, seed, size, task,
          standardize, arch, channels, shape, out, overwrite, force):
    """Train a network with early stopping and save it with its data split."""
    from ..data import datasets
    from ..ship import modelio
    from ..workflows.experiments import check_trainable, train_on
    from ..util.files import claim, staged_dir
    from ..choose.sanity import check_trained, target_problem
    from ..repair.scaling import unscaled_hint

    if out_activation is None:
        out_activation = "none" if loss == "cross_entropy" else "sigmoid"
    _check_out(out, inputs=[_data_path(data)], overwrite=overwrite)
    if arch == "mlp" and shape is not None:
        raise UserError("--shape is for --arch cnn, dscnn or resnet (an MLP reads flat feature rows)")
    conv = arch in ("cnn", "dscnn", "resnet")
    activation = activation or ("relu" if conv else "sigmoid")
    if channels is None:
        channels = {"cnn": [8, 16], "dscnn": [16, 32, 32], "resnet": [16, 32, 64]}.get(arch, [16, 32, 32])
    if arch == "dscnn" and len(channels) < 2:
        raise UserError("--arch dscnn needs at least two --channels (the first convolution and one separable block)")
    ds = datasets.load(data, seed=seed, size=size, task=task)
    input_shape = datasets.image_shape(ds.name, ds.in_features, shape or "image") if conv else None
    problem = target_problem(out_activation, ds.targets("train", loss), loss, ds.out_features)
    if problem:
        raise UserError(problem)
    check_trainable(ds, channels if conv else hidden)
    _say(ctx, ds.describe())
    with claim(out):
        t0 = time.perf_counter()
        model, meta = train_on(ds, channels if conv else hidden, activation,
                               "identity" if out_activation == "none" else out_activation,
                               loss, epochs, lr, batch_size, patience, seed, progress=not _quiet(ctx),
                               standardize=standardize, input_shape=input_shape, arch=arch if conv else "cnn")
        for note in meta["training"].get("notes", []):
            _say(ctx, note)
        seconds = time.perf_counter() - t0
        split = "val" if ds.sizes().get("val", 0) else "train"  # the start check's chance rule, after training
        hint = None if standardize else unscaled_hint(ds.inputs("train"))
        check_trained(model, ds.inputs(split), ds.targets(split, loss), loss, force=force, unscaled=hint)
        if hint:  # after the check: a refusal says it in its one line
            click.echo(f"hint: {hint}", err=True)
        with staged_dir(out, overwrite=overwrite) as stage:
            modelio.save_model(stage / "model.safetensors", model, meta)
    path = Path(out) / "model.safetensors"
    m, t = meta["metrics"], meta["training"]
    acc = f", test accuracy {m['test_accuracy']:.4f}" if "test_accuracy" in m else ""
    _say(ctx, f"trained {t['epochs_run']} epochs (best {t['best_epoch']}) in {seconds:.1f}s: "
              f"validation error {m['val_error']:.4g}, test error {m['test_error']:.4g}{acc}")
    click.echo(f"saved {path}")


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

    from ..ship import runs
    from ..util.files import claim, staged_dir, write_text

    methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"unknown method {bad[0]!r}: choose from {', '.join(METHODS)}")
    require("scipy", "report")
    if out:
        _check_out(out, inputs=[model, _data_path(data), _data_path(val)], overwrite=overwrite)
    net_model, meta, rec = read_model(model, hidden, activation, out_activation, loss=loss,
                                      need=("loss",) + (("data",) if data is None and val is None else ()))
    loss = resolve_loss(loss, rec, model)
    if out:
        ctx.with_resource(claim(out))
    ds = data_with_heldout(data, meta, seed, size, val, None, net_model, rec)
    check_widths(net_model, ds, data or ds.name)
    start_check(net_model, ds, loss, force)
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
