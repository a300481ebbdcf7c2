"""Models written by other tools, brought in with shrinknet's importers (issue #17), then pruned.

Two custom ``nn.Module`` networks (not ``nn.Sequential``: F.relu, F.max_pool2d and views in forward) are
trained on the 8x8 digits (sklearn's, 1797 images, 10 classes; shrinknet's "digits" split) and written by:
  - ``torch.onnx.export`` (the TorchScript exporter, dynamo=False);
  - the official PyTorch -> LiteRT converter ``litert-torch``, when it is installed (else skipped, with a
    line; it goes in a separate venv: ``pip install -e ".[litert]"``, docs/results.md);
  - a Keras twin of each (the same weights, NHWC images, Keras' (h, w, c) flatten), written by TensorFlow's
    ``tf.lite.TFLiteConverter`` and by tf2onnx, when TensorFlow is installed (else skipped, with a line);
    its files are fed the NHWC images a Keras user has.
Each file is read back with ``shrinknet.model.imports.to_sequential``. Printed per file:
  - max |parsed network - the file's own runtime| (onnxruntime, or ai-edge-litert's interpreter) on the
    test split, and whether it is within 1e-5;
  - test accuracy of the unpruned network, and of shrinknet's pruned network (iterative brute force,
    cross-entropy, refit="final" on the training split) at 50% and 25% of the float32 weight bytes.

Run: python benchmarks/bench_import.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import shrinknet
from shrinknet import PruneConfig
from shrinknet.data import datasets
from shrinknet.model.imports import notes_of, to_model_layout, to_sequential
from shrinknet.repair.train import train

sys.path.insert(0, str(Path(__file__).parent))
import litert_route  # noqa: E402  (benchmarks/: litert_torch.convert with its progress lines kept off the table)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64, 32), nn.Linear(32, 24), nn.Linear(24, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        return self.c(F.relu(self.b(F.relu(self.a(x)))))

    def twin(self):
        return nn.Sequential(nn.Flatten(), self.a, nn.ReLU(), self.b, nn.ReLU(), self.c)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 12, 3, padding=1), nn.Conv2d(12, 16, 3)
        self.f, self.g = nn.Linear(16 * 2 * 2, 24), nn.Linear(24, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = torch.flatten(F.relu(self.c2(x)), 1)
        return self.g(F.relu(self.f(x)))

    def twin(self):
        return nn.Sequential(self.c1, nn.ReLU(), nn.MaxPool2d(2), self.c2, nn.ReLU(), nn.Flatten(), self.f,
                             nn.ReLU(), self.g)


def load():
    ds = datasets.load("digits", seed=0)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    y = lambda a: torch.as_tensor(np.asarray(a)).long()  # noqa: E731
    shape = (-1, 1, 8, 8)
    return ((t(ds.X_train).reshape(shape), y(ds.y_train)), (t(ds.X_val).reshape(shape), y(ds.y_val)),
            (t(ds.X_test).reshape(shape), y(ds.y_test)))


def fit(model: nn.Module, data, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    (Xtr, ytr), (Xv, yv), _ = data
    train(model.twin(), Xtr, ytr, Xv, yv, loss="cross_entropy", epochs=epochs, lr=3e-3)  # shares the weights
    return model.eval()


def write_onnx(model, X, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X[:2],), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})


def run_onnx(path: Path, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})[0]


def write_tflite(model, X, path: Path) -> None:
    path.write_bytes(litert_route.convert(model, X[:1]))


def run_tflite(path: Path, X: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for x in X:
        it.set_tensor(i["index"], x[None])
        it.invoke()
        out.append(it.get_tensor(o["index"])[0].copy())
    return np.stack(out)


def keras_twin(model: nn.Module):
    """The same network as Keras lays it out (NHWC images, (h, w, c) flatten), with ``model``'s weights: what
    a Keras user's trained model looks like. (Trained in torch so the rows compare the same function.)"""
    import keras

    L = keras.layers
    t = lambda p: p.detach().numpy()  # noqa: E731
    if isinstance(model, MLP):
        k = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(32, "relu"), L.Dense(24, "relu"), L.Dense(10)])
        for dense, lin in zip(k.layers[1:], (model.a, model.b, model.c)):
            dense.set_weights([t(lin.weight).T, t(lin.bias)])
        return k
    k = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(12, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
                          L.Conv2D(16, 3, activation="relu"), L.Flatten(), L.Dense(24, "relu"), L.Dense(10)])
    k.layers[0].set_weights([t(model.c1.weight).transpose(2, 3, 1, 0), t(model.c1.bias)])  # OIHW -> HWIO
    k.layers[2].set_weights([t(model.c2.weight).transpose(2, 3, 1, 0), t(model.c2.bias)])
    f = t(model.f.weight).reshape(24, 16, 2, 2).transpose(0, 2, 3, 1).reshape(24, 64)  # columns (c,h,w) -> (h,w,c)
    k.layers[4].set_weights([f.T, t(model.f.bias)])
    k.layers[5].set_weights([t(model.g.weight).T, t(model.g.bias)])
    return k


