"""The fleet listing's per-host deadline and its one caller thread per host.

A silent host (a TCP port that accepts and never answers: ``libvirt.open`` blocks on
it as on a stopped daemon) must not make a listing wait past the deadline, nor leave
one more thread behind at every call.
"""

from __future__ import annotations

import threading
import time

from support import NODE2_URI, NODE_URI
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.hostcalls import Busy, HostCaller


def test_a_silent_host_is_unreachable_at_the_deadline_and_the_others_are_listed(
        silent: str) -> None:
    with Fleet([HostRef("a", NODE_URI), HostRef("b", NODE2_URI), HostRef("far", silent)],
               list_deadline_s=0.5) as fleet:
        t0 = time.monotonic()
        listing = fleet.list_vms()
        elapsed = time.monotonic() - t0
    assert elapsed < 1.5
    assert listing.answered == ["a", "b"]
    assert [p.host for p in listing.unreachable] == ["far"]
    assert "did not answer within 0.5 s" in listing.unreachable[0].message


def test_listing_again_with_a_silent_host_adds_no_thread_and_returns_at_once(
        silent: str) -> None:
    with Fleet([HostRef("a", NODE_URI), HostRef("far", silent)],
               list_deadline_s=0.4) as fleet:
        fleet.list_vms()
        threads = threading.active_count()
        for _ in range(3):
            t0 = time.monotonic()
            listing = fleet.list_vms()
            assert time.monotonic() - t0 < 0.3  # the host is still busy: refused at once
            assert [p.host for p in listing.unreachable] == ["far"]
            assert "has not answered a call made" in listing.unreachable[0].message
            assert listing.answered == ["a"]
        assert threading.active_count() == threads


def test_the_listing_reads_every_field_in_bulk() -> None:
    with Fleet([HostRef("a", NODE_URI)]) as fleet:
        rows = {r.name: r for r in fleet.list_vms().rows}
        guests = {g.name: g.info() for g in fleet.host("a").guests()}
    assert set(rows) == set(guests)
    for name, row in rows.items():
        info = guests[name]
        assert (row.state, row.vcpus, row.memory_mib, row.persistent) == (
            info.state, info.vcpus, info.max_memory_mib, info.persistent), name


def test_a_caller_skips_a_call_given_up_before_it_started() -> None:
    caller = HostCaller("h")
    gate = threading.Event()
    ran: list[str] = []
    first = caller.submit(lambda: gate.wait(5))
    second = caller.submit(lambda: ran.append("second"))
    assert not isinstance(first, Busy) and not isinstance(second, Busy)
    assert second.abandon()
    gate.set()
    assert first.done.wait(5) and first.value is True
    third = caller.submit(lambda: ran.append("third"))
    assert not isinstance(third, Busy) and third.done.wait(5)
    assert ran == ["third"]
    caller.stop()


def test_a_caller_busy_with_a_call_given_up_refuses_new_ones() -> None:
    caller = HostCaller("h")
    gate = threading.Event()
    first = caller.submit(lambda: gate.wait(5))
    assert not isinstance(first, Busy)
    while first.started is None:
        time.sleep(0.01)
    assert first.abandon()
    refused = caller.submit(lambda: 1)
    assert isinstance(refused, Busy) and "has not answered a call made" in refused.reason
    gate.set()
    assert first.done.wait(5)
    for _ in range(100):  # the thread marks itself free just after the call returns
        again = caller.submit(lambda: 2)
        if not isinstance(again, Busy):
            break
        time.sleep(0.01)
    assert not isinstance(again, Busy) and again.done.wait(5) and again.value == 2
    caller.stop()


def test_a_call_given_up_while_it_runs_frees_its_place_in_the_pool_for_other_hosts() -> None:
    from libvirt_faults import wait_until
    from virtlife.workpool import WorkPool

    pool = WorkPool("t-stuck", 1)
    frozen, other = HostCaller("frozen", pool), HostCaller("other", pool)
    gate = threading.Event()
    stuck = frozen.submit(lambda: gate.wait(5))
    assert not isinstance(stuck, Busy)
    assert wait_until(lambda: stuck.started is not None)
    waiting = other.submit(lambda: "answered")  # queued: the one worker is taken
    assert not isinstance(waiting, Busy)
    try:
        assert stuck.abandon()  # given up at its deadline: its worker no longer counts
        assert waiting.done.wait(5) and waiting.value == "answered"
        assert pool.threads == 2
    finally:
        gate.set()
    assert stuck.done.wait(5)
    assert wait_until(lambda: pool.threads == 1)  # the extra worker ends once idle
    pool.close()
