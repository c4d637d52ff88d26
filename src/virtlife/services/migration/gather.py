"""Gather what the pre-flight checks judge: the VM's facts from its XML and state, and
each host's from its libvirt (``hypervisor.hostfacts``).

Shared storage is proven, never assumed, and so is its opposite: for each disk whose
directory a pool holds on both hosts, a probe volume made in the source's pool must be
seen in the destination's (the same storage) or not (other storage: what lets
``--copy-storage`` write over a file there); a probe that an error stopped proves
neither, and the disk's storage is unknown; the disk is looked for in the
destination's pools (refreshed), or is unknown where none holds its directory. The
hosts' clocks are compared through a probe volume's file time on each (both against
this machine's clock), in the pools of the VM's disks first. An unreachable
destination is a fact too (``reachable=False`` with the error), not an exception.

For placement (``services.placement``), ``gather_pairs`` asks each (source,
destination) pair once for every VM of the source, not once per VM: the hosts' own
facts, one CPU comparison per distinct guest CPU, one storage probe per pair of pools,
one clock measurement; ``host_state`` reads a host's memory and VMs.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor import hostfacts as hf
from virtlife.hypervisor.probe import identity
from virtlife.services.migration.checks import (
    CheckOptions,
    Clock,
    Disk,
    DiskAtDestination,
    HostFacts,
    MigrationKind,
    VMFacts,
    version_from_int,
)
from virtlife.services.placement import HostState, PairFacts, VMToPlace

DEFAULT_CPU = "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>"


def vm_facts(guest: Guest) -> VMFacts:
    """The VM as the checks see it: state, memory, machine, disks, networks."""
    root = ET.fromstring(guest.xml())
    info = guest.info()
    disks = []
    for d in root.findall("devices/disk"):
        source = d.find("source")
        target = d.find("target")
        path = None if source is None else (source.get("file") or source.get("dev"))
        network = None
        if d.get("type") == "network" and source is not None:
            network = f"{source.get('protocol', '')} {source.get('name', '')}".strip()
        backing = d.find("backingStore/source")
        disks.append(Disk(target=target.get("dev", "?") if target is not None else "?",
                          path=path, device=d.get("device", "disk"), network=network,
                          pool=source.get("pool") if source is not None else None,
                          readonly=d.find("readonly") is not None,
                          shareable=d.find("shareable") is not None,
                          backing=None if backing is None else backing.get("file")))
    nets, bridges = nic_sources(root)
    os_type = root.find("os/type")
    return VMFacts(name=guest.name, uuid=guest.uuid(), state=info.state,
                   memory_mib=info.max_memory_mib,
                   machine=os_type.get("machine", "") if os_type is not None else "",
                   virt_type=root.get("type", ""), persistent=info.persistent,
                   disks=tuple(disks), networks=nets, bridges=bridges)


def nic_sources(root: ET.Element) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The virtual networks and the host bridges the VM's interfaces use, by each
    interface's type: a running VM's type='network' interface names its network's
    bridge too (``<source network='lan' bridge='virbr1'/>``), which is the source's own
    and need not exist under that name at the destination."""
    found: dict[str, list[str]] = {"network": [], "bridge": []}
    for iface in root.findall("devices/interface"):
        kind, source = iface.get("type", ""), iface.find("source")
        if kind in found and source is not None and source.get(kind):
            found[kind].append(source.get(kind, ""))
    return tuple(found["network"]), tuple(found["bridge"])


def cpu_answer(host: Host, cpu_xml: str, vm: VMFacts) -> tuple[str, str]:
    """``HostFacts.cpu`` and ``cpu_detail`` for a guest CPU on ``host``."""
    cpu_ok, detail = hf.cpu_runs(host, cpu_xml, vm.machine, vm.virt_type or "qemu")
    return (detail if cpu_ok else "incompatible"), detail


def host_only_facts(host: Host) -> HostFacts:
    """What the checks read about ``host`` whatever the VM: all but the CPU answer, the
    disks and the clock."""
    facts = hf.hypervisor(host)
    host_uuid, virt_types = identity(host)
    pools = hf.pools(host)
    return HostFacts(
        name=host.name, hypervisor=facts.hypervisor, host_uuid=host_uuid,
        virt_types=frozenset(virt_types),
        libvirt_version=version_from_int(facts.libvirt_version),
        qemu_version=version_from_int(facts.hypervisor_version),
        machine_types=facts.machine_types,
        free_memory_mib=facts.free_memory_mib, total_memory_mib=facts.total_memory_mib,
        domains=hf.domains(host),
        pools={p.name: p.path for p in pools if p.active},
        stopped_pools=frozenset(p.name for p in pools if not p.active),
        networks=hf.networks(host), bridges=frozenset(hf.bridges(host)))


def _host_facts(host: Host, cpu_xml: str, vm: VMFacts) -> HostFacts:
    cpu, detail = cpu_answer(host, cpu_xml, vm)
    return replace(host_only_facts(host), cpu=cpu, cpu_detail=detail)


