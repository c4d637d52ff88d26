"""``Migrations``: check, run and abort a VM's move to another host (one operation each).

``check`` gathers the facts (``gather``) and judges them (``checks.run_checks``);
nothing moves. ``migrate`` runs the same checks first and refuses on any fail, then
starts a peer-to-peer migration (``hypervisor.migration``) on a thread and, every
``SAMPLE_S``, reads the job into a ``JobSample``, reports it, and lets the policy act
(``policy.watchdog``, ``next_step``, ``on_timeout``). The end is verified, never
assumed: the VM runs at the destination (a crashed or paused guest there is a failed
migration), its agent answers, its clock is set right, and it is gone from the source.
On any failure the VM is looked for at the source and resumed there if the migration
left it paused; the error says where the VM is. libvirt's unsafe flag is passed only
when the checks proved every disk shared, and the result says which check did.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Unpack

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor.agent import Agent
from virtlife.hypervisor.migration import Migration, MigrationRequest
from virtlife.services.base import Call, OperationService
from virtlife.services.clock import sync_clock
from virtlife.services.fleet import Fleet
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.migration import settle
from virtlife.services.migration.checks import (
    CheckOptions,
    MigrationKind,
    Report,
    Status,
    run_checks,
)
from virtlife.services.migration.ending import (
    UNCONFIRMED,
    Settle,
    Sighting,
    resume_refusal,
    unconfirmed_message,
)
from virtlife.services.migration.gather import gather
from virtlife.services.migration.phases import JobSample, MigrationPhase, size_text
from virtlife.services.migration.policy import (
    Decision,
    Limits,
    PolicyAction,
    PolicyState,
    next_step,
    on_timeout,
    plan_start,
    stalled_for,
    watchdog,
)
from virtlife.services.oneplace import OnePlace
from virtlife.services.operations import OperationResult, OperationRun, Operations
from virtlife.states import Operation, StateInfo, VMState
from virtlife.store.images import SavedImages

SAMPLE_S = 0.5
RESUME_GIVE_UP_S = 30.0  # how long a stalled resume, paused again, may take to end
AGENT_AFTER_S = 30.0

class PreflightFailed(errors.InvalidTransition):
    """The pre-flight check found a fail: nothing was moved (exit 3)."""


@dataclass(frozen=True)
class MoveOptions:
    """How the move is carried out, beyond what the checks judge."""

    keep_source: bool = False  # keep the definition at the source (shut off there)
    parallel: int | None = None  # multifd connections
    tunnelled: bool = False  # memory over libvirt's own connection
    bandwidth_mib_s: int | None = None


@dataclass
class MigrationOutcome:
    """What ``migrate`` did: the operation's result, the checks, the progress seen and
    the policy's steps."""

    result: OperationResult
    report: Report
    samples: list[JobSample] = field(default_factory=list)
    state: PolicyState | None = None
    # The completed job's statistics, read at the destination (libvirt hands them over
    # in the migration cookie): total time, downtime, memory sent, iterations.
    stats: JobSample | None = None
    wall_s: float | None = None  # the whole move as the operator waited for it

    def as_dict(self) -> dict[str, object]:
        return {**self.result.as_dict(), "checks": self.report.as_dict(),
                "policy": None if self.state is None else self.state.as_dict(),
                "final": None if not self.samples else self.samples[-1].as_dict(),
                "stats": None if self.stats is None else self.stats.as_dict(),
                "wall_s": None if self.wall_s is None else round(self.wall_s, 2)}


class Migrations(OperationService):
    """Migration operations over the fleet (see the module doc). ``lifecycle`` shuts a
    VM down first for ``--offline --shutdown-first``. The migrations this service runs
    are what its ``Services``' Ctrl-C aborts (``abort_running``): another ``Services``
    in the same process (a server, a test) never aborts them."""

    def __init__(self, fleet: Fleet, ops: Operations, lifecycle: Lifecycle | None = None,
                 ) -> None:
        super().__init__(fleet, ops)
        self.lifecycle = lifecycle
        self._running: dict[str, Migration] = {}  # by VM UUID, while ``_run`` watches it
        self._running_lock = threading.Lock()

    def abort_running(self) -> int:
        """Abort every migration this service runs (Ctrl-C); how many were asked to
        stop. The VM stays at its source: libvirt resumes it there."""
        with self._running_lock:
            running = list(self._running.values())
        for job in running:
            _abort_quietly(job)
        return len(running)

    @property
    def oneplace(self) -> OnePlace:
        """Where migrations put VMs (``services.oneplace``): the lifecycle's, or one
        over this service's journal."""
        if self.lifecycle is not None:
            return self.lifecycle.oneplace
        journal = self.ops.journal
        return OnePlace(self.fleet, journal,
                        SavedImages(journal.database) if journal is not None else None)

    def _placed(self, run: OperationRun, moved: Guest, source: str, *,
                kept_source: bool) -> None:
        """The move completed: ``moved`` is the VM now; a definition kept at ``source``
        is a left-behind copy that must not start (issue 15 B)."""
        self.oneplace.moved(moved.uuid(), moved.name, source=source, dest=moved.host.name,
                            op_id=run.op_id, kept_source=kept_source)
        if kept_source:
            run.add_note(f"the definition kept on {source} is marked as a left-behind copy: "
                         "it will not start while the VM lives here")

    def check(self, ref: str, dest: str, options: CheckOptions | None = None) -> Report:
        guest = self.fleet.resolve(ref)
        return self._check(guest, dest, options or CheckOptions())

    def _check(self, guest: Guest, dest: str, options: CheckOptions) -> Report:
        if dest == guest.host.name:
            raise errors.InvalidInput(f"{guest.name} is on {dest} already: name another host")
        try:
            dst: Host | None = self.fleet.host(dest)
            error = ""
        except errors.HostUnreachable as err:
            dst, error = None, str(err)
        vm, src, at = gather(guest, dst, dest, error)
        return run_checks(vm, src, at, options)

    def migrate(self, ref: str, dest: str, *, options: CheckOptions | None = None,
                limits: Limits | None = None, move: MoveOptions | None = None,
                timeout_s: float | None = None, **call: Unpack[Call]) -> MigrationOutcome:
        """Move the VM to host ``dest`` (live unless ``options.kind`` says otherwise)."""
        options = options or CheckOptions()
        limits = limits or Limits()
        move = move or MoveOptions()
        op = Operation.MIGRATE_OFFLINE if options.kind is MigrationKind.OFFLINE else \
            Operation.MIGRATE
        guest = self._resolve(op, ref)
        if options.shutdown_first and options.kind is MigrationKind.OFFLINE \
                and guest.status().state.is_active:
            _refuse_failed(guest, dest, self._check(guest, dest, options))
            if self.lifecycle is None:
                raise errors.InvalidInput("cannot shut the VM down first here: no lifecycle "
                                          "service was given")
            self.lifecycle.shutdown(ref, **call)
            guest = self._resolve(op, ref)
        with self._operation(op, guest, timeout_s, call) as run:
            run.report("check", f"checking {guest.name} against {dest}")
            report = self._check(guest, dest, options)
            _refuse_failed(guest, dest, report)
            refuse_transport(guest, dest, options, move)
            for c in report.checks:
                if c.status is Status.WARN:
                    run.warnings.append(f"{c.name}: {c.reason}")
            outcome = MigrationOutcome(OperationResult(dest, guest.name, op, run.current, 0),
                                       report)
            dst = self.fleet.host(dest)
            state = plan_start(limits, running=options.kind is MigrationKind.LIVE
                               and run.current.state is not VMState.PAUSED)
            req = MigrationRequest(
                live=options.kind is MigrationKind.LIVE,
                offline=options.kind is MigrationKind.OFFLINE,
                unsafe=report.allows_unsafe,
                auto_converge=state.auto_converge_armed,
                postcopy=state.postcopy_armed,
                compressed=options.compressed,
                copy_storage=None if options.copy_storage is None
                else options.copy_storage.value,
                max_downtime_ms=state.downtime_ms if options.kind is MigrationKind.LIVE
                else None,
                undefine_source=not move.keep_source, parallel=move.parallel,
                tunnelled=move.tunnelled, bandwidth_mib_s=move.bandwidth_mib_s)
            if report.allows_unsafe:
                run.add_note(f"libvirt's unsafe flag passed: {report.unsafe_reason}")
            t0 = time.monotonic()
            state = self._run(run, guest, dst, req, state, limits, outcome)
            outcome.state = state
            run.final = self._verify(run, guest, dst, req, outcome)
            run.guest = moved = dst.lookup(guest.name)
            self._placed(run, moved, guest.host.name, kept_source=move.keep_source)
            outcome.wall_s = time.monotonic() - t0
            outcome.stats = None if req.offline else _completed(moved, outcome, state)
            if outcome.stats is not None:
                run.report("stats", outcome.stats.describe(), 1.0, outcome.stats.as_dict())
            run.add_note(_summary(outcome, state))
        assert run.result is not None
        outcome.result = run.result
        return outcome

    def resume_postcopy(self, ref: str, dest: str, *, move: MoveOptions | None = None,
                        timeout_s: float | None = None, **call: Unpack[Call],
                        ) -> MigrationOutcome:
        """Recover a post-copy migration that failed (the link was lost, or it was paused
        on purpose): the VM is paused at both ends ("post-copy failed"); its missing
        pages are still at the source. Starts the migration again from the source with
        libvirt's resume flag, once the link is back."""
        move = move or MoveOptions()
        guest = self._postcopy_source(ref, dest)
        with self._operation(Operation.MIGRATE_RESUME, guest, timeout_s, call) as run:
            dst = self.fleet.host(dest)
            there = dst.find(guest.name)
            if there is None:
                raise errors.InvalidTransition(
                    f"cannot resume the post-copy migration of {guest.name}: {dest} has no "
                    "such VM (it never got there, or was removed)")
            report = Report(vm=guest.name, source=guest.host.name, destination=dest,
                            kind=MigrationKind.LIVE, checks=(), allows_unsafe=False,
                            unsafe_reason="not asked: the disks are in use at the "
                            "destination already")
            outcome = MigrationOutcome(
                OperationResult(dest, guest.name, Operation.MIGRATE_RESUME, run.current, 0),
                report)
            state = dataclasses.replace(plan_start(Limits()), postcopy_started=True)
            req = MigrationRequest(postcopy_resume=True, undefine_source=not move.keep_source,
                                   parallel=move.parallel, tunnelled=move.tunnelled,
                                   bandwidth_mib_s=move.bandwidth_mib_s)
            t0 = time.monotonic()
            state = self._run(run, guest, dst, req, state, Limits(), outcome)
            outcome.state = state
            run.final = self._verify(run, guest, dst, req, outcome)
            run.guest = moved = dst.lookup(guest.name)
            self._placed(run, moved, guest.host.name, kept_source=move.keep_source)
            outcome.wall_s = time.monotonic() - t0
            outcome.stats = _completed(moved, outcome, state)
            run.add_note("post-copy resumed; " + _summary(outcome, state))
        assert run.result is not None
        outcome.result = run.result
        return outcome

    def _postcopy_source(self, ref: str, dest: str) -> Guest:
        """The source end of a failed post-copy (mid-move the name is on both hosts)."""
        try:
            guest = self._resolve(Operation.MIGRATE_RESUME, ref)
        except errors.AmbiguousName as err:
            found = [g for g in map(self.fleet.resolve, err.candidates)
                     if g.host.name != dest]
            if len(found) != 1:
                raise
            guest = found[0]
        if guest.host.name == dest:
            raise errors.InvalidInput(f"{ref} is the destination's copy: name the source "
                                      f"(HOST/{guest.name}) of the move to {dest}")
        status = guest.status()
        here = Sighting(guest.host.name, state=status.state, reason=status.reason,
                        job=guest.job() if status.state.is_active else None)
        refusal = resume_refusal(guest.name, here, qemu_migrating=_still_moving(guest))
        if refusal is not None:
            raise errors.InvalidTransition(refusal)
        return guest

    def _run(self, run: OperationRun, guest: Guest, dst: Host, req: MigrationRequest,
             state: PolicyState, limits: Limits, outcome: MigrationOutcome) -> PolicyState:
        job = Migration(guest)
        failure: list[BaseException] = []
        done = threading.Event()

        def work() -> None:
            # libvirt's call on a connection of its own: after our abort over a cut link
            # it may go on for libvirt's keepalive (~28 s); the command does not wait
            # for it, and closing the fleet's connection must not wait behind it either
            own: Host | None = None
            try:
                starter = job
                if not guest.host.uri.startswith("test:"):  # the test driver: per connection
                    own = Host.open(guest.host.name, guest.host.uri, events=False)
                    starter = Migration(own.lookup(guest.name))
                starter.start(dst.uri, req, dest=dst.name)
            except BaseException as err:  # handed to the operation below
                failure.append(err)
            finally:
                done.set()
                if own is not None:
                    own.close(timeout_s=0)

        t0 = time.monotonic()
        run.report("start", f"{MigrationPhase.PREPARING.label}: {dst.name}")
        key = guest.uuid()
        with self._running_lock:
            self._running[key] = job
        threading.Thread(target=work, name=f"migrate-{guest.name}", daemon=True).start()
        previous: JobSample | None = None
        there: Sighting | None = None  # the destination, asked while the abort settled
        timed_out = False
        gave_up = ""
        try:
            while not done.wait(SAMPLE_S):
                at = time.monotonic() - t0
                stats = job.job_stats()
                if not stats:
                    continue
                previous = JobSample.from_job_stats(stats, previous=previous, elapsed_s=at,
                                                    postcopy=state.postcopy_started)
                outcome.samples.append(previous)
                run.report("progress", previous.describe(), previous.fraction,
                           previous.as_dict())
                decision = watchdog(outcome.samples) or next_step(state, outcome.samples,
                                                                    limits)
                if decision is None and not timed_out and at > run.timeout_s:
                    timed_out = True
                    decision = on_timeout(limits.on_timeout, state, timeout_s=run.timeout_s,
                                          at_s=at)
                if decision is not None and not _said(state, decision):
                    state = self._act(run, guest, job, decision, state)
                    if decision.action is PolicyAction.ABORT:
                        # not one "cancelled" line per sample while libvirt winds the
                        # job down (over a cut link, for its ~28 s keepalive): once the
                        # abort shows at the source, the move is over for us
                        there = settle.after_abort(self.fleet, guest, job, done, dst.name)
                        break
                    if decision.action is PolicyAction.POSTCOPY_STALLED and req.postcopy_resume:
                        # a resume that moves nothing: back to where it was, and say so
                        _pause_quietly(job)
                        done.wait(RESUME_GIVE_UP_S)
                        gave_up = (f"the post-copy resume of {guest.name} moved nothing for "
                                   f"{stalled_for(outcome.samples):.0f} s: it is paused again "
                                   f"(post-copy failed) on {guest.host.name} and {dst.name}, "
                                   "as before; check the link between them and try again")
                        break
        except BaseException:
            _abort_quietly(job)
            done.wait(60)
            raise
        finally:
            with self._running_lock:
                self._running.pop(key, None)
        if gave_up:
            raise errors.OperationTimeout(f"{gave_up}; {self._where(guest, dst)[0]}")
        if failure and state.postcopy_started:
            # libvirt's "post-copy failed" may not be the end: QEMU can still finish the
            # move by itself (seen: 30 s after a cut link came back); watch, bounded
            run.report("settle", f"post-copy of {guest.name} failed: watching both ends "
                       f"until it settles (at most {settle.POSTCOPY_SETTLE_S:g} s)")
            found = settle.watch_postcopy(self.fleet, guest, dst.name, key)
            if found.settle is Settle.COMPLETED:
                removed = settle.remove_stale_source(guest, key) if found.undefine_source \
                    else ""
                run.add_note(found.text.split("; its shut-off")[0]
                             + (f"; {removed}" if removed else ""))
                return state  # the destination's copy is verified next, as for any move
            mark = "" if found.settle is Settle.FAILED else f" {UNCONFIRMED}"
            raise errors.OperationFailed(
                f"{guest.name} did not move to {dst.name}: {found.text}{mark}"
            ) from failure[0]
        ours = next((d for d in reversed(state.steps) if d.action is PolicyAction.ABORT), None)
        if failure or (ours is not None and not done.is_set()):
            err = failure[0] if failure else None
            where, lost = self._where(guest, dst, there)
            if state.postcopy_started:
                where += (f"; it was in post-copy: its memory is split between the hosts, "
                          f"so it cannot run until the move ends; once {dst.name} is "
                          f"reachable again: virtlife migrate {guest.host.name}/{guest.name} "
                          f"{dst.name} --postcopy-resume")
            if not done.is_set():
                where += (f"; libvirt at {guest.host.name} is still winding the aborted job "
                          f"down (over a lost link it waits for its keepalive, ~30 s): "
                          f"operations on {guest.name} wait until it ends")
            if ours is not None:  # the watchdog or --timeout ended it: say why
                # the destination lost (a cut link) is "host unreachable", as a lost source
                stop: type[errors.VirtlifeError] = (errors.HostUnreachable if lost else
                                                     errors.OperationTimeout)
                raise stop(f"{guest.name} did not move to {dst.name}: {ours.reason}; {where}"
                           ) from err
            assert err is not None
            if isinstance(err, errors.VirtlifeError):
                if lost and not _active_at_source(guest):
                    # gone from the source, the destination silent: it may have moved
                    raise self._unconfirmed(guest, dst, outcome, str(err),
                                            libvirt_done=False) from err
                kind = errors.HostUnreachable if lost else type(err)
                raise kind(f"{err}; {where}") from err
            raise err
        return state

    def _unconfirmed(self, guest: Guest, dst: Host, outcome: MigrationOutcome, why: str,
                     *, libvirt_done: bool) -> errors.HostUnreachable:
        """The error of a move whose end cannot be confirmed: what is known, and the
        journal's mark so that a later look (``settle.reconcile``) corrects the row."""
        try:
            here = settle.sight(guest.host, guest.name)
        except errors.VirtlifeError as err:
            here = Sighting(guest.host.name, answered=False, why=str(err))
        phase = outcome.samples[-1].phase if outcome.samples else None
        text = unconfirmed_message(guest.name, guest.host.name, dst.name, phase=phase,
                                   libvirt_done=libvirt_done, at_source=here, why=why)
        return errors.HostUnreachable(f"{text} {UNCONFIRMED}")

    def _where(self, guest: Guest, dst: Host, there: Sighting | None = None,
               ) -> tuple[str, bool]:
        """Where the VM is after a failed move, in words, and whether the destination
        was lost (could not be asked: asked with a deadline, so that a cut link costs
        seconds; its words tell a silent network from a libvirtd gone)."""
        try:
            left = _at_source(guest)
        except errors.HostUnreachable:
            left = f"{guest.host.name} cannot be asked where {guest.name} is"
        if there is None:
            there = settle.ask(self.fleet, [dst.name], guest.name)[0]
        if not there.answered:
            return f"{left}; {there.why}", True
        return (left if there.state is None else f"{left}, and {there.describe()}"), False

    def abort(self, ref: str, **call: Unpack[Call]) -> OperationResult:
        """Abort the migration running on the VM (from any process); it stays at its
        source. Never refused for the migration it ends (like ``destroy``)."""
        try:
            guest = self._resolve(Operation.MIGRATE_ABORT, ref)
        except errors.AmbiguousName as err:  # mid-move it is on both hosts: the source
            sources = [g for g in map(self.fleet.resolve, err.candidates)
                       if g.job() == "migration"]
            if len(sources) != 1:
                raise
            guest = sources[0]
        with self._operation(Operation.MIGRATE_ABORT, guest, None, call) as run:
            job = guest.job()
            if job not in ("migration", "incoming migration"):
                raise errors.InvalidTransition(
                    f"cannot abort the migration of {guest.name}: no migration runs on it"
                    + (f" (a libvirt {job} job does)" if job else ""))
            Migration(guest).abort()
            run.note = "migration aborted; the VM stays on " + guest.host.name
        assert run.result is not None
        return run.result

    def _act(self, run: OperationRun, guest: Guest, job: Migration, decision: Decision,
             state: PolicyState) -> PolicyState:
        run.report("policy", decision.reason, detail=decision.as_dict())
        if decision.action is PolicyAction.RAISE_DOWNTIME and decision.value is not None:
            job.set_max_downtime(decision.value)
        elif decision.action is PolicyAction.POSTCOPY:
            job.start_postcopy()
        elif decision.action is PolicyAction.PAUSE:
            guest.suspend()
        elif decision.action is PolicyAction.ABORT:
            job.abort()
        return state.after(decision)

    def _verify(self, run: OperationRun, guest: Guest, dst: Host,
                req: MigrationRequest, outcome: MigrationOutcome) -> StateInfo:
        """The VM at the destination, as it must be after the move; else a failure."""
        try:
            moved = dst.find(guest.name)
            state = moved.status() if moved is not None else None
        except errors.HostUnreachable as err:  # libvirt said done; the end is not seen
            raise self._unconfirmed(guest, dst, outcome, str(err), libvirt_done=True
                                    ) from err
        if moved is None or state is None:
            raise errors.OperationFailed(
                f"libvirt reported {guest.name} migrated, but {dst.name} has no such VM; "
                f"{self._where(guest, dst)[0]}")
        if req.offline:
            return state
        # a VM paused by its user before the move arrives paused by its user
        kept_paused = (run.current.state is VMState.PAUSED and state.reason == "user")
        if state.state is VMState.CRASHED or (state.state is VMState.PAUSED
                                              and not req.paused and not kept_paused):
            raise errors.OperationFailed(
                f"{guest.name} is {state} at {dst.name} after the migration: the move "
                "failed (its memory may not have arrived intact); destroy it there and "
                "start it again, or restore it from a backup")
        if state.state in (VMState.RUNNING, VMState.IDLE):
            try:
                Agent(moved).ping(timeout_s=5)
                run.add_note(str(sync_clock(Agent(moved), wait_s=AGENT_AFTER_S)))
            except errors.AgentNotConfigured:
                pass  # no channel: nothing to ask
            except (errors.AgentUnavailable, errors.AgentCommandFailed) as err:
                run.warnings.append(f"the agent of {guest.name} at {dst.name} did not "
                                    f"answer after the move: {errors.reason_of(err)}")
        if req.undefine_source and guest.host.find(guest.name) is not None:
            run.warnings.append(f"{guest.name} is still defined on {guest.host.name}")
        return state


def _said(state: PolicyState, decision: Decision) -> bool:
    """A stalled post-copy is reported once, not at every sample while it stays so."""
    return decision.action is PolicyAction.POSTCOPY_STALLED and any(
        d.action is PolicyAction.POSTCOPY_STALLED for d in state.steps)


def _refuse_failed(guest: Guest, dest: str, report: Report) -> None:
    """Refuse the move when a check failed (every fail, its reason and its fix)."""
    failed = [c for c in report.checks if c.status is Status.FAIL]
    if failed:
        lines = "; ".join(f"{c.name}: {c.reason}" + (f" ({c.fix})" if c.fix else "")
                          for c in failed)
        raise PreflightFailed(f"cannot migrate {guest.name} to {dest}: {lines}")


def refuse_transport(guest: Guest, dest: str, options: CheckOptions,
                      move: MoveOptions) -> None:
    """Refuse what libvirt 9.0 refuses only once the migration began: the tunnel is one
    stream, so neither multifd's connections nor the disks' NBD copy fit in it."""
    if not move.tunnelled:
        return
    clash = ("--parallel" if move.parallel is not None else
             f"--copy-storage {options.copy_storage}" if options.copy_storage else "")
    if clash:
        raise PreflightFailed(
            f"cannot migrate {guest.name} to {dest}: --tunnelled and {clash} do not go "
            "together (libvirt carries a tunnelled migration in one stream over its own "
            "connection); drop one of them")


def _pause_quietly(job: Migration) -> None:
    try:
        job.pause_postcopy()
    except errors.VirtlifeError:
        pass  # not in post-copy any more


def _abort_quietly(job: Migration) -> None:
    try:
        job.abort()
    except errors.VirtlifeError:
        pass  # no job left to abort


def _still_moving(guest: Guest, look_s: float = 1.0) -> bool:
    """Whether QEMU still moves the VM's memory (its job's bytes grow over ``look_s``):
    a post-copy libvirt calls failed may still be running (issue 15, F)."""
    job = Migration(guest)
    try:
        first = JobSample.from_job_stats(job.job_stats(), previous=None, elapsed_s=0.0)
        threading.Event().wait(look_s)
        then = JobSample.from_job_stats(job.job_stats(), previous=None, elapsed_s=look_s)
    except errors.VirtlifeError:
        return False
    return then.transferred > first.transferred


def _active_at_source(guest: Guest) -> bool:
    """Whether the VM still has a QEMU at the source (True when that cannot be told)."""
    try:
        here = guest.host.find(guest.name)
        return here is not None and here.status().state.is_active
    except errors.VirtlifeError:
        return True


def _at_source(guest: Guest) -> str:
    """Where the VM is at the source after a failed move; resumed there if the
    migration left it paused."""
    here = guest.host.find(guest.name)
    if here is None:
        return f"{guest.name} is no longer on {guest.host.name}"
    state = here.status()
    # paused for a pre-copy (--suspended, --on-timeout pause): its memory is whole here;
    # never after a post-copy failed (the newest pages are at the destination)
    if state.state is VMState.PAUSED and state.reason == "migrating":
        try:
            here.resume()
            state = here.status()
        except errors.VirtlifeError:
            pass
    return f"{guest.name} is {state} on {guest.host.name}"


def _completed(moved: Guest, outcome: MigrationOutcome, state: PolicyState,
               ) -> JobSample | None:
    """The completed job's statistics at the destination of a live move; None where
    libvirt keeps none.

    They are read up to six times, half a second apart: after a post-copy they come a
    moment later, and one clean-clone run of a pre-copy move (policy auto, a raised
    downtime) read none at once. Where the first read has them, as it nearly always
    does, nothing waits."""
    tries = 6
    for attempt in range(tries):
        try:
            stats = Migration(moved).completed_stats()
        except errors.VirtlifeError:
            return None
        if stats.get("time_elapsed") or stats.get("memory_total"):
            break
        if attempt + 1 < tries:
            time.sleep(0.5)
    else:
        return None  # no job (an offline move), or none kept
    last = outcome.samples[-1] if outcome.samples else None
    found = JobSample.from_job_stats(stats, previous=last, elapsed_s=outcome.wall_s or 0.0,
                                     postcopy=state.postcopy_started)
    if not found.disk_total and last is not None and last.disk_total:
        # the destination's statistics have no disk figures (seen with libvirt 9.0):
        # the copy's size, as the source's job last showed it; the move completed, so
        # all of it was copied (a sample may have caught it just short of the end)
        found = dataclasses.replace(found, disk_total=last.disk_total,
                                    disk_processed=last.disk_total, disk_remaining=0)
    return found.with_phase(MigrationPhase.COMPLETED)


def _summary(outcome: MigrationOutcome, state: PolicyState) -> str:
    """The journal's words for a finished move: the job's statistics and the policy's
    steps."""
    steps = "; ".join(d.reason for d in state.steps)
    policy = f"; policy: {steps}" if steps else "; policy: no step needed"
    took = f" (the whole move {outcome.wall_s:.1f} s)" if outcome.wall_s is not None else ""
    if outcome.stats is not None:
        copied = outcome.stats.disk_processed or 0
        disks = f", disks {size_text(copied)} copied" if copied else ""
        return (f"migrated: {outcome.stats.describe().split(': ', 1)[-1]}{disks}{took}"
                f"{policy}")
    if not outcome.samples:
        return f"migrated{took}{policy}"
    last = outcome.samples[-1]
    sent = last.memory_processed / (1024 * 1024)
    return (f"migrated: {sent:.0f} MiB sent, {last.iteration} iteration(s) seen{took}"
            f"{policy}")
