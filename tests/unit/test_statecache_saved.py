"""The served listing and managed-saved VMs: confirmed from the host's managed-save
list in one round trip, and read again once the image is gone (libvirt sends no event
for ``managedsave-remove``)."""

from __future__ import annotations

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
