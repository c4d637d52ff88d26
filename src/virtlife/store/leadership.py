"""The supervisors' leadership in the store: one lease row per role, with its fencing
epoch, and the guard that makes a leader's write check its term in the same transaction.

The ``leadership`` table (migration ``0011_leadership``) holds, per role (``supervisor``),
the term in force: its ``epoch`` (a counter every new term increments), its holder (the
process: machine, boot, pid, start time, and host name), when the term began and when
its lease ends. Both times are the DATABASE's clock in seconds since the epoch (in
PostgreSQL ``clock_timestamp()``, as ``store.leases``), never a machine's: machines'
clocks drift apart, and a stopped process's idea of the time is worthless.

- ``claim_term`` (pure) decides, from the row as read and the database's time, whether a
  candidate may begin a new term: when there is none, when the one in force has lapsed,
  or (``exclusive``: the candidate holds the SQLite store's file lock, so no other holder
  lives) always. ``acquire`` applies it as a conditional write (``WHERE epoch = <the one
  read>``), so two candidates racing cannot both win, and writes the caller's journal row
  in the same transaction.
- ``renew`` extends the holder's lease in one statement that matches its epoch, its
  process and a lease still in force; when it matches nothing, ``lost_why`` (pure) says
  whether another term began (deposed) or the lease lapsed.
- ``guarded`` opens a transaction on the store and reads the lease row ``FOR SHARE``
  (PostgreSQL) where the epoch is the caller's and the lease is in force: a write made
  in that transaction is made under that term, and a new term cannot begin until the
  transaction ends. A stale epoch raises ``Deposed`` and nothing is written. In
  PostgreSQL the transaction also sets ``idle_in_transaction_session_timeout``, so a
  leader stopped (SIGSTOP) inside it cannot hold the row past ``IDLE_IN_TX_MS``.

This module must not decide when to renew or what a leader does: ``services.leadership``
runs the loop. It only keeps the row and checks terms.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from virtlife.store.journal import ProcessRef

if TYPE_CHECKING:
    from virtlife.store.db import Database, Store
    from virtlife.store.sql import Connection, Row

ROLE: Final = "supervisor"
# How long a transaction the guard opens may sit idle in PostgreSQL (a stopped leader's)
# before the server ends its session, and how long a lease statement may wait for a row
# lock or run: both well under the TTL (services.leadership), so neither delays a takeover.
IDLE_IN_TX_MS: Final = 2000
LOCK_WAIT_MS: Final = 1000
STATEMENT_MS: Final = 2000

# The database's clock, in seconds since the epoch, per engine.
_NOW: Final = {
    "postgresql": "CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_COLUMNS: Final = "epoch, machine, boot_id, pid, pid_start, host_name, since_s, expires_s"
_HOLDER: Final = "machine = ? AND boot_id = ? AND pid = ? AND pid_start = ?"


class Deposed(Exception):
    """A write under ``epoch`` was refused: that term is no longer in force. ``current``
    is the term that is (None when none is)."""

    def __init__(self, epoch: int, current: Term | None) -> None:
        self.epoch = epoch
        self.current = current
        now = (f"{current.holder.machine} (pid {current.holder.pid}) holds epoch "
               f"{current.epoch}" if current is not None else "no term is in force")
        super().__init__(f"epoch {epoch} is stale: {now}")


@dataclass(frozen=True)
class Term:
    """A lease row as read: who leads, under which epoch, since and until when."""

    epoch: int
    holder: ProcessRef
    host_name: str
    since_s: float  # the database's clock when the term began
    expires_s: float  # the database's clock when its lease ends unless renewed

    def in_force(self, now_s: float) -> bool:
        return self.expires_s > now_s


@dataclass(frozen=True)
class Claim:
    """A new term a candidate may begin: its epoch, and the term it follows (None: the
    first). ``took_over``: that term was another process's (or its own, lapsed)."""

    epoch: int
    prior: Term | None

    @property
    def took_over(self) -> bool:
        return self.prior is not None


