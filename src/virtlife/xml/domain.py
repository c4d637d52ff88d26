"""Build domain XML from a ``DomainSpec`` and read the few facts we need back out of XML.

The builder writes exactly what the spec says; choosing the values (virt type, CPU
model, defaults) is the caller's job (``services.provision``). Parsing helpers raise
``InvalidDefinition`` for XML that is not a domain. The input checks every front end
shares also live here: ``validate_vm_name`` for the names virtlife gives new VMs (they
become file names) and ``MAX_XML_BYTES`` with ``check_xml_size`` / ``decode_xml`` for
domain XML read from users. This module does no I/O.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from virtlife.errors import InvalidDefinition, InvalidInput

AGENT_CHANNEL = "org.qemu.guest_agent.0"

# A real domain XML is a few KiB; libvirt's own RPC limit for a string is far below
# 10 MB. Anything over this is a wrong file (/dev/zero, a disk image), not a domain.
MAX_XML_BYTES = 1024 * 1024

MAX_VM_NAME = 64
_VM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
VM_NAME_RULE = (f"letters, digits and . _ - +, starting with a letter or digit, "
                f"at most {MAX_VM_NAME} characters")


def validate_vm_name(name: str) -> str:
    """Return ``name`` if virtlife may create a VM (and its files) under it.

    Only for names virtlife gives new VMs: they become file names (``NAME.qcow2``), so
    no ``/``, no leading ``.`` or ``-``, no spaces or control characters. Looking up an
    existing VM accepts any name libvirt has.
    """
    if not name:
        raise InvalidInput("a VM name cannot be empty; use " + VM_NAME_RULE)
    if len(name) > MAX_VM_NAME:
        raise InvalidInput(
            f"the VM name {name[:MAX_VM_NAME]!r}... is {len(name)} characters long; "
            f"use at most {MAX_VM_NAME}")
    if not _VM_NAME.fullmatch(name):
        raise InvalidInput(f"{name!r} cannot be a VM name; use {VM_NAME_RULE}")
    return name


def check_xml_size(xml: str | bytes, source: str = "the domain XML") -> None:
    """Refuse XML over ``MAX_XML_BYTES`` (counted as UTF-8) before anything parses it."""
    size = len(xml) if isinstance(xml, bytes) else len(xml.encode("utf-8", "surrogatepass"))
    if size > MAX_XML_BYTES:
        raise InvalidInput(
            f"{source} is larger than {MAX_XML_BYTES // (1024 * 1024)} MiB, the most "
            "virtlife accepts (a domain XML is a few KiB); is it the right file?")


def decode_xml(data: bytes, source: str = "the domain XML") -> str:
    """``data`` as text, if it is UTF-8 and not over ``MAX_XML_BYTES``."""
    check_xml_size(data, source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(
            f"{source} is not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x}); "
            "libvirt reads domain XML as UTF-8") from err


@dataclass(frozen=True)
class NicSpec:
    """A NIC: ``kind`` is ``network`` (libvirt network), ``bridge`` (host bridge) or ``user``."""

    kind: str
    source: str = ""
    model: str = "virtio"


@dataclass(frozen=True)
class DiskCopy:
    """A disk file that provisioning creates as a copy of ``source`` before defining.

    ``target`` is never written over: if it exists, provisioning refuses.
    """

    source: Path
    target: Path


@dataclass(frozen=True)
class DomainSpec:
    """What a new VM looks like. ``disk_copies`` are made by ``services.provision``
    (each ``target`` also appears in ``disks``); the XML builder ignores them."""

    name: str
    memory_mib: int = 256
    vcpus: int = 1
    virt_type: str = "qemu"
    machine: str = "pc"
    cpu_model: str | None = "qemu64"  # None: host-passthrough (for kvm)
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    disks: tuple[Path, ...] = ()
    nics: tuple[NicSpec, ...] = field(default_factory=tuple)
    agent: bool = True
    vnc: bool = True
    virtio_scsi: bool = True  # a virtio-scsi controller: where CD-ROMs are hot-plugged
    serial_log: Path | None = None
    panic: bool = True
    on_crash: str = "preserve"
    emulator: str | None = None
    disk_copies: tuple[DiskCopy, ...] = ()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _disk_format(path: Path) -> str:
    return "qcow2" if path.suffix == ".qcow2" else "raw"


def build_domain_xml(spec: DomainSpec) -> str:
    """The libvirt domain XML for ``spec``, pretty-printed."""
    dom = ET.Element("domain", {"type": spec.virt_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=spec.machine)
    if spec.kernel is not None:
        _sub(os_el, "kernel", str(spec.kernel))
        if spec.initrd is not None:
            _sub(os_el, "initrd", str(spec.initrd))
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.cpu_model is None:
        _sub(dom, "cpu", mode="host-passthrough")
    else:
        cpu = _sub(dom, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", spec.cpu_model, fallback="allow")
    pm = _sub(dom, "pm")
    _sub(pm, "suspend-to-mem", enabled="yes")
    _sub(pm, "suspend-to-disk", enabled="no")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", spec.on_crash)
    devices = _sub(dom, "devices")
    if spec.emulator:
        _sub(devices, "emulator", spec.emulator)
    for index, disk in enumerate(spec.disks):
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type=_disk_format(disk), cache="none")
        _sub(d, "source", file=str(disk))
        _sub(d, "target", dev=f"vd{chr(ord('a') + index)}", bus="virtio")
    if spec.virtio_scsi:
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for nic in spec.nics:
        n = _sub(devices, "interface", type=nic.kind)
        if nic.kind == "network":
            _sub(n, "source", network=nic.source)
        elif nic.kind == "bridge":
            _sub(n, "source", bridge=nic.source)
        _sub(n, "model", type=nic.model)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    if spec.serial_log is not None:
        _sub(serial, "log", file=str(spec.serial_log), append="off")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if spec.agent:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    if spec.vnc:
        graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes",
                        listen="127.0.0.1")
        _sub(graphics, "listen", type="address", address="127.0.0.1")
        video = _sub(devices, "video")
        _sub(video, "model", type="vga")
    if spec.panic:
        _sub(devices, "panic", model="isa")
    _sub(devices, "memballoon", model="virtio")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def parse_domain(xml: str) -> ET.Element:
    """Parse domain XML, or raise ``InvalidDefinition`` saying what is wrong.

    XML over ``MAX_XML_BYTES`` is refused (``InvalidInput``) before it is parsed.
    """
    check_xml_size(xml)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InvalidDefinition(f"the domain XML is not well-formed: {err}") from err
    if root.tag != "domain":
        raise InvalidDefinition(f"the XML is a <{root.tag}>, not a <domain>")
    return root


def disk_files(xml: str) -> set[str]:
    """The files a domain XML uses as disks (``<disk type='file'><source file=...>``)."""
    return {src.get("file", "") for src in parse_domain(xml).iterfind("devices/disk/source")
            if src.get("file")}


def domain_name(xml: str) -> str:
    """The ``<name>`` of a domain XML document."""
    name = parse_domain(xml).findtext("name")
    if not name or not name.strip():
        raise InvalidDefinition("the domain XML has no <name>")
    return name.strip()


def domain_uuid(xml: str) -> str:
    """The ``<uuid>`` of a domain XML document, lower case ("" when it has none: libvirt
    then makes one up at define time)."""
    return (parse_domain(xml).findtext("uuid") or "").strip().lower()
