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


def test_the_servers_feed_over_sixty_hosts_holds_a_bound_of_threads_set_by_its_pools(
        ) -> None:
    from virtlife.api import hub as hub_module
    from virtlife.services import events, hostcalls
    from virtlife.services.fleet import Fleet, HostRef

    class Recorder(hub_module.Hub):
        def __init__(self) -> None:
            super().__init__()
            self.states: set[str] = set()

        def publish(self, message: dict[str, object]) -> None:
            if message["type"] == "state" and message["name"] == "vm-running":
                self.states.add(str(message["host"]))

    before = frozenset(threading.enumerate())
    names = [f"s{n:02d}" for n in range(60)]
    fleet = Fleet([HostRef(name, NODE_URI) for name in names])
    rec = Recorder()
    feed = hub_module.Feed(fleet, rec)
    feed.start()
    try:
        assert wait_until(feed.cache.fresh, 30)  # every host connected and listed
        for name in names:
            fleet.host(name).lookup("vm-running").suspend()
        assert wait_until(lambda: rec.states == set(names), 30)  # each re-read after it
        added = [t for t in threading.enumerate() if t not in before]
        bound = (hub_module.FEED_WORKERS + 1 + events.FOLLOW_WORKERS
                 + connection.HOST_JOB_WORKERS + dispatch.DELIVERY_WORKERS
                 + hostcalls.CALLER_WORKERS + 1)  # ... + libvirt's event loop
        assert len(added) <= bound, sorted(t.name for t in added)
        assert [t.name for t in added for n in names if n in t.name] == []
    finally:
        feed.close()
        fleet.close()
