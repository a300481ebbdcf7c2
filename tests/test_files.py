"""Writing without half-written output: atomic files and staged directories."""

import pytest

from shrinknet.files import atomic_path, staged_dir, write_text


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_refuses_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_text(tmp_path / "nope" / "a.txt", "x")


def test_staged_dir_moves_everything_on_success_and_keeps_other_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with staged_dir(out) as stage:
        write_text(stage / "a.txt", "a")
        (stage / "sub").mkdir()
        write_text(stage / "sub" / "b.txt", "b")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.txt", "keep.txt", "sub", "sub/b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary directory left


def test_staged_dir_writes_nothing_on_failure(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        with staged_dir(out) as stage:
            write_text(stage / "a.txt", "a")
            raise ValueError("export failed")
    assert list(tmp_path.iterdir()) == []
