"""Waiting is driven by libvirt events (test driver), with clear timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.hypervisor import DomainEvent, Host
from virtlife.hypervisor.events import EventKind
from virtlife.services import wait
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.wait import Watch
from virtlife.states import VMState


@pytest.fixture
def host() -> Iterator[Host]:
    with Host.open("t", NODE_URI) as h:
        yield h


def test_state_already_reached_returns_at_once(host: Host) -> None:
    guest = host.lookup("vm-running")
    with Watch(host, "vm-running") as watch:
        state = watch.until_state(guest, lambda s: s.state is VMState.RUNNING, 5,
                                  describe="running")
    assert state.state is VMState.RUNNING


def test_an_event_wakes_the_waiter_without_polling(host: Host,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # with the safety re-check pushed to 60 s, only an event can end the wait early
    monkeypatch.setattr(wait, "SAFETY_RECHECK_S", 60.0)
    guest = host.lookup("vm-running")
    with Watch(host, "vm-running") as watch:
        threading.Timer(0.2, guest.suspend).start()
        t0 = time.monotonic()
        state = watch.until_state(guest, lambda s: s.state is VMState.PAUSED, 30,
                                  describe="paused")
        elapsed = time.monotonic() - t0
    assert str(state) == "paused (user)"
    assert elapsed < 10
    assert [(e.kind, e.event) for e in watch.events] == [(EventKind.LIFECYCLE, "suspended")]


def test_events_of_other_vms_are_not_collected(host: Host) -> None:
    with Watch(host, "vm-running") as watch:
        host.lookup("vm-paused").resume()
        host.lookup("vm-running").suspend()
        watch.until_event(lambda e: e.event == "suspended", 5, describe="suspend")
    assert {e.vm for e in watch.events} == {"vm-running"}


def test_timeout_says_what_was_wanted_and_what_is(host: Host) -> None:
    guest = host.lookup("vm-off")
    with Watch(host, "vm-off") as watch:
        with pytest.raises(errors.OperationTimeout,
                           match=r"vm-off did not reach running within 0.3 s: "
                                 r"it is shut off \(unknown\)"):
            watch.until_state(guest, lambda s: s.state is VMState.RUNNING, 0.3,
                              describe="running")


def test_agent_wait_where_the_driver_has_no_agent_fails_at_once(host: Host) -> None:
    guest = host.lookup("vm-running")
    t0 = time.monotonic()
    with Watch(host, "vm-running") as watch, pytest.raises(errors.Unsupported):
        watch.until_agent(guest, 30)
    assert time.monotonic() - t0 < 10


def test_until_event_times_out_cleanly(host: Host) -> None:
    with Watch(host, "vm-off") as watch, pytest.raises(errors.OperationTimeout,
                                                       match="no guest reset within"):
        watch.until_event(lambda e: e.kind is EventKind.REBOOT, 0.2, describe="guest reset")


# -- one router per host: no thread and no subscription per wait ----------------------------


def test_successive_watches_share_one_tap_and_start_no_thread(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    taps: list[object] = []
    real_add_tap = host.add_tap
    monkeypatch.setattr(host, "add_tap", lambda tap: (taps.append(tap), real_add_tap(tap)))
    guest = host.lookup("vm-running")
    with Watch(host, "vm-running"):
        pass  # the first watch taps the host (its router is made once)
    threads = threading.active_count()
    for _ in range(5):
        with Watch(host, "vm-running") as watch:
            guest.suspend()
            watch.until_state(guest, lambda s: s.state is VMState.PAUSED, 5,
                              describe="paused")
            guest.resume()
            watch.until_event(lambda e: e.event == "resumed", 5, describe="resume")
        assert threading.active_count() == threads
    assert len(taps) == 1
    assert wait.router_of(host).watching == 0


def test_successive_operations_reuse_the_one_subscription(
        lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    host = lifecycle.fleet.host("t")
    added: list[object] = []
    real_tap, real_listener = host.add_tap, host.add_listener
    monkeypatch.setattr(host, "add_tap", lambda tap: (added.append(tap), real_tap(tap)))
    monkeypatch.setattr(host, "add_listener", lambda listener, **kw: (
        added.append(listener), real_listener(listener, **kw)))
    lifecycle.suspend("vm-running")  # the first operation taps the host...
    assert len(added) == 1
    before = list(added)
    for _ in range(3):
        assert str(lifecycle.resume("vm-running", sync_time=False).state) == \
            "running (unpaused)"
        assert str(lifecycle.suspend("vm-running").state) == "paused (user)"
    assert added == before  # ...and never again


def test_an_event_between_the_request_and_the_wait_is_not_missed(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wait, "SAFETY_RECHECK_S", 60.0)
    guest = host.lookup("vm-running")
    with Watch(host, "vm-running") as watch:
        guest.suspend()
        deadline = time.monotonic() + 5
        while not watch.events and time.monotonic() < deadline:
            time.sleep(0.01)  # the event has come before anyone waits
        t0 = time.monotonic()
        event = watch.until_event(lambda e: e.event == "suspended", 30, describe="suspend")
    assert event.vm == "vm-running"
    assert time.monotonic() - t0 < 1


def test_an_event_from_before_the_watch_is_not_collected(host: Host) -> None:
    arrived = threading.Event()
    host.add_listener(lambda e: arrived.set())
    host.lookup("vm-running").suspend()
    assert arrived.wait(5)
    with Watch(host, "vm-running") as watch:
        with pytest.raises(errors.OperationTimeout):
            watch.until_event(lambda e: e.event == "suspended", 0.2, describe="suspend")
    assert watch.events == []


def test_a_host_event_reaches_every_watch_and_a_closed_watch_gets_nothing(
        host: Host) -> None:
    event = DomainEvent("t", "", EventKind.HOST, "disconnected", "end of file")
    router = wait.router_of(host)
    with Watch(host, "vm-running") as one, Watch(host, "vm-off") as two:
        closed = Watch(host, "vm-off")
        closed.close()
        assert router.watching == 2
        router.route(event)
    assert one.events == [event] and two.events == [event]
    assert closed.events == []
    assert router.watching == 0


def test_a_failing_tap_is_logged_and_the_others_still_get_the_event(
        host: Host, caplog: pytest.LogCaptureFixture) -> None:
    got: list[DomainEvent] = []

    def broken(event: DomainEvent) -> None:
        raise RuntimeError(f"broken tap got {event.event}")

    host.add_tap(broken)
    host.add_tap(got.append)
    host.lookup("vm-running").suspend()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [e.event for e in got] == ["suspended"]
    assert "broken tap got suspended" in caplog.text
    host.remove_tap(got.append)
    host.remove_tap(broken)
