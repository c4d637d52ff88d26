"""Host maintenance: put a host in maintenance and move its VMs away (issue 18).

``Maintenance.plan(H)`` is the dry run: every VM of H with its destination and the
checks behind it, or why it cannot move; nothing changes. ``evacuate(H)`` refuses the
last active host and an unreachable one, writes the evacuation's journal row (the
parent operation: one evacuation of H at a time, across processes), marks H in
maintenance (nothing is placed there any more), plans with ``services.placement`` (live
for running and paused VMs, offline for shut-off ones unless ``stopped=leave``) and runs
the plan with ``services.evacuation``: within the concurrency and the migration slots,
each move through the migration service as a child operation carrying the parent's id;
a VM that fails is retried once elsewhere, when it is known to be still at H. A cancel
(Ctrl-C: ``cancel_running``; another process: ``ask_cancel``, read from the parent row)
starts nothing more and aborts the moves running; H stays in maintenance either way,
until ``activate(H)``.

Each migration is the migration service's own (checks, convergence policy, verified
end); this module only chooses, orders and reports. It prints nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.services.evacuation import Drive, EvacuationStep, MoveEnd, Phase, Runner, Start
from virtlife.services.fleet import Fleet
from virtlife.services.migration.checks import CheckOptions, MigrationKind, Report
from virtlife.services.migration.ending import UNCONFIRMED
from virtlife.services.migration.gather import gather_pairs, host_state
from virtlife.services.operations import Operations
from virtlife.services.placement import (
    HostState,
    PairFacts,
    Placement,
    PlacementLimits,
    VMToPlace,
    place,
    plan,
)
from virtlife.services.progress import ProgressSink, Update
from virtlife.states import StateInfo, VMState
from virtlife.store import HostRecord, Store
from virtlife.store.journal import Held

if TYPE_CHECKING:
    from virtlife.services.migration.service import Migrations

log = logging.getLogger(__name__)

OPERATION = "host-maintenance"  # the evacuation's journal row (the parent)
ACTIVATE = "host-activate"


def lock_key(host: str) -> str:
    """The parent row's lock: one evacuation of a host at a time (no VM key has a ':')."""
    return f"maintenance:{host}"


class Stopped(StrEnum):
    """What an evacuation does with the host's shut-off VMs."""

    MOVE = "move"  # offline: their definitions go
    LEAVE = "leave"  # they stay defined on the host


@dataclass(frozen=True)
class PlannedVM:
    """One VM of the plan: where it goes and the checks behind it, or why it stays."""

    vm: str
    source: str
    kind: str  # live or offline
    state: str
    destination: str | None
    checks: str = ""  # the pre-flight verdict for the chosen destination
    reason: str = ""  # why it stays (a failed check with its fix, no capacity, ...)
    kept: bool = False  # shut off and --stopped leave: stays by choice

    def as_dict(self) -> dict[str, object]:
        return {"vm": self.vm, "from": self.source, "kind": self.kind, "state": self.state,
                "to": self.destination, "checks": self.checks, "reason": self.reason,
                "kept": self.kept}


@dataclass(frozen=True)
class EvacuationPlan:
    host: str
    vms: tuple[PlannedVM, ...]
    notes: tuple[str, ...] = ()

    @property
    def stays(self) -> tuple[PlannedVM, ...]:
        """The VMs that would stay on the host against the plan (not kept by choice)."""
        return tuple(v for v in self.vms if v.destination is None and not v.kept)

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "vms": [v.as_dict() for v in self.vms],
                "notes": list(self.notes), "stays": [v.vm for v in self.stays]}