def cpu_xml_of(guest: Guest) -> str:
    """The guest's ``<cpu>`` definition as the CPU comparison takes it."""
    cpu = ET.fromstring(guest.xml()).find("cpu")
    return ET.tostring(cpu, encoding="unicode") if cpu is not None and len(cpu) else \
        DEFAULT_CPU


def _pool_holding(path: str, pools: dict[str, str]) -> str | None:
    best = [(len(p), n) for n, p in pools.items()
            if p and os.path.dirname(path).rstrip("/") == p.rstrip("/")]
    return max(best)[1] if best else None


def _reading(host: Host, pools: list[str]) -> tuple[hf.HostClockReading | None, str]:
    """The first clock reading one of ``pools`` gives on ``host``, with its pool; or None
    and why none did."""
    if not pools:
        return None, f"{host.name} has no active storage pool to make a probe volume in"
    failures = []
    for pool in pools:
        try:
            return hf.clock_offset(host, pool), pool
        except errors.VirtlifeError as err:
            failures.append(f"pool {pool}: {err}")
    return None, f"no probe volume could be made on {host.name} ({'; '.join(failures)})"


def _clock(src: Host, dst: Host, src_pools: dict[str, str], dst_pools: dict[str, str],
           prefer: tuple[str, ...] = ()) -> Clock:
    """The destination's clock against the source's, both read through a probe volume's
    mtime against this machine's clock; the pools of the VM's disks are tried first."""
    def order(pools: dict[str, str]) -> list[str]:
        return [p for p in prefer if p in pools] + sorted(set(pools) - set(prefer))

    a, a_pool = _reading(src, order(src_pools))
    b, b_pool = _reading(dst, order(dst_pools)) if a is not None else (None, "")
    if a is None or b is None:
        return Clock(None, f"not measured: {a_pool if a is None else b_pool}")
    pools = f"pool {a_pool} on {src.name} and {b_pool} on {dst.name}" if a_pool != b_pool \
        else f"pool {a_pool} on each host"
    return Clock((b.offset_s - a.offset_s) * 1000,
                 f"a probe volume's mtime in {pools}, each against this machine's clock "
                 f"(±{(a.uncertainty_s + b.uncertainty_s) * 1000:.0f} ms)")


def _probed(src: Host, dst: Host, path: str, pool: str, there: str,
            probe: hf.StorageProbe | None = None) -> DiskAtDestination:
    """The disk at ``path`` as the storage probe between ``pool`` on ``src`` and
    ``there`` on ``dst`` finds it (``probe``: one made already for these two pools): the
    same storage, other storage, or unknown (an error kept the probe from telling:
    neither proof is given)."""
    probe = probe or hf.shared_storage(src, dst, pool, there)
    made = f"a probe volume made in pool {pool} on {src.name}"
    if probe.answer is hf.Storage.SHARED:
        return DiskAtDestination(present=True,
                                 shared=f"{made} was seen in pool {there} on {dst.name}")
    if probe.answer is hf.Storage.DISTINCT:
        return DiskAtDestination(present=hf.disk_present(dst, path),
                                 distinct=f"{made} was not seen in pool {there} on "
                                 f"{dst.name}",
                                 backing=hf.volume_backing(dst, path))
    return DiskAtDestination(present=hf.disk_present(dst, path),
                             unknown=f"the storage probe between pool {pool} on "
                             f"{src.name} and pool {there} on {dst.name} could not tell "
                             f"({probe.why})")


def gather(guest: Guest, dst: Host | None, dst_name: str,
           dst_error: str = "") -> tuple[VMFacts, HostFacts, HostFacts]:
    """The VM's facts and both hosts' (``dst`` None: it could not be reached)."""
    vm = vm_facts(guest)
    cpu_xml = cpu_xml_of(guest)
    src = _host_facts(guest.host, cpu_xml, vm)
    if dst is None:
        return vm, src, HostFacts(name=dst_name, reachable=False, error=dst_error)
    try:
        at = _host_facts(dst, cpu_xml, vm)
    except errors.HostUnreachable as err:
        return vm, src, HostFacts(name=dst_name, reachable=False, error=str(err))
    disks: dict[str, DiskAtDestination] = {}
    used: list[str] = []  # the source pools of the VM's disks
    for disk in vm.disks:
        if disk.path is None:
            continue
        pool = _pool_holding(disk.path, dict(src.pools))
        if pool is not None:
            used.append(pool)
        there = _pool_holding(disk.path, dict(at.pools))
        if pool is None or there is None:  # no probe possible: unproven either way
            disks[disk.path] = DiskAtDestination(present=hf.disk_present(dst, disk.path))
            continue
        disks[disk.path] = _probed(guest.host, dst, disk.path, pool, there)
    clock = _clock(guest.host, dst, dict(src.pools), dict(at.pools), tuple(used))
    return vm, src, replace(at, disks=disks, clock=clock)


