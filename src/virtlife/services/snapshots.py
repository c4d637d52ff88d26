"""VM snapshots: take, list, revert and delete them; quiesced ones through the guest agent.

``create``, ``revert`` and ``delete`` are operations: each runs inside
``Operations.run`` (journalled, one per VM at a time, checked against the VM's state
by the transition table), like ``services.lifecycle``; ``list`` is a read.

What libvirt 9.0 does with a qcow2 disk, and so what virtlife offers:

- a plain snapshot is *internal*: kept inside the qcow2 images, with the memory of a
  running (or paused) VM; reverting brings the VM back as it was, running;
- ``disk_only`` makes an *external* snapshot: each disk gets an overlay file beside it
  (``web1.qcow2`` gets ``web1.<snapshot>``) that the VM writes to from then on. libvirt
  can delete one (merging the overlay back) unless its parent is internal, and cannot
  revert to one: those refusals come back as one-line errors saying what works instead
  (``hypervisor.snapshot``);
- ``quiesce``: virtlife freezes the guest's file systems itself with
  ``services.freeze.bounded_freeze`` (recorded, bounded by ``freeze_bound_s``, thawed
  on error and Ctrl-C, and by the next command after a killed process), takes the
  snapshot without libvirt's own quiesce flag, then thaws. A quiesced snapshot is
  disk-only: a memory image of a frozen guest would revert to a frozen guest. If the
  freeze broke (the watchdog thawed) before the snapshot was taken, the snapshot is
  not consistent: it is deleted and the operation fails.

Ctrl-C cannot stop a snapshot libvirt is taking: ``Snapshots.interrupt_creates``
(called by ``Services.interrupted``, the CLI's interrupt hook) keeps any from starting
after it, waits briefly for those under way and says, by name, which were made. What
is under way, and that latch, belong to the ``Snapshots`` of one ``Services``
(``CreatesInFlight``): another in the same process is not stopped by it.

After a revert to a running snapshot the guest clock is set right through the agent
(its time jumped back), as ``Lifecycle`` does after a resume. Nothing here prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Unpack

from virtlife import config, errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.agent import Agent
from virtlife.hypervisor.snapshot import DomainSnapshots, Snapshot
from virtlife.services.base import Call, OperationService
from virtlife.services.clock import sync_after
from virtlife.services.fleet import Fleet
from virtlife.services.freeze import FreezeGuard, bounded_freeze
from virtlife.services.oneplace import OnePlace
from virtlife.services.operations import OperationResult, OperationRun, Operations
from virtlife.states import Operation, StateInfo, VMState
from virtlife.xml.snapshot import (
    SnapshotDoc,
    default_name,
    parse_snapshot,
    snapshot_xml,
    validate_description,
    validate_snapshot_name,
)

_UP = (VMState.RUNNING, VMState.IDLE)
# How long Ctrl-C waits for a snapshot libvirt is taking, to say whether it was made
# (the CLI gives its whole interrupt hook 2 s).
INTERRUPT_WAIT_S = 1.5
# A snapshot taken in one of these states brings the VM up (a QEMU) when reverted to.
ACTIVE_SNAPSHOT_STATES = ("running", "blocked", "paused", "pmsuspended")
# Why a quiesced snapshot is disk-only, said where --quiesce made it so.
WHY_DISK_ONLY = ("--quiesce takes a disk-only snapshot: a memory image of a frozen guest "
                 "would revert to a frozen guest")


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a VM, as ``snapshot VM list`` shows it."""

    vm: str
    name: str
    created: datetime | None
    state: str  # the VM's state when it was taken (running, paused, shutoff, disk-snapshot)
    location: str  # internal (inside the disk images) or external (overlay files)
    parent: str | None
    current: bool
    description: str
    memory: bool  # it holds the VM's memory: a revert brings the VM back running
    files: tuple[str, ...]  # the overlay files of an external snapshot

    @classmethod
    def of(cls, vm: str, doc: SnapshotDoc, current: bool) -> SnapshotInfo:
        return cls(vm, doc.name, doc.created, doc.state, doc.location, doc.parent, current,
                   doc.description, doc.has_memory, doc.overlays)

    def as_dict(self) -> dict[str, object]:
        return {"vm": self.vm, "name": self.name,
                "created": None if self.created is None else self.created.isoformat(),
                "state": self.state, "location": self.location, "parent": self.parent,
                "current": self.current, "description": self.description,
                "memory": self.memory, "files": list(self.files)}


