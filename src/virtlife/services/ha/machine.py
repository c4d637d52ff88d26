"""The HA decisions (issue 19) as a pure function: ``decide(snapshot) -> actions``.

The supervisor reads a ``HaSnapshot`` (the database's clock ``now``, each host's lease
expiry, fence-command confirmation, mode and keepalive, each HA VM's host, priority, run
state, generation and counters, its own epoch and whether it leads) and carries out the
``HaAction``s returned, each under the epoch it carries. Everything the decisions depend on
across steps (a host's mark, a VM's counters, generation and waiting reason) lives in the
store and comes back in the next snapshot, so a new leader continues where the old one
stopped, and repeating a step after a crash repeats nothing already applied (a restart
names the generation it creates; the store refuses it if that generation exists). This
module does no I/O, reads no clock, and imports neither libvirt nor the store.

Timing (``Timing``): a host's fencer renews its lease every 2 s; the lease lasts 15 s by
the DATABASE's clock from the renewal's commit; a fencer that has not renewed for 8 s by
its own clock, counted from when it SENT its last successful renewal, self-fences: it
destroys the host's HA VMs (and stops feeding the watchdog where there is one, so a
fencer that is itself stopped is replaced by the watchdog's reset, 10 s after the last
feed). Why the ordering makes a double run impossible: the renewal is sent before it
commits, so the fencer's deadline (send + 8 s) comes before the lease's expiry (commit +
15 s) by at least 7 s, which covers the hosts' clock rate error and the fencer's own
step; this module restarts a VM elsewhere only once the lease has expired by the
database's clock (or a fence command confirmed power-off, or an operator confirmed the
host dead), i.e. only after the old host's copy is gone. A host that comes back (the
partition heals, the fencer resumes) finds its VMs' generation bumped in the store and
destroys its stale copies before it renews, so it never joins the run a second time.
Keepalive failures and late renewals only mark a host ``suspect``: suspicion moves
nothing. A host with neither a fencer (no lease) nor a fence command is never proven dead
by anything but ``virtlife host confirm-dead``.

The rules, per step, for the leader only (a follower returns nothing; every action
carries the snapshot's epoch, and the store refuses a stale one):
- hosts: dead when proven; else suspect on a failed or unknown keepalive, or a lease not
  renewed for ``Timing.late_s``; else active. Each change is one ``MarkHost`` with why.
  A suspect host's fence command runs (``FenceHost``) once per incident, and only when
  its lease is late too, or, without a fencer, after ``Policy.fence_after_s`` of
  suspicion.
- VMs on a dead host (running, starting, crashed or fenced as last seen) are restarted
  elsewhere, highest priority first, through ``services.placement.plan`` with at most
  ``Policy.max_starts_per_host`` starts under way per target. A recovery from a dead host
  counts against no limit: the host failed, not the VM.
- A VM that crashed, failed to start, or was destroyed by its fencer on a live, active
  host restarts in place while ``restarts < max_restart``, then on another host while
  ``relocations < max_relocate``, then goes to ``error`` with the reason. A host in
  maintenance gets no in-place restart.
- A VM that cannot move now (its host suspect, no capacity, no slot) gets a ``WaitFor`` with
  the reason, once per change of reason: nothing repeats while nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from virtlife.services.placement import (
    HostState,
    Pairs,
    Placement,
    PlacementLimits,
    Unplaced,
    VMToPlace,
    Why,
    plan,
)


@dataclass(frozen=True)
class Timing:
    renew_s: float = 2.0  # the fencer renews its lease this often
    self_fence_s: float = 8.0  # without a renewal for this long, the fencer self-fences
    ttl_s: float = 15.0  # the lease's life by the database's clock
    late_s: float = 5.0  # a lease not renewed for this long makes its host suspect

    def __post_init__(self) -> None:
        if not self.renew_s < self.self_fence_s < self.ttl_s:
            raise ValueError(f"HA timing needs renew < self-fence < TTL, got {self.renew_s}, "
                             f"{self.self_fence_s}, {self.ttl_s}")


@dataclass(frozen=True)
class Policy:
    max_restart: int = 1  # in-place restarts of a VM that failed on a live host
    max_relocate: int = 1  # then restarts on another host
    max_starts_per_host: int = 4  # HA starts under way at once on one target
    fence_after_s: float = 10.0  # a host without a fencer is suspect this long before
    # its fence command runs (a libvirtd restart must not cost a power cycle)
    reserve_pct: float = 10.0  # of each target's memory, kept free (placement)


class HostMode(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"


class Health(StrEnum):
    """A host's mark in the store, as the HA decisions set it."""

    ACTIVE = "active"
    SUSPECT = "suspect"
    DEAD = "dead"


