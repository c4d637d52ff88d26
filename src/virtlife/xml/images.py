"""The image files a domain XML opens as disks, with the format libvirt opens each in.

``file_images(xml)`` lists every ``<disk>`` of type file (a disk, CD-ROM or floppy) and
every ``<backingStore>`` of type file the XML gives, with its source file and format:
a disk's ``<driver type>``, a backing store's ``<format type>``. A disk without a
driver type is raw: libvirt 9.0 opens it so (it probes no format), which is what
keeps a raw image a guest wrote a qcow2 header into from being read as qcow2. A
backing store without a format has ``format`` "" (libvirt would have to guess).
Pure: parsing only; ``backing`` decides what an image may name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from virtlife.xml.domain import parse_domain


@dataclass(frozen=True)
class DiskImage:
    where: str  # "devices/disk[2]", "devices/disk/backingStore"
    path: str
    format: str  # as libvirt opens it; "" for a backing store that gives none


def file_images(xml: str) -> list[DiskImage]:
    """Every file disk image in domain ``xml``, in document order."""
    root = parse_domain(xml)
    found: list[DiskImage] = []
    disks = root.findall("devices/disk")
    for index, disk in enumerate(disks, 1):
        where = f"devices/disk[{index}]" if len(disks) > 1 else "devices/disk"
        _collect(disk, where, "driver", "raw", found)
    return found


def _collect(element: ET.Element, where: str, format_tag: str, default: str,
             found: list[DiskImage]) -> None:
    if (element.get("type") or "file") == "file":
        source = element.find("source")
        path = (source.get("file") or "").strip() if source is not None else ""
        if path:
            fmt_el = element.find(format_tag)
            fmt = (fmt_el.get("type") or "").strip() if fmt_el is not None else ""
            found.append(DiskImage(where, path, fmt or default))
    backing = element.find("backingStore")
    if backing is not None:
        _collect(backing, f"{where}/backingStore", "format", "", found)
