"""What a migration's pre-flight check asks a host, each answer from libvirt itself.

Every function takes a ``Host`` (the connection is the host's own, local or remote)
and returns plain values: its hypervisor and versions, the machine types it offers,
whether a guest CPU runs there, its free and total memory, its domains, storage pools,
virtual networks, bridges and whether a disk path is there. Two answers need a write,
done through a storage pool and undone at once:

- ``shared_storage``: a probe volume created in a pool of one host is looked for in
  the pool of the same name (or one at the same path) on the other, after a refresh.
  Seen there: the same storage, the evidence that lets virtlife pass libvirt's unsafe
  flag; libvirt answering that no such volume is there, after a refresh that worked:
  other storage, what lets ``--copy-storage`` write over a file there. Any other error
  on the way is neither: the answer is unknown, with the error as its reason.
- ``clock_offset``: a probe volume's modification time (the host's clock, to the
  nanosecond) against the midpoint of this machine's clock around its creation.

Nothing here decides: ``services.migration`` turns these facts into checks.
"""

from __future__ import annotations

import re
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor.libvirt_api import LibvirtError, calling, libvirt, translate

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host

PROBE_PREFIX = ".virtlife-probe-"
_MACHINE = re.compile(r"<machine[^>]*>([^<]+)</machine>")


@dataclass(frozen=True)
class HypervisorFacts:
    hypervisor: str  # libvirt's driver name, e.g. QEMU
    libvirt_version: int  # major * 1_000_000 + minor * 1000 + release
    hypervisor_version: int
    machine_types: frozenset[str]
    free_memory_mib: int
    total_memory_mib: int | None = None  # the node's memory (getInfo), what a VM can ever get


@dataclass(frozen=True)
class PoolFacts:
    name: str
    path: str
    active: bool
    kind: str = ""  # the pool's type: dir, fs, netfs, logical, disk, iscsi...


class Storage(StrEnum):
    """What the storage probe found: three answers, for an error proves neither."""

    SHARED = "shared"  # the probe volume was seen at the other end
    DISTINCT = "distinct"  # libvirt said it is not there, after a refresh that worked
    UNKNOWN = "unknown"  # an error on the way: the probe could not tell


@dataclass(frozen=True)
class StorageProbe:
    answer: Storage
    why: str = ""  # with UNKNOWN: the error that kept the probe from telling


@dataclass(frozen=True)
class HostClockReading:
    offset_s: float  # the host's clock minus this machine's
    uncertainty_s: float  # half the round trip
    how: str


def hypervisor(host: Host) -> HypervisorFacts:
    with calling(f"read the capabilities of {host.name}"):
        conn = host.conn
        caps = conn.getCapabilities()
        return HypervisorFacts(str(conn.getType()), int(conn.getLibVersion()),
                               int(conn.getVersion()), frozenset(_MACHINE.findall(caps)),
                               int(conn.getFreeMemory()) // (1024 * 1024),
                               int(conn.getInfo()[1]))


def emulators(host: Host) -> frozenset[str]:
    """The emulator binaries ``host``'s capabilities name (every guest arch and type)."""
    with calling(f"read the capabilities of {host.name}"):
        caps = ET.fromstring(host.conn.getCapabilities())
    return frozenset((e.text or "").strip() for e in caps.iterfind("guest/arch//emulator")
                     if (e.text or "").strip())


def cpu_runs(host: Host, cpu_xml: str, machine: str, virt_type: str) -> tuple[bool, str]:
    """Whether a guest CPU (its ``<cpu>`` XML) runs on ``host``'s hypervisor CPU."""
    try:
        result = host.conn.compareHypervisorCPU(None, "x86_64", machine, virt_type, cpu_xml, 0)
    except LibvirtError as err:
        return False, (err.get_error_message() or str(err)).splitlines()[0]
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return False, "the destination's CPU lacks features the guest CPU needs"
    return True, "identical" if result == libvirt.VIR_CPU_COMPARE_IDENTICAL else "superset"


def domains(host: Host) -> dict[str, str]:
    """Every domain's name and UUID on ``host``."""
    with calling(f"list the domains of {host.name}"):
        return {d.name(): d.UUIDString() for d in host.conn.listAllDomains(0)}


def pools(host: Host) -> list[PoolFacts]:
    found = []
    with calling(f"list the storage pools of {host.name}"):
        for pool in host.conn.listAllStoragePools(0):
            root = ET.fromstring(pool.XMLDesc(0))
            found.append(PoolFacts(pool.name(), root.findtext("target/path") or "",
                                   bool(pool.isActive()), root.get("type") or ""))
    return sorted(found, key=lambda p: p.name)


def networks(host: Host) -> dict[str, bool]:
    """Each virtual network's name and whether it is active."""
    with calling(f"list the networks of {host.name}"):
        return {n.name(): bool(n.isActive()) for n in host.conn.listAllNetworks(0)}


def interfaces(host: Host) -> set[str]:
    """The network interfaces (bridges among them) the host's libvirt sees."""
    found: set[str] = set()
    with calling(f"list the network interfaces of {host.name}"):
        for dev in host.conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET):
            name = ET.fromstring(dev.XMLDesc(0)).findtext("capability/interface")
            if name:
                found.add(name)
    return found


