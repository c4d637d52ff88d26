"""Tests of the store on both engines: recorded migrations, the host inventory and the
journal.

They use real SQLite files under ``tmp_path`` and a database of their own on a private
PostgreSQL cluster (``pg_support``: copied from one the session migrated, or empty for
the tests of the migrations, ``new_where``), no libvirt, including several ``Store`` objects,
threads and processes on one store, as the CLI and the service layer will. The tests
that take ``where`` or ``store`` run on each engine; those that take ``db_path`` are
about the SQLite file itself.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import virtlife
from virtlife.config import LOCAL_HOST_NAME, LOCAL_URI
from virtlife.errors import HostAlreadyExists, HostNotFound, InvalidDefinition, VirtlifeError
from virtlife.store import HostRecord, JournalEntry, Store, open_store
from virtlife.store.db import MIGRATIONS

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "virtlife.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, db_path: Path) -> Path | str:
    """Where a store is: a SQLite file, or a PostgreSQL database's URL (a database that
    holds the schema already, copied from one the session migrated)."""
    if request.param == "sqlite":
        return db_path
    url: str = request.getfixturevalue("pg_store_url")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def new_where(request: pytest.FixtureRequest, db_path: Path) -> Path | str:
    """``where`` with nothing in it yet, on PostgreSQL too: for the migrations' tests."""
    if request.param == "sqlite":
        return db_path
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(where: Path | str) -> Iterator[Store]:
    with open_store(where) as opened:
        yield opened


def migration_rows(where: Path | str) -> list[tuple[str, str]]:
    """The recorded migrations, in the order they were applied (their times' order)."""
    with open_store(where) as store, store.database.read() as conn:
        rows = conn.execute("SELECT name, applied_at FROM schema_migrations").fetchall()
    listed = [(str(row["name"]), str(row["applied_at"])) for row in rows]
    order = {name: n for n, (name, _) in enumerate(MIGRATIONS)}
    return sorted(listed, key=lambda row: (row[1], order.get(row[0], -1)))


# --- opening and migrations ----------------------------------------------------------


def test_open_store_creates_the_parent_directory_and_the_file(db_path: Path) -> None:
    assert not db_path.parent.exists()
    with open_store(db_path) as store:
        assert store.path == db_path
    assert db_path.is_file()


def test_open_store_defaults_to_the_configured_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTLIFE_HOME", str(tmp_path / "home"))
    with open_store() as store:
        assert store.path == tmp_path / "home" / "virtlife.db"
    assert (tmp_path / "home" / "virtlife.db").is_file()


def test_migrations_are_recorded_once_each_in_order(new_where: Path | str) -> None:
    open_store(new_where).close()
    rows = migration_rows(new_where)
    assert [name for name, _ in rows] == [name for name, _ in MIGRATIONS]
    for _, applied_at in rows:
        assert datetime.fromisoformat(applied_at).tzinfo is not None


def test_reopening_the_store_leaves_schema_migrations_unchanged(where: Path | str) -> None:
    open_store(where).close()
    first = migration_rows(where)
    with open_store(where) as store:
        store.hosts.add("web-a", "qemu:///system")
    assert migration_rows(where) == first
    with open_store(where) as store:
        assert [h.name for h in store.hosts.list()] == ["web-a"]


def test_store_file_is_in_wal_mode(db_path: Path) -> None:
    open_store(db_path).close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_closed_store_refuses_further_use(db_path: Path) -> None:
    with open_store(db_path) as store:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        store.hosts.list()


def test_concurrent_first_opens_of_a_new_store_apply_each_migration_once(
    new_where: Path | str,
) -> None:
    where = new_where
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def opener() -> None:
        try:
            barrier.wait(timeout=30)
            open_store(where).close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [name for name, _ in migration_rows(where)] == [name for name, _ in MIGRATIONS]


# --- inventory -----------------------------------------------------------------------


def test_add_returns_the_record_and_get_finds_it(store: Store) -> None:
    before = datetime.now(UTC)
    added = store.hosts.add("web-a", "qemu+tcp://10.0.0.2/system")
    assert added.name == "web-a"
    assert added.uri == "qemu+tcp://10.0.0.2/system"
    assert added.added_at.tzinfo is not None
    assert before <= added.added_at <= datetime.now(UTC)
    assert store.hosts.get("web-a") == added


