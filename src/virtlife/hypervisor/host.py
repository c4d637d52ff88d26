"""``Host``: one libvirt host, its replaceable connection, its lookups and its events.

A ``Host`` is the stable object for one host (name, URI). It owns at most one libvirt
connection at a time and manages it like Nova's ``libvirt/host.py``: the check and
the reconnect happen under one per-host lock, so concurrent first uses open one
connection; every connect runs in a daemon thread and is awaited with a deadline (a
connect given up, or one that returns after its deadline, is closed when it finally
returns, and never used), except on a thread that enforces a deadline of its own (the
fleet's one caller thread per host, which connects there itself: no thread per
connect, and no more threads for a dead host than that caller); a recent failure
is remembered for a few seconds, so that a dead host fails fast instead of being
re-dialled; a connection closed by the peer is closed on our side too, with its
callbacks removed, and replaced on next use. libvirt's callbacks only put events on
per-listener queues; each listener's own thread delivers them, so a slow or failing
listener never delays another one nor libvirt's event loop (keepalives). The domain
event callbacks are registered on a connection only once someone listens (a listener
or a tap): a connection opened only to read, like a fleet listing's, saves their
round trips on open and on close.

The Host is the one place where "no such domain" becomes ``VMNotFound`` and where a
failed or lost connection becomes ``HostUnreachable`` (with the first line of libvirt's
message: the lines after it can quote the file a URI named; they are logged at DEBUG).
It holds no policy: which operation is allowed is decided in ``services``, and so is
whether a URI may be opened at all (``refused``: the Host then never opens it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlparse

from virtlife import errors
from virtlife.hypervisor.events import (
    AGENT_REASONS,
    AGENT_STATES,
    CLOSE_REASONS,
    DOMAIN_EVENT_IDS,
    DomainEvent,
    EventKind,
    Listener,
    lifecycle_names,
)
from virtlife.hypervisor.guest import Guest
from virtlife.hypervisor.libvirt_api import calling, ensure_event_loop, libvirt, translate
from virtlife.lazylog import get_logger

logger = get_logger(__name__)  # logging imported only when needed

DEFAULT_CONNECT_TIMEOUT_S = 10.0  # how long a connect may take before the host is unreachable
DEFAULT_RETRY_AFTER_S = 3.0  # how long a failed connect is remembered (calls fail fast)
CLOSE_TIMEOUT_S = 5.0  # how long close() waits for libvirt to close a connection
LISTENER_QUEUE_SIZE = 1000  # events held for one slow listener before new ones are dropped
KEEPALIVE = (5, 3)  # remote connections: a probe every 5 s, dead after 3 unanswered


@dataclass(frozen=True)
class HostInfo:
    name: str
    uri: str
    hostname: str
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    cpus: int
    memory_mib: int


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def is_remote(uri: str) -> bool:
    """True for URIs that go over a network transport (keepalive matters there)."""
    parsed = urlparse(uri)
    return "+" in parsed.scheme or bool(parsed.hostname)


def _is_alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


class _Connection:
    """One libvirt connection of a ``Host`` and what was registered on it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.callback_ids: list[int] = []
        self.close_callback = False  # registered on this connection
        self.lost: str | None = None  # why it stopped working, once it did
        self.retired = False  # no longer the Host's connection: its events are ignored
        self.released = threading.Event()  # set once closed on our side
        self.events_lock = threading.Lock()  # held while the event callbacks register
        self.events_on = False  # the domain event callbacks are registered
        self._lock = threading.Lock()
        self._announced = False
        self._disposing = False

    def first_to_announce(self) -> bool:
        with self._lock:
            first, self._announced = not self._announced, True
            return first

    def claim_disposal(self) -> bool:
        with self._lock:
            first, self._disposing = not self._disposing, True
            return first


