"""Stream domain events from every host, reconnecting after a host drops.

``stream_events`` connects to each host (in its own thread), forwards every
``DomainEvent`` to a callback, and when a connection closes (libvirtd restarted,
network lost) reports it and reconnects with a capped back-off. It stops when the
``stop`` event is set. It never prints.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from virtlife import errors
from virtlife.hypervisor import DomainEvent, Host
from virtlife.services.fleet import HostRef

__all__ = ["DomainEvent", "stream_events"]

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0


def _follow(ref: HostRef, on_event: Callable[[DomainEvent], None],
            stop: threading.Event) -> None:
    delay = RECONNECT_MIN_S
    announced_down = False
    while not stop.is_set():
        try:
            host = Host.open(ref.name, ref.uri)
        except errors.HostUnreachable as err:
            if not announced_down:
                on_event(DomainEvent(ref.name, "", "host", "unreachable", str(err)))
                announced_down = True
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
            continue
        lost = threading.Event()

        def listener(event: DomainEvent, lost: threading.Event = lost) -> None:
            if event.kind == "host":
                lost.set()
            on_event(event)

        host.add_listener(listener)
        on_event(DomainEvent(ref.name, "", "host", "connected", ref.uri))
        announced_down = False
        delay = RECONNECT_MIN_S
        try:
            while not stop.is_set() and not lost.is_set():
                # a closed socket is reported by the close callback; isAlive is a backstop
                if lost.wait(1.0) or not host.alive():
                    break
        finally:
            host.close()
        if not stop.is_set() and not lost.is_set():
            on_event(DomainEvent(ref.name, "", "host", "disconnected", "connection lost"))


def stream_events(hosts: list[HostRef], on_event: Callable[[DomainEvent], None],
                  stop: threading.Event) -> list[threading.Thread]:
    """Start following every host; return the threads (daemon threads)."""
    threads = [
        threading.Thread(target=_follow, args=(ref, on_event, stop), daemon=True,
                         name=f"events-{ref.name}")
        for ref in hosts
    ]
    for t in threads:
        t.start()
    return threads
