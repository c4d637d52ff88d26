"""The operations journal: one row per operation virtlife performed on a VM, and its outcome.

``Journal`` appends ``JournalEntry`` rows (when, which host and VM, which operation,
``ok`` or ``error``, how long it took, and the resulting state or error message) and
reads them back newest first; ``last`` answers questions such as "when was this VM's
shutdown requested". It must not import libvirt, perform or retry operations, or
interpret states: the services layer decides what to record and what it means.
"""

from __future__ import annotations

import builtins
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from virtlife.store.db import Database

OUTCOMES: Final = ("ok", "error", "refused")  # refused: the transition table said no

_COLUMNS: Final = "id, started_at, host, vm, operation, outcome, duration_s, detail"


@dataclass(frozen=True)
class JournalEntry:
    id: int
    started_at: datetime  # UTC, timezone-aware
    host: str
    vm: str
    operation: str
    outcome: str  # "ok" or "error"
    duration_s: float
    detail: str  # the resulting state text, or the error message


class Journal:
    """The ``journal`` table. Obtain it as ``Store.journal``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _entry(self, row: sqlite3.Row) -> JournalEntry:
        return JournalEntry(
            id=int(row["id"]),
            started_at=self._db.parse_ts(str(row["started_at"])),
            host=str(row["host"]),
            vm=str(row["vm"]),
            operation=str(row["operation"]),
            outcome=str(row["outcome"]),
            duration_s=float(row["duration_s"]),
            detail=str(row["detail"]),
        )

    def record(
        self,
        host: str,
        vm: str,
        operation: str,
        outcome: str,
        duration_s: float,
        detail: str,
        started_at: datetime | None = None,
    ) -> JournalEntry:
        """Append an entry; ``started_at`` defaults to now and must be timezone-aware."""
        if outcome not in OUTCOMES:
            raise ValueError(f"journal outcome must be one of {OUTCOMES}, not {outcome!r}")
        if duration_s < 0:
            raise ValueError(f"journal duration must not be negative, got {duration_s}")
        started_text = self._db.format_ts(started_at or datetime.now(UTC))
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO journal (started_at, host, vm, operation, outcome, duration_s,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (started_text, host, vm, operation, outcome, float(duration_s), detail),
            )
            entry_id = cursor.lastrowid
        assert entry_id is not None  # an INSERT into a rowid table always sets it
        return JournalEntry(
            id=entry_id,
            started_at=self._db.parse_ts(started_text),
            host=host,
            vm=vm,
            operation=operation,
            outcome=outcome,
            duration_s=float(duration_s),
            detail=detail,
        )

    def list(
        self, vm: str | None = None, host: str | None = None, limit: int = 100
    ) -> builtins.list[JournalEntry]:
        """Entries newest first (by ``started_at``, then insertion), optionally filtered."""
        if limit < 1:
            raise ValueError(f"journal limit must be at least 1, got {limit}")
        clauses: builtins.list[str] = []
        params: builtins.list[str | int] = []
        if vm is not None:
            clauses.append("vm = ?")
            params.append(vm)
        if host is not None:
            clauses.append("host = ?")
            params.append(host)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM journal {where} ORDER BY started_at DESC, id DESC LIMIT ?",
                params,
            ).fetchall()
        return [self._entry(row) for row in rows]

    def last(self, vm: str, host: str, operation: str) -> JournalEntry | None:
        """The newest entry of ``operation`` for ``vm`` on ``host``, or None if there is none."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM journal WHERE vm = ? AND host = ? AND operation = ? "
                "ORDER BY started_at DESC, id DESC LIMIT 1",
                (vm, host, operation),
            ).fetchall()
        return self._entry(rows[0]) if rows else None
