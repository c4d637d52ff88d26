"""The per-invocation application state shared by CLI commands, and output helpers.

``App`` opens the services lazily (so ``--help`` and ``lab`` commands never touch
libvirt or the store; this module imports no service at load time) and closes them
when the command ends; ``app.call`` is what every operation takes per call (its
progress sink, whether to queue behind another operation on the VM).
``on_interrupt`` marks the running operations of this process ``interrupted`` when
Ctrl-C ends it. The helpers print results as one line, a table, or JSON, with the
warnings beside them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from virtlife.services.context import Services
    from virtlife.services.lifecycle import Call, OperationResult
    from virtlife.services.progress import Update

F = TypeVar("F", bound=Callable[..., Any])

# How long ``--queue`` waits for another operation on the VM to end.
QUEUE_S = 3600.0
_current: App | None = None


class App:
    def __init__(self, connect_uri: str | None, verbose: bool, queue: bool = False) -> None:
        global _current
        self.connect_uri = connect_uri
        self.verbose = verbose
        self.queue = queue
        self._services: Services | None = None
        # What the command serves, stopped first when it is interrupted (``virtlife serve``)
        self.on_stop: list[Callable[[], None]] = []
        _current = self

    def _progress(self, update: Update) -> None:
        if self.verbose:
            click.secho(f"… {update.message}", err=True, dim=True)

    @property
    def call(self) -> Call:
        """What each operation of this command takes besides its own arguments."""
        from virtlife.services.base import Call

        return Call(progress=self._progress, queue_s=QUEUE_S if self.queue else None)

    @property
    def services(self) -> Services:
        if self._services is None:
            from virtlife.services.context import open_services

            self._services = open_services(self.connect_uri)
            for message in self._services.warnings:
                warn(message)
        return self._services

    def interrupted(self) -> None:
        for stop in self.on_stop:
            try:
                stop()
            except Exception as err:  # the journal below must still be marked
                warn(f"could not stop cleanly: {err}")
        if self._services is not None:
            self._services.interrupted()

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None


def on_interrupt() -> None:
    """Ctrl-C or SIGTERM ended the command: stop what it serves, record its running
    operations as interrupted."""
    if _current is not None:
        _current.interrupted()


pass_app = click.make_pass_decorator(App)


def emit_json(data: Any) -> None:
    from virtlife.cli.quick import emit_json as emit

    emit(data)


def emit_json_line(data: Any) -> None:
    """One JSON document on one line: a stream of updates a program reads line by line."""
    click.echo(json.dumps(data, default=str, separators=(",", ":")))


def show_result(result: OperationResult, as_json: bool = False) -> None:
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(str(result))
    for message in result.warnings:
        warn(message)


def show_table(columns: Sequence[str], rows: Sequence[Sequence[Any]],
               *, title: str | None = None, fit: str | None = None) -> None:
    """Print a table (Rich's layout; Rich itself is imported only when needed); the
    column named ``fit`` is cut with "…" so that each row fits on one line."""
    from virtlife.cli.table import print_table

    print_table(columns, rows, title=title, fit=fit)


def group_vm() -> str:
    """The VM a ``virtlife GROUP VM SUBCOMMAND`` names (``agent``, ``snapshot``)."""
    parent = click.get_current_context().parent
    assert parent is not None
    return str(parent.params["vm"])


def warn(message: str) -> None:
    click.echo(f"virtlife: warning: {message}", err=True)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"virtlife: {message}", err=True)
    sys.exit(code)


# -- shared options -------------------------------------------------------------------

def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def no_wait_option(f: F) -> F:
    return click.option("--no-wait", is_flag=True,
                        help="Return once libvirt accepted the request.")(f)


def wait_agent_option(f: F) -> F:
    return click.option("--wait-agent", is_flag=True,
                        help="Also wait until the guest agent answers.")(f)


def sync_time_option(f: F) -> F:
    return click.option(
        "--sync-time/--no-sync-time", "sync_time", default=None,
        help="Set the guest clock right through the agent once the guest runs again "
             "(default: on, or the settings' agent.sync_time).")(f)


def host_option(f: F) -> F:
    return click.option("--host", "host", default=None, metavar="HOST",
                        help="The host to act on (default: the only host).")(f)
