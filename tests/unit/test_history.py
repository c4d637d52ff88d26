"""``history VM``: the VM's rows by UUID, with the rows of its name written without a
UUID (refusals before the VM was looked up) that were its, and never another VM's
(``services.history``), on the test driver's seeded node as host ``t``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.history import holder_of
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.operations import Operations
from virtlife.services.provision import create
from virtlife.store import Store, open_store
from virtlife.store.journal import Actor, JournalEntry
from virtlife.xml.domain import DomainSpec

OFF_UUID = "44444444-4444-4444-4444-444444444444"  # vm-off in tests/data/node.xml
NEW_UUID = "99999999-9999-9999-9999-999999999999"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "store.db")


@pytest.fixture
def life(store: Store) -> Lifecycle:
    fleet = Fleet([HostRef("t", NODE_URI)], journal=store.journal)
    return Lifecycle(fleet, store.journal, operations=Operations(store.journal,
                                                                 Actor("alice", "test")))


def _rows(entries: list[JournalEntry]) -> list[tuple[str, str, str]]:
    return [(e.operation, e.outcome, e.uuid) for e in entries]


def test_history_shows_a_refused_create_of_the_vms_name_recorded_without_a_uuid(
        life: Lifecycle) -> None:
    # issue 15: the refusal was journalled (under the name, no UUID) and history, which
    # reads by UUID, never showed it
    life.start("vm-off")
    with pytest.raises(errors.VMAlreadyExists):
        create(life, DomainSpec(name="vm-off"), host="t")
    assert _rows(life.history("vm-off")) == [("define", "refused", ""),
                                             ("start", "ok", OFF_UUID)]


def test_history_shows_a_refusal_written_before_the_vm_was_looked_up(
        life: Lifecycle, store: Store) -> None:
    # what Operations.record_failure writes when the host could not be reached
    store.journal.record("t", "vm-off", "start", "error", 0.0, "cannot reach host t")
    life.start("vm-off")
    assert _rows(life.history("vm-off")) == [("start", "ok", OFF_UUID),
                                             ("start", "error", "")]


def test_history_never_shows_another_vms_rows_without_a_uuid(
        life: Lifecycle, store: Store) -> None:
    life.start("vm-off")
    store.journal.record("t2", "vm-off", "start", "error", 0.0, "another host's vm-off")
    store.journal.record("t", "vm-other", "start", "error", 0.0, "another name")
    life.destroy("vm-off")
    store.journal.record("t", "vm-off", "destroy", "error", 0.0, "the old vm-off's")
    life.undefine("vm-off")
    store.journal.record("t", "vm-off", "define", "error", 0.0, "the new vm-off's")
    xml = ("<domain type='test'><name>vm-off</name><memory>1024</memory>"
           f"<uuid>{NEW_UUID}</uuid><os><type>hvm</type></os></domain>")
    life.define(xml, host="t")
    assert [(e.operation, e.detail) for e in life.history("vm-off")] == [
        ("define", "shut off (unknown)"), ("define", "the new vm-off's")]
    assert life.history("vm-off", limit=1)[0].uuid == NEW_UUID  # the limit still holds


def _entry(row_id: int, uuid: str, operation: str = "start", outcome: str = "ok",
           ) -> JournalEntry:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=row_id)
    return JournalEntry(row_id, at, "t", "web1", operation, outcome, 0.0, "", uuid=uuid)


def test_a_row_without_a_uuid_belongs_to_the_vm_that_had_the_name_then() -> None:
    rows = [_entry(1, ""), _entry(2, "A"), _entry(3, ""), _entry(4, "A", "undefine"),
            _entry(5, ""), _entry(6, "B"), _entry(7, ""), _entry(8, "B", "undefine", "error"),
            _entry(9, "")]
    assert holder_of(rows, "C") == {1: "A", 3: "A", 5: "B", 7: "B", 9: "B"}


def test_rows_without_a_uuid_after_the_last_vm_left_are_the_present_vms() -> None:
    rows = [_entry(1, "A"), _entry(2, "A", "undefine"), _entry(3, "")]
    assert holder_of(rows, "C") == {3: "C"}
    assert holder_of([_entry(1, "")], "C") == {1: "C"}  # no identified row at all


def test_history_by_uuid_follows_the_vm_across_hosts_and_after_it_is_gone(
        life: Lifecycle, store: Store) -> None:
    # issue 17: vm-off lived on host a (as "old-name"), moved to t, and ``history UUID``
    # finds it as ``history NAME`` does, and still once it is undefined
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store.journal.record("a", "old-name", "start", "ok", 1.0, "running", start,
                         uuid=OFF_UUID)
    store.journal.record("a", "old-name", "migrate", "ok", 2.0, "moved to t",
                         start + timedelta(minutes=1), uuid=OFF_UUID)
    store.journal.record("a", "vm-off", "start", "ok", 1.0, "another VM",
                         start + timedelta(minutes=2), uuid=NEW_UUID)
    life.start("vm-off")
    expected = [("t", "start", OFF_UUID), ("a", "migrate", OFF_UUID),
                ("a", "start", OFF_UUID)]
    for ref in ("vm-off", OFF_UUID, f"t/{OFF_UUID}"):
        assert [(e.host, e.operation, e.uuid) for e in life.history(ref)] == expected, ref
    life.destroy("vm-off")
    life.undefine("vm-off")
    assert [(e.host, e.operation) for e in life.history(OFF_UUID)] == [
        ("t", "undefine"), ("t", "destroy"), ("t", "start"), ("a", "migrate"),
        ("a", "start")]
