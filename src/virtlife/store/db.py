"""The database behind the store: connection, locking, recorded schema migrations.

``open_store`` opens the store, by default the one SQLite file that holds the inventory
and the journal (creating it and its directory if needed), or a PostgreSQL database
when ``VIRTLIFE_DB`` or the settings' ``[store] url`` name one (``store.pg``, which alone
imports psycopg), brings its schema up to date and hands back a ``Store``. A ``Store``
may be shared by worker threads (one connection, one lock) and several processes may
open the same file at once (WAL mode, a busy timeout, and every write in a ``BEGIN
IMMEDIATE`` transaction, or one statement that takes the write lock the same way). This
module must not import libvirt nor know anything about VMs: it only owns the database;
the tables' modules own their meaning, and write SQL both engines run (``sql``).

Migrations are named and recorded in ``schema_migrations``, like sqlite-utils'
recorded migrations: ``MIGRATIONS`` is applied in order, each name once, on either
engine (PostgreSQL gets them through ``sql.postgresql_ddl``). Never change what a
migration that has shipped does, nor reorder them; append a new one. A store that has
applied a migration this virtlife does not know (a newer virtlife's) is not used.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

from virtlife import config
from virtlife.errors import StoreUnavailable
from virtlife.store.inventory import Inventory
from virtlife.store.journal import Journal

if TYPE_CHECKING:
    from virtlife.store.balance import Balance
    from virtlife.store.facts import Facts
    from virtlife.store.freezes import Freezes
    from virtlife.store.images import SavedImages
    from virtlife.store.sql import Connection, Cursor
    from virtlife.store.tokens import Tokens

# How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S: Final = 10.0

# (name, sql): applied in this order, each once. Append only.
MIGRATIONS: Final[list[tuple[str, str]]] = [
    (
        "0001_hosts",
        """
        CREATE TABLE hosts (
            name     TEXT PRIMARY KEY,
            uri      TEXT NOT NULL,
            added_at TEXT NOT NULL
        );
        """,
    ),
    (
        "0002_journal",
        """
        CREATE TABLE journal (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            host       TEXT NOT NULL,
            vm         TEXT NOT NULL,
            operation  TEXT NOT NULL,
            outcome    TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'refused')),
            duration_s REAL NOT NULL,
            detail     TEXT NOT NULL
        );
        CREATE INDEX journal_by_started ON journal (started_at, id);
        CREATE INDEX journal_by_vm ON journal (vm, host, operation, started_at, id);
        CREATE INDEX journal_by_host ON journal (host, started_at, id);
        """,
    ),
    (
        # Rows keyed by the VM's UUID too; who acted; in-flight rows ('running') that are
        # completed at the end, 'interrupted' when their process died; and at most one
        # running operation per VM (the partial unique index on lock_key is the per-VM
        # lock that holds across threads and processes).
        "0003_journal_operations",
        """
        CREATE TABLE journal_v3 (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            op_id       TEXT NOT NULL UNIQUE,
            started_at  TEXT NOT NULL,
            finished_at TEXT,
            host        TEXT NOT NULL,
            vm          TEXT NOT NULL,
            uuid        TEXT NOT NULL DEFAULT '',
            domid       INTEGER,
            operation   TEXT NOT NULL,
            outcome     TEXT NOT NULL CHECK (outcome IN
                            ('running', 'ok', 'error', 'refused', 'interrupted')),
            duration_s  REAL NOT NULL,
            detail      TEXT NOT NULL,
            actor_user  TEXT NOT NULL DEFAULT '',
            actor_proc  TEXT NOT NULL DEFAULT '',
            machine     TEXT NOT NULL DEFAULT '',
            boot_id     TEXT NOT NULL DEFAULT '',
            pid         INTEGER NOT NULL DEFAULT 0,
            pid_start   INTEGER NOT NULL DEFAULT 0,
            lock_key    TEXT
        );
        INSERT INTO journal_v3 (id, op_id, started_at, finished_at, host, vm, operation,
                                outcome, duration_s, detail)
            SELECT id, 'j' || id, started_at, started_at, host, vm, operation, outcome,
                   duration_s, detail
            FROM journal;
        DROP TABLE journal;
        ALTER TABLE journal_v3 RENAME TO journal;
        CREATE INDEX journal_by_started ON journal (started_at, id);
        CREATE INDEX journal_by_vm ON journal (vm, host, operation, started_at, id);
        CREATE INDEX journal_by_uuid ON journal (uuid, operation, started_at, id);
        CREATE INDEX journal_by_host ON journal (host, started_at, id);
        CREATE INDEX journal_running ON journal (outcome) WHERE outcome = 'running';
        CREATE UNIQUE INDEX journal_one_running_per_vm ON journal (lock_key)
            WHERE outcome = 'running' AND lock_key IS NOT NULL;
        """,
    ),
    (
        # What each host (by URI) said about itself: its host_uuid, the virt types its
        # capabilities offer and whether a KVM guest really started there.
        "0004_host_facts",
        """
        CREATE TABLE host_facts (
            uri        TEXT PRIMARY KEY,
            host_uuid  TEXT NOT NULL,
            virt_types TEXT NOT NULL,
            kvm        INTEGER,
            kvm_note   TEXT NOT NULL DEFAULT '',
            checked_at TEXT NOT NULL
        );
        """,
    ),
    (
        # Guest file-system freezes virtlife started, so that none outlives its process.
        "0005_freezes",
        """
        CREATE TABLE freezes (
            uuid      TEXT PRIMARY KEY,
            host      TEXT NOT NULL,
            vm        TEXT NOT NULL,
            op_id     TEXT NOT NULL,
            kind      TEXT NOT NULL CHECK (kind IN ('bounded', 'held')),
            frozen_at TEXT NOT NULL,
            bound_s   REAL
        );
        """,
    ),
    (
        # Bearer tokens of the REST API, kept as SHA-256 digests only.
        "0006_api_tokens",
        """
        CREATE TABLE api_tokens (
            name         TEXT PRIMARY KEY,
            digest       TEXT NOT NULL UNIQUE,
            read_only    INTEGER NOT NULL,
            created_at   TEXT NOT NULL,
            last_used_at TEXT
        );
        """,
    ),
    (
        # Save images virtlife wrote (by the save's operation id) and what became of them,
        # so that a VM is never booted over its saved RAM nor restored from an image its
        # disk has moved on from; and where migrations put VMs: the host a VM arrived on,
        # and a definition left behind (--keep-source, a post-copy that completed late),
        # which must not start again.
        "0007_saved_images_vm_places",
        """
        CREATE TABLE saved_images (
            op_id      TEXT PRIMARY KEY,
            uuid       TEXT NOT NULL,
            host       TEXT NOT NULL,
            vm         TEXT NOT NULL,
            path       TEXT NOT NULL,
            size       INTEGER,
            mtime_ns   INTEGER,
            saved_at   TEXT NOT NULL,
            status     TEXT NOT NULL CHECK (status IN
                           ('saving', 'saved', 'restored', 'stale', 'failed')),
            why        TEXT NOT NULL DEFAULT '',
            changed_at TEXT NOT NULL
        );
        CREATE INDEX saved_images_by_uuid ON saved_images (uuid, status);
        CREATE INDEX saved_images_by_path ON saved_images (host, path, saved_at);
        CREATE TABLE vm_places (
            uuid      TEXT NOT NULL,
            host      TEXT NOT NULL,
            vm        TEXT NOT NULL,
            kind      TEXT NOT NULL CHECK (kind IN ('left-copy', 'arrived')),
            other     TEXT NOT NULL,
            op_id     TEXT NOT NULL,
            why       TEXT NOT NULL,
            marked_at TEXT NOT NULL,
            PRIMARY KEY (uuid, host)
        );
        """,
    ),
    (
        # Token roles instead of read-only/read-write: a read-only token is a reader, a
        # read-write one an admin (it could do anything), marked carried_over until the
        # note that says so has been shown once (``Tokens.take_carried_over``).
        "0008_api_token_roles",
        """
        CREATE TABLE api_tokens_v8 (
            name         TEXT PRIMARY KEY,
            digest       TEXT NOT NULL UNIQUE,
            role         TEXT NOT NULL CHECK (role IN ('reader', 'operator', 'admin')),
            created_at   TEXT NOT NULL,
            last_used_at TEXT,
            carried_over INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO api_tokens_v8 (name, digest, role, created_at, last_used_at,
                                   carried_over)
            SELECT name, digest, CASE WHEN read_only <> 0 THEN 'reader' ELSE 'admin' END,
                   created_at, last_used_at, CASE WHEN read_only <> 0 THEN 0 ELSE 1 END
            FROM api_tokens;
        DROP TABLE api_tokens;
        ALTER TABLE api_tokens_v8 RENAME TO api_tokens;
        """,
    ),
    (
        # Hosts whose URI the operator added with --allow-any-uri: opened even where the
        # URI policy (services.uripolicy) refuses it. Rows from before are not.
        "0009_hosts_any_uri",
        """
        ALTER TABLE hosts ADD COLUMN any_uri INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        # The leases of processes holding running journal rows in a store that machines
        # share (PostgreSQL: ``store.leases``); SQLite stores keep it empty. expires_s is
        # the database's clock, in seconds since the epoch.
        "0010_process_leases",
        """
        CREATE TABLE process_leases (
            machine   TEXT NOT NULL,
            boot_id   TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            pid_start INTEGER NOT NULL,
            host_name TEXT NOT NULL,
            expires_s REAL NOT NULL,
            PRIMARY KEY (machine, boot_id, pid, pid_start)
        );
        """,
    ),
    (
        # The supervisors' leadership (``store.leadership``): one lease row per role, its
        # fencing epoch (every new term increments it) and its holder; times are the
        # database's clock in seconds since the epoch. A journal row written by a leader
        # carries the epoch it acted under.
        "0011_leadership",
        """
        CREATE TABLE leadership (
            role      TEXT PRIMARY KEY,
            epoch     INTEGER NOT NULL,
            machine   TEXT NOT NULL,
            boot_id   TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            pid_start INTEGER NOT NULL,
            host_name TEXT NOT NULL,
            since_s   REAL NOT NULL,
            expires_s REAL NOT NULL
        );
        ALTER TABLE journal ADD COLUMN epoch INTEGER;
        """,
    ),
    (
        # Host maintenance (issue 18): each host's mode (a host in maintenance takes no
        # VM: placement passes it over); a journal row's parent operation (each migration
        # of an evacuation is a child of the evacuation's row), and a cancel asked of a
        # running row from another process (``host maintenance H --cancel``).
        "0012_host_maintenance",
        """
        ALTER TABLE hosts ADD COLUMN mode TEXT NOT NULL DEFAULT 'active'
            CHECK (mode IN ('active', 'maintenance'));
        ALTER TABLE journal ADD COLUMN parent_op_id TEXT;
        ALTER TABLE journal ADD COLUMN cancel_asked INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX journal_by_parent ON journal (parent_op_id) WHERE parent_op_id IS NOT NULL;
        """,
    ),
    (
        # The balancer's memory (``store.balance``): the VMs kept out of balancing
        # (``vm pin``), and the balancer's last move of each VM, for its cool-down and
        # so that no plan undoes a recent move. Both by UUID, which survives a rename
        # and a migration; times are UTC. Depends on no other migration's tables.
        "0013_vm_pins_and_moves",
        """
        CREATE TABLE vm_pins (
            uuid      TEXT PRIMARY KEY,
            vm        TEXT NOT NULL,
            pinned_at TEXT NOT NULL
        );
        CREATE TABLE balance_moves (
            uuid      TEXT PRIMARY KEY,
            vm        TEXT NOT NULL,
            from_host TEXT NOT NULL,
            to_host   TEXT NOT NULL,
            moved_at  TEXT NOT NULL,
            op_id     TEXT NOT NULL DEFAULT ''
        );
        """,
    ),
]


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into complete statements (semicolons in strings are safe)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()!r}")


