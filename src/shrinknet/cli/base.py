"""The command group, the one place exceptions become exit statuses and one-line messages, and the
options and output checks the commands share."""

from __future__ import annotations

import click
import os
import sys
import traceback
import warnings
from ..errors import InputError
from ..ship.names import one_line
from pathlib import Path

from ..workflows.inputs import HIDDEN_ACTIVATIONS


_QUIET_KEY = "shrinknet.quiet"


DEMO_DIR = "shrinknet-demo"


DEMO_BUDGET = "64KiB"


#: --refit default of prune, chosen by held-out test accuracy in benchmarks/bench_frontier.py
DEFAULT_REFIT = "final"


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(_error_line(self.format_message()), err=True)


EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130


#: What the library raises for bad input (InputError is raised where input is read and validated).
INPUT_ERRORS = (InputError, ValueError, TypeError, OSError, ImportError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _error_line(text) -> str:
    """The one ``error: ...`` line: control characters (a newline in a path) escaped, never cut."""
    return "error: " + one_line(str(text).strip())


def _debug() -> bool:
    return os.environ.get("SHRINKNET_DEBUG", "") not in ("", "0")


def run_guarded(fn) -> int:
    """Run ``fn`` (the whole command) and turn every way it can end into an exit status, with at
    most one line on stderr: bad input -> 2, interrupted -> 130, a bug in shrinknet -> 1 (with a
    hint to report it; SHRINKNET_DEBUG=1 shows the traceback). Library warnings are not shown
    (SHRINKNET_DEBUG=1 shows them)."""
    try:
        with warnings.catch_warnings():
            if not _debug():
                warnings.simplefilter("ignore")
            rv = fn()
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:
        e.show()
        return e.exit_code
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "shrinknet"
        msg = " ".join(part.strip() for part in e.format_message().splitlines() if part.strip())  # click's own lines
        click.echo(_error_line(f"{msg.rstrip('.')}; try '{where} --help'"), err=True)
        return EXIT_INPUT
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:  # an interruption that escaped _Group.invoke
        _interrupted(KeyboardInterrupt())
    except INPUT_ERRORS as e:
        if _debug():
            traceback.print_exc()
        click.echo(_error_line(str(e).strip() or type(e).__name__), err=True)
        return EXIT_INPUT
    except Exception as e:  # a bug in shrinknet, not in the input
        if _debug():
            traceback.print_exc()
        click.echo(f"internal error ({type(e).__name__}: {_first_line(e)}): this is a bug in shrinknet; please "
                   "report it with the command you ran (SHRINKNET_DEBUG=1 shows the traceback)", err=True)
        return EXIT_INTERNAL


class _Group(click.Group):
    """The one place where exceptions become exit statuses and one-line messages (run_guarded);
    an interruption (Ctrl-C, SIGTERM) exits through interrupt.py's message and status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (interrupt.Terminated)
            _interrupted(e)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = run_guarded(lambda: super(_Group, self).main(args, prog_name, complete_var,
                                                             standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


def _quiet(ctx) -> bool:
    """--quiet given before the subcommand (the group's) or after it (every subcommand's)."""
    return bool(ctx.find_root().params.get("quiet") or ctx.meta.get(_QUIET_KEY))


def _say(ctx, msg: str = "") -> None:
    if not _quiet(ctx):
        click.echo(msg)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter; errors still go to stderr.")
@click.version_option(package_name="shrinknet")
def cli(quiet):
    """Shrink a trained feed-forward network neuron by neuron until it fits a memory budget.

    \b
    Typical use:
      shrinknet train --data mnist5k --hidden 100,100 --out runs/mnist
      shrinknet prune runs/mnist/model.safetensors --budget 64KiB --out runs/mnist-64k
      shrinknet report runs/mnist-64k --out runs/report
      shrinknet export runs/mnist-64k/model.safetensors --format c --out mnist.c
      shrinknet info runs/mnist-64k/model.safetensors
    Or all of it at once: shrinknet demo
    """
    from ..util import interrupt

    interrupt.reset()  # what an interruption message reports is this command's alone


# -- shared options and loaders ----------------------------------------------------------------
def _hidden(value: str | None):
    if value is None:
        return None
    parts = value.split(",")
    if value.strip() and len(parts) > 1 and not parts[-1].strip():
        parts = parts[:-1]  # a trailing comma, "100,100,", is harmless
    try:
        sizes = [int(v) for v in parts]  # an empty entry ("10,,10") is refused, not skipped
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths, e.g. 100,100") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter(f"{value!r}: give at least one positive width, e.g. 100 or 100,100")
    return sizes


def _data_options(f):
    for opt in reversed([
        click.option("--data", "data", help="Built-in data set name (mnist5k, digits, cosine, diamond, random-shape, "
                     "mnist5k-1vall, ...) or a .npz/.csv/IDX file, split train/val/test 60/20/20; a split that --val or "
                     "--test replaces is not cut from it (with both, the file trains whole). Default: the one the "
                     "model was trained on."),
        click.option("--seed", default=None, type=click.IntRange(min=0), help="Split seed (default: the model's, else 0)."),
        click.option("--size", default=None, type=click.IntRange(min=10), help="Use this many instances."),
    ]):
        f = opt(f)
    return f


def _model_options(f):
    acts = HIDDEN_ACTIVATIONS
    for opt in reversed([
        click.option("--hidden", default=None, callback=lambda c, p, v: _hidden(v),
                     help="Optional check: the hidden widths you expect, e.g. 100,100 (a state_dict's widths "
                     "come from its tensor shapes)."),
        click.option("--activation", default=None, type=click.Choice(acts),
                     help="The hidden activation: required for a plain state_dict; a shrinknet model file "
                     "records its own."),
        click.option("--out-activation", default=None, type=click.Choice([*acts, "none"]),
                     help="The output layer's activation: required for a plain state_dict; a shrinknet model "
                     "file records its own."),
    ]):
        f = opt(f)
    return f


def _heldout_options(f, test: bool = True):
    opts = [click.option("--val", "val", default=None, type=click.Path(dir_okay=False),
                         help="Rank on this held-out file (.npz/.csv/IDX), used whole, instead of the validation split.")]
    if test:
        opts.append(click.option("--test", "test", default=None, type=click.Path(dir_okay=False),
                                 help="Report test numbers on this file (.npz/.csv/IDX), used whole."))
    for opt in reversed(opts):
        f = opt(f)
    return f


def _force_option(f):
    return click.option("--force", is_flag=True, help="Go on even when the starting network is at chance on the "
                        "ranking data (or no better than the mean), or loss and output activation disagree.")(f)


# -- outputs: checked before any work, written whole (files.py), interruptions (interrupt.py) ----
def _overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Replace an existing non-empty --out directory as a whole (at the end, "
                             "only once everything new is written).")(f)


def _check_out(path, kind: str = "dir", inputs=(), overwrite: bool = False, own=(), option: str = "--out") -> Path:
    """The one pre-work check of every output location (files.check_output); also registers
    the location for the interruption message. Raises OutputError (one line, exit 2)."""
    from ..util import interrupt
    from ..util.files import check_output

    checked = check_output(path, kind, inputs=[i for i in inputs if i], overwrite=overwrite, own=own,
                           option=option)
    interrupt.pending(path)
    return checked


def _data_path(data: str | None):
    """--data when it names a file (an input to protect), else None."""
    return data if data and Path(data).exists() else None


def _interrupted(e: KeyboardInterrupt):
    from ..util import interrupt

    click.echo(interrupt.message(e), err=True)
    sys.exit(interrupt.exit_status(e))