class Run(StrEnum):
    """A VM's run state as last seen on its host."""

    RUNNING = "running"
    STARTING = "starting"  # an HA start under way (counts against the target's slots)
    STOPPED = "stopped"  # stopped on purpose: HA leaves it
    CRASHED = "crashed"  # its QEMU died, or its start failed
    FENCED = "fenced"  # destroyed by its host's fencer


class HAState(StrEnum):
    ACTIVE = "active"
    ERROR = "error"  # bounds exhausted: HA leaves it until an operator re-enables it


class RestartKind(StrEnum):
    RECOVER = "recover"  # from a dead host
    IN_PLACE = "in-place"  # on its own live host
    RELOCATE = "relocate"  # after in-place restarts ran out


@dataclass(frozen=True)
class HostView:
    name: str
    lease_expires: float | None  # by the database's clock; None: the host has no fencer
    keepalive: bool | None = True  # libvirt keepalive to the host; None: unknown
    mode: HostMode = HostMode.ACTIVE
    health: Health = Health.ACTIVE  # the mark in the store
    fence_command: bool = False  # a power fence command is configured
    fence_requested: bool = False  # it ran for this incident
    power_off_confirmed: bool = False  # and confirmed the power is off
    confirmed_dead: bool = False  # `virtlife host confirm-dead`
    suspect_since: float | None = None  # when the store marked it suspect (database clock)
    total_memory_mib: int | None = None
    free_memory_mib: int | None = None
    vms: int = 0


@dataclass(frozen=True)
class VMView:
    uuid: str
    name: str
    host: str
    run: Run
    generation: int
    place: VMToPlace  # its facts as placement reads them (source = its host)
    priority: int = 0  # higher first
    restarts: int = 0
    relocations: int = 0
    ha: HAState = HAState.ACTIVE
    reason: str = ""  # the waiting or error reason in the store


@dataclass(frozen=True)
class HaSnapshot:
    now: float  # the database's clock
    epoch: int
    leader: bool
    hosts: tuple[HostView, ...]
    vms: tuple[VMView, ...]
    pairs: Pairs = field(default_factory=dict)  # placement's pre-flight facts
    timing: Timing = field(default_factory=Timing)
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True)
class MarkHost:
    epoch: int
    host: str
    health: Health
    why: str


@dataclass(frozen=True)
class FenceHost:
    epoch: int
    host: str
    why: str


@dataclass(frozen=True)
class Restart:
    """Start ``vm`` on ``target`` as ``generation`` (its store generation + 1); the store
    refuses it when that generation exists already or the epoch is stale."""

    epoch: int
    vm: str
    uuid: str
    source: str
    target: str
    generation: int
    kind: RestartKind
    why: str
    restarts: int  # the VM's counters once this restart is applied
    relocations: int


@dataclass(frozen=True)
class MarkError:
    epoch: int
    vm: str
    uuid: str
    reason: str


@dataclass(frozen=True)
class WaitFor:
    """Why ``vm`` does not move now. ``reason`` is stable while the cause lasts (no
    figures): the store keeps it, and a step emits a ``WaitFor`` only when it changes, so a
    lease renewed every 2 s or a free-memory figure moving never repeats one. ``detail``
    has the figures, for the journal and ``ha status``. An empty reason: it runs again."""

    epoch: int
    vm: str
    uuid: str
    reason: str
    detail: str = ""


HaAction = MarkHost | FenceHost | Restart | MarkError | WaitFor


def lease_waiting(host: str) -> str:
    return f"fenced: waiting for lease of {host}"


def host_health(h: HostView, now: float, timing: Timing) -> tuple[Health, str]:
    """What ``h`` is now, and why. Proof of death first; then suspicion."""
    if h.confirmed_dead:
        return Health.DEAD, "an operator confirmed it dead"
    if h.power_off_confirmed:
        return Health.DEAD, "its fence command confirmed power-off"
    if h.lease_expires is not None and now >= h.lease_expires:
        return Health.DEAD, f"its lease expired at {h.lease_expires:g}"
    if h.keepalive is None:
        return Health.SUSPECT, "keepalive unknown"
    if not h.keepalive:
        return Health.SUSPECT, "keepalive failed"
    if h.lease_expires is not None and h.lease_expires - now < timing.ttl_s - timing.late_s:
        return Health.SUSPECT, (f"lease not renewed for "
                                f"{timing.ttl_s - (h.lease_expires - now):g} s")
    return Health.ACTIVE, "keepalive and lease fine" if h.lease_expires is not None \
        else "keepalive fine"


def _wait_reason(h: HostView, health: Health) -> tuple[str, str]:
    """Why a VM on ``h`` cannot move yet (``h`` not dead), and the figures."""
    if h.lease_expires is not None:
        return lease_waiting(h.name), f"expires at {h.lease_expires:g}"
    if h.fence_command:
        return f"waiting for {h.name}'s fence command to confirm power-off", ""
    return (f"{h.name} is {health.value} and has neither fencer nor fence command: nothing "
            f"restarts its VMs until `virtlife host confirm-dead {h.name}`"), ""


def _targets(snap: HaSnapshot, health: Mapping[str, Health]) -> list[HostState]:
    starting: dict[str, int] = {}
    for vm in snap.vms:
        if vm.run is Run.STARTING:
            starting[vm.host] = starting.get(vm.host, 0) + 1
    return [HostState(h.name, h.total_memory_mib, h.free_memory_mib, vms=h.vms,
                      active=health[h.name] is Health.ACTIVE,
                      maintenance=h.mode is HostMode.MAINTENANCE,
                      reachable=health[h.name] is Health.ACTIVE,
                      error="" if health[h.name] is Health.ACTIVE
                      else f"HA marks it {health[h.name].value}",
                      incoming=starting.get(h.name, 0))
            for h in snap.hosts]


def _unplaced_reason(u: Unplaced, policy: Policy) -> tuple[str, str]:
    """A VM that some host would take once a start there ends waits for a slot; else
    the kinds of refusal by host, without placement's figures (those go in the detail)."""
    if any(r.kind is Why.NO_SLOT for r in u.per_host.values()):
        return (f"waiting for a start slot: every host that can take it has "
                f"{policy.max_starts_per_host} HA starts under way"), ""
    groups: dict[str, list[str]] = {}
    for host, refusal in sorted(u.per_host.items()):
        if refusal.kind is not Why.SOURCE:
            groups.setdefault(refusal.kind.value, []).append(host)
    if not groups:
        return f"no host but {u.source} to restart {u.vm} on", u.reason
    said = "; ".join(f"{kind} on {', '.join(hosts)}" for kind, hosts in sorted(groups.items()))
    return f"no host can take {u.vm}: {said}", u.reason


def _should_fence(h: HostView, snap: HaSnapshot) -> bool:
    """Whether to run the suspect ``h``'s fence command now: once per incident; for a
    host with a fencer, only once its lease is late too (a keepalive failure while the
    fencer renews is a libvirtd problem, not a dead host); for one without, only after
    ``Policy.fence_after_s`` of suspicion."""
    if not h.fence_command or h.fence_requested:
        return False
    timing = snap.timing
    if h.lease_expires is not None:
        return h.lease_expires - snap.now < timing.ttl_s - timing.late_s
    return h.suspect_since is not None and snap.now - h.suspect_since >= snap.policy.fence_after_s


def _failed_on_live(vm: VMView, host: HostView, policy: Policy) -> str | None:
    """Why the failed ``vm`` goes to error, or None when it may restart."""
    if vm.restarts < policy.max_restart and host.mode is HostMode.ACTIVE:
        return None
    if vm.relocations < policy.max_relocate:
        return None
    return (f"{vm.run.value} on {vm.host} after {vm.restarts} restart(s) in place "
            f"(max_restart {policy.max_restart}) and {vm.relocations} relocation(s) "
            f"(max_relocate {policy.max_relocate})")