class Database:
    """One SQLite connection and the lock that serialises threads over it
    (``store.pg.PgDatabase`` is the same for PostgreSQL).

    ``read()``, ``transaction()``, ``write()``, ``conflicts`` and the timestamp codec are
    what the tables' modules use; nothing else should touch the connection. (They
    import this class for typing only, so the store's modules have no import cycle at
    runtime.)
    """

    engine: str = "sqlite"
    # What a broken constraint raises (the journal's per-VM lock, a token's unique
    # name): the caller's to handle, as ``except db.conflicts``.
    conflicts: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, connection: sqlite3.Connection, path: Path | None = None) -> None:
        self._connection = connection
        self._path = path
        # Held for reads too: a read on the shared connection while another thread is
        # inside a write transaction would see that thread's uncommitted rows.
        self._lock = threading.RLock()

    @property
    def location(self) -> str:
        """Where the store is, as messages name it (a file, or a URL without password)."""
        return str(self._path) if self._path is not None else "(memory)"

    @staticmethod
    def format_ts(moment: datetime) -> str:
        """An aware datetime as fixed-width UTC ISO text, so text order is time order."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(
                f"timestamp {moment.isoformat()} has no timezone; pass an aware datetime"
            )
        return moment.astimezone(UTC).isoformat(timespec="microseconds")

    @staticmethod
    def parse_ts(text: str) -> datetime:
        """The inverse of ``format_ts``: always a UTC-aware datetime."""
        return datetime.fromisoformat(text).astimezone(UTC)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._lock:
            try:
                yield self._connection
            except _CALLERS_OWN:
                raise
            except sqlite3.DatabaseError as exc:  # _store_errors, one frame less
                raise _unavailable(self._path, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any exception.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a concurrent writer in
        another process waits (up to the busy timeout) instead of failing half-way.
        """
        with self._lock, _store_errors(self._path):
            conn = self._connection
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also when COMMIT itself failed
                    conn.execute("ROLLBACK")
                raise

    def write(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        """One write statement, its own transaction: what ``transaction()`` does for a
        single statement, in one call to SQLite instead of three.

        In autocommit mode a write statement is atomic, and it takes the write lock as
        it starts, before reading anything, as ``BEGIN IMMEDIATE`` does: a concurrent
        writer in another process is waited for (up to the busy timeout), never raced.
        The hot path of every operation (the journal's running and finished rows) is
        two such statements.
        """
        with self._lock:
            try:
                return self._connection.execute(sql, params)
            except _CALLERS_OWN:
                raise
            except sqlite3.DatabaseError as exc:  # as _store_errors, without its frames
                raise _unavailable(self._path, exc) from exc

    def insert(self, sql: str, params: Sequence[object] = ()) -> int:
        """``write`` of one INSERT into a table with an ``id`` column; the new row's id."""
        with self._lock:
            try:
                cursor = self._connection.execute(sql, params)
            except _CALLERS_OWN:
                raise
            except sqlite3.DatabaseError as exc:  # as write
                raise _unavailable(self._path, exc) from exc
        assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
        return cursor.lastrowid

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    # -- what the migrations need of each engine ------------------------------------------

    def has_table(self, name: str) -> bool:
        with self.read() as conn:
            return bool(conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
                (name,)).fetchall())

    def ddl(self, script: str) -> str:
        """A migration script in this engine's spelling (the scripts are SQLite's)."""
        return script

    # -- what moving a store needs (``store.move``) --------------------------------------

    def tables(self) -> list[str]:
        """The store's tables, by name."""
        with self.read() as conn:
            return [str(r["name"]) for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                "'sqlite_%' ORDER BY name").fetchall()]

    def columns(self, table: str) -> list[str]:
        with self.read() as conn:
            return [str(r["name"]) for r in
                    conn.execute("SELECT name FROM pragma_table_info(?)", (table,)).fetchall()]

    def copy_rows(self, table: str, columns: Sequence[str],
                  rows: Iterator[Sequence[object]]) -> int:
        """Insert ``rows`` (values in ``columns``' order) into ``table``, inside the
        caller's ``transaction()``; how many."""
        marks = ", ".join("?" for _ in columns)
        names = ", ".join(f'"{c}"' for c in columns)
        count = 0
        with self.read() as conn:
            for row in rows:
                conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', tuple(row))
                count += 1
        return count

    def continue_identities(self, conn: Connection) -> None:
        """Make identity columns continue after the rows copied in (SQLite's
        AUTOINCREMENT already does)."""

    def lock_schema(self, conn: Connection) -> None:
        """Keep other processes from migrating at once, until the transaction ends
        (``BEGIN IMMEDIATE`` already does, in SQLite)."""


