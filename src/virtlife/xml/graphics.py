"""Graphics and console devices of a domain's XML: read the VNC server, edit its settings.

``graphics`` lists a domain's ``<graphics>`` elements (type, port, listen address or
socket, whether a password is set) and ``vnc`` picks the VNC one; read from the live
XML they say where QEMU's VNC server listens. A password is in the XML only when it
was read with ``VIR_DOMAIN_XML_SECURE``. ``with_vnc`` returns a definition with the VNC
listen address or password changed (and a VNC server added when there is none);
``has_console`` tells whether a domain has a serial console to attach to. Pure XML:
no I/O, no libvirt, no policy (which address a client should use is
``services.consoles``'s choice).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import Enum

from virtlife.errors import InvalidDefinition, InvalidInput
from virtlife.xml.domain import parse_domain

VNC_BASE_PORT = 5900  # display :N listens on 5900 + N
# VNC authentication (DES) uses the first 8 characters of a password and drops the rest.
MAX_VNC_PASSWORD = 8


class Keep(Enum):
    """``with_vnc``'s "leave this setting as it is"."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class Graphics:
    """One ``<graphics>`` element. ``index`` is its place among the domain's graphics
    (what ``virDomainOpenGraphicsFD`` takes); ``port`` is None when none is assigned
    (a definition with autoport, or a VM that is not running); ``listen`` is the address
    ("" when the XML names none), ``socket`` the UNIX socket's path for a socket listen;
    ``password`` is None when none is set (or the XML was read without secrets)."""

    index: int
    type: str
    port: int | None
    autoport: bool
    listen_type: str  # address, network, socket, none; "" when the XML has no <listen>
    listen: str
    socket: str
    password: str | None

    @property
    def display(self) -> int | None:
        """The VNC display number (``:0`` is port 5900)."""
        return None if self.port is None else self.port - VNC_BASE_PORT


def _port(text: str | None) -> int | None:
    try:
        port = int(text or "")
    except ValueError:
        return None
    return port if port > 0 else None


def graphics(xml: str) -> list[Graphics]:
    """The domain's graphics devices, in the order libvirt numbers them."""
    found = []
    for index, el in enumerate(parse_domain(xml).iterfind("devices/graphics")):
        listen_el = el.find("listen")
        listen_type = listen_el.get("type", "") if listen_el is not None else ""
        address = ((listen_el.get("address") if listen_el is not None else None)
                   or el.get("listen") or "")
        found.append(Graphics(
            index=index, type=el.get("type", ""), port=_port(el.get("port")),
            autoport=el.get("autoport") == "yes", listen_type=listen_type,
            listen=address if listen_type != "socket" else "",
            socket=(listen_el.get("socket", "") if listen_el is not None else "")
            or el.get("socket", ""),
            password=el.get("passwd")))
    return found


def vnc(xml: str) -> Graphics | None:
    """The domain's (first) VNC graphics; None when it has none."""
    return next((g for g in graphics(xml) if g.type == "vnc"), None)


def has_console(xml: str) -> bool:
    """True when the domain has a serial port or console a stream can attach to."""
    devices = parse_domain(xml).find("devices")
    return devices is not None and (devices.find("console") is not None
                                    or devices.find("serial") is not None)


def check_listen(address: str) -> str:
    """``address`` if it is an IP address a VNC server can listen on (normalised)."""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise InvalidInput(
            f"{address!r} is not an IP address; give the address the VNC server listens "
            "on: 127.0.0.1 (this host only), 0.0.0.0 (every IPv4 address), :: or one of "
            "the host's addresses") from None


def check_vnc_password(password: str) -> str:
    """``password`` if VNC can use it: 1 to 8 printable ASCII characters."""
    if not password:
        raise InvalidInput("an empty VNC password cannot be set; use --no-password to "
                           "remove the password")
    if len(password) > MAX_VNC_PASSWORD:
        raise InvalidInput(
            f"the VNC password is {len(password)} characters long; VNC uses at most "
            f"{MAX_VNC_PASSWORD} (it silently drops the rest), so give at most "
            f"{MAX_VNC_PASSWORD}")
    if not all(" " <= c <= "~" for c in password):
        raise InvalidInput("the VNC password must be printable ASCII characters (no "
                           "control characters or non-ASCII letters)")
    return password


def with_vnc(xml: str, *, listen: str | Keep = KEEP,
             password: str | Keep | None = KEEP) -> str:
    """The domain XML with its VNC server listening on ``listen`` and protected by
    ``password`` (None: no password); ``KEEP`` leaves a setting as it is. A domain
    without VNC graphics gets one (autoport, on 127.0.0.1 unless ``listen`` says)."""
    root = parse_domain(xml)
    devices = root.find("devices")
    if devices is None:
        raise InvalidDefinition("the domain XML has no <devices> element")
    el = next((g for g in devices.iterfind("graphics") if g.get("type") == "vnc"), None)
    if el is None:
        el = ET.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes")
        if listen is KEEP:
            listen = "127.0.0.1"
    if not isinstance(listen, Keep):
        el.set("listen", check_listen(listen))
        for old in el.findall("listen"):
            el.remove(old)
        ET.SubElement(el, "listen", type="address", address=el.get("listen", ""))
        el.attrib.pop("socket", None)
    if password is None:
        el.attrib.pop("passwd", None)
        el.attrib.pop("passwdValidTo", None)
    elif not isinstance(password, Keep):
        el.set("passwd", check_vnc_password(password))
        el.attrib.pop("passwdValidTo", None)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