def decide(snap: HaSnapshot) -> tuple[HaAction, ...]:
    """The actions for this step (see the module doc); none unless ``snap.leader``."""
    if not snap.leader:
        return ()
    epoch, policy = snap.epoch, snap.policy
    actions: list[HaAction] = []
    hosts = {h.name: h for h in snap.hosts}
    health: dict[str, Health] = {}
    for h in snap.hosts:
        now_health, why = host_health(h, snap.now, snap.timing)
        health[h.name] = now_health
        if now_health is not h.health:
            actions.append(MarkHost(epoch, h.name, now_health, why))
        if now_health is Health.SUSPECT and _should_fence(h, snap):
            actions.append(FenceHost(epoch, h.name, why))

    def note(vm: VMView, reason: str, detail: str = "") -> None:
        if reason != vm.reason:
            actions.append(WaitFor(epoch, vm.name, vm.uuid, reason, detail))

    to_place: list[tuple[VMView, RestartKind, str]] = []
    ordered = sorted(snap.vms, key=lambda v: (-v.priority, v.name))
    for vm in ordered:
        if vm.ha is HAState.ERROR or vm.run is Run.STOPPED:
            continue
        host = hosts.get(vm.host)
        if host is None:
            note(vm, f"unknown: its host {vm.host} is not among the hosts")
            continue
        state = health[vm.host]
        if state is Health.DEAD:
            to_place.append((vm, RestartKind.RECOVER, f"{vm.host} is dead"))
        elif state is Health.SUSPECT:
            note(vm, *_wait_reason(host, state))
        elif vm.run in (Run.CRASHED, Run.FENCED):
            refused = _failed_on_live(vm, host, policy)
            if refused is not None:
                actions.append(MarkError(epoch, vm.name, vm.uuid, refused))
            elif vm.restarts < policy.max_restart and host.mode is HostMode.ACTIVE:
                actions.append(Restart(epoch, vm.name, vm.uuid, vm.host, vm.host,
                                       vm.generation + 1, RestartKind.IN_PLACE,
                                       f"{vm.run.value} on live {vm.host}",
                                       vm.restarts + 1, vm.relocations))
            else:
                to_place.append((vm, RestartKind.RELOCATE,
                                 f"{vm.run.value} on {vm.host}, in-place restarts used"))
        elif vm.reason and vm.run in (Run.RUNNING, Run.STARTING):
            note(vm, "")
    if not to_place:
        return tuple(actions)
    # the incoming slots are the HA starts per target; a dead source sends nothing
    limits = PlacementLimits(reserve_pct=policy.reserve_pct,
                             max_incoming=policy.max_starts_per_host,
                             max_outgoing=len(snap.vms) + 1)
    result = plan([replace(vm.place, source=vm.host) for vm, _, _ in to_place],
                  _targets(snap, health), snap.pairs, limits)
    placed: dict[str, Placement] = {p.vm: p for p in result.placements}
    unplaced = {u.vm: u for u in result.unplaced}
    for vm, kind, why in to_place:
        got = placed.get(vm.place.name)
        if got is None:
            u = unplaced[vm.place.name]
            note(vm, *_unplaced_reason(u, policy))
            continue
        relocations = vm.relocations + (kind is RestartKind.RELOCATE)
        actions.append(Restart(epoch, vm.name, vm.uuid, vm.host, got.destination,
                               vm.generation + 1, kind, why, vm.restarts, relocations))
    return tuple(actions)


def describe(action: HaAction) -> str:
    """One line for the journal and the simulator's log (without the epoch)."""
    match action:
        case MarkHost(host=host, health=health, why=why):
            return f"host {host} {health.value}: {why}"
        case FenceHost(host=host, why=why):
            return f"fence {host}: {why}"
        case Restart():
            a = action
            where = f"on {a.target}" if a.kind is RestartKind.IN_PLACE else \
                f"from {a.source} on {a.target}"
            return f"restart {a.vm} {where} as generation {a.generation} ({a.kind.value}: {a.why})"
        case MarkError(vm=vm, reason=reason):
            return f"{vm} error: {reason}"
        case WaitFor(vm=vm, reason=reason, detail=detail):
            return (f"{vm} waits: {reason}" + (f" ({detail})" if detail else "")) if reason \
                else f"{vm} runs"
    raise AssertionError(action)


__all__: Sequence[str] = (
    "FenceHost",
    "HAState",
    "HaAction",
    "HaSnapshot",
    "Health",
    "HostMode",
    "HostView",
    "MarkError",
    "MarkHost",
    "Policy",
    "Restart",
    "RestartKind",
    "Run",
    "Timing",
    "VMView",
    "WaitFor",
    "decide",
    "describe",
    "host_health",
    "lease_waiting",
)
