"""The HA simulator: hosts, fencers, a store and supervisors as plain in-memory objects,
run one second at a time around ``machine.decide``, with a log to compare with a
scenario's expected one (``tests/data/ha/<name>/``).

Each tick ``t`` (the database's clock; hosts' clocks are taken as equal to it): the
script's events at ``t``; watchdogs (a host whose watchdog was not fed for
``WATCHDOG_S`` is reset: powered off, its QEMUs gone); fencers (a connected fencer first
destroys what it must: everything, if its lease expired or it went ``self_fence_s``
without renewing, and its stale generations; then it renews; a disconnected one
self-fences once ``self_fence_s`` passed since its last renewal); the hosts report their
QEMUs to the store; leadership (the leader renews its lease, ``LEADER_TTL_S``; once it
lapses the next supervisor takes over with epoch + 1); then each supervisor reads a
``HaSnapshot``, decides, and the store applies each action only under the current epoch
(and a restart only onto the generation it expects). After each phase every VM's QEMUs
are counted across the powered hosts: more than one is a double run, logged with
``!!`` and kept in ``World.double_runs``.

What the fake does not do: hosts' clocks never drift; a start takes ``BOOT_S`` and never
fails on a reachable host (unless ``disk-locks`` refuses it); a store write and the
start it orders happen together (a real supervisor stopped between them is covered by
the epoch and generation checks on the host side, not modelled here); the network is
all or nothing per host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtlife.services.ha.machine import (
    FenceHost,
    HaAction,
    HaSnapshot,
    HAState,
    Health,
    HostView,
    MarkError,
    MarkHost,
    Restart,
    Run,
    Timing,
    VMView,
    WaitFor,
    decide,
    describe,
)
from virtlife.services.ha.script import Event, Script
from virtlife.services.migration.checks import (
    CheckOptions,
    Clock,
    Disk,
    DiskAtDestination,
    HostFacts,
    VMFacts,
)
from virtlife.services.placement import PairFacts, Pairs, VMToPlace
from virtlife.states import classify

WATCHDOG_S = 10  # a watchdog not fed for this long resets its host (< TTL)
LEADER_TTL_S = 8  # the supervisors' leadership lease (services.leadership.TTL_S)
BOOT_S = 3  # an HA start is "starting" this long
CPU = "sim-cpu"
IMAGE = "/srv/ha/{}.qcow2"


@dataclass
class SimHost:
    name: str
    memory_mib: int
    fencer: bool
    watchdog: bool
    fence_command: bool
    power: bool = True
    network: bool = True
    keepalive_ok: bool = True
    fencer_paused: bool = False
    last_ok: float = 0.0  # the fencer's last renewal (its own clock)
    last_feed: float = 0.0
    self_fenced: bool = False
    qemus: dict[str, tuple[int, float]] = field(default_factory=dict)  # uuid -> (gen, since)
    fenced: set[str] = field(default_factory=set)  # uuids its fencer destroyed

    @property
    def reachable(self) -> bool:
        return self.power and self.network and self.keepalive_ok


@dataclass
class SimVM:
    uuid: str
    name: str
    host: str
    priority: int
    memory_mib: int
    generation: int = 1
    run: Run = Run.RUNNING
    restarts: int = 0
    relocations: int = 0
    ha: HAState = HAState.ACTIVE
    reason: str = ""


@dataclass
class SimStore:
    leases: dict[str, float] = field(default_factory=dict)
    health: dict[str, Health] = field(default_factory=dict)
    fence_requested: set[str] = field(default_factory=set)
    power_off: set[str] = field(default_factory=set)
    confirmed_dead: set[str] = field(default_factory=set)
    suspect_since: dict[str, float] = field(default_factory=dict)
    vms: dict[str, SimVM] = field(default_factory=dict)  # by uuid
    epoch: int = 0
    leader: str | None = None
    leader_expires: float = 0.0


@dataclass
class Supervisor:
    name: str
    stall_at: int | None = None  # decide at this tick, then stall
    stall_s: int = 0
    resume_at: int | None = None
    pending: tuple[HaAction, ...] = ()


@dataclass(frozen=True)
class Emitted:
    supervisor: str
    snapshot_epoch: int
    snapshot_leader: bool
    action: HaAction


def _vm_facts(vm: SimVM) -> VMToPlace:
    facts = VMFacts(name=vm.name, uuid=vm.uuid, state=classify(1, 1), memory_mib=vm.memory_mib,
                    machine="pc-i440fx-7.2", virt_type="kvm",
                    disks=(Disk("vda", IMAGE.format(vm.name)),))
    return VMToPlace(facts, vm.host, CheckOptions(), cpu=CPU)


def _host_facts(name: str, vms: list[str]) -> HostFacts:
    return HostFacts(name=name, hypervisor="QEMU", host_uuid=f"sim-{name}",
                     virt_types=frozenset({"kvm"}), libvirt_version=(9, 0, 0),
                     qemu_version=(7, 2, 0), machine_types=frozenset({"pc-i440fx-7.2"}),
                     disks={IMAGE.format(v): DiskAtDestination(True, "sim: shared storage")
                            for v in vms}, clock=Clock(0.0, "sim"))


class World:
    """One scenario's hosts, store and supervisors, run tick by tick (``run``)."""

    def __init__(self, script: Script, timing: Timing | None = None) -> None:
        self.script = script
        self.timing = timing or Timing()
        self.t = 0
        self.log: list[str] = []
        self.double_runs: list[str] = []
        self.emitted: list[Emitted] = []
        self.applied: list[tuple[HaAction, int]] = []  # with the store's epoch then
        self.store = SimStore()
        self.hosts = {h.name: SimHost(h.name, h.memory_mib, h.fencer, h.watchdog,
                                      h.fence_command) for h in script.hosts}
        self.supervisors = [Supervisor(s) for s in script.supervisors]
        for number, decl in enumerate(script.vms, 1):
            uuid = f"00000000-0000-4000-8000-{number:012d}"
            vm = SimVM(uuid, decl.name, decl.host, decl.priority, decl.memory_mib,
                       run=Run.STOPPED if decl.stopped else Run.RUNNING)
            self.store.vms[uuid] = vm
            if not decl.stopped:
                self.hosts[decl.host].qemus[uuid] = (1, -float(BOOT_S))
        for h in self.hosts.values():
            self.store.health[h.name] = Health.ACTIVE
            if h.fencer:
                self.store.leases[h.name] = self.timing.ttl_s
        names = [vm.name for vm in self.store.vms.values()]
        self.pairs: Pairs = {(a, b): PairFacts(_host_facts(a, names), _host_facts(b, names),
                                               {CPU: ("identical", "")})
                             for a in self.hosts for b in self.hosts if a != b}
        self.say("sim", "hosts " + " ".join(self.hosts) + "; supervisors "
                 + " ".join(s.name for s in self.supervisors))

    # -- the log ----------------------------------------------------------------------

    def say(self, who: str, what: str) -> None:
        self.log.append(f"{self.t:>4} {who:<8} {what}")

    def _names(self, uuids: list[str]) -> str:
        return ", ".join(sorted(self.store.vms[u].name for u in uuids))

    def check_double_runs(self) -> None:
        where: dict[str, list[str]] = {}
        for h in self.hosts.values():
            if h.power:
                for uuid in h.qemus:
                    where.setdefault(uuid, []).append(h.name)
        for uuid, hosts in sorted(where.items()):
            if len(hosts) > 1:
                line = f"double run: {self.store.vms[uuid].name} on {', '.join(hosts)}"
                self.double_runs.append(f"{self.t}: {line}")
                self.say("!!", line)

    # -- the hosts --------------------------------------------------------------------

    def event(self, ev: Event) -> None:
        self.say("script", str(ev))
        verb, *args = ev.words
        if verb == "power":
            h = self.hosts[args[0]]
            if args[1] == "off":
                h.power, h.qemus = False, {}
            elif not h.power:
                # a rebooted host: no QEMU, its fencer starts afresh (it renews at once)
                h.power, h.fencer_paused, h.self_fenced = True, False, True
                h.keepalive_ok, h.last_feed = True, self.t
        elif verb == "network":
            self.hosts[args[0]].network = args[1] == "up"
        elif verb == "keepalive":
            self.hosts[args[0]].keepalive_ok = args[1] == "ok"
        elif verb == "fencer":
            self.hosts[args[0]].fencer_paused = args[1] == "pause"
        elif verb == "supervisor":
            sup = next(s for s in self.supervisors if s.name == args[0])
            sup.stall_at, sup.stall_s = self.t, int(args[2])
        elif verb == "crash":
            for h in self.hosts.values():
                for uuid in [u for u in h.qemus if self.store.vms[u].name == args[0]]:
                    del h.qemus[uuid]
        elif verb == "confirm-dead":
            self.store.confirmed_dead.add(args[0])

    def watchdogs(self) -> None:
        for h in self.hosts.values():
            if h.power and h.watchdog and self.t - h.last_feed >= WATCHDOG_S:
                gone = list(h.qemus)
                h.power, h.qemus = False, {}
                self.say(h.name, f"watchdog reset ({self.t - h.last_feed:g} s unfed): "
                         f"{self._names(gone) or 'no VM'} gone, host down")

    def _self_fence(self, h: SimHost, why: str) -> None:
        gone = list(h.qemus)
        h.qemus, h.self_fenced = {}, True
        h.fenced.update(gone)
        self.say(h.name, f"fencer self-fences ({why}): destroyed {self._names(gone) or 'nothing'}")

    def fencers(self) -> None:
        ttl, t = self.timing, self.t
        for h in self.hosts.values():
            if not (h.power and h.fencer) or h.fencer_paused:
                continue
            late = t - h.last_ok >= ttl.self_fence_s
            if not h.network:
                if late and not h.self_fenced:
                    self._self_fence(h, f"no renewal for {t - h.last_ok:g} s")
                continue
            expired = t >= self.store.leases.get(h.name, 0.0)
            if (late or expired) and not h.self_fenced:
                self._self_fence(h, "its lease expired" if expired
                                 else f"no renewal for {t - h.last_ok:g} s")
            stale = [u for u, (gen, _) in h.qemus.items()
                     if self.store.vms[u].host != h.name or self.store.vms[u].generation != gen]
            if stale:
                for u in stale:
                    del h.qemus[u]
                self.say(h.name, f"fencer destroys stale generation(s): {self._names(stale)}")
            if t - h.last_ok >= ttl.renew_s or expired or h.self_fenced:
                if t - h.last_ok > ttl.renew_s or expired:
                    self.say(h.name, f"fencer renews its lease after {t - h.last_ok:g} s")
                self.store.leases[h.name] = t + ttl.ttl_s
                if self.store.health.get(h.name) is Health.DEAD:
                    self.store.power_off.discard(h.name)
                    self.store.confirmed_dead.discard(h.name)
                self.store.fence_requested.discard(h.name)
                h.last_ok, h.last_feed, h.self_fenced = t, t, False

    def reports(self) -> None:
        """The reachable hosts' QEMUs, as libvirt events would tell the store."""
        for vm in self.store.vms.values():
            h = self.hosts[vm.host]
            if not h.reachable or vm.run is Run.STOPPED:
                continue
            got = h.qemus.get(vm.uuid)
            if got is not None and got[0] == vm.generation:
                vm.run = Run.STARTING if self.t - got[1] < BOOT_S else Run.RUNNING
            elif vm.run in (Run.RUNNING, Run.STARTING):
                vm.run = Run.FENCED if vm.uuid in h.fenced else Run.CRASHED

    # -- the supervisors --------------------------------------------------------------

    def leadership(self) -> None:
        s = self.store
        for sup in self.supervisors:
            if sup.resume_at is not None:
                continue
            if s.leader == sup.name and self.t < s.leader_expires:
                s.leader_expires = self.t + LEADER_TTL_S
            elif s.leader is None or self.t >= s.leader_expires:
                s.epoch, s.leader, s.leader_expires = s.epoch + 1, sup.name, self.t + LEADER_TTL_S
                self.say(sup.name, f"leads, epoch {s.epoch}")

    def snapshot(self, sup: Supervisor) -> HaSnapshot:
        s = self.store
        hosts = []
        for h in self.hosts.values():
            used = sum(self.store.vms[u].memory_mib for u in h.qemus) if h.power else 0
            hosts.append(HostView(
                h.name, s.leases.get(h.name), h.reachable, health=s.health[h.name],
                fence_command=h.fence_command, fence_requested=h.name in s.fence_requested,
                power_off_confirmed=h.name in s.power_off,
                confirmed_dead=h.name in s.confirmed_dead,
                suspect_since=s.suspect_since.get(h.name), total_memory_mib=h.memory_mib,
                free_memory_mib=h.memory_mib - used, vms=len(h.qemus)))
        vms = tuple(VMView(vm.uuid, vm.name, vm.host, vm.run, vm.generation, _vm_facts(vm),
                           vm.priority, vm.restarts, vm.relocations, vm.ha, vm.reason)
                    for vm in s.vms.values())
        leads = s.leader == sup.name and self.t < s.leader_expires
        return HaSnapshot(float(self.t), s.epoch, leads, tuple(hosts), vms, self.pairs,
                        self.timing)

    def apply(self, sup: Supervisor, action: HaAction) -> None:
        s = self.store
        who = f"{sup.name}@{action.epoch}"
        if action.epoch != s.epoch:
            self.say(who, f"refused, epoch {action.epoch} is stale (now {s.epoch}): "
                     f"{describe(action)}")
            return
        if isinstance(action, Restart) and s.vms[action.uuid].generation != action.generation - 1:
            self.say(who, f"refused, generation {s.vms[action.uuid].generation} exists: "
                     f"{describe(action)}")
            return
        self.applied.append((action, s.epoch))
        self.say(who, describe(action))
        if isinstance(action, MarkHost):
            s.health[action.host] = action.health
            if action.health is Health.SUSPECT:
                s.suspect_since[action.host] = float(self.t)
            else:
                s.suspect_since.pop(action.host, None)
        elif isinstance(action, FenceHost):
            s.fence_requested.add(action.host)
            h = self.hosts[action.host]
            gone = list(h.qemus) if h.power else []
            h.power, h.qemus = False, {}
            s.power_off.add(action.host)
            self.say(action.host, f"fence command: power off confirmed, "
                     f"{self._names(gone) or 'no VM'} gone")
        elif isinstance(action, Restart):
            self._restart(action)
        elif isinstance(action, MarkError):
            s.vms[action.uuid].ha, s.vms[action.uuid].reason = HAState.ERROR, action.reason
        elif isinstance(action, WaitFor):
            s.vms[action.uuid].reason = action.reason

    def _restart(self, a: Restart) -> None:
        vm = self.store.vms[a.uuid]
        vm.host, vm.generation, vm.reason = a.target, a.generation, ""
        vm.restarts, vm.relocations, vm.run = a.restarts, a.relocations, Run.STARTING
        h = self.hosts[a.target]
        h.fenced.discard(a.uuid)
        held = [o.name for o in self.hosts.values()
                if o.power and o is not h and a.uuid in o.qemus]
        if not h.reachable:
            vm.run = Run.CRASHED
            self.say(h.name, f"start of {vm.name} failed: unreachable")
        elif held and self.script.disk_locks:
            vm.run = Run.CRASHED
            self.say(h.name, f"start of {vm.name} refused: its disk is locked by {held[0]}")
        else:
            h.qemus[a.uuid] = (a.generation, float(self.t))

    def supervise(self) -> None:
        for sup in self.supervisors:
            if sup.resume_at is not None:
                if self.t < sup.resume_at:
                    continue
                sup.resume_at = None
                self.say(sup.name, "resumes")
                for action in sup.pending:
                    self.apply(sup, action)
                sup.pending = ()
            snap = self.snapshot(sup)
            actions = decide(snap)
            self.emitted += [Emitted(sup.name, snap.epoch, snap.leader, a) for a in actions]
            if sup.stall_at == self.t:
                sup.pending, sup.resume_at = actions, self.t + sup.stall_s
                self.say(sup.name, f"stalls for {sup.stall_s} s with "
                         f"{len(actions)} decided action(s)")
                continue
            for action in actions:
                self.apply(sup, action)

    # -- the run ----------------------------------------------------------------------

    def tick(self) -> None:
        for ev in self.script.events:
            if ev.at == self.t:
                self.event(ev)
        self.watchdogs()
        self.fencers()
        self.check_double_runs()
        self.reports()
        self.leadership()
        self.supervise()
        self.check_double_runs()

    def run(self) -> World:
        while self.t <= self.script.end:
            self.tick()
            self.t += 1
        self.t = self.script.end
        for vm in sorted(self.store.vms.values(), key=lambda v: v.name):
            running = sorted(h.name for h in self.hosts.values()
                             if h.power and vm.uuid in h.qemus)
            state = vm.ha.value + (f" ({vm.reason})" if vm.reason else "")
            self.say("end", f"{vm.name}: {vm.run.value} on {vm.host} gen {vm.generation}, "
                     f"QEMU on {', '.join(running) or 'none'}, HA {state}")
        return self
