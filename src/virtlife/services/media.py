"""ISO CD-ROMs: attach an ISO file to a VM as a SCSI, SATA or IDE CD-ROM, and detach it.

``Media.attach_iso`` and ``Media.detach_iso`` are operations: each runs inside
``Operations.run`` (journalled, one per VM at a time, refused by the VM's state), like
``services.lifecycle``. A running VM gets the CD-ROM live, and in its definition too
when it is persistent; a shut-off one in its definition only. By default CD-ROMs go on
a virtio-scsi controller: only SCSI can be hot-plugged, and the SCSI controller libvirt
adds by itself on a ``pc`` machine (``lsilogic``) is one most guests have no driver
for. The VM's virtio-scsi controller is used when it has one, else one is added.
A Windows guest reads no virtio-scsi CD-ROM before it has the vioscsi driver (which is
on the virtio-win ISO), so that ISO can go on SATA (AHCI: libvirt 9.0 adds the
controller on an i440fx ``pc`` machine, q35 has one built in) or IDE (i440fx's built-in
controller: 2 channels x 2 units; q35 has none, and libvirt 9.0 would accept an IDE
disk in its definition but never start it). Neither can be hot-plugged or unplugged:
both are for shut-off VMs. Where the CD-ROM goes (``plan_cdrom``: a target name and a
drive address free in every definition; libvirt 9.0 accepts a duplicate address in a
definition and then refuses to start it) is decided from the VM's XML alone, so it is
tested without libvirt. The ISO is a path on the VM's host, looked at through libvirt
(``hypervisor.files``), never with ``os.path`` on the client; only where that host is
this machine (a local URI) is the file also read here, to refuse one that is not an
ISO 9660 image (elsewhere the attach goes on with a warning). Nothing here prints or
imports libvirt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Unpack

from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.files import probe_path
from virtlife.hypervisor.host import is_remote
from virtlife.services.base import Call, OperationService
from virtlife.services.isos import check_iso_image
from virtlife.services.lifecycle import host_path
from virtlife.services.operations import OperationResult, OperationRun
from virtlife.states import Operation, parse_enum
from virtlife.xml.devices import (
    VIRTIO_SCSI,
    VIRTLIFE_ALIAS,
    Cdrom,
    DriveAddress,
    aliases,
    cdrom_ref_xml,
    cdrom_xml,
    cdroms,
    controller_indexes,
    disk_name,
    disk_targets,
    drive_addresses,
    machine,
    scsi_controller_xml,
    scsi_controllers,
    scsi_units,
)

# virtio-scsi addresses LUNs 0..16383 on a target; libvirt checks the same bound.
MAX_SCSI_UNITS = 16384
# An AHCI (SATA) controller has 6 ports (libvirt numbers them as the address's unit).
SATA_PORTS = 6
# The IDE places (channel, unit) in the order they are taken: the secondary channel
# first (hdc, hdd), as the primary master (hda) is where an IDE boot disk goes.
IDE_PLACES = ((1, 0), (1, 1), (0, 0), (0, 1))
# Machine types with a built-in IDE controller: i440fx (``pc``, ``pc-i440fx-7.2``, the
# old ``pc-1.0``...) and ``isapc``; libvirt 9.0 starts no other x86 machine with IDE.
_IDE_MACHINE = re.compile(r"pc|pc-i440fx-.*|pc-\d.*|isapc")
# The buses libvirt 9.0 can remove a CD-ROM from while the VM runs.
_LIVE_CDROM_BUSES = frozenset({"scsi", "usb"})
# How often a live removal that libvirt finishes later is looked for.
REMOVAL_POLL_S = 0.2


class CdromBus(StrEnum):
    """The bus a new CD-ROM goes on (the value is the CLI's ``--bus`` word)."""

    SCSI = "scsi"  # virtio-scsi: hot-pluggable; the guest needs its driver (vioscsi)
    SATA = "sata"  # AHCI: read by Windows and Linux as they are; shut-off VMs only
    IDE = "ide"  # i440fx's built-in IDE: read by any guest; shut-off pc VMs only

    @property
    def label(self) -> str:
        return self.value.upper()

    @property
    def hotpluggable(self) -> bool:
        return self is CdromBus.SCSI


@dataclass(frozen=True)
class CdromPlan:
    """Where a new CD-ROM goes: its target name and drive address on ``bus`` (``channel``
    is the address's bus: IDE's channel, 0 on SCSI and SATA). ``add_controller``: the
    controller at ``controller`` is not there yet; virtlife adds a virtio-scsi one
    first, libvirt adds a SATA one by itself with the CD-ROM."""

    target: str
    controller: int
    unit: int
    add_controller: bool
    bus: CdromBus = CdromBus.SCSI
    channel: int = 0

    @property
    def address(self) -> DriveAddress:
        return DriveAddress(self.controller, self.channel, 0, self.unit)


@dataclass(frozen=True)
class AttachedCdrom:
    """A CD-ROM of a VM: ``source`` "" when it holds no medium; ``live``: in the running
    VM, ``defined``: in its definition (the next boot has it)."""

    target: str
    bus: str
    source: str
    by_virtlife: bool
    live: bool
    defined: bool

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "bus": self.bus, "source": self.source,
                "by_virtlife": self.by_virtlife, "live": self.live, "defined": self.defined}