class _Attempt:
    """One connect in flight: every caller that needs the host waits for this one."""

    def __init__(self, timeout_s: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.done = threading.Event()
        self.abandoned = False  # its waiters gave up: close the connection if it comes
        self.connection: _Connection | None = None
        self.error: Exception | None = None


@dataclass(frozen=True)
class _Failure:
    """The last failed connect, remembered until ``retry_at`` (monotonic seconds)."""

    reason: str
    at: datetime
    retry_at: float
    retry_at_wall: datetime

    def fail_fast(self, *, pending: bool) -> str:
        when = f"failed at {self.at:%H:%M:%S}"
        if pending:
            return f"{self.reason} ({when}; that connect has not returned yet, " \
                   f"and the host is tried again once it has)"
        return f"{self.reason} ({when}; not tried again before {self.retry_at_wall:%H:%M:%S})"


class _Subscriber:
    """One listener with its own bounded queue and delivery thread."""

    def __init__(self, host: str, listener: Listener, size: int) -> None:
        import queue  # only with a listener: list and state never start one

        self.host = host
        self.listener = listener
        self.stopped = False
        self._queue: queue.Queue[DomainEvent | None] = queue.Queue(size)
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"events-{host}-{_callable_name(listener)}")
        self._thread.start()

    def offer(self, event: DomainEvent) -> None:
        """Queue ``event`` without ever blocking (libvirt's event thread calls this)."""
        if self.stopped:
            return
        import queue  # loaded by __init__

        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                logger.warning(
                    "event listener %s on host %s is too slow: %d events wait for it; "
                    "dropping new ones until it catches up (first dropped: %s)",
                    _callable_name(self.listener), self.host, self._queue.maxsize, event)

    def stop(self) -> None:
        self.stopped = True
        import queue  # loaded by __init__

        try:
            self._queue.put_nowait(None)
        except queue.Full:  # the thread sees ``stopped`` after its current event
            pass

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None or self.stopped:
                return
            try:
                self.listener(event)
            except Exception:
                logger.exception("event listener %s on host %s failed on event %s",
                                 _callable_name(self.listener), self.host, event)
            if self._dropped and self._queue.empty():
                logger.warning("event listener %s on host %s caught up; %d events were "
                               "dropped", _callable_name(self.listener), self.host,
                               self._dropped)
                self._dropped = 0


def _callable_name(fn: Callable[..., object]) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


