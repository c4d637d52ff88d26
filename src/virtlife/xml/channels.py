"""Channel devices of a domain's XML: the guest agent's virtio-serial channel.

``with_agent_channel`` adds ``<channel type='unix'><target type='virtio'
name='org.qemu.guest_agent.0'/></channel>`` to a definition that lacks it (libvirt
picks the socket path and adds the virtio-serial controller). Pure XML: no libvirt.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from virtlife.errors import InvalidDefinition
from virtlife.xml.domain import AGENT_CHANNEL, parse_domain


def has_agent_channel(xml: str) -> bool:
    """True when the domain XML has a virtio channel named ``org.qemu.guest_agent.0``."""
    root = parse_domain(xml)
    return any(t.get("type") == "virtio" and t.get("name") == AGENT_CHANNEL
               for t in root.findall("./devices/channel/target"))


def with_agent_channel(xml: str) -> str:
    """The domain XML with the guest-agent channel added (it must not have one yet)."""
    root = parse_domain(xml)
    devices = root.find("devices")
    if devices is None:
        raise InvalidDefinition("the domain XML has no <devices> element")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "target", type="virtio", name=AGENT_CHANNEL)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