def keras_rows(models: dict, data, tmp: Path) -> tuple[list[str], list[str]]:
    """Keras twins written by TF's own TFLiteConverter (.tflite) and by tf2onnx (ONNX), data in NHWC."""
    import tensorflow as tf

    nhwc = [(X.permute(0, 2, 3, 1).contiguous(), y) for X, y in data]
    rows, skipped = [], []
    for name, model in models.items():
        k = keras_twin(model)
        with torch.no_grad():
            ref = model(data[2][0]).numpy()
        gap = float(np.abs(k(nhwc[2][0].numpy()).numpy() - ref).max())
        assert gap < 1e-4, f"the Keras twin of {name} is not the same function ({gap})"
        p = tmp / f"keras_{name}.tflite"
        with litert_route.quiet():
            p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(k).convert())
        rows.append(_row_or_refusal(f"{name}, Keras + tf.lite.TFLiteConverter", p, run_tflite, nhwc))
        try:
            import tf2onnx

            p = tmp / f"keras_{name}.onnx"
            spec = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name="x"),)
            # from_function: tf2onnx 1.17's from_keras fails on Keras 3 models (KeyError 'keras_tensor_N')
            fn = tf.function(lambda x, k=k: k(x), input_signature=spec)
            with litert_route.quiet():
                tf2onnx.convert.from_function(fn, input_signature=spec, opset=13, output_path=str(p))
        except Exception as e:  # tf2onnx lags Keras 3 / TensorFlow releases
            skipped.append(f"{name} via tf2onnx: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            continue
        rows.append(_row_or_refusal(f"{name}, Keras + tf2onnx", p, run_onnx, nhwc))
    return rows, skipped


def _row_or_refusal(label: str, path: Path, runtime, data) -> str:
    from shrinknet.errors import InputError

    try:
        return evaluate(label, path, runtime, data)
    except InputError as e:
        return f"| {label} | refused: {e} | | | |"


def accuracy(seq, X, y) -> float:
    with torch.no_grad():
        return float((seq(X).argmax(1) == y).float().mean())  # X in the parsed network's layout


def evaluate(label: str, path: Path, runtime, data) -> str:
    """``data`` in the file's own input layout (NHWC for a Keras file); the parsed network's in its own."""
    seq = to_sequential(path)
    (Xtr, _), (Xv, yv), (Xte, yte) = data
    theirs = runtime(path, Xte.numpy())
    Xtr, Xv, Xte = (to_model_layout(seq, X) for X in (Xtr, Xv, Xte))
    with torch.no_grad():
        mine = seq(Xte).numpy()
    if any("SOFTMAX" in s or "Softmax" in s for s in notes_of(seq)):
        mine = torch.softmax(torch.from_numpy(mine), -1).numpy()
    diff = float(np.abs(mine - theirs).max())
    full = shrinknet.network_bytes(seq)
    config = PruneConfig(progress=False, refit="final", X_calib=Xtr)
    r = shrinknet.prune(seq, Xv, yv, method="brute_force", algorithm="iterative", loss="cross_entropy",
                        budget_bytes=full // 4, X_test=Xte, T_test=yte, config=config)
    accs = []
    for frac in (0.5, 0.25):
        k, _ = r.fit(int(full * frac))
        accs.append(f"{r.steps[k].test_accuracy:.3f} ({r.steps[k].bytes} B)")
    return (f"| {label} | {diff:.1e} {'yes' if diff <= 1e-5 else 'NO'} | {accuracy(seq, Xte, yte):.3f} ({full} B) | "
            f"{accs[0]} | {accs[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    data = load()
    torch.manual_seed(0)  # the initial weights too: the same networks every run
    models = {"MLP": fit(MLP(), data, args.epochs), "CNN": fit(CNN(), data, args.epochs)}
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            X = data[0][0]
            p = Path(tmp) / f"{name}.onnx"
            write_onnx(model, X, p)
            rows.append(evaluate(f"{name}, torch.onnx.export", p, run_onnx, data))
            if importlib.util.find_spec("litert_torch") is None:
                skipped.append(f"{name} via litert-torch: litert-torch is not installed in this Python "
                               "(a separate venv: pip install -e '.[litert]')")
            else:
                p = Path(tmp) / f"{name}.tflite"
                write_tflite(model, X, p)
                rows.append(evaluate(f"{name}, litert-torch", p, run_tflite, data))
        if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
            skipped.append("Keras (TFLiteConverter, tf2onnx): TensorFlow is not installed in this Python "
                           "(pip install tensorflow-cpu tf2onnx; they resolve beside litert-torch in the [litert] venv)")
        else:
            more, why = keras_rows(models, data, Path(tmp))
            rows += more
            skipped += why
    print("| model, writer | max abs diff vs runtime, <= 1e-5 | test acc unpruned (float32 bytes) | at 50% | at 25% |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    for s in skipped:
        print(f"skipped: {s}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
