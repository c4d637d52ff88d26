"""The pre-flight check report (``migrate --check``), as pure functions over facts.

The facts (``VMFacts``, ``HostFacts`` for the source and the destination, with the
destination's answers about the VM: its disk paths, networks, CPU...) are gathered
elsewhere, by calls to both hosts; ``run_checks`` only reads them and returns a
``Report``: one ``Check`` line each, pass, warn or fail, with the reason and the fix.
``Report.ok`` (no fail) is what lets a migration begin; ``Report.allows_unsafe`` (every
disk proven to be the same storage at both ends) is what lets it pass libvirt's unsafe
flag, and ``unsafe_reason`` names the checks that proved it.

A fact nobody could gather is ``None``: its check warns "unknown", saying how it was
tried, and never passes; where the unknown is whether a disk is the same storage at
both ends, it fails: neither ``--copy-storage`` nor libvirt's unsafe flag is allowed on
a guess. Nothing here calls libvirt or any host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from virtlife.services.migration.policy import PostcopyMode, compressed_warning
from virtlife.states import SaveKind, StateInfo, VMState

DEFAULT_CLOCK_BOUND_MS = 500.0
MEMORY_HEADROOM_MIB = 256  # QEMU's own overhead and the destination's other needs
CPU_OK = ("identical", "superset")  # virCPUCompareResult words that let the guest run


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class MigrationKind(StrEnum):
    LIVE = "live"  # the VM keeps running while its memory moves
    OFFLINE = "offline"  # a shut-off VM: only the definition moves (--offline)
    SUSPENDED = "suspended"  # a running VM paused for the whole copy (--suspended)


class CopyStorage(StrEnum):
    ALL = "all"  # every disk copied (--copy-storage all)
    INC = "inc"  # only the top image; the backing files must be at the destination


# -- facts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Disk:
    """One disk of the VM, from its definition."""

    target: str  # vda
    path: str | None  # the file or block device; None for a network disk or empty CD-ROM
    device: str = "disk"  # disk | cdrom | floppy | lun
    network: str | None = None  # "rbd pool/image", "nbd host:port"... for network disks
    pool: str | None = None  # the pool of a type='volume' disk
    readonly: bool = False
    shareable: bool = False
    backing: str | None = None  # the image's backing file, from the live definition

    @property
    def needs_shared_storage(self) -> bool:
        """What libvirt's own safety check looks at: not read-only, not shareable,
        not an empty drive."""
        return not (self.readonly or self.shareable or (self.path is None and not self.network))


@dataclass(frozen=True)
class VMFacts:
    name: str
    uuid: str
    state: StateInfo
    memory_mib: int  # the maximum memory: what the destination must hold
    machine: str  # the canonical machine type of the running VM (pc-i440fx-7.2), or defined
    virt_type: str  # libvirt's domain type: kvm or qemu (TCG)
    arch: str = "x86_64"
    persistent: bool = True
    disks: tuple[Disk, ...] = ()
    networks: tuple[str, ...] = ()  # <interface type='network'> sources
    bridges: tuple[str, ...] = ()  # <interface type='bridge'> sources


@dataclass(frozen=True)
class Clock:
    """A host's clock against the other's: ``offset_ms`` None when it could not be
    measured; ``how`` says how it was (or why not)."""

    offset_ms: float | None
    how: str


@dataclass(frozen=True)
class DiskAtDestination:
    """What the destination says about one disk path of the VM: ``present`` None when
    it cannot tell (no active storage pool there holds the disk's directory). At most
    one of ``shared``, ``distinct`` and ``unknown`` is set: none when no probe could be
    made (no pool holds the directory at one end)."""

    present: bool | None
    shared: str | None = None  # the evidence that it is the same storage, None if unproven
    distinct: str | None = None  # the evidence that it is other storage, None if unproven
    backing: str | None = None  # the backing file of the volume there, when a pool knows
    unknown: str | None = None  # why the storage probe could not tell (an error on the way)


@dataclass(frozen=True)
class HostFacts:
    """One host as the checks need it. Fields about the VM's needs are the
    destination's answers; on the source only the identity and versions are read."""

    name: str
    reachable: bool = True
    error: str = ""  # why it could not be reached
    hypervisor: str = ""  # getType(): "QEMU"
    host_uuid: str = ""
    virt_types: frozenset[str] = frozenset()  # domain types offered for the VM's arch
    libvirt_version: tuple[int, int, int] | None = None
    qemu_version: tuple[int, int, int] | None = None
    machine_types: frozenset[str] = frozenset()  # canonical names and aliases
    cpu: str | None = None  # compareHypervisorCPU of the guest CPU: "identical",
    cpu_detail: str = ""  # "superset", "incompatible"; None with cpu_detail saying why
    free_memory_mib: int | None = None
    total_memory_mib: int | None = None  # all the host has: what a VM can ever get there
    domains: Mapping[str, str] = field(default_factory=dict)  # name -> uuid, every domain
    disks: Mapping[str, DiskAtDestination] = field(default_factory=dict)  # by path
    pools: Mapping[str, str] = field(default_factory=dict)  # name -> target path, active
    stopped_pools: frozenset[str] = frozenset()  # defined, not active
    networks: Mapping[str, bool] = field(default_factory=dict)  # name -> active
    bridges: frozenset[str] = frozenset()
    clock: Clock | None = None  # against the other host
    userfaultfd: bool | None = None  # post-copy possible (vm.unprivileged_userfaultfd)


@dataclass(frozen=True)
class CheckOptions:
    kind: MigrationKind = MigrationKind.LIVE
    copy_storage: CopyStorage | None = None
    shutdown_first: bool = False  # --shutdown-first with --offline
    clock_bound_ms: float = DEFAULT_CLOCK_BOUND_MS
    postcopy: PostcopyMode = PostcopyMode.AUTO
    compressed: bool = False


# -- the report ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    reason: str
    fix: str = ""
    unknown: bool = False  # a warning because a fact could not be gathered, not a finding

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status.value, "name": self.name, "reason": self.reason,
                "fix": self.fix}


