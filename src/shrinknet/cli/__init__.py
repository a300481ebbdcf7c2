"""The ``shrinknet`` command: a thin layer that parses, calls the library (workflows/), and prints.

Every user error (bad data, model file, budget, option) ends as one line on stderr,
``error: ...``, and exit status 2, with no traceback and no partial output files (base.py's
``run_guarded`` is the one place where exceptions become exit statuses).

    base.py    the group, run_guarded, shared options, output checks
    train.py   train, rank
    prune.py   prune
    files.py   report, export, info
    paper.py   reproduce, demo
    device.py  device (the network on emulated Cortex-M cores)
"""

from __future__ import annotations

import click

from . import device, files, paper, prune, train  # noqa: F401  (each registers its commands on the group)
from .base import _QUIET_KEY, DEFAULT_REFIT, UserError, cli  # noqa: F401  (the public names)
from .prune import _DISTRIBUTED, _leave_distributed


def _quiet_after_subcommand(ctx, param, value):
    if value:
        ctx.meta[_QUIET_KEY] = True


for _command in cli.commands.values():  # --quiet also after the subcommand: shrinknet prune ... --quiet
    _command.params.append(click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_quiet_after_subcommand,
                                        help="No progress bars or chatter; errors still go to stderr."))


def main(argv=None) -> None:
    from ..util import interrupt

    interrupt.install()  # SIGTERM cleans up like Ctrl-C; see _interrupted for the exit status
    try:
        cli.main(args=argv, prog_name="shrinknet")
    except SystemExit as e:
        if _DISTRIBUTED:
            _exit_distributed(e.code)
        raise


def _exit_distributed(code) -> None:
    """Leave the process group and end the process without interpreter teardown: with gloo
    (torch 2.13) a rank that exits normally aborts now and then ("terminate called without an
    active exception", SIGABRT) after destroy_process_group, which torchrun reports as a failure."""
    import os
    import sys

    _leave_distributed()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