@dataclass
class EvacuationResult:
    op_id: str
    host: str
    steps: list[EvacuationStep]
    cancelled: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def stays(self) -> list[EvacuationStep]:
        return [s for s in self.steps if s.stays]

    def counts(self) -> dict[str, int]:
        found = {p.value: 0 for p in Phase}
        for s in self.steps:
            found[s.phase.value] += 1
        return found

    def summary(self) -> str:
        c = self.counts()
        text = f"{c['moved']} moved, {c['failed']} failed, {c['left']} left"
        if self.stays:
            text += " (on " + self.host + ": " + ", ".join(s.vm for s in self.stays) + ")"
        return f"{self.cancelled}; {text}" if self.cancelled else text

    def as_dict(self) -> dict[str, object]:
        return {"op_id": self.op_id, "host": self.host, "cancelled": self.cancelled or None,
                "counts": self.counts(), "steps": [s.as_dict() for s in self.steps],
                "stays": [s.vm for s in self.stays], "notes": list(self.notes),
                "seconds": round(self.seconds, 1)}


@dataclass
class _Survey:
    """What the plan was made from, kept for the retries."""

    host: str
    records: list[HostRecord]
    vms: dict[str, VMToPlace]
    states: dict[str, str]  # the VMs' states, in words
    kept: list[tuple[str, str]]  # (vm, state) shut off and left by choice
    blocked: list[tuple[str, str, str]]  # (vm, state, why) in a state that cannot move
    pairs: dict[tuple[str, str], PairFacts]
    hosts: list[HostState]


def unmovable(vm: str, state: StateInfo) -> str:
    """Why an evacuation cannot move a VM in ``state`` ("" when it can: running, paused,
    shut off), and what to do."""
    if state.state in (VMState.RUNNING, VMState.IDLE, VMState.PAUSED, VMState.SHUTOFF):
        return ""
    if state.state is VMState.SAVED:
        return (f"{vm} is {state}: its RAM is in a save image on this host, which an offline "
                f"move would leave behind; start it so that it moves live (`virtlife start "
                f"{vm}`), or drop the image (`virtlife managedsave-remove {vm}`)")
    fix = {VMState.CRASHED: f"destroy it (`virtlife destroy {vm}`): then it moves offline",
           VMState.PMSUSPENDED: f"wake it (`virtlife pmwakeup {vm}`): then it moves live"
           }.get(state.state, "wait until it is shut off or running, then evacuate again")
    return f"{vm} is {state}: only running, paused and shut-off VMs move; {fix}"


def _checks_text(report: Report) -> str:
    warns = report.warnings
    text = f"{len(report.checks) - len(warns)} of {len(report.checks)} checks pass"
    if warns:
        text += "; warn: " + "; ".join(f"{c.name}: {c.reason}" for c in warns)
    return text


def _fixes(refusals: Sequence[str]) -> str:
    seen = [f for i, f in enumerate(refusals) if f and f not in refusals[:i]]
    return f" (fix: {'; '.join(seen)})" if seen else ""


