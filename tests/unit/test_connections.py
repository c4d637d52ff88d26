"""One connection manager per host: one lock, deadlines, no leaks, a short memory.

Connections are real (libvirt's test driver, a refused port, and a TCP port that
accepts and never answers); ``libvirt.open`` is wrapped only to count and record them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from libvirt_faults import Opens, silent_host, wait_until
from support import NODE2_URI, NODE_URI, UNREACHABLE_URI
from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.hosts import add_host
from virtlife.store import open_store

# -- one connection per host ---------------------------------------------------------


def test_concurrent_first_uses_of_a_host_open_one_connection(opens: Opens) -> None:
    opens.delay_s = 0.3  # a slow connect: every thread arrives while it runs
    got: list[Host] = []
    barrier = threading.Barrier(4)

    def use() -> None:
        barrier.wait()
        got.append(fleet.host("a"))

    with Fleet([HostRef("a", NODE_URI)]) as fleet:
        threads = [threading.Thread(target=use) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(got) == 4 and all(h is got[0] for h in got)
        assert opens.calls == 1
    assert opens.open_now() == []


def test_a_connection_closed_by_the_peer_is_closed_here_with_its_callbacks(
        opens: Opens) -> None:
    with Fleet([HostRef("a", NODE_URI)]) as fleet:
        host = fleet.host("a")
        (first,) = opens.opened
        first.peer_closes()
        # closed on our side, and nothing left holding it (callbacks deregistered)
        assert first.wait_closed() and first.closes == [0]
        assert not host.alive()
        assert "vm-running" in {g.name for g in host.guests()}  # reconnects
        assert fleet.host("a") is host
        assert len(opens.opened) == 2
    assert [o.closes for o in opens.opened] == [[0], [0]]


def test_every_reconnect_after_a_peer_close_leaves_one_connection_open(
        opens: Opens) -> None:
    with Fleet([HostRef("a", NODE_URI)]) as fleet:
        for _ in range(3):
            fleet.host("a").guests()
            opens.opened[-1].peer_closes()
            assert opens.opened[-1].wait_closed()
        fleet.host("a").guests()
        assert len(opens.open_now()) == 1
    assert opens.open_now() == []
    assert all(o.closes == [0] for o in opens.opened)


def test_close_closes_the_connection_and_removes_its_callbacks(opens: Opens) -> None:
    host = Host.open("a", NODE_URI)
    host.close()
    assert [o.closes for o in opens.opened] == [[0]]
    assert host.closed and not host.alive()
    with pytest.raises(errors.HostUnreachable, match="closed"):
        host.guests()


def test_a_closed_fleet_keeps_nothing_cached(opens: Opens) -> None:
    fleet = Fleet([HostRef("a", NODE_URI)])
    first = fleet.host("a")
    fleet.close()
    assert first.closed and opens.open_now() == []
    second = fleet.host("a")
    assert second is not first and len(opens.opened) == 2
    fleet.close()
    assert opens.open_now() == []


# -- deadlines -----------------------------------------------------------------------


def test_a_connect_given_up_at_the_deadline_is_closed_when_it_returns_never_cached(
        opens: Opens) -> None:
    opens.gate = threading.Event()  # the connect blocks until the gate opens
    fleet = Fleet([HostRef("a", NODE_URI)], connect_timeout_s=0.3)
    t0 = time.monotonic()
    results, problems = fleet.each_host(lambda h: h.name)
    assert time.monotonic() - t0 < 2
    assert results == {} and "did not answer within 0.3 s" in problems[0].message
    fleet.close()
    opens.gate.set()  # the connect returns, after the deadline and after close()
    assert wait_until(lambda: len(opens.opened) == 1)
    late = opens.opened[0]
    assert late.wait_closed() and late.closes == [0]
    opens.gate = None
    fleet.host("a").guests()  # a new connection: the late one was not kept
    assert len(opens.opened) == 2
    fleet.close()
    assert opens.open_now() == []


def _each_host(fleet: Fleet) -> None:
    _results, problems = fleet.each_host(lambda h: h.guests())
    raise errors.HostUnreachable(problems[0].message)


def _list(fleet: Fleet) -> None:
    listing = fleet.list_vms()
    assert listing.answered == []
    raise errors.HostUnreachable(listing.unreachable[0].message)


@pytest.mark.parametrize("path", [
    pytest.param(_each_host, id="each_host"),
    pytest.param(_list, id="list_vms"),
    pytest.param(lambda f: f.resolve("vm1"), id="resolve NAME with one host"),
    pytest.param(lambda f: f.resolve("far/vm1"), id="resolve HOST/NAME"),
    pytest.param(lambda f: f.host("far"), id="host"),
    pytest.param(lambda f: f.state_of("far", "vm1"), id="state_of"),
])
def test_every_path_to_a_silent_host_ends_at_the_deadline(
        silent: str, path: Callable[[Fleet], object]) -> None:
    with Fleet([HostRef("far", silent)], connect_timeout_s=0.5) as fleet:
        t0 = time.monotonic()
        with pytest.raises(errors.HostUnreachable, match=r"far .* did not answer within 0.5 s"):
            path(fleet)
        assert time.monotonic() - t0 < 2


def test_host_add_of_a_silent_host_records_it_and_ends_at_the_deadline(
        silent: str, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store.db")
    try:
        t0 = time.monotonic()
        added = add_host(store, "far", silent, connect_timeout_s=0.5)
        assert time.monotonic() - t0 < 2
        assert added.info is None and added.problem is not None
        assert "did not answer within 0.5 s" in added.problem
        assert [h.name for h in store.hosts.list()] == ["far"]
    finally:
        store.close()


def test_ctrl_c_interrupts_a_connect_to_a_silent_host() -> None:
    # the guard: a connect without deadline (a blocking C call) would end when the
    # silent host hangs up, after 5 s, and only then see the Ctrl-C
    with silent_host(hang_up_after_s=5) as uri, Fleet([HostRef("far", uri)],
                                                      connect_timeout_s=30) as fleet:
        main = threading.main_thread().ident
        assert main == threading.get_ident()
        timer = threading.Timer(0.3, signal.pthread_kill, args=(main, signal.SIGINT))
        t0 = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            fleet.host("far")
        assert time.monotonic() - t0 < 3


# -- the memory of unreachable hosts -------------------------------------------------


def test_an_unreachable_host_fails_fast_until_it_is_retried(opens: Opens) -> None:
    with Fleet([HostRef("down", UNREACHABLE_URI)], retry_after_s=0.5) as fleet:
        with pytest.raises(errors.HostUnreachable, match="Connection refused"):
            fleet.host("down")
        assert opens.calls == 1
        with pytest.raises(errors.HostUnreachable,
                           match=r"Connection refused.*failed at \d\d:\d\d:\d\d; "
                                 r"not tried again before \d\d:\d\d:\d\d"):
            fleet.host("down")
        _results, problems = fleet.each_host(lambda h: h.name)
        assert "not tried again before" in problems[0].message
        assert opens.calls == 1  # not re-dialled
        time.sleep(0.6)
        with pytest.raises(errors.HostUnreachable):
            fleet.host("down")
        assert opens.calls == 2  # retried once the window passed


def test_a_silent_host_is_not_dialled_again_while_its_connect_hangs(
        silent: str, opens: Opens) -> None:
    with Fleet([HostRef("far", silent)], connect_timeout_s=0.3, retry_after_s=0.1) as fleet:
        with pytest.raises(errors.HostUnreachable, match="did not answer"):
            fleet.host("far")
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(errors.HostUnreachable, match="has not returned yet"):
            fleet.host("far")
        assert time.monotonic() - t0 < 0.2
        assert opens.calls == 1


# -- bugs are bugs -------------------------------------------------------------------


def test_a_bug_in_a_host_thread_is_raised_in_the_caller_with_its_traceback() -> None:
    def buggy(host: Host) -> int:
        return {"a": 1}[host.name + "-missing"]

    with Fleet([HostRef("a", NODE_URI), HostRef("b", NODE2_URI)]) as fleet:
        with pytest.raises(KeyError) as info:
            fleet.each_host(buggy)
    assert any(entry.name == "buggy" for entry in info.traceback)


def test_a_virtlife_error_in_a_host_thread_is_that_hosts_problem() -> None:
    def refuse(host: Host) -> int:
        if host.name == "b":
            raise errors.OperationFailed("cannot do that on b")
        return 1

    with Fleet([HostRef("a", NODE_URI), HostRef("b", NODE2_URI)]) as fleet:
        results, problems = fleet.each_host(refuse)
    assert results == {"a": 1}
    assert [(p.host, p.message) for p in problems] == [("b", "cannot do that on b")]


# -- the hosts follow the inventory --------------------------------------------------


def test_hosts_added_to_or_removed_from_the_inventory_are_seen_without_restart(
        opens: Opens) -> None:
    inventory = [HostRef("a", NODE_URI)]
    with Fleet(lambda: list(inventory)) as fleet:
        assert {r.host for r in fleet.list_vms().rows} == {"a"}
        inventory.append(HostRef("b", NODE2_URI))
        assert sorted(fleet.refs) == ["a", "b"]
        assert fleet.refs["b"] == HostRef("b", NODE2_URI)
        assert {r.host for r in fleet.list_vms().rows} == {"a", "b"}
        host_a = fleet.host("a")
        del inventory[0]
        assert {r.host for r in fleet.list_vms().rows} == {"b"}
        assert host_a.closed
        (conn_a,) = [o for o in opens.opened if o.uri == NODE_URI]
        assert conn_a.closes == [0]
        with pytest.raises(errors.HostNotFound, match="no host named a"):
            fleet.host("a")


def test_a_host_whose_uri_changed_is_reconnected_to_the_new_uri(opens: Opens) -> None:
    inventory = [HostRef("a", NODE_URI)]
    with Fleet(lambda: list(inventory)) as fleet:
        first = fleet.host("a")
        inventory[0] = HostRef("a", NODE2_URI)
        second = fleet.host("a")
        assert first.closed and second.uri == NODE2_URI
        assert {g.name for g in second.guests()} == {"vm-running", "db1"}
    assert opens.open_now() == []
