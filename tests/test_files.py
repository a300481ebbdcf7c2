"""Writing without half-written, mixed or lost output: atomic files, directories replaced whole,
the .c/.h pair both or neither, leftovers of killed runs, one writer at a time."""

import errno
import os
import signal
import subprocess
import sys

import pytest

from shrinknet.util import files, interrupt
from shrinknet.util.files import OutputError, atomic_path, replace_files, staged_dir, sweep, write_text


MARK = b"written by shrinknet: --overwrite may replace this directory as a whole\n"

def listing(root):
    """Every path under ``root`` with its bytes: equal listings mean nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read() if os.path.isfile(p) else "special"
    return out


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


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


def test_staged_dir_writes_a_new_directory_whole(tmp_path):
    out = tmp_path / "deep" / "run"  # missing parents are created
    with staged_dir(out) as stage:
        write_text(stage / "a.txt", "a")
        (stage / "sub").mkdir()
        write_text(stage / "sub" / "b.txt", "b")
    assert listing(out) == {"a.txt": b"a", "sub/": None, "sub/b.txt": b"b", files.MARKER: MARK}
    assert os.listdir(tmp_path / "deep") == ["run"]  # no staging directory or lock file left


def test_staged_dir_refuses_a_non_empty_directory_without_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="not empty.*--overwrite"):
        with staged_dir(out) as stage:
            write_text(stage / "a.txt", "a")
    assert listing(tmp_path) == before


def test_staged_dir_with_overwrite_replaces_the_directory_as_a_whole(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old-only.txt").write_text("from the first run")
    (out / "a.txt").write_text("old a")
    (out / files.MARKER).write_bytes(MARK)  # an earlier shrinknet output
    with staged_dir(out, overwrite=True) as stage:
        write_text(stage / "a.txt", "new a")
    assert listing(out) == {"a.txt": b"new a", files.MARKER: MARK}  # never files of two runs
    assert os.listdir(tmp_path) == ["run"]


def test_staged_dir_keeps_the_old_directory_when_the_swap_fails(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "a.txt").write_text("old a")
    (out / files.MARKER).write_bytes(MARK)
    before = listing(tmp_path)
    real_rename = files.rename_noreplace

    def rename(src, dst):
        if str(src).endswith("-stage"):  # moving the new directory in fails (after the old moved aside)
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(files, "rename_noreplace", rename)
    with pytest.raises(OutputError, match="cannot write .*Input/output error"):
        with staged_dir(out, overwrite=True) as stage:
            write_text(stage / "a.txt", "new a")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("where", ["user folder", "current directory", "parent of the current directory"])
def test_overwrite_never_replaces_a_folder_shrinknet_did_not_write(tmp_path, monkeypatch, where):
    """--overwrite replaces shrinknet's own outputs only: a folder of the user's files (no marker), the
    current directory or one above it are refused, and nothing in them changes."""
    out = tmp_path / "work"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    if where != "user folder":
        (out / files.MARKER).write_bytes(MARK)  # even a shrinknet output, when it holds the cwd
        monkeypatch.chdir(out if where == "current directory" else out / "sub")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="did not write" if where == "user folder" else "current directory"):
        with staged_dir(out, overwrite=True) as stage:
            write_text(stage / "a.txt", "new a")
    assert listing(tmp_path) == before


def test_staged_dir_writes_nothing_on_failure_or_interrupt(tmp_path):
    out = tmp_path / "run"
    for exc in (ValueError("export failed"), KeyboardInterrupt(), interrupt.Terminated()):
        with pytest.raises(type(exc)):
            with staged_dir(out) as stage:
                write_text(stage / "a.txt", "a")
                raise exc
        assert list(tmp_path.iterdir()) == []


def test_sweep_removes_what_killed_runs_left_and_nothing_else(tmp_path):
    gone = dead_pid()
    stage = tmp_path / f".run.shrinknet-{gone}-stage"
    stage.mkdir()
    (stage / "model.safetensors").write_bytes(b"half")
    (tmp_path / f".model.c.shrinknet-{gone}-k2j3.tmp").write_text("half")
    aside = tmp_path / f".other.shrinknet-{gone}-old"  # a swap killed after moving the old output aside
    aside.mkdir()
    (aside / "a.txt").write_text("the user's old run")
    live = tmp_path / f".run2.shrinknet-{os.getpid()}-stage"  # a running process's: left alone
    live.mkdir()
    (tmp_path / ".run.backup").mkdir()  # the user's own hidden directory: left alone
    removed = sweep(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stage.name, f".model.c.shrinknet-{gone}-k2j3.tmp"])
    assert sorted(os.listdir(tmp_path)) == sorted([".run.backup", live.name, "other"])
    assert (tmp_path / "other" / "a.txt").read_text() == "the user's old run"


def half_then_full_disk(monkeypatch, fail_at: int):
    """Make the ``fail_at``-th file write stop half-way with ENOSPC, as a full disk does."""
    calls = {"n": 0}
    real = files._write_file

    def write(path, data):
        calls["n"] += 1
        if calls["n"] == fail_at:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(files, "_write_file", write)


@pytest.mark.parametrize("failure", ["first file, disk full", "second file, disk full", "second rename"])
def test_replace_files_keeps_the_old_pair_when_a_write_fails(tmp_path, monkeypatch, failure):
    c, h = tmp_path / "model.c", tmp_path / "model.h"
    c.write_text("old c")
    h.write_text("old h")
    before = listing(tmp_path)
    if failure == "second rename":
        real_rename, seen = files.rename_noreplace, []

        def rename(src, dst):
            if ".tmp" in str(src):
                seen.append(src)
                if len(seen) == 2:
                    raise OSError(errno.EACCES, "Permission denied")
            return real_rename(src, dst)

        monkeypatch.setattr(files, "rename_noreplace", rename)
    else:
        half_then_full_disk(monkeypatch, 1 if failure.startswith("first") else 2)
    with pytest.raises(OutputError, match=r"cannot write .*model\.h.*(No space left|Permission denied)"):
        replace_files([(h, "new h"), (c, "new c")])
    assert listing(tmp_path) == before


def test_replace_files_replaces_both(tmp_path):
    (tmp_path / "model.c").write_text("old c")
    replace_files([(tmp_path / "model.h", "new h"), (tmp_path / "model.c", "new c")])
    assert listing(tmp_path) == {"model.c": b"new c", "model.h": b"new h"}


def test_a_real_full_disk_leaves_the_old_files(tmp_path):
    """A 64 KiB tmpfs filled by the new files (needs root to mount: skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (mnt / "model.c").write_text("old c")
        (mnt / "model.h").write_text("old h")
        before = listing(mnt)
        with pytest.raises(OutputError, match="No space left on device"):
            replace_files([(mnt / "model.h", "h" * 1000), (mnt / "model.c", "c" * 200_000)])
        assert listing(mnt) == before
        with pytest.raises(OutputError, match="No space left on device"):
            with staged_dir(mnt / "run") as stage:
                write_text(stage / "a.txt", "a" * 200_000)
        assert listing(mnt) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("kind, make, message", [
    ("dir", lambda p: p.write_text("x"), "is a file, not a directory"),
    ("dir", lambda p: os.mkfifo(p), "is a FIFO"),
    ("file", lambda p: p.mkdir(), "is a directory"),
    ("file", lambda p: os.mkfifo(p), "is a FIFO"),
    ("dir", lambda p: os.symlink(p.parent / "nowhere", p), "broken symbolic link"),
], ids=["dir-is-file", "dir-is-fifo", "file-is-dir", "file-is-fifo", "broken-link"])
def test_check_output_refuses_locations_that_cannot_be_written(tmp_path, kind, make, message):
    p = tmp_path / "out"
    make(p)
    with pytest.raises(OutputError, match=message):
        files.check_output(p, kind)


def test_check_output_protects_inputs_through_links_and_dots(tmp_path):
    model = tmp_path / "m" / "model.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    os.symlink(tmp_path / "m", tmp_path / "link")
    os.link(model, tmp_path / "hard.safetensors")
    for out, kind in [(tmp_path / "m", "dir"), (tmp_path / "m" / ".." / "m", "dir"), (tmp_path / "link", "dir"),
                      (tmp_path, "dir"), (model, "file"), (tmp_path / "link" / "model.safetensors", "file"),
                      (tmp_path / "hard.safetensors", "file")]:
        with pytest.raises(OutputError, match="the input"):
            files.check_output(out, kind, inputs=[model], overwrite=True)
    files.check_output(tmp_path / "m2", "dir", inputs=[model])  # a sibling is fine


def test_deferred_signals_arrive_after_the_swap():
    interrupt.install()
    with pytest.raises(interrupt.Terminated):
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done = True  # the critical section runs to its end
    assert done
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
