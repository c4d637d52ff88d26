"""Stream domain events from every host of a fleet, reconnecting after a host drops.

``stream_events`` follows each host (in its own thread) through the fleet's own
``Host`` (the one connection that also serves calls: it never opens a second one),
forwards every ``DomainEvent`` to a callback, announces a host as ``connected``,
``unreachable`` (once, while it stays so), ``disconnected`` (libvirtd restarted,
network lost) or ``removed`` (it left the inventory), and reconnects with a capped
back-off. Without a list of hosts it follows the inventory: a host added while it
runs is followed too. It stops when the ``stop`` event is set. It never prints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.events import DomainEvent, EventKind
from virtlife.services.fleet import Fleet

__all__ = ["DomainEvent", "EventKind", "stream_events"]

logger = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
INVENTORY_RECHECK_S = 5.0  # how often a stream over every host looks for new ones
POLL_S = 0.25  # how often a follower looks at ``stop`` and at its connection


def _host_event(host: str, event: str, detail: str) -> DomainEvent:
    return DomainEvent(host, "", EventKind.HOST, event, detail)


def _follow(fleet: Fleet, name: str, on_event: Callable[[DomainEvent], None],
            stop: threading.Event) -> None:
    """Follow host ``name`` until ``stop``, or until it leaves the inventory."""
    while not stop.is_set():
        try:
            host = fleet.host(name, connect=False)
        except errors.HostNotFound as err:
            on_event(_host_event(name, "removed", str(err)))
            return
        except errors.VirtlifeError as err:  # the inventory cannot be read just now
            logger.warning("cannot look up host %s to follow it: %s", name, err)
            stop.wait(RECONNECT_MAX_S)
            continue
        _follow_host(host, on_event, stop)


def _follow_host(host: Host, on_event: Callable[[DomainEvent], None],
                 stop: threading.Event) -> None:
    """Forward the events of one ``Host`` object and keep it connected, until it closes.

    The Host itself tells its listeners ``connected``, ``disconnected`` and
    ``unreachable``, in order with the domain events; an ``unreachable`` is forwarded
    once while the host stays so.
    """
    last = [""]  # the last host event forwarded (used on the listener's thread only)

    def listener(event: DomainEvent) -> None:
        if stop.is_set():
            return
        if event.kind is EventKind.HOST:
            if event.event == last[0] == "unreachable":
                return
            last[0] = event.event
        on_event(event)

    host.add_listener(listener, with_state=True)
    delay = RECONNECT_MIN_S
    try:
        while not stop.is_set() and not host.closed:
            try:
                host.connect()  # nothing while connected; reconnects after a loss
            except errors.HostUnreachable:
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_MIN_S
            # a closed socket is seen by libvirt's close callback (alive() turns false)
            # and a dead one by its keepalive; connect() above then reconnects
            while not stop.is_set() and host.alive():
                stop.wait(POLL_S)
    finally:
        host.remove_listener(listener)


def _start(fleet: Fleet, name: str, on_event: Callable[[DomainEvent], None],
           stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=_follow, args=(fleet, name, on_event, stop),
                              daemon=True, name=f"follow-{name}")
    thread.start()
    return thread


def _follow_inventory(fleet: Fleet, following: dict[str, threading.Thread],
                      on_event: Callable[[DomainEvent], None],
                      stop: threading.Event) -> None:
    while not stop.wait(INVENTORY_RECHECK_S):
        try:
            names = sorted(fleet.refs)
        except errors.VirtlifeError as err:
            logger.warning("cannot re-read the hosts to follow: %s", err)
            continue
        for name in names:
            thread = following.get(name)
            if thread is None or not thread.is_alive():
                logger.info("following the events of host %s", name)
                following[name] = _start(fleet, name, on_event, stop)
    for thread in following.values():
        thread.join(RECONNECT_MAX_S)


def stream_events(fleet: Fleet, on_event: Callable[[DomainEvent], None],
                  stop: threading.Event, *,
                  hosts: Iterable[str] | None = None) -> list[threading.Thread]:
    """Start following ``hosts`` (default: every host, as the inventory changes).

    Returns the daemon threads; once ``stop`` is set they all end. ``on_event`` is
    called from several threads. An unknown name in ``hosts`` is ``HostNotFound``.
    """
    if hosts is not None:
        names = [fleet.ref(h).name for h in hosts]
        return [_start(fleet, name, on_event, stop) for name in names]
    following = {name: _start(fleet, name, on_event, stop) for name in sorted(fleet.refs)}
    watcher = threading.Thread(target=_follow_inventory,
                               args=(fleet, dict(following), on_event, stop),
                               daemon=True, name="follow-inventory")
    watcher.start()
    return [watcher, *following.values()]
