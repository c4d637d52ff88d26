"""Device XML for CD-ROMs and SCSI controllers, and what a domain's XML says about them.

The builders write exactly the device asked for (a virtio-scsi controller, a read-only
SCSI CD-ROM at a given address with a user alias); which controller, target name and
unit to use is the caller's choice (``services.media``). The readers list a domain's
SCSI controllers, disk target names, used SCSI units, aliases and CD-ROMs. A CD-ROM
virtlife attached carries a user alias starting with ``VIRTLIFE_ALIAS``: libvirt keeps
``ua-`` aliases in the live and the persistent definition, so that is how virtlife
tells its own CD-ROMs from others. This module does no I/O.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from virtlife.xml.domain import parse_domain

VIRTLIFE_ALIAS = "ua-virtlife-iso-"
VIRTIO_SCSI = "virtio-scsi"


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


def scsi_controllers(xml: str) -> list[ScsiController]:
    return [ScsiController(_int(c.get("index")), c.get("model", ""))
            for c in parse_domain(xml).iterfind("devices/controller[@type='scsi']")]


def disk_targets(xml: str) -> set[str]:
    """Every disk's target name (``vda``, ``sda``, ``hdc``...), CD-ROMs included."""
    return {t.get("dev", "") for t in parse_domain(xml).iterfind("devices/disk/target")}


def aliases(xml: str) -> set[str]:
    return {a.get("name", "") for a in parse_domain(xml).iterfind("devices/*/alias")}


def scsi_units(xml: str, controller: int) -> set[int]:
    """The units used on bus 0, target 0 of SCSI controller ``controller``."""
    used = set()
    for disk in parse_domain(xml).iterfind("devices/disk"):
        target, address = disk.find("target"), disk.find("address[@type='drive']")
        if target is None or target.get("bus") != "scsi" or address is None:
            continue
        if (_int(address.get("controller")), _int(address.get("bus")),
                _int(address.get("target"))) == (controller, 0, 0):
            used.add(_int(address.get("unit")))
    return used


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


def scsi_cdrom_xml(source: str, *, target: str, controller: int, unit: int) -> str:
    """A read-only SCSI CD-ROM holding the ISO ``source`` (a path on the VM's host) at
    ``controller``:0:0:``unit``, with virtlife's alias for ``target``."""
    disk = ET.Element("disk", {"type": "file", "device": "cdrom"})
    ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
    ET.SubElement(disk, "source", {"file": source})
    ET.SubElement(disk, "target", {"dev": target, "bus": "scsi"})
    ET.SubElement(disk, "address", {"type": "drive", "controller": str(controller),
                                    "bus": "0", "target": "0", "unit": str(unit)})
    ET.SubElement(disk, "readonly")
    ET.SubElement(disk, "alias", {"name": f"{VIRTLIFE_ALIAS}{target}"})
    return ET.tostring(disk, encoding="unicode")


def cdrom_ref_xml(cdrom: Cdrom) -> str:
    """What names ``cdrom`` to libvirt for a detach (it matches disks by target)."""
    disk = ET.Element("disk", {"type": "file", "device": "cdrom"})
    if cdrom.source:
        ET.SubElement(disk, "source", {"file": cdrom.source})
    ET.SubElement(disk, "target", {"dev": cdrom.target, "bus": cdrom.bus})
    return ET.tostring(disk, encoding="unicode")


def scsi_disk_name(index: int) -> str:
    """The ``index``-th SCSI disk name as Linux and libvirt count: sda..sdz, sdaa..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"sd{letters}"
