"""Thin wrappers for a VM's consoles: its serial console as a libvirt stream, and a
socket to its VNC server handed over by libvirt.

``open_console`` opens the domain's serial console through ``virDomainOpenConsole``
on a non-blocking ``virStream`` (so it works over a remote connection too, and a
reader can always be woken up); ``ConsoleStream`` gives it a blocking ``recv`` with
an optional deadline, ``send`` and an idempotent ``close`` that any thread may call.
The stream's libvirt callback only sets an event: reading happens on the caller's
thread. ``open_graphics_socket`` asks libvirt for a socket already connected to a
graphics server (``virDomainOpenGraphicsFD``, local connections only). Whether a
console may be opened, and which address a client should use, is decided in
``services.consoles``; this module holds no policy.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from virtlife import errors
from virtlife.hypervisor.libvirt_api import LibvirtError, calling, libvirt, translate
from virtlife.lazylog import get_logger

if TYPE_CHECKING:
    import socket

log = get_logger(__name__)  # logging imported only when needed

# A non-blocking recv that found nothing is tried again at least this often, even when
# libvirt's readable event never comes (a missed wake-up costs this much latency).
POLL_S = 0.5
# How long ``send`` keeps trying while libvirt's stream buffer is full.
SEND_TIMEOUT_S = 10.0
_WOULD_BLOCK = -2
_EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
           | libvirt.VIR_STREAM_EVENT_HANGUP)
# libvirt 9.0 refuses a second console session without FORCE this way (qemu driver).
_HELD_CODE = libvirt.VIR_ERR_OPERATION_FAILED
_HELD_TEXT = "active console session exists"


class ConsoleStream:
    """A serial console session of one domain: bytes in and out of its pty.

    ``recv`` blocks (up to its ``timeout_s``) and returns ``b""`` once the session has
    ended: the VM stopped, another client took the console over, or ``close`` was
    called (from any thread: it wakes a blocked reader up).
    """

    def __init__(self, stream: Any, what: str) -> None:
        self._stream = stream
        self._what = what  # "the serial console of web1 on local"
        self._lock = threading.Lock()  # one libvirt stream call at a time
        self._ready = threading.Event()  # set by libvirt's event thread: try recv again
        self._closed = False
        self.end_reason: str | None = None  # why it ended, once it did
        try:
            stream.eventAddCallback(_EVENTS, self._on_event, None)
            self._watching = True
        except LibvirtError as err:  # recv then polls every POLL_S
            log.debug("no stream events for %s: %s", what, err)
            self._watching = False

    def __repr__(self) -> str:
        return f"ConsoleStream({self._what})"

    def _on_event(self, _stream: Any, _events: int, _opaque: object) -> None:
        # libvirt's event thread: never block, never raise
        self._ready.set()

    @property
    def ended(self) -> bool:
        return self.end_reason is not None

    def _end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            log.debug("%s ended: %s", self._what, reason)

    def recv(self, max_bytes: int = 4096, timeout_s: float | None = None) -> bytes | None:
        """The next bytes from the console (at most ``max_bytes``), waiting for them;
        ``b""`` once the session has ended; None when ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._closed or self.ended:
                    return b""
                self._ready.clear()  # before recv: an event after it is not lost
                try:
                    data = self._stream.recv(max_bytes)
                except LibvirtError as err:
                    self._end(f"libvirt ended the stream: {err.get_error_message() or err}")
                    return b""
            if isinstance(data, bytes) and data:
                return data
            if data != _WOULD_BLOCK:  # 0 bytes: the other end closed the stream
                self._end("the console's other end closed it")
                return b""
            wait = POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            self._ready.wait(wait)

    def send(self, data: bytes) -> None:
        """Write ``data`` to the console; ``OperationFailed`` once the session ended."""
        view = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while view:
            with self._lock:
                if self._closed or self.ended:
                    raise errors.OperationFailed(
                        f"cannot write to {self._what}: the session has ended"
                        + (f" ({self.end_reason})" if self.end_reason else ""))
                try:
                    sent = self._stream.send(bytes(view))
                except LibvirtError as err:
                    self._end(f"libvirt ended the stream: {err.get_error_message() or err}")
                    raise translate(err, f"write to {self._what}") from err
            if sent == _WOULD_BLOCK or sent == 0:
                if time.monotonic() > deadline:
                    raise errors.OperationTimeout(
                        f"cannot write to {self._what}: it took nothing for "
                        f"{SEND_TIMEOUT_S:g} s")
                time.sleep(0.01)
                continue
            view = view[sent:]

    def close(self) -> None:
        """End the session (idempotent; any thread): a blocked ``recv`` returns b""."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._end("closed")
            stream, self._stream = self._stream, None
        self._ready.set()
        if self._watching:
            try:
                stream.eventRemoveCallback()
            except LibvirtError:  # already gone with the connection
                pass
        try:
            stream.abort()
        except LibvirtError as err:  # an ended stream: nothing to abort
            log.debug("aborting %s: %s", self._what, err)

    def __enter__(self) -> ConsoleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_console(conn: Any, dom: Any, what: str, *, force: bool = False) -> ConsoleStream:
    """Attach a new stream to the domain's first console (``what`` names it in errors).

    ``OperationBusy`` when another client holds the console and ``force`` is False;
    with ``force`` that client is disconnected and this one takes it over."""
    flags = libvirt.VIR_DOMAIN_CONSOLE_SAFE | (libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
    with calling(f"open a stream for {what}"):
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    try:
        dom.openConsole(None, stream, flags)
    except LibvirtError as err:
        try:
            stream.abort()
        except LibvirtError:
            pass
        text = (err.get_error_message() or "").lower()
        if err.get_error_code() == _HELD_CODE and _HELD_TEXT in text:
            raise errors.OperationBusy(
                f"cannot open {what}: it is held by another client (another virtlife "
                "console, virsh console or a web console); use --force to take it over"
            ) from err
        raise translate(err, f"open {what}") from err
    return ConsoleStream(stream, what)


def open_graphics_socket(dom: Any, index: int, what: str) -> socket.socket:
    """A socket connected to the domain's graphics server number ``index``, with its
    authentication skipped (libvirt hands QEMU the other end; local connections only)."""
    with calling(f"open {what}"):
        fd = dom.openGraphicsFD(index, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
    import socket  # only here: the CLI's list and state need no socket module

    return socket.socket(fileno=int(fd))
