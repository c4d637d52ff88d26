"""Waiting is driven by libvirt events (test driver), with clear timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.events import EventKind
from virtlife.services import wait
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