def plan_cdrom(xmls: Sequence[str], bus: CdromBus = CdromBus.SCSI, *,
               vm: str = "the VM") -> CdromPlan:
    """A place for a new CD-ROM on ``bus`` that is free in every definition of ``xmls``
    (the live one, the persistent one, or both: one device change then fits both).
    ``InvalidInput`` (naming ``vm``) when the bus has no room or the machine no IDE."""
    if not xmls:
        raise ValueError("plan_cdrom needs at least one domain XML")
    taken_targets: set[str] = set().union(*(disk_targets(x) for x in xmls))
    taken_aliases: set[str] = set().union(*(aliases(x) for x in xmls))

    def free(name: str) -> bool:
        return name not in taken_targets and VIRTLIFE_ALIAS + name not in taken_aliases

    if bus is CdromBus.IDE:
        return _plan_ide(xmls, free, vm)
    # SCSI and SATA disks share the sd* names
    target = next(name for name in (disk_name("sd", i) for i in range(len(taken_targets) + 1))
                  if free(name))
    if bus is CdromBus.SATA:
        return _plan_sata(xmls, target)
    per_xml = [scsi_controllers(x) for x in xmls]
    shared = set.intersection(*({c.index for c in found if c.model == VIRTIO_SCSI}
                                for found in per_xml))
    for index in sorted(shared):
        used = set().union(*(scsi_units(x, index) for x in xmls))
        unit = next((u for u in range(MAX_SCSI_UNITS) if u not in used), None)
        if unit is not None:
            return CdromPlan(target, index, unit, add_controller=False)
    indexes = {c.index for found in per_xml for c in found}
    return CdromPlan(target, max(indexes, default=-1) + 1, 0, add_controller=True)


def _plan_sata(xmls: Sequence[str], target: str) -> CdromPlan:
    """The first free port of the SATA controllers every definition has, else port 0 of
    a new controller (which libvirt adds)."""
    used = set().union(*(drive_addresses(x, "sata") for x in xmls))
    per_xml = [controller_indexes(x, "sata") for x in xmls]
    for index in sorted(set.intersection(*per_xml)):
        port = next((p for p in range(SATA_PORTS)
                     if DriveAddress(index, 0, 0, p) not in used), None)
        if port is not None:
            return CdromPlan(target, index, port, add_controller=False, bus=CdromBus.SATA)
    known = set().union(*per_xml) | {a.controller for a in used}
    return CdromPlan(target, max(known, default=-1) + 1, 0, add_controller=True,
                     bus=CdromBus.SATA)


def _plan_ide(xmls: Sequence[str], free: Callable[[str], bool], vm: str) -> CdromPlan:
    """A free place on the one IDE controller, named as libvirt names it (hdc is
    channel 1, unit 0); refused on a machine without IDE and when all four are taken."""
    for kind in {machine(x) for x in xmls}:
        if kind and not _IDE_MACHINE.fullmatch(kind):
            raise errors.InvalidInput(
                f"{vm} is a {kind} machine, which has no IDE controller (i440fx `pc` "
                "machines have one): use --bus sata")
    used = set().union(*(drive_addresses(x, "ide") for x in xmls))
    for channel, unit in IDE_PLACES:
        name = disk_name("hd", channel * 2 + unit)
        if free(name) and DriveAddress(0, channel, 0, unit) not in used:
            return CdromPlan(name, 0, unit, add_controller=False, bus=CdromBus.IDE,
                             channel=channel)
    holders = sorted(set().union(*(disk_targets(x, bus="ide") for x in xmls)))
    by = f"taken by {', '.join(holders)}" if holders else "taken by other devices' aliases"
    raise errors.InvalidInput(f"{vm} has no free IDE place (IDE has 2 channels x 2 units, "
                              f"{by}): use --bus sata, or detach one")


def _where(live: bool, config: bool) -> str:
    if live and config:
        return "live and in its definition"
    if live:
        return "live only (the VM is transient)"
    return "in its definition (the guest sees it from its next start)"


