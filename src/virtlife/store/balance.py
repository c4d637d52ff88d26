"""The balancer's memory, by VM UUID: pins and the last balancer move of each VM.

``vm_pins`` holds the VMs that ``virtlife vm pin`` keeps out of balancing; a pin stays
until ``vm unpin``, whatever host the VM is on (a UUID survives a migration and a
rename). ``balance_moves`` holds, per VM, the last move the balancer made of it (when,
from, to, which operation): what its cool-down and the refusal of a move that would
undo a recent one are judged on (``services.balance``). This module only keeps the
rows; it decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.sql import Row


@dataclass(frozen=True)
class Pin:
    uuid: str
    vm: str  # its name when it was pinned (for display)
    pinned_at: datetime


@dataclass(frozen=True)
class BalanceMove:
    uuid: str
    vm: str
    from_host: str
    to_host: str
    moved_at: datetime
    op_id: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"uuid": self.uuid, "vm": self.vm, "from": self.from_host,
                "to": self.to_host, "moved_at": self.moved_at.isoformat(),
                "op_id": self.op_id}


class Balance:
    """The ``vm_pins`` and ``balance_moves`` tables. Obtain it as ``Store.balance``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- pins ---------------------------------------------------------------------

    def pin(self, uuid: str, vm: str, at: datetime | None = None) -> bool:
        """Pin the VM; False when it was pinned already (its row is kept as it was)."""
        when = self._db.format_ts(at or datetime.now(UTC))
        with self._db.transaction() as conn:
            return conn.execute(
                "INSERT INTO vm_pins (uuid, vm, pinned_at) VALUES (?, ?, ?)"
                " ON CONFLICT (uuid) DO NOTHING", (uuid, vm, when)).rowcount > 0

    def unpin(self, uuid: str) -> bool:
        """Unpin the VM; False when it was not pinned."""
        with self._db.transaction() as conn:
            return conn.execute("DELETE FROM vm_pins WHERE uuid = ?", (uuid,)).rowcount > 0

    def pins(self) -> dict[str, Pin]:
        """Every pin, by UUID."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM vm_pins ORDER BY uuid").fetchall()
        return {str(r["uuid"]): Pin(str(r["uuid"]), str(r["vm"]),
                                    self._db.parse_ts(str(r["pinned_at"]))) for r in rows}

    # -- moves --------------------------------------------------------------------

    def _move(self, row: Row) -> BalanceMove:
        return BalanceMove(str(row["uuid"]), str(row["vm"]), str(row["from_host"]),
                           str(row["to_host"]), self._db.parse_ts(str(row["moved_at"])),
                           str(row["op_id"]))

    def record_move(self, move: BalanceMove) -> None:
        """Keep ``move`` as the VM's last balancer move (replacing the one before)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO balance_moves (uuid, vm, from_host, to_host, moved_at, op_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE SET"
                " vm = excluded.vm, from_host = excluded.from_host,"
                " to_host = excluded.to_host, moved_at = excluded.moved_at,"
                " op_id = excluded.op_id",
                (move.uuid, move.vm, move.from_host, move.to_host,
                 self._db.format_ts(move.moved_at), move.op_id))

    def moves(self) -> dict[str, BalanceMove]:
        """Each VM's last balancer move, by UUID."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM balance_moves ORDER BY uuid").fetchall()
        return {str(r["uuid"]): self._move(r) for r in rows}
