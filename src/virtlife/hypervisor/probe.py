"""Does KVM really work on a host? Asked of the host itself, through libvirt.

A host's capabilities offer ``kvm`` whenever ``/dev/kvm`` exists, even where KVM
cannot run a guest (nested virtualisation that fails on MSR writes, as on our CI
machines). ``identity`` reads the capabilities (host_uuid, offered types); the one
decisive test is to start a guest: ``kvm_usable`` starts a tiny
transient domain of type kvm, paused and auto-destroyed, on that host and destroys
it at once. It works the same for a remote host (``qemu+tcp://``), whose ``/dev/kvm``
the client cannot see. It leaves nothing behind and decides no policy.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from virtlife.hypervisor.libvirt_api import calling, libvirt

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host

PROBE_PREFIX = "virtlife-kvm-probe-"


def identity(host: Host) -> tuple[str, set[str]]:
    """The host's ``host_uuid`` and the domain types it offers for x86_64 hvm guests."""
    with calling(f"read capabilities of {host.name}"):
        caps = ET.fromstring(host.conn.getCapabilities())
    found: set[str] = set()
    for guest in caps.findall("guest"):
        arch = guest.find("arch")
        if arch is None or arch.get("name") != "x86_64":
            continue
        found.update(d.get("type", "") for d in arch.findall("domain"))
    found.discard("")
    return caps.findtext("host/uuid", default="").strip(), found


def _probe_xml(name: str) -> str:
    return (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>16</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
            "<cpu mode='host-passthrough'/><devices/></domain>")


def _why(message: str) -> str:
    """The telling line of QEMU's failure ("failed to set MSR 0x10a to 0x69"), short."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line[line.rindex("error:") + len("error:"):].strip()[:160]
    return lines[-1][:160] if lines else "the KVM guest did not start"


def kvm_usable(host: Host) -> tuple[bool, str]:
    """(True, "") when a KVM guest starts on ``host``; (False, why) otherwise."""
    name = PROBE_PREFIX + uuidlib.uuid4().hex[:8]
    flags = libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
    try:
        dom = host.conn.createXML(_probe_xml(name), flags)
    except libvirt.libvirtError as err:
        return False, _why(err.get_error_message() or str(err))
    try:  # pragma: no cover - reached only on a host where KVM works (not our CI)
        dom.destroy()
    except libvirt.libvirtError:  # pragma: no cover
        pass  # AUTODESTROY removes it when our connection closes in any case
    return True, ""  # pragma: no cover