def test_list_is_sorted_by_name(store: Store) -> None:
    for name in ("zeta", "alpha", "mid.example", "beta_2"):
        store.hosts.add(name, "test:///default")
    assert [h.name for h in store.hosts.list()] == ["alpha", "beta_2", "mid.example", "zeta"]


def test_list_is_empty_for_a_new_store(store: Store) -> None:
    assert store.hosts.list() == []


def test_remove_returns_the_removed_record_and_forgets_it(store: Store) -> None:
    added = store.hosts.add("web-a", "qemu:///system")
    store.hosts.add("web-b", "qemu:///system")
    assert store.hosts.remove("web-a") == added
    assert [h.name for h in store.hosts.list()] == ["web-b"]
    with pytest.raises(HostNotFound):
        store.hosts.get("web-a")


def test_remove_of_an_unknown_host_says_how_to_list_hosts(store: Store) -> None:
    with pytest.raises(HostNotFound) as caught:
        store.hosts.remove("ghost")
    assert str(caught.value) == (
        "no host named ghost in the inventory; `virtlife host list` shows them"
    )


def test_get_of_an_unknown_host_raises_host_not_found(store: Store) -> None:
    with pytest.raises(HostNotFound, match="no host named ghost"):
        store.hosts.get("ghost")


def test_adding_an_existing_name_names_its_uri_and_keeps_the_original(store: Store) -> None:
    original = store.hosts.add("web-a", "qemu+tcp://10.0.0.2/system")
    with pytest.raises(HostAlreadyExists) as caught:
        store.hosts.add("web-a", "qemu+ssh://other/system")
    assert str(caught.value) == (
        "host web-a already exists (qemu+tcp://10.0.0.2/system); "
        "remove it first or pick another name"
    )
    assert store.hosts.list() == [original]


def test_store_stays_writable_after_a_refused_add(store: Store) -> None:
    store.hosts.add("web-a", "qemu:///system")
    with pytest.raises(HostAlreadyExists):
        store.hosts.add("web-a", "qemu:///system")
    store.hosts.add("web-b", "qemu:///system")
    store.journal.record("web-b", "vm1", "start", "ok", 0.1, "running")
    assert [h.name for h in store.hosts.list()] == ["web-a", "web-b"]


@pytest.mark.parametrize(
    "name",
    ["", "a/b", "web a", "-web", ".", "..", ".hidden", "wéb", "web\n", "x" * 64, "a:b"],
)
def test_add_rejects_a_bad_host_name(store: Store, name: str) -> None:
    with pytest.raises(InvalidDefinition, match="invalid host name"):
        store.hosts.add(name, "qemu:///system")
    assert store.hosts.list() == []


@pytest.mark.parametrize("name", ["a", "web-a", "web_a", "host1.example.com", "10.0.0.2", "A9"])
def test_add_accepts_letters_digits_dash_underscore_dot(store: Store, name: str) -> None:
    assert store.hosts.add(name, "qemu:///system").name == name


@pytest.mark.parametrize("uri", ["", "system", "/var/run/libvirt", "qemu :///system", "://x"])
def test_add_rejects_a_uri_without_a_scheme(store: Store, uri: str) -> None:
    with pytest.raises(InvalidDefinition, match="invalid libvirt URI"):
        store.hosts.add("web-a", uri)


@pytest.mark.parametrize(
    "uri", ["qemu:///system", "test:///default", "qemu+ssh://h/system", "qemu:///session"]
)
def test_add_accepts_libvirt_uris(store: Store, uri: str) -> None:
    assert store.hosts.add("web-a", uri).uri == uri


def test_invalid_definition_is_a_virtlife_error() -> None:
    assert issubclass(InvalidDefinition, VirtlifeError)