def check_create_options(*, quiesce: bool, no_quiesce_ok: bool, disk_only: bool,
                         memory: bool, freeze_bound_s: float | None) -> None:
    """Refuse (``InvalidInput``) the combinations of ``create`` options that mean nothing
    or contradict each other, before any host is asked."""
    if memory and quiesce:
        raise errors.InvalidInput(
            "--memory cannot go with --quiesce: a quiesced snapshot is disk-only, since a "
            "memory image of a frozen guest would revert to a frozen guest")
    if memory and disk_only:
        raise errors.InvalidInput("--memory and --disk-only contradict each other: a "
                                  "disk-only snapshot keeps no memory")
    if no_quiesce_ok and not quiesce:
        raise errors.InvalidInput("--no-quiesce-ok only applies with --quiesce")
    if freeze_bound_s is not None:
        if not quiesce:
            raise errors.InvalidInput("--freeze-bound only applies with --quiesce")
        if not 0 < freeze_bound_s <= 600:
            raise errors.InvalidInput(
                f"the freeze bound must be within 0 and 600 s, not {freeze_bound_s:g}")


def _names(names: list[str]) -> str:
    return ", ".join(names)


class Snapshots(OperationService):
    """Snapshot operations over a ``Fleet``, run by ``ops`` (see the module doc).

    ``guard`` holds the store of freezes that quiesced snapshots record; ``settings``
    gives the default freeze bound and whether to set the clock after a revert;
    ``stopping`` is the latch Ctrl-C sets (its ``Services``': set, no snapshot starts)."""

    def __init__(self, fleet: Fleet, ops: Operations, guard: FreezeGuard,
                 settings: config.Settings | None = None, *,
                 oneplace: OnePlace | None = None,
                 stopping: threading.Event | None = None) -> None:
        super().__init__(fleet, ops)
        self.guard = guard
        self.settings = settings or config.Settings()
        self.oneplace = oneplace  # a revert that brings the VM up checks the fleet first
        self.creates = CreatesInFlight(stopping)

    def interrupt_creates(self, wait_s: float = INTERRUPT_WAIT_S) -> list[str]:
        """Ctrl-C: no snapshot is started here from now on; of those libvirt is taking
        for this service, wait up to ``wait_s`` and say which were made, by name."""
        return self.creates.interrupt(wait_s)

    # -- reads ----------------------------------------------------------------------------

    def list(self, ref: str) -> list[SnapshotInfo]:
        """The VM's snapshots, oldest first."""
        guest = self.fleet.resolve(ref)
        found: list[SnapshotInfo] = []
        for snap in DomainSnapshots(guest).all():
            try:
                doc = parse_snapshot(snap.xml())
                current = snap.is_current()
            except errors.NotFound:
                continue  # deleted by someone else while we looked
            found.append(SnapshotInfo.of(guest.name, doc, current))
        return sorted(found, key=lambda s: (s.created is None, s.created or 0, s.name))

    # -- create -----------------------------------------------------------------------------

    def create(self, ref: str, name: str | None = None, *, description: str = "",
               quiesce: bool = False, no_quiesce_ok: bool = False, disk_only: bool = False,
               memory: bool = False, freeze_bound_s: float | None = None,
               **call: Unpack[Call]) -> OperationResult:
        """Take a snapshot of the VM (see the module doc for the kinds); ``name`` defaults
        to the time (``snap-20250131-142502``)."""
        check_create_options(quiesce=quiesce, no_quiesce_ok=no_quiesce_ok,
                             disk_only=disk_only, memory=memory,
                             freeze_bound_s=freeze_bound_s)
        if name is not None:
            validate_snapshot_name(name)
        validate_description(description)
        bound = self.settings.freeze_bound_s if freeze_bound_s is None else freeze_bound_s
        guest = self._resolve(Operation.SNAPSHOT_CREATE, ref)
        with self._operation(Operation.SNAPSHOT_CREATE, guest, None, call) as run:
            snaps = DomainSnapshots(guest)
            name = name or self._free_default_name(snaps)
            if snaps.find(name) is not None:
                raise errors.AlreadyExists(
                    f"cannot take snapshot {name} of {guest.name}: it already has one of that "
                    f"name; choose another, or delete it first")
            if memory and run.current.state is VMState.SHUTOFF:
                raise errors.InvalidTransition(
                    f"cannot take a memory snapshot of {guest.name}: it is shut off and has no "
                    "memory to keep; start it first, or leave out --memory")
            xml = snapshot_xml(name, description, memory=memory)
            if quiesce:
                snap = self._quiesced(run, guest, snaps, xml, name, bound, no_quiesce_ok)
            else:
                run.report("snapshot", f"taking snapshot {name} of {guest.name}")
                snap = self._create(snaps, xml, name, disk_only=disk_only)
            run.note = _describe_new(parse_snapshot(snap.xml()), run.note)
            if quiesce and not disk_only:
                run.add_note(WHY_DISK_ONLY)
        assert run.result is not None
        return run.result

    def _create(self, snaps: DomainSnapshots, xml: str, name: str, *,
                disk_only: bool) -> Snapshot:
        """``snaps.create``, known to ``interrupt_creates`` while libvirt takes it."""
        with self.creates.taking(snaps.vm, name) as taking:
            snap = snaps.create(xml, name, disk_only=disk_only)
            taking.made = True
            return snap

    @staticmethod
    def _free_default_name(snaps: DomainSnapshots) -> str:
        base = default_name()
        name, n = base, 1
        while snaps.find(name) is not None:  # two in the same second
            n += 1
            name = f"{base}-{n}"
        return name

    def _quiesced(self, run: OperationRun, guest: Guest, snaps: DomainSnapshots, xml: str,
                  name: str, bound_s: float, no_quiesce_ok: bool) -> Snapshot:
        """A disk-only snapshot taken while the guest's file systems are frozen (bounded);
        unquiesced with ``no_quiesce_ok`` when the guest cannot be frozen."""
        state = run.current
        why_not: str | None = None
        if state.state not in _UP:
            why_not = (f"it is {state}: only a running guest's agent can freeze its file "
                       "systems")
            if not no_quiesce_ok:
                raise errors.InvalidTransition(
                    f"cannot take a quiesced snapshot of {guest.name}: {why_not}; "
                    + ("start it first, or " if state.state is VMState.SHUTOFF else
                       "resume it first, or ")
                    + "pass --no-quiesce-ok to take it unquiesced")
        else:
            entered = False
            made: Snapshot | None = None
            try:
                with bounded_freeze(Agent(guest), self.guard.freezes,
                                    in_flight=self.guard.in_flight, op_id=run.op_id,
                                    uuid=guest.uuid(), host=guest.host.name, bound_s=bound_s,
                                    warn=run.warnings.append) as active:
                    entered = True
                    run.report("snapshot", f"{active.frozen} file system(s) of {guest.name} "
                               f"frozen; taking snapshot {name}")
                    made = snap = self._create(snaps, xml, name, disk_only=True)
                    with active.lock:  # a watchdog thaw either happened already, or waits
                        broken = active.broken
            except (errors.AgentUnavailable, errors.AgentCommandFailed) as err:
                if made is not None and isinstance(err, errors.AgentStillFrozen):
                    raise errors.AgentStillFrozen(
                        f"{err}. Snapshot {name} was taken while the file systems were "
                        "frozen, and is kept") from err
                if entered or isinstance(err, errors.AgentStillFrozen):
                    raise
                if not no_quiesce_ok:
                    raise type(err)(f"{err} (or pass --no-quiesce-ok to take the snapshot "
                                    "unquiesced)") from err
                why_not = f"the guest agent cannot freeze: {errors.reason_of(err)}"
            else:
                if broken:
                    self._drop_inconsistent(guest, snap, bound_s)
                seconds = active.thawed_after_s or 0.0
                run.note = (f"quiesced: {active.frozen} file system(s) frozen for "
                            f"{seconds:.2f} s (bound {bound_s:g} s)")
                return snap
        run.report("snapshot", f"taking snapshot {name} of {guest.name} unquiesced")
        snap = self._create(snaps, xml, name, disk_only=True)
        run.note = f"not quiesced (--no-quiesce-ok): {why_not}"
        return snap

    @staticmethod
    def _drop_inconsistent(guest: Guest, snap: Snapshot, bound_s: float) -> None:
        """The freeze broke before the snapshot was taken: delete it, and fail."""
        what = (f"the file systems of {guest.name} were thawed by the {bound_s:g} s freeze "
                f"bound before snapshot {snap.name} was taken, so it is not consistent")
        try:
            snap.delete()
        except errors.VirtlifeError as err:
            raise errors.OperationTimeout(
                f"{what}, and it could not be deleted ({err}); delete it with `virtlife "
                f"snapshot {guest.name} delete {snap.name}`") from err
        raise errors.OperationTimeout(
            f"{what}; it was deleted. Try again, or give a longer --freeze-bound")

    # -- revert -----------------------------------------------------------------------------

    def revert(self, ref: str, name: str, *, sync_time: bool | None = None,
               ignore_unreachable: bool = False, **call: Unpack[Call]) -> OperationResult:
        """Bring the VM back to snapshot ``name``; it ends in the snapshot's state (read,
        not waited for). Back running, its clock is set right (``sync_time``, by default
        the settings' ``agent.sync_time``). A revert that brings a stopped VM up is
        refused while the same VM is active on another host, as a start is (``OnePlace``).
        (A VM saved to a file cannot be reverted: the transition table refuses it.)"""
        guest = self._resolve(Operation.SNAPSHOT_REVERT, ref)
        with self._operation(Operation.SNAPSHOT_REVERT, guest, None, call) as run:
            snaps = DomainSnapshots(guest)
            snap = snaps.lookup(name)
            doc = parse_snapshot(snap.xml())
            if self.oneplace is not None and doc.state in ACTIVE_SNAPSHOT_STATES and \
                    not guest.status().state.is_active:
                note = self.oneplace.check(guest.uuid(), guest.name, guest.host.name,
                                           doing=f"revert to snapshot {name} (it runs)",
                                           ignore_unreachable=ignore_unreachable)
                if note:
                    run.warnings.append(note)
            run.report("revert", f"reverting {guest.name} to snapshot {name}")
            snaps.revert(snap)
            run.final = guest.status()
            taken = f", taken {doc.created:%Y-%m-%d %H:%M:%S} UTC" if doc.created else ""
            run.note = f"reverted to snapshot {name} ({doc.state}{taken})"
            self._then_sync(run, guest, run.final, sync_time)
        assert run.result is not None
        return run.result

    def _then_sync(self, run: OperationRun, guest: Guest, state: StateInfo,
                   sync_time: bool | None) -> None:
        """The guest's clock jumped back to the snapshot's time: set it right."""
        if self.settings.sync_time if sync_time is None else sync_time:
            sync_after(run, guest, state)

    # -- delete -----------------------------------------------------------------------------

    def delete(self, ref: str, name: str, *, children: bool = False,
               metadata_only: bool = False, **call: Unpack[Call]) -> OperationResult:
        """Delete snapshot ``name``: with ``children`` its whole subtree, else only it (its
        children then hang from its parent; libvirt merges what they need).
        ``metadata_only``: libvirt forgets it; its data stays where it is."""
        guest = self._resolve(Operation.SNAPSHOT_DELETE, ref)
        with self._operation(Operation.SNAPSHOT_DELETE, guest, None, call) as run:
            snap = DomainSnapshots(guest).lookup(name)
            doc = parse_snapshot(snap.xml())
            below = snap.descendants() if children else snap.children()
            run.report("delete", f"deleting snapshot {name} of {guest.name}")
            snap.delete(children=children, metadata_only=metadata_only)
            run.note = _describe_deleted(doc, below, children=children,
                                         metadata_only=metadata_only)
        assert run.result is not None
        return run.result


