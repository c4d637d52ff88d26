"""Consoles: where a VM's VNC server is, a remote-viewer file for it, its settings, a
socket to it, and sessions on its serial console.

``Consoles`` is what the CLI (``virtlife vnc``, ``viewer-file``, ``viewer``,
``graphics``, ``console``) and the REST API's browser consoles share. Reads take the
running VM's live XML; ``set_graphics`` changes the persistent definition inside
``Operations.run`` (journalled, one operation per VM at a time) and says when the
change applies. Which address a client should use is decided here (``client_address``,
a pure function): QEMU's VNC server listens on the VM's host, so a loopback listen is
reachable from this machine only when the host is this machine. A new listen address
is checked on the VM's host before anything is written (``services.vnclisten``: one
this machine lacks is refused, a remote host's only warned about). ``serial`` opens a
``SerialSession`` that a terminal or a WebSocket bridge reads and writes from its own
threads. A VNC password goes into the definition and the ``.vv`` file, never into the
journal, a log line or a result. Nothing here prints or imports libvirt.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Unpack
from urllib.parse import urlparse

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor.console import ConsoleStream
from virtlife.hypervisor.host import is_remote
from virtlife.services.base import Call, OperationService
from virtlife.services.operations import OperationResult
from virtlife.services.vnclisten import check_listen_on
from virtlife.states import Operation, StateInfo
from virtlife.xml.graphics import (
    KEEP,
    Graphics,
    Keep,
    check_listen,
    check_vnc_password,
    has_console,
    vnc,
    with_vnc,
)

log = logging.getLogger(__name__)

# How long a TCP connect to a remote host's VNC server may take.
VNC_CONNECT_TIMEOUT_S = 10.0
# How long an ended console session waits for libvirt to report the VM stopped before
# it concludes that the VM runs on (the session was taken over or lost).
STOP_SETTLE_S = 3.0
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def _is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "" (no address: QEMU's default, 127.0.0.1)."""
    if not address:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def host_address(host: Host) -> str | None:
    """The address of ``host`` as its URI names it; None when it is this machine (a
    local URI, or one naming localhost or a loopback address)."""
    name = urlparse(host.uri).hostname if is_remote(host.uri) else None
    return None if name is None or _is_loopback(name) else name


def fd_passing(host: Host) -> bool:
    """True when libvirt can hand this client file descriptors: a UNIX-socket
    connection (``qemu:///system``, ``qemu+unix://``), not ssh or TCP."""
    return not is_remote(host.uri) or urlparse(host.uri).scheme.endswith("+unix")


def client_address(listen: str, remote_host: str | None, *, vm: str = "the VM",
                   host: str = "its host") -> str:
    """The address a client on this machine connects to for a VNC server listening on
    ``listen`` on a host that is this machine (``remote_host`` None) or the remote host
    at ``remote_host``. ``Unsupported`` when it listens on the remote host's loopback."""
    if remote_host is None:
        if listen in _WILDCARDS or _is_loopback(listen):
            return "::1" if listen == "::1" else "127.0.0.1"
        return listen
    if listen in _WILDCARDS:
        return remote_host
    if _is_loopback(listen):
        raise errors.Unsupported(
            f"the VNC server of {vm} listens on {listen or '127.0.0.1'}, the loopback of "
            f"remote host {host}: it cannot be reached from here; make it listen on an "
            f"address of the host (`virtlife graphics {vm} --listen 0.0.0.0`, then shut "
            "the VM down and start it), or tunnel the port over ssh")
    return listen


@dataclass(frozen=True)
class VncInfo:
    """Where a running VM's VNC server is. ``listen`` is the address it listens on (on
    ``host``); ``address`` is where a client on this machine connects (None when it
    cannot: a remote host's loopback, ``unreachable`` says why)."""

    host: str
    vm: str
    listen: str
    port: int
    password: bool
    address: str | None
    unreachable: str = ""

    @property
    def display(self) -> int:
        return self.port - 5900

    def __str__(self) -> str:
        where = f"{self.address}:{self.port}" if self.address else \
            f"{self.listen}:{self.port} on host {self.host}"
        text = f"{self.vm}: VNC at {where} (display :{self.display})"
        if self.password:
            text += ", password set"
        return text + (f"; {self.unreachable}" if self.unreachable else "")

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "vm": self.vm, "listen": self.listen,
                "port": self.port, "display": self.display, "password": self.password,
                "address": self.address}


@dataclass(frozen=True)
class GraphicsSettings:
    """The VNC settings of a VM's definition (what ``set_graphics`` changes)."""

    host: str
    vm: str
    vnc: bool
    listen: str
    port: int | None  # None: chosen at each start (autoport)
    password: bool

    def __str__(self) -> str:
        if not self.vnc:
            return f"{self.vm}: no VNC graphics in its definition"
        port = "chosen at start" if self.port is None else str(self.port)
        return (f"{self.vm}: VNC on {self.listen or '127.0.0.1'}, port {port}, "
                f"{'a password' if self.password else 'no password'}")

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "vm": self.vm, "vnc": self.vnc, "listen": self.listen,
                "port": self.port, "password": self.password}