# -- for placement: once per host pair ---------------------------------------------------

def default_options(vm: VMFacts) -> CheckOptions:
    """How an evacuation moves a VM: live when it runs (or is paused), else offline."""
    up = vm.state.state.is_active
    return CheckOptions(kind=MigrationKind.LIVE if up else MigrationKind.OFFLINE)


@dataclass(frozen=True)
class Gathered:
    """The VMs of one source as placement takes them, the pre-flight facts of each pair
    (source, destination), and the destinations whose facts an error kept back (by name:
    the error), for which there is no pair: placement calls them unknown."""

    vms: tuple[VMToPlace, ...]
    pairs: dict[tuple[str, str], PairFacts]
    failed: Mapping[str, str] = field(default_factory=dict)


def _cpu_key(vm: VMFacts, cpu_xml: str) -> str:
    return f"{vm.virt_type} {vm.machine} {vm.arch}\n{cpu_xml}"


def gather_pairs(source: Host, guests: Sequence[Guest],
                 destinations: Mapping[str, Host | None],
                 unreachable: Mapping[str, str] | None = None, *,
                 options: Callable[[VMFacts], CheckOptions] = default_options) -> Gathered:
    """The facts placement judges for ``guests`` (all on ``source``) against each of
    ``destinations`` (None: it could not be reached, ``unreachable`` says why)."""
    vms: list[VMToPlace] = []
    cpus: dict[str, tuple[str, VMFacts]] = {}  # one comparison per distinct guest CPU
    for guest in guests:
        facts, cpu_xml = vm_facts(guest), cpu_xml_of(guest)
        key = _cpu_key(facts, cpu_xml)
        cpus.setdefault(key, (cpu_xml, facts))
        vms.append(VMToPlace(facts, source.name, options(facts), cpu=key))
    src = host_only_facts(source)
    pairs: dict[tuple[str, str], PairFacts] = {}
    failed: dict[str, str] = {}
    for name, dst in sorted(destinations.items()):
        if name == source.name:
            continue
        if dst is None:
            why = (unreachable or {}).get(name, "")
            pairs[source.name, name] = PairFacts(src, HostFacts(name=name, reachable=False,
                                                                error=why))
            continue
        try:
            pairs[source.name, name] = _pair(source, src, dst, vms, cpus)
        except errors.HostUnreachable as err:
            pairs[source.name, name] = PairFacts(src, HostFacts(name=name, reachable=False,
                                                                error=str(err)))
        except errors.VirtlifeError as err:  # unknown, not a finding: no pair at all
            failed[name] = str(err)
    return Gathered(tuple(vms), pairs, failed)


def _pair(source: Host, src: HostFacts, dst: Host, vms: Sequence[VMToPlace],
          cpus: Mapping[str, tuple[str, VMFacts]]) -> PairFacts:
    at = host_only_facts(dst)
    answers = {key: cpu_answer(dst, xml, vm) for key, (xml, vm) in cpus.items()}
    disks: dict[str, DiskAtDestination] = {}
    probes: dict[tuple[str, str], hf.StorageProbe] = {}  # one per pair of pools
    used: list[str] = []
    for vm in vms:
        for disk in vm.facts.disks:
            path = disk.path
            if path is None or path in disks:
                continue
            pool = _pool_holding(path, dict(src.pools))
            if pool is not None and pool not in used:
                used.append(pool)
            there = _pool_holding(path, dict(at.pools))
            if pool is None or there is None:
                disks[path] = DiskAtDestination(present=hf.disk_present(dst, path))
                continue
            if (pool, there) not in probes:
                probes[pool, there] = hf.shared_storage(source, dst, pool, there)
            disks[path] = _probed(source, dst, path, pool, there, probes[pool, there])
    clock = _clock(source, dst, dict(src.pools), dict(at.pools), tuple(used))
    return PairFacts(src, replace(at, disks=disks, clock=clock), answers)


def host_state(name: str, host: Host | None, error: str = "", *, active: bool = True,
               maintenance: bool = False, outgoing: int = 0, incoming: int = 0,
               ) -> HostState:
    """``host`` as placement sees it: its memory and its domains (every defined one)
    read now; None (or an error on the way) leaves it unreachable or unknown."""
    def unknown(reachable: bool | None, why: str) -> HostState:
        return HostState(name, None, None, active=active, maintenance=maintenance,
                         reachable=reachable, error=why, outgoing=outgoing,
                         incoming=incoming)

    if host is None:
        return unknown(False, error)
    try:
        facts, domains = hf.hypervisor(host), hf.domains(host)
    except errors.HostUnreachable as err:
        return unknown(False, str(err))
    except errors.VirtlifeError as err:
        return unknown(None, str(err))
    return HostState(name, facts.total_memory_mib, facts.free_memory_mib, vms=len(domains),
                     active=active, maintenance=maintenance, outgoing=outgoing,
                     incoming=incoming)
