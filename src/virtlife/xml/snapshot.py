"""The ``<domainsnapshot>`` XML: what virtlife asks libvirt for, and what a snapshot says.

``snapshot_xml`` writes the request for a new snapshot (its name, description and, for
a memory snapshot, ``<memory snapshot='internal'/>``); ``parse_snapshot`` reads
libvirt's description of one back into a ``SnapshotDoc`` (the VM's state when it was
taken, its creation time, its parent, and where its disks and memory are kept:
inside the qcow2 images, *internal*, or in overlay files beside them, *external*).
``validate_snapshot_name``, ``validate_description`` and ``default_name`` check and
make names. Which kind of snapshot to take is the caller's choice
(``services.snapshots``). Pure XML: no libvirt, no I/O.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

from virtlife.errors import InvalidDefinition, InvalidInput

MAX_NAME = 64
MAX_DESCRIPTION = 4096
# An external snapshot's overlay is named <disk image>.<snapshot name> beside the disk,
# and an internal one is a qcow2 tag: a name that is safe as both.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# XML 1.0 has no place for other control characters; libvirt rejects them.
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def validate_snapshot_name(name: str) -> str:
    """``name`` if it can name a snapshot; ``InvalidInput`` saying why not."""
    if not name:
        raise InvalidInput("a snapshot name cannot be empty")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{name[:80]!r} cannot name a snapshot: use 1 to {MAX_NAME} letters, digits and "
            ". _ + - starting with a letter or digit (it becomes part of the overlay file "
            "name of an external snapshot)")
    return name


def validate_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"a snapshot description is at most {MAX_DESCRIPTION} characters, "
                           f"not {len(text)}")
    if _BAD_TEXT.search(text):
        raise InvalidInput("a snapshot description cannot hold control characters")
    return text


def default_name(now: datetime | None = None) -> str:
    """The name of a snapshot taken without one: its UTC time, ``snap-20250131-142502``."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return f"snap-{when:%Y%m%d-%H%M%S}"


def snapshot_xml(name: str, description: str = "", *, memory: bool = False) -> str:
    """The ``<domainsnapshot>`` to ask libvirt for. ``memory``: say that the VM's memory
    is kept too (internal); without it libvirt decides (a running VM's memory is kept
    unless the snapshot is disk-only)."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = validate_snapshot_name(name)
    if description:
        ET.SubElement(root, "description").text = validate_description(description)
    if memory:
        ET.SubElement(root, "memory", snapshot="internal")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class SnapshotDisk:
    """One disk in a snapshot: ``kind`` internal, external or no (not in the snapshot)."""

    name: str  # the disk's target, e.g. vda
    kind: str
    source: str  # the overlay file of an external snapshot, else ""


@dataclass(frozen=True)
class SnapshotDoc:
    """What libvirt's XML of one snapshot says."""

    name: str
    description: str
    state: str  # the VM's state when taken: running, paused, shutoff, disk-snapshot...
    created: datetime | None
    parent: str | None
    memory: str  # internal, external or no
    disks: tuple[SnapshotDisk, ...]
    memory_file: str = ""  # the file of an external memory image, else ""

    @property
    def external(self) -> bool:
        """True when its memory or a disk is kept in a file outside the disk images."""
        return self.memory == "external" or any(d.kind == "external" for d in self.disks)

    @property
    def location(self) -> str:
        return "external" if self.external else "internal"

    @property
    def has_memory(self) -> bool:
        return self.memory in ("internal", "external")

    @property
    def overlays(self) -> tuple[str, ...]:
        """The overlay files of its external disks (what the VM writes to after it)."""
        return tuple(d.source for d in self.disks if d.kind == "external" and d.source)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file it keeps outside the disk images: its overlays, then its external
        memory image (what stays on disk when libvirt forgets the snapshot)."""
        return self.overlays + ((self.memory_file,) if self.memory_file else ())


def _text(root: ET.Element, path: str) -> str:
    found = root.find(path)
    return (found.text or "").strip() if found is not None else ""


def _source(disk: ET.Element) -> str:
    source = disk.find("source")
    return source.get("file", "") if source is not None else ""


def parse_snapshot(xml: str) -> SnapshotDoc:
    """Read libvirt's ``<domainsnapshot>`` XML; ``InvalidDefinition`` if it is not one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InvalidDefinition(f"the snapshot XML is malformed: {err}") from None
    if root.tag != "domainsnapshot":
        raise InvalidDefinition(f"expected a <domainsnapshot>, found <{root.tag}>")
    name = _text(root, "name")
    if not name:
        raise InvalidDefinition("the snapshot XML has no name")
    stamp = _text(root, "creationTime")
    created = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else None
    memory = root.find("memory")
    disks = tuple(SnapshotDisk(d.get("name", ""), d.get("snapshot", ""), _source(d))
                  for d in root.iterfind("disks/disk"))
    return SnapshotDoc(
        name=name, description=_text(root, "description"), state=_text(root, "state"),
        created=created, parent=_text(root, "parent/name") or None,
        memory=memory.get("snapshot", "no") if memory is not None else "no", disks=disks,
        memory_file=(memory.get("file", "") if memory is not None
                     and memory.get("snapshot") == "external" else ""))
