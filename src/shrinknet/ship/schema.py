"""The schema of a model file's description (the JSON under ``"shrinknet"`` in its safetensors header):
one declarative statement of what a file may say, checked before anything is built from it.

Two formats share it, told apart by ``"format"``: ``"shrinknet-mlp"`` (versions 1 and 2; ``modelio``)
and ``"shrinknet-seq"`` (version 1; version 2 adds ``adds``, the residual additions of
``layers/resnet.py``, so that a shrinknet that cannot read them refuses the file; ``describe``). Integers are Python ints
(never 8.5, 8.0 or ``true``), sizes are bounded (``MAX_SIZE`` for kernels, strides, paddings,
dilations, input sizes and Dense column blocks; ``MAX_WIDTH`` for layer widths and class lists;
``MAX_LAYERS`` layers), floats finite. ``meta`` is free-form but for the keys code reads:
``loss``, ``task``, ``class_values`` (unique finite numbers or strings, no booleans; also under
``data``), ``metrics`` (numbers) and ``data``/``pruned``/``scaling``/``training`` (objects).

After ``check_description`` the loaders trust the types; what the schema cannot say (tensor shapes
against the description, a pool's padding against its kernel) they still check.
"""

from __future__ import annotations

import math

from ..model import activations as A
from ..model.losses import LOSSES
from ..util import schema as S

MLP_FORMAT, SEQ_FORMAT = "shrinknet-mlp", "shrinknet-seq"
TASKS = ("classification", "regression")
MAX_SIZE = 2**16  # a kernel, stride, padding, dilation, input size or Dense column block
MAX_WIDTH = 2**24  # units of a layer; classes of a classifier
MAX_LAYERS = 1024
MAX_TAIL = 16  # activation and pooling ops after one layer


def _int(low: int, high: int, what: str) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high, "description": what}


def _ints(key: str, low: int, most: int = 3) -> dict:
    """A list of 1..``most`` whole numbers in [low, MAX_SIZE] (a kernel, a stride...)."""
    return {"type": "array", "minItems": 1, "maxItems": most,
            "items": {"type": "integer", "minimum": low, "maximum": MAX_SIZE},
            "description": f"{key} must be a list of whole numbers >= {low} (at most {MAX_SIZE})"}


def _number(key: str, what: str, finite=True, **bounds) -> dict:
    return {"type": "number", "finite": finite, **bounds, "description": f"{key} must be {what}"}


# bounded so that float32 arithmetic stays finite (a fuzzed beta of 1e33, 3.4e38 or 2e-55 overflowed torch or
# made every output inf); torch's defaults are beta 1, threshold 20, slope 0.01
_BETA = _number("beta", "a number in [1e-6, 1e6]", minimum=1e-6, maximum=1e6)
_THRESHOLD = {**_number("threshold", "a number in [-1e6, 1e6] or +Infinity", finite="+inf", minimum=-1e6),
              "anyOf": [{"maximum": 1e6}, {"const": math.inf}]}
_SLOPE = _number("slope", "a number in [-1e6, 1e6]", minimum=-1e6, maximum=1e6)

_CLASS_VALUES = {
    "type": "array", "maxItems": MAX_WIDTH, "uniqueItems": True,
    "items": {"type": ["string", "number"], "finite": True, "maxLength": 1000},
    "description": "class_values must be a list of distinct finite numbers or strings (no booleans)",
}
_OBJECT = {"type": "object"}

META = {
    "type": "object", "description": "meta must be a JSON object",
    "properties": {
        "loss": {"enum": [*LOSSES, None], "description": f"loss must be one of {', '.join(LOSSES)}"},
        "task": {"enum": [*TASKS, None], "description": f"task must be one of {', '.join(TASKS)}"},
        "class_values": _CLASS_VALUES,
        "data": {"type": "object", "description": "data must be an object",
                 "properties": {"class_values": _CLASS_VALUES}},
        "metrics": {"type": "object", "description": "metrics must be an object of numbers",
                    "additionalProperties": {"type": "number", "description": "a metric must be a number"}},
        "pruned": _OBJECT, "training": _OBJECT, "scaling": _OBJECT,
        "input_shape": {"type": "array", "maxItems": 3, "items": {"type": "integer", "minimum": 1, "maximum": MAX_SIZE},
                        "description": "input_shape must be a list of whole numbers >= 1"},
    },
}

