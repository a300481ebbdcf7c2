"""Held-out labels of another kind than the model's classes (text '0'..'9' against integer classes, or
numbers against class names) are refused with a line that says so and how to fix it, not as labels
'the model was not trained on' that print exactly like its classes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from shrinknet.cli import cli
from shrinknet.data import datasets
from shrinknet.data.readers import DataError

from helpers import train_blobs

X = np.random.default_rng(0).random((20, 4)).astype(np.float32)


@pytest.mark.parametrize("y, model, fragments", [
    (np.array([str(i % 3) for i in range(20)]), dict(n_classes=3),
     ["class labels are text (strings '0', '1', '2')", "classes are integers (0, 1, 2)", "y.astype(np.int64)"]),
    (np.array([str(i % 3) for i in range(20)]), dict(class_values=[0, 1, 2]), ["text", "y.astype(np.int64)"]),
    (np.array(["cat", "dog"] * 10), dict(n_classes=3), ["strings 'cat', 'dog'", "the model's class numbers"]),
    (np.arange(20) % 3, dict(class_values=["a", "b", "c"]), ["labels are numbers (0, 1, 2)", "classes are text ('a'"]),
    (np.arange(20) % 3, dict(n_classes=2), ["class label(s) 2 that the model was not trained on (its classes: 0, 1)"]),
], ids=["text digits vs n_classes", "text digits vs int values", "names vs ints", "ints vs names", "same kind"])
def test_label_kinds_are_named(tmp_path, y, model, fragments):
    np.savez(tmp_path / "d.npz", X=X, y=y)
    with pytest.raises(DataError) as e:
        datasets.load_heldout(tmp_path / "d.npz", "classification", in_features=4, **model)
    assert "\n" not in str(e.value) and all(f in str(e.value) for f in fragments), str(e.value)


def test_prune_val_file_with_text_labels_is_one_line(tmp_path):
    model = train_blobs(lambda *a: CliRunner().invoke(cli, ["--quiet", *map(str, a)], catch_exceptions=False),
                        tmp_path, "m")
    data = np.load(tmp_path / "blobs.npz")
    np.savez(tmp_path / "val.npz", X=data["X"][:60], y=data["y"][:60].astype(str))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(cli, ["prune", str(model), "--val", str(tmp_path / "val.npz"), "--budget", "200B",
                                 "--no-analyze", "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "class labels are text" in lines[0] and "save y as integers" in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_with_classes_names_the_kinds(tmp_path):
    np.savez(tmp_path / "n.npz", X=X, y=np.array(["cat", "dog"] * 10))
    ds = datasets.load(tmp_path / "n.npz")
    with pytest.raises(DataError, match="class labels are text .* but the model's classes are integers"):
        ds.with_classes([0, 1, 2])
