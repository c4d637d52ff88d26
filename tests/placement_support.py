"""Facts for placement tests (``test_placement``, ``test_balance``): VMs and hosts that
pass every pre-flight check, and the pair facts between them."""

from __future__ import annotations

from dataclasses import replace

from virtlife.services.migration.checks import (
    CheckOptions,
    Clock,
    Disk,
    DiskAtDestination,
    HostFacts,
    MigrationKind,
    VMFacts,
)
from virtlife.services.placement import PairFacts, VMToPlace
from virtlife.states import classify

IMAGE = "/srv/lab/images/{}.qcow2"
SHARED = "lab: a probe volume was seen at both ends"
CPU = "qemu pc-i440fx-7.2 qemu64"


def vm_facts(name: str, memory_mib: int = 512, *, running: bool = True) -> VMFacts:
    return VMFacts(name=name, uuid=f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
                   state=classify(1, 1) if running else classify(5, 1),
                   memory_mib=memory_mib, machine="pc-i440fx-7.2", virt_type="qemu",
                   disks=(Disk("vda", IMAGE.format(name)),), networks=("default",))


def host_facts(name: str, vms: tuple[str, ...] = ()) -> HostFacts:
    """A host that passes every check for the VMs named, with nothing unknown."""
    return HostFacts(
        name=name, hypervisor="QEMU", host_uuid=f"5a5a0000-0000-0000-0000-{name:>012}",
        virt_types=frozenset({"qemu"}), libvirt_version=(9, 0, 0), qemu_version=(7, 2, 22),
        machine_types=frozenset({"pc-i440fx-7.2"}), free_memory_mib=4096,
        disks={IMAGE.format(v): DiskAtDestination(True, SHARED) for v in vms},
        pools={"lab": "/srv/lab/images"}, networks={"default": True},
        clock=Clock(3.0, "a probe volume's mtime"), userfaultfd=True)


def pairs_for(hosts: list[str], vms: tuple[str, ...], **dst: object) -> dict[
        tuple[str, str], PairFacts]:
    return {(a, b): PairFacts(host_facts(a), replace(host_facts(b, vms), **dst),
                              {CPU: ("identical", "")})
            for a in hosts for b in hosts if a != b}


def to_place(name: str, memory_mib: int = 512, source: str = "a", *,
             offline: bool = False) -> VMToPlace:
    kind = MigrationKind.OFFLINE if offline else MigrationKind.LIVE
    return VMToPlace(vm_facts(name, memory_mib, running=not offline), source,
                     CheckOptions(kind=kind), cpu=CPU)
