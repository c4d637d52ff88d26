"""Device XML for CD-ROMs and SCSI controllers, and what a domain's XML says about them.

The builders write exactly the device asked for (a virtio-scsi controller, a read-only
SCSI, SATA or IDE CD-ROM at a given drive address with a user alias); which bus,
controller, target name and address to use is the caller's choice (``services.media``).
The readers list a domain's machine type, controllers, disk target names, the drive
addresses used on a bus, aliases and CD-ROMs. A CD-ROM virtlife attached carries a user
alias starting with ``VIRTLIFE_ALIAS``: libvirt keeps ``ua-`` aliases in the live and
the persistent definition, so that is how virtlife tells its own CD-ROMs from others.
This module does no I/O and decides nothing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import NamedTuple

from virtlife.xml.domain import parse_domain

VIRTLIFE_ALIAS = "ua-virtlife-iso-"
VIRTIO_SCSI = "virtio-scsi"


class DriveAddress(NamedTuple):
    """A disk's ``<address type='drive'>``: on IDE, ``bus`` is the channel (0 primary,
    1 secondary) and ``unit`` master (0) or slave (1); on SATA, ``unit`` is the port."""

    controller: int
    bus: int
    target: int
    unit: int


@dataclass(frozen=True)
class ScsiController:
    index: int
    model: str  # "" when the XML does not say


@dataclass(frozen=True)
class Cdrom:
    """A CD-ROM in a domain's XML; ``source`` is "" when it holds no medium."""

    target: str
    bus: str
    source: str
    alias: str

    @property
    def by_virtlife(self) -> bool:
        return self.alias.startswith(VIRTLIFE_ALIAS)


def _int(text: str | None, default: int = 0) -> int:
    """An XML number as libvirt writes them (decimal, or hex with 0x); ``default`` else."""
    if not text:
        return default
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        return default


def machine(xml: str) -> str:
    """The domain's machine type (``pc-i440fx-7.2``, ``pc-q35-7.2``...), "" if unsaid."""
    found = parse_domain(xml).find("os/type")
    return "" if found is None else found.get("machine", "")


def scsi_controllers(xml: str) -> list[ScsiController]:
    return [ScsiController(_int(c.get("index")), c.get("model", ""))
            for c in parse_domain(xml).iterfind("devices/controller[@type='scsi']")]


def controller_indexes(xml: str, kind: str) -> set[int]:
    """The indexes of the domain's controllers of type ``kind`` (``sata``, ``ide``...)."""
    return {_int(c.get("index")) for c in parse_domain(xml).iterfind("devices/controller")
            if c.get("type") == kind}


def disk_targets(xml: str, *, bus: str | None = None) -> set[str]:
    """Every disk's target name (``vda``, ``sda``, ``hdc``...), CD-ROMs included; only
    those on ``bus`` (``ide``...) when it is given."""
    return {t.get("dev", "") for t in parse_domain(xml).iterfind("devices/disk/target")
            if bus is None or t.get("bus") == bus}


def aliases(xml: str) -> set[str]:
    return {a.get("name", "") for a in parse_domain(xml).iterfind("devices/*/alias")}


# How libvirt places a SATA or IDE disk that has no address, from its target name's
# index (sda = 0, hdc = 2): SATA has 6 ports per controller; IDE 2 channels x 2 units.
_NAME_PREFIX = {"sata": "sd", "ide": "hd"}


