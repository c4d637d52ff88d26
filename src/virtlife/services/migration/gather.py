"""Gather what the pre-flight checks judge: the VM's facts from its XML and state, and
each host's from its libvirt (``hypervisor.hostfacts``).

Shared storage is proven, never assumed: for each disk in a storage pool that the
destination has under the same name and path, a probe volume made in the source's
pool must be seen in the destination's. The hosts' clocks are compared through a
probe volume's file time on each (both against this machine's clock). An unreachable
destination is a fact too (``reachable=False`` with the error), not an exception.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import replace

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor import hostfacts as hf
from virtlife.hypervisor.probe import identity
from virtlife.services.migration.checks import (
    Clock,
    Disk,
    DiskAtDestination,
    HostFacts,
    VMFacts,
    version_from_int,
)

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
        disks.append(Disk(target=target.get("dev", "?") if target is not None else "?",
                          path=path, device=d.get("device", "disk"), network=network,
                          pool=source.get("pool") if source is not None else None,
                          readonly=d.find("readonly") is not None,
                          shareable=d.find("shareable") is not None))
    nets = tuple(s.get("network", "") for s in root.findall("devices/interface/source")
                 if s.get("network"))
    bridges = tuple(s.get("bridge", "") for s in root.findall("devices/interface/source")
                    if s.get("bridge"))
    os_type = root.find("os/type")
    return VMFacts(name=guest.name, uuid=guest.uuid(), state=info.state,
                   memory_mib=info.max_memory_mib,
                   machine=os_type.get("machine", "") if os_type is not None else "",
                   virt_type=root.get("type", ""), persistent=info.persistent,
                   disks=tuple(disks), networks=nets, bridges=bridges)


def _host_facts(host: Host, cpu_xml: str, vm: VMFacts) -> HostFacts:
    facts = hf.hypervisor(host)
    host_uuid, virt_types = identity(host)
    cpu_ok, detail = hf.cpu_runs(host, cpu_xml, vm.machine, vm.virt_type or "qemu")
    return HostFacts(
        name=host.name, hypervisor=facts.hypervisor, host_uuid=host_uuid,
        virt_types=frozenset(virt_types),
        libvirt_version=version_from_int(facts.libvirt_version),
        qemu_version=version_from_int(facts.hypervisor_version),
        machine_types=facts.machine_types,
        cpu=detail if cpu_ok else "incompatible", cpu_detail=detail,
        free_memory_mib=facts.free_memory_mib, domains=hf.domains(host),
        pools={p.name: p.path for p in hf.pools(host) if p.active},
        networks=hf.networks(host), bridges=frozenset(hf.interfaces(host)))


def _pool_holding(path: str, pools: dict[str, str]) -> str | None:
    best = [(len(p), n) for n, p in pools.items()
            if p and os.path.dirname(path).rstrip("/") == p.rstrip("/")]
    return max(best)[1] if best else None


def _clock(src: Host, dst: Host, src_pools: dict[str, str],
           dst_pools: dict[str, str]) -> Clock:
    try:
        a = hf.clock_offset(src, next(iter(sorted(src_pools))))
        b = hf.clock_offset(dst, next(iter(sorted(dst_pools))))
    except (StopIteration, errors.VirtlifeError) as err:
        why = "no active storage pool to probe" if isinstance(err, StopIteration) else str(err)
        return Clock(None, f"unknown: {why}")
    offset_ms = (b.offset_s - a.offset_s) * 1000
    return Clock(offset_ms, f"{b.how.replace(' against this machine', '')} on each host, "
                            f"both against this machine's clock (±"
                            f"{(a.uncertainty_s + b.uncertainty_s) * 1000:.0f} ms)")


def gather(guest: Guest, dst: Host | None, dst_name: str,
           dst_error: str = "") -> tuple[VMFacts, HostFacts, HostFacts]:
    """The VM's facts and both hosts' (``dst`` None: it could not be reached)."""
    vm = vm_facts(guest)
    live = ET.fromstring(guest.xml())
    cpu = live.find("cpu")
    cpu_xml = ET.tostring(cpu, encoding="unicode") if cpu is not None and len(cpu) else \
        DEFAULT_CPU
    src = _host_facts(guest.host, cpu_xml, vm)
    if dst is None:
        return vm, src, HostFacts(name=dst_name, reachable=False, error=dst_error)
    try:
        at = _host_facts(dst, cpu_xml, vm)
    except errors.HostUnreachable as err:
        return vm, src, HostFacts(name=dst_name, reachable=False, error=str(err))
    disks: dict[str, DiskAtDestination] = {}
    for disk in vm.disks:
        if disk.path is None:
            continue
        present = hf.volume_exists(dst, disk.path)
        pool = _pool_holding(disk.path, dict(src.pools))
        shared = None
        if pool is not None and at.pools.get(pool) == src.pools.get(pool) and \
                hf.shared_storage(guest.host, dst, pool):
            shared = (f"a probe volume made in pool {pool} on {src.name} was seen in "
                      f"pool {pool} on {dst.name}")
            present = True
        disks[disk.path] = DiskAtDestination(present=bool(present), shared=shared)
    clock = _clock(guest.host, dst, dict(src.pools), dict(at.pools))
    return vm, src, replace(at, disks=disks, clock=clock)