class Media(OperationService):
    """ISO CD-ROM operations over a ``Fleet``, run by ``ops`` (journalled when it has a
    journal). The CLI builds one from its services' fleet and lifecycle's operations."""

    @staticmethod
    def _definitions(guest: Guest, run: OperationRun) -> tuple[str | None, str | None]:
        """The XML of the running VM (None when it is not) and of its definition (None
        when it is transient): what a device change on ``guest`` affects."""
        live = guest.xml() if run.current.state.is_active else None
        config = guest.xml(inactive=True) if guest.is_persistent() else None
        return live, config

    @staticmethod
    def _check_iso(guest: Guest, run: OperationRun, source: str) -> None:
        """Refuse a file that is not an ISO 9660 image (a text file, a disk image) where
        it can be read: on a host that is this machine. Elsewhere, or when this process
        cannot read it (QEMU may), the attach goes on with a warning."""
        if is_remote(guest.host.uri):
            run.warnings.append(
                f"{source} was not checked to be an ISO 9660 image: it is on host "
                f"{guest.host.name}, another machine; if the guest finds no disc in the "
                "CD-ROM, look at the file there")
            return
        found = check_iso_image(Path(source))
        if found.is_iso is False:
            raise errors.InvalidInput(
                f"cannot attach {source} to {guest.name}: it is not an ISO 9660 image "
                f"({found.why}); give the path of an ISO file (.iso)")
        if found.is_iso is None:
            run.warnings.append(f"{source} was not checked to be an ISO 9660 image: "
                                f"{found.why}; attached anyway")

    def cdroms(self, ref: str) -> list[AttachedCdrom]:
        """VM ``ref``'s CD-ROMs, in its running configuration and in its definition
        (a read: no operation, no journal)."""
        guest = self.fleet.resolve(ref)
        live = guest.xml() if guest.status().state.is_active else None
        config = guest.xml(inactive=True) if guest.is_persistent() else None
        now = {(c.target, c.source): c for c in cdroms(live or "<domain/>")}
        later = {(c.target, c.source): c for c in cdroms(config or "<domain/>")}
        return [AttachedCdrom(c.target, c.bus, c.source, c.by_virtlife,
                              key in now, key in later)
                for key, c in sorted({**later, **now}.items())]

    def attach_iso(self, ref: str, path: str | Path, *, bus: CdromBus | str = CdromBus.SCSI,
                   timeout_s: float | None = None, **call: Unpack[Call]) -> OperationResult:
        """Attach the ISO ``path`` (on the VM's host) to VM ``ref`` as a CD-ROM on
        ``bus``; SATA and IDE only to a shut-off VM (they cannot be hot-plugged)."""
        kind = parse_enum(CdromBus, bus, "CD-ROM bus")
        guest = self._resolve(Operation.ATTACH_ISO, ref)
        with self._operation(Operation.ATTACH_ISO, guest, timeout_s, call) as run:
            source = host_path(guest.host, path)
            state = run.current.state
            if state.is_active and not kind.hotpluggable:
                raise errors.InvalidTransition(
                    f"cannot attach {source} to {guest.name} on {kind.label}: it is "
                    f"{state.label}, and a {kind.label} CD-ROM cannot be hot-plugged; shut "
                    f"{guest.name} down first, or use --bus scsi")
            if not probe_path(guest.host, source).exists:
                raise errors.NotFound(f"cannot attach {source} to {guest.name}: there is no "
                                      f"such file on host {guest.host.name}")
            self._check_iso(guest, run, source)
            live_xml, config_xml = self._definitions(guest, run)
            live, config = live_xml is not None, config_xml is not None
            xmls = [x for x in (live_xml, config_xml) if x is not None]
            holding = [c for x in xmls for c in cdroms(x) if c.source == source]
            if holding:
                raise errors.AlreadyExists(
                    f"{source} is already attached to {guest.name} as CD-ROM "
                    f"{holding[0].target}; detach it first (attach-iso --detach)")
            plan = plan_cdrom(xmls, kind, vm=guest.name)
            added_scsi = plan.add_controller and kind is CdromBus.SCSI
            if added_scsi:
                run.report("attach", f"adding a virtio-scsi controller (index "
                                     f"{plan.controller}) to {guest.name}")
                guest.attach_device(scsi_controller_xml(plan.controller), live=live,
                                    config=config)
            elif plan.add_controller:
                run.report("attach", f"libvirt adds a {kind.label} controller (index "
                                     f"{plan.controller}) to {guest.name} with the CD-ROM")
            what = "CD-ROM" if kind is CdromBus.SCSI else f"{kind.label} CD-ROM"
            run.report("attach", f"attaching {source} to {guest.name} as {what} {plan.target}")
            try:
                guest.attach_device(cdrom_xml(source, target=plan.target, bus=kind.value,
                                              address=plan.address),
                                    live=live, config=config)
            except errors.VirtlifeError as err:
                if added_scsi:
                    err.add_note(f"the virtio-scsi controller {plan.controller} added for "
                                 "it stays (it is harmless)")
                raise
            run.note = f"{source} is {what} {plan.target}, {_where(live, config)}"
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
            fixed = sorted({c.target for c in ours_live if c.bus not in _LIVE_CDROM_BUSES})
            if fixed:
                bus = next(c.bus for c in ours_live if c.target == fixed[0]).upper()
                raise errors.InvalidTransition(
                    f"cannot detach CD-ROM {', '.join(fixed)} ({source}) from {guest.name}: "
                    f"it is {run.current.state.label}, and a {bus} CD-ROM cannot be "
                    f"hot-unplugged; shut {guest.name} down first, then detach it")
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
