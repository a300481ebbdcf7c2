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
import ctypes
import errno
import fcntl
import math
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from torch import Tensor

from ..errors import InputError
from . import interrupt

_TAG = "shrinknet"
# .NAME.shrinknet-PID-stage (directory), .NAME.shrinknet-PID-old (moved aside), .NAME.shrinknet-PID-XXXX.tmp
_LEFTOVER = re.compile(rf"^\.(?P<name>.+)\.{_TAG}-(?P<pid>\d+)-(?P<kind>stage|old|[^.]*\.tmp)$")


class OutputError(InputError):
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


_ANY = object()  # atomic_path's default: replace whatever is at the path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, expect=_ANY):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    Raises FileNotFoundError with a clear message when the parent directory does not exist.
    With ``expect`` (:func:`identity` of ``path`` when it was checked: None for nothing there)
    only that is replaced (:func:`swap_into`); anything else found there is kept (OutputError).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {parent} does not exist")
    prefix, suffix = _tmp_name(path)
    with _as_output_error(path):
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    old = None
    try:
        with _as_output_error(path):
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
            if expect is _ANY:
                os.replace(tmp, path)
            else:
                with interrupt.deferred():
                    old = swap_into(Path(tmp), path, expect)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if old is not None:
        remove_checked(old, expect)


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


