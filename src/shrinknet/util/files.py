"""Writing files so that a failure never leaves half-written, mixed or lost output behind.

Every output goes through three steps:

1. ``check_output`` -- before any work: the location can be written whole (parent directories
   are directories and writable, the target is not a file/FIFO/device where a directory is
   expected or the other way round, it is not and does not contain an input, an existing
   non-empty directory is only replaced with ``overwrite``). Refusals raise ``OutputError``.
2. ``staged_dir`` / ``atomic_path`` / ``replace_files`` -- the new files are written under
   temporary names beside the target (``.NAME.shrinknet-PID-stage``, ``.NAME.shrinknet-PID-XXXX.tmp``),
   then moved in by rename: a directory is replaced as a whole, the two C files both or neither.
   The swap runs with SIGINT/SIGTERM deferred (``interrupt.deferred``).
3. Leftovers of a killed process (its PID is in the name and no such process runs) are removed
   by the next write into the same directory; an old directory moved aside for a swap that was
   killed half-way is moved back.

Concurrent writers of one directory are serialised by an ``flock`` on ``.NAME.shrinknet-lock``
beside it (``claim``): the second one fails at once with one line instead of mixing files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from torch import Tensor

from . import interrupt

_TAG = "shrinknet"
# .NAME.shrinknet-PID-stage (directory), .NAME.shrinknet-PID-old (moved aside), .NAME.shrinknet-PID-XXXX.tmp
_LEFTOVER = re.compile(rf"^\.(?P<name>.+)\.{_TAG}-(?P<pid>\d+)-(?P<kind>stage|old|[^.]*\.tmp)$")


class OutputError(ValueError):
    """An output location that cannot be written whole (one line, for the user)."""


#: Written into every directory shrinknet writes whole: only such a directory (or an empty one) may be
#: replaced by ``--overwrite``, so a mistyped ``--out`` cannot delete a folder of the user's own files.
MARKER = ".shrinknet-output"


# -- 1. checks before any work -----------------------------------------------------------------
def check_output(path: str | os.PathLike, kind: str = "dir", *, inputs=(), overwrite: bool = False,
                 own: tuple[str, ...] = (), option: str = "--out") -> Path:
    """Refuse an output location that cannot be written whole; returns the path to write.

    Args:
        path: the directory (``kind="dir"``) or file (``kind="file"``) to write.
        inputs: paths read by the same command; ``path`` may not be one of them, nor (for a
            directory) contain one, also through symbolic links, ``..`` or hard links.
        overwrite: an existing non-empty directory may be replaced as a whole.
        own: names a directory may hold to count as this command's own earlier output, which is
            replaced without ``overwrite`` (``demo``, ``reproduce``).
        option: how the user named the location, for messages.

    Missing parent directories are fine (they are created when the output is written) when the
    nearest existing one is a writable directory. Nothing is created or changed here.
    """
    p = Path(path)
    if str(path).strip() == "":
        raise OutputError(f"{option} is empty: give a path")
    real = Path(os.path.realpath(p))
    for i in inputs:
        if i is None:
            continue
        ri = Path(os.path.realpath(i))
        same = ri == real or (real.exists() and Path(i).exists() and os.path.samefile(real, i))
        if same or (kind == "dir" and real in ri.parents):
            what = "is" if same else "contains"
            raise OutputError(f"{option} {p} {what} the input {i}: writing there would replace it; "
                              "choose another output location")
        if ri.is_dir() and ri in real.parents:  # e.g. a report written into one of the runs it reads
            raise OutputError(f"{option} {p} is inside the input directory {i}, which would then hold files of two "
                              "commands; choose a location outside it")
    _check_parents(p, real, option)
    if not (p.exists() or p.is_symlink()):
        return p
    if p.is_symlink() and not p.exists():
        raise OutputError(f"{option} {p} is a broken symbolic link: remove it or choose another location")
    mode = os.stat(real).st_mode
    if kind == "dir":
        if not stat.S_ISDIR(mode):
            raise OutputError(f"{option} {p} is {_describe(mode)}, not a directory: choose a directory path")
        if not os.access(real, os.W_OK | os.X_OK):
            raise OutputError(f"{option} {p} is not writable: choose another directory")
        entries = [e for e in os.listdir(real) if e != MARKER]
        if not entries:
            return real
        if own and all(e in own for e in entries):
            return real
        if not overwrite:
            raise OutputError(f"{option} {p} already exists and is not empty: choose a new directory, or add "
                              "--overwrite to replace it as a whole")
        cwd, home = Path(os.path.realpath(os.getcwd())), Path(os.path.realpath(Path.home()))
        if real == cwd or real in cwd.parents or real == home:
            raise OutputError(f"{option} {p} is the current directory, one above it or your home directory: "
                              "--overwrite will not replace it; choose a new directory")
        if MARKER not in os.listdir(real):
            raise OutputError(f"{option} {p} holds files shrinknet did not write (no {MARKER} in it): --overwrite "
                              "only replaces shrinknet's own output directories; choose a new directory")
        return real
    if stat.S_ISDIR(mode):
        raise OutputError(f"{option} {p} is a directory: give a file name, e.g. {p / ('model' + _suffix(p))}")
    if not stat.S_ISREG(mode):
        raise OutputError(f"{option} {p} is {_describe(mode)}, not a regular file: choose a file path")
    if not os.access(real, os.W_OK):
        raise OutputError(f"{option} {p} is read-only: choose another file")
    return p


def _check_parents(p: Path, real: Path, option: str) -> None:
    parent = real.parent
    while not parent.exists():
        if parent.is_symlink():
            raise OutputError(f"cannot write {option} {p}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {option} {p}: {parent} is {_describe(os.stat(parent).st_mode)}, "
                          "not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {option} {p}: directory {parent} is not writable")


def _describe(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _suffix(p: Path) -> str:
    return p.suffix or ".c"


# -- concurrent writers ------------------------------------------------------------------------
_held: dict[Path, tuple[int, Path]] = {}  # real output path -> (lock fd, lock file), held by this process


@contextlib.contextmanager
def claim(path: str | os.PathLike, option: str = "--out"):
    """Hold the write lock of output ``path`` (creating missing parents); reentrant in one process.

    A second process that claims the same path while the first holds it gets ``OutputError`` at
    once (no waiting, no busy loop). The lock is an ``flock`` on ``.NAME.shrinknet-lock`` beside
    ``path``; the kernel drops it when its holder dies, and the holder removes the file when done.
    """
    real = Path(os.path.realpath(path))
    if real in _held:
        yield real
        return
    created = [d for d in [real.parent, *real.parent.parents] if not d.exists()]
    with _as_output_error(path):
        real.parent.mkdir(parents=True, exist_ok=True)
    lock = real.parent / f".{real.name}.{_TAG}-lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                _remove_empty(created)
                raise OutputError(f"another shrinknet run is writing {option} {path} right now: wait for it "
                                  "to finish or choose another location") from None
            raise
        # the previous holder may have removed the file between our open and lock: lock the new one
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _held[real] = (fd, lock)
    try:
        sweep(real.parent)
        yield real
    finally:
        del _held[real]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
        _remove_empty(created)  # directories made for an output that was never written


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        try:
            os.rmdir(d)
        except OSError:
            return


# -- leftovers of killed runs ------------------------------------------------------------------
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(directory: str | os.PathLike) -> list[Path]:
    """Remove what killed shrinknet processes left in ``directory``; returns what was removed.

    Recognised by name (``.NAME.shrinknet-PID-stage|old|XXXX.tmp``) and by their PID not
    running. A directory moved aside for a swap that never finished is moved back when
    nothing has taken its place.
    """
    directory = Path(directory)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for n in names:
        m = _LEFTOVER.match(n)
        if not m or _alive(int(m["pid"])):
            continue
        p = directory / n
        original = directory / m["name"]
        try:
            if m["kind"] == "old" and not (original.exists() or original.is_symlink()):
                os.rename(p, original)  # the swap was killed half-way: put the old output back
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass  # someone else's leftover we cannot remove: leave it
    return removed


# -- 2. writing ----------------------------------------------------------------------------------
def _tmp_name(path: Path) -> tuple[str, str]:
    return f".{path.name}.{_TAG}-{os.getpid()}-", ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    Raises FileNotFoundError with a clear message when the parent directory does not exist.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {parent} does not exist")
    prefix, suffix = _tmp_name(path)
    with _as_output_error(path):
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    try:
        with _as_output_error(path):
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _as_output_error(path):
    """A failed write (disk full, permission, ...) as one line naming the file: OutputError."""
    try:
        yield
    except OutputError:
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise OutputError(f"cannot write {path}: {why}; nothing was changed there") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        _write_file(tmp, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        _write_file(tmp, data)


def _write_file(path: Path, data: bytes) -> None:
    """The one place file contents are written (tests make it fail half-way, as a full disk does)."""
    with open(path, "wb") as f:
        f.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, overwrite: bool = False, own: tuple[str, ...] = ()):
    """Yield an empty staging directory beside ``path``; on success it becomes ``path``.

    ``path`` must not exist, be empty, or (with ``overwrite``, or holding only names in ``own``)
    is replaced as a whole: the old directory is moved aside, the new one renamed in, and only
    then the old one removed. So a directory holds the files of one run, all of them, or stays
    as it was. On failure (or Ctrl-C/SIGTERM) the staging directory is removed. Missing parent
    directories are created; concurrent writers are refused (``claim``).
    """
    path = Path(path)
    with _as_output_error(path), claim(path) as real:
        check_output(real, "dir", overwrite=overwrite, own=own)
        stage = real.parent / f".{real.name}.{_TAG}-{os.getpid()}-stage"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            (stage / MARKER).write_text("written by shrinknet: --overwrite may replace this directory as a whole\n")
            yield stage
            with interrupt.deferred():
                _swap_in(stage, real)
                interrupt.written(path)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, real: Path) -> None:
    """Rename ``stage`` onto ``real``; an existing ``real`` is moved aside first, removed last."""
    if not real.exists():
        os.rename(stage, real)
        return
    if not os.listdir(real):
        os.rmdir(real)
        os.rename(stage, real)
        return
    old = real.parent / f".{real.name}.{_TAG}-{os.getpid()}-old"
    os.rename(real, old)
    try:
        os.rename(stage, real)
    except BaseException:
        os.rename(old, real)
        raise
    shutil.rmtree(old, ignore_errors=True)


def replace_files(files: list[tuple[Path, str | bytes]]) -> None:
    """Write several files that belong together (a .c and its .h): all of them or none.

    Each new file is written in full to a temporary name first; then existing files are moved
    aside, the new ones renamed in, and the old ones removed. If anything fails, the files that
    were there before are put back, so a failed write never leaves a mix of old and new.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        with _as_output_error(", ".join(str(p) for p, _ in files)):
            _stage_files(files, staged)
            with interrupt.deferred():
                _swap_files(staged)
    finally:
        for _, tmp in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _stage_files(files, staged: list[tuple[Path, Path]]) -> None:
    for p, data in files:
        p = Path(p)
        if not p.parent.is_dir():
            raise FileNotFoundError(f"cannot write {p}: directory {p.parent} does not exist")
        if p.is_dir():
            raise IsADirectoryError(f"cannot write {p}: it is a directory")
        if p.exists() and not p.is_file():
            raise OutputError(f"cannot write {p}: it is {_describe(os.stat(p).st_mode)}, not a regular file")
        prefix, suffix = _tmp_name(p)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=p.parent)
        os.close(fd)
        staged.append((p, Path(tmp)))
        _write_file(Path(tmp), data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())


def _swap_files(staged: list[tuple[Path, Path]]) -> None:
    moved: list[tuple[Path, Path]] = []  # (target, its old content moved aside)
    placed: list[Path] = []
    try:
        for p, _ in staged:
            if p.exists():
                old = p.parent / f".{p.name}.{_TAG}-{os.getpid()}-old"
                os.rename(p, old)
                moved.append((p, old))
        for p, tmp in staged:
            os.rename(tmp, p)
            placed.append(p)
    except BaseException:
        for p in placed:
            with contextlib.suppress(OSError):
                os.unlink(p)
        for p, old in moved:
            os.rename(old, p)
        raise
    for _, old in moved:
        with contextlib.suppress(OSError):
            os.unlink(old)


def jsonable(obj):
    """Tensors to lists, tuples to lists, non-finite floats to None (JSON has no Infinity)."""
    if isinstance(obj, Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
