"""Process leases: how machines sharing a PostgreSQL store learn that a process of
another machine died while it held running journal rows (and so VMs).

A process cannot read another machine's ``/proc``. So, on PostgreSQL, a process renews a
lease (a ``process_leases`` row: its machine id, boot id, pid and start time, and when
the lease ends) before it writes a running row, and every ``TTL_S / 3`` seconds after,
from a daemon thread, for as long as it holds running rows through this store. The end
of a lease is the database's clock plus ``TTL_S``, never the machine's own (machines'
clocks drift apart). A row of another machine whose process has no lease in force (it
lapsed, or there is none) belongs to a dead process: ``Journal.sweep`` marks it
``interrupted`` and ``Journal.begin`` takes its VM.

Why a lease row, not a session advisory lock held by each process: a lock lives on one
connection, and the store replaces a connection the server dropped (``store.pg``), so a
blip would silently free every VM the process holds; a lease survives a reconnection
within its TTL, gives a bound by one clock (the database's) that does not depend on TCP
keepalives along the way, and serves a server whose connections come from a pool. The
cost: a process that cannot reach the database for ``TTL_S`` (or is stopped that long)
loses its rows as a dead one would; what it then finishes is not recorded over the
``interrupted`` row (``Journal.finish`` completes running rows only).

Bound: a process that dies, or whose machine dies or is cut off from the database, has
its running rows marked ``interrupted`` by the first process that looks (every command
sweeps as it starts; ``virtlife operations``; an operation on one of its VMs) at most
``TTL_S`` (15 s) after its last renewal, so within 15 s of its death.
``VIRTLIFE_LEASE_TTL_S`` changes the TTL of the leases a process takes (tests use a
short one). This module must not know what the journal's rows mean: it keeps leases.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from virtlife.errors import StoreUnavailable

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.journal import ProcessRef

log = logging.getLogger(__name__)

TTL_S: Final = 15.0
TTL_ENV: Final = "VIRTLIFE_LEASE_TTL_S"

# The database's clock, in seconds since the epoch (PostgreSQL's spelling: leases are
# kept in PostgreSQL stores only).
_NOW: Final = "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)"
_RENEW: Final = (
    "INSERT INTO process_leases (machine, boot_id, pid, pid_start, host_name, expires_s)"
    f" VALUES (?, ?, ?, ?, ?, {_NOW} + ?) ON CONFLICT (machine, boot_id, pid, pid_start)"
    " DO UPDATE SET expires_s = excluded.expires_s, host_name = excluded.host_name"
)


def ttl_s() -> float:
    """The TTL of this process's leases: ``VIRTLIFE_LEASE_TTL_S`` when set to a positive
    number, else ``TTL_S``."""
    try:
        value = float(os.environ.get(TTL_ENV, ""))
    except ValueError:
        return TTL_S
    return value if value > 0 else TTL_S


class Leases:
    """This process's lease in one PostgreSQL store, and the question of others' leases.

    ``hold(op_id)`` before a running row is written, ``release(op_id)`` once it is
    finished: the lease is renewed while any is held, by a daemon thread that ends when
    none is (or the store is closed)."""

    def __init__(self, db: Database, me: ProcessRef, host_name: str) -> None:
        self._db = db
        self._me = me
        self._host_name = host_name
        self._ttl = ttl_s()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def me(self) -> ProcessRef:
        return self._me

    def _renew(self) -> None:
        me = self._me
        self._db.write(_RENEW, (me.machine, me.boot_id, me.pid, me.pid_start,
                                self._host_name, self._ttl))

    def hold(self, op_id: str) -> None:
        """Renew the lease now (a ``StoreUnavailable`` is the caller's: no lease, no
        running row) and keep renewing it while ``op_id`` is held."""
        self._renew()
        with self._lock:
            self._held.add(op_id)
            starting = self._thread is None or not self._thread.is_alive()
        if starting:
            self.forget_lapsed()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._wake.clear()
                self._thread = threading.Thread(target=self._keep, daemon=True,
                                                name=f"virtlife-lease-{self._me.pid}")
                self._thread.start()

    def release(self, op_ids: Iterable[str]) -> None:
        with self._lock:
            self._held.difference_update(op_ids)
            if not self._held:
                self._wake.set()

    def holding(self) -> bool:
        with self._lock:
            return bool(self._held)

    def _keep(self) -> None:
        """Renew every third of the TTL while anything is held (the daemon thread)."""
        while not self._wake.wait(self._ttl / 3):
            with self._lock:
                if not self._held:
                    break
            if getattr(self._db, "closed", False):
                break
            try:
                self._renew()
            except StoreUnavailable as err:  # retried at the next beat, within the TTL
                log.warning("cannot renew this process's lease in the store: %s", err)
            except Exception as err:  # a closed store: nothing is held through it now
                log.info("process lease no longer renewed: %s", err)
                break
        with self._lock:
            self._thread = None if self._thread is threading.current_thread() \
                else self._thread

    def lapsed(self, refs: Iterable[ProcessRef]) -> set[ProcessRef]:
        """Which of ``refs`` have no lease in force by the database's clock now. Read the
        running rows first, then ask: a lease is always renewed before its row is
        written, so a row read before this holds a lease this sees."""
        wanted = set(refs)
        if not wanted:
            return set()
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT machine, boot_id, pid, pid_start FROM process_leases"
                f" WHERE expires_s > {_NOW}").fetchall()
        live = {(str(r["machine"]), str(r["boot_id"]), int(r["pid"]), int(r["pid_start"]))
                for r in rows}
        return {ref for ref in wanted
                if (ref.machine, ref.boot_id, ref.pid, ref.pid_start) not in live}

    def forget_lapsed(self) -> None:
        """Delete the leases that ended (a missing lease and a lapsed one mean the same)."""
        self._db.write(f"DELETE FROM process_leases WHERE expires_s < {_NOW} - ?",
                       (self._ttl,))