@dataclass
class _Taking:
    """A snapshot that libvirt is taking for this process."""

    vm: str
    name: str
    made: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class CreatesInFlight:
    """The snapshots libvirt is taking for one ``Snapshots``, and the latch that Ctrl-C
    sets (``stopping``: given by its ``Services``, so that it holds also for a
    ``Snapshots`` built after the interrupt). Nothing here is shared by the process."""

    def __init__(self, stopping: threading.Event | None = None) -> None:
        self.stopping = stopping if stopping is not None else threading.Event()
        self._lock = threading.Lock()
        self._taking: list[_Taking] = []

    @contextmanager
    def taking(self, vm: str, name: str) -> Iterator[_Taking]:
        """Snapshot ``name`` of ``vm`` is being taken for the body; ``KeyboardInterrupt``
        when Ctrl-C came first (nothing is taken)."""
        taking = _Taking(vm, name)
        with self._lock:
            if self.stopping.is_set():
                raise KeyboardInterrupt
            self._taking.append(taking)
        try:
            yield taking
        finally:
            taking.done.set()
            with self._lock:
                self._taking.remove(taking)

    def interrupt(self, wait_s: float) -> list[str]:
        """Ctrl-C: none is started from now on; of those libvirt is taking (it cannot be
        stopped), wait up to ``wait_s`` and say which were made, by name."""
        with self._lock:
            self.stopping.set()
            pending = list(self._taking)
        deadline = time.monotonic() + wait_s
        said: list[str] = []
        for t in pending:
            t.done.wait(max(0.0, deadline - time.monotonic()))
            if t.made:
                said.append(f"snapshot {t.name} of {t.vm} was made before the interrupt "
                            f"could stop it, and is its current snapshot: keep it, or "
                            f"delete it with `virtlife snapshot {t.vm} delete {t.name}`")
            elif not t.done.is_set():
                said.append(f"snapshot {t.name} of {t.vm} was being taken when interrupted, "
                            f"and libvirt may still finish it: `virtlife snapshot {t.vm} "
                            f"list` shows whether it did (then `virtlife snapshot {t.vm} "
                            f"delete {t.name}` removes it)")
        return said