@dataclass(frozen=True)
class Report:
    vm: str
    source: str
    destination: str
    kind: MigrationKind
    checks: tuple[Check, ...]
    allows_unsafe: bool = False  # every disk that needs it is proven shared
    unsafe_reason: str = ""  # the checks that proved it, or why not

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.FAIL)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.WARN)

    @property
    def unknowns(self) -> tuple[Check, ...]:
        """The warnings that say a fact is unknown: a migration may go on past them, but
        nothing that chooses a host (``services.placement``) takes one as a yes."""
        return tuple(c for c in self.checks if c.unknown)

    def as_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "source": self.source, "destination": self.destination,
                "kind": self.kind.value, "ok": self.ok, "allows_unsafe": self.allows_unsafe,
                "unsafe_reason": self.unsafe_reason,
                "checks": [c.as_dict() for c in self.checks]}

    def render(self) -> str:
        """A plain-text table: status, check, reason, and the fix under a failing or
        warning line; a last line with the verdict."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"{self.kind.value} migration of {self.vm}: {self.source} → "
                 f"{self.destination}"]
        for c in self.checks:
            lines.append(f"  {c.status.value:<4}  {c.name:<{width}}  {c.reason}")
            if c.fix and c.status is not Status.PASS:
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
        fails, warns = len(self.failures), len(self.warnings)
        verdict = (f"can migrate ({warns} warning{'s' * (warns != 1)})" if self.ok
                   else f"cannot migrate: {fails} check{'s' * (fails != 1)} failed")
        lines.append(verdict)
        return "\n".join(lines)


def _ok(name: str, reason: str) -> Check:
    return Check(Status.PASS, name, reason)


def _warn(name: str, reason: str, fix: str) -> Check:
    return Check(Status.WARN, name, reason, fix)


def _unknown(name: str, reason: str, fix: str) -> Check:
    return Check(Status.WARN, name, reason, fix, unknown=True)


def _fail(name: str, reason: str, fix: str) -> Check:
    return Check(Status.FAIL, name, reason, fix)


def version_from_int(number: int) -> tuple[int, int, int]:
    """libvirt's version integers (getLibVersion, getVersion): 9000000 -> (9, 0, 0)."""
    return number // 1_000_000, number // 1000 % 1000, number % 1000


