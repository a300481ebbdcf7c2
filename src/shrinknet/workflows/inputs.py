"""What every command reads before any work: the model file, its loss, the data set (with held-out
--val/--test files), and the start check. Raises InputError (one line, exit 2 in the CLI), never a
click error, so Python users can call it too."""

from __future__ import annotations

import sys
from ..errors import InputError
from ..model.activations import NAMES as _ACTIVATIONS
from ..model.losses import LOSSES
from ..model.parse import as_net
from pathlib import Path


HIDDEN_ACTIVATIONS = [a for a in _ACTIVATIONS if a != "identity"]


def shown(act: str | None) -> str | None:
    """Activation names as the options spell them ("none" for no activation)."""
    return "none" if act == "identity" else act


def choices(values) -> str:
    return "|".join(values)


def read_model(path: str, hidden=None, activation=None, out_activation=None, need_activations: bool = True,
               loss: str | None = None, need: tuple[str, ...] = ()):
    """(network, meta, record) from a shrinknet model file or a plain state_dict: the network parsed
    once (``as_net``), which every later step of a command takes as it is.

    A model file's record wins: an option that contradicts it is refused. A state_dict records
    nothing: its activations must be given (no silent default), its widths come from its shapes.
    ``need`` names what the command also needs that such a file does not record ("loss", "data"),
    so that everything missing is asked for at once, in one line, not one run per option.
    """
    from ..model import imports
    from ..ship import modelio

    p = Path(path)
    if p.suffix.lower() in imports.SUFFIXES:  # ONNX, .tflite: converted at the boundary (model/imports/)
        return _read_foreign(p, hidden, activation, out_activation, loss, need)
    if modelio.kind(p) == "state_dict":
        missing = [f"--activation {choices(HIDDEN_ACTIVATIONS)}" if activation is None else "",
                   f"--out-activation {choices([*HIDDEN_ACTIVATIONS, 'none'])}" if out_activation is None else ""]
        missing = [m for m in missing if m] if need_activations else []
        missing += _asked(need, loss)
        if missing:
            raise InputError(f"{p} is a plain state_dict, which does not record its activations, loss or data: "
                             f"give {', '.join(missing)} (the ones it was trained with)")
        model = modelio.load_state_dict(p, hidden, activation or "identity", out_activation or "identity")
        out = None if out_activation is None else ("identity" if out_activation == "none" else out_activation)
        return as_net(model), {}, modelio.Record(activation=activation, out_activation=out)
    model, meta = modelio.load_model(p)
    rec = modelio.record(model, meta)
    model = as_net(model)  # parsed once: every later step takes this network as it is
    _check_record(p, model, rec, hidden, activation, out_activation)
    return model, meta, rec


def _asked(need: tuple[str, ...], loss: str | None) -> list[str]:
    """The options a command needs that a file does not record ("loss", "data"), to ask for at once."""
    asked = [f"--loss {choices(LOSSES)}"] if "loss" in need and loss is None else []
    return asked + (["--data NAME_OR_PATH (or --val FILE)"] if "data" in need else [])


def _read_foreign(p: Path, hidden, activation, out_activation, loss, need):
    """An .onnx or .tflite file: its activations are read from the graph (never asked for); what it does not
    record (loss, data) is asked for at once; what the import changed is said in ``note:`` lines."""
    from ..model import imports
    from ..ship import modelio

    seq = imports.to_sequential(p)
    missing = _asked(need, loss)
    if missing:
        softmax = any("softmax" in line.lower() for line in imports.notes_of(seq))
        raise InputError(f"{p} does not record its loss or data: give {', '.join(missing)}"
                         + (" (its softmax was taken off: the outputs are logits, so likely --loss cross_entropy)"
                            if softmax and loss is None else ""))
    for line in imports.notes_of(seq):
        print(f"note: {line}", file=sys.stderr)
    net = as_net(seq)
    rec = modelio.record(net, {})
    _check_record(p, net, rec, hidden, activation, out_activation)
    layout = getattr(seq, "shrinknet_input_layout", "") or None
    return net, {"imported": {"file": str(p.resolve()), "input_layout": layout}}, rec


