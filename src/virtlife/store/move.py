"""Moving a store from its SQLite file into a PostgreSQL database (``virtlife store
migrate URL``).

``copy_store`` copies every table of the source (the inventory, the journal, tokens,
facts, freezes, save images, VM places, process leases: whatever the schema holds but
its migration record) into the target, in one transaction of the target, and says how
many rows of each it copied. Both stores are at this virtlife's schema (``open_store``
brought them there), so the columns are the same. A target that holds any row already is
refused before anything is written: running the move again never doubles rows. Identity
columns (the journal's ids) continue after the copied ids. This module must not know
what the tables mean, nor talk to hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from virtlife.errors import AlreadyExists, InvalidInput

if TYPE_CHECKING:
    from virtlife.store.db import Store
    from virtlife.store.sql import Connection

MIGRATION_TABLE = "schema_migrations"


def copy_store(source: Store, target: Store) -> dict[str, int]:
    """Copy every row of ``source`` (SQLite) into ``target`` (PostgreSQL, empty); the
    number of rows copied per table."""
    src, dst = source.database, target.database
    if src.engine != "sqlite" or dst.engine != "postgresql":
        raise InvalidInput(
            f"cannot move {src.location} to {dst.location}: a store moves from its SQLite "
            "file into a PostgreSQL database")
    tables = [t for t in src.tables() if t != MIGRATION_TABLE]
    counts: dict[str, int] = {}
    with dst.transaction() as conn:
        dst.lock_schema(conn)  # one move (or migration) at a time
        held = {t: n for t in tables if (n := _count(conn, t))}
        if held:
            said = ", ".join(f"{t} {n}" for t, n in sorted(held.items()))
            raise AlreadyExists(
                f"cannot move the store to {dst.location}: it holds rows already ({said}); "
                "it was moved there before, or is another store. Nothing was copied: give "
                "an empty database (one with only the schema is fine)")
        for table in tables:
            columns = src.columns(table)
            with src.read() as rows:
                cursor = rows.execute(
                    f"SELECT {', '.join(_quoted(c) for c in columns)} FROM {_quoted(table)}")
                counts[table] = dst.copy_rows(table, columns, iter(cursor.fetchone, None))
        dst.continue_identities(conn)
    return counts


def _count(conn: Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) AS n FROM {_quoted(table)}").fetchone()
    return int(row["n"])


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
