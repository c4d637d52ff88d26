"""A Host's events: the libvirt callbacks on a connection, and delivery to listeners.

``Dispatcher`` keeps one host's listeners and taps. It registers the domain event
callbacks on a connection (``attach``: once per connection, and only once someone
listens, so that a connection opened only to read saves their round trips), turns
each callback into a ``DomainEvent`` and ``publish``-es it: a tap is called at once on
the publishing thread (libvirt's event thread for domain events), a listener gets it
through its own bounded queue, so a slow or failing listener delays neither another one
nor libvirt's event loop (keepalives). It never opens, closes or replaces a connection
(``connection.Connector`` does, and publishes the ``EventKind.HOST`` events through
this), and never blocks a libvirt callback.

Threads: none per host or listener. The callbacks run on libvirt's one event loop
(``ensure_event_loop``); a listener's queue is drained on one pool shared by every
host (``DELIVERY``: at most ``DELIVERY_WORKERS`` threads, ``events-<n>``): ``offer``
schedules one drain when the queue goes from empty to non-empty, and the drain delivers
what is queued (at most ``DRAIN_BATCH``, then it reschedules itself behind the others),
so each listener stays serial and in order, an idle listener costs nothing, and a slow
one holds at most one worker. Taps (``services.wait``) cost no thread either.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from virtlife.hypervisor.events import (
    AGENT_REASONS,
    AGENT_STATES,
    DOMAIN_EVENT_IDS,
    DomainEvent,
    EventKind,
    Listener,
    lifecycle_names,
)
from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.lazylog import get_logger
from virtlife.workpool import WorkPool

if TYPE_CHECKING:
    from virtlife.hypervisor.connection import LibvirtConnection

logger = get_logger(__name__)  # logging imported only when needed

LISTENER_QUEUE_SIZE = 1000  # events held for one slow listener before new ones are dropped
DELIVERY_WORKERS = 8  # threads delivering to every host's listeners together
DRAIN_BATCH = 64  # events one listener gets before its drain lets the others' run
DELIVERY = WorkPool("events", DELIVERY_WORKERS)


def host_event(host: str, event: str, detail: str) -> DomainEvent:
    """An ``EventKind.HOST`` event of ``host``: connected, disconnected, unreachable."""
    return DomainEvent(host, "", EventKind.HOST, event, detail)


class _Subscriber:
    """One listener with its own bounded queue, drained on the ``DELIVERY`` pool."""

    def __init__(self, host: str, listener: Listener, size: int) -> None:
        self.host = host
        self.listener = listener
        self.stopped = False
        self.size = size
        self._lock = threading.Lock()
        self._queue: deque[DomainEvent] = deque()
        self._draining = False  # a drain is scheduled or running
        self._dropped = 0

    def offer(self, event: DomainEvent) -> None:
        """Queue ``event`` without ever blocking (libvirt's event thread calls this)."""
        with self._lock:
            if self.stopped:
                return
            if len(self._queue) >= self.size:
                self._dropped += 1
                first = self._dropped == 1
            else:
                first = False
                self._queue.append(event)
                if not self._draining:
                    self._draining = True
                    DELIVERY.submit(self._drain)
        if first:
            logger.warning(
                "event listener %s on host %s is too slow: %d events wait for it; "
                "dropping new ones until it catches up (first dropped: %s)",
                _callable_name(self.listener), self.host, self.size, event)

    def stop(self) -> None:
        """Deliver nothing more (what is queued is dropped; a delivery running ends)."""
        with self._lock:
            self.stopped = True
            self._queue.clear()

    def _drain(self) -> None:
        for _ in range(DRAIN_BATCH):
            with self._lock:
                if self.stopped or not self._queue:
                    self._draining = False
                    return
                event = self._queue.popleft()
            try:
                self.listener(event)
            except Exception:
                logger.exception("event listener %s on host %s failed on event %s",
                                 _callable_name(self.listener), self.host, event)
            with self._lock:
                caught_up = bool(self._dropped) and not self._queue
                dropped, self._dropped = self._dropped, 0 if caught_up else self._dropped
            if caught_up:
                logger.warning("event listener %s on host %s caught up; %d events were "
                               "dropped", _callable_name(self.listener), self.host, dropped)
        with self._lock:
            if self.stopped or not self._queue:
                self._draining = False
                return
        DELIVERY.submit(self._drain)  # behind the other listeners' drains


def _callable_name(fn: Callable[..., object]) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


class Dispatcher:
    """The listeners and taps of one host, and its domain event callbacks.

    ``enabled`` False (a Host made with ``events=False``): domain event callbacks are
    never registered; the host's own events are still published.
    """

    def __init__(self, host: str, *, enabled: bool = True) -> None:
        self.host = host
        self.enabled = enabled
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []
        self._taps: tuple[Listener, ...] = ()  # called on the publishing thread
        self._closed = False

    def subscriber(self, listener: Listener) -> _Subscriber:
        """A new subscriber for ``listener`` (not yet subscribed):
        the caller may ``offer`` it the host's state before ``subscribe``."""
        return _Subscriber(self.host, listener, LISTENER_QUEUE_SIZE)

    def subscribe(self, subscriber: _Subscriber) -> bool:
        """Deliver the host's events to ``subscriber`` from now on; False (and it is
        stopped) once the dispatcher is closed."""
        with self._lock:
            if self._closed:
                subscriber.stop()
                return False
            self._subscribers.append(subscriber)
            return True

    def remove_listener(self, listener: Listener) -> None:
        """Stop delivering to ``listener`` (events still queued for it are dropped)."""
        with self._lock:
            for sub in self._subscribers:
                if sub.listener == listener:
                    self._subscribers.remove(sub)
                    sub.stop()
                    return

    def add_tap(self, tap: Listener) -> None:
        with self._lock:
            if not self._closed:
                self._taps = (*self._taps, tap)

    def remove_tap(self, tap: Listener) -> None:
        with self._lock:
            self._taps = tuple(t for t in self._taps if t != tap)

    def close(self) -> None:
        """Forget every tap and stop every listener, for good."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
            self._taps = ()
        for sub in subscribers:
            sub.stop()

    def publish(self, event: DomainEvent) -> None:
        """Hand ``event`` to each tap, then queue it for each listener; never blocks."""
        with self._lock:
            subscribers, taps = list(self._subscribers), self._taps
        for tap in taps:
            try:
                tap(event)
            except Exception:
                logger.exception("event tap %s on host %s failed on event %s",
                                 _callable_name(tap), self.host, event)
        for sub in subscribers:
            sub.offer(event)

    def wants_events(self) -> bool:
        """Whether domain events must flow: someone listens (a connection opened only to
        read, like a listing's, saves the callbacks' round trips on open and close)."""
        with self._lock:
            return self.enabled and bool(self._subscribers or self._taps)

    def attach(self, record: LibvirtConnection) -> None:
        """Register the domain event callbacks on ``record`` once (not when disabled);
        a caller that comes while another registers waits until the events flow."""
        if not self.enabled:
            return
        with record.events_lock:
            if record.events_on or record.retired:
                return
            record.events_on = True
            self._register(record)

    def _register(self, record: LibvirtConnection) -> None:
        name = self.host

        def publish(make: Callable[[], DomainEvent]) -> None:
            if record.retired:
                return
            try:
                self.publish(make())
            except Exception:  # never raise into libvirt's event thread
                logger.exception("cannot handle an event from host %s", name)

        def lifecycle(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
            ev, det = lifecycle_names(event, detail)
            publish(lambda: DomainEvent(name, dom.name(), EventKind.LIFECYCLE, ev, det,
                                        uuid=dom.UUIDString()))

        def agent(_c: Any, dom: Any, state: int, reason: int, _o: Any) -> None:
            publish(lambda: DomainEvent(
                name, dom.name(), EventKind.AGENT,
                AGENT_STATES.get(state, str(state)), AGENT_REASONS.get(reason, str(reason)),
                uuid=dom.UUIDString(),
            ))

        def reboot(_c: Any, dom: Any, _o: Any) -> None:
            publish(lambda: DomainEvent(name, dom.name(), EventKind.REBOOT, "reset",
                                        uuid=dom.UUIDString()))

        def pmsuspend(_c: Any, dom: Any, _reason: int, _o: Any) -> None:
            publish(lambda: DomainEvent(name, dom.name(), EventKind.PM, "suspend",
                                        uuid=dom.UUIDString()))

        def pmwakeup(_c: Any, dom: Any, _reason: int, _o: Any) -> None:
            publish(lambda: DomainEvent(name, dom.name(), EventKind.PM, "wakeup",
                                        uuid=dom.UUIDString()))

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