class Maintenance:
    """Maintenance of the hosts of ``fleet`` whose inventory is ``store``'s (see the
    module doc). ``migrations`` is the migration service this evacuation's moves go
    through (its own, so that a cancel aborts these moves and no others)."""

    def __init__(self, fleet: Fleet, store: Store, ops: Operations, migrations: Migrations,
                 limits: PlacementLimits | None = None) -> None:
        self.fleet = fleet
        self.store = store
        self.ops = ops
        self.migrations = migrations
        self.limits = limits or PlacementLimits()
        self._drive: Drive | None = None
        self._drive_lock = threading.Lock()

    # -- refusals and hosts ---------------------------------------------------------------

    def _record(self, host: str) -> HostRecord:
        return self.store.hosts.get(host)  # HostNotFound: not in the inventory

    def _refuse(self, host: str) -> tuple[HostRecord, list[HostRecord], Host]:
        """The host's record, the inventory, and the host connected; refused when it is
        the last active host or cannot be reached."""
        record = self._record(host)
        records = self.store.hosts.list()
        others = [r for r in records if r.name != host and not r.maintenance]
        if not others:
            away = [r.name for r in records if r.name != host]
            why = (f"the others ({', '.join(away)}) are in maintenance" if away
                   else "the inventory has no other host")
            raise errors.InvalidTransition(
                f"cannot put {host} in maintenance: it is the last active host ({why}), so "
                "its VMs would have nowhere to go; add a host (`virtlife host add`) or end "
                "another's maintenance (`virtlife host activate HOST`) first")
        try:
            source = self.fleet.host(host)
        except errors.HostUnreachable as err:
            raise errors.HostUnreachable(
                f"cannot put {host} in maintenance: it cannot be reached "
                f"({errors.reason_of(err)}), so its VMs cannot be asked about nor moved; "
                "bring its libvirtd back (or check the network to it), then try again"
            ) from err
        return record, records, source

    def _open(self, name: str) -> tuple[Host | None, str]:
        try:
            return self.fleet.host(name), ""
        except errors.VirtlifeError as err:
            return None, str(err)

    def _states(self, records: Sequence[HostRecord], source: str, src: Host,
                exclude: frozenset[str] = frozenset()) -> list[HostState]:
        """Every inventory host as placement sees it now (the source as in maintenance)."""
        states = []
        for r in records:
            if r.name in exclude:
                continue
            host, error = (src, "") if r.name == source else self._open(r.name)
            states.append(host_state(r.name, host, error,
                                     maintenance=r.maintenance or r.name == source))
        return states

    # -- the plan -----------------------------------------------------------------------

    def _survey(self, host: str, records: list[HostRecord], src: Host,
                stopped: Stopped) -> _Survey:
        guests: list[Guest] = []
        states: dict[str, str] = {}
        kept: list[tuple[str, str]] = []
        blocked: list[tuple[str, str, str]] = []
        for guest in src.guests():
            status = guest.status()
            states[guest.name] = str(status)
            if not status.state.is_active and stopped is Stopped.LEAVE:
                kept.append((guest.name, str(status)))
            elif why := unmovable(guest.name, status):
                blocked.append((guest.name, str(status), why))
            else:
                guests.append(guest)
        destinations: dict[str, Host | None] = {}
        unreachable: dict[str, str] = {}
        for r in records:
            if r.name != host and not r.maintenance:
                destinations[r.name], why = self._open(r.name)
                if why:
                    unreachable[r.name] = why
        gathered = gather_pairs(src, guests, destinations, unreachable)
        return _Survey(host, list(records), {v.name: v for v in gathered.vms}, states, kept,
                       blocked, dict(gathered.pairs), self._states(records, host, src))

    def _plan(self, survey: _Survey) -> EvacuationPlan:
        order = sorted(survey.vms.values(), key=lambda v: (
            v.options.kind is not MigrationKind.LIVE, -v.facts.memory_mib, v.name))
        made = plan(order, survey.hosts, survey.pairs, self.limits, slots=False)
        planned: list[PlannedVM] = []
        for p in made.placements:
            vm = survey.vms[p.vm]
            planned.append(PlannedVM(p.vm, p.source, vm.options.kind.value,
                                     survey.states.get(p.vm, ""), p.destination,
                                     _checks_text(p.report)))
        for u in made.unplaced:
            vm = survey.vms[u.vm]
            fixes = _fixes([r.fix for r in u.per_host.values()])
            planned.append(PlannedVM(u.vm, u.source, vm.options.kind.value,
                                     survey.states.get(u.vm, ""), None,
                                     reason=u.reason + fixes))
        for name, state, why in survey.blocked:
            planned.append(PlannedVM(name, survey.host, "-", state, None, reason=why))
        for name, state in survey.kept:
            planned.append(PlannedVM(name, survey.host, "offline", state, None,
                                     reason="shut off: --stopped leave keeps it here",
                                     kept=True))
        by_order = {v.name: i for i, v in enumerate(order)}
        planned.sort(key=lambda v: (v.kept, by_order.get(v.vm, len(by_order)), v.vm))
        return EvacuationPlan(survey.host, tuple(planned))

    def plan(self, host: str, *, stopped: Stopped = Stopped.MOVE) -> EvacuationPlan:
        """The dry run: what ``evacuate`` would do now; nothing changes."""
        _, records, src = self._refuse(host)
        return self._plan(self._survey(host, records, src, stopped))

    # -- running it -----------------------------------------------------------------------

    def _replacer(self, survey: _Survey, src: Host) -> Callable[
            [str, frozenset[str]], tuple[str | None, str]]:
        """Another destination for a VM whose move failed, placed against the hosts as
        they are now (minus those it failed on)."""
        def replace(vm: str, tried: frozenset[str]) -> tuple[str | None, str]:
            try:
                records = self.store.hosts.list()
                hosts = self._states(records, survey.host, src, exclude=tried)
            except errors.VirtlifeError as err:
                return None, f"the hosts could not be read again: {err}"
            found = place(survey.vms[vm], hosts, survey.pairs, self.limits, slots=False)
            if isinstance(found, Placement):
                return found.destination, ""
            return None, found.reason
        return replace

    def _still_at_source(self, start: Start, err: BaseException) -> bool:
        """Whether the VM is known to be at its source after a failed move (then it may
        be tried elsewhere); unknown is no."""
        if UNCONFIRMED in str(err):
            return False
        try:
            here = self.fleet.host(start.source).find(start.vm)
            if here is None:
                return False
            return start.kind != MigrationKind.LIVE.value or here.status().state.is_active
        except errors.VirtlifeError:
            return False

    def _mover(self, parent: str, timeout_s: float | None,
               progress: ProgressSink | None) -> Callable[[Start], MoveEnd]:
        def move(start: Start) -> MoveEnd:
            options = CheckOptions(kind=MigrationKind(start.kind))
            try:
                self.migrations.migrate(f"{start.source}/{start.vm}", start.destination,
                                        options=options, timeout_s=timeout_s,
                                        progress=progress, parent_id=parent)
            except errors.VirtlifeError as err:
                return MoveEnd(False, str(err), retry=self._still_at_source(start, err))
            return MoveEnd(True)
        return move

    def _asked(self, parent: str, stopping: threading.Event | None) -> Callable[[], str]:
        def asked() -> str:
            if stopping is not None and stopping.is_set():
                return "interrupted"
            try:
                if self.store.journal.cancel_asked(parent):
                    return "cancelled (`virtlife host maintenance --cancel`)"
            except errors.StoreUnavailable as err:
                log.info("cannot read the evacuation's cancel flag: %s", err)
            return ""
        return asked

    def _begin(self, host: str, op_id: str) -> None:
        try:
            self.store.journal.begin(op_id=op_id, host=host, vm="", operation=OPERATION,
                                     actor=self.ops.acting, lock_key=lock_key(host))
            self.ops.hold_row(op_id)  # Ctrl-C marks it interrupted with its children
        except Held as held:
            raise errors.OperationBusy(
                f"cannot evacuate {host}: {held.holder.describe()} evacuates it already; "
                f"wait for it, or stop it: virtlife host maintenance {host} --cancel"
            ) from None

    def evacuate(self, host: str, *, concurrency: int = 2, timeout_s: float | None = None,
                 stopped: Stopped = Stopped.MOVE, progress: ProgressSink | None = None,
                 stopping: threading.Event | None = None,
                 op_id: str | None = None) -> EvacuationResult:
        """Put ``host`` in maintenance and move its VMs away (see the module doc)."""
        from virtlife.store.journal import new_op_id

        if concurrency < 1:
            raise errors.InvalidInput(f"--concurrency must be at least 1, not {concurrency}")
        _, records, src = self._refuse(host)
        parent = op_id or new_op_id()
        t0 = time.monotonic()
        self._begin(host, parent)
        outcome, detail = "error", "bug: the evacuation ended without an outcome"
        try:
            if not self.store.hosts.enter_maintenance(host):
                raise errors.InvalidTransition(
                    f"cannot put {host} in maintenance: it became the last active host "
                    "while this command started; activate another first")
            result = self._run(host, records, src, parent, concurrency, timeout_s, stopped,
                               progress, stopping)
            result.seconds = time.monotonic() - t0
            outcome = "interrupted" if result.cancelled else (
                "error" if result.stays else "ok")
            detail = f"{host} in maintenance; {result.summary()}"
            return result
        except BaseException as err:
            outcome = "refused" if isinstance(err, errors.InvalidTransition) else (
                "error" if isinstance(err, errors.VirtlifeError) else "interrupted")
            detail = f"{host}: {err}" if str(err) else f"{host}: {type(err).__name__}"
            raise
        finally:
            try:
                self.store.journal.finish(parent, outcome, detail, time.monotonic() - t0)
            except errors.StoreUnavailable as err:
                log.warning("cannot record the end of evacuation %s: %s", parent, err)
            finally:
                self.ops.hold_row(parent, held=False)

    def _run(self, host: str, records: list[HostRecord], src: Host, parent: str,
             concurrency: int, timeout_s: float | None, stopped: Stopped,
             progress: ProgressSink | None, stopping: threading.Event | None,
             ) -> EvacuationResult:
        # the mode just changed: the survey reads it as it is now
        survey = self._survey(host, self.store.hosts.list() or records, src, stopped)
        planned = self._plan(survey)
        notes = []
        if concurrency > self.limits.max_outgoing:
            notes.append(f"--concurrency {concurrency} is above the migration slots: at most "
                         f"{self.limits.max_outgoing} at once (placement.max_outgoing)")
        say = _Reporter(progress, parent, host)
        say.update(host, "plan", f"evacuating {host} (operation {parent}): "
                   f"{sum(v.destination is not None for v in planned.vms)} of "
                   f"{len(planned.vms)} VM(s) have a destination", planned.as_dict())
        steps = [EvacuationStep(v.vm, v.source, v.kind, v.destination,
                      Phase.PENDING if v.destination else Phase.LEFT, v.reason, kept=v.kept)
                 for v in planned.vms]
        runner = Runner(steps, concurrency=concurrency, max_outgoing=self.limits.max_outgoing,
                        max_incoming=self.limits.max_incoming,
                        replace=self._replacer(survey, src))
        left = [s for s in runner.steps if s.phase is Phase.LEFT]
        for step in left:
            say.step(step, runner, overall=step is left[-1])
        drive = Drive(runner, self._mover(parent, timeout_s, say.migration),
                      cancelled=self._asked(parent, stopping),
                      abort=self.migrations.abort_running,
                      on_change=lambda s: say.step(s, runner))
        with self._drive_lock:
            self._drive = drive
        try:
            done = drive.run()
        finally:
            with self._drive_lock:
                self._drive = None
        return EvacuationResult(parent, host, done, runner.cancelled, notes)

    def cancel_running(self, why: str = "interrupted (Ctrl-C)") -> bool:
        """Cancel this object's running evacuation (Ctrl-C, from any thread): nothing
        more starts and its running moves are aborted now. Whether one ran."""
        with self._drive_lock:
            drive = self._drive
        if drive is None:
            return False
        drive.cancel(why)
        self.migrations.abort_running()
        return True

    def refuse_start(self, host: str) -> None:
        """What ``evacuate`` would refuse at once, checked now with nothing started (the
        REST API answers these before its 202): a host not in the inventory, the last
        active host, one that cannot be reached, one whose evacuation runs already.
        ``evacuate`` checks each again when it runs."""
        self._refuse(host)
        holder = self.store.journal.holder(lock_key(host))
        if holder is not None:
            raise errors.OperationBusy(
                f"cannot evacuate {host}: {holder.describe()} evacuates it already; "
                f"wait for it, or stop it: virtlife host maintenance {host} --cancel")

    def ask_cancel(self, host: str) -> str:
        """Ask the evacuation of ``host`` running in any process to stop; its operation
        id. ``NotFound`` when none runs."""
        self._record(host)
        holder = self.store.journal.holder(lock_key(host))
        if holder is None or not self.store.journal.ask_cancel(holder.op_id):
            raise errors.NotFound(f"no evacuation of {host} is running; `virtlife "
                                  "operations` lists what runs")
        return holder.op_id

    def activate(self, host: str) -> HostRecord:
        """End the maintenance of ``host``: it takes VMs again. Refused while an
        evacuation of it runs. The record as it was."""
        record = self._record(host)
        holder = self.store.journal.holder(lock_key(host))
        if holder is not None:
            raise errors.OperationBusy(
                f"cannot activate {host}: {holder.describe()} evacuates it; stop it first: "
                f"virtlife host maintenance {host} --cancel")
        before = self.store.hosts.set_mode(host, "active")
        if before.maintenance:
            try:
                self.store.journal.record(host, "", ACTIVATE, "ok", 0.0,
                                          f"{host} active: it takes VMs again",
                                          actor=self.ops.acting,
                                          started_at=datetime.now(UTC))
            except errors.StoreUnavailable as err:
                log.warning("cannot journal the activation of %s: %s", host, err)
        return record


