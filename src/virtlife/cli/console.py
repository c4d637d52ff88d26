"""Console commands: ``graphics``, ``vnc``, ``viewer-file``, ``viewer`` and ``console``.

Thin click commands over ``services.consoles``. What stays here is what belongs to
the terminal: asking for a VNC password (``agent``'s prompt), writing the ``.vv``
file on this machine (mode 0600: it may hold the password), launching remote-viewer,
and ``console``'s attachment of this terminal to a ``SerialSession``: raw mode on a
TTY (Ctrl-] leaves), or stdin forwarded until it ends and the output drained a moment
(so a script can pipe a command in). Output to a file or pipe has the guest's
cursor-position queries removed (``services.termquery``); a terminal gets every byte.
The session ends cleanly when the VM stops.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import threading
import tty
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from virtlife.cli.agent import read_password
from virtlife.cli.app import App, emit_json, fail, json_option, pass_app, show_result
from virtlife.cli.params import SECONDS, FilePath, timeout_option
from virtlife.xml.graphics import KEEP, Keep

if TYPE_CHECKING:
    from virtlife.services.consoles import SerialSession

ESCAPE = b"\x1d"  # Ctrl-]
# How long ``viewer`` watches remote-viewer for an immediate failure.
VIEWER_CHECK_S = 1.5
# How often the stdin loop looks whether the console session ended.
STDIN_POLL_S = 0.2

VM = click.argument("vm", metavar="VM")


@click.command()
@VM
@click.option("--listen", metavar="ADDR", default=None,
              help="The IP address the VNC server listens on: 127.0.0.1 (this host only), "
                   "0.0.0.0 (all IPv4 addresses) or one of the host's addresses. An "
                   "address this machine lacks is refused when the VM's host is this "
                   "machine; a remote host's is not checked (a warning says so).")
@click.option("--password/--no-password", "password", default=None,
              help="Protect the VNC server with a password (read from the terminal twice, "
                   "or one line of stdin; at most 8 characters), or remove it.")
@timeout_option
@json_option
@pass_app
def graphics(app: App, vm: str, listen: str | None, password: bool | None,
             timeout_s: float | None, as_json: bool) -> None:
    """Show or change a VM's VNC graphics (its definition; a VM without any gets them).

    A running VM keeps its VNC server until it is shut down and started again (a
    reboot keeps it). Without options, the definition's settings are shown.

    \b
    Example: virtlife graphics web1 --listen 0.0.0.0 --password
    """
    consoles = app.services.consoles
    if listen is None and password is None:
        settings = consoles.graphics(vm)
        if as_json:
            emit_json(settings.as_dict())
        else:
            click.echo(str(settings))
        return
    new_password: str | Keep | None = KEEP
    if password is True:
        new_password = read_password(f"the VNC server of {vm}")
    elif password is False:
        new_password = None
    show_result(consoles.set_graphics(vm, listen=listen if listen is not None else KEEP,
                                      password=new_password, timeout_s=timeout_s,
                                      **app.call), as_json)


@click.command()
@VM
@json_option
@pass_app
def vnc(app: App, vm: str, as_json: bool) -> None:
    """Where a running VM's VNC server is: address:port and display.

    Example: virtlife vnc web1
    """
    info = app.services.consoles.vnc(vm)
    if as_json:
        emit_json(info.as_dict())
    else:
        click.echo(str(info))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # a file that existed keeps its mode otherwise
        f.write(text)


@click.command("viewer-file")
@VM
@click.option("-o", "--output", type=FilePath(), default=None, metavar="FILE.vv",
              help="Write it to FILE.vv (mode 0600) instead of stdout.")
@pass_app
def viewer_file(app: App, vm: str, output: Path | None) -> None:
    """Write a remote-viewer (virt-viewer) connection file for a running VM's VNC.

    It holds the type, host, port, password (if set) and title, and asks remote-viewer
    to delete it once read.

    \b
    Example: virtlife viewer-file web1 -o web1.vv && remote-viewer web1.vv
    """
    text = app.services.consoles.viewer_file(vm)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_private(output, text)
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}")
    click.echo(f"{vm}: viewer file written to {output}")


@click.command()
@VM
@pass_app
def viewer(app: App, vm: str) -> None:
    """Open a running VM's VNC console in remote-viewer (virt-viewer).

    Example: virtlife viewer web1
    """
    program = shutil.which("remote-viewer")
    if program is None:
        fail("remote-viewer is not installed: install it with `apt-get install "
             "virt-viewer` (Debian, Ubuntu) or `dnf install virt-viewer` (Fedora), or "
             f"use `virtlife vnc {vm}` with another VNC client")
        return
    text = app.services.consoles.viewer_file(vm)
    fd, name = tempfile.mkstemp(prefix=f"virtlife-{os.getpid()}-", suffix=".vv")
    with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp: mode 0600
        f.write(text)
    proc = subprocess.Popen([program, name], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        code = proc.wait(VIEWER_CHECK_S)
    except subprocess.TimeoutExpired:
        click.echo(f"{vm}: remote-viewer started (pid {proc.pid})")
        return
    Path(name).unlink(missing_ok=True)  # it deletes the file itself once it read it
    if code != 0:
        fail(f"remote-viewer ended at once with exit code {code} (its message is above; "
             "is there a display? DISPLAY or WAYLAND_DISPLAY must be set)")


# -- the serial console ---------------------------------------------------------------

class _Terminal:
    """This process's stdin as raw keystrokes (a TTY) or as a byte stream (a pipe)."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self.tty = os.isatty(self.fd)
        self._saved: list[Any] | None = None

    def __enter__(self) -> _Terminal:
        if self.tty:
            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout_s: float) -> bytes | None:
        """Up to 4 KiB of input; b"" at its end; None when nothing came in time."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return None
        return os.read(self.fd, 4096)


def _copy_output(session: SerialSession, stop: threading.Event) -> None:
    """Print the console's output until the session ends or ``stop`` is set. Where
    stdout is no terminal, the guest's terminal queries (``ESC[6n``) are removed: no
    terminal answers them, and they would show raw in the file or pipe."""
    from virtlife.services.termquery import QueryStripper

    out = sys.stdout.buffer
    strip = None if sys.stdout.isatty() else QueryStripper()
    try:
        while not stop.is_set():
            data = session.read(STDIN_POLL_S)
            if data is None:
                continue
            if not data:
                return
            out.write(data if strip is None else strip.feed(data))
            out.flush()
    finally:
        if strip is not None and (held := strip.flush()):
            out.write(held)
            out.flush()


def attach(session: SerialSession, drain_s: float) -> bool:
    """Join this terminal to ``session`` until Ctrl-], the end of stdin (then
    ``drain_s`` of output), or the end of the session; True if the session ended."""
    stop = threading.Event()
    printer = threading.Thread(target=_copy_output, args=(session, stop),
                               name="console-output", daemon=True)
    printer.start()
    with _Terminal() as terminal:
        nl = "\r\n" if terminal.tty else "\n"
        click.echo(f"virtlife: connected to the serial console of {session.vm} "
                   f"(Ctrl-] leaves){nl}", err=True, nl=False)
        while printer.is_alive():
            data = terminal.read(STDIN_POLL_S)
            if data is None:
                continue
            cut = data.find(ESCAPE)
            if cut >= 0 or not data:
                if data[:cut]:
                    session.write(data[:cut])
                if not data:  # end of stdin: let the answer come out
                    printer.join(drain_s)
                break
            session.write(data)
        ended = not printer.is_alive() and session.ended
        stop.set()
        session.close()
        printer.join(2 * STDIN_POLL_S)
        if ended:
            click.echo(f"{nl}virtlife: the serial console of {session.vm} ended: "
                       f"{session.end_reason()}", err=True)
        else:
            click.echo(f"{nl}virtlife: left the serial console of {session.vm}", err=True)
    return ended


@click.command()
@VM
@click.option("--force", is_flag=True,
              help="Take the console over from another client holding it (it is "
                   "disconnected).")
@click.option("--drain", "drain_s", type=SECONDS, default=2.0, show_default=True,
              help="When stdin is not a terminal: seconds to keep printing the console's "
                   "output after stdin ended.")
@pass_app
def console(app: App, vm: str, force: bool, drain_s: float) -> None:
    """Attach this terminal to a running VM's serial console (Ctrl-] leaves).

    It goes through libvirt, so it works with remote hosts too, and it survives a
    reboot of the guest. Without a terminal, stdin is sent to the console and its
    output printed until stdin ends (plus --drain seconds).

    \b
    Example: virtlife console web1
    Scripted: printf 'uname -a\\n' | virtlife console web1
    """
    session = app.services.consoles.serial(vm, force=force)
    with session:
        ended = attach(session, drain_s)
    if ended and not session.vm_stopped:
        sys.exit(1)  # the VM runs on: the session was taken over or lost, not finished


COMMANDS = [graphics, vnc, viewer_file, viewer, console]
