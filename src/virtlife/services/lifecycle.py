"""VM lifecycle operations: guard, act, wait for the result by events, journal it.

Every operation runs the same way (``Lifecycle._run``): resolve the VM, read its
state, refuse through ``states.check_transition`` (nothing is changed), subscribe to
its events, make the one libvirt call, wait until a state in the rule's ``reaches``
set appears (or the timeout passes), and record the outcome in the journal. The CLI
and the REST API both call this class; it never prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor import Guest, GuestInfo, Host
from virtlife.services.fleet import Fleet
from virtlife.services.observe import MANAGED_SAVE_REMOVED, observed_state
from virtlife.services.progress import Progress, report
from virtlife.services.wait import Watch
from virtlife.states import (
    REASON_MANAGED_SAVE,
    Operation,
    StateInfo,
    VMState,
    check_transition,
)
from virtlife.xml.domain import domain_name

if TYPE_CHECKING:
    from virtlife.store.journal import Journal

# How long each operation may take to reach its state (seconds), when not given.
DEFAULT_TIMEOUTS: dict[Operation, float] = {
    Operation.DEFINE: 30, Operation.START: 60, Operation.SHUTDOWN: 120,
    Operation.REBOOT: 120, Operation.RESET: 60, Operation.DESTROY: 60,
    Operation.SUSPEND: 30, Operation.RESUME: 30, Operation.SAVE: 300,
    Operation.RESTORE: 300, Operation.MANAGEDSAVE: 300, Operation.MANAGEDSAVE_REMOVE: 30,
    Operation.PMSUSPEND: 60, Operation.PMWAKEUP: 60, Operation.UNDEFINE: 30,
}
AGENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class OperationResult:
    host: str
    vm: str
    operation: Operation
    state: StateInfo
    duration_s: float
    note: str = ""

    def __str__(self) -> str:
        text = f"{self.vm}: {self.state}"
        return f"{text}; {self.note}" if self.note else text

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host, "vm": self.vm, "operation": self.operation.value,
            "state": self.state.state.value, "reason": self.state.reason,
            "duration_s": round(self.duration_s, 3), "note": self.note,
        }


class Lifecycle:
    """Lifecycle operations over a ``Fleet``; results journalled when a journal is given."""

    def __init__(self, fleet: Fleet, journal: Journal | None = None,
                 progress: Progress | None = None) -> None:
        self.fleet = fleet
        self.journal = journal
        self.progress = progress

    # -- the one way every operation runs ------------------------------------------------

    def _record(self, host: str, vm: str, op: Operation, outcome: str, started: datetime,
                duration: float, detail: str) -> None:
        if self.journal is not None:
            self.journal.record(host, vm, op.value, outcome, duration, detail,
                                started_at=started)

    def _run(
        self,
        op: Operation,
        host: Host,
        vm: str,
        action: Callable[[], object],
        *,
        guest: Guest | None,
        wait: bool,
        timeout_s: float | None,
        accept: Callable[[StateInfo], bool] | None = None,
        describe: str | None = None,
        after: Callable[[Watch, Guest], str] | None = None,
        precheck: Callable[[StateInfo], None] | None = None,
        final: Callable[[StateInfo], StateInfo] | None = None,
    ) -> OperationResult:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        try:
            current = observed_state(guest, self.journal) if guest else StateInfo(
                VMState.UNDEFINED, "")
            rule = check_transition(op, vm, current)
            if precheck is not None:
                precheck(current)
            timeout = timeout_s if timeout_s is not None else DEFAULT_TIMEOUTS[op]
            with Watch(host, vm) as watch:
                report(self.progress, vm, "request", f"{op.value} {vm} on {host.name}")
                action()
                target = guest if guest is not None else host.lookup(vm)
                if accept is None and rule.reaches:
                    accept = lambda s: s.state in rule.reaches  # noqa: E731
                    describe = describe or " or ".join(sorted(s.label for s in rule.reaches))
                if wait and accept is not None:
                    report(self.progress, vm, "wait", f"waiting for {vm} to be {describe}")
                    state = watch.until_state(target, accept, timeout,
                                              describe=describe or "the expected state")
                else:
                    state = target.status()
                note = after(watch, target) if (wait and after is not None) else ""
                if note:
                    state = target.status()
                if final is not None:
                    state = final(state)
        except errors.VirtlifeError as err:
            outcome = "refused" if isinstance(err, errors.InvalidTransition) else "error"
            try:
                self._record(host.name, vm, op, outcome, started_at, time.monotonic() - t0,
                             str(err))
            except Exception as journal_err:  # the user's error matters more
                err.add_note(f"(and it could not be journalled: {journal_err})")
            raise
        duration = time.monotonic() - t0
        self._record(host.name, vm, op, "ok", started_at, duration, str(state))
        report(self.progress, vm, "done", f"{vm}: {state}", 1.0)
        return OperationResult(host.name, vm, op, state, duration, note)

    def _simple(self, op: Operation, ref: str, call: Callable[[Guest], None], *,
                wait: bool = True, timeout_s: float | None = None,
                after: Callable[[Watch, Guest], str] | None = None) -> OperationResult:
        guest = self.fleet.resolve(ref)
        return self._run(op, guest.host, guest.name, lambda: call(guest), guest=guest,
                         wait=wait, timeout_s=timeout_s, after=after)

    def _agent_waiter(self, wait_agent: bool) -> Callable[[Watch, Guest], str] | None:
        if not wait_agent:
            return None

        def after(watch: Watch, guest: Guest) -> str:
            report(self.progress, guest.name, "agent", f"waiting for the agent of {guest.name}")
            seconds = watch.until_agent(guest, AGENT_TIMEOUT_S)
            return f"guest agent answered after {seconds:.1f} s"

        return after

    # -- reads ----------------------------------------------------------------------------

    def state(self, ref: str) -> tuple[str, StateInfo]:
        guest = self.fleet.resolve(ref)
        return guest.host.name, observed_state(guest, self.journal)

    def info(self, ref: str) -> GuestInfo:
        guest = self.fleet.resolve(ref)
        info = guest.info()
        return replace(info, state=observed_state(guest, self.journal, info.state))

    def dumpxml(self, ref: str, *, inactive: bool = False) -> str:
        return self.fleet.resolve(ref).xml(inactive=inactive)

    # -- operations -------------------------------------------------------------------------

    def define(self, xml: str, *, host: str) -> OperationResult:
        """Define a VM from XML, or replace an existing VM's persistent definition."""
        name = domain_name(xml)  # a malformed document never reaches libvirt
        h = self.fleet.host(host)
        return self._run(Operation.DEFINE, h, name, lambda: h.define(xml), guest=h.find(name),
                         wait=False, timeout_s=None)

    def start(self, ref: str, *, paused: bool = False, force_boot: bool = False,
              wait: bool = True, wait_agent: bool = False,
              timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.START, ref,
                            lambda g: g.start(paused=paused, force_boot=force_boot),
                            wait=wait, timeout_s=timeout_s,
                            after=self._agent_waiter(wait_agent and not paused))

    def shutdown(self, ref: str, *, mode: str = "default", wait: bool = True,
                 timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.SHUTDOWN, ref, lambda g: g.shutdown(mode),
                            wait=wait, timeout_s=timeout_s)

    def _restart(self, op: Operation, ref: str, call: Callable[[Guest], None],
                 wait_agent: bool, timeout_s: float | None) -> OperationResult:
        """Reboot and reset leave the VM running and give no lifecycle event.

        Without ``wait_agent`` they return once libvirt accepted the request. With it,
        they wait for QEMU's reset (the REBOOT event), then for the agent to answer.
        """

        def after(watch: Watch, guest: Guest) -> str:
            timeout = timeout_s if timeout_s is not None else DEFAULT_TIMEOUTS[op]
            watch.until_event(lambda e: e.kind == "reboot", timeout,
                              describe="guest reset (the guest may ignore the request)")
            seconds = watch.until_agent(guest, AGENT_TIMEOUT_S)
            return f"the guest reset; guest agent answered after {seconds:.1f} s"

        return self._simple(op, ref, call, wait=True, timeout_s=timeout_s,
                            after=after if wait_agent else None)

    def reboot(self, ref: str, *, mode: str = "default",
               wait_agent: bool = False, timeout_s: float | None = None) -> OperationResult:
        return self._restart(Operation.REBOOT, ref, lambda g: g.reboot(mode), wait_agent,
                             timeout_s)

    def reset(self, ref: str, *, wait_agent: bool = False,
              timeout_s: float | None = None) -> OperationResult:
        return self._restart(Operation.RESET, ref, lambda g: g.reset(), wait_agent, timeout_s)

    def destroy(self, ref: str, *, graceful: bool = False, wait: bool = True,
                timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.DESTROY, ref, lambda g: g.destroy(graceful=graceful),
                            wait=wait, timeout_s=timeout_s)

    def suspend(self, ref: str, *, wait: bool = True,
                timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.SUSPEND, ref, lambda g: g.suspend(), wait=wait,
                            timeout_s=timeout_s)

    def resume(self, ref: str, *, wait: bool = True,
               timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.RESUME, ref, lambda g: g.resume(), wait=wait,
                            timeout_s=timeout_s)

    def save(self, ref: str, path: str | Path, *, wait: bool = True,
             timeout_s: float | None = None) -> OperationResult:
        target = os.path.abspath(path)
        guest = self.fleet.resolve(ref)

        def precheck(_current: StateInfo) -> None:
            if os.path.exists(target):
                raise errors.AlreadyExists(
                    f"cannot save {guest.name} to {target}: the file exists; "
                    "remove it or choose another path")

        return self._run(Operation.SAVE, guest.host, guest.name, lambda: guest.save(target),
                         guest=guest, wait=wait, timeout_s=timeout_s, precheck=precheck)

    def restore(self, path: str | Path, *, host: str, paused: bool = False,
                wait: bool = True, wait_agent: bool = False,
                timeout_s: float | None = None) -> OperationResult:
        source = os.path.abspath(path)
        if not os.path.exists(source):
            raise errors.NotFound(f"cannot restore {source}: no such file")
        h = self.fleet.host(host)
        name = domain_name(h.saved_image_xml(source))
        existing = h.find(name)
        return self._run(Operation.RESTORE, h, name, lambda: h.restore(source, paused=paused),
                         guest=existing, wait=wait, timeout_s=timeout_s,
                         after=self._agent_waiter(wait_agent and not paused))

    def managedsave(self, ref: str, *, wait: bool = True,
                    timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.MANAGEDSAVE, ref, lambda g: g.managed_save(), wait=wait,
                            timeout_s=timeout_s)

    def managedsave_remove(self, ref: str) -> OperationResult:
        guest = self.fleet.resolve(ref)

        def precheck(_current: StateInfo) -> None:
            if not guest.has_managed_save():
                raise errors.InvalidTransition(
                    f"cannot managedsave-remove {guest.name}: it was saved to a file and "
                    "has no managed-save image")

        # libvirt keeps the shut-off reason "saved" after the image is gone; what we wait
        # for is the image's removal, and the VM is then shut off (observe.py agrees)
        return self._run(Operation.MANAGEDSAVE_REMOVE, guest.host, guest.name,
                         guest.managed_save_remove, guest=guest, wait=True, timeout_s=None,
                         precheck=precheck, accept=lambda s: s.reason != REASON_MANAGED_SAVE,
                         describe="without a managed-save image",
                         final=lambda s: MANAGED_SAVE_REMOVED if s.state is VMState.SAVED else s)

    def pmsuspend(self, ref: str, *, target: str = "mem", wait: bool = True,
                  timeout_s: float | None = None) -> OperationResult:
        guest = self.fleet.resolve(ref)
        want = VMState.SHUTOFF if target == "disk" else VMState.PMSUSPENDED
        return self._run(Operation.PMSUSPEND, guest.host, guest.name,
                         lambda: guest.pm_suspend(target), guest=guest, wait=wait,
                         timeout_s=timeout_s, accept=lambda s: s.state is want,
                         describe=want.label)

    def pmwakeup(self, ref: str, *, wait: bool = True, wait_agent: bool = False,
                 timeout_s: float | None = None) -> OperationResult:
        return self._simple(Operation.PMWAKEUP, ref, lambda g: g.pm_wakeup(), wait=wait,
                            timeout_s=timeout_s, after=self._agent_waiter(wait_agent))

    def undefine(self, ref: str, *, managed_save: bool = False, snapshots: bool = False,
                 nvram: bool | None = None) -> OperationResult:
        guest = self.fleet.resolve(ref)

        def precheck(_current: StateInfo) -> None:
            if guest.has_managed_save() and not managed_save:
                raise errors.InvalidTransition(
                    f"cannot undefine {guest.name}: it has a managed-save image; pass "
                    "--managed-save to delete it too, or start the VM to use it")
            count = guest.snapshot_count()
            if count and not snapshots:
                raise errors.InvalidTransition(
                    f"cannot undefine {guest.name}: it has {count} snapshot(s); pass "
                    "--snapshots-metadata to drop their metadata too")

        return self._run(
            Operation.UNDEFINE, guest.host, guest.name,
            lambda: guest.undefine(managed_save=managed_save, snapshots=snapshots, nvram=nvram),
            guest=guest, wait=True, timeout_s=None, precheck=precheck)