@contextmanager
def _store_errors(path: Path | None) -> Iterator[None]:
    """SQLite's operational errors (read-only file, disk full, locked too long, a
    directory we cannot write) and a damaged file (a corrupt page found after the store
    opened) become ``StoreUnavailable`` naming the file."""
    try:
        yield
    except _CALLERS_OWN:
        raise
    except sqlite3.DatabaseError as exc:
        raise _unavailable(path, exc) from exc


# A constraint the caller relies on (the journal's per-VM lock, a token's unique name)
# or a misuse of the API: the caller's to handle, never "the store cannot be used".
_CALLERS_OWN: Final = (sqlite3.IntegrityError, sqlite3.ProgrammingError)


def _unavailable(path: Path | None, exc: sqlite3.DatabaseError) -> StoreUnavailable:
    """A fault of the file (operational, or a damaged page) as ``StoreUnavailable``."""
    where = f" {path}" if path is not None else ""
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_CORRUPT,
                                                      sqlite3.SQLITE_NOTADB):
        fix = ("the file is damaged: move it away to start afresh (`sqlite3 FILE .recover`"
               " may save its rows), or set VIRTLIFE_HOME")
    else:
        fix = "check its permissions and free space, or set VIRTLIFE_HOME"
    return StoreUnavailable(f"the virtlife store{where} cannot be used: {exc}; {fix}")


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (persistent once set) so readers never block a writer.

    Only the first open of a new file changes anything. SQLite does not run the busy
    handler for that switch, so when several processes create the file at once the
    losers get "database is locked" at once; retry them up to the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _migrate(db: Database) -> None:
    with db.transaction() as conn:
        db.lock_schema(conn)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {str(row["name"]) for row in
                   conn.execute("SELECT name FROM schema_migrations").fetchall()}
        _refuse_newer(db, applied)
        for name, script in MIGRATIONS:
            if name in applied:
                continue
            for statement in _statements(db.ddl(script)):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                (name, db.format_ts(datetime.now(UTC))),
            )


