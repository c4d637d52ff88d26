"""The ``virtlife`` click group, loading each command's module only when it is used.

``virtlife --help`` lists every command from ``INDEX`` (name, module, one-line help)
without importing any command module; ``virtlife list ...`` imports ``cli.fleet`` and
nothing else of the CLI. ``tests/unit/test_cli_imports.py`` fails when ``INDEX`` and
the commands' own help drift apart. ``run_click`` is the error boundary of the click
path: every ``VirtlifeError`` becomes one line on stderr and its exit code; a usage
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
from virtlife.errors import VirtlifeError

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

# Every top-level command: name -> (module under virtlife.cli, attribute, the first
# sentence of its help, which is all ``virtlife --help`` shows of it).
INDEX: dict[str, tuple[str, str, str]] = {
    "agent": ("agent", "agent",
        'Use the QEMU guest agent of VM (the qemu-guest-agent service in the guest).'),
    "attach-iso": ("media", "attach_iso",
        "Attach an ISO file (a path on the VM's host) to a VM as a CD-ROM."),
    "console": ("console", "console",
        "Attach this terminal to a running VM's serial console (Ctrl-] leaves)."),
    "create": ("vm", "create",
        'Define a new VM from a small spec (agent channel and VNC on by default).'),
    "define": ("vm", "define",
        "Define a VM from a domain XML file (or update an existing VM's definition)."),
    "demo": ("demo", "demo",
        'Walk a VM through its whole life on this host (or on the test driver).'),
    "destroy": ("vm", "destroy",
        'Stop the VM at once (pull the plug).'),
    "dumpxml": ("vm", "dumpxml",
        "Print the VM's domain XML."),
    "events": ("fleet", "events",
        'Stream lifecycle and guest-agent events from all hosts (Ctrl-C stops).'),
    "graphics": ("console", "graphics",
        "Show or change a VM's VNC graphics (its definition; a VM without any gets them)."),
    "history": ("fleet", "history",
        'Show the journal of operations, newest first.'),
    "host": ("fleet", "host",
        'Manage the host inventory.'),
    "info": ("vm", "info",
        'Print what libvirt knows about the VM.'),
    "lab": ("lab", "lab",
        'The test lab: host preparation, the tiny test guest, and N libvirt hosts on '
        'this machine for migrations (lab up / down / status).'),
    "list": ("fleet", "list_vms",
        'List the VMs of every host (hosts are asked at once).'),
    "managedsave": ("vm", "managedsave",
        "Save the VM's RAM to libvirt's managed image; the next start restores it."),
    "managedsave-remove": ("vm", "managedsave_remove",
        "Delete the VM's managed-save image (the next start boots fresh)."),
    "migrate": ("migrate", "migrate",
        'Move VM to host DEST: live by default, checked first.'),
    "migrate-abort": ("migrate", "migrate_abort",
        'Abort the migration running on VM (started by any process); it stays at its '
        'source, running.'),
    "operation": ("ops", "operation",
        'Show one operation by its id (as printed by --json results and `operations`).'),
    "operations": ("ops", "operations",
        'List the operations running on any VM now, from every virtlife process.'),
    "pmsuspend": ("vm", "pmsuspend",
        'Ask the guest (through its agent) to suspend itself.'),
    "pmwakeup": ("vm", "pmwakeup",
        'Wake a pmsuspended guest, then set its clock right.'),
    "reboot": ("vm", "reboot",
        'Ask the guest to reboot, and wait until it resets.'),
    "reset": ("vm", "reset",
        'Hard-reset the VM (like pressing the reset button).'),
    "restore": ("vm", "restore",
        'Restore a VM from a save FILE, then set its clock right. A failed restore keeps '
        'the file.'),
    "resume": ("vm", "resume",
        'Resume a paused VM, then set its clock right through the agent.'),
    "save": ("vm", "save",
        "Save the VM's RAM to FILE and stop it."),
    "serve": ("serve", "serve",
        'Serve the REST API and the web UI until Ctrl-C.'),
    "shutdown": ("vm", "shutdown",
        'Ask the guest to power off and wait until it is shut off.'),
    "snapshot": ("snapshot", "snapshot",
        'Take, list, revert to and delete snapshots of VM.'),
    "start": ("vm", "start",
        'Start a shut-off VM (from its managed save when it has one, then the guest '
        'clock is set right).'),
    "state": ("vm", "state",
        'Print the VM\'s state and libvirt\'s reason, e.g. "paused (user)".'),
    "suspend": ("vm", "suspend",
        "Pause the VM's vCPUs (RAM stays in the host)."),
    "token": ("serve", "token",
        'Bearer tokens of the REST API and web UI.'),
    "undefine": ("vm", "undefine",
        "Remove a shut-off VM's definition (its disks stay)."),
    "viewer": ("console", "viewer",
        "Open a running VM's VNC console in remote-viewer (virt-viewer)."),
    "viewer-file": ("console", "viewer_file",
        "Write a remote-viewer (virt-viewer) connection file for a running VM's VNC."),
    "vnc": ("console", "vnc",
        "Where a running VM's VNC server is: address:port and display."),
    "windows-drivers-iso": ("media", "windows_drivers_iso",
        'Build the virtio-win driver ISO for Windows guests from a driver tree.'),
}


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
             epilog=EPILOG)
@click.option("-c", "--connect", "connect_uri", default=None, metavar="URI",
              help="Talk to this libvirt URI directly, without the inventory "
                   "(e.g. test:///default).")
@click.option("-v", "--verbose", count=True,
              help="Print progress while waiting and log INFO to stderr; -vv logs DEBUG.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="Also append the log to PATH (INFO; DEBUG with -vv).")
@click.option("--queue", is_flag=True,
              help="When another operation runs on the VM, wait for it to end instead of "
                   "being refused (exit 6).")
@click.version_option(__version__, prog_name="virtlife")
@click.pass_context
def cli(ctx: click.Context, connect_uri: str | None, verbose: int,
        log_file: str | None, queue: bool) -> None:
    """virtlife: manage the whole life of KVM/QEMU VMs on libvirt hosts.

    VMs are named NAME or HOST/NAME. Example: virtlife -c test:///default list --all
    """
    import logging
    from pathlib import Path  # here: pathlib costs ~5 ms that --help need not pay

    from virtlife.cli.app import App
    from virtlife.logs import setup_logging

    setup_logging(verbose, Path(log_file) if log_file is not None else None)
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
        return err.exit_code
    except SystemExit as exit_:  # sys.exit() in a command: keep its code
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or EXIT_OK
        click.echo(f"virtlife: {printable(str(exit_.code))}", err=True)
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK
