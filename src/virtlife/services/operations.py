"""Operations: one place that owns an operation's id, lock, guard, watch, progress and journal.

``Operations.run`` is the context every state-changing operation runs in, so that each
reads as straight-line code::

    with ops.run(Operation.SUSPEND, guest.host, guest.name, guest) as run:
        guest.suspend()
        run.wait()
    return run.result

On entry it gives the operation an id, takes the VM (per-VM exclusion: within this
process by a table, across processes by the journal's running row), writes the
``running`` journal row, reads the state, applies the transition guard and the
active-libvirt-job guard, and subscribes to the VM's events *before* the body acts.
On exit it settles the final state, completes the journal row (``ok``, ``refused``,
``error`` or ``interrupted``), reports the last progress step and releases the VM.
A journal that cannot be written never changes the outcome: it becomes a warning in
the result (or a note on the error).

``Jobs`` runs an operation in the background and keeps its progress by id: what the
REST API returns at once (202 + operation id) and ``GET /operations/{id}`` reads.
Nothing here prints or imports libvirt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from virtlife import errors
from virtlife.hypervisor import DomainEvent, Guest, Host
from virtlife.hypervisor.events import EventKind
from virtlife.services import restarts
from virtlife.services.observe import observed_state
from virtlife.services.progress import ProgressSink, Update
from virtlife.services.wait import Watch
from virtlife.states import Operation, Rule, StateInfo, VMState, check_transition
from virtlife.store.journal import Actor, Held, Journal, JournalEntry, new_op_id

log = logging.getLogger(__name__)

# How long each operation may take to reach its state (seconds), when not given.
DEFAULT_TIMEOUTS: dict[Operation, float] = {
    Operation.DEFINE: 30, Operation.START: 60, Operation.SHUTDOWN: 120,
    Operation.REBOOT: 120, Operation.RESET: 60, Operation.DESTROY: 60,
    Operation.SUSPEND: 30, Operation.RESUME: 30, Operation.SAVE: 300,
    Operation.RESTORE: 300, Operation.MANAGEDSAVE: 300, Operation.MANAGEDSAVE_REMOVE: 30,
    Operation.PMSUSPEND: 60, Operation.PMWAKEUP: 60, Operation.UNDEFINE: 30,
    Operation.SNAPSHOT_CREATE: 300, Operation.SNAPSHOT_REVERT: 300,
    Operation.SNAPSHOT_DELETE: 300, Operation.ATTACH_ISO: 30, Operation.DETACH_ISO: 30,
    Operation.AGENT_ENABLE: 30, Operation.AGENT_FREEZE: 30, Operation.AGENT_THAW: 30,
    Operation.AGENT_SET_TIME: 30, Operation.AGENT_SET_PASSWORD: 30,
    Operation.AGENT_EXEC: 60, Operation.AGENT_COMMAND: 30,
    Operation.MIGRATE: 600, Operation.MIGRATE_OFFLINE: 300, Operation.MIGRATE_ABORT: 60,
    Operation.MIGRATE_RESUME: 600, Operation.GRAPHICS: 30,
}
AGENT_TIMEOUT_S = 120.0
QUEUE_POLL_S = 0.2

# The lifecycle event libvirt sends as an operation completes, and the state it confirms
# (libvirt sets that state and reason in the same step as it queues the event). When it
# is the newest event the watch holds once the call returned, as nearly always, the wait
# takes it instead of reading the state again: the confirmation costs no round trip.
# Shut-off states are always read (a managed-save image or the journal change what they
# mean), and so is any state whose event has not come yet.
CONFIRMING_EVENTS: dict[Operation, tuple[tuple[str, str], StateInfo]] = {
    Operation.SUSPEND: (("suspended", "paused"), StateInfo(VMState.PAUSED, "user")),
    Operation.RESUME: (("resumed", "unpaused"), StateInfo(VMState.RUNNING, "unpaused")),
}

# Errors that mean "refused, nothing was done" rather than "tried and failed".
_REFUSALS = (errors.InvalidTransition, errors.AlreadyExists, errors.OperationBusy,
             errors.InvalidInput)
_WAIT_OR_QUEUE = "wait for it to end, or queue behind it (--queue)"

# Who the operations run in this context act for, when not the process's own actor:
# the REST API sets it to the token (``api:NAME``) in the thread of each operation.
_ACTING: ContextVar[Actor | None] = ContextVar("virtlife_acting", default=None)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Journal the operations run within (this thread, this context) as ``actor``'s."""
    token = _ACTING.set(actor)
    try:
        yield
    finally:
        _ACTING.reset(token)
