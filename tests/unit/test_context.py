"""What a front end opens: the fleet follows the inventory while the process runs, and a
``-c URI`` command works without a usable store (a warning, never a failure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.services.context import open_services


def test_a_host_added_or_removed_is_seen_without_a_restart(tmp_path: Path) -> None:
    with open_services(store_path=tmp_path / "s.db") as s:
        assert sorted(s.fleet.refs) == ["local"]  # the implicit local host
        store = s.need_store()
        store.hosts.add("a", NODE_URI)
        store.hosts.add("b", NODE2_URI)
        assert sorted(s.fleet.refs) == ["a", "b"]
        assert s.fleet.resolve("db1").host.name == "b"
        store.hosts.remove("b")
        assert sorted(s.fleet.refs) == ["a"]
        with pytest.raises(errors.VMNotFound):
            s.fleet.resolve("db1")


def test_a_connect_uri_keeps_to_that_uri(tmp_path: Path) -> None:
    with open_services(NODE_URI, store_path=tmp_path / "s.db") as s:
        s.need_store().hosts.add("other", NODE2_URI)
        assert [r.uri for r in s.fleet.refs.values()] == [NODE_URI]


def test_an_unusable_store_costs_only_the_journal_with_a_uri(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with open_services(NODE_URI, store_path=blocker / "s.db") as s:
        assert s.store is None and s.facts is None
        assert "continuing without the journal" in s.warnings[0]
        assert s.lifecycle.suspend("vm-running").state.state.value == "paused"
        assert s.interrupted() == 0
        with pytest.raises(errors.StoreUnavailable):
            s.need_store()
        with pytest.raises(errors.StoreUnavailable):
            s.lifecycle.history()


def test_without_a_uri_an_unusable_store_is_an_error_saying_which_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(errors.StoreUnavailable, match=str(blocker)) as err:
        open_services(store_path=blocker / "s.db")
    assert err.value.exit_code == 7


def test_default_host_is_the_only_one_or_an_error_naming_them(tmp_path: Path) -> None:
    with open_services(store_path=tmp_path / "s.db") as s:
        assert s.default_host() == "local"
        s.need_store().hosts.add("a", NODE_URI)
        s.need_store().hosts.add("b", NODE2_URI)
        with pytest.raises(errors.HostNotFound, match=r"several hosts are configured \(a, b\)"):
            s.default_host()