def _check_record(p, net, rec, hidden, activation, out_activation) -> None:
    """Options that contradict what the file records are refused (its record wins)."""
    widths = list(net.hidden_sizes)
    if hidden is not None and list(hidden) != widths:
        raise InputError(f"{p} has hidden widths {','.join(map(str, widths))}, not {','.join(map(str, hidden))} "
                         "as --hidden says")
    for opt, given, recorded in (("--activation", activation, rec.activation),
                                 ("--out-activation", out_activation, shown(rec.out_activation))):
        if given is not None and given != recorded:
            raise InputError(f"{opt} {given} contradicts {p}, which records {recorded}: leave {opt} out")


def model_layout(ds, meta: dict, net):
    """``ds`` with every split's rows as the network reads them: an imported file that read NHWC images
    (a Keras .tflite) keeps that layout for the user, who gives (N, H, W, C) rows; they are permuted once,
    here, to the (N, C, H, W) the parsed network reads (model/imports: ``to_model_layout``)."""
    if (meta.get("imported") or {}).get("input_layout") != "NHWC" or net.in_shape is None or len(net.in_shape) != 3:
        return ds
    import dataclasses

    c, h, w = net.in_shape

    def rows(X):
        return X.reshape(len(X), h, w, c).transpose(0, 3, 1, 2).reshape(len(X), -1)

    return dataclasses.replace(ds, **{f"X_{s}": rows(getattr(ds, f"X_{s}")) for s in ("train", "val", "test")},
                               nhwc_read=(c, h, w))  # the same data; its fingerprint is taken as the file holds it


def resolve_loss(loss: str | None, rec, path) -> str:
    """The loss to rank with: the recorded one; an explicit --loss only where none is recorded."""
    if rec.loss is not None and loss is not None and loss != rec.loss:
        raise InputError(f"--loss {loss} contradicts {path}, which records loss {rec.loss}: leave --loss out")
    if loss is None and rec.loss is None:
        raise InputError(f"{path} does not record its loss: give --loss {choices(LOSSES)} "
                        "(the one it was trained with)")
    return loss or rec.loss


def read_data(data: str | None, meta: dict, seed: int | None, size: int | None, rec=None,
              held_out: tuple[str, ...] = ()):
    """The data set to rank on: by default exactly the split the model was trained with.

    Given the recorded data set (or no --data), its recorded split settings are kept and only
    --seed/--size override them, with a warning: another split can put training rows into the
    validation set that ranks the neurons. Other data is read for the recorded task, and class
    labels are numbered as the model's recorded class values (labels it does not know are refused).
    """
    from ..data import datasets

    recorded = meta.get("data") or {}
    if data is None and not recorded:
        raise InputError("this model does not record its data set: pass --data NAME_OR_PATH")
    if recorded and (data is None or same_data(data, recorded.get("name", ""))):
        if seed is None and size is None:
            ds = datasets.reload(recorded)
        else:
            args = {k: recorded[k] for k in ("seed", "val_fraction", "test_fraction", "size", "target")
                    if k in recorded}
            args.update({k: v for k, v in (("seed", seed), ("size", size)) if v is not None})
            if any(args.get(k) != recorded.get(k) for k in ("seed", "size")):
                print("warning: --seed/--size differ from the model's training split; validation rows may "
                      "include rows the model was trained on", file=sys.stderr)
            ds = datasets.load(recorded["name"], **args, task=recorded.get("forced_task"))
    else:
        task = rec.task if rec is not None else None
        ds = datasets.load(data, seed=0 if seed is None else seed, size=size, task=task)
    ds = _train_on_replaced(ds, held_out)
    if rec is not None and rec.class_values is not None:
        ds = ds.with_classes(rec.class_values)
    elif rec is not None and rec.task is not None and ds.task != rec.task:
        raise InputError(f"{data or ds.name} is a {ds.task} data set but the model was trained for {rec.task}")
    return ds


