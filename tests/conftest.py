"""Shared fixtures: an isolated store per test, the test-driver node URIs, recorded
libvirt opens and a silent host (connection tests); how the tests are spread over
pytest-xdist workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from libvirt_faults import Opens, silent_host
from pg_support import (  # noqa: F401 - fixtures for the store's tests
    engine_where,
    pg_cluster,
    pg_store_url,
    pg_template,
    pg_url,
)
from support import NODE_URI

if TYPE_CHECKING:
    from virtlife.lab.guest import GuestImage

# Inventory hosts at libvirt test driver URIs (test:///default, tests/data/node.xml) are
# refused unless this is set (services.uripolicy). The tests add them throughout, and the
# `virtlife` processes they start inherit it; tests/security/ unsets it where it checks
# the default.
os.environ["VIRTLIFE_ALLOW_TEST_URIS"] = "1"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own VIRTLIFE_HOME, so the store starts empty."""
    home = tmp_path / "home"
    monkeypatch.setenv("VIRTLIFE_HOME", str(home))
    monkeypatch.delenv("VIRTLIFE_DB", raising=False)  # the SQLite file, unless a test says
    return home


@pytest.fixture
def node_uri() -> str:
    return NODE_URI


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> Opens:
    """``libvirt.open`` calls recorded (and made to fail or stall on demand)."""
    return Opens(monkeypatch)


@pytest.fixture
def silent() -> Iterator[str]:
    """The URI of a host that accepts TCP connections and never answers."""
    with silent_host() as uri:
        yield uri


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


@pytest.fixture
def fleet_of(store: Any) -> Iterator[Any]:
    """``make(("a", URI), ...)``: a Lifecycle over those hosts, on the test's ``store``
    fixture's journal; every fleet made is closed after the test."""
    from virtlife.services.fleet import Fleet, HostRef
    from virtlife.services.lifecycle import Lifecycle

    made: list[Lifecycle] = []

    def make(*hosts: tuple[str, str]) -> Lifecycle:
        fleet = Fleet([HostRef(n, u) for n, u in hosts], journal=store.journal)
        made.append(Lifecycle(fleet, store.journal))
        return made[-1]

    yield make
    for lc in made:
        lc.fleet.close()


# The test files that use the multi-host lab (``lab_session``): the lab is one per
# machine, so they all run on one xdist worker (``LabFirst``), and first, while the other
# worker takes every other file. Collection refuses a lab test outside this list.
LAB_FILES = (
    "tests/integration/test_migrate_checks_real.py",
    "tests/integration/test_migrate_policy_real.py",
    "tests/integration/test_migrate_real.py",
    "tests/integration/test_migrate_transport_real.py",
    "tests/integration/test_migrate_api_real.py",
    "tests/integration/test_migrate_postcopy_real.py",
    "tests/integration/test_oneplace_lab.py",
    "tests/integration/test_maintenance_real.py",
    "tests/integration/test_console_lab.py",
    # the lab's own up/down tests take it down and kill it: after those that only use it
    "tests/integration/test_lab_hosts.py",
)


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The lab's tests first, in ``LAB_FILES`` order (the order ``LabFirst`` hands them
    to one worker); refuse a test that needs the lab from a file not listed there."""
    for item in items:
        if "lab_session" in getattr(item, "fixturenames", ()) and \
                _file_of(item.nodeid) not in LAB_FILES:
            raise pytest.UsageError(f"{item.nodeid} uses the lab: add its file to "
                                    "LAB_FILES in tests/conftest.py")

    def order(item: pytest.Item) -> int:
        path = _file_of(item.nodeid)
        return LAB_FILES.index(path) if path in LAB_FILES else len(LAB_FILES)

    items.sort(key=order)  # stable: file order kept within each file


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Like ``--dist loadfile`` (a file's tests stay on one worker, so its module fixtures
    are made once), with every lab file in one unit: the lab comes up once per session
    and no worker idles waiting for another's lab. (xdist's ``loadgroup`` would do it, but
    its group suffix on node ids has no effect under pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class LabFirst(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = _file_of(nodeid)
            return "lab" if path in LAB_FILES else path

    return LabFirst(config, log)


@pytest.fixture(scope="session")
def real_stack() -> GuestImage:
    """The test guest, once this machine runs the real stack (integration and security
    tests); skipped where it cannot, failed instead under CI."""
    from virtlife.lab.guest import build_guest
    from virtlife.lab.hostprep import can_run_real_stack, prepare_local_host

    ok, why = can_run_real_stack()
    if not ok:
        message = f"the real libvirt + QEMU stack cannot run here: {why}"
        if os.environ.get("VIRTLIFE_REQUIRE_REAL_STACK") == "1":  # set by .ci/run
            pytest.fail(message)
        pytest.skip(message)
    prepare_local_host()
    return build_guest()
