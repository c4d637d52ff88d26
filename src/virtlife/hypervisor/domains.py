"""A Host's calls about its domains and itself: look up, list, define, restore, info.

Each function is one libvirt call (or a few) on the host's current connection
(``host.conn``, which reconnects when needed), with libvirt's errors translated. This
is the one place where "no such domain" becomes ``VMNotFound``. ``Host`` exposes each
as a method; the bulk read behind the fleet listing is ``listing.list_domains``. It
opens no connection itself, registers no event, and holds no policy: which operation
is allowed is decided in ``services``.

For a fleet of hundreds of hosts (issue 17) these are the calls a bounded worker pool
will run (today: the caller's thread, or the fleet's one caller thread per host in
``services.hostcalls``); they hold no lock and start no thread, so they need no change
for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor.guest import Guest
from virtlife.hypervisor.libvirt_api import calling, libvirt, translate

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host


@dataclass(frozen=True)
class HostInfo:
    name: str
    uri: str
    hostname: str
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    cpus: int
    memory_mib: int


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def info(host: Host) -> HostInfo:
    with calling(f"read host information of {host.name}"):
        conn = host.conn
        node = conn.getInfo()
        return HostInfo(
            name=host.name,
            uri=host.uri,
            hostname=conn.getHostname(),
            libvirt_version=_version(conn.getLibVersion()),
            hypervisor=conn.getType(),
            hypervisor_version=_version(conn.getVersion()),
            cpus=int(node[2]),
            memory_mib=int(node[1]),
        )


def lookup(host: Host, vm: str) -> Guest:
    """The domain named ``vm``; ``VMNotFound`` if there is none."""
    conn = host.conn
    try:
        dom = conn.lookupByName(vm)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise errors.VMNotFound(f"no VM named {vm} on host {host.name}") from err
        raise translate(err, f"look up {vm} on {host.name}") from err
    return Guest(host, dom)


def find_uuid(host: Host, uuid: str) -> Guest | None:
    """The domain whose UUID is ``uuid``, or None when this host has none."""
    conn = host.conn
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise translate(err, f"look up the VM {uuid} on {host.name}") from err
    return Guest(host, dom)


def guests(host: Host) -> list[Guest]:
    conn = host.conn
    with calling(f"list VMs on {host.name}"):
        doms = conn.listAllDomains(0)
    return [Guest(host, d) for d in doms]


def define(host: Host, xml: str) -> Guest:
    conn = host.conn
    with calling(f"define a VM on {host.name}"):
        dom = conn.defineXML(xml)
    return Guest(host, dom)


def restore(host: Host, path: str, *, paused: bool = False) -> None:
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0
    conn = host.conn
    with calling(f"restore {path} on {host.name}"):
        conn.restoreFlags(path, None, flags)


def saved_image_xml(host: Host, path: str) -> str:
    """The domain XML stored inside a save file (tells which VM it holds)."""
    conn = host.conn
    with calling(f"read save file {path} on {host.name}"):
        return str(conn.saveImageGetXMLDesc(path, 0))