def _train_on_replaced(ds, held_out: tuple[str, ...]):
    """The splits that held-out files replace ("val", "test") join the training split: with --val and
    --test the data trains whole (0.3 cut 40% off and used none of it). The rows of a split that is
    kept stay where they are, so --val alone leaves the model's test rows untouched."""
    if not held_out:
        return ds
    import dataclasses

    import numpy as np

    parts = ["train", *held_out]
    return dataclasses.replace(ds, X_train=np.concatenate([getattr(ds, f"X_{s}") for s in parts]),
                               y_train=np.concatenate([getattr(ds, f"y_{s}") for s in parts]))


def data_with_heldout(data, meta: dict, seed, size, val, test, net_model, rec=None):
    """The data set rank/prune use: ``read_data``'s, with its validation split (what ranks and
    chooses neurons) replaced by the whole --val file and its test split by the whole --test file,
    in the layout the network reads (``model_layout``).

    Each file is checked against the model: input width, and class labels mapped to the model's
    classes by value (labels it was not trained on are refused) or regression outputs. With --val
    and neither --data nor a recorded data set, there is no training split (its numbers are skipped).
    """
    return model_layout(_data_with_heldout(data, meta, seed, size, val, test, net_model, rec), meta, as_net(net_model))


def _data_with_heldout(data, meta: dict, seed, size, val, test, net_model, rec=None):
    import dataclasses

    import numpy as np

    from ..data import datasets
    from ..model.parse import as_net

    if val is None and test is None:
        return read_data(data, meta, seed, size, rec)
    held_out = tuple(s for s, f in (("val", val), ("test", test)) if f is not None)
    base = read_data(data, meta, seed, size, rec, held_out) if (data is not None or meta.get("data")) else None
    if base is None and val is None:
        raise InputError("--test alone needs the model's data set: give --val FILE or --data too")
    net = as_net(net_model)
    recorded = meta.get("data") or {}
    task = (rec.task if rec is not None else None) or recorded.get("task") or (base.task if base is not None else None)
    values = list((rec.class_values if rec is not None else None) or recorded.get("class_values")
                  or (base.class_values if base is not None else ()))
    files = {}
    for opt, path in (("--val", val), ("--test", test)):
        if path is None:
            continue
        width = None if net.dims and net.in_shape is None else net.in_features  # checked before the data is read
        X, y = datasets.load_heldout(path, task, values, net.out_features, in_features=width)
        check_width(net, X.shape[1], f"{opt} {path}")
        if y.ndim == 2 and y.shape[1] != net.out_features:
            raise InputError(f"{opt} {path} has {y.shape[1]} target columns but the model has {net.out_features} outputs")
        if y.ndim == 1 and net.out_features < 2:
            raise InputError(f"{opt} {path} has class labels but the model has one output: it is a regression model")
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


def heldout_extras(val, test) -> dict:
    return {k: str(Path(v).resolve()) for k, v in (("val_file", val), ("test_file", test)) if v is not None}


def same_data(data: str, name: str) -> bool:
    """Whether --data names the recorded data set (files are recorded by absolute path)."""
    return data == name or (Path(data).exists() and str(Path(data).resolve()) == name)


def check_width(net, n_features: int, what: str) -> None:
    """The data's features per instance against the model's input (a CNN's whole input shape)."""
    if net.dims and net.in_shape is None:
        raise InputError("the model file does not record its input shape (a convolutional network saved before it "
                        "saw data): save it with shrinknet.modelio.save_model(path, model, meta, input_shape=(C, H, W))")
    if n_features != net.in_features:
        raise InputError(f"{what} has {n_features} input features but the model expects {net.in_features}")


def check_widths(model, ds, data_name):
    net = as_net(model)
    check_width(net, ds.in_features, f"data set {data_name}")
    if ds.out_features != net.out_features:
        raise InputError(f"data set {data_name} has {ds.out_features} outputs/classes but the model has {net.out_features}")


def require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"this needs {module}: pip install 'shrinknet[{extra}]'")


def start_check(model, ds, loss: str, force: bool) -> None:
    """Stop before any work when the starting network is unfit for ranking (sanity.check_start)."""
    from ..choose.sanity import StartCheckError, check_start, start_quality

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
        raise InputError(f"{e}; --force goes on anyway") from None