def bridges(host: Host) -> set[str]:
    """The bridges on ``host`` now, by name.

    Read from libvirt's interface driver, which looks at the host's interfaces at each
    call: the node-device list (``interfaces``) is what udev told libvirtd, and misses a
    bridge made after libvirtd started where udev's events do not reach it (a network
    namespace). A host without the interface driver answers with its node devices.
    """
    what = f"list the bridges of {host.name}"
    try:
        found = host.conn.listAllInterfaces(0)
    except LibvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise translate(err, what) from err
        return interfaces(host)
    names: set[str] = set()
    for iface in found:
        try:
            if ET.fromstring(iface.XMLDesc(0)).get("type") == "bridge":
                names.add(iface.name())
        except LibvirtError as err:  # gone since listed: not there
            if err.get_error_code() != libvirt.VIR_ERR_NO_INTERFACE:
                raise translate(err, what) from err
    return names


def volume_exists(host: Host, path: str) -> bool | None:
    """Whether a storage volume is at ``path`` on ``host``; None when no pool holds it
    (libvirt then cannot tell). Any other error is raised, translated: it is no answer."""
    try:
        host.conn.storageVolLookupByPath(path)
        return True
    except LibvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise translate(err, f"look for a volume at {path} on {host.name}") from err


def volume_backing(host: Host, path: str) -> str | None:
    """The backing file of the volume at ``path`` on ``host`` (as its pool read it at
    its last refresh); None when it has none or no pool holds it. Any other error is
    raised, translated: it says nothing about the backing file."""
    what = f"read the volume at {path} on {host.name}"
    try:
        xml = host.conn.storageVolLookupByPath(path).XMLDesc(0)
    except LibvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise translate(err, what) from err
    return ET.fromstring(xml).findtext("backingStore/path") or None


def disk_present(host: Host, path: str) -> bool | None:
    """Whether a file is at ``path`` on ``host`` now: True or False when an active pool
    there holds its directory (refreshed first: a pool lists what it saw at its last
    refresh, and another host may have made, or the host's mounts hidden, the file
    since); None when no active pool holds it, so libvirt cannot tell."""
    directory = path.rsplit("/", 1)[0].rstrip("/") or "/"
    holders = []
    for name in [p.name for p in pools(host)
                 if p.active and p.path and p.path.rstrip("/") == directory]:
        try:
            host.conn.storagePoolLookupByName(name).refresh(0)
            holders.append(name)
        except LibvirtError as err:  # stopped or gone since listed: it holds nothing
            if err.get_error_code() not in (libvirt.VIR_ERR_NO_STORAGE_POOL,
                                            libvirt.VIR_ERR_OPERATION_INVALID):
                raise translate(err, f"refresh the storage pool {name} of {host.name}") \
                    from err
    found = volume_exists(host, path)
    return False if found is None and holders else found


def _probe_xml(name: str) -> str:
    return (f"<volume><name>{name}</name><capacity unit='bytes'>0</capacity>"
            "<target><format type='raw'/></target></volume>")


def shared_storage(src: Host, dst: Host, pool_name: str, dst_pool: str | None = None,
                   ) -> StorageProbe:
    """Whether a volume made in ``pool_name`` on ``src`` is seen in the pool of that name
    (or ``dst_pool``) on ``dst``, refreshed: SHARED, the same storage; DISTINCT only when
    libvirt answers that no such volume is there; UNKNOWN, with the error, when any call
    fails (the probe cannot be made, the pool there is gone, its refresh or the lookup
    fails): an error is no evidence of other storage. The probe volume is always
    deleted."""
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    there = dst_pool or pool_name
    try:
        pool = src.conn.storagePoolLookupByName(pool_name)
        vol = pool.createXML(_probe_xml(name), 0)
    except LibvirtError as err:
        return _unknown(err, f"make a probe volume in pool {pool_name} on {src.name}")
    try:
        try:
            other = dst.conn.storagePoolLookupByName(there)
            other.refresh(0)  # a pool lists what it saw at its last refresh
        except LibvirtError as err:
            return _unknown(err, f"refresh the storage pool {there} of {dst.name}")
        try:
            other.storageVolLookupByName(name)
        except LibvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return StorageProbe(Storage.DISTINCT)
            return _unknown(err, f"look for the probe volume {name} in pool {there} on "
                            f"{dst.name}")
        return StorageProbe(Storage.SHARED)
    finally:
        try:
            vol.delete(0)
        except LibvirtError:
            pass  # a leftover probe is harmless and named as ours
        try:
            dst.conn.storagePoolLookupByName(there).refresh(0)
        except LibvirtError:
            pass


def _unknown(err: LibvirtError, what: str) -> StorageProbe:
    return StorageProbe(Storage.UNKNOWN, str(translate(err, what)))


def clock_offset(host: Host, pool_name: str) -> HostClockReading:
    """``host``'s clock against this machine's, from a probe volume's mtime."""
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    with calling(f"probe the clock of {host.name}"):
        pool = host.conn.storagePoolLookupByName(pool_name)
        t0 = time.time()
        vol = pool.createXML(_probe_xml(name), 0)
        t1 = time.time()
        try:
            root = ET.fromstring(vol.XMLDesc(0))
        finally:
            vol.delete(0)
    mtime = root.findtext("target/timestamps/mtime")
    if not mtime:
        raise errors.Unsupported(f"{host.name}'s pool {pool_name} gives no file times")
    return HostClockReading(float(mtime) - (t0 + t1) / 2, (t1 - t0) / 2,
                            f"a probe file's mtime in pool {pool_name}, against this "
                            "machine's clock")