_MLP_LAYER = {
    "type": "object", "required": ["in", "out", "bias", "activation"],
    "description": "a layer must be an object with integer 'in' and 'out' widths, 'bias' and 'activation'",
    "properties": {
        "in": _int(1, MAX_WIDTH, f"in must be a whole number in 1..{MAX_WIDTH}"),
        "out": _int(1, MAX_WIDTH, f"out must be a whole number in 1..{MAX_WIDTH}"),
        "bias": {"type": "boolean", "description": "bias must be true or false"},
        "activation": {
            "type": "object", "required": ["name"],
            "description": f"activation must be an object whose name is one of {', '.join(A.NAMES)}",
            "properties": {"name": {"enum": list(A.NAMES)}, "beta": _BETA, "threshold": _THRESHOLD},
        },
    },
}

MLP = {
    "type": "object", "required": ["format", "version", "layers"],
    "properties": {
        "format": {"const": MLP_FORMAT},
        "version": {"enum": [1, 2], "description": "version must be 1 or 2 (those this shrinknet reads)"},
        "layers": {"type": "array", "minItems": 2, "maxItems": MAX_LAYERS, "items": _MLP_LAYER,
                   "description": f"layers must be a list of 2..{MAX_LAYERS} layer descriptions"},
        "meta": META,
    },
}


def _op(name: str, properties: dict, required: list) -> dict:
    return {"if": {"properties": {"op": {"const": name}}},
            "then": {"required": required, "properties": properties,
                     "description": f"a {name} needs {', '.join(required[1:]) or 'nothing more'}"}}


_TAIL_OP = {
    "type": "object", "required": ["op"],
    "description": "a tail op must be an object naming its op: act, maxpool, avgpool, adaptive_avgpool or depthwise",
    "properties": {"op": {"enum": ["act", "maxpool", "avgpool", "adaptive_avgpool", "depthwise"]}},
    "allOf": [
        _op("act", {"name": {"enum": list(A.GENERAL_NAMES),
                             "description": f"an activation is one of {', '.join(A.GENERAL_NAMES)}"},
                    "beta": _BETA, "threshold": _THRESHOLD, "slope": _SLOPE}, ["op", "name"]),
        _op("maxpool", {"kernel": _ints("kernel", 1), "stride": _ints("stride", 1), "padding": _ints("padding", 0),
                        "dilation": _ints("dilation", 1)}, ["op", "kernel", "stride", "padding", "dilation"]),
        _op("avgpool", {"kernel": _ints("kernel", 1), "stride": _ints("stride", 1), "padding": _ints("padding", 0)},
            ["op", "kernel", "stride", "padding"]),
        _op("adaptive_avgpool", {"size": _ints("size", 1)}, ["op", "size"]),
        _op("depthwise", {"shape": {"type": "array", "minItems": 4, "maxItems": 4,
                                    "items": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH},
                                    "description": "a depthwise shape must be 4 whole numbers >= 1"},
                          "bias": {"type": "boolean", "description": "bias must be true or false"},
                          "stride": _ints("stride", 1, 2), "padding": _ints("padding", 0, 2),
                          "dilation": _ints("dilation", 1, 2)},
            ["op", "shape", "bias", "stride", "padding", "dilation"]),
    ],
}

_PARAM = {
    "type": "object", "required": ["op"],
    "description": "a layer's param must be an object naming its op: conv or linear",
    "properties": {"op": {"enum": ["conv", "linear"]}},
    "allOf": [
        _op("conv", {"stride": _ints("stride", 1, 2), "padding": _ints("padding", 0, 2),
                     "dilation": _ints("dilation", 1, 2)}, ["op", "stride", "padding", "dilation"]),
        _op("linear", {"block": _int(1, MAX_WIDTH, f"block must be a whole number in 1..{MAX_WIDTH}")},
            ["op", "block"]),
    ],
}

