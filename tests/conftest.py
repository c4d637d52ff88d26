"""Shared fixtures: an isolated store per test and the test-driver node URIs; how the
tests are spread over pytest-xdist workers."""

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


LAB_GROUP = "lab"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For ``--dist loadgroup``: every test that needs the multi-host lab goes to one
    worker (the ``lab`` group: the lab is one per machine, brought up once per session),
    first, so that the other worker takes everything else meanwhile; every other test
    file is a group of its own (as ``--dist loadfile``, so module fixtures are made once).
    """
    def needs_lab(item: pytest.Item) -> bool:
        return "lab_session" in getattr(item, "fixturenames", ())

    for item in items:
        group = LAB_GROUP if needs_lab(item) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    def order(item: pytest.Item) -> int:
        if not needs_lab(item):
            return 2
        # the lab's own tests take it down and kill it: after the tests that only use it
        return 1 if item.nodeid.startswith("tests/integration/test_lab_hosts.py") else 0

    items.sort(key=order)  # stable: the lab's tests first, in file order
