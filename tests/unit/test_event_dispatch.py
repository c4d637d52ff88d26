"""Events leave libvirt's thread at once: each listener has its own queue, drained in order.

A slow listener delays neither another listener nor libvirt's event loop; a listener
that raises is logged with its traceback; listeners survive a reconnect. The event
tables match the libvirt binding's constants.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import libvirt
import pytest

from libvirt_faults import Opens, wait_until
from support import NODE2_URI, NODE_URI
from virtlife.hypervisor import DomainEvent, Host, dispatch
from virtlife.hypervisor.events import (
    AGENT_REASONS,
    AGENT_STATES,
    CLOSE_REASONS,
    DOMAIN_EVENT_IDS,
    LIFECYCLE_EVENTS,
    EventKind,
)


@pytest.fixture
def host() -> Iterator[Host]:
    with Host.open("t", NODE_URI) as h:
        yield h


def blocked_until(release: threading.Event) -> Callable[[DomainEvent], None]:
    """A listener that blocks on each event until ``release`` is set."""

    def listener(_event: DomainEvent) -> None:
        release.wait(10)

    return listener


class Recorder:
    """A listener that records what it gets, and when."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []
        self.arrived = threading.Event()

    def __call__(self, event: DomainEvent) -> None:
        self.events.append(event)
        self.arrived.set()

    def kinds(self) -> list[tuple[EventKind, str]]:
        return [(e.kind, e.event) for e in self.events]


def test_a_slow_listener_does_not_delay_another_listeners_events(host: Host) -> None:
    release = threading.Event()
    fast = Recorder()
    host.add_listener(blocked_until(release))  # subscribed first
    host.add_listener(fast)
    try:
        t0 = time.monotonic()
        host.lookup("vm-running").suspend()
        assert fast.arrived.wait(2), "the fast listener waited for the slow one"
        assert time.monotonic() - t0 < 2
        assert fast.kinds() == [(EventKind.LIFECYCLE, "suspended")]
    finally:
        release.set()


def test_a_slow_listener_does_not_hold_up_libvirts_event_thread(host: Host) -> None:
    # every connection's events (and keepalives) run on libvirt's one event thread
    release = threading.Event()
    host.add_listener(blocked_until(release))
    try:
        host.lookup("vm-running").suspend()  # the slow listener now blocks on it
        with Host.open("other", NODE2_URI) as other:
            seen = Recorder()
            other.add_listener(seen)
            other.lookup("vm-running").suspend()
            assert seen.arrived.wait(2), "another host's events were held up"
    finally:
        release.set()


def test_a_listener_that_raises_is_logged_with_its_traceback(
        host: Host, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="virtlife")

    def broken(event: DomainEvent) -> None:
        raise RuntimeError(f"broken listener got {event.event}")

    after = Recorder()
    host.add_listener(broken)
    host.add_listener(after)
    host.lookup("vm-running").suspend()
    assert after.arrived.wait(2)
    assert wait_until(lambda: any(r.exc_info for r in caplog.records))
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.levelno == logging.ERROR
    assert record.name == "virtlife.hypervisor.dispatch"
    assert "broken" in record.getMessage() and "host t" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    # the handler keeps the record before it writes its text: wait for the text too
    assert wait_until(lambda: "broken listener got suspended" in caplog.text)


def test_a_listener_that_falls_behind_loses_new_events_with_a_warning(
        host: Host, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="virtlife")
    every = Recorder()  # keeps up (a full-size queue): tells when libvirt delivered all six
    host.add_listener(every)
    monkeypatch.setattr(dispatch, "LISTENER_QUEUE_SIZE", 2)  # for the listener below
    entered, release = threading.Event(), threading.Event()
    got = Recorder()

    def stuck(event: DomainEvent) -> None:
        entered.set()
        release.wait(10)
        got(event)

    host.add_listener(stuck)
    guest = host.lookup("vm-running")
    guest.suspend()
    assert entered.wait(2)  # the listener holds the first event
    guest.resume()  # five more: two are queued, three dropped
    for _ in range(2):
        guest.suspend()
        guest.resume()
    assert wait_until(lambda: len(every.events) == 6)
    assert "too slow" in caplog.text
    release.set()
    assert wait_until(lambda: "caught up; 3 events were dropped" in caplog.text)
    assert [e.event for e in got.events] == ["suspended", "resumed", "suspended"]


