"""The route a user takes to a microcontroller without shrinknet, for the benchmarks to compare with:
the official PyTorch -> LiteRT converter (``litert-torch``), then ``ai-edge-quantizer``'s static int8
recipe (int8 weights per channel, int8 activations, int32 biases; calibrated on data the caller gives),
then TensorFlow Lite Micro (the ``tflite-micro`` package's interpreter, via shrinknet.ship.tflite.run_tflm).

These packages are heavy (jax, transformers, torchao; litert-torch may choose its own torch) and are
not in any extra the tests install: put them in a separate venv (docs/results.md, "The official
PyTorch -> LiteRT route"):

    python3 -m venv /work/venv-litert && /work/venv-litert/bin/pip install -e ".[litert]"

``missing()`` says why the route cannot run here (None when it can); the scripts print that and go on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

INSTALL = "python3 -m venv /work/venv-litert && /work/venv-litert/bin/pip install -e '.[litert]'"


def missing() -> str | None:
    """None when litert-torch, ai-edge-quantizer and ai-edge-litert import; else which are missing."""
    gone = [p for p, m in (("litert-torch", "litert_torch"), ("ai-edge-quantizer", "ai_edge_quantizer"),
                           ("ai-edge-litert", "ai_edge_litert")) if importlib.util.find_spec(m) is None]
    return f"{', '.join(gone)} not installed in this Python (install: {INSTALL})" if gone else None


@contextlib.contextmanager
def quiet():
    """The converter and quantizer print progress and reports (some from C++, some through a console made
    at import): stdout and stderr go to /dev/null at the file descriptors meanwhile; the table stays."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in saved:
            os.dup2(null, fd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in saved.items():
            os.dup2(old, fd)
            os.close(old)
        os.close(null)


def convert(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``litert_torch.convert(model, (example,))``: a float32 .tflite with batch 1 (the converter fixes it)."""
    import litert_torch

    with quiet(), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        litert_torch.convert(model.eval(), (example[:1],)).export(str(path))
        return path.read_bytes()


def full_int8(float_tflite: bytes, calibration: np.ndarray) -> bytes:
    """ai-edge-quantizer's ``static_wi8_ai8`` recipe, calibrated with ``Quantizer.calibrate`` (its default:
    a moving average of each instance's min/max) on ``calibration`` (N, *the file's input shape[1:])."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    with quiet():
        (key, sig), = Interpreter(model_content=float_tflite).get_signature_list().items()
        data = {key: [{sig["inputs"][0]: np.ascontiguousarray(x[None], np.float32)} for x in calibration]}
        q = quantizer.Quantizer(bytearray(float_tflite), recipe.static_wi8_ai8())
        return bytes(q.quantize(q.calibrate(data, num_threads=os.cpu_count() or 1)).quantized_model)


def io_quantization(model_bytes: bytes) -> tuple[tuple[float, int], tuple[float, int]]:
    """((input scale, zero point), (output scale, zero point)) of a full-integer .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    return tuple(tuple(d[0]["quantization"]) for d in (it.get_input_details(), it.get_output_details()))


def run_int8_in_tflm(model_bytes: bytes, X: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Float instances X (N, *input shape[1:]) quantized with the file's input (scale, zero point), run in
    TFLite Micro; (the dequantized outputs (N, out), TFLM's arena bytes)."""
    from shrinknet.ship.tflite import run_tflm

    (si, zi), (so, zo) = io_quantization(model_bytes)
    q = np.clip(np.round(X / si) + zi, -128, 127).astype(np.int8)
    out, arena = run_tflm(model_bytes, q)
    return so * (out.astype(np.float64) - zo), arena


def run_float_in_tflm(model_bytes: bytes, X: np.ndarray) -> tuple[np.ndarray, int | None]:
    from shrinknet.ship.tflite import run_tflm

    return run_tflm(model_bytes, np.ascontiguousarray(X, np.float32))