def _describe_new(doc: SnapshotDoc, before: str) -> str:
    """The note of a new snapshot: what kind it is and where it keeps its data."""
    if doc.external:
        what = f"external (disk-only) snapshot {doc.name}"
        files = [f"{d.name} now writes to the overlay {d.source}" for d in doc.disks
                 if d.kind == "external" and d.source]
        if files:
            what += ": " + ", ".join(files)
    elif doc.has_memory:
        what = f"internal snapshot {doc.name} with the VM's memory ({doc.state})"
    else:
        what = f"internal snapshot {doc.name} of the disks ({doc.state})"
    return f"{what}; {before}" if before else what


def _describe_deleted(doc: SnapshotDoc, below: list[str], *, children: bool,
                      metadata_only: bool) -> str:
    if children and below:
        text = f"deleted snapshot {doc.name} and {len(below)} below it ({_names(below)})"
    else:
        text = f"deleted snapshot {doc.name}"
        if below:
            text += (f"; its children ({_names(below)}) now hang from {doc.parent}"
                     if doc.parent else f"; its children ({_names(below)}) are now roots")
    if metadata_only:
        kept = (f"its overlay file(s) stay on the host: {_names(list(doc.overlays))}"
                if doc.overlays else "its data stays inside the disk images")
        text += f" (metadata only: {kept})"
    elif doc.overlays:
        text += " (its overlay was merged into the disk chain and removed)"
    return text

