"""Exports for ``prune --export`` and ``export``: which format holds which network, the
full-integer network's calibration data, and one call that writes any of them.

Formats: ``onnx``, ``c`` and ``safetensors`` (ship/export.py: float32, float16, int8 weights) and
``tflite`` (ship/tflite.py: float32, or full-integer int8). With ``integer_only`` the network
written is the full-integer one (store/integer.py): ``c`` is the integer-only C
(ship/c_integer.py), ``tflite`` the int8 .tflite; ONNX and safetensors do not hold it.

Calibration rule (the same for prune, export and device): the activation ranges are the min/max
over the training split of the data set (the model's recorded one, or --data), widened to
include 0; where there is no training split, the validation split, and the name says so.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

FORMATS = ("onnx", "c", "safetensors", "tflite")
INTEGER_FORMATS = ("c", "tflite")


def check_formats(formats, dtype: str, integer_only: bool = False, option: str = "--format") -> None:
    """InputError (one line) for a format that cannot hold the network at ``dtype`` / full-integer;
    for tflite, also when its packages are missing."""
    from .inputs import require

    for f in formats:
        if f not in FORMATS:
            raise InputError(f"{option} takes {', '.join(FORMATS)}, got {f!r}")
        if integer_only and f not in INTEGER_FORMATS:
            raise InputError(f"--integer-only exports c or tflite ({f} holds float or int8-weight networks): "
                             f"use {option} c or tflite")
        if f == "tflite" and not integer_only and dtype != "float32":
            raise InputError(f"a .tflite holds a float32 or a full-integer network, not dtype {dtype}: use "
                             "--dtype float32, or --dtype int8 --integer-only")
        if f == "tflite":
            require("tflite", "tflite")
            require("flatbuffers", "tflite")


def calibration_split(ds) -> tuple:
    """(inputs, name) of the full-integer network's calibration data (module docstring)."""
    if ds.sizes().get("train", 0):
        return ds.inputs("train"), f"the training split of {ds.name}"
    return ds.inputs("val"), f"the validation split of {ds.name} (there is no training split)"


def integer_of(model, ds):
    """The full-integer network of ``model`` calibrated on ``ds`` (``calibration_split``); InputError
    for calibration data with NaN or a constant input, or a layer that cannot run full-integer."""
    from ..store.integer import quantize_network

    X, name = calibration_split(ds)
    return quantize_network(model, X, calibration_name=name)


def export_one(model, path, fmt: str, dtype: str, prefix: str = "shrinknet", meta: dict | None = None,
               overwrite: bool = False, inet=None):
    """Write one export of ``model`` (or of its full-integer network ``inet``) to ``path``; every path
    goes through ``ship.export.check_export_paths`` (never replacing a file shrinknet did not write)."""
    path = Path(path)
    if inet is not None:
        if fmt == "c":
            from ..ship.c_integer import export_integer_c

            return export_integer_c(inet, path, prefix=prefix, meta=meta, overwrite=overwrite)
        from ..ship.tflite import export_tflite

        return export_tflite(inet, path, meta, overwrite=overwrite)
    if fmt == "tflite":
        from ..ship.tflite import export_tflite

        return export_tflite(model, path, meta, overwrite=overwrite)
    from ..ship.export import export

    return export(model, path, format=fmt, dtype=dtype, prefix=prefix, meta=meta, overwrite=overwrite)


def integer_metrics(inet, model, ds, loss: str) -> dict:
    """Error (summed) and accuracy of the full-integer network ``inet`` (its integer reference forward,
    dequantized) on every split of ``ds``, as ``experiments.evaluate`` gives them for a float network."""
    import torch

    from ..model import losses, network
    from ..model.evaluate import error_and_accuracy
    from ..model.parse import as_net

    net, L, out = as_net(model), losses.get(loss), {}
    for split in ("train", "val", "test"):
        if ds.sizes().get(split, 0) == 0:
            continue
        d = network.prepare(net, ds.inputs(split), ds.targets(split, loss), L)
        with torch.no_grad():
            y = inet(d.X.detach().cpu()).to(d.X.device, d.X.dtype)
        err, acc = error_and_accuracy(L, [(d, network.Trace(o=[y]))])
        out[f"{split}_error"] = err
        if acc is not None:
            out[f"{split}_accuracy"] = acc
    return out
