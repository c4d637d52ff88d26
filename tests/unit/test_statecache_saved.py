"""The served listing and managed-saved VMs: confirmed from the host's managed-save
list in one round trip, and read again once the image is gone (libvirt sends no event
for ``managedsave-remove``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api_support import Served, served
from support import NODE_URI
from virtlife.services import statecache


@pytest.fixture
def api(isolated_home: Path) -> Iterator[Served]:
    with served(isolated_home / "virtlife.db", {"t": NODE_URI}) as s:
        deadline = time.monotonic() + 10
        while not s.app.state.feed.cache.fresh() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield s


def test_a_managed_saved_vm_is_confirmed_without_reading_the_host_again(
        api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = api.app.state.feed.cache
    reads: list[str] = []
    real = statecache.rows_of

    def counted(host: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(host.name)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(statecache, "rows_of", counted)
    listing = cache.listing().listing
    assert {r.name: str(r.state) for r in listing.rows}["vm-saved"] == "saved (managed save)"
    assert reads == []  # the host's managed-save list was enough

    cache.fleet.host("t").lookup("vm-saved").managed_save_remove()  # no event for this
    listing = cache.listing().listing
    assert {r.name: r.state.state.value for r in listing.rows}["vm-saved"] != "saved"
    assert reads == ["t"]


def test_listings_at_once_share_one_managed_save_round_trip_begun_after_they_asked(
        api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = api.app.state.feed.cache
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
        api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife import errors

    cache = api.app.state.feed.cache
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
