"""What each libvirt host said about itself, by URI: its ``host_uuid``, the virt types its
capabilities offer, and whether a KVM guest really started there.

``Facts`` keeps one ``StoredFacts`` row per URI, so that a command does not re-probe a
host on every call; the services layer decides when a row is stale (age, a changed
``host_uuid``) and how facts are found. It must not talk to hosts or import libvirt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.sql import Row


@dataclass(frozen=True)
class StoredFacts:
    uri: str
    host_uuid: str
    virt_types: tuple[str, ...]
    kvm: bool | None  # None: not probed (the host offers no kvm type, or it was not asked)
    kvm_note: str  # why KVM does not work, when it does not
    checked_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {"uri": self.uri, "host_uuid": self.host_uuid,
                "virt_types": list(self.virt_types), "kvm": self.kvm,
                "kvm_note": self.kvm_note, "checked_at": self.checked_at.isoformat()}


class Facts:
    """The ``host_facts`` table. Obtain it as ``Store.facts``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _facts(self, row: Row) -> StoredFacts:
        kvm = row["kvm"]
        return StoredFacts(
            uri=str(row["uri"]), host_uuid=str(row["host_uuid"]),
            virt_types=tuple(t for t in str(row["virt_types"]).split(",") if t),
            kvm=None if kvm is None else bool(kvm), kvm_note=str(row["kvm_note"]),
            checked_at=self._db.parse_ts(str(row["checked_at"])))

    def get(self, uri: str) -> StoredFacts | None:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM host_facts WHERE uri = ?", (uri,)).fetchall()
        return self._facts(rows[0]) if rows else None

    def put(self, facts: StoredFacts) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO host_facts (uri, host_uuid, virt_types, kvm, kvm_note,"
                " checked_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uri) DO UPDATE SET"
                " host_uuid = excluded.host_uuid, virt_types = excluded.virt_types,"
                " kvm = excluded.kvm, kvm_note = excluded.kvm_note,"
                " checked_at = excluded.checked_at",
                (facts.uri, facts.host_uuid, ",".join(facts.virt_types),
                 None if facts.kvm is None else int(facts.kvm), facts.kvm_note,
                 self._db.format_ts(facts.checked_at.astimezone(UTC))))

    def forget(self, uri: str) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM host_facts WHERE uri = ?", (uri,))


def now() -> datetime:
    return datetime.now(UTC)
