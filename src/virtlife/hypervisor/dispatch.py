"""A Host's events: the libvirt callbacks on a connection, and delivery to listeners.

``Dispatcher`` keeps one host's listeners and taps. It registers the domain event
callbacks on a connection (``attach``: once per connection, and only once someone
listens, so that a connection opened only to read saves their round trips), turns
each callback into a ``DomainEvent`` and ``publish``-es it: a tap is called at once on
the publishing thread (libvirt's event thread for domain events), a listener gets it
through its own bounded queue, drained by its own thread, so a slow or failing
listener delays neither another one nor libvirt's event loop (keepalives). It never
opens, closes or replaces a connection (``connection.Connector`` does, and publishes
the ``EventKind.HOST`` events through this), and never blocks a libvirt callback.

Threads today, and what they become for a fleet of hundreds of hosts (issue 17):
each listener has a delivery thread of its own (``events-<host>-<listener>``), for as
long as it listens, so a server that listens to 500 hosts holds 500+ of them, mostly
idle. The callbacks already run on libvirt's one event loop (``ensure_event_loop``),
which is the one thread events need to reach us. The step after this split keeps
``_Subscriber``'s bounded queue and its order but drains it from a bounded worker pool:
``offer`` schedules one drain task when the queue goes from empty to non-empty, and
the task delivers what is queued (at most a batch, then reschedules itself), so each
listener stays serial and in order, an idle listener costs no thread, and a slow one
holds at most one worker. Taps (``services.wait``) already cost no thread.
"""

from __future__ import annotations

import threading
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

if TYPE_CHECKING:
    from virtlife.hypervisor.connection import Connection

logger = get_logger(__name__)  # logging imported only when needed

LISTENER_QUEUE_SIZE = 1000  # events held for one slow listener before new ones are dropped


def host_event(host: str, event: str, detail: str) -> DomainEvent:
    """An ``EventKind.HOST`` event of ``host``: connected, disconnected, unreachable."""
    return DomainEvent(host, "", EventKind.HOST, event, detail)


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
        """A new subscriber for ``listener`` (its thread runs; not yet subscribed):
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

    def attach(self, record: Connection) -> None:
        """Register the domain event callbacks on ``record`` once (not when disabled);
        a caller that comes while another registers waits until the events flow."""
        if not self.enabled:
            return
        with record.events_lock:
            if record.events_on or record.retired:
                return
            record.events_on = True
            self._register(record)

    def _register(self, record: Connection) -> None:
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