def _address_from_name(bus: str, name: str) -> DriveAddress | None:
    prefix = _NAME_PREFIX.get(bus)
    index = None if prefix is None else disk_index(prefix, name)
    if index is None:
        return None
    if bus == "sata":
        return DriveAddress(index // 6, 0, 0, index % 6)
    return DriveAddress(index // 4, index % 4 // 2, 0, index % 2)


def drive_addresses(xml: str, bus: str) -> set[DriveAddress]:
    """The drive addresses of the disks (CD-ROMs included) on ``bus`` (``scsi``,
    ``sata``, ``ide``). A SATA or IDE disk without an address is counted where libvirt
    puts it by its target name; libvirt writes every address in a defined domain."""
    used = set()
    for disk in parse_domain(xml).iterfind("devices/disk"):
        target, address = disk.find("target"), disk.find("address[@type='drive']")
        if target is None or target.get("bus") != bus:
            continue
        if address is not None:
            used.add(DriveAddress(_int(address.get("controller")), _int(address.get("bus")),
                                  _int(address.get("target")), _int(address.get("unit"))))
        elif (derived := _address_from_name(bus, target.get("dev", ""))) is not None:
            used.add(derived)
    return used


def scsi_units(xml: str, controller: int) -> set[int]:
    """The units used on bus 0, target 0 of SCSI controller ``controller``."""
    return {a.unit for a in drive_addresses(xml, "scsi")
            if (a.controller, a.bus, a.target) == (controller, 0, 0)}


def cdroms(xml: str) -> list[Cdrom]:
    found = []
    for disk in parse_domain(xml).iterfind("devices/disk[@device='cdrom']"):
        target, source, alias = disk.find("target"), disk.find("source"), disk.find("alias")
        found.append(Cdrom(
            target="" if target is None else target.get("dev", ""),
            bus="" if target is None else target.get("bus", ""),
            source="" if source is None else source.get("file", ""),
            alias="" if alias is None else alias.get("name", "")))
    return found


def scsi_controller_xml(index: int) -> str:
    """A virtio-scsi controller (the model every guest kernel with virtio drivers knows;
    libvirt's default for a pc machine, ``lsilogic``, is one most guests lack)."""
    return ET.tostring(ET.Element("controller", {"type": "scsi", "index": str(index),
                                                 "model": VIRTIO_SCSI}), encoding="unicode")


def cdrom_xml(source: str, *, target: str, bus: str, address: DriveAddress) -> str:
    """A read-only CD-ROM on ``bus`` (``scsi``, ``sata``, ``ide``) holding the ISO
    ``source`` (a path on the VM's host) at ``address``, with virtlife's alias for
    ``target``."""
    disk = ET.Element("disk", {"type": "file", "device": "cdrom"})
    ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
    ET.SubElement(disk, "source", {"file": source})
    ET.SubElement(disk, "target", {"dev": target, "bus": bus})
    ET.SubElement(disk, "address", {"type": "drive", "controller": str(address.controller),
                                    "bus": str(address.bus), "target": str(address.target),
                                    "unit": str(address.unit)})
    ET.SubElement(disk, "readonly")
    ET.SubElement(disk, "alias", {"name": f"{VIRTLIFE_ALIAS}{target}"})
    return ET.tostring(disk, encoding="unicode")


def scsi_cdrom_xml(source: str, *, target: str, controller: int, unit: int) -> str:
    """A read-only SCSI CD-ROM at ``controller``:0:0:``unit`` (see ``cdrom_xml``)."""
    return cdrom_xml(source, target=target, bus="scsi",
                     address=DriveAddress(controller, 0, 0, unit))


def cdrom_ref_xml(cdrom: Cdrom) -> str:
    """What names ``cdrom`` to libvirt for a detach (it matches disks by target)."""
    disk = ET.Element("disk", {"type": "file", "device": "cdrom"})
    if cdrom.source:
        ET.SubElement(disk, "source", {"file": cdrom.source})
    ET.SubElement(disk, "target", {"dev": cdrom.target, "bus": cdrom.bus})
    return ET.tostring(disk, encoding="unicode")


def disk_name(prefix: str, index: int) -> str:
    """The ``index``-th disk name as Linux and libvirt count: sda..sdz, sdaa... (hda...)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"{prefix}{letters}"


def disk_index(prefix: str, name: str) -> int | None:
    """The index ``disk_name(prefix, index)`` gives ``name``; None for another name."""
    letters = name.removeprefix(prefix)
    if not name.startswith(prefix) or not letters or not all("a" <= c <= "z"
                                                              for c in letters):
        return None
    index = 0
    for c in letters:
        index = index * 26 + ord(c) - ord("a") + 1
    return index - 1


def scsi_disk_name(index: int) -> str:
    """The ``index``-th SCSI (or SATA: they share names) disk name: sda..sdz, sdaa..."""
    return disk_name("sd", index)