class Store:
    """The opened store: ``.hosts`` (the inventory) and ``.journal``. Close it when done.

    ``path`` is the SQLite file, or for a PostgreSQL store the file it stands in for
    (files kept beside the store, such as the API's local socket, go in its directory);
    ``source`` is what ``open_store`` takes to open the same store again."""

    def __init__(self, path: Path, db: Database, source: Path | str | None = None) -> None:
        self.path = path
        self.source: Path | str = source if source is not None else path
        self._db = db
        self.hosts = Inventory(db)
        self.journal = Journal(db)
        self._tokens: Tokens | None = None

    @cached_property
    def facts(self) -> Facts:
        """The hosts' probed facts; imported on first use (list and state never read
        them)."""
        from virtlife.store.facts import Facts

        return Facts(self._db)

    @cached_property
    def freezes(self) -> Freezes:
        """The guests' recorded freezes; imported on first use, as ``facts``."""
        from virtlife.store.freezes import Freezes

        return Freezes(self._db)

    @cached_property
    def balance(self) -> Balance:
        """The VMs kept out of balancing, and the balancer's last moves."""
        from virtlife.store.balance import Balance

        return Balance(self._db)

    @cached_property
    def images(self) -> SavedImages:
        """The save images virtlife wrote, and the left-behind copies of migrated VMs."""
        from virtlife.store.images import SavedImages

        return SavedImages(self._db)

    @property
    def tokens(self) -> Tokens:
        """The API's tokens; imported on first use (hashlib and secrets cost every CLI
        command a few ms otherwise)."""
        if self._tokens is None:
            from virtlife.store.tokens import Tokens

            self._tokens = Tokens(self._db)
        return self._tokens

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def database(self) -> Database:
        return self._db

    def __repr__(self) -> str:
        return f"Store({self._db.location!r})"