class Host:
    """One libvirt host: a stable name and URI owning a replaceable connection.

    The connection is opened on first use (or by ``connect``) and reopened after it
    was lost; ``close()`` closes it and ends the Host for good. ``Host.open`` creates
    a Host and connects it at once. ``refused``: why the caller's policy forbids this
    URI; every connect then fails with it as ``HostUnreachable``, and libvirt never
    sees the URI.
    """

    def __init__(self, name: str, uri: str, *, events: bool = True,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S,
                 refused: str | None = None) -> None:
        self.name = name
        self.uri = uri
        self.refused = refused
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        self._events = events
        # The one lock for the connection: the check and the reconnect happen under it.
        self._lock = threading.Lock()
        self._current: _Connection | None = None
        self._attempt: _Attempt | None = None  # in flight, possibly abandoned
        self._failure: _Failure | None = None
        self._closed = False
        self._last_release: _Connection | None = None
        self._subs_lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []
        self._taps: tuple[Listener, ...] = ()  # called on the publishing thread

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.uri})"

    # -- connection ------------------------------------------------------------

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
        self._connection(in_this_thread=in_this_thread)

    @property
    def conn(self) -> Any:
        """The raw connection (reconnected if it was lost), for ``hypervisor`` modules only."""
        return self._connection().conn

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: the Host never connects again."""
        return self._closed

    def alive(self) -> bool:
        """True while the current connection works (this never reconnects)."""
        current = self._current
        return (not self._closed and current is not None and current.lost is None
                and _is_alive(current.conn))

    def close(self, *, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close the libvirt connection, remove its callbacks and stop the listeners.

        A connect still in flight is closed when it returns. Waits up to ``timeout_s``
        for libvirt to close the connection (it then finishes in the background).
        """
        finish = self.begin_close()
        if finish is not None:
            threading.Thread(target=finish, daemon=True, name=f"close-{self.name}").start()
        self.wait_closed(timeout_s)

    def begin_close(self) -> Callable[[], None] | None:
        """``close()`` but for the connection's own close, which it returns (None when
        no connection is open) for the caller to run on a thread of its choice: it may
        block as long as the peer does. The Host is closed at once, for good, and
        ``wait_closed`` waits for that returned close."""
        with self._lock:
            self._closed = True
            current, self._current = self._current, None
            if current is not None:
                current.retired = True
            if self._attempt is not None:
                self._attempt.abandoned = True
        with self._subs_lock:
            subscribers, self._subscribers = self._subscribers, []
            self._taps = ()
        for sub in subscribers:
            sub.stop()
        if current is None:
            return None
        self._last_release = current
        return partial(self._dispose, current)

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the connection closed by ``close()`` is released; False on timeout."""
        last = self._last_release
        if last is None or last.released.wait(max(0.0, timeout_s)):
            return True
        logger.info("closing the connection to host %s takes more than %g s; it goes "
                    "on in the background", self.name, timeout_s)
        return False

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self, *, in_this_thread: bool = False) -> _Connection:
        stale: _Connection | None = None
        mine = False
        with self._lock:
            if self._closed:
                raise errors.HostUnreachable(f"the connection to host {self.name} is closed")
            current = self._current
            if current is not None:
                if current.lost is None and _is_alive(current.conn):
                    return current
                self._current, current.retired, stale = None, True, current
                if current.lost is None:
                    current.lost = "connection lost"
                self._announce(current)
            attempt, failure = self._attempt, self._failure
            if attempt is not None and attempt.abandoned and failure is not None:
                # at most one connect per host in flight: a hung one is not joined by more
                raise errors.HostUnreachable(failure.fail_fast(pending=True))
            if attempt is None:
                if failure is not None and time.monotonic() < failure.retry_at:
                    raise errors.HostUnreachable(failure.fail_fast(pending=False))
                attempt = self._attempt = _Attempt(self.connect_timeout_s)
                # never on the main thread: a blocked connect there would not see Ctrl-C
                mine = in_this_thread and (threading.current_thread()
                                           is not threading.main_thread())
                if not mine:
                    threading.Thread(target=self._run_attempt, args=(attempt,), daemon=True,
                                     name=f"connect-{self.name}").start()
        if stale is not None:  # found dead without a close callback: closed the same way
            self._release(stale)
        if mine:
            self._run_attempt(attempt)  # done once it returns: _await does not wait
        return self._await(attempt)

    def _await(self, attempt: _Attempt) -> _Connection:
        # Event.wait with a timeout: the main thread stays interruptible by Ctrl-C.
        attempt.done.wait(max(0.0, attempt.deadline - time.monotonic()))
        with self._lock:
            if attempt.done.is_set():
                if attempt.connection is not None and attempt.connection is self._current:
                    return attempt.connection
                error = attempt.error
            else:
                error = None
                self._give_up(attempt)
            failure = self._failure
        if error is not None and not isinstance(error, errors.VirtlifeError):
            raise error  # a bug in the connect path: never disguised as "unreachable"
        if error is not None:
            raise errors.HostUnreachable(str(error)) from error
        if self._closed:
            raise errors.HostUnreachable(f"the connection to host {self.name} is closed")
        if failure is not None and (attempt.abandoned or not attempt.done.is_set()):
            raise errors.HostUnreachable(failure.reason)  # given up at its deadline
        raise errors.HostUnreachable(f"the connection to host {self.name} was lost as it "
                                     f"opened; try again")

    def connecting_until(self) -> float | None:
        """The deadline (``time.monotonic``) of the connect in flight, while it is not
        given up; None when no connect is in flight."""
        attempt = self._attempt
        return None if attempt is None or attempt.abandoned else attempt.deadline

    def give_up_overdue_connect(self) -> str | None:
        """Give up the connect in flight when its deadline has passed, as a waiter would
        (the failure is remembered, and the connection is closed when it comes), for
        whoever waits for a thread that connects itself (``connect(in_this_thread=True)``).
        The failure's reason; None when no connect is overdue."""
        with self._lock:
            attempt = self._attempt
            if attempt is None or attempt.done.is_set() or time.monotonic() < attempt.deadline:
                return None
            self._give_up(attempt)
            return self._failure.reason if self._failure is not None else None

    def _give_up(self, attempt: _Attempt) -> None:
        """Give up ``attempt`` at its deadline, once (call with the lock held)."""
        if not attempt.abandoned:
            attempt.abandoned = True
            self._remember(f"host {self.name} ({self.uri}) did not answer within "
                           f"{self.connect_timeout_s:g} s")

    def _remember(self, reason: str) -> None:
        """Record a failed connect and tell the listeners (call with the lock held)."""
        now = datetime.now().astimezone()
        self._failure = _Failure(reason, now, time.monotonic() + self.retry_after_s,
                                 now + timedelta(seconds=self.retry_after_s))
        logger.info("%s; calls fail fast for %g s", reason, self.retry_after_s)
        self._publish(self._host_event("unreachable", reason))

    def _run_attempt(self, attempt: _Attempt) -> None:
        record: _Connection | None = None
        error: Exception | None = None
        try:
            record = self._open()
        except errors.VirtlifeError as err:
            error = err
        except Exception as err:  # a bug: the waiters re-raise it with its traceback
            logger.exception("connecting to host %s (%s) failed unexpectedly",
                             self.name, self.uri)
            error = err
        late: _Connection | None = None
        with self._lock:
            if self._attempt is attempt:
                self._attempt = None
            if (record is not None and not attempt.abandoned
                    and time.monotonic() > attempt.deadline):
                # nobody waited to give it up (connected in the caller's thread, or the
                # waiter not awake yet): past its deadline it is given up all the same
                self._give_up(attempt)
                error = errors.HostUnreachable(self._failure.reason if self._failure
                                               else f"host {self.name} did not answer")
            attempt.error = error
            if record is not None and (attempt.abandoned or self._closed):
                late, record.retired = record, True
            elif record is not None:
                self._current, self._failure = record, None
                attempt.connection = record
                self._publish(self._host_event("connected", self.uri))
            elif isinstance(error, errors.VirtlifeError) and not attempt.abandoned:
                self._remember(str(error))
            attempt.done.set()
        if record is not None and late is None and self._wants_events():
            self._events_on(record)  # a listener came while it opened: it was not seen
        if late is not None:
            logger.info("the connection to host %s came %.1f s after it was given up; "
                        "closing it", self.name, time.monotonic() - attempt.started)
            self._dispose(late)
        elif record is not None:
            logger.info("connected to host %s (%s) in %.2f s", self.name, self.uri,
                        time.monotonic() - attempt.started)

    def _open(self) -> _Connection:
        """Open and set up one connection (runs in the connect thread)."""
        if self.refused is not None:
            raise errors.HostUnreachable(self.refused)
        ensure_event_loop()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as err:
            message = str(err.get_error_message() or err)
            first = message.split("\n", 1)[0].strip()
            if first != message.strip():  # libxml2's context: the lines of a file it read
                logger.debug("connecting to host %s (%s) failed: %s", self.name, self.uri,
                             message)
            raise errors.HostUnreachable(
                f"cannot reach host {self.name} ({self.uri}): {first}"
            ) from err
        if conn is None:  # pragma: no cover - old bindings returned None
            raise errors.HostUnreachable(f"cannot reach host {self.name} ({self.uri})")
        record = _Connection(conn)
        try:
            if is_remote(self.uri):
                with calling(f"set keepalive on {self.name}"):
                    conn.setKeepAlive(*KEEPALIVE)
            with calling(f"watch the connection to {self.name}"):
                conn.registerCloseCallback(
                    lambda _c, reason, _o: self._on_close(record, reason), None)
            record.close_callback = True
            if self._wants_events():
                self._events_on(record)
        except BaseException:
            self._dispose(record)
            raise
        return record

    def _on_close(self, record: _Connection, reason: int) -> None:
        """libvirt closed the connection (runs on libvirt's event thread: never block)."""
        record.lost = CLOSE_REASONS.get(reason, f"reason {reason}")
        threading.Thread(target=self._lost, args=(record,), daemon=True,
                         name=f"lost-{self.name}").start()

    def _lost(self, record: _Connection) -> None:
        """A connection stopped working: tell the listeners, forget it and close it."""
        with self._lock:
            if self._current is record:
                self._current = None
            record.retired = True
            self._announce(record)
        self._dispose(record)

    def _announce(self, record: _Connection) -> None:
        """Tell the listeners, once per connection, that it was lost (lock held)."""
        if record.first_to_announce() and not self._closed:
            logger.info("lost the connection to host %s (%s): %s", self.name, self.uri,
                        record.lost)
            self._publish(self._host_event("disconnected", record.lost or ""))

    def _host_event(self, event: str, detail: str) -> DomainEvent:
        return DomainEvent(self.name, "", EventKind.HOST, event, detail)

    def _release(self, record: _Connection) -> None:
        """Close ``record`` in a daemon thread (libvirt's close may wait for the peer)."""
        threading.Thread(target=self._dispose, args=(record,), daemon=True,
                         name=f"close-{self.name}").start()

    def _dispose(self, record: _Connection) -> None:
        """Remove the callbacks of ``record`` and close it; once, whoever calls first."""
        if not record.claim_disposal():
            return
        conn = record.conn
        try:
            for cb_id in record.callback_ids:
                try:
                    conn.domainEventDeregisterAny(cb_id)
                except libvirt.libvirtError:  # a dead connection: removed locally anyway
                    pass
            if record.close_callback:
                try:  # fails harmlessly when libvirt already dropped it after it ran
                    conn.unregisterCloseCallback()
                except libvirt.libvirtError:
                    pass
            try:
                left = conn.close()
            except libvirt.libvirtError as err:
                logger.debug("closing the connection to %s: %s", self.name, err)
            else:
                logger.debug("closed a connection to %s (%d references left)",
                             self.name, left)
        finally:
            record.released.set()

    # -- host --------------------------------------------------------------------

    def info(self) -> HostInfo:
        with calling(f"read host information of {self.name}"):
            conn = self.conn
            node = conn.getInfo()
            return HostInfo(
                name=self.name,
                uri=self.uri,
                hostname=conn.getHostname(),
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor=conn.getType(),
                hypervisor_version=_version(conn.getVersion()),
                cpus=int(node[2]),
                memory_mib=int(node[1]),
            )

    # -- domains -----------------------------------------------------------------

    def lookup(self, vm: str) -> Guest:
        """The domain named ``vm``; ``VMNotFound`` if there is none."""
        conn = self.conn
        try:
            dom = conn.lookupByName(vm)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise errors.VMNotFound(f"no VM named {vm} on host {self.name}") from err
            raise translate(err, f"look up {vm} on {self.name}") from err
        return Guest(self, dom)

    def find(self, vm: str) -> Guest | None:
        try:
            return self.lookup(vm)
        except errors.VMNotFound:
            return None

    def find_uuid(self, uuid: str) -> Guest | None:
        """The domain whose UUID is ``uuid``, or None when this host has none."""
        conn = self.conn
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(err, f"look up the VM {uuid} on {self.name}") from err
        return Guest(self, dom)

    def guests(self) -> list[Guest]:
        conn = self.conn
        with calling(f"list VMs on {self.name}"):
            doms = conn.listAllDomains(0)
        return [Guest(self, d) for d in doms]

    def define(self, xml: str) -> Guest:
        conn = self.conn
        with calling(f"define a VM on {self.name}"):
            dom = conn.defineXML(xml)
        return Guest(self, dom)

    def restore(self, path: str, *, paused: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0
        conn = self.conn
        with calling(f"restore {path} on {self.name}"):
            conn.restoreFlags(path, None, flags)

    def saved_image_xml(self, path: str) -> str:
        """The domain XML stored inside a save file (tells which VM it holds)."""
        conn = self.conn
        with calling(f"read save file {path} on {self.name}"):
            return str(conn.saveImageGetXMLDesc(path, 0))

    # -- events ------------------------------------------------------------------

    def add_listener(self, listener: Listener, *, with_state: bool = False) -> None:
        """Deliver this host's events to ``listener``, in order, on a thread of its own.

        Besides domain events, the Host tells its listeners about its connection:
        ``EventKind.HOST`` events ``connected``, ``disconnected`` and ``unreachable``
        (each failed connect). ``with_state`` first delivers the state at the moment
        of subscription: ``connected`` or ``unreachable`` (nothing while unknown). A
        listener keeps receiving across reconnects; an exception it raises is logged.
        """
        subscriber = _Subscriber(self.name, listener, LISTENER_QUEUE_SIZE)
        with self._lock:  # no connection change between the state and the subscription
            if with_state:
                current, failure = self._current, self._failure
                if current is not None and current.lost is None:
                    subscriber.offer(self._host_event("connected", self.uri))
                elif failure is not None:
                    subscriber.offer(self._host_event("unreachable", failure.reason))
            with self._subs_lock:
                if self._closed:
                    subscriber.stop()
                    return
                self._subscribers.append(subscriber)
            current = self._current
        if current is not None and self._events:
            self._events_on(current)

    def remove_listener(self, listener: Listener) -> None:
        """Stop delivering to ``listener`` (events still queued for it are dropped)."""
        with self._subs_lock:
            for sub in self._subscribers:
                if sub.listener == listener:
                    self._subscribers.remove(sub)
                    sub.stop()
                    return

    def add_tap(self, tap: Listener) -> None:
        """Hand every event to ``tap`` at once, on the thread that publishes it (libvirt's
        event thread for domain events), in order, across reconnects.

        A tap is a queue's ``put``, not a listener: it must only store the event and wake
        its reader, never block nor call libvirt (an exception it raises is logged). It
        costs no thread: ``services.wait`` routes a host's events to the VMs being waited
        for through one tap per Host.
        """
        with self._subs_lock:
            if not self._closed:
                self._taps = (*self._taps, tap)
        current = self._current
        if current is not None and self._events:
            self._events_on(current)

    def remove_tap(self, tap: Listener) -> None:
        with self._subs_lock:
            self._taps = tuple(t for t in self._taps if t != tap)

    def _publish(self, event: DomainEvent) -> None:
        with self._subs_lock:
            subscribers, taps = list(self._subscribers), self._taps
        for tap in taps:
            try:
                tap(event)
            except Exception:
                logger.exception("event tap %s on host %s failed on event %s",
                                 _callable_name(tap), self.name, event)
        for sub in subscribers:
            sub.offer(event)

    def _wants_events(self) -> bool:
        """Whether domain events must flow: someone listens (a connection opened only to
        read, like a listing's, saves the callbacks' round trips on open and close)."""
        with self._subs_lock:
            return self._events and bool(self._subscribers or self._taps)

    def _events_on(self, record: _Connection) -> None:
        """Register the domain event callbacks on ``record`` once; a caller that comes
        while another registers waits until the events flow."""
        with record.events_lock:
            if record.events_on or record.retired:
                return
            record.events_on = True
            self._register_events(record)

    def _register_events(self, record: _Connection) -> None:
        name = self.name

        def publish(make: Callable[[], DomainEvent]) -> None:
            if record.retired:
                return
            try:
                self._publish(make())
            except Exception:  # never raise into libvirt's event thread
                logger.exception("cannot handle an event from host %s", name)

        def lifecycle(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
            ev, det = lifecycle_names(event, detail)
            publish(lambda: DomainEvent(name, dom.name(), EventKind.LIFECYCLE, ev, det))

        def agent(_c: Any, dom: Any, state: int, reason: int, _o: Any) -> None:
            publish(lambda: DomainEvent(
                name, dom.name(), EventKind.AGENT,
                AGENT_STATES.get(state, str(state)), AGENT_REASONS.get(reason, str(reason)),
            ))

        def reboot(_c: Any, dom: Any, _o: Any) -> None:
            publish(lambda: DomainEvent(name, dom.name(), EventKind.REBOOT, "reset"))

        def pmsuspend(_c: Any, dom: Any, _reason: int, _o: Any) -> None:
            publish(lambda: DomainEvent(name, dom.name(), EventKind.PM, "suspend"))

        def pmwakeup(_c: Any, dom: Any, _reason: int, _o: Any) -> None:
            publish(lambda: DomainEvent(name, dom.name(), EventKind.PM, "wakeup"))

        callbacks: dict[str, Callable[..., None]] = {
            "LIFECYCLE": lifecycle, "REBOOT": reboot, "PMWAKEUP": pmwakeup,
            "PMSUSPEND": pmsuspend, "AGENT_LIFECYCLE": agent,
        }
        for id_name, event_id, _kind in DOMAIN_EVENT_IDS:
            try:
                record.callback_ids.append(
                    record.conn.domainEventRegisterAny(None, event_id, callbacks[id_name], None)
                )
            except libvirt.libvirtError:
                # a driver without this event kind (the test driver lacks some)
                continue