def _v(version: tuple[int, int, int] | None) -> str:
    return ".".join(map(str, version)) if version else "unknown"


def _join(names: Iterable[str]) -> str:
    return ", ".join(names)


# -- the checks, one function each ----------------------------------------------------------

def check_reachable(src: HostFacts, dst: HostFacts) -> Check:
    name = "destination reachable"
    if not dst.reachable:
        return _fail(name, f"cannot reach {dst.name}: {dst.error or 'no answer'}; the other "
                     "checks need it", f"check that libvirtd runs on {dst.name} and that "
                     f"this machine reaches it (`virtlife host list`)")
    return _ok(name, f"{dst.name} answers")


def check_hypervisor(vm: VMFacts, src: HostFacts, dst: HostFacts) -> Check:
    name = "same hypervisor"
    if src.host_uuid and src.host_uuid == dst.host_uuid:
        return _fail(name, f"{src.name} and {dst.name} are the same host (host UUID "
                     f"{dst.host_uuid})", "choose another host; each libvirtd needs its "
                     "own host_uuid in libvirtd.conf")
    if src.hypervisor and dst.hypervisor and src.hypervisor != dst.hypervisor:
        return _fail(name, f"{src.name} runs {src.hypervisor}, {dst.name} runs "
                     f"{dst.hypervisor}", "migrate between hosts of the same hypervisor")
    if not dst.hypervisor:
        return _unknown(name, f"{dst.name} did not say its hypervisor",
                     f"check that {dst.name} runs the same hypervisor as {src.name}")
    if vm.virt_type not in dst.virt_types:
        offered = _join(sorted(dst.virt_types)) or "none"
        fix = ("enable KVM on the destination, or run the VM under TCG (type qemu)"
               if vm.virt_type == "kvm" else "install QEMU for this architecture there")
        return _fail(name, f"the VM is a {vm.virt_type} {vm.arch} domain; {dst.name} offers "
                     f"{offered} for {vm.arch}", fix)
    return _ok(name, f"{dst.hypervisor} on both, {vm.virt_type} offered on {dst.name}")


def check_versions(src: HostFacts, dst: HostFacts) -> Check:
    name = "libvirt and QEMU versions"
    found = (f"libvirt {_v(src.libvirt_version)} → {_v(dst.libvirt_version)}, "
             f"QEMU {_v(src.qemu_version)} → {_v(dst.qemu_version)}")
    if None in (src.libvirt_version, dst.libvirt_version, src.qemu_version, dst.qemu_version):
        return _unknown(name, f"{found}: not every version is known",
                     "check that both hosts run compatible libvirt and QEMU")
    assert src.qemu_version and dst.qemu_version and src.libvirt_version
    assert dst.libvirt_version
    if dst.qemu_version < src.qemu_version or dst.libvirt_version < src.libvirt_version:
        return _warn(name, f"{found}: the destination is older; it works only while it "
                     "knows the VM's machine type and devices",
                     "migrate to a host with the same or newer versions where you can")
    return _ok(name, f"{found}: same or newer at the destination")


