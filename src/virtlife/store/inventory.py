"""The host inventory: which libvirt hosts virtlife manages, by name and URI.

``Inventory`` adds, removes and looks up ``HostRecord`` rows in the store's ``hosts``
table, validates names and URIs, and says which hosts are in effect (the implicit local
host while the inventory is empty); a host's ``any_uri`` records that the operator added
its URI with ``--allow-any-uri`` (the URI policy itself is ``services.uripolicy``), and
its ``mode`` whether it takes VMs (``active``) or is in ``maintenance``. It
must not connect to the hosts, import libvirt or decide anything about VMs;
reachability is the hypervisor layer's business.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from virtlife.config import LOCAL_HOST_NAME, LOCAL_URI
from virtlife.errors import HostAlreadyExists, HostNotFound, InvalidDefinition

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.sql import Connection, Row

# Letters, digits, '-', '_', '.'; starts with a letter or digit so it never reads as a
# CLI option or as '.'/'..'. No '/': "HOST/VM" is how users name a VM on one host.
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# A scheme, a colon, no whitespace: qemu:///system, test:///default, qemu+ssh://h/system.
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S*")
ACTIVE: Final = "active"
MAINTENANCE: Final = "maintenance"
MODES: Final = (ACTIVE, MAINTENANCE)
_SELECT: Final = "SELECT name, uri, added_at, any_uri, mode FROM hosts"


@dataclass(frozen=True)
class HostRecord:
    name: str
    uri: str
    added_at: datetime
    any_uri: bool = False  # added with --allow-any-uri: opened whatever the URI policy says
    mode: str = "active"  # ACTIVE or MAINTENANCE (``virtlife host maintenance``)

    @property
    def maintenance(self) -> bool:
        return self.mode == MAINTENANCE


def validate_host_name(name: str) -> None:
    """Raise ``InvalidDefinition`` unless ``name`` can name a host in the inventory."""
    if not _HOST_NAME.fullmatch(name):
        raise InvalidDefinition(
            f"invalid host name {name!r}: use 1 to 63 letters, digits, '-', '_' or '.', "
            f"starting with a letter or digit (no '/')"
        )


def validate_uri(name: str, uri: str) -> None:
    """Raise ``InvalidDefinition`` unless ``uri`` looks like a libvirt connection URI."""
    if not _URI.fullmatch(uri):
        raise InvalidDefinition(
            f"invalid libvirt URI {uri!r} for host {name}: expected SCHEME:..., "
            f"e.g. qemu:///system or qemu+ssh://HOST/system"
        )


class Inventory:
    """The ``hosts`` table. Obtain it as ``Store.hosts``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _record(self, row: Row) -> HostRecord:
        return HostRecord(
            name=str(row["name"]),
            uri=str(row["uri"]),
            added_at=self._db.parse_ts(str(row["added_at"])),
            any_uri=bool(row["any_uri"]),
            mode=str(row["mode"]),
        )

    def add(self, name: str, uri: str, *, any_uri: bool = False) -> HostRecord:
        """Record a host; ``any_uri``: its URI is opened whatever the URI policy says."""
        validate_host_name(name)
        validate_uri(name, uri)
        record = HostRecord(name=name, uri=uri, added_at=datetime.now(UTC), any_uri=any_uri)
        with self._db.transaction() as conn:
            existing = conn.execute("SELECT uri FROM hosts WHERE name = ?", (name,)).fetchall()
            if existing:
                raise HostAlreadyExists(
                    f"host {name} already exists ({existing[0]['uri']}); "
                    f"remove it first or pick another name"
                )
            conn.execute(
                "INSERT INTO hosts (name, uri, added_at, any_uri) VALUES (?, ?, ?, ?)",
                (name, uri, self._db.format_ts(record.added_at), int(any_uri)),
            )
        return record

    def remove(self, name: str) -> HostRecord:
        with self._db.transaction() as conn:
            record = self._get(conn, name)
            conn.execute("DELETE FROM hosts WHERE name = ?", (name,))
        return record

    def get(self, name: str) -> HostRecord:
        with self._db.read() as conn:
            return self._get(conn, name)

    def _get(self, conn: Connection, name: str) -> HostRecord:
        rows = conn.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchall()
        if not rows:
            raise HostNotFound(
                f"no host named {name} in the inventory; `virtlife host list` shows them"
            )
        return self._record(rows[0])

    def set_mode(self, name: str, mode: str) -> HostRecord:
        """Put host ``name`` in ``mode`` (``active`` or ``maintenance``); the record as
        it was before. ``HostNotFound`` when the inventory has no such host."""
        if mode not in MODES:
            raise ValueError(f"host mode must be one of {MODES}, not {mode!r}")
        with self._db.transaction() as conn:
            record = self._get(conn, name)
            conn.execute("UPDATE hosts SET mode = ? WHERE name = ?", (mode, name))
        return record

    def enter_maintenance(self, name: str) -> bool:
        """Put host ``name`` in maintenance unless no other host is active, in one
        statement (two hosts cannot both leave the last active one alone by racing);
        whether it is in maintenance now. ``HostNotFound`` when there is no such host."""
        with self._db.transaction() as conn:
            self._get(conn, name)
            done = conn.execute(
                "UPDATE hosts SET mode = ? WHERE name = ? AND (mode = ? OR EXISTS ("
                "SELECT 1 FROM hosts AS other WHERE other.name <> ? AND other.mode = ?))",
                (MAINTENANCE, name, MAINTENANCE, name, ACTIVE)).rowcount
        return bool(done)

    def list(self) -> builtins.list[HostRecord]:
        """The configured hosts, sorted by name."""
        with self._db.read() as conn:
            rows = conn.execute(f"{_SELECT} ORDER BY name").fetchall()
        return [self._record(row) for row in rows]

    def effective(self) -> builtins.list[HostRecord]:
        """The hosts to act on: the configured ones, or the implicit local host if none.

        The local host (``LOCAL_HOST_NAME`` at ``LOCAL_URI``) is implicit only while the
        inventory is empty; once any host is added, only the added hosts count. The
        implicit record is not stored, so its ``added_at`` is the time of this call.
        """
        hosts = self.list()
        if hosts:
            return hosts
        return [HostRecord(name=LOCAL_HOST_NAME, uri=LOCAL_URI, added_at=datetime.now(UTC))]