POSTGRESQL_SCHEMES: Final = ("postgresql://", "postgres://")


def is_postgresql(where: object) -> bool:
    return isinstance(where, str) and where.startswith(POSTGRESQL_SCHEMES)


def open_store(path: Path | str | None = None) -> Store:
    """Open the store at ``path`` (default: ``config.store_url()``, else the file
    ``config.store_path()``), migrating it if needed. A ``postgresql://`` URL opens a
    PostgreSQL store (``store.pg``); anything else is a SQLite file.

    Any reason the file cannot be used (its directory cannot be made, it is a directory,
    it is not a database, it is read-only while a migration is due) is one
    ``StoreUnavailable`` naming the file; once open, a read-only store still serves reads.
    """
    if path is None:
        url = config.store_url()
        if url is not None and not is_postgresql(url):
            from virtlife.store.sql import redacted

            raise StoreUnavailable(
                f"the store URL {redacted(url)} is not a PostgreSQL URL: give "
                "postgresql://USER@HOST/DATABASE in VIRTLIFE_DB or [store] url, or unset "
                "it to use the SQLite file")
        path = url
    if is_postgresql(path):
        from virtlife.store.pg import open_postgresql  # psycopg only for PostgreSQL users

        assert isinstance(path, str)
        pg = open_postgresql(path)
        try:
            if _pending(pg):
                _migrate(pg)
        except BaseException:
            pg.close()
            raise
        return Store(config.store_path(), pg, path)
    path = Path(path) if path is not None else config.store_path()
    try:
        _private(path)
        connection = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit; Database.transaction() issues BEGIN/COMMIT
            check_same_thread=False,  # worker threads share it, serialised by Database's lock
        )
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(
            f"cannot open the virtlife store {path}: {exc}; "
            "check the directory's permissions, or set VIRTLIFE_HOME") from exc
    try:
        connection.row_factory = sqlite3.Row
        with _store_errors(path):
            try:
                _enable_wal(connection)
            except sqlite3.OperationalError as exc:
                # a read-only file that is already in WAL mode is still readable
                if "readonly" not in str(exc) and "read-only" not in str(exc):
                    raise
        # WAL with synchronous=NORMAL: a commit is not fsynced, a checkpoint is. A power
        # cut may lose the last rows but never corrupts the file; the journal's running
        # rows belong to processes that such a cut ends anyway.
        connection.execute("PRAGMA synchronous=NORMAL")
        db = Database(connection, path)
        if _pending(db):
            _migrate(db)
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise StoreUnavailable(
            f"cannot use the virtlife store {path}: {exc}; move it away to start afresh"
        ) from exc
    except BaseException:
        connection.close()
        raise
    return Store(path, db)


