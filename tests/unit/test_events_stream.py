"""The event stream service: announcements, forwarding, reconnects, one connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from libvirt_faults import Opens, wait_until
from support import NODE2_URI, NODE_URI, UNREACHABLE_URI
from virtlife.hypervisor import DomainEvent
from virtlife.hypervisor.events import EventKind
from virtlife.services import events as events_module
from virtlife.services.events import stream_events
from virtlife.services.fleet import Fleet, HostRef


class Stream:
    """``stream_events`` over a fleet, collecting what it forwards."""

    def __init__(self, fleet: Fleet, hosts: list[str] | None = None) -> None:
        self.seen: list[DomainEvent] = []
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = stream_events(fleet, self._on_event, self.stop, hosts=hosts)

    def _on_event(self, event: DomainEvent) -> None:
        with self._lock:
            self.seen.append(event)

    def host_events(self, host: str) -> list[str]:
        with self._lock:
            return [e.event for e in self.seen if e.host == host and e.kind is EventKind.HOST]

    def wait_for(self, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
        assert wait_until(check, timeout_s), self.seen

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        assert not any(t.is_alive() for t in self.threads)


def _collect(refs: list[HostRef], seconds: float) -> list[DomainEvent]:
    with Fleet(refs) as fleet:
        stream = Stream(fleet)
        time.sleep(seconds)
        stream.close()
    return stream.seen


def test_reachable_host_is_announced_as_connected() -> None:
    events = _collect([HostRef("a", NODE_URI)], 0.3)
    assert [(e.host, e.kind, e.event) for e in events] == [("a", EventKind.HOST, "connected")]


def test_unreachable_host_is_announced_once_while_retrying() -> None:
    events = _collect([HostRef("down", UNREACHABLE_URI), HostRef("a", NODE_URI)], 2.0)
    down = [e for e in events if e.host == "down"]
    assert [(e.kind, e.event) for e in down] == [(EventKind.HOST, "unreachable")]
    assert "Connection refused" in down[0].detail
    assert any(e.host == "a" and e.event == "connected" for e in events)


def test_the_stream_and_the_calls_share_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    opens = Opens(monkeypatch)
    with Fleet([HostRef("a", NODE_URI)]) as fleet:
        stream = Stream(fleet)
        stream.wait_for(lambda: stream.host_events("a") == ["connected"])
        fleet.list_vms()
        fleet.host("a").lookup("vm-running").suspend()
        stream.wait_for(lambda: any(e.event == "suspended" for e in stream.seen))
        stream.close()
        assert opens.calls == 1


def test_the_stream_reconnects_after_the_peer_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    opens = Opens(monkeypatch)
    with Fleet([HostRef("a", NODE_URI)]) as fleet:
        stream = Stream(fleet)
        stream.wait_for(lambda: stream.host_events("a") == ["connected"])
        opens.opened[0].peer_closes()
        stream.wait_for(
            lambda: stream.host_events("a") == ["connected", "disconnected", "connected"])
        assert opens.opened[0].closes == [0]
        fleet.host("a").lookup("vm-running").suspend()  # events of the new connection
        stream.wait_for(lambda: any(e.event == "suspended" for e in stream.seen))
        stream.close()
    assert len(opens.opened) == 2 and opens.open_now() == []


def test_a_stream_of_named_hosts_follows_only_those() -> None:
    with Fleet([HostRef("a", NODE_URI), HostRef("b", NODE2_URI)]) as fleet:
        stream = Stream(fleet, hosts=["b"])
        stream.wait_for(lambda: stream.host_events("b") == ["connected"])
        time.sleep(0.2)
        stream.close()
    assert {e.host for e in stream.seen} == {"b"}


def test_the_stream_follows_hosts_added_to_and_removed_from_the_inventory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "INVENTORY_RECHECK_S", 0.1)
    inventory = [HostRef("a", NODE_URI)]
    with Fleet(lambda: list(inventory)) as fleet:
        stream = Stream(fleet)
        stream.wait_for(lambda: stream.host_events("a") == ["connected"])
        inventory.append(HostRef("b", NODE2_URI))
        stream.wait_for(lambda: stream.host_events("b") == ["connected"])
        del inventory[0]
        stream.wait_for(lambda: stream.host_events("a") == ["connected", "removed"])
        stream.close()


def test_a_stream_of_forty_hosts_holds_a_few_threads_not_one_per_host() -> None:
    from virtlife.hypervisor import connection, dispatch

    before = frozenset(threading.enumerate())
    names = [f"h{n:02d}" for n in range(40)]
    with Fleet([HostRef(name, NODE_URI) for name in names]) as fleet:
        stream = Stream(fleet)
        stream.wait_for(lambda: all(stream.host_events(n) == ["connected"] for n in names),
                        timeout_s=20)
        for name in names:
            fleet.host(name).lookup("vm-running").suspend()
        stream.wait_for(lambda: {e.host for e in stream.seen if e.event == "suspended"}
                        == set(names), timeout_s=20)
        added = [t for t in threading.enumerate() if t not in before]
        bound = (1 + events_module.FOLLOW_WORKERS + connection.HOST_JOB_WORKERS
                 + dispatch.DELIVERY_WORKERS + 1)  # the timer ... libvirt's event loop
        assert len(added) <= bound, sorted(t.name for t in added)
        assert [t.name for t in added for n in names if n in t.name] == []
        stream.close()