# Destroy (and migrate-abort, for a migration) is how an operator ends whatever else
# runs on a VM: never refused for it.
_OVERRIDES = frozenset({Operation.DESTROY, Operation.MIGRATE_ABORT})


@dataclass(frozen=True)
class OperationResult:
    host: str
    vm: str
    operation: Operation
    state: StateInfo
    duration_s: float
    note: str = ""
    op_id: str = ""
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.vm}: {self.state}"
        return f"{text}; {self.note}" if self.note else text

    def as_dict(self) -> dict[str, object]:
        return {
            "op_id": self.op_id, "host": self.host, "vm": self.vm,
            "operation": self.operation.value, "state": self.state.state.value,
            "reason": self.state.reason, "duration_s": round(self.duration_s, 3),
            "note": self.note, "warnings": list(self.warnings),
        }


def outcome_of(err: BaseException) -> str:
    """The journal outcome an exception ends an operation with."""
    if isinstance(err, _REFUSALS):
        return "refused"
    if isinstance(err, errors.VirtlifeError):
        return "error"
    return "interrupted"  # KeyboardInterrupt, SystemExit, or a bug cutting it short


def job_conflict(op: Operation, vm: str, job: str | None) -> str | None:
    """Why ``op`` may not start while libvirt runs ``job`` on ``vm``; None if it may."""
    if job is None or op in _OVERRIDES:
        return None
    if op is Operation.MIGRATE_RESUME and job == "migration":
        return None  # the failed post-copy's own job, kept for the resume
    return (f"cannot {op.value} {vm}: a libvirt {job} job is running on it; "
            "wait for it to end, or destroy the VM")


class OperationRun:
    """One running operation: what the body of ``Operations.run`` works with."""

    def __init__(self, op: Operation, op_id: str, host: Host, vm: str, guest: Guest | None,
                 current: StateInfo, rule: Rule, watch: Watch, timeout_s: float,
                 progress: ProgressSink | None) -> None:
        self.operation = op
        self.op_id = op_id
        self.host = host
        self.vm = vm
        self.guest = guest
        self.current = current  # the state the guard allowed
        self.rule = rule
        self.watch = watch
        self.timeout_s = timeout_s
        self._progress = progress
        self.started = time.monotonic()
        self.note = ""
        self.final: StateInfo | None = None
        self.warnings: list[str] = []
        self.result: OperationResult | None = None

    def add_note(self, text: str) -> None:
        """Add to what the result and the journal say about the operation."""
        self.note = f"{self.note}; {text}" if self.note else text

    def report(self, stage: str, message: str, fraction: float | None = None,
               detail: Mapping[str, Any] | None = None) -> None:
        if self._progress is None:
            return
        try:
            self._progress(Update(self.vm, stage, message, fraction, self.op_id, detail))
        except Exception:  # a broken progress sink must not break the operation
            log.exception("progress callback failed for operation %s", self.op_id)

    def target(self) -> Guest:
        """The VM acted on (looked up once it exists, after define or restore)."""
        if self.guest is None:
            self.guest = self.host.lookup(self.vm)
        return self.guest

    def remaining(self) -> float:
        return max(0.0, self.timeout_s - (time.monotonic() - self.started))

    def wait(self, accept: Callable[[StateInfo], bool] | None = None,
             describe: str | None = None) -> StateInfo:
        """Wait (by events) for a state ``accept`` takes, by default one the rule reaches
        (confirmed by the operation's own event when it has come, see CONFIRMING_EVENTS)."""
        confirmed = None
        if accept is None:
            confirmed = self._confirmed()
            reaches = self.rule.reaches
            accept = lambda s: s.state in reaches  # noqa: E731
            if confirmed is not None and self._progress is None:
                self.final = confirmed  # nothing to say, nothing to wait for
                return confirmed
            describe = describe or " or ".join(sorted(s.label for s in reaches))
        what = describe or "the expected state"
        self.report("wait", f"waiting for {self.vm} to be {what}")
        if confirmed is not None:
            self.final = confirmed
            return confirmed
        try:
            self.final = self.watch.until_state(self.target(), accept, self.remaining(),
                                                describe=what)
        except errors.OperationTimeout:  # say the operation's time, not what was left of it
            restarted = "".join(f" ({note})" for note in self.watch.restarts)
            raise errors.OperationTimeout(
                f"{self.vm} did not reach {what} within {self.timeout_s:g} s: it is "
                f"{self.target().status()}{restarted}") from None
        return self.final

    def _confirmed(self) -> StateInfo | None:
        """The state this operation's confirming event stands for, when that event is the
        newest the watch holds and the state one the rule reaches; None otherwise."""
        confirming = CONFIRMING_EVENTS.get(self.operation)
        if confirming is None:
            return None
        (event_name, detail), state = confirming
        event = self.watch.latest()
        if (event is None or event.kind is not EventKind.LIFECYCLE
                or (event.event, event.detail) != (event_name, detail)
                or state.state not in self.rule.reaches):
            return None
        return state

    def wait_event(self, match: Callable[[DomainEvent], bool], describe: str) -> DomainEvent:
        self.report("wait", f"waiting for {describe}")
        return self.watch.until_event(match, self.remaining(), describe=describe)

    def wait_agent(self, timeout_s: float = AGENT_TIMEOUT_S) -> float:
        """Wait until the guest agent answers; note and return the seconds it took."""
        self.report("agent", f"waiting for the agent of {self.vm}")
        seconds = self.watch.until_agent(self.target(), timeout_s)
        self.final = None  # the state may have moved on while we waited: read it again
        return seconds


class Operations:
    """Runs operations for one process: its per-VM table, its journal, its actor."""

    def __init__(self, journal: Journal | None, actor: Actor | None = None, *,
                 on_touch: Callable[[Guest], list[str]] | None = None) -> None:
        self.journal = journal
        self.actor = actor or Actor.current()  # the process's; see ``acting``
        # run once the VM is taken, before the guard: what an earlier operation left
        # behind (a freeze whose process died); it returns what to tell the operator
        self.on_touch = on_touch
        self._lock = threading.Condition()
        self._active: dict[str, tuple[str, Operation]] = {}  # lock key -> (op id, op)
        # the running journal rows written here and not yet finished: what this
        # ``Operations`` (one ``Services``) marks interrupted on Ctrl-C, and no other's;
        # its own lock, held only to change or copy it (the Ctrl-C hook never waits)
        self._rows: set[str] = set()
        self._rows_lock = threading.Lock()

    @property
    def acting(self) -> Actor:
        """Who the journal names for an operation run now: the context's actor (an API
        token's, ``acting_as``), else the process's."""
        return _ACTING.get() or self.actor

    # -- the journal, never allowed to change the outcome --------------------------------

    def _journal_safely(self, warnings: list[str], what: str,
                        call: Callable[[Journal], object]) -> None:
        if self.journal is None:
            return
        try:
            call(self.journal)
        except errors.StoreUnavailable as err:
            log.info("journal: cannot %s: %s", what, err)  # told once, as a warning
            warnings.append(f"the journal could not {what}: {err}")

    def record_failure(self, op: Operation, host: str, vm: str, err: BaseException,
                       *, started_at: datetime | None = None, duration_s: float = 0.0,
                       uuid: str = "") -> None:
        """Journal an operation that failed before it could start (unreachable host, bad
        save file, the VM busy). A journal failure becomes a note on ``err``."""
        warnings: list[str] = []
        self._journal_safely(warnings, "record it", lambda j: j.record(
            host, vm, op.value, outcome_of(err) if outcome_of(err) != "interrupted" else "error",
            duration_s, str(err), started_at=started_at, actor=self.acting, uuid=uuid))
        for w in warnings:
            err.add_note(w)

    def hold_row(self, op_id: str, held: bool = True) -> None:
        """Count (or, ``held`` False, no longer count) the running row ``op_id`` that a
        service wrote itself (an evacuation's parent row) among ``running_rows``, so
        that Ctrl-C marks it interrupted with the rest."""
        with self._rows_lock:
            if held:
                self._rows.add(op_id)
            else:
                self._rows.discard(op_id)

    def running_rows(self) -> list[str]:
        """The ids of the operations whose running journal row this object wrote and has
        not finished yet."""
        with self._rows_lock:
            return sorted(self._rows)

    # -- per-VM exclusion -----------------------------------------------------------------

    def _take_locally(self, key: str, op_id: str, op: Operation, vm: str,
                      deadline: float | None) -> None:
        with self._lock:
            while key in self._active:
                holder_id, holder_op = self._active[key]
                left = None if deadline is None else deadline - time.monotonic()
                if left is None or left <= 0:
                    raise errors.OperationBusy(
                        f"cannot {op.value} {vm}: operation {holder_id} ({holder_op.value}) "
                        f"is running on it in this process; {_WAIT_OR_QUEUE}")
                self._lock.wait(left)
            self._active[key] = (op_id, op)

    def _release_locally(self, key: str) -> None:
        with self._lock:
            self._active.pop(key, None)
            self._lock.notify_all()

    def _begin_row(self, run_warnings: list[str], *, op: Operation, op_id: str, host: str,
                   vm: str, uuid: str, domid: int | None, key: str | None,
                   deadline: float | None, parent: str = "") -> bool:
        """Write the running row, taking the VM across processes; queue while held.
        False when there is no row (no journal, or it could not be written: a warning
        says so, and the operation's end then has no row to complete)."""
        journal = self.journal
        if journal is None:
            return False
        while True:
            try:
                journal.begin(op_id=op_id, host=host, vm=vm, operation=op.value,
                              actor=self.acting, lock_key=key, uuid=uuid, domid=domid,
                              parent=parent)
                with self._rows_lock:
                    self._rows.add(op_id)
                return True
            except Held as held:
                left = None if deadline is None else deadline - time.monotonic()
                if left is None or left <= 0:
                    raise errors.OperationBusy(busy_message(op, vm, held.holder)) from None
                time.sleep(min(QUEUE_POLL_S, left))
            except errors.StoreUnavailable as err:
                log.info("journal: cannot record the start of %s: %s", op_id, err)
                run_warnings.append(
                    f"the journal could not record it ({err}); other processes were not "
                    "kept off this VM while it ran")
                return False

    # -- the context -------------------------------------------------------------------------

    @contextmanager
    def run(self, op: Operation, host: Host, vm: str, guest: Guest | None, *,
            timeout_s: float | None = None, progress: ProgressSink | None = None,
            op_id: str | None = None, queue_s: float | None = None,
            parent_id: str | None = None) -> Iterator[OperationRun]:
        """Run ``op`` on ``vm`` (``guest`` None when it does not exist yet).

        ``queue_s``: wait up to that long for another operation on the VM to end, instead
        of being refused at once with it named; ``parent_id``: the operation this one is
        part of (journalled with it)."""
        op_id = op_id or new_op_id()
        t0 = time.monotonic()
        started_at = datetime.now(UTC)
        warnings: list[str] = []
        uuid, key = "", None
        deadline = None if queue_s is None else t0 + queue_s
        locked = began = row = False
        try:
            uuid = guest.uuid() if guest is not None else ""
            key = None if op in _OVERRIDES else (uuid or f"{host.name}/{vm}")
            if key is not None:
                self._take_locally(key, op_id, op, vm, deadline)
                locked = True
            domid = guest.domain_id() if guest is not None else None
            row = self._begin_row(warnings, op=op, op_id=op_id, host=host.name, vm=vm,
                                  uuid=uuid, domid=domid, key=key, deadline=deadline,
                                  parent=parent_id or "")
            began = True
            if guest is not None and self.on_touch is not None and op not in _OVERRIDES:
                warnings.extend(self.on_touch(guest))
            current = observed_state(guest, self.journal) if guest else StateInfo(
                VMState.UNDEFINED, "")
            # a libvirt job (a save or migration, maybe by another tool) explains the
            # state it leaves the VM in ("paused (saving)") better than the table does
            job = guest.job() if guest is not None and current.state.is_active else None
            conflict = job_conflict(op, vm, job)
            if conflict:
                raise errors.OperationBusy(conflict)
            rule = check_transition(op, vm, current)
            timeout = timeout_s if timeout_s is not None else DEFAULT_TIMEOUTS[op]
            with Watch(host, vm, during=op.value) as watch:
                run = OperationRun(op, op_id, host, vm, guest, current, rule, watch, timeout,
                                   progress)
                run.warnings = warnings
                if progress is not None:
                    run.report("request", f"{op.value} {vm} on {host.name} (operation {op_id})")
                try:
                    yield run
                except errors.ConnectionLost as lost:  # a call of the body, not a wait
                    raise _lost_call(run, lost) from lost
                if watch.restarts:  # a wait reconnected: say so first
                    run.note = "; ".join([*watch.restarts, *([run.note] if run.note else [])])
                state = run.final if run.final is not None else run.target().status()
            duration = time.monotonic() - t0
            # the UUID of a VM that did not exist at the start (define, restore) is
            # filled in; the running row has the rest
            learnt = run.guest.uuid() if not uuid and run.guest is not None else None
            detail = f"{state}; {run.note}" if run.note else str(state)
            if row:  # else the start's warning said the journal has none of it
                self._finish(op_id, "ok", detail, duration, warnings, learnt)
        except BaseException as err:
            if row:
                self._finish(op_id, outcome_of(err), _detail(err), time.monotonic() - t0,
                             warnings, None)
            elif not began and isinstance(err, errors.OperationBusy | errors.HostUnreachable):
                self.record_failure(op, host.name, vm, err, started_at=started_at, uuid=uuid)
            if isinstance(err, errors.VirtlifeError):
                for w in warnings:
                    err.add_note(w)
            raise
        finally:
            if locked and key is not None:
                self._release_locally(key)
        if progress is not None:
            run.report("done", f"{vm}: {state}", 1.0)
        where = run.guest.host.name if run.guest is not None else host.name  # moved
        run.result = OperationResult(where, vm, op, state, duration, run.note, op_id,
                                     tuple(warnings))

    def _finish(self, op_id: str, outcome: str, detail: str, duration: float,
                warnings: list[str], uuid: str | None) -> None:
        try:
            self._journal_safely(warnings, "record its outcome", lambda j: j.finish(
                op_id, outcome, detail, duration, uuid=uuid or None))
        finally:
            with self._rows_lock:
                self._rows.discard(op_id)


