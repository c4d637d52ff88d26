"""Many hosts, few threads (issue 17): hosts that are connected and listened to hold
threads of the shared pools only (connects and closes, event delivery) and libvirt's
one event loop, a bound that does not grow with the number of hosts; no thread is
any host's own."""

from __future__ import annotations

import threading

from libvirt_faults import wait_until
from support import NODE_URI
from virtlife.hypervisor import DomainEvent, Host, connection, dispatch

HOSTS = 40


def test_forty_listened_hosts_hold_only_the_shared_pools_threads() -> None:
    before = frozenset(threading.enumerate())
    hosts = [Host(f"h{n:02d}", NODE_URI) for n in range(HOSTS)]
    got: dict[str, list[str]] = {h.name: [] for h in hosts}

    def listener_of(name: str):  # type: ignore[no-untyped-def]
        def listener(event: DomainEvent) -> None:
            got[name].append(event.event)
        return listener

    try:
        for h in hosts:
            h.add_listener(listener_of(h.name))
            h.connect()  # on the main thread: the connect runs in the background
        for h in hosts:
            h.lookup("vm-running").suspend()
        assert wait_until(lambda: all("suspended" in events for events in got.values()))
        added = [t for t in threading.enumerate() if t not in before]
        bound = connection.HOST_JOB_WORKERS + dispatch.DELIVERY_WORKERS + 1  # + the loop
        assert len(added) <= bound, sorted(t.name for t in added)
        own = [t.name for t in added for h in hosts if h.name in t.name]
        assert own == []
    finally:
        for h in hosts:
            h.close(timeout_s=0)
