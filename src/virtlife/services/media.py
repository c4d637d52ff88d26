"""ISO CD-ROMs: attach an ISO file to a VM as a SCSI CD-ROM, and detach it again.

``Media.attach_iso`` and ``Media.detach_iso`` are operations: each runs inside
``Operations.run`` (journalled, one per VM at a time, refused by the VM's state), like
``services.lifecycle``. A running VM gets the CD-ROM live, and in its definition too
when it is persistent; a shut-off one in its definition only. CD-ROMs go on a
virtio-scsi controller: IDE cannot be hot-plugged, and the SCSI controller libvirt
adds by itself on a ``pc`` machine (``lsilogic``) is one most guests have no driver
for. The VM's virtio-scsi controller is used when it has one, else one is added.
Where the CD-ROM goes (``plan_cdrom``) is decided from the VM's XML alone, so it is
tested without libvirt. The ISO is a path on the VM's host, looked at through
libvirt (``hypervisor.files``), never with ``os.path`` on the client. Nothing here
prints or imports libvirt.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.files import probe_path
from virtlife.services.fleet import Fleet, split_ref
from virtlife.services.lifecycle import Call, host_path
from virtlife.services.operations import OperationResult, OperationRun, Operations
from virtlife.states import Operation
from virtlife.xml.devices import (
    VIRTIO_SCSI,
    VIRTLIFE_ALIAS,
    Cdrom,
    aliases,
    cdrom_ref_xml,
    cdroms,
    disk_targets,
    scsi_cdrom_xml,
    scsi_controller_xml,
    scsi_controllers,
    scsi_disk_name,
    scsi_units,
)

# virtio-scsi addresses LUNs 0..16383 on a target; libvirt checks the same bound.
MAX_SCSI_UNITS = 16384
# How often a live removal that libvirt finishes later is looked for.
REMOVAL_POLL_S = 0.2


@dataclass(frozen=True)
class CdromPlan:
    """Where a new CD-ROM goes: its target name and SCSI address, and whether the
    virtio-scsi controller at ``controller`` has to be added first."""

    target: str
    controller: int
    unit: int
    add_controller: bool


def plan_cdrom(xmls: Sequence[str]) -> CdromPlan:
    """A place for a new SCSI CD-ROM that is free in every definition of ``xmls`` (the
    live one, the persistent one, or both: one device change then fits both)."""
    if not xmls:
        raise ValueError("plan_cdrom needs at least one domain XML")
    per_xml = [scsi_controllers(x) for x in xmls]
    shared = set.intersection(*({c.index for c in found if c.model == VIRTIO_SCSI}
                                for found in per_xml))
    taken_targets = set().union(*(disk_targets(x) for x in xmls))
    taken_aliases = set().union(*(aliases(x) for x in xmls))
    target = next(name for name in map(scsi_disk_name, range(len(taken_targets) + 1))
                  if name not in taken_targets and VIRTLIFE_ALIAS + name not in taken_aliases)
    for index in sorted(shared):
        used = set().union(*(scsi_units(x, index) for x in xmls))
        free = next((u for u in range(MAX_SCSI_UNITS) if u not in used), None)
        if free is not None:
            return CdromPlan(target, index, free, add_controller=False)
    indexes = {c.index for found in per_xml for c in found}
    return CdromPlan(target, max(indexes, default=-1) + 1, 0, add_controller=True)


def _where(live: bool, config: bool) -> str:
    if live and config:
        return "live and in its definition"
    if live:
        return "live only (the VM is transient)"
    return "in its definition (the guest sees it from its next start)"


class Media:
    """ISO CD-ROM operations over a ``Fleet``, run by ``ops`` (journalled when it has a
    journal). The CLI builds one from its services' fleet and lifecycle's operations."""

    def __init__(self, fleet: Fleet, ops: Operations) -> None:
        self.fleet = fleet
        self.ops = ops

    def _resolve(self, op: Operation, ref: str) -> Guest:
        """The VM ``ref``; an unreachable host is journalled as the operation's failure."""
        try:
            return self.fleet.resolve(ref)
        except errors.HostUnreachable as err:
            host, name = split_ref(ref)
            if host is None:
                host = next(iter(self.fleet.refs), "?")
            self.ops.record_failure(op, host, name, err)
            raise

    def _operation(self, op: Operation, guest: Guest, timeout_s: float | None,
                   call: Call) -> AbstractContextManager[OperationRun]:
        return self.ops.run(op, guest.host, guest.name, guest, timeout_s=timeout_s,
                            progress=call.get("progress"), op_id=call.get("op_id"),
                            queue_s=call.get("queue_s"))

    @staticmethod
    def _definitions(guest: Guest, run: OperationRun) -> tuple[str | None, str | None]:
        """The XML of the running VM (None when it is not) and of its definition (None
        when it is transient): what a device change on ``guest`` affects."""
        live = guest.xml() if run.current.state.is_active else None
        config = guest.xml(inactive=True) if guest.is_persistent() else None
        return live, config

    def attach_iso(self, ref: str, path: str | Path, *, timeout_s: float | None = None,
                   **call: Unpack[Call]) -> OperationResult:
        """Attach the ISO ``path`` (on the VM's host) to VM ``ref`` as a SCSI CD-ROM."""
        guest = self._resolve(Operation.ATTACH_ISO, ref)
        with self._operation(Operation.ATTACH_ISO, guest, timeout_s, call) as run:
            source = host_path(guest.host, path)
            if not probe_path(guest.host, source).exists:
                raise errors.NotFound(f"cannot attach {source} to {guest.name}: there is no "
                                      f"such file on host {guest.host.name}")
            live_xml, config_xml = self._definitions(guest, run)
            live, config = live_xml is not None, config_xml is not None
            xmls = [x for x in (live_xml, config_xml) if x is not None]
            holding = [c for x in xmls for c in cdroms(x) if c.source == source]
            if holding:
                raise errors.AlreadyExists(
                    f"{source} is already attached to {guest.name} as CD-ROM "
                    f"{holding[0].target}; detach it first (attach-iso --detach)")
            plan = plan_cdrom(xmls)
            if plan.add_controller:
                run.report("attach", f"adding a virtio-scsi controller (index "
                                     f"{plan.controller}) to {guest.name}")
                guest.attach_device(scsi_controller_xml(plan.controller), live=live,
                                    config=config)
            run.report("attach", f"attaching {source} to {guest.name} as {plan.target}")
            try:
                guest.attach_device(scsi_cdrom_xml(source, target=plan.target,
                                                   controller=plan.controller,
                                                   unit=plan.unit),
                                    live=live, config=config)
            except errors.VirtlifeError as err:
                if plan.add_controller:
                    err.add_note(f"the virtio-scsi controller {plan.controller} added for "
                                 "it stays (it is harmless)")
                raise
            run.note = f"{source} is CD-ROM {plan.target}, {_where(live, config)}"
        assert run.result is not None
        return run.result

    def detach_iso(self, ref: str, path: str | Path, *, timeout_s: float | None = None,
                   **call: Unpack[Call]) -> OperationResult:
        """Remove the CD-ROM virtlife attached to VM ``ref`` for the ISO ``path``."""
        guest = self._resolve(Operation.DETACH_ISO, ref)
        with self._operation(Operation.DETACH_ISO, guest, timeout_s, call) as run:
            source = host_path(guest.host, path)
            live_xml, config_xml = self._definitions(guest, run)
            in_live = [c for c in cdroms(live_xml or "<domain/>") if c.source == source]
            in_config = [c for c in cdroms(config_xml or "<domain/>") if c.source == source]
            ours_live = [c for c in in_live if c.by_virtlife]
            ours_config = [c for c in in_config if c.by_virtlife]
            if not ours_live and not ours_config:
                raise errors.NotFound(_none_attached(guest.name, source, in_live + in_config))
            targets = sorted({c.target for c in ours_live + ours_config})
            for target in targets:
                now = [c for c in ours_live if c.target == target]
                later = [c for c in ours_config if c.target == target]
                run.report("detach", f"detaching CD-ROM {target} ({source}) from {guest.name}")
                guest.detach_device(cdrom_ref_xml((now or later)[0]), live=bool(now),
                                    config=bool(later))
            if ours_live:
                self._wait_removed(guest, run, {c.target for c in ours_live})
            run.note = (f"CD-ROM {', '.join(targets)} ({source}) detached, "
                        f"{_where(bool(ours_live), bool(ours_config))}")
        assert run.result is not None
        return run.result

    @staticmethod
    def _wait_removed(guest: Guest, run: OperationRun, targets: set[str]) -> None:
        """Wait until the live VM no longer has ``targets``: libvirt returns from a
        detach once QEMU took the request; the removal may be reported later."""
        while True:
            left = sorted(c.target for c in cdroms(guest.xml())
                          if c.target in targets and c.by_virtlife)
            if not left:
                return
            if run.remaining() <= 0:
                raise errors.OperationTimeout(
                    f"CD-ROM {', '.join(left)} of {guest.name} was still there after "
                    f"{run.timeout_s:g} s; QEMU may remove it later (dumpxml shows it)")
            run.report("wait", f"waiting for QEMU to remove CD-ROM {', '.join(left)}")
            time.sleep(min(REMOVAL_POLL_S, run.remaining()))


def _none_attached(vm: str, source: str, others: list[Cdrom]) -> str:
    if others:
        names = ", ".join(sorted({c.target for c in others}))
        return (f"{vm} has no CD-ROM that virtlife attached for {source}: CD-ROM {names} "
                "holds it, but virtlife did not attach it; remove it with `virsh "
                f"detach-disk {vm} {others[0].target}` (add --config for its definition)")
    return (f"{vm} has no CD-ROM holding {source}; `virtlife attach-iso {vm} {source}` "
            "attaches one")
