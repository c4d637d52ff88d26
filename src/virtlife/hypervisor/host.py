"""``Host``: one libvirt host, the stable object that callers hold.

A ``Host`` is a name and a URI over three parts, one module per job:

- ``connection.Connector``: the replaceable connection (open with a deadline under
  one lock, keepalive, fail fast after a failure, notice a loss, close), and the one
  place where a failed or lost connection becomes ``HostUnreachable``;
- ``dispatch.Dispatcher``: the domain event callbacks and the delivery of events to
  listeners and taps;
- ``domains``: the calls about domains and the host (look up, list, define, restore,
  info), the one place where "no such domain" becomes ``VMNotFound``.

This module only wires them together and keeps ``Host``'s interface; it starts no
thread and calls libvirt only through them. It holds no policy: which operation is
allowed is decided in ``services``, and so is whether a URI may be opened at all
(``refused``: the Host then never opens it). The parts start no thread per host:
libvirt's one event loop plus bounded pools shared by every host (issue 17), as
``connection`` and ``dispatch`` tell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from virtlife import errors
from virtlife.hypervisor import domains
from virtlife.hypervisor.connection import (
    CLOSE_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_RETRY_AFTER_S,
    KEEPALIVE,
    Connector,
    is_remote,
)
from virtlife.hypervisor.dispatch import Dispatcher
from virtlife.hypervisor.domains import HostInfo
from virtlife.hypervisor.events import Listener
from virtlife.hypervisor.guest import Guest

# Kept importable from here: services import them from this module.
__all__ = ["CLOSE_TIMEOUT_S", "DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_RETRY_AFTER_S",
           "KEEPALIVE", "Host", "HostInfo", "is_remote"]


class Host:
    """One libvirt host: a stable name and URI owning a replaceable connection.

    The connection is opened on first use (or by ``connect``) and reopened after it
    was lost; ``close()`` closes it and ends the Host for good. ``Host.open`` creates
    a Host and connects it at once. ``refused``: why the caller's policy forbids this
    URI; every connect then fails with it as ``HostUnreachable``, and libvirt never
    sees the URI. ``events`` False: no domain event callbacks are ever registered.
    """

    def __init__(self, name: str, uri: str, *, events: bool = True,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S,
                 refused: str | None = None) -> None:
        self.name = name
        self.uri = uri
        self._events = Dispatcher(name, enabled=events)
        self._connector = Connector(name, uri, self._events,
                                    connect_timeout_s=connect_timeout_s,
                                    retry_after_s=retry_after_s, refused=refused)

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.uri})"

    @property
    def refused(self) -> str | None:
        return self._connector.refused

    @property
    def connect_timeout_s(self) -> float:
        return self._connector.connect_timeout_s

    @property
    def retry_after_s(self) -> float:
        return self._connector.retry_after_s

    # -- connection (connection.Connector) -----------------------------------------

    @classmethod
    def open(cls, name: str, uri: str, *, events: bool = True,
             connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
             retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> Host:
        """A Host connected to ``uri``; ``HostUnreachable`` with the reason if it cannot be."""
        host = cls(name, uri, events=events, connect_timeout_s=connect_timeout_s,
                   retry_after_s=retry_after_s)
        host.connect()
        return host

    def connect(self, *, in_this_thread: bool = False) -> None:
        """Make sure a working connection is open: reuse it, or open one with the deadline.

        Raises ``HostUnreachable`` when the host refused, did not answer within
        ``connect_timeout_s``, or failed within the last ``retry_after_s`` seconds.

        ``in_this_thread``: open it on the calling thread instead of a connect thread.
        Only for a thread whose own caller enforces a deadline (``services.hostcalls``):
        this call then blocks as long as libvirt does (a stopped daemon: until its TCP
        connection fails), and a connection that comes after ``connect_timeout_s`` is
        closed and not used, as one that a waiter gave up on. Others who need the host
        meanwhile join that connect with their deadline, as always. Ignored on the main
        thread, which must stay interruptible (Ctrl-C).
        """
        self._connector.get(in_this_thread=in_this_thread)

    @property
    def conn(self) -> Any:
        """The raw connection (reconnected if it was lost), for ``hypervisor`` modules only."""
        return self._connector.get().conn

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: the Host never connects again."""
        return self._connector.closed

    def alive(self) -> bool:
        """True while the current connection works (this never reconnects)."""
        return self._connector.alive()

    def close(self, *, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the libvirt connection, remove its callbacks and stop the listeners.

        A connect still in flight is closed when it returns. Waits up to ``timeout_s``
        for libvirt to close the connection (it then finishes in the background).
        """
        finish = self.begin_close()
        if finish is not None:
            self._connector.close_in_background(finish)
        self.wait_closed(timeout_s)

    def begin_close(self) -> Callable[[], None] | None:
        """``close()`` but for the connection's own close, which it returns (None when
        no connection is open) for the caller to run on a thread of its choice: it may
        block as long as the peer does. The Host is closed at once, for good, and
        ``wait_closed`` waits for that returned close."""
        finish = self._connector.begin_close()
        self._events.close()
        return finish

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the connection closed by ``close()`` is released; False on timeout."""
        return self._connector.wait_closed(timeout_s)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connecting_until(self) -> float | None:
        """The deadline (``time.monotonic``) of the connect in flight, while it is not
        given up; None when no connect is in flight."""
        return self._connector.connecting_until()

    def give_up_overdue_connect(self) -> str | None:
        """Give up the connect in flight when its deadline has passed, as a waiter would
        (the failure is remembered, and the connection is closed when it comes), for
        whoever waits for a thread that connects itself (``connect(in_this_thread=True)``).
        The failure's reason; None when no connect is overdue."""
        return self._connector.give_up_overdue_connect()

    # -- host and domains (domains) --------------------------------------------------

    def info(self) -> HostInfo:
        return domains.info(self)

    def lookup(self, vm: str) -> Guest:
        """The domain named ``vm``; ``VMNotFound`` if there is none."""
        return domains.lookup(self, vm)

    def find(self, vm: str) -> Guest | None:
        try:
            return self.lookup(vm)
        except errors.VMNotFound:
            return None

    def find_uuid(self, uuid: str) -> Guest | None:
        """The domain whose UUID is ``uuid``, or None when this host has none."""
        return domains.find_uuid(self, uuid)

    def guests(self) -> list[Guest]:
        return domains.guests(self)

    def define(self, xml: str) -> Guest:
        return domains.define(self, xml)

    def restore(self, path: str, *, paused: bool = False) -> None:
        domains.restore(self, path, paused=paused)

    def saved_image_xml(self, path: str) -> str:
        """The domain XML stored inside a save file (tells which VM it holds)."""
        return domains.saved_image_xml(self, path)

    # -- events (dispatch.Dispatcher) ------------------------------------------------

    def add_listener(self, listener: Listener, *, with_state: bool = False) -> None:
        """Deliver this host's events to ``listener``, in order, one at a time (on the
        shared delivery pool: see ``dispatch``).

        Besides domain events, the Host tells its listeners about its connection:
        ``EventKind.HOST`` events ``connected``, ``disconnected`` and ``unreachable``
        (each failed connect). ``with_state`` first delivers the state at the moment
        of subscription: ``connected`` or ``unreachable`` (nothing while unknown). A
        listener keeps receiving across reconnects; an exception it raises is logged.
        """
        connector = self._connector
        subscriber = self._events.subscriber(listener)
        with connector.lock:  # no connection change between the state and the subscription
            if with_state and (state := connector.state_event()) is not None:
                subscriber.offer(state)
            if connector.closed:
                subscriber.stop()
                return
            if not self._events.subscribe(subscriber):
                return
            current = connector.current
        if current is not None:
            self._events.attach(current)

    def remove_listener(self, listener: Listener) -> None:
        """Stop delivering to ``listener`` (events still queued for it are dropped)."""
        self._events.remove_listener(listener)

    def add_tap(self, tap: Listener) -> None:
        """Hand every event to ``tap`` at once, on the thread that publishes it (libvirt's
        event thread for domain events), in order, across reconnects.

        A tap is a queue's ``put``, not a listener: it must only store the event and wake
        its reader, never block nor call libvirt (an exception it raises is logged). It
        costs no thread: ``services.wait`` routes a host's events to the VMs being waited
        for through one tap per Host.
        """
        self._events.add_tap(tap)
        current = self._connector.current
        if current is not None:
            self._events.attach(current)

    def remove_tap(self, tap: Listener) -> None:
        self._events.remove_tap(tap)