def escape_ini(value: str) -> str:
    """``value`` as a GLib key-file value (remote-viewer reads .vv files with GKeyFile)."""
    text = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    text = text.replace("\t", "\\t")
    return "\\s" + text[1:] if text.startswith(" ") else text


def viewer_text(*, host: str, port: int, title: str, password: str | None) -> str:
    """A remote-viewer connection file (``[virt-viewer]``, type vnc) that deletes itself
    once remote-viewer has read it."""
    lines = ["[virt-viewer]", "type=vnc", f"host={escape_ini(host)}", f"port={port}"]
    if password:
        lines.append(f"password={escape_ini(password)}")
    lines += [f"title={escape_ini(title)}", "delete-this-file=1"]
    return "\n".join(lines) + "\n"


class SerialSession:
    """One session on a VM's serial console, for a terminal or a WebSocket bridge.

    ``read`` and ``write`` may be called from different threads; ``close`` from any
    thread ends the session and wakes a blocked ``read``. ``read`` returns b"" once
    the session has ended (``end_reason`` then says why, in words for the user)."""

    def __init__(self, guest: Guest, stream: ConsoleStream) -> None:
        self.guest = guest
        self.vm = guest.name
        self.host = guest.host.name
        self._stream = stream
        self._write_lock = threading.Lock()
        self._reason: str | None = None
        self.vm_stopped = False  # set by end_reason: the session ended with the VM

    def read(self, timeout_s: float | None = None, max_bytes: int = 4096) -> bytes | None:
        """The console's next output; b"" once ended; None if ``timeout_s`` passed."""
        return self._stream.recv(max_bytes, timeout_s)

    def write(self, data: bytes) -> None:
        """Send ``data`` (keystrokes) to the console."""
        with self._write_lock:
            self._stream.send(data)

    @property
    def ended(self) -> bool:
        return self._stream.ended

    def end_reason(self) -> str:
        """Why the session ended, for the user (reads the VM's state once)."""
        if self._reason is not None:
            return self._reason
        raw = self._stream.end_reason or "it is still open"
        if raw == "closed":
            reason = "closed"
        else:
            try:
                state = self._settled_state()
            except errors.VirtlifeError as err:
                reason = f"the console stream ended ({raw}); the VM's state is unknown: {err}"
            else:
                if state.state.is_active:
                    reason = (f"libvirt ended the console while {self.vm} is {state}: "
                              "another client may have taken it over with --force")
                else:
                    reason, self.vm_stopped = f"{self.vm} is {state}", True
        self._reason = reason
        return reason

    def _settled_state(self) -> StateInfo:
        """The VM's state once a stop that ended the stream shows in libvirt: QEMU's pty
        closes a moment before libvirt reports the domain shut off."""
        deadline = time.monotonic() + STOP_SETTLE_S
        state = self.guest.status()
        while state.state.is_active and time.monotonic() < deadline:
            time.sleep(0.1)
            state = self.guest.status()
        return state

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> SerialSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consoles(OperationService):
    """The VNC and serial consoles of the VMs of a ``Fleet``; ``set_graphics`` runs
    through ``ops``."""

    # -- VNC ----------------------------------------------------------------------

    def _live_vnc(self, guest: Guest, what: str) -> Graphics:
        """The running VM's VNC graphics (read with its password, if any)."""
        state = guest.status()
        if not state.state.is_active:
            raise errors.InvalidTransition(
                f"cannot {what} {guest.name}: it is {state.state.label}, not running; start "
                "it first (its VNC server exists while it runs)")
        found = vnc(guest.xml(secure=True))
        if found is None:
            raise errors.NotFound(
                f"cannot {what} {guest.name}: it has no VNC graphics; add them with "
                f"`virtlife graphics {guest.name} --listen 127.0.0.1`, then shut it down "
                "and start it")
        if found.port is None:
            where = f"the UNIX socket {found.socket}" if found.socket else "no TCP port"
            raise errors.Unsupported(
                f"cannot {what} {guest.name}: its VNC server listens on {where}; give it "
                f"an address with `virtlife graphics {guest.name} --listen 127.0.0.1`")
        return found

    def vnc(self, ref: str) -> VncInfo:
        """Where the running VM ``ref``'s VNC server listens, and where to connect."""
        guest = self.fleet.resolve(ref)
        found = self._live_vnc(guest, "show the VNC server of")
        assert found.port is not None
        try:
            address: str | None = client_address(
                found.listen, host_address(guest.host), vm=guest.name, host=guest.host.name)
            unreachable = ""
        except errors.Unsupported as err:
            address, unreachable = None, str(err)
        return VncInfo(guest.host.name, guest.name, found.listen or "127.0.0.1", found.port,
                       found.password is not None, address, unreachable)

    def viewer_file(self, ref: str, *, with_password: bool = True) -> str:
        """A remote-viewer ``.vv`` file for the running VM ``ref``. It holds the VNC
        password, if one is set, unless ``with_password`` is False (for a caller who
        may not know it: remote-viewer then asks for it); write it where only its
        user can read it."""
        guest = self.fleet.resolve(ref)
        found = self._live_vnc(guest, "write a viewer file for")
        assert found.port is not None
        address = client_address(found.listen, host_address(guest.host), vm=guest.name,
                                 host=guest.host.name)
        return viewer_text(host=address, port=found.port, title=guest.name,
                           password=found.password if with_password else None)

    def vnc_socket(self, ref: str, *, timeout_s: float = VNC_CONNECT_TIMEOUT_S
                   ) -> socket.socket:
        """A socket connected to the running VM ``ref``'s VNC server (the RFB protocol
        starts on it): handed over by libvirt on this machine (no VNC password asked),
        else a TCP connection to the remote host (the VNC password, if any, is asked)."""
        guest = self.fleet.resolve(ref)
        found = self._live_vnc(guest, "connect to the VNC server of")
        assert found.port is not None
        if fd_passing(guest.host):
            return guest.open_graphics_socket(found.index)
        address = client_address(found.listen, host_address(guest.host), vm=guest.name,
                                 host=guest.host.name)
        try:
            return socket.create_connection((address, found.port), timeout=timeout_s)
        except OSError as err:
            raise errors.HostUnreachable(
                f"cannot connect to the VNC server of {guest.name} at {address}:"
                f"{found.port}: {err.strerror or err}") from err

    def graphics(self, ref: str) -> GraphicsSettings:
        """The VNC settings of VM ``ref``'s definition (its live ones while it runs)."""
        guest = self.fleet.resolve(ref)
        persistent = guest.is_persistent()
        found = vnc(guest.xml(inactive=persistent, secure=True))
        if found is None:
            return GraphicsSettings(guest.host.name, guest.name, False, "", None, False)
        return GraphicsSettings(guest.host.name, guest.name, True, found.listen,
                                None if found.autoport else found.port,
                                found.password is not None)

    def set_graphics(self, ref: str, *, listen: str | Keep = KEEP,
                     password: str | Keep | None = KEEP, timeout_s: float | None = None,
                     **call: Unpack[Call]) -> OperationResult:
        """Change the VNC listen address and/or password (None: remove it) in VM
        ``ref``'s definition; a VM without VNC graphics gets them. A running VM keeps
        its current VNC server until it is shut down and started again. A listen
        address the VM's host lacks is refused (``InvalidInput``) when the host is this
        machine; a remote host's is taken with a warning in the result (not checked)."""
        if isinstance(listen, Keep) and isinstance(password, Keep):
            raise errors.InvalidInput("nothing to change: give a listen address or a "
                                      "password (or none, to remove it)")
        if not isinstance(listen, Keep):
            listen = check_listen(listen)
        if isinstance(password, str):
            check_vnc_password(password)
        guest = self._resolve(Operation.GRAPHICS, ref)
        unchecked = "" if isinstance(listen, Keep) else check_listen_on(
            guest.host.uri, listen, vm=guest.name, host=guest.host.name)
        with self._operation(Operation.GRAPHICS, guest, timeout_s, call) as run:
            if unchecked:
                run.warnings.append(unchecked)
            xml = self._definition(guest, "change the graphics")
            before = vnc(xml)
            guest.host.define(with_vnc(xml, listen=listen, password=password))
            changes = []
            if before is None:
                changes.append("VNC graphics added")
            if not isinstance(listen, Keep):
                changes.append(f"VNC listens on {listen}")
            if password is None:
                changes.append("no VNC password")
            elif not isinstance(password, Keep):
                changes.append("VNC password set")  # never the password itself
            active = run.current.state.is_active
            run.note = ", ".join(changes) + ("; it applies at the next boot (shut the VM "
                                             "down and start it: a reboot keeps the "
                                             "running QEMU and its VNC server)"
                                             if active else "; it applies when the VM starts")
        assert run.result is not None
        return run.result

    # -- serial console --------------------------------------------------------------

    def serial(self, ref: str, *, force: bool = False) -> SerialSession:
        """A session on the running VM ``ref``'s serial console. ``OperationBusy`` while
        another client holds the console, unless ``force`` takes it over (that client's
        session ends)."""
        guest = self.fleet.resolve(ref)
        state = guest.status()
        if not state.state.is_active:
            raise errors.InvalidTransition(
                f"cannot open the serial console of {guest.name}: it is "
                f"{state.state.label}, not running; start it first")
        if not has_console(guest.xml()):
            raise errors.NotFound(
                f"{guest.name} has no serial console (no <serial> or <console> device in "
                "its definition)")
        session = SerialSession(guest, guest.open_console(force=force))
        log.info("opened the serial console of %s on %s%s", guest.name, guest.host.name,
                 " (taken over)" if force else "")
        return session
