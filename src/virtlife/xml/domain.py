"""Build domain XML from a ``DomainSpec`` and read the few facts we need back out of XML.

The builder writes exactly what the spec says; choosing the values (virt type, CPU
model, defaults) is the caller's job (``services.provision``). Parsing helpers raise
``InvalidDefinition`` for XML that is not a domain.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from virtlife.errors import InvalidDefinition

AGENT_CHANNEL = "org.qemu.guest_agent.0"


@dataclass(frozen=True)
class NicSpec:
    """A NIC: ``kind`` is ``network`` (libvirt network), ``bridge`` (host bridge) or ``user``."""

    kind: str
    source: str = ""
    model: str = "virtio"


@dataclass(frozen=True)
class DomainSpec:
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
    serial_log: Path | None = None
    panic: bool = True
    on_crash: str = "preserve"
    emulator: str | None = None


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
    """Parse domain XML, or raise ``InvalidDefinition`` saying what is wrong."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InvalidDefinition(f"the domain XML is not well-formed: {err}") from err
    if root.tag != "domain":
        raise InvalidDefinition(f"the XML is a <{root.tag}>, not a <domain>")
    return root


def domain_name(xml: str) -> str:
    """The ``<name>`` of a domain XML document."""
    name = parse_domain(xml).findtext("name")
    if not name or not name.strip():
        raise InvalidDefinition("the domain XML has no <name>")
    return name.strip()
