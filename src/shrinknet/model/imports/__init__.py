"""Models from anywhere, converted at the boundary into an ``nn.Sequential`` the parser reads.

``to_sequential(obj_or_path)`` dispatches on what it gets:

- an ``nn.Sequential``: returned as is (the very object: Sequential inputs stay bit-identical);
- any other ``nn.Module``: traced with ``torch.fx`` (fx.py);
- a path ending in ``.onnx`` or an ``onnx.ModelProto``: onnx.py (the ``onnx`` package, nothing is run);
- a path ending in ``.tflite``: tflite.py (the ``tflite`` schema bindings + flatbuffers, no TensorFlow).

Each importer records on the result what it changed (``notes_of``), the input shape it knows and the
input layout of the file (``to_model_layout`` permutes a .tflite's NHWC images for the Sequential, which
is channels-first); see common.py. Anything it cannot take is an ``InputError`` in one line that names
the node (op type and name, or for fx the source line).
"""

from __future__ import annotations

import os

from torch import nn

from ...errors import InputError
from .common import notes_of, to_model_layout

__all__ = ["to_sequential", "notes_of", "to_model_layout", "SUFFIXES"]

#: File suffixes handled here (the model loader of the CLI dispatches on them).
SUFFIXES = (".onnx", ".tflite")


def to_sequential(obj) -> nn.Sequential:
    """``obj`` (a module, an ONNX ModelProto, or a path to a .onnx/.tflite file) as an ``nn.Sequential``."""
    if isinstance(obj, nn.Sequential):
        return obj
    if isinstance(obj, nn.Module):
        from .fx import trace

        return trace(obj)
    if isinstance(obj, (str, os.PathLike)):
        suffix = os.path.splitext(os.fspath(obj))[1].lower()
        if suffix == ".onnx":
            from .onnx import load

            return load(obj)
        if suffix == ".tflite":
            from .tflite import load

            return load(obj)
        raise InputError(f"{obj}: shrinknet imports .onnx and .tflite model files here, not {suffix or 'no suffix'!r}")
    if type(obj).__name__ == "ModelProto":
        from .onnx import from_model

        return from_model(obj, obj.ByteSize())
    raise InputError(f"cannot import a {type(obj).__name__}: give an nn.Module or a .onnx/.tflite path")
