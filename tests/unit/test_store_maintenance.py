"""Migration 0012 (host maintenance) on both engines: each host's mode, a journal row's
parent operation and a cancel asked of a running row; a store made before 0012 is
brought forward with every host active and no row a child."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from virtlife.store import Store, db, open_store
from virtlife.store.journal import Actor

ME = Actor("tester", "test")


def _where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return tmp_path / "virtlife.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return _where(request, tmp_path)


@pytest.fixture
def store(where: Path | str) -> Iterator[Store]:
    with open_store(where) as opened:
        yield opened


def test_a_host_is_active_until_put_in_maintenance_and_back(store: Store) -> None:
    store.hosts.add("hv1", "qemu:///system")
    store.hosts.add("hv2", "qemu+tcp://10.0.0.2/system")
    assert [(h.name, h.mode) for h in store.hosts.list()] == [("hv1", "active"),
                                                            ("hv2", "active")]
    before = store.hosts.set_mode("hv2", "maintenance")
    assert before.mode == "active"
    assert store.hosts.get("hv2").maintenance and not store.hosts.get("hv1").maintenance
    store.hosts.set_mode("hv2", "active")
    assert store.hosts.get("hv2").mode == "active"
    with pytest.raises(ValueError, match="host mode"):
        store.hosts.set_mode("hv1", "drained")


def test_children_carry_their_parent_and_a_cancel_reaches_the_running_row(
        store: Store) -> None:
    journal = store.journal
    parent = journal.begin(op_id="evac00000001", host="hv1", vm="", operation="maintenance",
                           actor=ME, lock_key="maintenance:hv1")
    journal.begin(op_id="mig000000001", host="hv1", vm="web1", operation="migrate",
                  actor=ME, lock_key="u1", parent=parent.op_id)
    journal.record("hv1", "web2", "migrate", "error", 1.5, "failed", actor=ME,
                   op_id="mig000000002", parent=parent.op_id)
    journal.record("hv1", "web3", "start", "ok", 0.1, "running", actor=ME)
    kids = journal.children(parent.op_id)
    assert [k.op_id for k in kids] == ["mig000000001", "mig000000002"]
    assert all(k.parent_op_id == parent.op_id for k in kids)
    got = journal.get("mig000000001")
    assert got is not None and got.as_dict()["parent_op_id"] == parent.op_id
    assert journal.get(parent.op_id) is not None
    assert not journal.cancel_asked(parent.op_id)
    assert journal.ask_cancel(parent.op_id)
    assert journal.cancel_asked(parent.op_id)
    found = journal.get(parent.op_id)
    assert found is not None and found.cancel_asked
    journal.finish(parent.op_id, "ok", "evacuated", 2.0)
    assert not journal.ask_cancel(parent.op_id)  # it ended: nothing to ask
    assert not journal.ask_cancel("nosuchop0000")


def test_a_store_from_before_0012_comes_forward_with_every_host_active(
        where: Path | str, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [name for name, _ in db.MIGRATIONS]
    assert names.index("0012_host_maintenance") == 11
    with monkeypatch.context() as m:
        m.setattr(db, "MIGRATIONS", db.MIGRATIONS[:11])
        with open_store(where) as old:
            now = old.database.format_ts(datetime.now(UTC))
            old.database.write("INSERT INTO hosts (name, uri, added_at) VALUES (?, ?, ?)",
                               ("hv1", "qemu:///system", now))
            old.database.write(  # as the 0011 journal wrote it: no parent, no cancel
                "INSERT INTO journal (op_id, started_at, host, vm, operation, outcome, "
                "duration_s, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("old000000001", now, "hv1", "web1", "start", "ok", 0.1, "running"))
            assert "mode" not in old.database.columns("hosts")
    with open_store(where) as new:
        assert [(h.name, h.mode) for h in new.hosts.list()] == [("hv1", "active")]
        row = new.journal.get("old000000001")
        assert row is not None and row.parent_op_id == "" and not row.cancel_asked


def test_the_last_active_host_is_not_put_in_maintenance(store: Store) -> None:
    store.hosts.add("hv1", "qemu:///system")
    store.hosts.add("hv2", "qemu+tcp://10.0.0.2/system")
    assert store.hosts.enter_maintenance("hv1")
    assert store.hosts.enter_maintenance("hv1")  # already: stays so
    assert not store.hosts.enter_maintenance("hv2")  # hv1 is away: hv2 is the last
    assert [(h.name, h.mode) for h in store.hosts.list()] == [("hv1", "maintenance"),
                                                            ("hv2", "active")]
