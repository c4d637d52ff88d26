"""Save images virtlife wrote, and definitions a migration left behind: the rows only.

``saved_images`` has one row per ``save`` (keyed by the save's operation id), written
*before* libvirt is asked (``saving``), so that a save whose process was killed is
still known to the next process, which reconciles it: libvirt may have finished it.
A row's status then moves on:

    saving ──> saved ──> restored          (restored once: its disk has moved on since)
      │          └─────> stale             (the VM ran since: a start, a restore of
      └──> failed                           another image, --discard-saved, file gone)

An image is identified by its host, its path, the save's operation id, and where the
client can read the file (a local host) its size and mtime.

``vm_places`` marks where migrations put a VM: the host it ``arrived`` on (so that
an unreachable destination still counts as a place it may run), and a definition a
migration left on a host (``left-copy``: ``--keep-source``, or a post-copy that
completed late): the VM lives elsewhere now, and that copy must not start. This
module keeps the rows; ``services.saved`` and ``services.oneplace`` decide.
It must not import libvirt nor talk to hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.sql import Row


class ImageStatus(StrEnum):
    SAVING = "saving"  # libvirt was asked; the outcome is not known yet
    SAVED = "saved"  # a complete image the VM has not run since: restore it
    RESTORED = "restored"  # restored once: the disk has moved on, never again
    STALE = "stale"  # the VM ran since the save: restoring it would corrupt the disk
    FAILED = "failed"  # the save did not make an image


@dataclass(frozen=True)
class SavedImage:
    op_id: str  # the save's operation id
    uuid: str
    host: str
    vm: str
    path: str
    saved_at: datetime
    status: ImageStatus
    why: str = ""  # why it is stale, restored or failed
    size: int | None = None  # where the client could stat the file (a local host)
    mtime_ns: int | None = None
    changed_at: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {"op_id": self.op_id, "uuid": self.uuid, "host": self.host, "vm": self.vm,
                "path": self.path, "saved_at": self.saved_at.isoformat(),
                "status": self.status.value, "why": self.why, "size": self.size,
                "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class LeftCopy:
    uuid: str
    host: str  # where the left-behind definition is
    vm: str
    moved_to: str  # where the VM went
    op_id: str  # the migration that left it
    why: str
    marked_at: datetime


LEFT_COPY = "left-copy"
ARRIVED = "arrived"


class SavedImages:
    """The ``saved_images`` and ``vm_places`` tables. Obtain it as ``Store.images``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _now(self) -> str:
        return self._db.format_ts(datetime.now(UTC))

    def _image(self, row: Row) -> SavedImage:
        changed = row["changed_at"]
        return SavedImage(
            str(row["op_id"]), str(row["uuid"]), str(row["host"]), str(row["vm"]),
            str(row["path"]), self._db.parse_ts(str(row["saved_at"])),
            ImageStatus(str(row["status"])), str(row["why"]),
            None if row["size"] is None else int(row["size"]),
            None if row["mtime_ns"] is None else int(row["mtime_ns"]),
            self._db.parse_ts(str(changed)) if changed is not None else None)

    def _select(self, where: str, params: tuple[object, ...]) -> list[SavedImage]:
        with self._db.read() as conn:
            rows = conn.execute(f"SELECT * FROM saved_images {where}"
                                " ORDER BY saved_at DESC, op_id", params).fetchall()
        return [self._image(r) for r in rows]

    # -- saved images -----------------------------------------------------------------

    def saving(self, *, op_id: str, uuid: str, host: str, vm: str, path: str) -> None:
        """The row of a save about to be asked of libvirt."""
        now = self._now()
        self._db.write(
            "INSERT INTO saved_images (op_id, uuid, host, vm, path, saved_at, status, why,"
            " changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)",
            (op_id, uuid, host, vm, path, now, ImageStatus.SAVING.value, now))

    def settle(self, op_id: str, status: ImageStatus, why: str = "", *,
               size: int | None = None, mtime_ns: int | None = None) -> None:
        """A save's outcome (``saved`` with the file's identity, or ``failed``)."""
        self._db.write(
            "UPDATE saved_images SET status = ?, why = ?, size = COALESCE(?, size),"
            " mtime_ns = COALESCE(?, mtime_ns), changed_at = ? WHERE op_id = ?",
            (status.value, why, size, mtime_ns, self._now(), op_id))

    def ran(self, uuid: str, why: str, *, keep: str | None = None) -> int:
        """The VM ran (``why`` says how): each of its ``saved`` images but ``keep`` is
        stale from now on. Returns how many became stale."""
        sql = ("UPDATE saved_images SET status = ?, why = ?, changed_at = ?"
               " WHERE uuid = ? AND status = ?")
        params: list[object] = [ImageStatus.STALE.value, why, self._now(), uuid,
                                ImageStatus.SAVED.value]
        if keep is not None:
            sql += " AND op_id != ?"
            params.append(keep)
        return self._db.write(sql, params).rowcount

    def of_vm(self, uuid: str, *statuses: ImageStatus) -> list[SavedImage]:
        """The VM's images, newest first (only those in ``statuses`` when given)."""
        if not statuses:
            return self._select("WHERE uuid = ?", (uuid,))
        marks = ", ".join("?" for _ in statuses)
        return self._select(f"WHERE uuid = ? AND status IN ({marks})",
                            (uuid, *(s.value for s in statuses)))

    def at(self, host: str, path: str) -> SavedImage | None:
        """The newest image virtlife saved at ``path`` on ``host``."""
        found = self._select("WHERE host = ? AND path = ?", (host, path))
        return found[0] if found else None

    def unsettled(self) -> list[SavedImage]:
        """Every ``saving`` row (its save may still run, or its process died)."""
        return self._select("WHERE status = ?", (ImageStatus.SAVING.value,))

    # -- where migrations put VMs ----------------------------------------------------

    def _place(self, *, uuid: str, host: str, vm: str, kind: str, other: str, op_id: str,
               why: str) -> None:
        self._db.write(
            "INSERT INTO vm_places (uuid, host, vm, kind, other, op_id, why, marked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid, host) DO UPDATE SET"
            " vm = excluded.vm, kind = excluded.kind, other = excluded.other,"
            " op_id = excluded.op_id, why = excluded.why, marked_at = excluded.marked_at",
            (uuid, host, vm, kind, other, op_id, why, self._now()))

    def leave_copy(self, *, uuid: str, host: str, vm: str, moved_to: str, op_id: str,
                   why: str) -> None:
        """Mark the definition of ``uuid`` on ``host`` as left behind by a migration."""
        self._place(uuid=uuid, host=host, vm=vm, kind=LEFT_COPY, other=moved_to,
                    op_id=op_id, why=why)

    def arrived(self, *, uuid: str, host: str, vm: str, came_from: str, op_id: str) -> None:
        """A migration put ``uuid`` on ``host`` (where it is the VM, not a copy)."""
        self._place(uuid=uuid, host=host, vm=vm, kind=ARRIVED, other=came_from,
                    op_id=op_id, why=f"migrated from {came_from}")

    def left_copy(self, uuid: str, host: str) -> LeftCopy | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM vm_places WHERE uuid = ? AND host = ? AND kind = ?",
                (uuid, host, LEFT_COPY)).fetchone()
        if row is None:
            return None
        return LeftCopy(str(row["uuid"]), str(row["host"]), str(row["vm"]),
                        str(row["other"]), str(row["op_id"]), str(row["why"]),
                        self._db.parse_ts(str(row["marked_at"])))

    def places_of(self, uuid: str) -> list[str]:
        """The hosts a migration put ``uuid`` on or left a copy of it on."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT host FROM vm_places WHERE uuid = ? ORDER BY host",
                                (uuid,)).fetchall()
        return [str(r["host"]) for r in rows]

    def forget_place(self, uuid: str, host: str) -> bool:
        """``host`` no longer holds ``uuid`` as marked (it migrated away, or the operator
        defined it anew there); whether a mark went."""
        return self._db.write("DELETE FROM vm_places WHERE uuid = ? AND host = ?",
                              (uuid, host)).rowcount > 0
