"""The ``virtlife`` click group, loading each command's module only when it is used.

Its help lists every command from ``INDEX`` (``cli.roothelp``: name, module, one-line
help) without importing any command module; ``virtlife list ...`` imports ``cli.fleet``
and nothing else of the CLI. A plain ``virtlife --help`` does not even come here: the
same strings are printed by ``cli.roothelp`` without click.
``tests/unit/test_cli_imports.py`` fails when ``INDEX`` and the commands' own help
drift apart, ``tests/unit/test_cli_roothelp.py`` when this group's help and
``cli.roothelp``'s rendering of it do. ``run_click`` is the error boundary of the click
path: every ``VirtlifeError`` becomes one line on stderr and its exit code (and its
notes, such as a journal that could not record it, one warning line each); a usage
error (click's) is one line and exit 64; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping

import click

from virtlife import __version__
from virtlife.cli.main import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    one_line,
    printable,
)
from virtlife.cli.roothelp import EPILOG, HELP, INDEX, OPTIONS
from virtlife.errors import VirtlifeError

__all__ = ["EPILOG", "INDEX", "LazyGroup", "cli", "run_click"]

# click >= 8.2 raises this for a bare group; it carries the help text to show.
_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(
    click.exceptions, "NoArgsIsHelpError", ())


class LazyCommands(MutableMapping[str, click.Command]):
    """``Group.commands`` that imports a command's module on first access to it."""

    def __init__(self, index: dict[str, tuple[str, str, str]]) -> None:
        self._index = index
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            if name not in self._index:
                raise KeyError(name)
            module, attribute, _ = self._index[name]
            command = getattr(importlib.import_module(f"virtlife.cli.{module}"), attribute)
            assert isinstance(command, click.Command), (module, attribute)
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._loaded.pop(name, None)
        self._index.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._index) | set(self._loaded)))

    def __len__(self) -> int:
        return len(set(self._index) | set(self._loaded))


class LazyGroup(click.Group):
    """A group whose help lists the commands from ``INDEX`` without importing them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commands = LazyCommands(dict(INDEX))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own layout, with a stand-in command carrying the indexed help."""
        stubs: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            if name in INDEX:
                stubs.append((name, click.Command(name, help=INDEX[name][2])))
            else:  # added at run time (tests): it is loaded already
                stubs.append((name, self.commands[name]))
        stubs = [(name, command) for name, command in stubs if not command.hidden]
        if stubs:
            limit = formatter.width - 6 - max(len(name) for name, _ in stubs)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit))
                                    for name, command in stubs])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             help=HELP, epilog=EPILOG)
@click.option("-c", "--connect", "connect_uri", default=None, metavar="URI",
              help=OPTIONS["-c, --connect URI"])
@click.option("-v", "--verbose", count=True, help=OPTIONS["-v, --verbose"])
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help=OPTIONS["--log-file PATH"])
@click.option("--queue", is_flag=True, help=OPTIONS["--queue"])
@click.version_option(__version__, prog_name="virtlife", help=OPTIONS["--version"])
@click.pass_context
def cli(ctx: click.Context, connect_uri: str | None, verbose: int,
        log_file: str | None, queue: bool) -> None:
    """The root group (its help is ``cli.roothelp.HELP``): set up logging and the
    ``App`` every command finds in ``ctx.obj``."""
    import logging
    from pathlib import Path  # here: pathlib costs ~5 ms that --help need not pay

    from virtlife.cli.app import App
    from virtlife.logs import setup_logging
    from virtlife.paths import check_path

    if connect_uri is not None and not connect_uri.strip():
        raise click.BadParameter(
            "an empty URI names no host: give a libvirt URI (e.g. qemu:///system), or "
            "leave -c out to use the inventory", param_hint="'-c'")
    log_path = Path(check_path(log_file, "--log-file")) if log_file is not None else None
    setup_logging(verbose, log_path)
    logging.getLogger(__name__).debug("virtlife %s: %s", __version__, ctx.invoked_subcommand)
    app = App(connect_uri, verbose > 0, queue)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _usage_error(err: click.UsageError) -> int:
    if isinstance(err, _NO_ARGS_IS_HELP):
        err.show()  # the help text: what to type
        return EXIT_USAGE
    command = err.ctx.command_path if err.ctx is not None else "virtlife"
    click.echo(f"virtlife: {one_line(err.format_message())} (see '{command} --help')",
               err=True)
    return EXIT_USAGE


def run_click(args: list[str]) -> int:
    """Run the command through click; every expected ending becomes an exit code and at
    most one line."""
    try:
        result = cli.main(args=args, prog_name="virtlife", standalone_mode=False)
    except click.UsageError as err:
        return _usage_error(err)
    except click.exceptions.Abort:
        click.echo("virtlife: aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as err:
        click.echo(f"virtlife: {one_line(err.format_message())}", err=True)
        return err.exit_code
    except VirtlifeError as err:
        click.echo(f"virtlife: {printable(str(err))}", err=True)
        for note in getattr(err, "__notes__", ()):  # warnings beside the outcome
            click.echo(f"virtlife: warning: {printable(str(note))}", err=True)
        return err.exit_code
    except SystemExit as exit_:  # sys.exit() in a command: keep its code
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or EXIT_OK
        click.echo(f"virtlife: {printable(str(exit_.code))}", err=True)
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK
