"""VM lifecycle operations, each straight-line code inside one operation context.

Every state-changing operation resolves its VM, then runs inside
``Operations.run`` (services/operations.py), which owns the operation id, the per-VM
lock, the journal row, the state read, the transition and job guards, the event
watch, timing and progress. The body is the libvirt call and the wait for its result.
Each call takes its own ``progress`` sink, ``op_id`` (given by ``Jobs`` for background
runs) and ``queue_s`` (wait that long for another operation on the VM instead of being
refused). The CLI and the REST API both call this class; it never prints.

Paths of save files are paths on the VM's host, asked through libvirt
(``hypervisor.files``), never checked with ``os.path`` on the client.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from virtlife import errors
from virtlife.hypervisor import Guest, GuestInfo, Host
from virtlife.hypervisor.agent import Agent
from virtlife.hypervisor.events import EventKind
from virtlife.hypervisor.files import probe_path
from virtlife.hypervisor.host import is_remote
from virtlife.hypervisor.snapshot import DomainSnapshots
from virtlife.paths import check_path
from virtlife.services.base import Call, OperationService
from virtlife.services.clock import ClockSync, sync_after
from virtlife.services.fleet import Fleet, as_uuid, split_ref
from virtlife.services.history import vm_history
from virtlife.services.ladder import STEPS, Step, climb
from virtlife.services.observe import MANAGED_SAVE_REMOVED, current_state, observed_state
from virtlife.services.oneplace import OnePlace
from virtlife.services.operations import (
    AGENT_TIMEOUT_S,
    DEFAULT_TIMEOUTS,
    OperationResult,
    OperationRun,
    Operations,
)
from virtlife.services.saved import SavedImageGuard
from virtlife.states import (
    REASON_MANAGED_SAVE,
    Operation,
    PMTarget,
    SaveKind,
    ShutdownMode,
    StateInfo,
    VMState,
    parse_enum,
)
from virtlife.store.images import SavedImages
from virtlife.xml.domain import domain_name, domain_uuid
from virtlife.xml.snapshot import parse_snapshot

if TYPE_CHECKING:
    from virtlife.store.journal import Journal, JournalEntry

__all__ = ["AGENT_TIMEOUT_S", "DEFAULT_TIMEOUTS", "Call", "Lifecycle", "OperationResult"]

# How long the ladder's agent step waits for the agent to answer (a ping), and then for
# libvirt to accept the request: a missing or hung agent costs seconds, not minutes.
AGENT_ANSWER_S = 3
# Why a ladder step cannot be taken, so the next one is: no agent (or none answering),
# or a driver without that way (libvirt's test driver has no agent).
_STEP_FAILURES = (errors.AgentUnavailable, errors.AgentCommandFailed, errors.Unsupported)


def host_path(host: Host, path: str | Path) -> str:
    """``path`` as a path on ``host``: relative ones only make sense on this machine."""
    text = check_path(os.fspath(path))  # the one check of a path a caller gives
    if os.path.isabs(text):
        return os.path.normpath(text)
    if is_remote(host.uri):
        raise errors.InvalidInput(
            f"{text} is a relative path, but host {host.name} is not this machine's "
            "file system: give the absolute path on that host")
    return os.path.abspath(text)


def _fallback(mode: ShutdownMode) -> Step | None:
    """``auto`` falls back on libvirt's own way where neither agent nor ACPI can be asked
    (libvirt's test driver); a mode that names one way never does."""
    return Step.LIBVIRT if mode is ShutdownMode.AUTO else None


def _bounded(call: Callable[[], None], seconds: float) -> None:
    """Run ``call`` on a thread for at most ``seconds``; its error, if it ended, is
    raised here. A call still running then is left to end by itself (libvirt bounds
    it), and the caller goes on: this is how a hung agent costs only ``seconds``."""
    done = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            call()
        except BaseException as err:  # handed to the caller below
            failure.append(err)
        finally:
            done.set()

    threading.Thread(target=work, name="bounded-call", daemon=True).start()
    if not done.wait(seconds):
        raise errors.AgentTimeout(f"no answer to the request within {seconds:g} s")
    if failure:
        raise failure[0]


class Lifecycle(OperationService):
    """Lifecycle operations over a ``Fleet``; journalled when a journal is given."""

    def __init__(self, fleet: Fleet, journal: Journal | None = None, *,
                 operations: Operations | None = None, sync_time: bool = True,
                 images: SavedImages | None = None) -> None:
        super().__init__(fleet, operations or Operations(journal))
        self.journal = journal
        self.sync_time = sync_time  # the settings' default for calls that do not say
        if images is None and journal is not None:  # kept beside the journal
            images = SavedImages(journal.database)
        self.saved = SavedImageGuard(images, journal, fleet)
        self.oneplace = OnePlace(fleet, journal, images)

    def _ran(self, run: OperationRun, guest: Guest, how: str) -> None:
        """The VM ran after ``how`` (started, resumed): its save images are stale."""
        self.saved.ran(guest.uuid(), f"{guest.name} was {how} (operation {run.op_id})")

    def _check_one_place(self, run: OperationRun, uuid: str, doing: str,
                         ignore_unreachable: bool, *, copies: bool = True) -> None:
        note = self.oneplace.check(uuid, run.vm, run.host.name, doing=doing,
                                   ignore_unreachable=ignore_unreachable, copies=copies)
        if note:
            run.warnings.append(note)

    def _then_agent(self, run: OperationRun, wait_agent: bool) -> None:
        if wait_agent:
            seconds = run.wait_agent()
            run.add_note(f"guest agent answered after {seconds:.1f} s")

    def _then_sync(self, run: OperationRun, sync_time: bool | None) -> ClockSync | None:
        """Set the guest clock right after the guest lost time (resume, restore, wakeup),
        when asked (the settings' default otherwise) and the guest runs; the offsets
        before and after go into the note (so the output and the journal)."""
        if not (self.sync_time if sync_time is None else sync_time):
            return None
        guest = run.target()  # the state the wait just established: not read again
        return sync_after(run, guest, run.final if run.final is not None else guest.status())

    # -- reads ----------------------------------------------------------------------------

    def state(self, ref: str) -> tuple[str, StateInfo]:
        return current_state(self.fleet, self.journal, ref)

    def info(self, ref: str) -> GuestInfo:
        guest = self.fleet.resolve(ref)
        info = guest.info()
        return replace(info, state=observed_state(guest, self.journal, info.state))

    def history(self, ref: str | None = None, *, host: str | None = None,
                limit: int = 50) -> list[JournalEntry]:
        """The journal, newest first. For a VM that exists, its whole history by UUID
        (across hosts and renames, without another VM's past under the same name), with
        the rows of its name written without a UUID that were its (``services.history``);
        for one that is gone, the rows under its name, or under its UUID when ``ref``
        gives one."""
        if self.journal is None:
            raise errors.StoreUnavailable("there is no journal to read (the store is not open)")
        if ref is None:
            return self.journal.list(host=host, limit=limit)
        named_host, name = split_ref(ref)
        host = host or named_host
        try:
            guest = self.fleet.resolve(f"{host}/{name}" if host else name)
        except (errors.NotFound, errors.AmbiguousName, errors.HostUnreachable):
            uuid = as_uuid(name)
            if uuid is not None:  # a VM that is gone (or out of reach), by its UUID
                return self.journal.list(uuid=uuid, host=host, limit=limit)
            return self.journal.list(vm=name, host=host, limit=limit)
        return vm_history(self.journal, guest.uuid(), guest.name, guest.host.name, limit)

    def dumpxml(self, ref: str, *, inactive: bool = False) -> str:
        return self.fleet.resolve(ref).xml(inactive=inactive)

    # -- operations -------------------------------------------------------------------------

    def define(self, xml: str, *, host: str, ignore_unreachable: bool = False,
               **call: Unpack[Call]) -> OperationResult:
        """Define a VM from XML, or replace an existing VM's persistent definition.
        Refused while a VM of the same UUID is active on another host (``OnePlace``);
        a copy a migration left here is the VM again once defined anew."""
        name = domain_name(xml)  # a malformed or oversized document never reaches libvirt
        h = self._host(Operation.DEFINE, host, name)
        with self._run_on(Operation.DEFINE, h, name, h.find(name), None, call) as run:
            uuid = domain_uuid(xml) or (run.guest.uuid() if run.guest is not None else "")
            self._check_one_place(run, uuid, "define", ignore_unreachable, copies=False)
            run.guest = h.define(xml)
            self.oneplace.defined_anew(run.guest.uuid(), h.name)
        assert run.result is not None
        return run.result

    def start(self, ref: str, *, paused: bool = False, force_boot: bool = False,
              wait: bool = True, wait_agent: bool = False, timeout_s: float | None = None,
              sync_time: bool | None = None, discard_saved: bool = False,
              ignore_unreachable: bool = False, **call: Unpack[Call]) -> OperationResult:
        """Boot the VM, or restore its managed-save image (then the guest clock is set
        right, see ``_then_sync``).

        Refused while the same VM is active on another host (``OnePlace``), and a fresh
        boot while virtlife knows of a save image the VM has not run since
        (``SavedImageGuard``; ``discard_saved`` boots anyway and marks it stale)."""
        guest = self._resolve(Operation.START, ref)
        with self._operation(Operation.START, guest, timeout_s, call) as run:
            from_image = run.current.save_kind is SaveKind.MANAGED and not force_boot
            self._check_one_place(run, guest.uuid(), "start", ignore_unreachable)
            if not from_image:
                discarded = self.saved.before_start(guest, discard=discard_saved,
                                                    op_id=run.op_id)
                if discarded:
                    run.add_note(discarded)
            guest.start(paused=paused, force_boot=force_boot)
            self._ran(run, guest, "started")
            if wait:
                run.wait()
                self._then_agent(run, wait_agent and not paused)
                if from_image and not paused:
                    self._then_sync(run, sync_time)
        assert run.result is not None
        return run.result

    def shutdown(self, ref: str, *, mode: ShutdownMode | str = ShutdownMode.AUTO,
                 wait: bool = True, force: bool = False, timeout_s: float | None = None,
                 **call: Unpack[Call]) -> OperationResult:
        """Power the guest off by the ladder of ``mode`` (services/ladder.py): by default
        the agent, then the ACPI button twice, then with ``force`` destroy, each step
        bounded. ``wait`` False: one request (the ladder's first step), not waited for."""
        how = parse_enum(ShutdownMode, mode, "shutdown mode")
        guest = self._resolve(Operation.SHUTDOWN, ref)
        with self._operation(Operation.SHUTDOWN, guest, timeout_s, call) as run:
            if not wait:  # the first way that can be asked, not waited for
                tried: list[str] = []
                fallback = _fallback(how)
                for step in STEPS[how] + ((fallback,) if fallback else ()):
                    why_not = self._ask(guest, step, run, reboot=False)
                    if why_not is None:
                        run.note = f"asked by the {step}"
                        break
                    tried.append(f"{step}: {errors.reason_of(why_not)}")
                else:
                    raise errors.Unsupported(
                        f"cannot shut down {guest.name}: {'; '.join(tried)}")
            else:
                reaches = run.rule.reaches

                def off(seconds: float) -> bool:
                    return self._settled(run, lambda s: s.state in reaches, seconds)

                def destroy() -> None:
                    guest.destroy()
                    run.wait()

                self._climb(run, guest, how, reboot=False, settled=off,
                            force=destroy if force else None)
        assert run.result is not None
        return run.result

    def _climb(self, run: OperationRun, guest: Guest, how: ShutdownMode, *, reboot: bool,
               settled: Callable[[float], bool], force: Callable[[], None] | None) -> None:
        """The ladder of ``how`` within the operation's timeout; its note says how."""
        result = climb(STEPS[how], run.timeout_s,
                       ask=lambda step, share: self._ask(guest, step, run, reboot=reboot,
                                                         share_s=share),
                       settled=settled, force=force, what="reset" if reboot else "power off",
                       vm=guest.name, fallback=_fallback(how))
        run.note = result.note("rebooted" if reboot else "powered off")

    def _ask(self, guest: Guest, step: Step, run: OperationRun, *, reboot: bool,
             share_s: float = AGENT_ANSWER_S * 3) -> errors.VirtlifeError | None:
        """Make one ladder request within ``share_s``; None when made, else the error
        that says why it could not be. The agent's ping and the request are each cut
        off at their deadline: a hung agent, or libvirt's lock on the VM held by a
        stuck agent call (libvirt waits 30 s for it), costs this step's share only."""
        t0 = time.monotonic()
        run.report("step", f"{'reboot' if reboot else 'shutdown'} by the {step}")
        mode = {Step.AGENT: ShutdownMode.AGENT, Step.ACPI: ShutdownMode.ACPI,
                Step.ACPI_AGAIN: ShutdownMode.ACPI}.get(step, ShutdownMode.DEFAULT)
        if step is Step.AGENT:
            answer = min(float(AGENT_ANSWER_S), share_s)
            try:  # a missing or hung agent costs seconds here, not libvirt's minute
                Agent(guest).ping(timeout_s=answer, deadline_s=answer)
            except _STEP_FAILURES as err:
                return err
        act = guest.reboot if reboot else guest.shutdown
        left = min(AGENT_ANSWER_S * 2.0, share_s - (time.monotonic() - t0))
        if left <= 0:
            return errors.AgentTimeout(f"cannot ask the {step}: its {share_s:.1f} s share "
                                       "of the timeout was spent")
        try:
            _bounded(lambda: act(mode), left)
        except _STEP_FAILURES as err:
            return err
        return None

    @staticmethod
    def _settled(run: OperationRun, accept: Callable[[StateInfo], bool],
                 seconds: float) -> bool:
        try:
            run.final = run.watch.until_state(run.target(), accept, seconds,
                                              describe="the end of the step")
        except errors.OperationTimeout:
            return False
        return True

    def _restart(self, op: Operation, ref: str, act: Callable[[Guest], None],
                 wait_agent: bool, timeout_s: float | None, call: Call) -> OperationResult:
        """Reboot and reset leave the VM running and give no lifecycle event.

        Without ``wait_agent`` they return once libvirt accepted the request. With it,
        they wait for QEMU's reset (the REBOOT event), then for the agent to answer.
        """
        guest = self._resolve(op, ref)
        with self._operation(op, guest, timeout_s, call) as run:
            act(guest)
            if wait_agent:
                run.wait_event(lambda e: e.kind is EventKind.REBOOT,
                               "guest reset (the guest may ignore the request)")
                seconds = run.wait_agent()
                run.note = f"the guest reset; guest agent answered after {seconds:.1f} s"
        assert run.result is not None
        return run.result

    def reboot(self, ref: str, *, mode: ShutdownMode | str = ShutdownMode.AUTO,
               wait_agent: bool = False, force: bool = False,
               timeout_s: float | None = None, **call: Unpack[Call]) -> OperationResult:
        """Reboot by the ladder of ``mode``: the agent, then the ACPI button twice (libvirt
        restarts the guest once it powers off), then with ``force`` a hard reset; done
        when QEMU resets the guest (its REBOOT event), then ``wait_agent`` waits for the
        agent. ``--mode default`` is one request, not waited for unless ``wait_agent``."""
        how = parse_enum(ShutdownMode, mode, "reboot mode")
        if how is ShutdownMode.DEFAULT:
            return self._restart(Operation.REBOOT, ref,
                                 lambda g: g.reboot(ShutdownMode.DEFAULT), wait_agent,
                                 timeout_s, call)
        guest = self._resolve(Operation.REBOOT, ref)
        with self._operation(Operation.REBOOT, guest, timeout_s, call) as run:

            def reset_seen(seconds: float) -> bool:
                try:
                    run.watch.until_event(lambda e: e.kind is EventKind.REBOOT, seconds,
                                          describe="guest reset")
                except errors.OperationTimeout:
                    return False
                return True

            def hard_reset() -> None:
                guest.reset()

            self._climb(run, guest, how, reboot=True, settled=reset_seen,
                        force=hard_reset if force else None)
            if wait_agent:
                seconds = run.wait_agent()
                run.add_note(f"guest agent answered after {seconds:.1f} s")
        assert run.result is not None
        return run.result

    def reset(self, ref: str, *, wait_agent: bool = False, timeout_s: float | None = None,
              **call: Unpack[Call]) -> OperationResult:
        return self._restart(Operation.RESET, ref, lambda g: g.reset(), wait_agent, timeout_s,
                             call)

    def destroy(self, ref: str, *, graceful: bool = False, wait: bool = True,
                timeout_s: float | None = None, **call: Unpack[Call]) -> OperationResult:
        """Pull the plug. Never refused for another operation running on the VM: this is
        how an operator ends one (a shutdown waiting on a guest that ignores it)."""
        guest = self._resolve(Operation.DESTROY, ref)
        with self._operation(Operation.DESTROY, guest, timeout_s, call) as run:
            guest.destroy(graceful=graceful)
            if wait:
                run.wait()
        assert run.result is not None
        return run.result

    def suspend(self, ref: str, *, wait: bool = True, timeout_s: float | None = None,
                **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.SUSPEND, ref)
        with self._operation(Operation.SUSPEND, guest, timeout_s, call) as run:
            guest.suspend()
            if wait:
                run.wait()
        assert run.result is not None
        return run.result

    def resume(self, ref: str, *, wait: bool = True, timeout_s: float | None = None,
               sync_time: bool | None = None, ignore_unreachable: bool = False,
               **call: Unpack[Call]) -> OperationResult:
        """Resume a paused VM (refused while the same VM is active on another host)."""
        guest = self._resolve(Operation.RESUME, ref)
        with self._operation(Operation.RESUME, guest, timeout_s, call) as run:
            self._check_one_place(run, guest.uuid(), "resume", ignore_unreachable)
            guest.resume()
            self._ran(run, guest, "resumed")
            if wait:
                run.wait()
                self._then_sync(run, sync_time)
        assert run.result is not None
        return run.result

    def save(self, ref: str, path: str | Path, *, wait: bool = True,
             timeout_s: float | None = None, **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.SAVE, ref)
        with self._operation(Operation.SAVE, guest, timeout_s, call) as run:
            target = host_path(guest.host, path)
            if probe_path(guest.host, target).exists:
                raise errors.AlreadyExists(
                    f"cannot save {guest.name} to {target} on {guest.host.name}: the file "
                    "exists; remove it or choose another path")
            self.saved.saving(run.op_id, guest, target)
            guest.save(target)
            if wait:
                run.wait()
                self.saved.saved(run.op_id, guest.host, target)
        assert run.result is not None
        return run.result

    def restore(self, path: str | Path, *, host: str, paused: bool = False,
                wait: bool = True, wait_agent: bool = False, timeout_s: float | None = None,
                sync_time: bool | None = None, ignore_unreachable: bool = False,
                **call: Unpack[Call]) -> OperationResult:
        """Restore a save file on ``host``; the VM is named by the file. A failed restore
        (no such file, not a save image) is journalled and keeps the file. Refused for
        a stale image (the VM ran since the save: ``SavedImageGuard``) and while the
        same VM is active on another host (``OnePlace``)."""
        h = self._host(Operation.RESTORE, host, "")
        try:
            source = host_path(h, path)
            found = probe_path(h, source)
            if not found.exists:
                raise errors.NotFound(f"cannot restore {source}: no such file on host {host}")
            if not found.save_xml:
                raise errors.InvalidInput(
                    f"cannot restore {source}: it is not a libvirt save image")
            name = domain_name(found.save_xml)
        except errors.VirtlifeError as err:
            self.ops.record_failure(Operation.RESTORE, host, "", err)
            raise
        with self._run_on(Operation.RESTORE, h, name, h.find(name), timeout_s, call) as run:
            uuid = domain_uuid(found.save_xml)
            self._check_one_place(run, uuid, "restore", ignore_unreachable)
            image = self.saved.before_restore(h, source, found.save_xml)
            h.restore(source, paused=paused)
            self.saved.ran(uuid, f"{name} was restored from {source} (operation "
                                 f"{run.op_id})", restored=image)
            if wait:
                run.wait()
                self._then_agent(run, wait_agent and not paused)
                self._then_sync(run, sync_time)
        assert run.result is not None
        return run.result

    def managedsave(self, ref: str, *, wait: bool = True, timeout_s: float | None = None,
                    **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.MANAGEDSAVE, ref)
        with self._operation(Operation.MANAGEDSAVE, guest, timeout_s, call) as run:
            guest.managed_save()
            if wait:
                run.wait()
        assert run.result is not None
        return run.result

    def managedsave_remove(self, ref: str, **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.MANAGEDSAVE_REMOVE, ref)
        with self._operation(Operation.MANAGEDSAVE_REMOVE, guest, None, call) as run:
            guest.managed_save_remove()
            # libvirt keeps the shut-off reason "saved" once the image is gone; what we
            # wait for is the image's removal, and the VM is then shut off
            state = run.wait(lambda s: s.reason != REASON_MANAGED_SAVE,
                             "without a managed-save image")
            run.final = MANAGED_SAVE_REMOVED if state.state is VMState.SAVED else state
        assert run.result is not None
        return run.result

    def pmsuspend(self, ref: str, *, target: PMTarget | str = PMTarget.MEM, wait: bool = True,
                  timeout_s: float | None = None, **call: Unpack[Call]) -> OperationResult:
        where = parse_enum(PMTarget, target, "pmsuspend target")
        want = VMState.SHUTOFF if where is PMTarget.DISK else VMState.PMSUSPENDED
        guest = self._resolve(Operation.PMSUSPEND, ref)
        with self._operation(Operation.PMSUSPEND, guest, timeout_s, call) as run:
            guest.pm_suspend(where)
            if wait:
                run.wait(lambda s: s.state is want, want.label)
        assert run.result is not None
        return run.result

    def pmwakeup(self, ref: str, *, wait: bool = True, wait_agent: bool = False,
                 timeout_s: float | None = None, sync_time: bool | None = None,
                 **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.PMWAKEUP, ref)
        with self._operation(Operation.PMWAKEUP, guest, timeout_s, call) as run:
            guest.pm_wakeup()
            if wait:
                run.wait()
                self._then_agent(run, wait_agent)
                self._then_sync(run, sync_time)
        assert run.result is not None
        return run.result

    def undefine(self, ref: str, *, managed_save: bool = False, snapshots: bool = False,
                 nvram: bool | None = None, **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.UNDEFINE, ref)
        with self._operation(Operation.UNDEFINE, guest, None, call) as run:
            if guest.has_managed_save() and not managed_save:
                raise errors.InvalidTransition(
                    f"cannot undefine {guest.name}: it has a managed-save image; pass "
                    "--managed-save to delete it too, or start the VM to use it")
            count = guest.snapshot_count()
            if count and not snapshots:
                raise errors.InvalidTransition(
                    f"cannot undefine {guest.name}: it has {count} snapshot(s); pass "
                    "--snapshots-metadata to drop their metadata too")
            left = _snapshot_files(guest) if count else []  # read while libvirt knows them
            uuid = guest.uuid()
            guest.undefine(managed_save=managed_save, snapshots=snapshots, nvram=nvram)
            run.wait()
            self.oneplace.defined_anew(uuid, guest.host.name)
            if left:
                run.add_note(f"the metadata of {count} snapshot(s) was dropped; their "
                             f"external files stay on disk: {', '.join(left)} (remove "
                             "them once nothing uses them)")
        assert run.result is not None
        return run.result


def _snapshot_files(guest: Guest) -> list[str]:
    """The overlay (and external memory) files of ``guest``'s snapshots, each once, in
    the order the snapshots were taken: what an undefine that drops their metadata
    leaves on disk."""
    docs = []
    for snap in DomainSnapshots(guest).all():
        try:
            docs.append(parse_snapshot(snap.xml()))
        except errors.NotFound:
            continue  # deleted by someone else while we looked
    docs.sort(key=lambda d: (d.created is None, d.created or 0, d.name))
    return list(dict.fromkeys(f for d in docs for f in d.files))