def check_machine(vm: VMFacts, dst: HostFacts) -> Check:
    name = "machine type"
    if not dst.machine_types:
        return _unknown(name, f"{dst.name} did not list its machine types; {vm.machine} "
                     "not checked", f"check `virsh capabilities` on {dst.name} lists "
                     f"{vm.machine}")
    if vm.machine not in dst.machine_types:
        return _fail(name, f"{dst.name} does not support machine type {vm.machine}",
                     f"define the VM with a machine type both hosts support (the "
                     f"destination's QEMU {_v(dst.qemu_version)} lists its own), then "
                     "restart it")
    return _ok(name, f"{vm.machine} supported on {dst.name}")


def check_cpu(vm: VMFacts, dst: HostFacts) -> Check:
    name = "guest CPU"
    if dst.cpu is None:
        return _unknown(name, f"not compared with {dst.name}'s CPU: "
                     f"{dst.cpu_detail or 'no answer'}",
                     "compare by hand: `virsh hypervisor-cpu-compare` on the destination")
    if dst.cpu in CPU_OK:
        return _ok(name, f"the guest CPU runs on {dst.name} ({dst.cpu})")
    detail = f": {dst.cpu_detail}" if dst.cpu_detail else ""
    return _fail(name, f"the guest CPU does not run on {dst.name} ({dst.cpu}){detail}",
                 "give the VM a CPU model both hosts have (a named model, not host-passthrough)")


def check_memory(vm: VMFacts, dst: HostFacts, kind: MigrationKind) -> Check:
    name = "free memory"
    need = vm.memory_mib
    if kind is MigrationKind.OFFLINE:
        return _offline_memory(vm, dst)
    if dst.free_memory_mib is None:
        return _unknown(name, f"{dst.name} did not say its free memory; the VM needs "
                     f"{need} MiB", f"check `virsh freecell` on {dst.name}")
    free = dst.free_memory_mib
    if free < need:
        return _fail(name, f"{dst.name} has {free} MiB free; the VM needs {need} MiB",
                     f"free memory on {dst.name} or choose another host")
    if free < need + MEMORY_HEADROOM_MIB:
        return _warn(name, f"{dst.name} has {free} MiB free, the VM needs {need} MiB: less "
                     f"than {MEMORY_HEADROOM_MIB} MiB would be left for QEMU and the host",
                     f"free memory on {dst.name}")
    return _ok(name, f"{free} MiB free on {dst.name}, the VM needs {need} MiB")


def _offline_memory(vm: VMFacts, dst: HostFacts) -> Check:
    """A shut-off VM moves without memory, but is moved to be started there: one that
    could never start (more than the host has in all) fails; one that could not start
    now (more than is free) warns."""
    name, need = "free memory", vm.memory_mib
    needs = f"it needs {need} MiB when it starts on {dst.name}"
    total, free = dst.total_memory_mib, dst.free_memory_mib
    if total is not None and total < need:
        return _fail(name, f"{needs}, which has {total} MiB of memory in all: it could "
                     "never start there", f"lower its memory first (`virsh setmaxmem "
                     f"{vm.name} SIZE --config`), or choose a host with more memory")
    if free is not None and free < need:
        return _warn(name, f"not needed to move a shut-off VM, but {needs}, which has "
                     f"{free} MiB free now", f"free memory on {dst.name} before you start "
                     "it there")
    return _ok(name, f"not needed to move a shut-off VM; {needs}")


def check_name_free(vm: VMFacts, dst: HostFacts) -> Check:
    name = "name and UUID free"
    same_uuid = [n for n, u in dst.domains.items() if u.lower() == vm.uuid.lower()]
    if vm.name in dst.domains and dst.domains[vm.name].lower() == vm.uuid.lower():
        return _fail(name, f"{dst.name} already has {vm.name} with the same UUID (a copy "
                     "left by an earlier move?)",
                     f"check which copy is current; remove the stale one with "
                     f"`virtlife undefine {dst.name}/{vm.name}`")
    if vm.name in dst.domains:
        return _fail(name, f"{dst.name} has another VM named {vm.name} (UUID "
                     f"{dst.domains[vm.name]})", f"rename one of them, or remove the "
                     f"other from {dst.name}")
    if same_uuid:
        return _fail(name, f"{dst.name} has a VM with {vm.name}'s UUID {vm.uuid}, named "
                     f"{same_uuid[0]}", f"remove or rename {same_uuid[0]} on {dst.name}")
    return _ok(name, f"no VM named {vm.name} or with its UUID on {dst.name}")


