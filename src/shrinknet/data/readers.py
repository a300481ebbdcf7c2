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
from ..util import limits

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


def _read_file(spec: str, target: str | None, names: tuple = (), in_features: int | None = None) -> _Raw:
    """The data file ``spec`` read (``names``: the built-in sets, suggested for a name that is no file;
    ``in_features``: a model's inputs, checked against the file's header before its data is read)."""
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
        raw = _READERS[kind](path, target, in_features)
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


def _read_npz(path: Path, target, in_features: int | None = None) -> _Raw:
    """X and y (or T) of an .npz, each member's header read and checked (``util.limits``) before its
    data; X is read straight into its float32 copy."""
    try:
        with zipfile.ZipFile(path) as z:
            members = {name.removesuffix(".npy"): info for name, info in
                       ((i.filename, i) for i in z.infolist()) if name.endswith(".npy")}
            ykey = next((k for k in ("y", "T") if k in members), None)
            if "X" not in members or ykey is None:
                raise DataError(f"{path.name} must hold arrays 'X' and 'y' (or 'T'); it has {sorted(members)}")
            (xshape, xdtype), (yshape, ydtype) = (_npy_header(z, members[k], path.name) for k in ("X", ykey))
            if xshape and yshape and xshape[0] != yshape[0]:
                raise DataError(f"{path.name}: X has {xshape[0]} rows but {ykey} has {yshape[0]}: one target per instance")
            _check_width(path.name, xshape[1:], in_features)
            X = _npy_data(z, members["X"], path.name, "X", np.float32 if xdtype.kind in "biuf" else None)
            y = _npy_data(z, members[ykey], path.name, ykey, None)
    except (DataError, InputError):
        raise
    except (ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:  # the last two:
        # zipfile's words for an unsupported compression method and an encrypted member
        with open(path, "rb") as fh:
            one_array = fh.read(6) == b"\x93NUMPY"
        if one_array:
            raise DataError(f"{path.name} holds one array, not an .npz archive: "
                            f"write it with np.savez(path, X=X, y=y)") from None
        why = " ".join(str(e).split())[:200]  # one line, whatever the archive made the reader say
        raise DataError(f"cannot read {path}: not a valid .npz of numeric arrays, or truncated ({why})") from None
    return _make_raw(path.name, X, y, ".npz")


def _npy_header(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of one .npy member from its header alone; the declared size checked."""
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    what = f"array {info.filename.removesuffix('.npy')} of shape {shape}"
    if dtype.hasobject or dtype.kind not in "biufUS":
        raise DataError(f"{name}: {what} has dtype {dtype}: X and y must be numeric (y may hold class names)")
    n = math.prod(shape)
    stored = n * dtype.itemsize
    limits.check(name, what, max(n * 4, stored), stored,
                 info.compress_size if info.compress_type != zipfile.ZIP_STORED else None)
    if info.compress_type == zipfile.ZIP_STORED and stored > info.file_size:
        raise DataError(f"{name}: {what} declares {stored} data bytes but the archive holds {info.file_size}: "
                        "truncated or forged")
    return shape, dtype


def _npy_data(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, key: str, into) -> np.ndarray:
    """One .npy member's array, read in chunks (never more than its header declares); ``into``: a dtype
    to convert to chunk by chunk (the file's own dtype when None)."""
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        out = _read_values(limits.CappedReader(f, math.prod(shape) * dtype.itemsize, name), dtype,
                           math.prod(shape), into, f"{name}: {key}")
    return out.reshape(shape[::-1]).T if fortran else out.reshape(shape)


def _read_values(f, dtype: np.dtype, n: int, into, what: str, scale=None) -> np.ndarray:
    """``n`` values of ``dtype`` from the stream ``f`` into a new array of ``into`` (default ``dtype``),
    ``limits.CHUNK`` bytes at a time: one copy of the data, never a second one of the raw bytes.
    ``scale``: a divisor applied to each chunk (uint8 pixels / 255)."""
    out = np.empty(n, dtype=into or dtype)
    per = max(1, limits.CHUNK // max(dtype.itemsize, 1))
    for start in range(0, n, per):
        count = min(per, n - start)
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise DataError(f"{what} is truncated: its header declares {n} values, the file ends before")
        values = np.frombuffer(data, dtype)
        out[start:start + count] = values if scale is None else values / scale  # (in float64, as before)
    if f.read(1):
        raise DataError(f"{what} is padded: the file holds more than the {n} values its header declares")
    return out


def _check_width(name: str, instance_shape: tuple, in_features: int | None) -> None:
    """The features of one instance against a model's inputs, before any data is read."""
    d = math.prod(instance_shape)
    if in_features is not None and d != in_features:
        raise DataError(f"{name} has {d} features per instance but the model takes {in_features}: "
                        "give data with the model's inputs")


def _read_csv(path: Path, target: str | None, in_features: int | None = None) -> _Raw:
    with _open(path, text=True) as f:
        line = f.readline(limits.CHUNK)
    delim = next((d for d in ",;\t" if d in line), ",")
    first = next(csv.reader([line], delimiter=delim), [])
    if not first:
        raise DataError(f"{path.name} is empty: expected numeric rows, features first, target last")
    _check_width(path.name, (len(first) - 1,), in_features)
    _check_csv_size(path, delim)
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


def _check_csv_size(path: Path, delim: str) -> None:
    """Count a CSV's cells in one streaming pass (through gzip, capped: ``util.limits``) and refuse it
    before parsing when its values, as the float64 numbers the parser makes, pass the limit."""
    gz = path.name.lower().endswith(".gz")
    size = path.stat().st_size
    cap = limits.MAX_EXPANSION * size + limits.SLACK if gz else size
    cells, sep = 0, delim.encode()
    with _open(path, text=False) as raw:
        f = limits.CappedReader(raw, cap, path.name)
        while chunk := f.read(limits.CHUNK):
            cells += chunk.count(sep) + chunk.count(b"\n")
    limits.check(path.name, f"a CSV of about {cells} values", 8 * (cells + 1))


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


def _read_idx_array(path: Path, into=None, in_features: int | None = None) -> tuple[np.ndarray, np.dtype]:
    """An IDX file: magic 00 00 <type> <ndim>, ndim big-endian uint32 dims, then the data. The header
    is read and checked first (``util.limits``; ``in_features``), the data then read in chunks, through
    gzip when the name ends in .gz, into a new array of ``into`` (default: the file's dtype).
    Returns (the array, the file's dtype)."""
    with _open(path, text=False) as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] == 0:
            raise DataError(f"{path.name} is not an IDX file (bad magic number {magic.hex()})")
        head = f.read(4 * magic[3])
        if len(head) < 4 * magic[3]:
            raise DataError(f"{path.name} is truncated: its header ends early")
        dims = struct.unpack(f">{magic[3]}I", head)
        dtype = np.dtype(_IDX_DTYPES[magic[2]])
        n = math.prod(dims)
        _check_width(path.name, dims[1:], in_features)
        size = path.stat().st_size
        gz = path.name.lower().endswith(".gz")
        limits.check(path.name, f"IDX data of shape {dims}", n * max(4, np.dtype(into or dtype).itemsize),
                     n * dtype.itemsize, size if gz else None)
        if not gz and size - 4 - len(head) != n * dtype.itemsize:
            raise DataError(f"{path.name} is truncated or padded: dims {dims} need {n * dtype.itemsize} data bytes, "
                            f"it has {size - 4 - len(head)}")
        scale = 255 if into is not None and dtype == np.uint8 else None  # pixels to [0, 1]
        return _read_values(f, dtype, n, into, path.name, scale).reshape(dims), dtype


def _read_idx(path: Path, target, in_features: int | None = None) -> _Raw:
    if "labels" in path.name and "images" not in path.name:
        raise DataError(f"{path.name} is a labels file: pass the images file; its labels are found beside it")
    want = path.name.replace("images", "labels").replace("idx3", "idx1").removesuffix(".gz")
    labels_path = next((p for p in (path.with_name(want), path.with_name(want + ".gz")) if p.exists()), None)
    if labels_path is None:
        raise DataError(f"no labels file beside {path.name}: expected {path.with_name(want)}[.gz]")
    labels, _ = _read_idx_array(labels_path)
    images, _ = _read_idx_array(path, np.float32, in_features)  # one float32 copy, uint8 pixels / 255
    if images.ndim < 2 or labels.ndim != 1:
        raise DataError(f"{path.name} must hold images (n, rows, cols) and {labels_path.name} labels (n,); "
                        f"got shapes {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels")
    return _make_raw(path.name, images, labels, "MNIST IDX images (uint8 scaled to [0, 1])")


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
    X = X.reshape(len(X), -1).astype(np.float32, copy=False)  # the readers' float32 copy kept as is
    if y.dtype.kind == "b":  # True/False labels are the classes 1 and 0 (a model file's class_values hold no booleans)
        y = y.astype(np.int64)
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
        bad = _first_bad(a, lambda c: ~np.isfinite(c))
        if bad is not None:
            where = f"row {bad[0][0]}" + (f", column {bad[0][1]}" if a.ndim == 2 else "")
            # X and y are float32 by now: a value beyond +-3.4e38 in the file (finite as float64) is inf here
            raise DataError(f"{name}: {what} has NaN or inf, or values too large for float32 (|x| > 3.4e38) "
                            f"({bad[1]} values; first at {where}, counting from 0): clean, impute or rescale the "
                            f"data first")
    return _Raw(name, X, y, source, class_values, strata=y if class_values else None)


def _first_bad(a: np.ndarray, is_bad):
    """(index of the first element where ``is_bad`` holds, their count), or None; checked a block of rows
    at a time, so that the mask is never the size of the data."""
    rows = max(1, limits.CHUNK // max(1, a[:1].nbytes))
    first, count = None, 0
    for start in range(0, len(a), rows):
        bad = is_bad(a[start:start + rows])
        k = int(bad.sum())
        if k and first is None:
            first = np.argwhere(bad)[0]
            first[0] += start
        count += k
    return None if first is None else (first, count)
