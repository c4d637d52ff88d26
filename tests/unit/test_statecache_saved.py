"""The served listing and managed-saved VMs: confirmed from the host's managed-save
list (one round trip per host, or none while the last list is younger than the
bound), and read again once the image is gone (libvirt sends no event for
``managedsave-remove``: a removal shows within ``saved_max_age_s``). The cache is
driven directly here (no event threads), its clock injected."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support import NODE_URI
from virtlife.services import statecache
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.statecache import StateCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> Iterator[StateCache]:
    """A cache of the host ``t`` (its stream taken as connected, then listed once)."""
    with Fleet([HostRef("t", NODE_URI)]) as fleet:
        found = StateCache(fleet, clock=clock, saved_max_age_s=10.0)
        found.host_event("t", "connected")
        found.fill("t")
        assert found.fresh()
        yield found


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Count the calls of ``statecache.NAME`` (by host name)."""
    calls: list[str] = []
    real = getattr(statecache, name)

    def counted(host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(host.name)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(statecache, name, counted)
    return calls


def saved_state(cache: StateCache) -> str:
    return {r.name: r.state.state.value for r in cache.listing().listing.rows}["vm-saved"]


def test_a_managed_saved_vm_is_confirmed_without_reading_the_host_again(
        cache: StateCache, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counting(monkeypatch, "rows_of")
    lists = counting(monkeypatch, "managed_saved")
    listing = cache.listing().listing
    assert {r.name: str(r.state) for r in listing.rows}["vm-saved"] == "saved (managed save)"
    assert reads == [] and lists == []  # the fill's managed-save list, younger than 10 s


def test_a_removed_image_shows_within_the_bound(
        cache: StateCache, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counting(monkeypatch, "rows_of")
    lists = counting(monkeypatch, "managed_saved")
    cache.fleet.host("t").lookup("vm-saved").managed_save_remove()  # no event for this
    clock.now += 10.0  # the list is 10 s old: still used (what the display may lag)
    assert saved_state(cache) == "saved" and lists == [] and reads == []
    clock.now += 0.5  # older than the bound: asked again, the VM read again
    assert saved_state(cache) != "saved"
    assert lists == ["t"] and reads == ["t"]


def test_an_event_of_the_host_drops_its_list(
        cache: StateCache, monkeypatch: pytest.MonkeyPatch) -> None:
    lists = counting(monkeypatch, "managed_saved")
    other = next(r for r in cache.listing().listing.rows if r.name != "vm-saved")
    cache.vm_event("t", other.uuid)  # e.g. a managedsave: the list may have changed
    assert saved_state(cache) == "saved"
    assert lists == ["t"]  # asked again at once, not after the bound
    assert saved_state(cache) == "saved" and lists == ["t"]  # then kept


def test_a_list_asked_before_an_event_is_not_kept_after_it(
        cache: StateCache, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    real = statecache.managed_saved
    calls: list[str] = []
    uuid = next(r.uuid for r in cache.listing().listing.rows if r.name != "vm-saved")

    def racing(host: Any) -> Any:
        calls.append(host.name)
        names = real(host)
        if len(calls) == 1:
            cache.vm_event("t", uuid)  # an event while the list was on its way
        return names

    monkeypatch.setattr(statecache, "managed_saved", racing)
    clock.now += 11.0
    cache.listing()
    cache.listing()
    assert calls == ["t", "t"]  # the first answer was used once, never kept


def test_the_background_check_keeps_the_lists_young(
        cache: StateCache, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    lists = counting(monkeypatch, "managed_saved")
    clock.now += 9.0
    cache.check_saved()  # the owner's background call: the host has a managed-saved VM
    assert lists == ["t"]
    clock.now += 9.0  # 18 s after the fill, 9 s after the check
    assert saved_state(cache) == "saved" and lists == ["t"]


def test_listings_at_once_share_one_managed_save_round_trip_begun_after_they_asked(
        cache: StateCache, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    clock.now += 11.0  # the fill's list too old: each listing needs a round trip
    real = statecache.managed_saved
    calls: list[int] = []
    first_in, release = threading.Event(), threading.Event()

    def gated(host: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the first listing's round trip waits here
            first_in.set()
            assert release.wait(10)
        return real(host)

    monkeypatch.setattr(statecache, "managed_saved", gated)
    states: list[str] = []

    def list_once() -> None:
        rows = cache.listing().listing.rows
        states.append({r.name: r.state.state.value for r in rows}["vm-saved"])

    first = threading.Thread(target=list_once)
    first.start()
    assert first_in.wait(10)
    later = [threading.Thread(target=list_once) for _ in range(4)]
    for t in later:
        t.start()
    deadline = time.monotonic() + 10  # all four wait for the next round trip
    while not (("t",) in cache._saved._waiting and cache._saved._waiting[("t",)].callers == 4):
        assert time.monotonic() < deadline
        threading.Event().wait(0.005)
    release.set()
    for t in [first, *later]:
        t.join(10)
    assert states == ["saved"] * 5
    assert len(calls) == 2  # the running one (not theirs: it began before they asked), then one


def test_a_host_whose_managed_save_list_fails_is_unreachable_not_a_live_relisting(
        cache: StateCache, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife import errors

    clock.now += 11.0
    reads: list[str] = []
    real = statecache.rows_of

    def counted(host: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(host.name)
        return real(host, *args, **kwargs)

    def failing(host: Any) -> Any:
        raise errors.HostUnreachable(f"host {host.name} did not answer")

    monkeypatch.setattr(statecache, "rows_of", counted)
    monkeypatch.setattr(statecache, "managed_saved", failing)
    answer = cache.listing()
    assert [p.host for p in answer.listing.unreachable] == ["t"]
    assert "did not answer" in answer.listing.unreachable[0].message
    assert answer.listing.rows == [] and answer.listing.answered == []
    assert reads == []  # no host was listed again live for it
