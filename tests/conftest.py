"""Shared fixtures: an isolated store per test and the test-driver node URIs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import NODE_URI


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own VIRTLIFE_HOME, so the store starts empty."""
    home = tmp_path / "home"
    monkeypatch.setenv("VIRTLIFE_HOME", str(home))
    return home


@pytest.fixture
def node_uri() -> str:
    return NODE_URI


@pytest.fixture
def lifecycle(tmp_path: Path) -> Iterator[object]:
    """A Lifecycle service over one test-driver host named ``t`` with a journal."""
    from virtlife.services.fleet import Fleet, HostRef
    from virtlife.services.lifecycle import Lifecycle
    from virtlife.store import open_store

    store = open_store(tmp_path / "store.db")
    fleet = Fleet([HostRef("t", NODE_URI)], journal=store.journal)
    yield Lifecycle(fleet, store.journal)
    fleet.close()
    store.close()
