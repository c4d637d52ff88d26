"""Stream domain events from every host of a fleet, reconnecting after a host drops.

``stream_events`` follows each host through the fleet's own ``Host`` (the one
connection that also serves calls: it never opens a second one), forwards every
``DomainEvent`` to a callback, announces a host as ``connected``, ``unreachable``
(once, while it stays so), ``disconnected`` (libvirtd restarted, network lost,
keepalive expired) or ``removed`` (it left the inventory), and reconnects with a
capped back-off. Without a list of hosts it follows the inventory: a host added while
it runs is followed too. It stops when the ``stop`` event is set. It never prints.

Threads: none per host (issue 17). One ``follow-timer`` thread per stream keeps the
due checks; a check of a host (look it up in the fleet, listen to it, connect it when
its connection is gone) runs on the stream's small pool (``FOLLOW_WORKERS``), one lane
per host, so a host's checks stay in order and a connect that hangs holds only that
host's lane (for its connect deadline at most: later connects fail fast while it
hangs). A host is checked when its listener hears it ``disconnected`` (at once), after
a failed connect (with the back-off), and every ``INVENTORY_RECHECK_S`` (a Host the
fleet replaced, a host added or removed).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.events import DomainEvent, EventKind
from virtlife.services.fleet import Fleet
from virtlife.workpool import Lanes, WorkPool

__all__ = ["DomainEvent", "EventKind", "stream_events"]

logger = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
INVENTORY_RECHECK_S = 5.0  # how often every host is checked (and the inventory re-read)
FOLLOW_WORKERS = 4  # threads checking and connecting the hosts of one stream
TIMER_TICK_S = 0.25  # how often the timer looks at ``stop`` and at new due checks


def _host_event(host: str, event: str, detail: str) -> DomainEvent:
    return DomainEvent(host, "", EventKind.HOST, event, detail)


class _Followed:
    """What a stream knows of one host (used in the host's lane only)."""

    def __init__(self) -> None:
        self.host: Host | None = None
        self.listener: Callable[[DomainEvent], None] | None = None
        self.delay = RECONNECT_MIN_S
        self.retry_at = 0.0  # monotonic: no connect before this (the back-off)


class _Stream:
    """The hosts one ``stream_events`` follows, without a thread per host."""

    def __init__(self, fleet: Fleet, on_event: Callable[[DomainEvent], None],
                 stop: threading.Event, names: list[str] | None) -> None:
        self.fleet = fleet
        self.on_event = on_event
        self.stop = stop
        self.fixed = names  # None: every host of the inventory, as it changes
        self.pool = WorkPool("follow", FOLLOW_WORKERS)
        self.lanes: Lanes[str] = Lanes(self.pool)
        self.followed: dict[str, _Followed] = {}  # changed in the host's lane only
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, str]] = []  # (when, order, host) to check
        self._order = 0

    # -- the timer thread --------------------------------------------------------------

    def run(self) -> None:
        try:
            self._check_all()
            next_all = time.monotonic() + INVENTORY_RECHECK_S
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_all:
                    self._check_all()
                    next_all = now + INVENTORY_RECHECK_S
                with self._cond:
                    while self._due and self._due[0][0] <= now:
                        _when, _n, name = heapq.heappop(self._due)
                        self.check(name)
                    until = min(next_all, self._due[0][0] if self._due else next_all)
                self.stop.wait(max(0.0, min(until - now, TIMER_TICK_S)))
        finally:
            self.pool.close(0)
            for name, state in list(self.followed.items()):
                if state.host is not None and state.listener is not None:
                    state.host.remove_listener(state.listener)
                self.followed.pop(name, None)

    def _check_all(self) -> None:
        if self.fixed is not None:
            names = self.fixed
        else:
            try:
                names = sorted(set(self.fleet.refs) | set(self.followed))
            except errors.VirtlifeError as err:
                logger.warning("cannot re-read the hosts to follow: %s", err)
                names = sorted(self.followed)
        for name in names:
            self.check(name)

    def later(self, name: str, delay_s: float) -> None:
        """Check ``name`` again in ``delay_s`` seconds."""
        with self._cond:
            self._order += 1
            heapq.heappush(self._due, (time.monotonic() + delay_s, self._order, name))

    def check(self, name: str) -> None:
        """Check ``name`` on its lane (at once, behind its earlier checks)."""
        if not self.stop.is_set():
            self.lanes.submit(name, partial(self._check, name))

    # -- a host's lane -----------------------------------------------------------------

    def _check(self, name: str) -> None:
        """Follow ``name``'s current Host, and connect it when its connection is gone."""
        if self.stop.is_set():
            return
        state = self.followed.setdefault(name, _Followed())
        try:
            host = self.fleet.host(name, connect=False)
        except errors.HostNotFound as err:
            self._unfollow(name, state)
            if state.host is not None:  # it was followed: said once
                self.on_event(_host_event(name, "removed", str(err)))
            return
        except errors.VirtlifeError as err:  # the inventory cannot be read just now
            logger.warning("cannot look up host %s to follow it: %s", name, err)
            self.later(name, RECONNECT_MAX_S)
            return
        if host is not state.host or host.closed:
            self._listen(name, state, host)
        if host.closed or host.alive() or time.monotonic() < state.retry_at:
            return
        try:
            host.connect()  # reconnects after a loss (its listeners hear "connected")
        except errors.HostUnreachable:
            state.retry_at = time.monotonic() + state.delay
            self.later(name, state.delay)
            state.delay = min(state.delay * 2, RECONNECT_MAX_S)
            return
        state.delay, state.retry_at = RECONNECT_MIN_S, 0.0

    def _listen(self, name: str, state: _Followed, host: Host) -> None:
        if state.host is not None and state.listener is not None:
            state.host.remove_listener(state.listener)
        last = [""]  # the last host event forwarded (on the listener's drain only)

        def listener(event: DomainEvent) -> None:
            if self.stop.is_set():
                return
            if event.kind is EventKind.HOST:
                if event.event == last[0] == "unreachable":
                    return
                last[0] = event.event
                if event.event == "disconnected":
                    self.check(name)  # reconnect at once
            self.on_event(event)

        state.host, state.listener = host, listener
        state.delay, state.retry_at = RECONNECT_MIN_S, 0.0
        host.add_listener(listener, with_state=True)
        if self.stop.is_set():  # the stream ended meanwhile (its timer cleaned up)
            host.remove_listener(listener)

    def _unfollow(self, name: str, state: _Followed) -> None:
        if state.host is not None and state.listener is not None:
            state.host.remove_listener(state.listener)
        self.followed.pop(name, None)


def stream_events(fleet: Fleet, on_event: Callable[[DomainEvent], None],
                  stop: threading.Event, *,
                  hosts: Iterable[str] | None = None) -> list[threading.Thread]:
    """Start following ``hosts`` (default: every host, as the inventory changes).

    Returns the stream's thread (one, however many hosts); once ``stop`` is set it
    ends. ``on_event`` is called from several threads (one host's events in order).
    An unknown name in ``hosts`` is ``HostNotFound``.
    """
    names = None if hosts is None else [fleet.ref(h).name for h in hosts]
    stream = _Stream(fleet, on_event, stop, names)
    thread = threading.Thread(target=stream.run, daemon=True, name="follow-timer")
    thread.start()
    return [thread]