_BLOCK = {
    "type": "object", "required": ["param", "shape", "bias", "tail"],
    "description": "a layer must be an object with param, shape, bias and tail",
    "properties": {
        "param": _PARAM,
        "shape": {"type": "array", "minItems": 2, "maxItems": 4,
                  "items": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH},
                  "description": "shape must be the weight's 2 to 4 sizes, whole numbers >= 1"},
        "bias": {"type": "boolean", "description": "bias must be true or false"},
        "tail": {"type": "array", "maxItems": MAX_TAIL, "items": _TAIL_OP,
                 "description": f"tail must be a list of at most {MAX_TAIL} ops"},
    },
}

_ADD = {
    "type": "object", "required": ["src", "dst", "at", "proj"],
    "description": "a residual addition must be an object with src, dst, at and proj",
    "properties": {
        "src": _int(0, MAX_LAYERS, f"src must be a whole number in 0..{MAX_LAYERS}"),
        "dst": _int(0, MAX_LAYERS, f"dst must be a whole number in 0..{MAX_LAYERS}"),
        "at": _int(0, MAX_TAIL, f"at must be a whole number in 0..{MAX_TAIL}"),
        "proj": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["op", "shape", "bias", "stride", "padding", "dilation"],
            "properties": {"op": {"const": "conv"},
                           "shape": {"type": "array", "minItems": 4, "maxItems": 4,
                                     "items": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH}},
                           "bias": {"type": "boolean"}, "stride": _ints("stride", 1, 2),
                           "padding": _ints("padding", 0, 2), "dilation": _ints("dilation", 1, 2)}}],
                 "description": "proj must be null or a conv with shape, bias, stride, padding and dilation"},
    },
}

SEQ = {
    "type": "object", "required": ["format", "version", "dims", "blocks"],
    "if": {"required": ["adds"]},
    "then": {"properties": {"version": {"const": 2, "description": "a description with adds must be version 2"}}},
    "properties": {
        "format": {"const": SEQ_FORMAT},
        "version": {"enum": [1, 2], "description": "must be version 1 or 2 (the shrinknet-seq versions this shrinknet reads)"},
        "adds": {"type": "array", "maxItems": MAX_LAYERS, "items": _ADD,
                 "description": f"adds must be a list of at most {MAX_LAYERS} residual additions"},
        "dims": {"enum": [0, 1, 2], "description": "dims must be 0, 1 or 2"},
        "in_shape": {"anyOf": [{"type": "null"}, {"type": "array", "minItems": 1, "maxItems": 3,
                                                  "items": {"type": "integer", "minimum": 1, "maximum": MAX_SIZE}}],
                     "description": f"in_shape must be null or a list of 1 to 3 whole numbers in 1..{MAX_SIZE}"},
        "blocks": {"type": "array", "minItems": 2, "maxItems": MAX_LAYERS, "items": _BLOCK,
                   "description": "the description must list at least two layers with weights (a hidden one "
                                  f"and the output), at most {MAX_LAYERS}"},
        "meta": META,
    },
}

DESCRIPTION = {
    "type": "object", "required": ["format"],
    "description": f"the description must be a JSON object with a format ({MLP_FORMAT} or {SEQ_FORMAT})",
    "properties": {"format": {"enum": [MLP_FORMAT, SEQ_FORMAT],
                              "description": f"format must be {MLP_FORMAT} or {SEQ_FORMAT}"}},
    "allOf": [{"if": {"properties": {"format": {"const": MLP_FORMAT}}}, "then": MLP},
              {"if": {"properties": {"format": {"const": SEQ_FORMAT}}}, "then": SEQ}],
}

_DESCRIPTION = S.validator(DESCRIPTION)
_META = S.validator(META)


def description_problem(doc) -> str | None:
    """What is wrong with a parsed description (one line), or None."""
    return S.first_error(_DESCRIPTION, doc)


def meta_problem(meta) -> str | None:
    """What is wrong with a model file's ``meta`` (one line), or None."""
    return S.first_error(_META, meta)
