"""Entry point of the ``virtlife`` command: the click group and the one error boundary.

Every ``VirtlifeError`` becomes one line on stderr and its exit code; a usage error
(click's) is one line and exit 64; anything else is a bug and keeps its traceback.
The command runs in a worker thread while the main thread waits for it: a libvirt
call blocked in C never returns to Python on SIGINT, but the main thread does, so
Ctrl-C always ends the command at once (exit 130), after asking ``cli.app`` to mark
this process's running operations as interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import click

from virtlife import __version__
from virtlife.cli import agent, console, demo, fleet, lab, media, migrate, ops, serve, snapshot, vm
from virtlife.cli import app as app_module
from virtlife.cli.app import App
from virtlife.errors import VirtlifeError, exit_codes
from virtlife.logs import reset_logging, setup_logging

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 64  # BSD's EX_USAGE; click's own 2 would read as "not found"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
# Every exit code the command may end with (virtlife.errors documents their meaning).
EXIT_CODES = frozenset({0, 1, EXIT_USAGE, EXIT_INTERRUPTED} | exit_codes())
# How long Ctrl-C waits for the journal to mark the running operations interrupted,
# then for the command to end by itself before the process exits without it.
INTERRUPT_HOOK_S = 2.0
INTERRUPT_GRACE_S = 0.2
# How often the main thread wakes up to notice a Ctrl-C that another thread received.
SIGNAL_POLL_S = 0.1

# click >= 8.2 raises this for a bare group; it carries the help text to show.
_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(
    click.exceptions, "NoArgsIsHelpError", ())

EPILOG = """\b
Exit codes:
  0 done            4 host unreachable    64  bad usage or input
  1 failed          5 timed out           130 interrupted (Ctrl-C)
  2 not found       6 busy (another operation runs on the VM)
  3 refused by the VM's state             7 store unavailable
  8 guest agent unavailable               9 guest agent refused or failed the command
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option("-c", "--connect", "connect_uri", default=None, metavar="URI",
              help="Talk to this libvirt URI directly, without the inventory "
                   "(e.g. test:///default).")
@click.option("-v", "--verbose", count=True,
              help="Print progress while waiting and log INFO to stderr; -vv logs DEBUG.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="PATH", help="Also append the log to PATH (INFO; DEBUG with -vv).")
@click.option("--queue", is_flag=True,
              help="When another operation runs on the VM, wait for it to end instead of "
                   "being refused (exit 6).")
@click.version_option(__version__, prog_name="virtlife")
@click.pass_context
def cli(ctx: click.Context, connect_uri: str | None, verbose: int,
        log_file: Path | None, queue: bool) -> None:
    """virtlife: manage the whole life of KVM/QEMU VMs on libvirt hosts.

    VMs are named NAME or HOST/NAME. Example: virtlife -c test:///default list --all
    """
    setup_logging(verbose, log_file)
    log.debug("virtlife %s: %s", __version__, ctx.invoked_subcommand)
    app = App(connect_uri, verbose > 0, queue)
    ctx.obj = app
    ctx.call_on_close(app.close)


for module in (vm, agent, console, snapshot, migrate, fleet, lab, ops, media, serve, demo):
    for command in module.COMMANDS:
        cli.add_command(command)


def _printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``), so that it stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _one_line(text: str) -> str:
    return _printable(" ".join(text.split()))


def _bad_argument(args: Sequence[str]) -> str | None:
    """Why an argument cannot be used (not UTF-8, or a NUL), or None if all can."""
    for index, arg in enumerate(args, 1):
        if "\x00" in arg:
            return f"argument {index} ({arg!r}) holds a NUL character"
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return (f"argument {index} ({os.fsencode(arg)!r}) is not UTF-8 text; names, paths and "
                    "values must be UTF-8")
    return None


def _usage_error(err: click.UsageError) -> int:
    if isinstance(err, _NO_ARGS_IS_HELP):
        err.show()  # the help text: what to type
        return EXIT_USAGE
    command = err.ctx.command_path if err.ctx is not None else "virtlife"
    click.echo(f"virtlife: {_one_line(err.format_message())} (see '{command} --help')",
               err=True)
    return EXIT_USAGE


def _run(args: list[str]) -> int:
    """Run the command; every expected ending becomes an exit code and at most one line."""
    try:
        result = cli.main(args=args, prog_name="virtlife", standalone_mode=False)
    except click.UsageError as err:
        return _usage_error(err)
    except click.exceptions.Abort:
        click.echo("virtlife: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as err:
        click.echo(f"virtlife: {_one_line(err.format_message())}", err=True)
        return err.exit_code
    except VirtlifeError as err:
        click.echo(f"virtlife: {_printable(str(err))}", err=True)
        return err.exit_code
    except SystemExit as exit_:  # sys.exit() in a command: keep its code
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or EXIT_OK
        click.echo(f"virtlife: {_printable(str(exit_.code))}", err=True)
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK


def _mark_interrupted() -> None:
    """Call ``cli.app.on_interrupt`` (if it exists), for at most ``INTERRUPT_HOOK_S``.

    It runs in a thread of its own: the command's thread may hold what it needs, and a
    second Ctrl-C, or the time limit, leaves it behind.
    """
    hook = getattr(app_module, "on_interrupt", None)
    if not callable(hook):
        return
    problems: list[BaseException] = []

    def call() -> None:
        try:
            hook()
        except Exception as err:
            problems.append(err)

    marker = threading.Thread(target=call, name="virtlife-interrupt", daemon=True)
    marker.start()
    try:
        marker.join(INTERRUPT_HOOK_S)
    except KeyboardInterrupt:
        pass
    if marker.is_alive():
        problems.append(TimeoutError(f"no answer within {INTERRUPT_HOOK_S:.0f} s"))
    for err in problems:
        click.echo("virtlife: warning: could not mark the interrupted operation in the "
                   f"journal: {err}", err=True)


def _interrupted(worker: threading.Thread) -> int:
    click.echo("virtlife: interrupted", err=True)
    _mark_interrupted()
    try:
        worker.join(INTERRUPT_GRACE_S)
    except KeyboardInterrupt:
        pass
    if worker.is_alive():
        # The command may be stuck in a libvirt call that never returns; exiting
        # normally would wait for it (and for every non-daemon thread it started).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed pipe must not keep us from exiting
                pass
        os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``virtlife ARGV`` and return its exit code (one of ``EXIT_CODES``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    problem = _bad_argument(args)
    if problem is not None:
        click.echo(f"virtlife: {problem}", err=True)
        return EXIT_USAGE
    outcome: dict[str, int] = {}
    bug: list[BaseException] = []

    def work() -> None:
        try:
            outcome["code"] = _run(args)
        except BaseException as err:  # a bug: re-raised below with its traceback
            bug.append(err)

    worker = threading.Thread(target=work, name="virtlife-command", daemon=True)
    try:
        worker.start()
        # Wake up now and then: the kernel may hand SIGINT to a thread blocked in C,
        # and Python runs the handler only when the main thread executes bytecode; a
        # plain join() would then sleep through Ctrl-C until the command ends.
        while worker.is_alive():
            worker.join(SIGNAL_POLL_S)
    except KeyboardInterrupt:
        return _interrupted(worker)
    finally:
        if not worker.is_alive():
            reset_logging()
    if bug:
        raise bug[0]
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