def _copied(name: str, disk: Disk, at: DiskAtDestination, dst: HostFacts,
            options: CheckOptions) -> Check:
    """A disk ``--copy-storage`` copies: libvirt writes into an existing file at the
    same path, or creates a missing one in the destination pool whose directory holds
    it (only with ``all``: ``inc`` cannot create it, and copies only the top image, so
    the file there must be an overlay over the same backing file)."""
    path = disk.path or ""
    how = f"--copy-storage {options.copy_storage}"
    if at.shared:
        return _fail(name, f"{path} is the same storage at both ends ({at.shared}): "
                     "copying it would write over the disk the VM is using",
                     "drop --copy-storage: the disk is shared")
    if at.unknown:
        return _fail(name, f"{path}: {at.unknown}, so nothing tells whether the file at "
                     f"that path on {dst.name} is the very disk the VM uses: {how} could "
                     "write over it",
                     "run the check again; if it still cannot tell, find out why (the "
                     "error above) before copying, or drop --copy-storage if the storage "
                     "is shared")
    directory = path.rsplit("/", 1)[0] or "/"
    inc = options.copy_storage is CopyStorage.INC
    if at.present and at.distinct and inc and (disk.backing is None
                                               or at.backing != disk.backing):
        has = f"its backing file is {at.backing}" if at.backing else "it has no backing file"
        why = (f"{path} has no backing file: {how} is for an overlay over a backing file "
               "both hosts have" if disk.backing is None else
               f"{how} copies only the top image: {path} on {dst.name} must be an "
               f"overlay over {disk.backing}, and {has}")
        return _fail(name, why, f"use --copy-storage all, or create {path} on {dst.name} "
                     "over the same backing file first"
                     + (" (`qemu-img create -f qcow2 -b BACKING -F FORMAT PATH`, then "
                        "pool-refresh)" if disk.backing else ""))
    if at.present and at.distinct:
        return _warn(name, f"{path}: {how} writes over the file already at that path on "
                     f"{dst.name} ({at.distinct})",
                     f"make sure nothing on {dst.name} needs that file")
    if at.present:
        return _fail(name, f"{path} is on {dst.name} already, and nothing proves it is not "
                     f"the very file the VM uses (storage both hosts mount): {how} would "
                     "then copy the disk onto itself",
                     f"define a dir pool at {directory} on the source too, so the check can "
                     f"tell; if it is shared storage, drop --copy-storage")
    if options.copy_storage is CopyStorage.INC:
        where = f"is not on {dst.name}" if at.present is False else \
            f"is not known to be on {dst.name} (no active pool there holds {directory})"
        return _fail(name, f"{path} {where}, and {how} cannot create it",
                     f"create it on {dst.name} over the same backing files first, or use "
                     "--copy-storage all")
    pool = next((n for n, p in sorted(dst.pools.items())
                 if p.rstrip("/") == directory.rstrip("/")), None)
    if pool is None:
        return _fail(name, f"{path} is not on {dst.name}, and no pool there holds "
                     f"{directory}, where libvirt would create it",
                     f"define a dir pool at {directory} on {dst.name} (`virsh "
                     f"pool-define-as NAME dir --target {directory}`, then pool-start)")
    return _ok(name, f"{path}: created in pool {pool} on {dst.name} and copied by {how}")


