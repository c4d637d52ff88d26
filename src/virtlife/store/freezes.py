"""Guest file-system freezes that virtlife started, by VM UUID, so that none outlives us.

A row is written *before* the guest agent is asked to freeze and removed once the
guest is thawed. ``bounded`` rows belong to an operation that thaws by itself within
``bound_s`` (a quiesced snapshot); one left behind means its process died or was cut
short, and the next virtlife command that touches the VM thaws the guest. ``held``
rows come from ``agent freeze``: the guest stays frozen until ``agent thaw``, and other
commands say so. This module only keeps the rows; ``services.freeze`` decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.sql import Row


class FreezeKind(StrEnum):
    BOUNDED = "bounded"  # the operation thaws within bound_s; a leftover row is stale
    HELD = "held"  # `agent freeze`: frozen until `agent thaw`


@dataclass(frozen=True)
class FreezeMark:
    uuid: str
    host: str
    vm: str
    op_id: str  # the operation that froze the guest
    kind: FreezeKind
    frozen_at: datetime
    bound_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"uuid": self.uuid, "host": self.host, "vm": self.vm, "op_id": self.op_id,
                "kind": self.kind.value, "frozen_at": self.frozen_at.isoformat(),
                "bound_s": self.bound_s}


class Freezes:
    """The ``freezes`` table. Obtain it as ``Store.freezes``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _mark(self, row: Row) -> FreezeMark:
        bound = row["bound_s"]
        return FreezeMark(str(row["uuid"]), str(row["host"]), str(row["vm"]),
                          str(row["op_id"]), FreezeKind(str(row["kind"])),
                          self._db.parse_ts(str(row["frozen_at"])),
                          None if bound is None else float(bound))

    def put(self, mark: FreezeMark) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO freezes (uuid, host, vm, op_id, kind, frozen_at, bound_s)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE SET"
                " host = excluded.host, vm = excluded.vm, op_id = excluded.op_id,"
                " kind = excluded.kind, frozen_at = excluded.frozen_at,"
                " bound_s = excluded.bound_s",
                (mark.uuid, mark.host, mark.vm, mark.op_id, mark.kind.value,
                 self._db.format_ts(mark.frozen_at), mark.bound_s))

    def get(self, uuid: str) -> FreezeMark | None:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM freezes WHERE uuid = ?", (uuid,)).fetchall()
        return self._mark(rows[0]) if rows else None

    def remove(self, uuid: str, op_id: str | None = None) -> bool:
        """Drop the VM's row (only if ``op_id`` froze it, when given); whether one went."""
        sql, params = "DELETE FROM freezes WHERE uuid = ?", [uuid]
        if op_id is not None:
            sql += " AND op_id = ?"
            params.append(op_id)
        with self._db.transaction() as conn:
            return conn.execute(sql, params).rowcount > 0

    def list(self) -> list[FreezeMark]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM freezes ORDER BY frozen_at").fetchall()
        return [self._mark(r) for r in rows]