def test_effective_is_the_implicit_local_host_while_the_inventory_is_empty(
    store: Store,
) -> None:
    [local] = store.hosts.effective()
    assert (local.name, local.uri) == (LOCAL_HOST_NAME, LOCAL_URI)
    assert local.added_at.tzinfo is not None
    assert store.hosts.list() == []  # implicit, never stored


def test_effective_is_only_the_configured_hosts_once_any_is_added(store: Store) -> None:
    store.hosts.add("web-b", "qemu+ssh://b/system")
    store.hosts.add("web-a", "qemu+ssh://a/system")
    assert [h.name for h in store.hosts.effective()] == ["web-a", "web-b"]


def test_effective_returns_to_the_local_host_when_the_last_host_is_removed(
    store: Store,
) -> None:
    store.hosts.add("web-a", "qemu+ssh://a/system")
    store.hosts.remove("web-a")
    assert [(h.name, h.uri) for h in store.hosts.effective()] == [(LOCAL_HOST_NAME, LOCAL_URI)]


def test_host_records_survive_reopening(where: Path | str) -> None:
    with open_store(where) as store:
        added = store.hosts.add("web-a", "qemu:///system")
    with open_store(where) as store:
        assert store.hosts.get("web-a") == added


# --- journal -------------------------------------------------------------------------


def test_record_returns_the_stored_entry_with_a_utc_start(store: Store) -> None:
    before = datetime.now(UTC)
    entry = store.journal.record("local", "vm1", "start", "ok", 0.25, "running")
    assert isinstance(entry, JournalEntry)
    assert (entry.host, entry.vm, entry.operation, entry.outcome) == (
        "local",
        "vm1",
        "start",
        "ok",
    )
    assert (entry.duration_s, entry.detail) == (0.25, "running")
    assert entry.started_at.tzinfo is not None
    assert entry.started_at.utcoffset() == timedelta(0)
    assert before <= entry.started_at <= datetime.now(UTC)
    assert entry.finished_at is not None and entry.started_at <= entry.finished_at
    assert store.journal.list() == [entry]


def test_record_converts_an_explicit_start_to_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    entry = store.journal.record(
        "local", "vm1", "stop", "ok", 1.0, "shut off", started_at=T0.astimezone(paris)
    )
    assert entry.started_at == T0
    assert entry.started_at.utcoffset() == timedelta(0)
    assert store.journal.list()[0].started_at == T0


def test_record_rejects_a_naive_start(store: Store) -> None:
    with pytest.raises(ValueError, match="no timezone"):
        store.journal.record("local", "vm1", "start", "ok", 0.1, "", started_at=datetime.now())


def test_record_rejects_an_unknown_outcome(store: Store) -> None:
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.journal.record("local", "vm1", "start", "maybe", 0.1, "")
    assert store.journal.list() == []


def test_record_keeps_the_error_message_as_detail(store: Store) -> None:
    message = "cannot resume web1: it is running, not paused"
    store.journal.record("local", "web1", "resume", "error", 0.01, message)
    [entry] = store.journal.list()
    assert (entry.outcome, entry.detail) == ("error", message)


def test_list_is_newest_first_by_start_time_not_insertion(store: Store) -> None:
    store.journal.record("local", "vm1", "start", "ok", 1, "running", started_at=T0)
    store.journal.record(
        "local", "vm1", "stop", "ok", 1, "shut off", started_at=T0 + timedelta(hours=1)
    )
    store.journal.record(
        "local", "vm1", "define", "ok", 1, "shut off", started_at=T0 - timedelta(hours=1)
    )
    assert [e.operation for e in store.journal.list()] == ["stop", "start", "define"]


def test_list_breaks_start_time_ties_by_insertion_newest_first(store: Store) -> None:
    first = store.journal.record("local", "vm1", "start", "ok", 1, "", started_at=T0)
    second = store.journal.record("local", "vm1", "pause", "ok", 1, "", started_at=T0)
    assert store.journal.list() == [second, first]
    assert second.id > first.id