def claim_term(current: Term | None, now_s: float, *, exclusive: bool = False) -> Claim | None:
    """Whether a candidate may begin a term now (pure): the first one when there is none,
    the next epoch when the one in force lapsed (or, ``exclusive``, whatever its state:
    the candidate holds the only lock that a live holder would hold); None otherwise."""
    if current is None:
        return Claim(1, None)
    if exclusive or not current.in_force(now_s):
        return Claim(current.epoch + 1, current)
    return None


def lost_why(current: Term | None, epoch: int, me: ProcessRef, now_s: float) -> str:
    """Why a renewal of ``epoch`` by ``me`` matched nothing (pure): ``deposed`` when
    another term began (or the row is gone), ``lapsed`` when the lease ended unrenewed,
    ``renewed`` when it is in fact in force (the renewal raced nothing: not lost)."""
    if current is None or current.epoch != epoch or current.holder != me:
        return "deposed"
    return "renewed" if current.in_force(now_s) else "lapsed"


def _term(row: Row) -> Term:
    return Term(int(row["epoch"]), ProcessRef(str(row["machine"]), str(row["boot_id"]),
                                              int(row["pid"]), int(row["pid_start"])),
                str(row["host_name"]), float(row["since_s"]), float(row["expires_s"]))


def now_sql(db: Database) -> str:
    return _NOW[db.engine]


def read(db: Database, role: str = ROLE) -> tuple[Term | None, float]:
    """The term of ``role`` as the store has it, and the database's time now."""
    with db.read() as conn:
        return _read(conn, db, role)


def _read(conn: Connection, db: Database, role: str) -> tuple[Term | None, float]:
    row = conn.execute(f"SELECT {_COLUMNS}, {now_sql(db)} AS now_s FROM leadership"
                       " WHERE role = ?", (role,)).fetchone()
    if row is None:
        (clock,) = conn.execute(f"SELECT {now_sql(db)} AS now_s").fetchall()
        return None, float(clock["now_s"])
    return _term(row), float(row["now_s"])


def acquire(db: Database, me: ProcessRef, host_name: str, ttl_s: float, *,
            exclusive: bool = False, role: str = ROLE,
            record: Callable[[Connection, Claim], None] | None = None) -> Claim | None:
    """Begin a term for ``me`` when ``claim_term`` allows it, and call ``record`` (the
    journal's row) in the same transaction; the claim won, or None (a term is in force,
    or another candidate won the race)."""
    now = now_sql(db)
    with db.transaction() as conn:
        current, now_s = _read(conn, db, role)
        claim = claim_term(current, now_s, exclusive=exclusive)
        if claim is None:
            return None
        values = (claim.epoch, me.machine, me.boot_id, me.pid, me.pid_start, host_name,
                  ttl_s)
        if current is None:
            written = conn.execute(
                f"INSERT INTO leadership (role, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?,"
                f" {now}, {now} + ?) ON CONFLICT (role) DO NOTHING", (role, *values))
        else:
            guard = "" if exclusive else f" AND expires_s <= {now}"
            written = conn.execute(
                "UPDATE leadership SET epoch = ?, machine = ?, boot_id = ?, pid = ?,"
                f" pid_start = ?, host_name = ?, since_s = {now}, expires_s = {now} + ?"
                f" WHERE role = ? AND epoch = ?{guard}", (*values, role, current.epoch))
        if written.rowcount != 1:
            return None  # another candidate's term began between our read and write
        if record is not None:
            record(conn, claim)
    return claim


def renew(db: Database, me: ProcessRef, epoch: int, ttl_s: float,
          role: str = ROLE) -> bool:
    """Extend ``me``'s lease of ``epoch`` to the database's now plus ``ttl_s``, if that
    term is still in force and ``me``'s; whether it was."""
    now = now_sql(db)
    cursor = db.write(
        f"UPDATE leadership SET expires_s = {now} + ? WHERE role = ? AND epoch = ? AND"
        f" {_HOLDER} AND expires_s > {now}",
        (ttl_s, role, epoch, me.machine, me.boot_id, me.pid, me.pid_start))
    return cursor.rowcount == 1


