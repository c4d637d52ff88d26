"""A Host's connection: open with a deadline, reuse, notice its loss, close.

``Connector`` owns at most one libvirt connection of one host (name, URI) at a time and
manages it like Nova's ``libvirt/host.py``: the check and the reconnect happen under
one lock (``lock``), so concurrent first uses open one connection; every connect runs
in a job thread and is awaited with a deadline (a connect given up, or one that returns
after its deadline, is closed when it finally returns, and never used), except on a
thread that enforces a deadline of its own (the fleet's one caller thread per host,
which connects there itself: no thread per connect, and no more threads for a dead
host than that caller); a recent failure is remembered for a few seconds, so that a
dead host fails fast instead of being re-dialled; a connection closed by the peer is
closed on our side too, with its callbacks removed, and replaced on next use. Remote
connections get libvirt's keepalive. It is the one place where a failed or lost
connection becomes ``HostUnreachable`` (with the first line of libvirt's message: the
lines after it can quote the file a URI named; they are logged at DEBUG). It tells
the host's ``dispatch.Dispatcher`` about the connection (``connected``,
``disconnected``, ``unreachable``) and asks it to register the domain event callbacks
on a new connection when someone listens; it delivers no event itself, looks up no
domain and holds no policy (whether a URI may be opened is decided in ``services``:
``refused``).

Threads. Every job this module runs in the background goes through ``_spawn``, onto one
bounded pool shared by every host (``JOBS``: at most ``HOST_JOB_WORKERS`` threads,
``host-jobs-<n>``, however many hosts): each connect (``libvirt.open``, keepalive,
close callback and, when someone listens, the event callbacks), unless the caller
connects on its own thread (``in_this_thread``: the fleet's host callers); the
announcement and close of a connection libvirt reported closed (its close callback
runs on libvirt's event thread, which must never block); the close of a connection
found dead without a close callback, and ``close()``'s. A caller waits on
``_Attempt.done`` with its deadline, never on a worker, so a connect queued behind a
busy pool still meets its waiters' deadline, and one that starts after it was given up
never dials. A host has at most one connect in flight (later ones fail fast while it
hangs), so a frozen host holds at most one worker, and a connect given up while it
hangs no longer counts against the bound (``WorkPool.hold_extra``). The keepalives and
close callbacks stay on libvirt's one event loop (``libvirt_api.ensure_event_loop``),
shared by every connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from virtlife import errors
from virtlife.hypervisor.dispatch import host_event
from virtlife.hypervisor.events import CLOSE_REASONS
from virtlife.hypervisor.libvirt_api import calling, ensure_event_loop, libvirt
from virtlife.lazylog import get_logger
from virtlife.workpool import WorkPool

if TYPE_CHECKING:
    from virtlife.hypervisor.dispatch import Dispatcher
    from virtlife.hypervisor.events import DomainEvent

logger = get_logger(__name__)  # logging imported only when needed

DEFAULT_CONNECT_TIMEOUT_S = 10.0  # how long a connect may take before the host is unreachable
DEFAULT_RETRY_AFTER_S = 3.0  # how long a failed connect is remembered (calls fail fast)
CLOSE_TIMEOUT_S = 5.0  # how long close() waits for libvirt to close a connection
KEEPALIVE = (5, 3)  # remote connections: a probe every 5 s, dead after 3 unanswered
HOST_JOB_WORKERS = 16  # threads for every host's connects and closes together
JOBS = WorkPool("host-jobs", HOST_JOB_WORKERS)


def _spawn(job: Callable[..., object], *args: object) -> None:
    """Run ``job(*args)`` in the background, on the shared pool (see the module doc)."""
    JOBS.submit(partial(job, *args))


def is_remote(uri: str) -> bool:
    """True for URIs that go over a network transport (keepalive matters there)."""
    parsed = urlparse(uri)
    return "+" in parsed.scheme or bool(parsed.hostname)


def _is_alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


class LibvirtConnection:
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
        self.on_pool = False  # runs as a job of ``JOBS`` (not in its caller's thread)
        self.running = False  # its job started (it may dial)
        self.held = False  # given up while it runs: its worker is out of JOBS's bound
        self.connection: LibvirtConnection | None = None
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


class Connector:
    """The replaceable connection of one host (see the module doc).

    ``refused``: why the caller's policy forbids this URI; every connect then fails
    with it as ``HostUnreachable``, and libvirt never sees the URI.
    """

    def __init__(self, name: str, uri: str, events: Dispatcher, *,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S,
                 refused: str | None = None) -> None:
        self.name = name
        self.uri = uri
        self.events = events
        self.refused = refused
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        # The one lock for the connection: the check and the reconnect happen under it.
        self.lock = threading.Lock()
        self.current: LibvirtConnection | None = None
        self.attempt: _Attempt | None = None  # in flight, possibly abandoned
        self.failure: _Failure | None = None
        self._closed = False
        self._last_release: LibvirtConnection | None = None

    @property
    def closed(self) -> bool:
        """True once ``begin_close()`` was called: it never connects again."""
        return self._closed

    def alive(self) -> bool:
        """True while the current connection works (this never reconnects)."""
        current = self.current
        return (not self._closed and current is not None and current.lost is None
                and _is_alive(current.conn))

    def state_event(self) -> DomainEvent | None:
        """The host's state as an event: ``connected``, ``unreachable`` after a failed
        connect, None while unknown (call with ``lock`` held)."""
        current, failure = self.current, self.failure
        if current is not None and current.lost is None:
            return host_event(self.name, "connected", self.uri)
        if failure is not None:
            return host_event(self.name, "unreachable", failure.reason)
        return None

    def begin_close(self) -> Callable[[], None] | None:
        """Close for good; the connection's own close is returned (None when no
        connection is open) for the caller to run on a thread of its choice: it may
        block as long as the peer does. ``wait_closed`` waits for it. A connect still
        in flight is closed when it returns."""
        with self.lock:
            self._closed = True
            current, self.current = self.current, None
            if current is not None:
                current.retired = True
            if self.attempt is not None:
                self.attempt.abandoned = True
        if current is None:
            return None
        self._last_release = current
        return partial(self._dispose, current)

    def close_in_background(self, finish: Callable[[], None]) -> None:
        """Run ``finish`` (from ``begin_close``) on the pool."""
        _spawn(finish)

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the connection closed by ``begin_close()`` is released; False on
        timeout."""
        last = self._last_release
        if last is None or last.released.wait(max(0.0, timeout_s)):
            return True
        logger.info("closing the connection to host %s takes more than %g s; it goes "
                    "on in the background", self.name, timeout_s)
        return False

    def get(self, *, in_this_thread: bool = False) -> LibvirtConnection:
        """A working connection: the current one, or one opened with the deadline
        (``Host.connect`` tells what ``in_this_thread`` does); ``HostUnreachable``."""
        stale: LibvirtConnection | None = None
        mine = False
        with self.lock:
            if self._closed:
                raise errors.HostUnreachable(f"the connection to host {self.name} is closed")
            current = self.current
            if current is not None:
                if current.lost is None and _is_alive(current.conn):
                    return current
                self.current, current.retired, stale = None, True, current
                if current.lost is None:
                    current.lost = "connection lost"
                self._announce(current)
            attempt, failure = self.attempt, self.failure
            if attempt is not None and attempt.abandoned and failure is not None:
                # at most one connect per host in flight: a hung one is not joined by more
                raise errors.HostUnreachable(failure.fail_fast(pending=True))
            if attempt is None:
                if failure is not None and time.monotonic() < failure.retry_at:
                    raise errors.HostUnreachable(failure.fail_fast(pending=False))
                attempt = self.attempt = _Attempt(self.connect_timeout_s)
                # never on the main thread: a blocked connect there would not see Ctrl-C
                mine = in_this_thread and (threading.current_thread()
                                           is not threading.main_thread())
                if not mine:
                    attempt.on_pool = True
                    _spawn(self._run_attempt, attempt)
        if stale is not None:  # found dead without a close callback: closed the same way
            self._release(stale)
        if mine:
            self._run_attempt(attempt)  # done once it returns: _await does not wait
        return self._await(attempt)

    def _await(self, attempt: _Attempt) -> LibvirtConnection:
        # Event.wait with a timeout: the main thread stays interruptible by Ctrl-C.
        attempt.done.wait(max(0.0, attempt.deadline - time.monotonic()))
        with self.lock:
            if attempt.done.is_set():
                if attempt.connection is not None and attempt.connection is self.current:
                    return attempt.connection
                error = attempt.error
            else:
                error = None
                self._give_up(attempt)
            failure = self.failure
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
        attempt = self.attempt
        return None if attempt is None or attempt.abandoned else attempt.deadline

    def give_up_overdue_connect(self) -> str | None:
        """Give up the connect in flight when its deadline has passed, as a waiter would
        (the failure is remembered, and the connection is closed when it comes), for
        whoever waits for a thread that connects itself (``connect(in_this_thread=True)``).
        The failure's reason; None when no connect is overdue."""
        with self.lock:
            attempt = self.attempt
            if attempt is None or attempt.done.is_set() or time.monotonic() < attempt.deadline:
                return None
            self._give_up(attempt)
            return self.failure.reason if self.failure is not None else None

    def _give_up(self, attempt: _Attempt) -> None:
        """Give up ``attempt`` at its deadline, once (call with the lock held)."""
        if not attempt.abandoned:
            attempt.abandoned = True
            if attempt.on_pool and attempt.running and not attempt.held:
                # libvirt.open cannot be cancelled: the pool lets this worker go from its
                # bound until it returns, so that the other hosts keep theirs
                attempt.held = True
                JOBS.hold_extra()
            self._remember(f"host {self.name} ({self.uri}) did not answer within "
                           f"{self.connect_timeout_s:g} s")

    def _remember(self, reason: str) -> None:
        """Record a failed connect and tell the listeners (call with the lock held)."""
        now = datetime.now().astimezone()
        self.failure = _Failure(reason, now, time.monotonic() + self.retry_after_s,
                                now + timedelta(seconds=self.retry_after_s))
        logger.info("%s; calls fail fast for %g s", reason, self.retry_after_s)
        self.events.publish(host_event(self.name, "unreachable", reason))

    def _run_attempt(self, attempt: _Attempt) -> None:
        record: LibvirtConnection | None = None
        error: Exception | None = None
        with self.lock:
            attempt.running = True
        try:
            if attempt.abandoned:  # it waited for a worker past its deadline: no dial
                raise errors.HostUnreachable(f"host {self.name} ({self.uri}) was given up "
                                             "before the connect could start")
            record = self._open()
        except errors.VirtlifeError as err:
            error = err
        except Exception as err:  # a bug: the waiters re-raise it with its traceback
            logger.exception("connecting to host %s (%s) failed unexpectedly",
                             self.name, self.uri)
            error = err
        late: LibvirtConnection | None = None
        with self.lock:
            if self.attempt is attempt:
                self.attempt = None
            if (record is not None and not attempt.abandoned
                    and time.monotonic() > attempt.deadline):
                # nobody waited to give it up (connected in the caller's thread, or the
                # waiter not awake yet): past its deadline it is given up all the same
                self._give_up(attempt)
                error = errors.HostUnreachable(self.failure.reason if self.failure
                                               else f"host {self.name} did not answer")
            attempt.error = error
            if attempt.held:
                attempt.held = False
                JOBS.release_extra()
            if record is not None and (attempt.abandoned or self._closed):
                late, record.retired = record, True
            elif record is not None:
                self.current, self.failure = record, None
                attempt.connection = record
                self.events.publish(host_event(self.name, "connected", self.uri))
            elif isinstance(error, errors.VirtlifeError) and not attempt.abandoned:
                self._remember(str(error))
            attempt.done.set()
        if record is not None and late is None and self.events.wants_events():
            self.events.attach(record)  # a listener came while it opened: it was not seen
        if late is not None:
            logger.info("the connection to host %s came %.1f s after it was given up; "
                        "closing it", self.name, time.monotonic() - attempt.started)
            self._dispose(late)
        elif record is not None:
            logger.info("connected to host %s (%s) in %.2f s", self.name, self.uri,
                        time.monotonic() - attempt.started)

    def _open(self) -> LibvirtConnection:
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
        record = LibvirtConnection(conn)
        try:
            if is_remote(self.uri):
                with calling(f"set keepalive on {self.name}"):
                    conn.setKeepAlive(*KEEPALIVE)
            with calling(f"watch the connection to {self.name}"):
                conn.registerCloseCallback(
                    lambda _c, reason, _o: self._on_close(record, reason), None)
            record.close_callback = True
            if self.events.wants_events():
                self.events.attach(record)
        except BaseException:
            self._dispose(record)
            raise
        return record

    def _on_close(self, record: LibvirtConnection, reason: int) -> None:
        """libvirt closed the connection (runs on libvirt's event thread: never block)."""
        record.lost = CLOSE_REASONS.get(reason, f"reason {reason}")
        _spawn(self._lost, record)

    def _lost(self, record: LibvirtConnection) -> None:
        """A connection stopped working: tell the listeners, forget it and close it."""
        with self.lock:
            if self.current is record:
                self.current = None
            record.retired = True
            self._announce(record)
        self._dispose(record)

    def _announce(self, record: LibvirtConnection) -> None:
        """Tell the listeners, once per connection, that it was lost (lock held)."""
        if record.first_to_announce() and not self._closed:
            logger.info("lost the connection to host %s (%s): %s", self.name, self.uri,
                        record.lost)
            self.events.publish(host_event(self.name, "disconnected", record.lost or ""))

    def _release(self, record: LibvirtConnection) -> None:
        """Close ``record`` on the pool (libvirt's close may wait for the peer)."""
        _spawn(self._dispose, record)

    def _dispose(self, record: LibvirtConnection) -> None:
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