def test_list_filters_by_vm_host_or_both(store: Store) -> None:
    store.journal.record("a", "vm1", "start", "ok", 1, "", started_at=T0)
    store.journal.record("a", "vm2", "start", "ok", 1, "", started_at=T0 + timedelta(1))
    store.journal.record("b", "vm1", "start", "ok", 1, "", started_at=T0 + timedelta(2))
    assert [(e.host, e.vm) for e in store.journal.list(vm="vm1")] == [("b", "vm1"), ("a", "vm1")]
    assert [(e.host, e.vm) for e in store.journal.list(host="a")] == [("a", "vm2"), ("a", "vm1")]
    assert [(e.host, e.vm) for e in store.journal.list(vm="vm1", host="a")] == [("a", "vm1")]
    assert store.journal.list(vm="nope") == []


def test_list_returns_at_most_limit_newest_entries(store: Store) -> None:
    for i in range(10):
        store.journal.record("local", "vm1", f"op{i}", "ok", 1, "", T0 + timedelta(seconds=i))
    assert [e.operation for e in store.journal.list(limit=3)] == ["op9", "op8", "op7"]
    assert len(store.journal.list()) == 10


def test_list_defaults_to_a_hundred_entries(store: Store) -> None:
    for i in range(105):
        store.journal.record("local", "vm1", "start", "ok", 1, str(i))
    assert len(store.journal.list()) == 100


def test_list_rejects_a_limit_below_one(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        store.journal.list(limit=0)


def test_last_is_the_newest_entry_of_that_operation_for_that_vm(store: Store) -> None:
    store.journal.record("local", "vm1", "shutdown", "ok", 1, "running", started_at=T0)
    newest = store.journal.record(
        "local", "vm1", "shutdown", "ok", 1, "running", started_at=T0 + timedelta(minutes=5)
    )
    store.journal.record("local", "vm1", "start", "ok", 1, "", T0 + timedelta(minutes=9))
    store.journal.record("local", "vm2", "shutdown", "ok", 1, "", T0 + timedelta(minutes=9))
    store.journal.record("other", "vm1", "shutdown", "ok", 1, "", T0 + timedelta(minutes=9))
    assert store.journal.last("vm1", "local", "shutdown") == newest


def test_last_is_none_when_the_operation_was_never_recorded(store: Store) -> None:
    store.journal.record("local", "vm1", "start", "ok", 1, "running")
    assert store.journal.last("vm1", "local", "shutdown") is None
    assert store.journal.last("vm1", "elsewhere", "start") is None


# --- sharing the file ----------------------------------------------------------------


def test_two_stores_on_one_file_both_write_and_see_each_other(where: Path | str) -> None:
    with open_store(where) as one, open_store(where) as two:
        one.hosts.add("web-a", "qemu+ssh://a/system")
        two.hosts.add("web-b", "qemu+ssh://b/system")
        one.journal.record("web-a", "vm1", "start", "ok", 1, "running", started_at=T0)
        two.journal.record(
            "web-b", "vm2", "start", "ok", 1, "running", started_at=T0 + timedelta(1)
        )
        for store in (one, two):
            assert [h.name for h in store.hosts.list()] == ["web-a", "web-b"]
            assert [e.vm for e in store.journal.list()] == ["vm2", "vm1"]
        with pytest.raises(HostAlreadyExists):
            two.hosts.add("web-a", "qemu:///system")


def _run_threads(worker: Callable[[int], None], count: int) -> None:
    """Run ``worker(0..count-1)`` in threads at once and wait for them all."""
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_threads_sharing_one_store_all_get_their_writes_in(store: Store) -> None:
    threads_n, per_thread = 8, 50
    errors: list[BaseException] = []
    ids: list[int] = []
    barrier = threading.Barrier(threads_n)

    def worker(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            store.hosts.add(f"host-{n}", "test:///default")
            for i in range(per_thread):
                ids.append(store.journal.record(f"host-{n}", f"vm{i}", "start", "ok", 0, "").id)
                store.journal.list(host=f"host-{n}", limit=5)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    _run_threads(worker, threads_n)
    assert errors == []
    assert len(set(ids)) == threads_n * per_thread
    assert len(store.journal.list(limit=10_000)) == threads_n * per_thread
    assert len(store.hosts.list()) == threads_n


def test_threads_with_their_own_stores_on_one_file_all_get_their_writes_in(
    where: Path | str,
) -> None:
    threads_n, per_thread = 4, 50
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def worker(n: int) -> None:
        try:
            with open_store(where) as own:
                barrier.wait(timeout=30)
                for i in range(per_thread):
                    own.journal.record("local", f"vm{n}", f"op{i}", "ok", 0, "")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    _run_threads(worker, threads_n)
    assert errors == []
    with open_store(where) as store:
        assert len(store.journal.list(limit=10_000)) == threads_n * per_thread


def test_processes_writing_one_file_at_once_do_not_fail(new_where: Path | str) -> None:
    where = new_where  # the processes' first opens also migrate it
    processes_n, per_process = 3, 100
    src = str(Path(virtlife.__file__).resolve().parents[1])
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {src!r})
        from pathlib import Path
        from virtlife.store import open_store
        where = sys.argv[1]
        with open_store(where if "://" in where else Path(where)) as store:
            store.hosts.add("proc-" + sys.argv[2], "test:///default")
            for i in range({per_process}):
                store.journal.record("local", "vm" + sys.argv[2], "start", "ok", 0, str(i))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(where), str(n)], stderr=subprocess.PIPE
        )
        for n in range(processes_n)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr.decode()
    with open_store(where) as store:
        assert len(store.journal.list(limit=10_000)) == processes_n * per_process
        assert [h.name for h in store.hosts.list()] == [f"proc-{n}" for n in range(processes_n)]
        assert [name for name, _ in migration_rows(where)] == [name for name, _ in MIGRATIONS]