def release(db: Database, me: ProcessRef, epoch: int, role: str = ROLE,
            record: Callable[[Connection], None] | None = None) -> bool:
    """End ``me``'s lease of ``epoch`` now (a clean step-down: the next candidate need
    not wait for it to lapse), with ``record`` in the same transaction; whether it was
    still ``me``'s."""
    now = now_sql(db)
    with db.transaction() as conn:
        cursor = conn.execute(
            f"UPDATE leadership SET expires_s = {now} WHERE role = ? AND epoch = ? AND"
            f" {_HOLDER} AND expires_s > {now}",
            (role, epoch, me.machine, me.boot_id, me.pid, me.pid_start))
        if cursor.rowcount != 1:
            return False
        if record is not None:
            record(conn)
    return True


@contextmanager
def guarded(db: Database, me: ProcessRef, epoch: int, role: str = ROLE) -> Iterator[Connection]:
    """A transaction on ``db`` in which ``me``'s term ``epoch`` holds: the lease row is
    read (``FOR SHARE`` in PostgreSQL, so no new term begins before it ends; SQLite's
    ``BEGIN IMMEDIATE`` already excludes every other writer) where the epoch and holder
    are ``me``'s and the lease is in force. ``Deposed`` when not: the transaction is
    rolled back and nothing the caller wrote in it stays."""
    postgresql = db.engine == "postgresql"
    with db.transaction() as conn:
        if postgresql:
            conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {IDLE_IN_TX_MS}")
            conn.execute(f"SET LOCAL lock_timeout = {LOCK_WAIT_MS}")
        found = conn.execute(
            f"SELECT epoch FROM leadership WHERE role = ? AND epoch = ? AND {_HOLDER} AND"
            f" expires_s > {now_sql(db)}{' FOR SHARE' if postgresql else ''}",
            (role, epoch, me.machine, me.boot_id, me.pid, me.pid_start)).fetchall()
        if not found:
            current, now_s = _read(conn, db, role)
            raise Deposed(epoch, current if current is not None and current.in_force(now_s)
                          else None)
        yield conn


# -- the lease's own connection, and the SQLite file lock ----------------------------------

def lease_options(ttl_s: float) -> dict[str, Any]:
    """libpq settings of a PostgreSQL lease connection: keepalives every second after 2 s
    idle, a send that goes unacknowledged for ``ttl_s / 2`` drops the connection
    (``tcp_user_timeout``; both matter on TCP only), and server-side limits on lock
    waits, statements and transactions left idle (a stopped process's)."""
    return {
        "keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1,
        "keepalives_count": 3, "tcp_user_timeout": int(ttl_s * 500),
        "options": (f"-c lock_timeout={LOCK_WAIT_MS} -c statement_timeout={STATEMENT_MS}"
                    f" -c idle_in_transaction_session_timeout={IDLE_IN_TX_MS}"),
    }


def lease_database(store: Store, ttl_s: float) -> Database:
    """The database the lease is kept through: in PostgreSQL a connection of its own
    (``lease_options``: what the server's other work does cannot delay a renewal, and a
    dead path is noticed within the TTL); in SQLite the store's own."""
    db = store.database
    if db.engine != "postgresql":
        return db
    from virtlife.store.pg import open_postgresql

    assert isinstance(store.source, str)
    return open_postgresql(store.source, lease_options(ttl_s))


class FileLock:
    """The SQLite store's leadership: an exclusive ``flock`` on a file beside the store
    (``virtlife.db.leader``). Single machine by nature: the lock holds among processes
    of the machine whose file system holds the store, and is freed when its holder
    ends (or closes it), never while it is stopped."""

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".leader")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        """Take the lock if no other process holds it; whether this one holds it now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor frees the flock
