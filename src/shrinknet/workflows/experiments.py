"""The paper's experiments, and the pipelines the CLI runs: train, prune, compare with the paper.

Paper numbers are read off the paper's figures (../shared/PAPER.md): approximate, +-0.01.
shrinknet ranks on a held-out validation set and reports the test set, which the paper does
not separate clearly; its curves are therefore comparable in shape, not to the third digit.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import datasets
from ..store import memory
from ..ship import modelio, runs
from ..repair import train
from ..choose.config import FIELDS as CONFIG_FIELDS, PruneConfig
from ..choose.prune import prune
from ..choose.integer_loop import RULE
from ..choose.result import PruneResult
from ..choose.sanity import KeptCheckWarning
from ..store.quantize import rounds
from ..ship.runs import variant_name

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PAPER_METHODS = ("brute_force", "taylor2", "taylor1")  # the criteria and algorithms the paper compares
PAPER_ALGORITHMS = ("iterative", "single")
LABEL = {"brute_force": "brute force", "taylor2": "second order", "taylor1": "first order"}


@dataclass(frozen=True)
class Experiment:
    id: str
    title: str
    data: str
    hidden: tuple[int, ...]
    metric: str  # "accuracy" or "error" (regression)
    note: str
    # paper[(algorithm, method)] = accuracy (or error) at FRACTIONS, None where not reported
    paper: dict = field(default_factory=dict)
    quick_size: int = 600


def _row(*vals):
    return tuple(vals) + (None,) * (len(FRACTIONS) - len(vals))


EXPERIMENTS = {
    e.id: e
    for e in [
        Experiment("4.1a", "cos regression, 2 x 10", "cosine", (10, 10), "error",
                   "paper: brute-force error flat until > 50% removed; the net uses 10-11 hidden units"),
        Experiment("4.1b", "cos regression, 2 x 50", "cosine", (50, 50), "error",
                   "paper: brute force SSE < 1 through 40 of 100 removed, ~61 at 90 removed; "
                   "first order ~2300 at 50 removed; second order ~1900 at 70 removed"),
        Experiment(
            "4.3", "MNIST 5k 20x20, 1 x 100", "mnist5k", (100,), "accuracy",
            "paper: Alg. II brute force removes ~60% without major loss; brute-force SSE "
            "39, 52, 72, 106, 150, 211, 336, 655, 1282 at 0..80%",
            {
                ("iterative", "brute_force"): _row(.994, .991, .986, .984, .983, .956, .89, .79),
                ("iterative", "taylor2"): _row(.98, .93, .91, .83, .80, .74, .67, .36),
                ("iterative", "taylor1"): _row(.94, .85, .66, .58, .32, .27, .11),
                ("single", "brute_force"): _row(.99, .96, .86, .68),
                ("single", "taylor2"): _row(.96, .93, .83, .79),
                ("single", "taylor1"): _row(.96, .78, .70, .67),
            },
        ),
        Experiment(
            "4.4", "MNIST 5k 20x20, 2 x 50", "mnist5k", (50, 50), "accuracy",
            "paper: Alg. II brute force removes up to 40%; mostly from the deepest layer; "
            "Alg. I first and second order ~.6-.7 already at 10%",
            {
                ("iterative", "brute_force"): _row(.996, .994, .983, .962, .93, .89, .69),
                ("iterative", "taylor2"): _row(.92, .72, .62, .61, .42, .22),
                ("iterative", "taylor1"): _row(.95, .80, .52, .42, .20),
                ("single", "brute_force"): _row(.97, .89, .59, .42),
            },
        ),
        *[
            Experiment(f"4.5-{d}", f"MNIST 784 unnormalized, {d}-vs-all, 1 x 100", f"mnist5k-784-{d}vall",
                       (100,), "accuracy",
                       f"paper (full MNIST, start {start}): brute-force error first improves and stays "
                       "below the start until 60-80% removed. Here: the 5000-digit subset, the data available")
            for d, start in ((0, .9757), (1, .9881), (2, .9513))
        ],
        Experiment(
            "4.6-diamond", "diamond, 2 x 50", "diamond", (50, 50), "accuracy",
            "paper (start .992): second order close to brute force; first order .88 after the first removal",
            {
                ("iterative", "brute_force"): _row(.994, .994, .994, .994, .985, .985),
                ("iterative", "taylor2"): _row(.993, .993, .993, .993, .88, .5),
            },
        ),
        Experiment(
            "4.6-random", "random shape, 2 x 50", "random-shape", (50, 50), "accuracy",
            "paper (start .986): brute force .991 through 30%, .92 at 50%; second order collapses at 40%",
            {("iterative", "brute_force"): _row(.991, .991, .991, None, .92)},
        ),
    ]
}
GROUPS = {"4.5": ["4.5-0", "4.5-1", "4.5-2"], "4.6": ["4.6-diamond", "4.6-random"]}


def expand(names: list[str]) -> list[Experiment]:
    """Experiment ids (or "all", or a group such as "4.6") to Experiments, in table order."""
    ids: list[str] = []
    for n in names or ["all"]:
        if n == "all":
            ids += list(EXPERIMENTS)
        elif n in GROUPS:
            ids += GROUPS[n]
        elif n in EXPERIMENTS:
            ids.append(n)
        else:
            known = ", ".join(["all", *GROUPS, *EXPERIMENTS])
            raise ValueError(f"unknown experiment {n!r}: choose from {known}")
    return [EXPERIMENTS[i] for i in dict.fromkeys(ids)]


# -- pipelines ---------------------------------------------------------------------------------
def train_on(ds: datasets.Dataset, hidden, activation="sigmoid", out_activation="sigmoid", loss="mse",
             epochs=200, lr=1e-2, batch_size=64, patience=20, seed=0, progress=False, standardize=False,
             input_shape=None, arch: str = "cnn"):
    """Train a fresh MLP on ``ds`` (with ``input_shape``, e.g. (1, 20, 20): a CNN, ``train.cnn``
    or with ``arch="dscnn"`` ``train.dscnn``, with conv channels ``hidden``); returns (model, meta) with meta ready for a model file.

    standardize: train on inputs standardized with the training split's mean and std, then fold
    the scaling into the first layer (``scaling.fold``): the returned model takes raw inputs.
    A CNN's inputs are only divided by each channel's std, not centred (``scaling.fold_channels``).
    meta records what the model is for (modelio.Record): loss, task and class values.
    Raises InputError before allocating anything when the network cannot fit in memory.
    """
    check_trainable(ds, hidden)
    from ..repair import scaling

    if input_shape is not None:
        return _train_cnn(ds, hidden, activation, out_activation, loss, epochs, lr, batch_size, patience, seed,
                          progress, tuple(input_shape), standardize, arch)
    model = train.mlp([ds.in_features, *hidden, ds.out_features], activation, out_activation, seed=seed)
    X_tr, X_va = ds.inputs("train"), ds.inputs("val")
    if standardize:
        mean, std = scaling.fit(X_tr)
        X_tr, X_va = scaling.standardize(X_tr, mean, std), scaling.standardize(X_va, mean, std)
    log = train.train(model, X_tr, ds.targets("train", loss), X_va,
                      ds.targets("val", loss), loss=loss, epochs=epochs, lr=lr, batch_size=batch_size,
                      patience=patience, seed=seed, progress=progress)
    if standardize:
        model = scaling.fold(model, mean, std)
    meta = {
        "loss": loss,
        "task": ds.task,
        **({"class_values": list(ds.class_values)} if ds.task == "classification" else {}),
        "data": ds.meta(),
        "training": {"activation": activation, "out_activation": out_activation, "hidden": list(hidden),
                     "epochs": epochs, "lr": lr, "batch_size": batch_size, "patience": patience, "seed": seed,
                     "epochs_run": log.epochs, "best_epoch": log.best_epoch},
        "metrics": evaluate(model, ds, loss),
    }
    if standardize:
        meta["scaling"] = scaling.record(mean, std)
    return model, meta  # no wall-clock time in meta: same seed, same model file bytes


def _train_cnn(ds, channels, activation, out_activation, loss, epochs, lr, batch_size, patience, seed, progress,
               shape, standardize=False, arch="cnn"):
    """``train_on`` for a CNN: instances viewed as ``shape``; BatchNorm folded into the
    convolutions after training (meta["training"]["notes"] says so). ``standardize``: trained on
    x / s_c per input channel, s folded into the first convolution (``scaling.fold_channels``)."""
    from ..repair import scaling
    from ..model.parse import as_net

    model = train.ARCHS[arch](shape, ds.out_features, channels, activation, out_activation, seed=seed)
    X_tr, X_va = ds.inputs("train"), ds.inputs("val")
    if standardize:
        std = scaling.fit_channels(X_tr, shape)
        X_tr, X_va = scaling.scale_channels(X_tr, std, shape), scaling.scale_channels(X_va, std, shape)
    view = lambda X: X.reshape(len(X), *shape)  # noqa: E731
    log = train.train(model, view(X_tr), ds.targets("train", loss), view(X_va),
                      ds.targets("val", loss), loss=loss, epochs=epochs, lr=lr, batch_size=batch_size,
                      patience=patience, seed=seed, progress=progress)
    net = as_net(model.eval())
    model = net.to_sequential()
    notes = list(net.notes)
    if standardize:
        model = scaling.fold_channels(model, std)
        rec = scaling.record_channels(std, scaling.first_layer(model)[0])
        notes.append(f"inputs divided by their channel's std ({', '.join(f'{v:.4g}' for v in std)}; not centred), "
                     f"folded into the first convolution: the saved model takes raw inputs")
    meta = {
        "loss": loss,
        "task": ds.task,
        **({"class_values": list(ds.class_values)} if ds.task == "classification" else {}),
        "data": ds.meta(),
        "training": {"arch": arch, "input_shape": list(shape), "channels": list(channels), "activation": activation,
                     "out_activation": out_activation, "hidden": list(channels), "epochs": epochs, "lr": lr,
                     "batch_size": batch_size, "patience": patience, "seed": seed, "epochs_run": log.epochs,
                     "best_epoch": log.best_epoch, "notes": notes},
        "metrics": evaluate(model, ds, loss),
    }
    if standardize:
        meta["scaling"] = rec
    return model, meta


def check_trainable(ds: datasets.Dataset, hidden) -> None:
    """Raise InputError, before allocating anything, when training this network on ``ds`` cannot fit in memory."""
    sizes = [ds.in_features, *hidden, ds.out_features]
    memory.check_fits_in_memory(f"training a {'-'.join(map(str, sizes))} network",
                                memory.training_bytes(sizes, max(ds.sizes().values())))


def trained_model(path: Path, ds: datasets.Dataset, hidden, seed: int = 0, progress=False, save: bool = True,
                  **train_args):
    """(model, meta, reused): the network saved at ``path`` if it was trained on exactly ``ds``
    (same data fingerprint and hidden sizes), else a freshly trained one, saved there (unless
    ``save`` is False: the caller saves it with the rest of its output)."""
    path = Path(path)
    if path.is_file():
        model, meta = modelio.load_model(path)
        same = meta.get("data", {}).get("fingerprint") == ds.fingerprint()
        if same and meta.get("training", {}).get("hidden") == list(hidden):
            return model, meta, True
    model, meta = train_on(ds, hidden, seed=seed, progress=progress, **train_args)
    if save:
        path.parent.mkdir(parents=True, exist_ok=True)
        modelio.save_model(path, model, meta)
    return model, meta, False


def evaluate(model, ds: datasets.Dataset, loss: str) -> dict:
    """Error (summed) and accuracy (classification) of ``model`` on every split (``retrain.evaluate``)."""
    from ..repair.retrain import evaluate as evaluate_split

    out = {}
    for split in ("train", "val", "test"):
        if len(ds.inputs(split)) == 0:  # e.g. only a held-out --val file was given
            continue
        err, acc = evaluate_split(model, ds.inputs(split), ds.targets(split, loss), loss)
        out[f"{split}_error"] = err
        if acc is not None:
            out[f"{split}_accuracy"] = acc
        if ds.task == "regression":  # RMSE, MAE, R^2 instead of an accuracy
            out.update({f"{split}_{k}": v for k, v in regression_on(model, ds, split).items()})
    return out


#: the regression metrics ``evaluate`` adds (for the validation and test splits), as frontier points carry them
REGRESSION_KEYS = tuple(f"{s}_{k}" for s in ("val", "test") for k in ("rmse", "mae", "r2"))


def regression_on(model, ds: datasets.Dataset, split: str) -> dict:
    """RMSE, MAE and R^2 (``model.evaluate.regression_metrics``) of ``model`` on a split of ``ds``."""
    from ..model import losses, network
    from ..model.evaluate import regression_metrics
    from ..model.parse import as_net

    net = as_net(model)
    data = network.prepare(net, ds.inputs(split), ds.targets(split, "mse"), losses.get("mse"))
    with torch.no_grad():
        return regression_metrics(net.forward(data.X, net.full_masks()).o[-1], data.T)


def prune_on(model, ds: datasets.Dataset, loss: str, progress=False, **kwargs) -> PruneResult:
    """Prune ``model`` ranking on the validation split and evaluating the test split; a refit and an
    ``integer_only`` run's activation ranges are calibrated on the training split when there is one
    (else on the validation split; ``shipping.calibration_split`` names which)."""
    from .shipping import calibration_split

    named = None
    if (kwargs.get("refit") or kwargs.get("integer_only")) and kwargs.get("X_calib") is None:
        kwargs["X_calib"], named = calibration_split(ds)
    tested = len(ds.inputs("test")) > 0
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_FIELDS}
    result = prune(model, ds.inputs("val"), ds.targets("val", loss), loss=loss,
                   X_test=ds.inputs("test") if tested else None, T_test=ds.targets("test", loss) if tested else None,
                   config=PruneConfig(progress=progress, **settings), **kwargs)
    if result.integer is not None and named:  # say which data calibrated the integer network, in run.json too
        result.integer.name = named
        result.config["integer_calibration"] = f"{RULE}: {len(result.integer.X)} instance(s) of {named}"
    return result


def analyses(model, ds: datasets.Dataset, loss: str, result: PruneResult, progress: bool = False) -> dict:
    """What the report draws beyond the curves, on the validation split of the unpruned network:
    estimates vs truth (and along the run), gain curves of three neurons (the cheapest, median
    and most important by brute force), and the most correlated pairs."""
    from ..score import analysis

    X, T = ds.inputs("val"), ds.targets("val", loss)
    est = analysis.compare_estimates(model, X, T, loss, progress=progress)
    order = sorted(((float(v), h, j) for h, s in enumerate(est["truth"]) for j, v in enumerate(s.tolist())))
    picks = [order[0], order[len(order) // 2], order[-1]]
    return {
        "estimates": est,
        "along_run": analysis.estimates_along_run(result, model, X, T, methods=("taylor1", "taylor2")),
        "gain": analysis.gain_curves(model, X, T, [(h, j) for _, h, j in picks], loss=loss),
        "pairs": analysis.correlated_pairs(model, X, T, loss=loss, top=5),
    }


def shrink_and_save(model, meta: dict, ds: datasets.Dataset, loss: str, out: Path, *, budget_bytes=None,
                    dtype: str = "float32", formats=(), analyze: bool = True, name: str = "",
                    report_title: str | None = None, extras: dict | None = None, progress=False,
                    prefix: str = "shrinknet", max_drop=None, overwrite: bool = False, own: tuple[str, ...] = (),
                    models: dict | None = None, finetune: int | None = None, baseline: str | None = None, force: bool = False,
                    **prune_args) -> dict:
    """Prune ``model`` on ``ds``, keep the step ``PruneResult.pick(budget_bytes, max_drop)`` chooses
    (one of them is required), and write ``out`` as a whole, all files or none: model.safetensors
    (with its own metrics), the exports in ``formats`` ("onnx", "c"), the run (run.json, steps.csv,
    analysis.json), with ``report_title`` report/, and ``models`` ({file name: (model, meta)}, e.g.
    the trained network). An existing non-empty ``out`` is replaced only with ``overwrite`` (or when
    it holds only names in ``own``; see ``files.staged_dir``). ``prune_args`` go to ``prune`` (method,
    algorithm, checkpoint, resume, ...).
    Returns {"result", "step", "chosen_by", "network", "exports", "seconds", "frontier"}.

    ``finetune`` (epochs): the kept network is fine-tuned on the training split (see
    ``retrain.finetune``) and that is what is saved and exported; ``baseline="scratch"``: networks of
    the kept shape are trained from scratch (3 seeds) with the model's recorded recipe. Both, and the
    plain switch-off network of the same step, are recorded in the run's ``extras["frontier"]``.

    First the starting network is checked on the ranking (validation) split (sanity.check_start):
    a wrong loss/output-activation setting or a network near chance raises StartCheckError before
    any work, unless ``force``.
    """
    from .shipping import export_one
    from ..util.files import staged_dir
    from ..ship.report import write_report
    from ..choose.sanity import check_kept, check_start
    from .shipping import integer_metrics, integer_of

    t0 = time.perf_counter()
    ram_budget = prune_args.get("ram_budget_bytes")
    if budget_bytes is None and max_drop is None and ram_budget is None:
        raise ValueError("give a memory budget or a max_drop: without either the run would keep the "
                         "one-neuron-per-layer endpoint")
    check_start(model, ds.inputs("val"), ds.targets("val", loss), loss, force=force)
    result = prune_on(model, ds, loss, progress=progress, budget_bytes=budget_bytes, dtype=dtype,
                      max_drop=max_drop, start_check="skip", **prune_args)  # checked just above
    seconds = time.perf_counter() - t0
    if prune_args.get("group") is not None and torch.distributed.get_rank(prune_args["group"]) != 0:
        return {"result": result, "step": None, "network": None, "exports": {}, "seconds": seconds}  # rank 0 writes
    k, chosen_by = result.pick(budget_bytes, max_drop, ram_budget)
    small = result.network(k)
    check_kept(small, ds.inputs("val"), ds.targets("val", loss), loss, f"the {chosen_by.replace('_', ' ')}",
               force=force)
    analysis = analyses(model, ds, loss, result, progress) if analyze else None
    extras = {**(extras or {}), "budget_bytes": budget_bytes, "max_drop": result.config.get("max_drop"),
              "chosen_step": k, "chosen_by": chosen_by, "seconds": round(seconds, 2), "data": ds.meta()}
    small, small_metrics, extras["frontier"] = frontier_points(model, meta, ds, loss, result, k, small, finetune,
                                                               baseline, progress)
    # an imported or bare model records no data; the pruned one records what it was pruned on, so that
    # rank/info/export on it need no --data again
    small_meta = {**meta, "loss": loss, "task": ds.task, "metrics": small_metrics, "data": meta.get("data") or ds.meta(),
                  **({"class_values": list(ds.class_values)} if ds.task == "classification" else {}),
                  "pruned": {"step": k, "removed": result.steps[k].n_removed, "method": result.config["method"],
                             "algorithm": result.config["algorithm"], "dtype": dtype, "budget_bytes": budget_bytes,
                             "max_drop": result.config.get("max_drop"), "chosen_by": chosen_by,
                             "refit": result.config.get("refit"), "finetune": finetune}}
    inet = None
    if result.integer is not None:  # the full-integer network the run recorded at step k (its exports' network)
        inet = result.integer_network(k) if not finetune else integer_of(small, ds)
        small_meta["pruned"].update(integer_only=True, integer_calibration=inet.calibration,
                                    integer_metrics=integer_metrics(inet, small, ds, loss))
        extras["integer_calibration"] = inet.calibration
    exports = {}
    with staged_dir(out, overwrite=overwrite, own=own) as stage:
        for file_name, (m, m_meta) in (models or {}).items():
            modelio.save_model(stage / file_name, m, m_meta)
        modelio.save_model(stage / "model.safetensors", small, small_meta)
        for f in formats:
            exports[f] = export_one(small, stage / f"model.{f}", f, dtype, prefix, inet=inet)
            extras["export_bytes"] = exports[f].flash_bytes
            extras[f"{f}_ram_bytes"] = exports[f].ram_bytes
        extras["exports"] = {e.paths[0].name: {"files": [p.name for p in e.paths], "format": e.format,
                                               "dtype": e.dtype, "flash_bytes": e.flash_bytes,
                                               "ram_bytes": e.ram_bytes if e.format == "c" else None}
                             for e in exports.values()}
        run_dir = stage / "run" if report_title else stage
        runs.save_run(run_dir, result, name=name or None, analysis=analysis, extras=extras)
        if report_title:
            write_report([run_dir], stage / "report", title=report_title)
    return {"result": result, "step": k, "chosen_by": chosen_by, "network": small, "exports": exports,
            "seconds": seconds, "frontier": extras["frontier"]}


def frontier_points(model, meta: dict, ds: datasets.Dataset, loss: str, result: PruneResult, k: int, small,
                    finetune: int | None = None, baseline: str | None = None, progress=False):
    """(network to save, its ``evaluate`` metrics, points): test accuracy/error against bytes of
    every variant at step k -- the run's own network, the plain switch-off network of the same neurons (when the run refit
    or its dtype rounds: float16, int8), the fine-tuned network and the from-scratch networks of the same shape."""
    from ..repair import retrain
    from ..model.surgery import shrink

    cfg, step = result.config, result.steps[k]
    dtype = cfg.get("dtype", "float32")

    def point(name, m, nbytes, **more):  # m: evaluate(network)
        return {"name": name, "bytes": nbytes, "test_accuracy": m.get("test_accuracy"),
                "test_error": m.get("test_error"), "val_accuracy": m.get("val_accuracy"),
                **{k: m[k] for k in REGRESSION_KEYS if k in m}, **more}

    made = {"dtype": dtype, "refit": cfg.get("refit")}  # how the run's networks are made: the report labels by it
    small_metrics = evaluate(small, ds, loss)
    points = [point(variant_name(cfg), small_metrics, step.bytes, kind="run", **made)]
    if cfg.get("refit") or rounds(dtype):
        plain = shrink(result.original, [m.to(result.original.device) for m in result.masks(k)])
        points.append(point("switch-off, float32", evaluate(plain, ds, loss), memory.network_bytes(plain, "float32"),
                            kind="plain", dtype="float32", refit=None))
    has_train = ds.sizes().get("train", 0) > 0
    tested = (ds.inputs("test"), ds.targets("test", loss)) if ds.sizes().get("test", 0) > 0 else (None, None)
    if finetune:
        recipe = meta.get("training", {})
        lr = 0.1 * float(recipe.get("lr", retrain.DEFAULT_RECIPE["lr"]))
        tuned, facts = retrain.finetune(small, ds.inputs("train"), ds.targets("train", loss), ds.inputs("val"),
                                        ds.targets("val", loss), loss=loss, epochs=finetune, lr=lr,
                                        batch_size=int(recipe.get("batch_size", 64)),
                                        patience=max(1, min(finetune, 10)), seed=0, storage=dtype, progress=progress)
        before = points[0]
        small, small_metrics = tuned, evaluate(tuned, ds, loss)
        points.append(point(variant_name(cfg) + ", fine-tuned", small_metrics, step.bytes, kind="finetuned", **made,
                            before_test_accuracy=before["test_accuracy"], before_test_error=before["test_error"],
                            **facts))
    if baseline == "scratch" and has_train:
        runs_ = retrain.scratch_baseline(small, ds.inputs("train"), ds.targets("train", loss), ds.inputs("val"),
                                         ds.targets("val", loss), *tested,
                                         loss=loss, recipe=meta.get("training"), storage=dtype, progress=progress,
                                         scaling=meta.get("scaling"))
        for r in runs_:
            points.append({"name": f"from scratch, seed {r['seed']}", "bytes": step.bytes, "kind": "scratch",
                           "dtype": dtype, "refit": None, **r})
    return small, small_metrics, points


def curve_at(result: PruneResult, metric: str) -> list[float | None]:
    """The test ``metric`` ("accuracy" or "error") at each of FRACTIONS (None past the run's end)."""
    key = f"test_{metric}"
    last = result.steps[-1].fraction_removed
    return [getattr(result.at_fraction(f), key) if f <= last + 1e-12 else None for f in FRACTIONS]


def run_experiment(exp: Experiment, out_dir: Path, quick: bool = False, seed: int = 0,
                   progress: bool = False, log=print) -> dict:
    """Train the experiment's network, prune it by every method x algorithm, write the runs and
    the report under ``out_dir/<id>``; returns {"id", "table", "seconds", "dir", ...}."""
    t0 = time.perf_counter()
    out = Path(out_dir) / exp.id
    ds = datasets.load(exp.data, seed=seed, size=exp.quick_size if quick else None)
    model, meta, _ = trained_model(out / "model.safetensors", ds, exp.hidden, epochs=60 if quick else 300,
                                   seed=seed, progress=progress)
    log(f"[{exp.id}] {exp.title}: {ds.describe()}; trained test {exp.metric} "
        f"{meta['metrics'].get('test_' + exp.metric):.4g}")
    table = {}
    run_dirs = []
    for algorithm in PAPER_ALGORITHMS:
        for method in PAPER_METHODS:
            result = prune_on(model, ds, "mse", progress=progress, method=method, algorithm=algorithm)
            name = f"{algorithm} {LABEL[method]}"
            run_dirs.append(runs.save_run(out / f"{algorithm}-{method}", result, name=name))
            table[(algorithm, method)] = curve_at(result, exp.metric)
    from ..ship.report import write_report

    report = write_report(run_dirs, out / "report", title=f"Experiment {exp.id}: {exp.title}")
    return {"id": exp.id, "experiment": exp, "table": table, "start": meta["metrics"].get("test_" + exp.metric),
            "seconds": time.perf_counter() - t0, "dir": out, "report": report}


def comparison_table(res: dict) -> str:
    """Markdown table: ours vs the paper's at 10%..80% removed, every method x algorithm."""
    exp: Experiment = res["experiment"]
    head = "| " + " | ".join(["algorithm, method", *[f"{int(f * 100)}%" for f in FRACTIONS]]) + " |"
    lines = [f"### {exp.id} {exp.title} (test {exp.metric}; start {_fmt(res['start'])})", "",
             head, "|" + "---|" * (len(FRACTIONS) + 1)]
    for key, ours in res["table"].items():
        paper = exp.paper.get(key)
        cells = [f"{_fmt(o)} ({_fmt(p)})" if paper else _fmt(o) for o, p in zip(ours, paper or ours)]
        lines.append(f"| {key[0]} {LABEL[key[1]]} | " + " | ".join(cells) + " |")
    legend = ("cells: ours (paper)" if exp.paper else
              "ours only: the paper gives no numbers for this table, only what its text says")
    lines += ["", f"{legend}; {exp.note}", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"


def budget_summary(result: PruneResult, budget: int, dtype: str) -> str:
    k = result.fit(budget)[0]
    s = result.steps[k]
    acc = "" if s.accuracy is None else f", validation accuracy {s.accuracy:.4f}"
    return (f"budget {memory.format_bytes(budget)} ({budget} B at {dtype}) lands at step {k}: "
            f"{s.n_removed} neurons removed ({s.fraction_removed:.0%}), kept {s.kept}, "
            f"{s.bytes} B{acc}, validation error {s.error:.4g}")


def choice_summary(result: PruneResult, budget: int | None, max_drop: float | None, dtype: str,
                   ram_budget: int | None = None) -> str:
    """One line: which step was kept, under which limit, and what it costs against the start (a kept
    step's KeptCheckWarning is not repeated here: PruneResult.kept_warning says it, where wanted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeptCheckWarning)
        k, by = result.pick(budget, max_drop, ram_budget)
    s, s0 = result.steps[k], result.steps[0]
    drop = result.drop(k)
    lost = (f"{_signed(-drop * 100, '.2f')} accuracy points" if s0.accuracy is not None
            else f"{_signed(drop * 100, '.2f')}% validation error")
    limits = []
    if budget is not None:
        limits.append(f"budget {memory.format_bytes(budget)} ({budget} B at {dtype})")
    if max_drop is not None:
        limits.append(f"max drop {_drop_text(max_drop, s0.accuracy is not None)}")
    if ram_budget is not None:
        limits.append(f"RAM budget {memory.format_bytes(ram_budget)}")
    budgets = {(True, False): "the budget", (False, True): "the RAM budget", (True, True): "the budgets"}.get(
        (budget is not None, ram_budget is not None))
    why = {"budget": budgets, "max_drop": "the max drop"}[by]
    if budgets and max_drop is not None:  # pick: the budgets win only when nothing within the drop fits them
        why += (f" (the tighter limit: it also fits {budgets})" if by == "max_drop"
                else f" (no network within the max drop fits {budgets}, so this one loses more)")
    acc = "" if s.accuracy is None else f", validation accuracy {s.accuracy:.4f}"
    ram = "" if s.ram_bytes is None else f" flash, {s.ram_bytes} B RAM"
    if s.n_removed == 0:  # nothing to say against the start: it is the start
        why = (f"the network already fits {budgets}" if by == "budget" else
               "no removal stays within the max drop" if budgets is None else
               f"the network already fits {budgets} and no removal stays within the max drop")
        return (f"kept step 0: {why} [{', '.join(limits)}]: nothing removed; {s.bytes} B{ram}{acc}, "
                f"validation error {s.error:.4g}")
    return (f"kept step {k} by {why} [{', '.join(limits)}]: {s.n_removed} neurons removed "
            f"({s.fraction_removed:.0%}), kept {s.kept}, {s.bytes} B{ram}{acc}, validation error {s.error:.4g} "
            f"({lost} against the start)")


def _signed(x: float, spec: str) -> str:
    """``x`` with its sign, as ``format(x, "+" + spec)``, but never "-0.00" (a loss that rounds to nothing)."""
    text = format(x, "+" + spec)
    return "+" + text[1:] if text.startswith("-") and float(text) == 0 else text


def _drop_text(max_drop: float, classification: bool) -> str:
    return f"{max_drop * 100:g} accuracy points" if classification else f"{max_drop:.2%} error increase"