class EvacuationIncomplete(errors.OperationFailed):
    """An evacuation that ended with VMs left on the host against the plan, or was
    cancelled: the message names each VM that stays and why; ``partial`` is the whole
    result (every step), for a caller that keeps it (``Jobs``)."""

    def __init__(self, result: EvacuationResult) -> None:
        why = "; ".join(f"{s.vm}: {s.reason or s.phase.value}" for s in result.stays)
        super().__init__(f"evacuation of {result.host} incomplete: {result.summary()}"
                         + (f" ({why})" if why else "")
                         + f"; {result.host} stays in maintenance")
        self.partial = result


class _Reporter:
    """The evacuation's progress as ``Update`` values: one per step change (stage
    ``step``, its detail the step), the overall counts after each (``overall``), and
    each migration's own updates, passed on."""

    def __init__(self, progress: ProgressSink | None, parent: str, host: str) -> None:
        self.progress = progress
        self.parent = parent
        self.host = host

    def update(self, vm: str, stage: str, message: str,
               detail: dict[str, object] | None = None, fraction: float | None = None) -> None:
        if self.progress is None:
            return
        try:
            self.progress(Update(vm, stage, message, fraction, self.parent, detail))
        except Exception:
            log.exception("evacuation progress sink failed")

    def migration(self, update: Update) -> None:
        if self.progress is not None:
            self.progress(update)

    def step(self, step: EvacuationStep, runner: Runner, *, overall: bool = True) -> None:
        to = f" to {step.destination}" if step.destination else ""
        text = f"{step.vm}: {step.phase.value}{to}" + (f": {step.reason}" if step.reason
                                                        else "")
        self.update(step.vm, "step", text, step.as_dict())
        if not overall:
            return
        c = runner.counts()
        eta = eta_s(runner)
        self.update(self.host, "overall",
                    f"{self.host}: {c['moved']} moved, {c['failed']} failed, {c['left']} left; "
                    f"{c['moving']} moving, {c['pending'] + c['retrying']} waiting"
                    + ("" if eta is None else f"; about {eta:.0f} s to go"),
                    {**c, "eta_s": None if eta is None else round(eta, 1)},
                    fraction=(c["moved"] + c["failed"] + c["left"]) / max(
                        1, len(runner.steps)))


def eta_s(runner: Runner) -> float | None:
    """A rough time left: the moves still to run (and those running, as whole ones) at
    the mean time of the moves done, ``limit`` at once; None before any is done."""
    took = [s.seconds for s in runner.steps if s.phase is Phase.MOVED and s.seconds]
    if not took:
        return None
    left = sum(1 for s in runner.steps if not s.phase.over)
    return sum(took) / len(took) * left / runner.limit
