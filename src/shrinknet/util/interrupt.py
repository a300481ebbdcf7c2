"""Ctrl-C and SIGTERM: the same clean-up, a distinct exit status, and a message that says
exactly what was kept.

SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so every ``finally``/``except
BaseException`` that removes staging files on Ctrl-C does so on SIGTERM too. Exit status: 130
for SIGINT, 143 for SIGTERM (128 + the signal number, as shells report them); bad input is 2.

What the run has written in full (``written``) and what it keeps on purpose (``kept``, e.g. a
checkpoint to resume from) is recorded as it happens, so the interruption message is exact.
"""

from __future__ import annotations

import contextlib
import os
import signal

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


_written: list[str] = []
_kept: list[tuple[str, str]] = []
_pending: list[str] = []  # outputs the command is about to write (for "nothing written to ...")
_deferring = 0
_deferred_signal: int | None = None


def reset() -> None:
    """Forget what an earlier command in this process recorded."""
    _written.clear()
    _kept.clear()
    _pending.clear()


def pending(path) -> None:
    """``path`` is an output the running command writes at its end (all or nothing)."""
    _pending.append(str(path))


def written(path) -> None:
    """``path`` is now complete on disk."""
    _written.append(str(path))


def kept(path, note: str = "") -> None:
    """``path`` is left on disk on purpose when the run stops (e.g. a checkpoint); the message
    names it only if it exists by then."""
    _kept.append((str(path), note))


def _raise(signum, frame):
    global _deferred_signal
    if _deferring:
        _deferred_signal = signum  # re-raised when the critical section ends
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> None:
    """Handle SIGINT and SIGTERM alike (in the main thread; a no-op elsewhere)."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, _raise)
        signal.signal(signal.SIGTERM, _raise)


@contextlib.contextmanager
def deferred():
    """Hold SIGINT/SIGTERM off while files are swapped in, so a swap is never cut in half."""
    global _deferring, _deferred_signal
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _deferred_signal is not None:
            signum, _deferred_signal = _deferred_signal, None
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def exit_status(exc: BaseException) -> int:
    return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


def message(exc: BaseException) -> str:
    """One line: what the interrupted command left on disk."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    parts = []
    done = [p for p in _pending if p in _written] + [p for p in _written if p not in _pending]
    missing = [p for p in _pending if p not in _written]
    if missing:
        parts.append("nothing written to " + ", ".join(missing))
    if done:
        parts.append("complete: " + ", ".join(done))
    if not parts:
        parts.append("nothing written")
    parts += [f"kept {p}{' ' + note if note else ''}" for p, note in _kept if os.path.exists(p)]
    return f"{what}: " + "; ".join(parts)