def check_disk(disk: Disk, dst: HostFacts, options: CheckOptions) -> Check:
    """One disk: at the same path on the destination and the same storage, or copied."""
    name = f"disk {disk.target}"
    if disk.path is None and disk.network:
        return _ok(name, f"network disk {disk.network}: reached from both hosts")
    if disk.path is None:
        return _ok(name, f"empty {disk.device}: nothing to move")
    at = dst.disks.get(disk.path)
    what = disk.path
    # libvirt copies only disks that are neither read-only nor shareable
    copying = options.copy_storage is not None and disk.needs_shared_storage
    if at is None:  # unknown refuses: a copy could write over it, a move lose it
        return _fail(name, f"{what}: {dst.name} was not asked about it",
                     "run the check again")
    if copying:
        return _copied(name, disk, at, dst, options)
    if at.present is None:
        directory = disk.path.rsplit("/", 1)[0] or "/"
        return _fail(name, f"{dst.name} cannot tell whether {what} is there: none of its "
                     f"active storage pools holds {directory}",
                     f"start or define a pool at {directory} on {dst.name} if the same "
                     "storage is mounted there, put the disk on storage both hosts mount "
                     "at the same path, or add --copy-storage all")
    if not at.present:
        return _fail(name, f"{what} is not on {dst.name}",
                     "put the disk on storage both hosts mount at the same path, or "
                     "add --copy-storage all")
    if not disk.needs_shared_storage:
        state = "read-only" if disk.readonly else "shareable"
        return _ok(name, f"{what} ({state}) is at the same path on {dst.name}")
    if at.shared is None:
        return _fail(name, f"{what} exists on {dst.name}, but nothing proves it is the same "
                     "storage (it may be another file at the same path"
                     + (f"; {at.unknown}" if at.unknown else "") + ")",
                     "use shared storage (NFS, Ceph, GlusterFS), declare the host's "
                     "storage shared in its settings if it is, or add --copy-storage all")
    return _ok(name, f"{what}: same storage ({at.shared})")


def _pool_of(path: str, pools: Mapping[str, str]) -> str | None:
    """The source pool whose directory holds ``path`` (the longest match)."""
    found = [(len(p), n) for n, p in pools.items()
             if p and path.startswith(p.rstrip("/") + "/")]
    return max(found)[1] if found else None


def check_pools(vm: VMFacts, src: HostFacts, dst: HostFacts) -> list[Check]:
    """The pools the VM's disks live in: the same name and path at the destination.

    A ``type='volume'`` disk cannot start without its pool (fail); a file that sits in a
    source pool only loses virtlife's management of the volume there (warn).
    """
    wanted: dict[str, bool] = {}  # pool -> a volume disk needs it
    for disk in vm.disks:
        if disk.pool:
            wanted[disk.pool] = True
        elif disk.path and (pool := _pool_of(disk.path, src.pools)):
            wanted.setdefault(pool, False)
    checks = []
    for pool, required in sorted(wanted.items()):
        name = f"pool {pool}"
        path = src.pools.get(pool)
        there = dst.pools.get(pool)
        make = (f"define pool {pool} on {dst.name} at {path or 'the same path'} "
                f"(`virsh pool-define-as {pool} dir --target {path or 'PATH'}`)")
        if there is None and pool in dst.stopped_pools:
            why = f"pool {pool} is defined but not active on {dst.name}"
            start = f"start it: `virsh pool-start {pool}` on {dst.name} (and pool-autostart)"
            checks.append(_fail(name, why, start) if required else _warn(name, why, start))
        elif there is None:
            why = f"{dst.name} has no pool {pool}"
            checks.append(_fail(name, why, make) if required else _warn(name, why, make))
        elif path is not None and there != path:
            why = f"{pool} is {path} on {src.name} but {there} on {dst.name}"
            fix = f"give {pool} the same path on both hosts"
            checks.append(_fail(name, why, fix) if required else _warn(name, why, fix))
        else:
            checks.append(_ok(name, f"{pool} at {there} on both hosts"))
    return checks


