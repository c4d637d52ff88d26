"""The store's other tables on both engines (SQLite, PostgreSQL): tokens, facts, freezes,
saved images and VM places, the journal's lock and marks, and the SQL dialect layer.

Each test runs on a fresh SQLite file and on a fresh database of the private PostgreSQL
cluster (``pg_support``: copied from one the session migrated); the rows must read back
the same from either.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from virtlife import errors
from virtlife.store import Store, open_store
from virtlife.store.facts import StoredFacts
from virtlife.store.freezes import FreezeKind, FreezeMark
from virtlife.store.images import ImageStatus
from virtlife.store.journal import Actor, Held
from virtlife.store.sql import postgresql, postgresql_ddl
from virtlife.store.tokens import Role

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    where: Path | str = tmp_path / "virtlife.db"
    if request.param == "postgresql":
        where = request.getfixturevalue("pg_store_url")
    with open_store(where) as opened:
        yield opened


def test_tokens_are_created_checked_listed_and_revoked(store: Store) -> None:
    secret = store.tokens.create("ci", role=Role.READER)
    checked = store.tokens.check(secret)
    assert checked is not None and checked.role is Role.READER
    assert store.tokens.check(secret + "x") is None
    with pytest.raises(errors.AlreadyExists):
        store.tokens.create("ci")
    assert [t.name for t in store.tokens.list()] == ["ci"]
    assert store.tokens.take_carried_over() == []
    store.tokens.revoke("ci")
    with pytest.raises(errors.NotFound):
        store.tokens.revoke("ci")


def test_facts_are_replaced_by_uri(store: Store) -> None:
    first = StoredFacts("qemu:///system", "u1", ("kvm", "qemu"), True, "", T0)
    store.facts.put(first)
    assert store.facts.get("qemu:///system") == first
    second = StoredFacts("qemu:///system", "u2", ("qemu",), None, "no kvm", T0 + timedelta(1))
    store.facts.put(second)
    assert store.facts.get("qemu:///system") == second
    store.facts.forget("qemu:///system")
    assert store.facts.get("qemu:///system") is None


def test_freezes_are_replaced_by_uuid_and_removed_by_their_operation(store: Store) -> None:
    store.freezes.put(FreezeMark("u1", "h", "vm1", "op1", FreezeKind.BOUNDED, T0, 2.5))
    held = FreezeMark("u1", "h", "vm1", "op2", FreezeKind.HELD, T0 + timedelta(1))
    store.freezes.put(held)
    assert store.freezes.list() == [held]
    assert store.freezes.remove("u1", "op1") is False
    assert store.freezes.remove("u1", "op2") is True
    assert store.freezes.get("u1") is None


def test_saved_images_and_places_read_back_with_large_numbers(store: Store) -> None:
    images = store.images
    images.saving(op_id="s1", uuid="u1", host="h", vm="vm1", path="/var/s1.save")
    images.settle("s1", ImageStatus.SAVED, size=5 * 2**32, mtime_ns=1_740_000_000_123_456_789)
    (saved,) = images.of_vm("u1", ImageStatus.SAVED)
    assert (saved.size, saved.mtime_ns) == (5 * 2**32, 1_740_000_000_123_456_789)
    assert images.ran("u1", "it started") == 1
    assert images.at("h", "/var/s1.save").status is ImageStatus.STALE  # type: ignore[union-attr]
    images.leave_copy(uuid="u1", host="h", vm="vm1", moved_to="h2", op_id="m1", why="kept")
    images.arrived(uuid="u1", host="h", vm="vm1", came_from="h3", op_id="m2")
    assert images.left_copy("u1", "h") is None  # the arrival replaced the mark
    assert images.places_of("u1") == ["h"]
    assert images.forget_place("u1", "h") is True


def test_the_journal_lock_holds_and_marks_are_found_on_both_engines(store: Store) -> None:
    journal = store.journal
    begun = journal.begin(op_id="op1", host="h", vm="vm1", operation="migrate",
                          actor=Actor("u"), lock_key="h/vm1", started_at=T0)
    assert begun.id > 0 and journal.get("op1") == begun
    with pytest.raises(Held):
        journal.begin(op_id="op2", host="h", vm="vm1", operation="save", actor=Actor("u"),
                      lock_key="h/vm1")
    journal.finish("op1", "error", "cut off [unconfirmed: 50% done]", 1.25)
    assert [e.op_id for e in journal.marked(["migrate"], "50% done")] == ["op1"]
    assert journal.marked(["migrate"], "100%") == []
    again = journal.begin(op_id="op3", host="h", vm="vm1", operation="save",
                          actor=Actor("u"), lock_key="h/vm1")
    assert again.id > begun.id
    assert journal.interrupt_mine("test") == 1


def test_the_dialect_layer_rewrites_placeholders_percent_and_instr_outside_strings() -> None:
    assert postgresql("SELECT instr(detail, ?) FROM t WHERE a = '?%' AND b LIKE ?") == \
        "SELECT strpos(detail, %s) FROM t WHERE a = '?%%' AND b LIKE %s"
    assert postgresql("SELECT 100 % 7") == "SELECT 100 %% 7"
    assert postgresql_ddl("id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, d REAL") == (
        "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT,"
        " d DOUBLE PRECISION")


def test_interrupt_mine_marks_only_this_process_rows_and_those_asked_for(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.store import journal as journal_module

    journal = store.journal
    me = journal_module.this_process()
    for op_id in ("op1", "op2"):
        journal.begin(op_id=op_id, host="h", vm=op_id, operation="save", actor=Actor("u"),
                      lock_key=f"h/{op_id}")
    # rows of this pid under an earlier start time (a reused pid), and of another pid
    for n, other in enumerate((journal_module.ProcessRef(me.machine, me.boot_id, me.pid,
                                                         me.pid_start + 1),
                               journal_module.ProcessRef(me.machine, me.boot_id,
                                                         me.pid + 1, me.pid_start))):
        monkeypatch.setattr(journal_module, "this_process", lambda other=other: other)
        journal._insert(op_id=f"gone{n}", started=T0, finished=None, host="h", vm=f"g{n}",
                        uuid="", domid=None, operation="save", outcome="running",
                        duration_s=0.0, detail="", actor=Actor("u"), lock_key=f"h/g{n}")
    monkeypatch.undo()
    assert journal.interrupt_mine(op_ids=[]) == 0
    assert journal.interrupt_mine("stopped", op_ids=["op2", "gone0", "gone1"]) == 1
    op2 = journal.get("op2")
    assert op2 is not None and (op2.outcome, op2.detail) == ("interrupted",
                                                              "interrupted: stopped")
    assert journal.holder("h/op2") is None
    assert journal.interrupt_mine() == 1
    assert sorted(e.op_id for e in journal.running()) == ["gone0", "gone1"]


def test_two_processes_taking_the_carried_over_note_at_once_get_it_once(
        pg_store_url: str) -> None:
    """PostgreSQL, READ COMMITTED: two stores (two connections, as two processes have)
    take the carried-over names while a third connection holds the rows' locks; both
    are then waiting inside their take, and when the lock goes, one of them gets the
    names and the other nothing (a read then a clear gave both the names)."""
    import threading

    import psycopg

    with open_store(pg_store_url) as setup:
        for name in ("alice", "bob"):
            setup.tokens.create(name, role=Role.ADMIN)
    with psycopg.connect(pg_store_url) as blocker:  # a transaction: its row locks are held
        blocker.execute("UPDATE api_tokens SET carried_over = 1")
        blocker.commit()
        blocker.execute("SELECT name FROM api_tokens WHERE carried_over = 1 FOR UPDATE")
        taken: list[list[str]] = []
        stores = [open_store(pg_store_url) for _ in range(2)]
        threads = [threading.Thread(target=lambda s=s: taken.append(
            s.tokens.take_carried_over())) for s in stores]
        try:
            for t in threads:
                t.start()
            with psycopg.connect(pg_store_url, autocommit=True) as watch:
                for _ in range(3000):  # both wait on the blocker's locks (or, on the old
                    # code, one may already hold its read and wait in its UPDATE)
                    waiting = watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                        " current_database() AND wait_event_type = 'Lock'").fetchone()
                    if waiting is not None and waiting[0] == 2:
                        break
                    watch.execute("SELECT pg_sleep(0.01)")
                else:
                    pytest.fail("the two takes never both waited on the rows' locks")
            blocker.rollback()
            for t in threads:
                t.join(30)
        finally:
            for s in stores:
                s.close()
    assert sorted(taken) == [[], ["alice", "bob"]]