def write_bytes(path: str | os.PathLike, data: bytes, expect=_ANY) -> None:
    with atomic_path(path, expect) as tmp:
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

    The swap replaces only what was checked (:func:`swap_into`): a directory that appeared at
    ``path`` while the work ran, one put in the checked one's place, or the checked one once
    anything in it was added, removed or replaced (its entries' names and inodes), is kept, and
    ``OutputError`` says so.
    """
    path = Path(path)
    with _as_output_error(path), claim(path) as real:
        check_output(real, "dir", overwrite=overwrite, own=own)
        expect, entries = identity(real), _entries(real)
        stage = real.parent / f".{real.name}.{_TAG}-{os.getpid()}-stage"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        old = None
        try:
            (stage / MARKER).write_text("written by shrinknet: --overwrite may replace this directory as a whole\n")
            yield stage
            with interrupt.deferred():
                old = _swap_in(stage, real, expect, lambda d: _entries(d) == entries, path)
                interrupt.written(path)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            remove_checked(old, expect)


def _swap_in(stage: Path, real: Path, expect, verify, option) -> Path | None:
    """staged_dir's last step (tests interrupt it here)."""
    return swap_into(stage, real, expect, verify=verify, option=option)


def _entries(d: Path) -> set | None:
    """What a directory holds, as checked: each entry's name, inode and change time (a file replaced
    by a new one may get the freed inode back, never the old change time); None for no directory."""
    try:
        with os.scandir(d) as it:
            return {(e.name, e.inode(), e.stat(follow_symlinks=False).st_ctime_ns) for e in it}
    except (NotADirectoryError, FileNotFoundError):
        return None


# -- the final step: no-replace moves, identity checked before anything is moved away or deleted ----
def identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of ``path`` itself (a symbolic link is not followed), None when nothing is there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


_RENAME_NOREPLACE, _AT_FDCWD = 1, -100
_renameat2 = []  # [libc renameat2 or None], looked up once


def _libc_renameat2():
    if not _renameat2:
        fn = None
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                fn = ctypes.CDLL(None, use_errno=True).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
        _renameat2.append(fn)
    return _renameat2[0]


def rename_noreplace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move ``src`` to ``dst`` only when nothing is at ``dst``, in one step that cannot replace
    what appears there meanwhile; FileExistsError otherwise.

    Linux: ``renameat2(RENAME_NOREPLACE)``. Where the kernel or file system lacks it: a file is
    hard-linked to ``dst`` (``link`` never replaces) and then unlinked from ``src``; a directory is
    renamed onto a directory created exclusively at ``dst`` (``rename`` replaces only an empty
    directory, so files put into it meanwhile make the move fail and are kept).
    """
    fn = _libc_renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.isdir(src) and not os.path.islink(src):
        os.mkdir(dst)  # FileExistsError when something is there
        made = identity(dst)
        try:
            os.rename(src, dst)
        except OSError as e:
            if identity(dst) == made:
                with contextlib.suppress(OSError):
                    os.rmdir(dst)  # ours, and still empty
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(errno.EEXIST, "something was put there", str(dst)) from None
            raise
        return
    os.link(src, dst, follow_symlinks=False)  # FileExistsError when something is there
    os.unlink(src)


def swap_into(new: Path, target: Path, expect: tuple[int, int] | None, verify=None, option=None) -> Path | None:
    """Put ``new`` at ``target``, replacing only what was checked there.

    ``expect`` is :func:`identity` of ``target`` when it was checked: None (nothing was there) or
    its (device, inode). Nothing there: ``new`` is moved in without replacing (something that
    appeared meanwhile is kept: OutputError). Something there: it is moved aside without
    replacing, and its identity compared with ``expect`` (and ``verify(aside)`` called, when
    given) -- anything else is moved back, kept, and OutputError raised; then ``new`` is moved
    in. Returns the moved-aside old one (delete it with :func:`remove_checked` once every swap
    of the output is done), or None.
    """
    shown = option if option is not None else target
    changed = (f"{shown} was changed by something else while shrinknet was writing it: it is kept as it is and "
               "nothing was written; run the command again")
    if expect is None:
        try:
            rename_noreplace(new, target)
        except FileExistsError:
            raise OutputError(changed) from None
        return None
    old = target.parent / f".{target.name}.{_TAG}-{os.getpid()}-old"
    try:
        rename_noreplace(target, old)
    except FileNotFoundError:  # the checked one is gone: place the new one where nothing is
        return swap_into(new, target, None, option=option)
    if identity(old) != expect or (verify is not None and not verify(old)):
        rename_noreplace(old, target)
        raise OutputError(changed)
    try:
        rename_noreplace(new, target)
    except BaseException:
        with contextlib.suppress(OSError):
            rename_noreplace(old, target)
        raise
    return old


def remove_checked(old: Path, expect: tuple[int, int]) -> None:
    """Delete what :func:`swap_into` moved aside, only while it is still the one that was checked."""
    if identity(old) != expect:
        return
    with contextlib.suppress(OSError):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            os.unlink(old)


def replace_files(files: list[tuple[Path, str | bytes]], expect: dict | None = None) -> None:
    """Write several files that belong together (a .c and its .h): all of them or none.

    Each new file is written in full to a temporary name first; then existing files are moved
    aside, the new ones renamed in, and the old ones removed. If anything fails, the files that
    were there before are put back, so a failed write never leaves a mix of old and new.

    ``expect`` maps each path to its :func:`identity` when it was checked (None: nothing was
    there); then only that is replaced (:func:`swap_into`), and a file that appeared or was
    swapped for another meanwhile is kept (OutputError). Without it, whatever is there is replaced.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        with _as_output_error(", ".join(str(p) for p, _ in files)):
            _stage_files(files, staged)
            with interrupt.deferred():
                _swap_files(staged, expect)
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


def _swap_files(staged: list[tuple[Path, Path]], expect: dict | None) -> None:
    done: list[tuple[Path, tuple[int, int], Path | None, tuple[int, int] | None]] = []  # (target, new id, old, old id)
    try:
        for p, tmp in staged:
            want = identity(p) if expect is None else expect[p]
            new_id = identity(tmp)
            old = swap_into(tmp, p, want)
            done.append((p, new_id, old, want))
    except BaseException:
        for p, new_id, old, _ in reversed(done):  # put back what was there
            if identity(p) == new_id:
                with contextlib.suppress(OSError):
                    os.unlink(p)
            if old is not None:
                with contextlib.suppress(OSError):
                    rename_noreplace(old, p)
        raise
    for _, _, old, want in done:
        if old is not None:
            remove_checked(old, want)


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
