"""The operations journal: one row per operation virtlife performed on a VM, and its outcome.

An operation's row is written when it starts (``outcome='running'``) and completed when
it ends (``ok``, ``error``, ``refused`` or ``interrupted``); a refusal that never got
that far is one finished row (``record``). Rows name the VM by host and name and by its
UUID, so its history survives migrations and renames and a reused name does not inherit
another VM's past; they say who acted (user, and the kind of process: cli, server,
supervisor) and which process (machine, boot, pid), so that a row left ``running`` by a
process that died is found and marked ``interrupted`` by the next one that looks.

Whether a row's process died is known two ways. On its own machine (the machine id,
``/etc/machine-id`` or ``VIRTLIFE_MACHINE_ID``) a process reads ``/proc``: exact and at
once; that is all a SQLite store (one machine) needs. A PostgreSQL store is shared by
machines that cannot see each other's ``/proc``: there a process holding running rows
also holds a lease (``store.leases``) renewed every few seconds by the database's clock,
and a row of another machine whose lease has lapsed (``leases.TTL_S``, 15 s by default,
after its last renewal) counts as its process's death.

The partial unique index on ``lock_key`` makes "one running operation per VM" hold
across threads and processes: ``begin`` either inserts the row or raises ``Held`` with
the row that holds the VM.

It must not import libvirt, perform or retry operations, or interpret states: the
services layer decides what to record and what it means. The database's failures surface
as ``errors.StoreUnavailable`` (from ``db`` and ``pg``).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

from virtlife.procs import start_time

if TYPE_CHECKING:
    from virtlife.store.db import Database
    from virtlife.store.leases import Leases
    from virtlife.store.sql import Connection, Row

OUTCOMES: Final = ("ok", "error", "refused")  # finished outcomes ``record`` accepts
RUNNING: Final = "running"
INTERRUPTED: Final = "interrupted"
ALL_OUTCOMES: Final = (RUNNING, *OUTCOMES, INTERRUPTED)

_INSERT: Final = (
    "INSERT INTO journal (op_id, started_at, finished_at, host, vm, uuid, domid, operation,"
    " outcome, duration_s, detail, actor_user, actor_proc, machine, boot_id, pid,"
    " pid_start, lock_key, epoch, parent_op_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ENDED: Final = "its process ended while it ran"
_COLUMNS: Final = (
    "id, op_id, started_at, finished_at, host, vm, uuid, domid, operation, outcome, "
    "duration_s, detail, actor_user, actor_proc, machine, boot_id, pid, pid_start, epoch, "
    "parent_op_id, cancel_asked"
)


@dataclass(frozen=True)
class Actor:
    """Who acts: the user, and the kind of process (cli, server, supervisor, test)."""

    user: str
    process: str = "cli"

    @classmethod
    def current(cls, process: str = "cli") -> Actor:
        import getpass  # only when an operation is recorded, not for list/state

        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
            user = str(os.geteuid())
        return cls(user, process)


@dataclass(frozen=True)
class ProcessRef:
    """One process, told apart from a later one that reuses its pid."""

    machine: str
    boot_id: str
    pid: int
    pid_start: int  # start time in clock ticks since boot (/proc/PID/stat field 22)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@cache
def _host() -> tuple[str, str, str]:
    """This machine's id (``/etc/machine-id``; the host name without one), its host
    name, and its boot id."""
    import socket  # only when a process is compared: not on every command's path

    name = socket.gethostname()
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            found = Path(path).read_text().strip()
        except OSError:
            continue
        if found:
            return found, name, _boot_id()
    return name, name, _boot_id()


MACHINE_ID_ENV: Final = "VIRTLIFE_MACHINE_ID"


def machine_id() -> str:
    """Which machine this is, as the journal's rows name it: ``VIRTLIFE_MACHINE_ID`` when
    set (two machines cloned with one machine id must set it), else ``/etc/machine-id``.
    Not the host name: two machines sharing a store may share a name."""
    return os.environ.get(MACHINE_ID_ENV, "").strip() or _host()[0]


def _machine() -> tuple[str, str]:
    return machine_id(), _host()[2]


def same_machine(ref: ProcessRef) -> bool:
    """Whether ``ref`` ran on this machine, whose ``/proc`` can tell about it (rows
    written before machine ids name the machine by its host name)."""
    return ref.machine == machine_id() or (
        ref.machine == _host()[1] and MACHINE_ID_ENV not in os.environ)


_this: list[ProcessRef] = []  # this process, read once per pid (a fork gets its own)


def this_process() -> ProcessRef:
    pid = os.getpid()
    known = _this[0] if _this else None
    machine, boot = _machine()
    if known is not None and known.pid == pid and known.machine == machine:
        return known
    ref = ProcessRef(machine, boot, pid, start_time(pid) or 0)
    _this[:] = [ref]
    return ref


def is_dead(ref: ProcessRef) -> bool:
    """True when ``ref`` surely no longer runs; False when alive or when ``/proc`` cannot
    tell (another machine sharing the store: ``Journal.ended`` asks its lease)."""
    _, boot = _machine()
    if not same_machine(ref):
        return False
    if ref.boot_id and boot and ref.boot_id != boot:
        return True  # this machine rebooted since
    started = start_time(ref.pid)
    return started is None or (ref.pid_start != 0 and started != ref.pid_start)


def new_op_id() -> str:
    """A short, unique operation id (what ``GET /operations/{id}`` will take)."""
    return os.urandom(6).hex()


@dataclass(frozen=True)
class JournalEntry:
    id: int
    started_at: datetime  # UTC, timezone-aware
    host: str
    vm: str
    operation: str
    outcome: str  # running, ok, error, refused or interrupted
    duration_s: float
    detail: str  # the resulting state text, or the error message
    op_id: str = ""
    uuid: str = ""
    finished_at: datetime | None = None
    domid: int | None = None  # libvirt's id of the running domain when it was asked
    actor: Actor = field(default_factory=lambda: Actor(""))
    process: ProcessRef = field(default_factory=lambda: ProcessRef("", "", 0, 0))
    epoch: int | None = None  # the leadership term a supervisor acted under, if any
    parent_op_id: str = ""  # the operation this one is part of (an evacuation's move)
    cancel_asked: bool = False  # another process asked this running operation to stop

    @property
    def running(self) -> bool:
        return self.outcome == RUNNING

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, as ``operations --json`` and the REST API show a row."""
        return {
            "op_id": self.op_id, "operation": self.operation, "host": self.host,
            "vm": self.vm, "uuid": self.uuid, "outcome": self.outcome,
            "started": self.started_at.isoformat(),
            "finished": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": round(self.duration_s, 3), "detail": self.detail,
            "user": self.actor.user, "process": self.actor.process, "pid": self.process.pid,
            "machine": self.process.machine, "epoch": self.epoch,
            "parent_op_id": self.parent_op_id or None, "cancel_asked": self.cancel_asked,
        }

    def describe(self) -> str:
        """``save (operation 3f2a9c1b04de, started 2026-11-26 01:02:03 UTC by root via cli)``"""
        who = f" by {self.actor.user} via {self.actor.process}" if self.actor.user else ""
        return (f"{self.operation} (operation {self.op_id}, started "
                f"{self.started_at:%Y-%m-%d %H:%M:%S} UTC{who})")