def _lost_call(run: OperationRun, lost: errors.ConnectionLost) -> errors.VirtlifeError:
    """What to say when a call of the operation lost its connection (libvirtd restarted
    under it): reconnect within the operation's time, read the VM again, and say where
    it is. Its answer went with the connection, so the rest of the operation was not
    done: an error even when the VM is where the operation meant it to be."""
    guest = run.guest
    if guest is None:  # nothing to read again (define, restore): what was lost says it
        return lost
    state = run.watch.reconnect(guest, run.started + run.timeout_s)
    note = run.watch.restarts[-1]
    wanted = " or ".join(sorted(s.label for s in run.rule.reaches))
    if state.state in run.rule.reaches:
        return errors.HostRestarted(
            f"{run.vm}: {note}; libvirt's answer to the {run.operation.value} was lost "
            f"with the connection, so the rest of it was not done; run it again if needed")
    return restarts.restart_failure(run.host.name, run.operation.value, run.vm, state,
                                    wanted)


def _detail(err: BaseException) -> str:
    if isinstance(err, errors.VirtlifeError):
        return str(err)
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit
        return f"interrupted ({type(err).__name__})"
    return f"bug: {type(err).__name__}: {err}"


def busy_message(op: Operation, vm: str, holder: JournalEntry) -> str:
    """``cannot suspend web1: operation 3f2a9c1b04de (save, started ... by root via cli)
    is running on it; wait for it to end, or pass --queue``"""
    return f"cannot {op.value} {vm}: {holder.describe()} is running on it; {_WAIT_OR_QUEUE}"