def test_listeners_survive_a_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    opens = Opens(monkeypatch)
    with Host.open("t", NODE_URI) as host:
        seen = Recorder()
        host.add_listener(seen)
        opens.opened[0].peer_closes()
        assert wait_until(lambda: (EventKind.HOST, "disconnected") in seen.kinds())
        host.lookup("vm-running").suspend()  # on a new connection
        assert wait_until(lambda: len(seen.events) == 3)
        assert seen.kinds() == [(EventKind.HOST, "disconnected"),
                                (EventKind.HOST, "connected"),
                                (EventKind.LIFECYCLE, "suspended")]
        assert seen.events[0].detail == "end of file"
        assert len(opens.opened) == 2 and opens.opened[0].closes == [0]


def test_a_removed_listener_gets_nothing_more(host: Host) -> None:
    removed, kept = Recorder(), Recorder()
    host.add_listener(removed)
    host.add_listener(kept)
    host.remove_listener(removed)
    host.lookup("vm-running").suspend()
    assert kept.arrived.wait(2)
    time.sleep(0.1)
    assert removed.events == []


def test_a_subscription_with_state_starts_with_the_connection_state(host: Host) -> None:
    plain, stated = Recorder(), Recorder()
    host.add_listener(plain)
    host.add_listener(stated, with_state=True)
    assert stated.arrived.wait(2)
    assert stated.kinds() == [(EventKind.HOST, "connected")]
    assert plain.events == []


# -- the tables against the binding --------------------------------------------------


def test_event_kinds_are_an_enum_that_never_equals_a_string() -> None:
    event = DomainEvent("h", "vm", EventKind.HOST, "connected")
    assert event.kind != "host"  # type: ignore[comparison-overlap]
    assert event.as_dict()["kind"] == "host"
    assert str(event) == "h/vm: host connected"
    assert {k.value for k in EventKind} == {"lifecycle", "agent", "reboot", "pm", "host"}


def test_the_event_id_table_matches_libvirt() -> None:
    for name, value, _kind in DOMAIN_EVENT_IDS:
        assert getattr(libvirt, f"VIR_DOMAIN_EVENT_ID_{name}") == value, name
    kinds = {name: kind for name, _value, kind in DOMAIN_EVENT_IDS}
    assert kinds == {"LIFECYCLE": EventKind.LIFECYCLE, "REBOOT": EventKind.REBOOT,
                     "PMWAKEUP": EventKind.PM, "PMSUSPEND": EventKind.PM,
                     "AGENT_LIFECYCLE": EventKind.AGENT}


def _constant(word: str) -> str:
    """A detail word as libvirt names it: "post-copy failed" -> "POSTCOPY_FAILED"."""
    special = {"I/O error": "IOERROR"}
    return special.get(word) or word.upper().replace("-", "").replace(" ", "_")


def test_the_lifecycle_tables_match_libvirt() -> None:
    for position, (event, details) in enumerate(LIFECYCLE_EVENTS):
        prefix = f"VIR_DOMAIN_EVENT_{event.upper()}"
        assert getattr(libvirt, prefix) == position, event
        for detail_position, detail in enumerate(details):
            constant = f"{prefix}_{_constant(detail)}"
            assert getattr(libvirt, constant) == detail_position, constant
        # and no detail this binding knows is missing from the table
        known = [n for n in dir(libvirt) if n.startswith(f"{prefix}_")]
        assert len(known) == len(details), (event, known)
    events = [n for n in dir(libvirt) if n.startswith("VIR_DOMAIN_EVENT_")
              and "_" not in n.removeprefix("VIR_DOMAIN_EVENT_")]
    assert len(events) == len(LIFECYCLE_EVENTS), events


def test_agent_and_close_reason_tables_match_libvirt() -> None:
    agent = "VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE"
    assert AGENT_STATES == {libvirt.__dict__[f"{agent}_STATE_CONNECTED"]: "connected",
                            libvirt.__dict__[f"{agent}_STATE_DISCONNECTED"]: "disconnected"}
    assert AGENT_REASONS == {libvirt.__dict__[f"{agent}_REASON_UNKNOWN"]: "unknown",
                             libvirt.__dict__[f"{agent}_REASON_DOMAIN_STARTED"]:
                                 "domain started",
                             libvirt.__dict__[f"{agent}_REASON_CHANNEL"]: "channel event"}
    assert CLOSE_REASONS == {libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
                             libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
                             libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
                             libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "client closed"}