def test_host_record_and_journal_entry_are_immutable() -> None:
    record = HostRecord("web-a", "qemu:///system", T0)
    entry = JournalEntry(1, T0, "local", "vm1", "start", "ok", 0.1, "running")
    with pytest.raises(AttributeError):
        record.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        entry.outcome = "error"  # type: ignore[misc]


def test_list_with_a_limit_of_one_gives_the_newest(store: Store) -> None:
    store.journal.record("local", "vm1", "start", "ok", 1, "running", started_at=T0)
    store.journal.record("local", "vm1", "stop", "ok", 1, "", started_at=T0 + timedelta(1))
    assert [e.operation for e in store.journal.list(limit=1)] == ["stop"]


def test_running_entries_are_oldest_first(store: Store) -> None:
    from virtlife.store.journal import Actor

    for n, hours in enumerate((2, 0, 1)):
        store.journal.begin(op_id=f"op{n}", host="h", vm=f"vm{n}", operation="save",
                            actor=Actor("u"), lock_key=f"h/vm{n}",
                            started_at=T0 + timedelta(hours=hours))
    assert [e.op_id for e in store.journal.running()] == ["op1", "op2", "op0"]


def test_begin_and_record_return_the_row_as_it_reads_back_without_reading_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.store import journal as journal_module
    from virtlife.store.journal import Actor

    reads = []
    monkeypatch.setattr(journal_module.Journal, "get",
                        lambda self, op_id: reads.append(op_id))  # never needed
    begun = store.journal.begin(op_id="op-b", host="h", vm="vm1", operation="save",
                                actor=Actor("u", "server"), lock_key="h/vm1", uuid="u-1",
                                domid=7, started_at=T0)
    recorded = store.journal.record("h", "vm2", "start", "refused", 0.5, "it is running",
                                    started_at=T0, uuid="u-2", domid=3)
    assert reads == []
    monkeypatch.undo()
    assert begun == store.journal.get("op-b")
    assert recorded == store.journal.get(recorded.op_id)


def test_this_process_is_read_once_per_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.store import journal as journal_module

    first = journal_module.this_process()
    monkeypatch.setattr(journal_module, "start_time", lambda pid: pytest.fail("read again"))
    assert journal_module.this_process() == first
    monkeypatch.setattr(journal_module.os, "getpid", lambda: first.pid + 1)  # as in a fork
    monkeypatch.setattr(journal_module, "start_time", lambda pid: 42)
    assert journal_module.this_process().pid_start == 42
    monkeypatch.undo()
    journal_module._this.clear()