# -- background jobs ----------------------------------------------------------------------

@dataclass
class Job:
    """A background operation as the REST API reports it."""

    op_id: str
    description: str
    status: str = "running"  # running, ok, error, refused, interrupted
    updates: list[Update] = field(default_factory=list)
    result: OperationResult | None = None
    error: str = ""
    exit_code: int = 0

    def as_dict(self) -> dict[str, object]:
        last = self.updates[-1] if self.updates else None
        return {
            "op_id": self.op_id, "description": self.description, "status": self.status,
            "progress": None if last is None else {
                "stage": last.stage, "message": last.message, "fraction": last.fraction},
            "result": None if self.result is None else self.result.as_dict(),
            "error": self.error or None,
        }


Starter = Callable[[str, ProgressSink], OperationResult]


class Jobs:
    """Background operations of this process, by id (the journal has everyone's)."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._on_end: dict[str, list[Callable[[], None]]] = {}

    def submit(self, start: Starter, description: str) -> str:
        """Start ``start(op_id, progress)`` on a thread; return its operation id at once."""
        op_id = new_op_id()
        job = Job(op_id, description)
        with self._cond:
            self._jobs[op_id] = job

        def progress(update: Update) -> None:
            with self._cond:
                job.updates.append(update)
                self._cond.notify_all()

        def work() -> None:
            try:
                result = start(op_id, progress)
            except errors.VirtlifeError as err:
                # an error may carry what was done before it (an evacuation's steps)
                partial: OperationResult | None = getattr(err, "partial", None)
                status, error, code, result_ = outcome_of(err), str(err), err.exit_code, \
                    partial
            except BaseException as err:  # a bug: keep it visible, in the log and the job
                log.exception("background operation %s failed", op_id)
                status, error, code, result_ = "error", f"bug: {err!r}", 1, None
            else:
                status, error, code, result_ = "ok", "", 0, result
            with self._cond:
                job.status, job.error, job.exit_code, job.result = status, error, code, result_
                self._cond.notify_all()
                callbacks = self._on_end.pop(op_id, [])
            for callback in callbacks:
                callback()

        threading.Thread(target=work, name=f"op-{op_id}", daemon=True).start()
        return op_id

    def get(self, op_id: str) -> Job:
        """This process's job, or one from the journal (any process); ``NotFound`` else."""
        with self._cond:
            job = self._jobs.get(op_id)
            if job is not None:
                return Job(job.op_id, job.description, job.status, list(job.updates),
                           job.result, job.error, job.exit_code)
        entry = self.journal.get(op_id) if self.journal is not None else None
        if entry is None:
            raise errors.NotFound(f"no operation {op_id}; `virtlife operations` lists them")
        return Job(entry.op_id, f"{entry.operation} {entry.host}/{entry.vm}", entry.outcome,
                   error="" if entry.outcome in ("ok", "running") else entry.detail)

    def wait(self, op_id: str, timeout_s: float) -> Job:
        """Block until the job ends or ``timeout_s`` passes; return it as it then is."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            job = self._jobs.get(op_id)
            if job is None:
                raise errors.NotFound(f"no operation {op_id} in this process")
            while job.status == "running":
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.get(op_id)

    def on_end(self, op_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the job ends (from its thread; at once if it has ended):
        how a waiter that must not hold a thread learns it (``api.limits.wait_for_job``).
        Returns the function that cancels the call; ``NotFound`` for another process's
        job."""
        with self._cond:
            job = self._jobs.get(op_id)
            if job is None:
                raise errors.NotFound(f"no operation {op_id} in this process")
            if job.status != "running":
                ended = True
            else:
                ended = False
                self._on_end.setdefault(op_id, []).append(callback)
        if ended:
            callback()

        def cancel() -> None:
            with self._cond:
                waiting = self._on_end.get(op_id, [])
                if callback in waiting:
                    waiting.remove(callback)
                if not waiting:
                    self._on_end.pop(op_id, None)

        return cancel

    def follow(self, op_id: str, timeout_s: float) -> Iterator[Update]:
        """Yield the job's progress updates as they come, until it ends or time is up."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            with self._cond:
                job = self._jobs.get(op_id)
                if job is None:
                    raise errors.NotFound(f"no operation {op_id} in this process")
                while len(job.updates) == seen and job.status == "running":
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                fresh, seen = job.updates[seen:], len(job.updates)
                done = job.status != "running"
            yield from fresh
            if done:
                return
