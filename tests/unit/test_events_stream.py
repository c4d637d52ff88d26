"""The event stream service: connected / unreachable announcements and forwarding."""

from __future__ import annotations

import threading
import time

from support import NODE_URI, UNREACHABLE_URI
from virtlife.hypervisor import DomainEvent
from virtlife.services.events import stream_events
from virtlife.services.fleet import HostRef


def _collect(refs: list[HostRef], seconds: float) -> list[DomainEvent]:
    seen: list[DomainEvent] = []
    lock = threading.Lock()

    def on_event(event: DomainEvent) -> None:
        with lock:
            seen.append(event)

    stop = threading.Event()
    threads = stream_events(refs, on_event, stop)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    return seen


def test_reachable_host_is_announced_as_connected() -> None:
    events = _collect([HostRef("a", NODE_URI)], 0.3)
    assert [(e.host, e.kind, e.event) for e in events] == [("a", "host", "connected")]


def test_unreachable_host_is_announced_once_while_retrying() -> None:
    events = _collect([HostRef("down", UNREACHABLE_URI), HostRef("a", NODE_URI)], 2.0)
    down = [e for e in events if e.host == "down"]
    assert [(e.kind, e.event) for e in down] == [("host", "unreachable")]
    assert "Connection refused" in down[0].detail
    assert any(e.host == "a" and e.event == "connected" for e in events)
