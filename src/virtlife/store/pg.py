"""The store in PostgreSQL: ``PgDatabase``, what ``db.Database`` is for SQLite, over
psycopg 3.

``db.open_store`` imports this module only for a ``postgresql://`` URL, so psycopg is
never loaded for SQLite users. The tables' modules run the same SQL on both engines;
``sql.postgresql`` rewrites each statement (placeholders, the few functions spelled
otherwise), ``sql.postgresql_ddl`` each migration. One connection, in autocommit mode,
serialised by a lock as the SQLite one is; a connection the server dropped is replaced
on next use. Every failure of the server (refused, wrong credentials, gone away
mid-command, a missing database) is one ``StoreUnavailable`` line that names the URL
without its password. This module must not know what the tables mean.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import DictRow, dict_row

from virtlife.errors import StoreUnavailable
from virtlife.store.db import Database
from virtlife.store.sql import Connection, Cursor, postgresql, postgresql_ddl, redacted

# How long connecting may take before the store counts as unavailable.
CONNECT_TIMEOUT_S: Final = 5
# The advisory lock (transaction scope) that lets one process at a time migrate.
SCHEMA_LOCK: Final = 0x7669_7274_6C69_6665 & 0x7FFF_FFFF_FFFF_FFFF  # "virtlife"

PgConnection = psycopg.Connection[DictRow]


def one_line(url: str, exc: BaseException) -> str:
    """A driver's message on one line (libpq's span several), without the URL's
    password (libpq quotes a URL it cannot parse)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) \
        or type(exc).__name__
    return text.replace(url, redacted(url))


def unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(
        f"the virtlife store {redacted(url)} cannot be used: {one_line(url, exc)}; check that "
        "the PostgreSQL server runs and the URL's host, user, password and database, or "
        "unset VIRTLIFE_DB and [store] url to use the SQLite file")


def connect(url: str, options: Mapping[str, Any] | None = None) -> PgConnection:
    """A connection in autocommit mode; ``options``: more libpq parameters (a dedicated
    connection's keepalives, ``tcp_user_timeout``, server settings in ``options``)."""
    try:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row,
                               connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="virtlife", **dict(options or {}))
    except psycopg.Error as exc:
        raise unavailable(url, exc) from None


class _Adapter:
    """psycopg's connection as the tables' modules use sqlite3's: ``execute`` with the
    store's SQL."""

    def __init__(self, connection: PgConnection) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self._connection.execute(postgresql(sql), tuple(parameters))


class PgDatabase(Database):
    """One PostgreSQL connection and the lock that serialises threads over it."""

    engine = "postgresql"
    conflicts: tuple[type[Exception], ...] = (psycopg.IntegrityError,)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        # no sqlite3 connection: not super().__init__
        self._url = url
        self._options = dict(options or {})
        self._path = None
        self._lock = threading.RLock()
        self._pg: PgConnection | None = connect(url, self._options)
        self._closed = False

    @property
    def location(self) -> str:
        return redacted(self._url)

    @property
    def url(self) -> str:
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    def _use(self) -> PgConnection:
        """The connection, a new one when the server dropped the last."""
        if self._closed:
            raise psycopg.InterfaceError("the store is closed")
        if self._pg is None or self._pg.closed:
            self._pg = None
            self._pg = connect(self._url, self._options)
        return self._pg

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.IntegrityError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            raise unavailable(self._url, exc) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._lock, self._errors():
            yield _Adapter(self._use())

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._lock, self._errors():
            connection = self._use()
            with connection.transaction():
                yield _Adapter(connection)

    def write(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        with self._lock, self._errors():
            return self._use().execute(postgresql(sql), tuple(params))

    def insert(self, sql: str, params: Sequence[object] = ()) -> int:
        with self._lock, self._errors():
            row = self._use().execute(postgresql(sql + " RETURNING id"),
                                      tuple(params)).fetchone()
            assert row is not None  # an INSERT ... RETURNING of one row returns it
            return int(row["id"])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._pg is not None:
                self._pg.close()

    def has_table(self, name: str) -> bool:
        with self.read() as conn:
            return bool(conn.execute(
                "SELECT 1 AS present FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_name = ?",
                (name,)).fetchall())

    def ddl(self, script: str) -> str:
        return postgresql_ddl(script)

    def tables(self) -> list[str]:
        with self.read() as conn:
            return [str(r["table_name"]) for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                " current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()]

    def columns(self, table: str) -> list[str]:
        with self.read() as conn:
            return [str(r["column_name"]) for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " current_schema() AND table_name = ? ORDER BY ordinal_position",
                (table,)).fetchall()]

    def copy_rows(self, table: str, columns: Sequence[str],
                  rows: Iterator[Sequence[object]]) -> int:
        """COPY ``rows`` into ``table`` (inside the caller's ``transaction()``)."""
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns)))
        count = 0
        with self._lock, self._errors(), self._use().cursor() as cursor, \
                cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(tuple(row))
                count += 1
        return count

    def continue_identities(self, conn: Connection) -> None:
        """Each identity column's next value: one past the largest copied (or 1)."""
        found = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE"
            " table_schema = current_schema() AND is_identity = 'YES'").fetchall()
        for row in found:
            table, column = str(row["table_name"]), str(row["column_name"])
            quoted = f'"{table}"', f'"{column}"'
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({quoted[1]}), 0)"
                f" + 1, false) FROM {quoted[0]}", (quoted[0], column)).fetchall()

    def lock_schema(self, conn: Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,)).fetchall()


def open_postgresql(url: str, options: Mapping[str, Any] | None = None) -> PgDatabase:
    """The store's database at ``url``; ``options`` as ``connect``'s (a dedicated
    connection's settings: the store's own has none)."""
    return PgDatabase(url, options)
