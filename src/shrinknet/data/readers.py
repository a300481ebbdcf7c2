"""The user's data files, read with bounded memory: ``.npz`` (arrays X and y, or T), ``.csv``/``.csv.gz``
and MNIST IDX images (``*-images-idx3-ubyte[.gz]``) with their labels file beside them.

Every failure a user can cause raises ``DataError`` with one line saying what is wrong.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError

MIN_INSTANCES = 10


class DataError(InputError):
    """A data set that cannot be loaded or split; the message says what to do."""


@dataclass
class _Raw:
    """Unsplit data: X (n, d) float32; y int64 labels (class_values non-empty) or (n, k) float32."""

    name: str
    X: np.ndarray
    y: np.ndarray
    source: str
    class_values: tuple = ()
    strata: np.ndarray | None = None  # what stratified splits balance: y, or the digits for one-vs-all


def _read_file(spec: str, target: str | None, names: tuple = ()) -> _Raw:
    """The data file ``spec`` read (``names``: the built-in sets, suggested for a name that is no file)."""
    path = Path(spec)
    if not path.exists():
        if os.sep in spec or "/" in spec or "." in path.name:
            raise DataError(f"file not found: {spec}")
        close = difflib.get_close_matches(spec, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DataError(f"unknown data set {spec!r}{hint}: use one of {', '.join(names)}, <base>-<d>vall "
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
