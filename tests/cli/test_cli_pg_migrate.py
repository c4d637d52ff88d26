"""``virtlife store migrate URL``, through the real command, into a database of the
private PostgreSQL cluster: every table of a SQLite store with rows in each is copied
row for row, the counts are said, the journal's ids go on after the copied ones, and a
second run is refused without doubling anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from test_bad_input import one_line_error, virtlife

from virtlife.store import open_store
from virtlife.store.facts import StoredFacts
from virtlife.store.freezes import FreezeKind, FreezeMark
from virtlife.store.images import ImageStatus
from virtlife.store.journal import Actor
from virtlife.store.tokens import Role

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
EXIT_ALREADY = 1


def _fill(path: Path) -> str:
    """A store with rows in every table but the leases; the token's secret."""
    with open_store(path) as store:
        store.hosts.add("web-a", "qemu:///system")
        store.hosts.add("web-b", "qemu+ssh://root@b/system", any_uri=True)
        for n in range(3):
            store.journal.record("web-a", f"vm{n}", "start", "ok", 0.5 + n, "running",
                                 started_at=T0, uuid=f"u{n}", domid=n)
        store.journal.begin(op_id="op-run", host="web-a", vm="vm9", operation="save",
                            actor=Actor("alice"), lock_key="u9", uuid="u9")
        store.journal.finish("op-run", "error", "cut off [unconfirmed: 50% done]", 2.25)
        secret = store.tokens.create("ci", role=Role.OPERATOR)
        store.facts.put(StoredFacts("qemu:///system", "hu1", ("kvm", "qemu"), True, "", T0))
        store.freezes.put(FreezeMark("u1", "web-a", "vm1", "op1", FreezeKind.HELD, T0))
        store.images.saving(op_id="s1", uuid="u1", host="web-a", vm="vm1", path="/v/s1")
        store.images.settle("s1", ImageStatus.SAVED, size=5 * 2**32,
                            mtime_ns=1_740_000_000_123_456_789)
        store.images.leave_copy(uuid="u1", host="web-a", vm="vm1", moved_to="web-b",
                                op_id="m1", why="kept")
    return secret


def _rows(where: Path | str) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows (but the migration record), sorted, as plain tuples."""
    with open_store(where) as store:
        db = store.database
        found: dict[str, list[tuple[object, ...]]] = {}
        for table in db.tables():
            if table == "schema_migrations":
                continue
            columns = sorted(db.columns(table))
            with db.read() as conn:
                rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            found[table] = sorted((tuple(row[c] for c in columns) for row in rows), key=repr)
        return found


def test_a_sqlite_store_moves_to_postgresql_whole_and_only_once(
        isolated_home: Path, pg_url: str) -> None:
    secret = _fill(isolated_home / "virtlife.db")
    before = _rows(isolated_home / "virtlife.db")
    assert {t for t, rows in before.items() if rows} == {
        "hosts", "journal", "api_tokens", "host_facts", "freezes", "saved_images",
        "vm_places"}

    run = virtlife("store", "migrate", pg_url)
    assert run.code == 0, run.err
    said = dict(line.split() for line in run.out.splitlines())
    assert said == {table: str(len(rows)) for table, rows in before.items()}
    assert "copied 11 rows" in run.err and "VIRTLIFE_DB=" in run.err

    assert _rows(pg_url) == before
    with open_store(pg_url) as store:
        checked = store.tokens.check(secret)
        assert checked is not None and checked.role is Role.OPERATOR
        newest = max(e.id for e in store.journal.list())
        added = store.journal.record("web-a", "vm1", "stop", "ok", 0.1, "shut off")
        assert added.id == newest + 1  # the identity goes on after the copied ids

    line = one_line_error(virtlife("store", "migrate", pg_url), EXIT_ALREADY)
    assert "holds rows already" in line and "journal 5" in line
    after = _rows(pg_url)
    assert len(after["journal"]) == 5 and after["hosts"] == before["hosts"]

    listed = virtlife("host", "list", "--json", env={"VIRTLIFE_DB": pg_url})
    assert listed.code == 0, listed.err
    assert [h["name"] for h in json.loads(listed.out)] == ["web-a", "web-b"]


def test_moving_needs_a_store_file_and_a_postgresql_url(
        isolated_home: Path, pg_url: str) -> None:
    line = one_line_error(virtlife("store", "migrate", pg_url), 64)
    assert "no store file" in line and "--from" in line
    assert not (isolated_home / "virtlife.db").exists()  # none was made
    _fill(isolated_home / "elsewhere.db")
    line = one_line_error(virtlife("store", "migrate", str(isolated_home / "x.db")), 64)
    assert "PostgreSQL URL" in line
    run = virtlife("store", "migrate", pg_url, "--from", str(isolated_home / "elsewhere.db"),
                   "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["copied"]["hosts"] == 2
