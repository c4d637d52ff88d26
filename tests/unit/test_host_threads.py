"""Many hosts, few threads (issue 17): hosts that are connected and listened to hold
threads of the shared pools only (connects and closes, event delivery) and libvirt's
one event loop, a bound that does not grow with the number of hosts; no thread is
any host's own."""

from __future__ import annotations

import threading

import pytest

from libvirt_faults import Opens, wait_until
from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.hypervisor import DomainEvent, Host, connection, dispatch
from virtlife.workpool import WorkPool

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


def test_a_connect_given_up_while_it_hangs_leaves_the_pool_to_the_other_hosts(
        opens: Opens, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "JOBS", WorkPool("t-jobs", 1))
    hung = opens.gate = threading.Event()  # this first open hangs (a frozen libvirtd)
    frozen = Host("frozen", NODE_URI, connect_timeout_s=0.3)
    other = Host("other", NODE2_URI, connect_timeout_s=5)
    try:
        with pytest.raises(errors.HostUnreachable, match=r"did not answer within 0\.3 s"):
            frozen.connect()  # given up at its deadline; libvirt.open still hangs
        opens.gate = None
        other.connect()  # a second worker, since the hung one no longer counts
        assert other.alive()
    finally:
        hung.set()
        frozen.close(timeout_s=0)
        other.close(timeout_s=0)
    assert wait_until(lambda: connection.JOBS.threads == 1)  # the extra one ends