def check_networks(vm: VMFacts, dst: HostFacts) -> list[Check]:
    checks = []
    for net in vm.networks:
        name = f"network {net}"
        active = dst.networks.get(net)
        if active is None:
            checks.append(_fail(name, f"{dst.name} has no network {net}",
                                f"define network {net} on {dst.name} as on the source"))
        elif not active:
            checks.append(_fail(name, f"network {net} is defined but not active on "
                                f"{dst.name}", f"start it: `virsh net-start {net}` on "
                                f"{dst.name} (and net-autostart)"))
        else:
            checks.append(_ok(name, f"{net} active on {dst.name}"))
    for bridge in vm.bridges:
        name = f"bridge {bridge}"
        if bridge in dst.bridges:
            checks.append(_ok(name, f"{bridge} exists on {dst.name}"))
        else:
            checks.append(_fail(name, f"{dst.name} has no bridge {bridge}",
                                f"create bridge {bridge} on {dst.name} on the same network "
                                "segment as the source's"))
    return checks


def check_clock(dst: HostFacts, bound_ms: float) -> Check:
    name = "host clocks"
    clock = dst.clock
    if clock is None or clock.offset_ms is None:
        how = clock.how if clock is not None else "not measured"
        return _unknown(name, f"offset unknown ({how})", "make sure both hosts sync their "
                     "clocks (NTP, chrony): the guest's clock follows the host's")
    offset = clock.offset_ms
    found = f"{dst.name} is {abs(offset):.0f} ms {'ahead' if offset >= 0 else 'behind'} " \
            f"({clock.how})"
    if abs(offset) > bound_ms:
        return _fail(name, f"{found}: more than the {bound_ms:.0f} ms allowed",
                     "sync both hosts' clocks (chrony: `chronyc makestep`), or raise "
                     "the bound")
    return _ok(name, f"{found}, within {bound_ms:.0f} ms")


def check_state(vm: VMFacts, options: CheckOptions) -> Check:
    """Whether the VM's state allows the kind of migration asked for."""
    name = "VM state"
    state, kind = vm.state.state, options.kind
    up = state in (VMState.RUNNING, VMState.IDLE)
    now = f"{vm.name} is {vm.state}"
    if state is VMState.CRASHED:
        return _fail(name, now, "destroy it, then migrate it with --offline")
    if state is VMState.SAVED and vm.state.save_kind is SaveKind.MANAGED:
        return _fail(name, f"{now}: a managed-save image cannot move with it",
                     f"start it (it resumes from the image) and migrate it live, or drop "
                     f"the image with `virtlife managedsave-remove {vm.name}`")
    if state is VMState.PMSUSPENDED:
        return _fail(name, f"{now}", f"wake it with `virtlife pmwakeup {vm.name}` first")
    if state in (VMState.SHUTDOWN, VMState.DYING, VMState.UNDEFINED):
        return _fail(name, f"{now}", "wait until it is running or shut off")
    if kind is MigrationKind.OFFLINE:
        if not vm.persistent:
            return _fail(name, f"{vm.name} is transient: it has no definition to move",
                         "migrate it live instead")
        if state in (VMState.SHUTOFF, VMState.SAVED):
            note = "; its save file stays on the source" if state is VMState.SAVED else ""
            return _ok(name, f"{now}: its definition moves{note}")
        if up and options.shutdown_first:
            return _ok(name, f"{now}: it is shut down first (--shutdown-first)")
        if state is VMState.PAUSED and options.shutdown_first:
            return _fail(name, f"{now}: a paused guest cannot shut down",
                         "resume it first, or move it paused with --suspended")
        return _fail(name, f"{now}: --offline moves a shut-off VM",
                     "add --shutdown-first, or migrate it live (--live) or paused "
                     "(--suspended)")
    if state is VMState.SHUTOFF or state is VMState.SAVED:
        return _fail(name, f"{now}: a {kind.value} migration moves a VM that runs",
                     "use --offline, or start it first")
    if state is VMState.PAUSED:
        return _ok(name, f"{now}: it moves paused and stays paused at the destination")
    if kind is MigrationKind.SUSPENDED:
        return _ok(name, f"{now}: it is paused for the copy and resumed at the destination")
    return _ok(name, f"{now}")


