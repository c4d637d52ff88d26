"""The server's event hub: what happens on the hosts, fanned out to every stream client.

``Hub.publish`` may be called from any thread (the event followers of
``services.events``, the operation threads of ``Jobs``); each subscriber of the
event stream (``/api/events``) gets every message through its own bounded asyncio
queue on the server's loop. A client that cannot keep up is told it ``lagged`` and
is dropped, so one slow browser never holds up the others or grows memory.

``Feed`` connects the hub to the fleet: domain and host events as they come, and,
after each lifecycle event, the VM's new state and the operations that state allows,
read on the feed's small pool, one lane per host (never on libvirt's event loop or a
follower thread), so that a frozen host never holds up the other hosts' states.
Those states are also kept as the server's cache, ``Feed.cache``
(``services.statecache``: each host listed once its event stream connects, then kept
by the events; what the CLI's served path answers from).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from virtlife import errors
from virtlife.services.events import DomainEvent, EventKind, stream_events
from virtlife.services.fleet import Fleet, FleetListing
from virtlife.services.statecache import StateCache
from virtlife.states import StateInfo, allowed_operations
from virtlife.workpool import Lanes, WorkPool

log = logging.getLogger(__name__)

QUEUE_MAX = 1000  # messages a subscriber may fall behind before it is dropped
FEED_WORKERS = 4  # threads re-reading states after events, for every host together
Message = dict[str, Any]


class Hub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: set[asyncio.Queue[Message | None]] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on ``loop`` from now on (the server's, at start-up)."""
        self._loop = loop

    def publish(self, message: Message) -> None:
        """Send ``message`` to every subscriber; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, message)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _deliver(self, message: Message) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:
                self._subscribers.discard(q)
                q.get_nowait()  # room for the last word
                q.put_nowait({"type": "lagged",
                              "message": "this stream fell behind and was closed; "
                                         "reconnect and reload the state"})
                q.put_nowait(None)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def open(self) -> Subscription:
        """A subscription to every message published from now on; close it when done."""
        q: asyncio.Queue[Message | None] = asyncio.Queue(QUEUE_MAX + 2)
        self._subscribers.add(q)
        return Subscription(q, lambda: self._subscribers.discard(q))


class Subscription:
    """One client's queue of messages (``next``), until it is dropped or closed."""

    def __init__(self, q: asyncio.Queue[Message | None], close: Callable[[], None]) -> None:
        self._q = q
        self.close = close
        self.dropped = False

    def end(self, message: Message) -> None:
        """End this stream now with ``message`` as its last word (what was queued and
        not yet read is dropped: its reader may no longer see it)."""
        self.close()
        while not self._q.empty():
            self._q.get_nowait()
        self._q.put_nowait(message)
        self._q.put_nowait(None)

    async def next(self, timeout_s: float) -> Message | None:
        """The next message; None when ``timeout_s`` passes first or once dropped."""
        if self.dropped:
            return None
        try:
            message = await asyncio.wait_for(self._q.get(), timeout_s)
        except TimeoutError:
            return None
        if message is None:
            self.dropped = True
        return message


def state_dict(host: str, vm: str, state: StateInfo, uuid: str = "") -> Message:
    """A VM's state as the API and the event stream give it. ``uuid`` is what the VM is
    (a client keys its rows by it: a migrated VM is one row that changes host)."""
    return {"uuid": uuid, "host": host, "name": vm, "state": state.state.value,
            "label": state.state.label, "reason": state.reason,
            "allowed": [op.value for op in allowed_operations(state)]}


def cached_listing(cache: StateCache, *, include_inactive: bool = True,
                   host: str | None = None,
                   on_live: Callable[[], None] | None = None) -> tuple[FleetListing, str]:
    """The fleet's VMs from ``cache`` where it may, and where they came from (``cache``,
    ``mixed`` or ``live``). A cached part that cannot be confirmed (its host stopped
    answering) is listed live, as ``Fleet.list_vms`` does, its errors included (``on_live``
    is called first): what the server's routes, ``/metrics`` and the CLI's served path
    answer with."""
    try:
        found = cache.listing(include_inactive=include_inactive, host=host)
    except errors.VirtlifeError:
        if on_live is not None:
            on_live()
        return cache.fleet.list_vms(include_inactive=include_inactive, host=host), "live"
    return found.listing, found.source


class Feed:
    """Follows the fleet's events into ``hub`` until ``stop``; keeps ``cache`` current.

    The re-reads after events run on a small pool (``FEED_WORKERS`` threads, however
    many hosts), one lane per host: a host's re-reads stay in order and one at a time,
    and a host that froze holds only its own lane (each read has the host caller's
    deadline), never the other hosts' states.
    """

    def __init__(self, fleet: Fleet, hub: Hub) -> None:
        self.fleet = fleet
        self.hub = hub
        self.stop = threading.Event()
        self.hosts: dict[str, str] = {}  # host -> its last connection event
        self.cache = StateCache(fleet)
        self._pool = WorkPool("feed", FEED_WORKERS)
        self._lanes: Lanes[str] = Lanes(self._pool)  # re-reads, per host
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = stream_events(self.fleet, self._on_event, self.stop)
        saved = threading.Thread(target=self._check_saved, name="saved-lists", daemon=True)
        saved.start()
        self._threads.append(saved)

    def _check_saved(self) -> None:
        """Re-ask the hosts' managed-save lists twice per ``saved_max_age_s``, so that a
        listing finds them recent enough (``StateCache``'s module doc)."""
        while not self.stop.wait(self.cache.saved_max_age_s / 2):
            try:
                self.cache.check_saved()
            except errors.VirtlifeError as err:
                log.info("cannot read the hosts' managed-save lists: %s", err)

    def close(self) -> None:
        self.stop.set()
        self._pool.close(2.0)
        for thread in self._threads:
            thread.join(2.0)

    def _on_event(self, event: DomainEvent) -> None:
        self.hub.publish({"type": "event", **event.as_dict()})
        if event.kind is EventKind.HOST:
            self.hosts[event.host] = event.event
            self.cache.host_event(event.host, event.event)
            if event.event == "connected":
                self._lanes.submit(event.host, partial(self._fill, event.host))
        elif event.kind in (EventKind.LIFECYCLE, EventKind.PM) and event.uuid:
            self.cache.vm_event(event.host, event.uuid)
            self._lanes.submit(event.host, partial(self._read_state, event.host, event.vm,
                                                   event.uuid))

    def _fill(self, host: str) -> None:
        if not self.stop.is_set():
            self.cache.fill(host)

    def _read_state(self, host: str, vm: str, uuid: str) -> None:
        if self.stop.is_set():
            return
        try:
            row, state = self.cache.refresh(host, uuid)
        except errors.VirtlifeError as err:
            log.info("state of %s/%s after an event: %s", host, vm, err)
            return
        name = row.name if row is not None else vm  # a renamed VM: its new name
        self.hub.publish({"type": "state", **state_dict(host, name, state, uuid)})