def _private(path: Path) -> None:
    """Make the store's directory (0700) and file (0600) when they are missing, and
    take group's and others' access off the file and its WAL files where this user owns
    them: they hold the hosts' URIs, the journal and the tokens' digests. SQLite gives
    the WAL and shared-memory files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for part in (path, path.with_name(path.name + "-wal"),
                 path.with_name(path.name + "-shm")):
        try:
            info = part.stat()
            if info.st_uid == os.geteuid() and info.st_mode & 0o077 and \
                    stat.S_ISREG(info.st_mode):
                part.chmod(stat.S_IMODE(info.st_mode) & 0o700)
        except FileNotFoundError:
            continue


def _pending(db: Database) -> bool:
    """Whether any migration is still to apply (read-only: a current store needs no write).

    ``StoreUnavailable`` when the store has migrations this virtlife does not know."""
    if not db.has_table("schema_migrations"):
        return True
    with db.read() as conn:
        applied = {str(r["name"]) for r in
                   conn.execute("SELECT name FROM schema_migrations").fetchall()}
    _refuse_newer(db, applied)
    return any(name not in applied for name, _ in MIGRATIONS)


def _refuse_newer(db: Database, applied: set[str]) -> None:
    known = {name for name, _ in MIGRATIONS}
    newer = sorted(applied - known)
    if newer:
        raise StoreUnavailable(
            f"the virtlife store {db.location} has a newer schema than this virtlife knows "
            f"(migration {newer[-1]}): upgrade virtlife, or point VIRTLIFE_DB or "
            "VIRTLIFE_HOME at another store")