class Held(Exception):
    """``begin`` found the VM held by another running operation, ``holder``."""

    def __init__(self, holder: JournalEntry) -> None:
        super().__init__(holder.describe())
        self.holder = holder


class Journal:
    """The ``journal`` table. Obtain it as ``Store.journal``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._leases: Leases | None = None

    def _lease(self) -> Leases | None:
        """This process's lease in a PostgreSQL store (None in SQLite: one machine)."""
        if self._db.engine != "postgresql":
            return None
        me = this_process()
        if self._leases is None or self._leases.me != me:
            from virtlife.store.leases import Leases

            self._leases = Leases(self._db, me, _host()[1])
        return self._leases

    def ended(self, entries: Sequence[JournalEntry]) -> builtins.list[JournalEntry]:
        """Which of ``entries`` (running rows, as read) belong to a process that surely
        ended: by ``/proc`` on this machine, by a lapsed lease for another machine's
        rows in a PostgreSQL store (``store.leases``)."""
        dead = [e for e in entries if is_dead(e.process)]
        elsewhere = [e for e in entries if not same_machine(e.process)]
        leases = self._lease() if elsewhere else None
        if leases is not None:
            lapsed = leases.lapsed(e.process for e in elsewhere)
            dead += [e for e in elsewhere if e.process in lapsed]
        return dead

    @property
    def database(self) -> Database:
        """The file this journal is kept in (the store's other tables are beside it)."""
        return self._db

    def _entry(self, row: Row) -> JournalEntry:
        finished = row["finished_at"]
        domid = row["domid"]
        return JournalEntry(
            id=int(row["id"]),
            started_at=self._db.parse_ts(str(row["started_at"])),
            host=str(row["host"]),
            vm=str(row["vm"]),
            operation=str(row["operation"]),
            outcome=str(row["outcome"]),
            duration_s=float(row["duration_s"]),
            detail=str(row["detail"]),
            op_id=str(row["op_id"]),
            uuid=str(row["uuid"]),
            finished_at=self._db.parse_ts(str(finished)) if finished is not None else None,
            domid=int(domid) if domid is not None else None,
            actor=Actor(str(row["actor_user"]), str(row["actor_proc"])),
            process=ProcessRef(str(row["machine"]), str(row["boot_id"]), int(row["pid"]),
                               int(row["pid_start"])),
            epoch=int(row["epoch"]) if row["epoch"] is not None else None,
            parent_op_id=str(row["parent_op_id"] or ""),
            cancel_asked=bool(row["cancel_asked"]),
        )

    def _select(self, where: str, params: Sequence[object],
                tail: str = "") -> builtins.list[JournalEntry]:
        with self._db.read() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM journal {where} {tail}",
                                params).fetchall()
        return [self._entry(row) for row in rows]

    # -- writing --------------------------------------------------------------------------

    def _insert(self, *, op_id: str, started: datetime, finished: datetime | None,
                host: str, vm: str, uuid: str, domid: int | None, operation: str,
                outcome: str, duration_s: float, detail: str, actor: Actor,
                lock_key: str | None, epoch: int | None = None, parent: str = "",
                conn: Connection | None = None) -> JournalEntry:
        """Insert one row, one statement (``Database.write``), or inside the caller's
        transaction ``conn``; return it as ``get`` would read it (without reading it)."""
        proc = this_process()
        fmt = self._db.format_ts
        params = (op_id, fmt(started), fmt(finished) if finished is not None else None, host,
                  vm, uuid, domid, operation, outcome, float(duration_s), detail, actor.user,
                  actor.process, proc.machine, proc.boot_id, proc.pid, proc.pid_start,
                  lock_key, epoch, parent or None)
        if conn is None:
            row_id = self._db.insert(_INSERT, params)
        else:  # RETURNING: SQLite 3.35 and PostgreSQL both have it
            row_id = int(conn.execute(_INSERT + " RETURNING id", params).fetchone()["id"])
        return JournalEntry(
            id=row_id, started_at=started.astimezone(UTC), host=host, vm=vm,
            operation=operation, outcome=outcome, duration_s=float(duration_s),
            detail=detail, op_id=op_id, uuid=uuid,
            finished_at=finished.astimezone(UTC) if finished is not None else None,
            domid=domid, actor=actor, process=proc, epoch=epoch, parent_op_id=parent)

    def record(
        self,
        host: str,
        vm: str,
        operation: str,
        outcome: str,
        duration_s: float,
        detail: str,
        started_at: datetime | None = None,
        *,
        uuid: str = "",
        actor: Actor | None = None,
        op_id: str | None = None,
        domid: int | None = None,
        epoch: int | None = None,
        parent: str = "",
        conn: Connection | None = None,
    ) -> JournalEntry:
        """Append a finished entry; ``started_at`` defaults to now and must be aware.
        ``epoch``: the leadership term a supervisor acted under (``store.leadership``);
        ``conn``: write it in that transaction (a leader's guarded one), not on its own;
        ``parent``: the operation it is part of."""
        if outcome not in OUTCOMES:
            raise ValueError(f"journal outcome must be one of {OUTCOMES}, not {outcome!r}")
        if duration_s < 0:
            raise ValueError(f"journal duration must not be negative, got {duration_s}")
        finished = datetime.now(UTC)
        return self._insert(op_id=op_id or new_op_id(), started=started_at or finished,
                            finished=finished, host=host, vm=vm, uuid=uuid, domid=domid,
                            operation=operation, outcome=outcome, duration_s=duration_s,
                            detail=detail, actor=actor or Actor.current(), lock_key=None,
                            epoch=epoch, parent=parent, conn=conn)

    def begin(self, *, op_id: str, host: str, vm: str, operation: str, actor: Actor,
              lock_key: str | None, uuid: str = "", domid: int | None = None,
              started_at: datetime | None = None, parent: str = "") -> JournalEntry:
        """Write the ``running`` row of a starting operation; with ``lock_key``, take the
        VM: ``Held`` if another live operation has it (a dead holder is marked
        ``interrupted`` first and the VM taken). ``parent``: the operation it is part of
        (an evacuation, for each of its migrations)."""
        started = started_at or datetime.now(UTC)
        leases = self._lease()
        if leases is not None:  # before the row: a row is never seen without its lease
            leases.hold(op_id)
        try:
            for _attempt in range(2):
                try:
                    return self._insert(op_id=op_id, started=started, finished=None,
                                        host=host, vm=vm, uuid=uuid, domid=domid,
                                        operation=operation, outcome=RUNNING,
                                        duration_s=0.0, detail="", actor=actor,
                                        lock_key=lock_key, parent=parent)
                except self._db.conflicts:
                    holder = self.holder(lock_key or "")
                    if holder is None:
                        continue  # it finished between our insert and our look
                    if not self.ended([holder]):
                        raise Held(holder) from None
                    self._interrupt([holder], _ENDED)
            raise Held(  # pragma: no cover - two holders dying under us in a row
                self.holder(lock_key or "") or self._missing(lock_key))
        except BaseException:
            if leases is not None:
                leases.release([op_id])
            raise

    @staticmethod
    def _missing(lock_key: str | None) -> JournalEntry:  # pragma: no cover - see begin
        now = datetime.now(UTC)
        return JournalEntry(0, now, "", lock_key or "", "?", RUNNING, 0.0, "")

    def finish(self, op_id: str, outcome: str, detail: str, duration_s: float,
               *, vm: str | None = None, uuid: str | None = None) -> None:
        """Complete a running entry (and release its VM), one statement. ``vm``/``uuid``
        fill in what was not known at the start (a restore learns its VM from the file);
        leave them None when the row has them already (rewriting them rewrites their
        indexes: pages the commit writes for nothing)."""
        if outcome not in (*OUTCOMES, INTERRUPTED):
            raise ValueError(f"journal outcome must be one of {OUTCOMES}, not {outcome!r}")
        sets = ("UPDATE journal SET outcome = ?, detail = ?, duration_s = ?, finished_at = ?,"
                " lock_key = NULL")
        params: builtins.list[object] = [outcome, detail, max(0.0, float(duration_s)),
                                         self._db.format_ts(datetime.now(UTC))]
        if vm is not None:
            sets += ", vm = ?"
            params.append(vm)
        if uuid is not None:
            sets += ", uuid = ?"
            params.append(uuid)
        try:
            self._db.write(f"{sets} WHERE op_id = ? AND outcome = ?",
                           (*params, op_id, RUNNING))
        finally:
            if self._leases is not None:
                self._leases.release([op_id])

    def _interrupt(self, entries: builtins.list[JournalEntry], why: str) -> None:
        now = datetime.now(UTC)
        with self._db.transaction() as conn:
            for e in entries:
                conn.execute(
                    "UPDATE journal SET outcome = ?, detail = ?, finished_at = ?,"
                    " duration_s = ?, lock_key = NULL WHERE op_id = ? AND outcome = ?",
                    (INTERRUPTED, f"interrupted: {why}", self._db.format_ts(now),
                     max(0.0, (now - e.started_at).total_seconds()), e.op_id, RUNNING),
                )

    def sweep(self) -> builtins.list[JournalEntry]:
        """Mark every running entry whose process surely ended as ``interrupted``;
        return them as they were."""
        dead = self.ended(self.running())
        if dead:
            self._interrupt(dead, _ENDED)
        return dead

    def interrupt_mine(self, why: str = "the command was interrupted (Ctrl-C)", *,
                       op_ids: Collection[str] | None = None) -> int:
        """Mark this process's running entries ``interrupted`` (this machine, boot, pid
        and pid start: never another process's, nor an earlier one's that reused the pid),
        with ``why`` in their detail; with ``op_ids``, only those of them (what one
        ``Services`` of the process started). Return how many."""
        me = this_process()
        where = ("WHERE outcome = ? AND machine = ? AND boot_id = ? AND pid = ? AND "
                 "pid_start = ?")
        params: builtins.list[object] = [RUNNING, me.machine, me.boot_id, me.pid,
                                         me.pid_start]
        if op_ids is not None:
            wanted = sorted(set(op_ids))
            if not wanted:
                return 0
            where += f" AND op_id IN ({', '.join('?' for _ in wanted)})"
            params += wanted
        mine = self._select(where, params)
        if mine:
            self._interrupt(mine, why)
        if self._leases is not None:
            self._leases.release([e.op_id for e in mine])
        return len(mine)

    def correct(self, op_id: str, outcome: str, detail: str) -> None:
        """Rewrite how a finished entry ended, once what happened is known (a migration
        whose process died, or whose end could not be confirmed: ``services`` asked the
        hosts). A running entry is left alone."""
        if outcome not in (*OUTCOMES, INTERRUPTED):
            raise ValueError(f"journal outcome must be one of {OUTCOMES}, not {outcome!r}")
        self._db.write("UPDATE journal SET outcome = ?, detail = ? WHERE op_id = ? AND "
                       "outcome != ?", (outcome, detail, op_id, RUNNING))

    def ask_cancel(self, op_id: str) -> bool:
        """Ask the running operation ``op_id`` (in whichever process runs it) to stop:
        its process reads ``cancel_asked``. False when no such operation runs."""
        cursor = self._db.write("UPDATE journal SET cancel_asked = 1 WHERE op_id = ? AND "
                                "outcome = ?", (op_id, RUNNING))
        return bool(cursor.rowcount)

    def cancel_asked(self, op_id: str) -> bool:
        """Whether a cancel was asked of the operation ``op_id``."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT cancel_asked FROM journal WHERE op_id = ?",
                                (op_id,)).fetchall()
        return bool(rows and rows[0]["cancel_asked"])

    def children(self, op_id: str) -> builtins.list[JournalEntry]:
        """The operations that are part of ``op_id``, oldest first."""
        return self._select("WHERE parent_op_id = ?", (op_id,), "ORDER BY started_at, id")

    def marked(self, operations: Sequence[str], mark: str,
               limit: int = 20) -> builtins.list[JournalEntry]:
        """The newest finished entries of ``operations`` whose detail holds ``mark`` (an
        end still to be confirmed), newest first."""
        if not operations or limit < 1:
            return []
        marks = ", ".join("?" for _ in operations)
        return self._select(
            f"WHERE operation IN ({marks}) AND outcome IN (?, ?) AND instr(detail, ?) > 0",
            (*operations, "error", INTERRUPTED, mark, limit),
            "ORDER BY started_at DESC, id DESC LIMIT ?")

    # -- reading --------------------------------------------------------------------------

    def get(self, op_id: str) -> JournalEntry | None:
        found = self._select("WHERE op_id = ?", (op_id,))
        return found[0] if found else None

    def holder(self, lock_key: str) -> JournalEntry | None:
        """The running entry that holds ``lock_key``, if any."""
        found = self._select("WHERE lock_key = ? AND outcome = ?", (lock_key, RUNNING))
        return found[0] if found else None

    def running(self) -> builtins.list[JournalEntry]:
        return self._select("WHERE outcome = ?", (RUNNING,), "ORDER BY started_at, id")

    def list(
        self, vm: str | None = None, host: str | None = None, limit: int = 100,
        *, uuid: str | None = None,
    ) -> builtins.list[JournalEntry]:
        """Entries newest first (by ``started_at``, then insertion), optionally filtered.

        With ``uuid``, a VM's whole history follows it across hosts and renames (and
        ``vm``/``host`` are not needed)."""
        if limit < 1:
            raise ValueError(f"journal limit must be at least 1, got {limit}")
        clauses: builtins.list[str] = []
        params: builtins.list[object] = []
        for column, value in (("vm", vm), ("host", host), ("uuid", uuid)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        return self._select(where, params, "ORDER BY started_at DESC, id DESC LIMIT ?")

    def newest_by_host(self, uuid: str, limit: int = 1000) -> dict[str, JournalEntry]:
        """The newest entry of the VM ``uuid`` on each host it has rows on (among its
        ``limit`` newest rows): where virtlife last saw it, and what it did there."""
        newest: dict[str, JournalEntry] = {}
        for entry in self._select("WHERE uuid = ?", (uuid, limit),
                                  "ORDER BY started_at DESC, id DESC LIMIT ?"):
            newest.setdefault(entry.host, entry)
        return newest

    def last(self, vm: str, host: str, operation: str | builtins.list[str],
             *, uuid: str = "") -> JournalEntry | None:
        """The newest entry of ``operation`` (or of any of several) for the VM.

        With ``uuid``, only that VM's rows count (a VM of the same name before it, or
        rows written before UUIDs were recorded, do not)."""
        ops = [operation] if isinstance(operation, str) else operation
        marks = ", ".join("?" for _ in ops)
        if uuid:
            where, params = f"WHERE uuid = ? AND operation IN ({marks})", [uuid, *ops]
        else:
            where, params = (f"WHERE vm = ? AND host = ? AND operation IN ({marks})",
                             [vm, host, *ops])
        found = self._select(where, params, "ORDER BY started_at DESC, id DESC LIMIT 1")
        return found[0] if found else None