def check_postcopy(src: HostFacts, dst: HostFacts, options: CheckOptions) -> Check | None:
    """Post-copy needs userfaultfd for QEMU's user on the destination (and the source)."""
    if options.kind is not MigrationKind.LIVE or options.postcopy is PostcopyMode.NEVER:
        return None
    name = "post-copy"
    lacking = [h.name for h in (src, dst) if h.userfaultfd is False]
    unknown = [h.name for h in (src, dst) if h.userfaultfd is None]
    fix = "`sysctl -w vm.unprivileged_userfaultfd=1` on " + _join(lacking or unknown)
    always = options.postcopy is PostcopyMode.ALWAYS
    if lacking:
        why = (f"userfaultfd is closed to QEMU on {_join(lacking)} "
               "(vm.unprivileged_userfaultfd=0): QEMU refuses post-copy")
        if always:
            return _fail(name, why, fix + ", or --postcopy auto|never")
        return _warn(name, why + "; start without it (--postcopy never) or the "
                     "migration fails to begin", fix)
    if unknown:
        return _unknown(name, f"not known whether {_join(unknown)} allow userfaultfd", fix) \
            if always else None
    return _ok(name, "userfaultfd open on both hosts")


def check_compression(vm: VMFacts, src: HostFacts, options: CheckOptions) -> Check | None:
    if not options.compressed:
        return None
    return _warn("compression", compressed_warning(virt_type=vm.virt_type,
                                                   qemu_version=src.qemu_version),
                 "drop --compressed")


# -- the report -------------------------------------------------------------------------------

def _unsafe(vm: VMFacts, dst: HostFacts, options: CheckOptions) -> tuple[bool, str]:
    if options.copy_storage is not None:
        return False, "not needed: --copy-storage copies the disks"
    proofs, missing = [], []
    for disk in vm.disks:
        if not disk.needs_shared_storage or disk.path is None:
            continue
        at = dst.disks.get(disk.path)
        if at is not None and at.present and at.shared:
            proofs.append(f"disk {disk.target} ({at.shared})")
        else:
            missing.append(f"disk {disk.target}")
    if missing:
        return False, f"not proven shared: {_join(missing)}"
    if not proofs:
        return False, "not needed: no disk on a local path"
    return True, f"every disk proven shared: {_join(proofs)}"


def run_checks(vm: VMFacts, src: HostFacts, dst: HostFacts,
               options: CheckOptions | None = None) -> Report:
    """Every check, in the order an operator reads them. An unreachable destination
    ends the list after the checks that need only the VM."""
    options = options or CheckOptions()
    checks: list[Check] = [check_reachable(src, dst)]
    if dst.reachable:
        checks += [check_hypervisor(vm, src, dst), check_versions(src, dst),
                   check_machine(vm, dst), check_cpu(vm, dst),
                   check_memory(vm, dst, options.kind), check_name_free(vm, dst)]
        checks += [check_disk(d, dst, options) for d in vm.disks]
        checks += check_pools(vm, src, dst)
        checks += check_networks(vm, dst)
        checks.append(check_clock(dst, options.clock_bound_ms))
        checks += [c for c in (check_postcopy(src, dst, options),) if c is not None]
    checks.append(check_state(vm, options))
    checks += [c for c in (check_compression(vm, src, options),) if c is not None]
    allows, why = _unsafe(vm, dst, options) if dst.reachable else (False, "not checked")
    return Report(vm=vm.name, source=src.name, destination=dst.name, kind=options.kind,
                  checks=tuple(checks), allows_unsafe=allows, unsafe_reason=why)
