"""The balance planner: the fewest migrations that bring the hosts' load spread under a
threshold, as a pure function.

A host's **load** is its memory committed against total (%), and, when every host
balanced has a CPU figure, the larger of that and its CPU busy share (%): the scarcer
resource. The **spread** is the most loaded host's load less the least loaded one's,
over the hosts that take part: active, not in maintenance, reachable, with their
memory known (the others are listed as left out, with why, and neither give nor take
VMs).

``plan_balance`` moves VMs off the most loaded host, one at a time:

- each candidate is a VM active on that host, not pinned, not moved by the balancer
  within the cool-down, and whose CPU use is known when CPU counts;
- its destination is placement's (``services.placement.place``), among the hosts less
  loaded than the source, and never the host a balancer move within the cool-down
  came from to the source (no move undoes a recent one, this plan's moves included);
- a move is kept only when it lowers the spread; of those, the cheapest that brings
  the spread under the threshold, else the one that lowers it most (ties: the
  cheaper). Cheaper is smaller memory, then less CPU (a quicker migration), then the
  name;
- it stops when the spread is under the threshold, at ``max_moves``, or when no move
  lowers it, and says which.

Every move lowers the spread, so it never grows; pinned and cooling VMs never move;
the answer depends only on the values given (never on their order); and once a plan
that was not cut short by ``max_moves`` is applied (``apply_plan``), the next plan is
empty. Each plan carries the expected load of every host after it. Pure: plain values
in and out, the time given as ``now_s``; no libvirt, no store, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from virtlife.config import Settings
from virtlife.services.placement import (
    HostState,
    Pairs,
    Placement,
    PlacementLimits,
    VMToPlace,
    place,
    unique_by,
)

EPSILON = 1e-9  # a spread lower by less than this is not lower


@dataclass(frozen=True)
class BalanceLimits:
    """The balancer's bounds (``[balance]`` in settings.toml)."""

    threshold_pct: float = 20.0  # the spread (percentage points) it brings under
    max_moves: int = 5  # migrations in one plan
    cooldown_s: float = 1800.0  # a VM it moved is not moved again within this

    @classmethod
    def from_settings(cls, settings: Settings) -> BalanceLimits:
        return cls(settings.balance_threshold_pct, settings.balance_max_moves,
                   settings.balance_cooldown_s)


@dataclass(frozen=True)
class LastMove:
    """The balancer's last move of a VM: from, to, when (seconds since the epoch)."""

    source: str
    destination: str
    at_s: float


@dataclass(frozen=True)
class BalanceHost:
    """A host as the balancer sees it: placement's state (memory, mode, reachability),
    the memory its active VMs commit, and its CPU (None: unknown)."""

    state: HostState
    committed_mib: float
    cpus: int = 1
    cpu_pct: float | None = None
    cpu_why: str = ""

    @property
    def name(self) -> str:
        return self.state.name


@dataclass(frozen=True)
class BalanceVM:
    """A VM on a host: how placement moves it, its CPU use in cores (None unknown),
    whether it is pinned, and the balancer's last move of it."""

    vm: VMToPlace
    cpu_cores: float | None = None
    pinned: bool = False
    last_move: LastMove | None = None

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def key(self) -> str:
        """``HOST/NAME``: two hosts may each have a VM of one name."""
        return f"{self.vm.source}/{self.vm.name}"

    @property
    def memory_mib(self) -> int:
        return self.vm.facts.memory_mib

    @property
    def active(self) -> bool:
        return self.vm.facts.state.state.is_active


class Hold(StrEnum):
    """Why a VM of a host the balancer unloads stays where it is."""

    PINNED = "pinned"
    COOLING = "moved by the balancer within the cool-down"
    CPU_UNKNOWN = "its CPU use is unknown"


class Stop(StrEnum):
    """Why the plan ends where it does."""

    BALANCED = "the spread is within the threshold"
    MAX_MOVES = "the plan reached its most moves"
    NO_MOVE = "no allowed move lowers the spread"
    TOO_FEW_HOSTS = "fewer than two hosts take part"


@dataclass(frozen=True)
class Load:
    host: str
    memory_pct: float
    cpu_pct: float | None
    load_pct: float  # what the spread is taken over
    vms: int

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "memory_pct": round(self.memory_pct, 1),
                "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 1),
                "load_pct": round(self.load_pct, 1), "vms": self.vms}


@dataclass(frozen=True)
class Move:
    vm: str
    uuid: str
    source: str
    destination: str
    memory_mib: int
    cpu_cores: float | None
    spread_after: float  # the spread once this move (and those before it) are done
    placement: Placement
    ref: str = ""  # the VM's ``BalanceVM.key`` in the plan's input

    def as_dict(self) -> dict[str, object]:
        return {"vm": self.vm, "uuid": self.uuid, "from": self.source,
                "to": self.destination, "memory_mib": self.memory_mib,
                "cpu_cores": None if self.cpu_cores is None else round(self.cpu_cores, 3),
                "spread_after_pct": round(self.spread_after, 1)}


@dataclass(frozen=True)
class HeldVM:
    vm: str
    host: str
    why: Hold


@dataclass(frozen=True)
class BalancePlan:
    moves: tuple[Move, ...]
    before: tuple[Load, ...]  # each host taking part, by name
    after: tuple[Load, ...]  # the same hosts once the moves are done
    spread_before: float
    spread_after: float
    threshold_pct: float
    uses_cpu: bool  # False: the load is memory only (some host's CPU is unknown)
    stop: Stop
    held: tuple[HeldVM, ...] = ()  # VMs of the hosts unloaded that were kept in place
    refused: tuple[str, ...] = ()  # moves passed over: would undo one, or no destination
    left_out: Mapping[str, str] = field(default_factory=dict)  # host: why
    cpu_note: str = ""  # why the CPU does not count, when it does not

    def as_dict(self) -> dict[str, object]:
        return {"moves": [m.as_dict() for m in self.moves],
                "before": [h.as_dict() for h in self.before],
                "after": [h.as_dict() for h in self.after],
                "spread_before_pct": round(self.spread_before, 1),
                "spread_after_pct": round(self.spread_after, 1),
                "threshold_pct": self.threshold_pct, "uses_cpu": self.uses_cpu,
                "stop": self.stop.value,
                "held": [{"vm": h.vm, "host": h.host, "why": h.why.value} for h in self.held],
                "refused": list(self.refused), "left_out": dict(self.left_out),
                "cpu_note": self.cpu_note or None}


@dataclass
class _Balanced:
    """The hosts and VMs as the moves planned so far leave them."""

    hosts: dict[str, BalanceHost]
    where: dict[str, str]  # VM name -> its host
    vms: dict[str, BalanceVM]
    uses_cpu: bool

    def load(self, name: str) -> Load:
        host = self.hosts[name]
        total = host.state.total_memory_mib or 0
        memory = 100.0 * host.committed_mib / total
        cpu = host.cpu_pct
        score = max(memory, cpu) if self.uses_cpu and cpu is not None else memory
        count = sum(1 for h in self.where.values() if h == name)
        return Load(name, memory, cpu, score, count)

    def loads(self) -> tuple[Load, ...]:
        return tuple(self.load(name) for name in sorted(self.hosts))

    def spread(self) -> float:
        scores = [self.load(name).load_pct for name in self.hosts]
        return max(scores) - min(scores)

    def moved(self, vm: BalanceVM, destination: str) -> _Balanced:
        source = self.where[vm.key]
        src, dst = self.hosts[source], self.hosts[destination]
        mem, cores = vm.memory_mib, vm.cpu_cores or 0.0

        def shifted(host: BalanceHost, sign: int) -> BalanceHost:
            state = host.state
            free = state.free_memory_mib
            cpu = host.cpu_pct
            if cpu is not None:
                cpu = max(0.0, cpu + sign * 100.0 * cores / max(host.cpus, 1))
            return replace(host, committed_mib=host.committed_mib + sign * mem, cpu_pct=cpu,
                           state=replace(state, vms=state.vms + sign,
                                         free_memory_mib=None if free is None
                                         else free - sign * mem))

        hosts = {**self.hosts, source: shifted(src, -1), destination: shifted(dst, +1)}
        return _Balanced(hosts, {**self.where, vm.key: destination}, self.vms, self.uses_cpu)


def _taking_part(host: BalanceHost) -> str:
    """Why the host is left out of balancing ("" when it takes part)."""
    state = host.state
    if not state.active:
        return "not active"
    if state.maintenance:
        return "in maintenance"
    if state.reachable is not True:
        return f"unreachable or unknown: {state.error or 'no answer'}"
    if not state.total_memory_mib or state.free_memory_mib is None:
        return "its memory is unknown"
    return ""


def _cost(vm: BalanceVM) -> tuple[int, float, str, str]:
    return (vm.memory_mib, vm.cpu_cores or 0.0, vm.name, vm.vm.source)


def _recent(vms: Iterable[BalanceVM], now_s: float, cooldown_s: float) -> set[tuple[str, str]]:
    """The (source, destination) of every balancer move within the cool-down."""
    return {(v.last_move.source, v.last_move.destination) for v in vms
            if v.last_move is not None and now_s - v.last_move.at_s < cooldown_s}


def _index(hosts: Iterable[BalanceHost], vms: Iterable[BalanceVM],
           ) -> tuple[dict[str, BalanceHost], dict[str, BalanceVM]]:
    return (unique_by(hosts, lambda h: h.name, lambda n: f"host {n} is given twice: "
                      "balancing needs one load per host"),
            unique_by(vms, lambda v: v.key,
                      lambda k: f"VM {k} is given twice: balancing needs one entry per VM"))


def plan_balance(hosts: Iterable[BalanceHost], vms: Iterable[BalanceVM], pairs: Pairs,
                 now_s: float, limits: BalanceLimits | None = None,
                 placement: PlacementLimits | None = None) -> BalancePlan:
    """The balance plan (see the module doc) for ``hosts`` and their ``vms`` at
    ``now_s`` (seconds since the epoch), with ``pairs`` the placement's pre-flight
    facts by (source, destination)."""
    limits = limits or BalanceLimits()
    placement = placement or PlacementLimits()
    all_hosts, all_vms = _index(hosts, vms)
    left_out = {n: why for n, h in sorted(all_hosts.items()) if (why := _taking_part(h))}
    part = {n: h for n, h in all_hosts.items() if n not in left_out}
    no_cpu = sorted(n for n, h in part.items() if h.cpu_pct is None)
    uses_cpu = bool(part) and not no_cpu
    cpu_note = ("" if uses_cpu or not part else "CPU unknown on " + ", ".join(
        f"{n} ({part[n].cpu_why or 'not read'})" for n in no_cpu) + ": memory only")
    where = {v.key: v.vm.source for v in all_vms.values() if v.vm.source in part}
    fleet = _Balanced(part, where, all_vms, uses_cpu)
    before = fleet.loads()
    if len(part) < 2:
        return BalancePlan((), before, before, 0.0, 0.0, limits.threshold_pct, uses_cpu,
                           Stop.TOO_FEW_HOSTS, left_out=left_out, cpu_note=cpu_note)
    recent = _recent(all_vms.values(), now_s, limits.cooldown_s)
    moves: list[Move] = []
    held: dict[str, HeldVM] = {}
    refused: dict[str, str] = {}
    stop = Stop.MAX_MOVES
    spread_before = fleet.spread()
    for _ in range(limits.max_moves + 1):
        spread = fleet.spread()
        if spread <= limits.threshold_pct:
            stop = Stop.BALANCED
            break
        if len(moves) >= limits.max_moves:
            stop = Stop.MAX_MOVES
            break
        step = _best_step(fleet, recent, pairs, now_s, limits, placement, held, refused,
                          {m.ref for m in moves})
        if step is None:
            stop = Stop.NO_MOVE
            break
        vm, destination, result, after = step
        source = fleet.where[vm.key]
        fleet = after
        recent.add((source, destination))
        moves.append(Move(vm.name, vm.vm.facts.uuid, source, destination, vm.memory_mib,
                          vm.cpu_cores, fleet.spread(), result, vm.key))
    return BalancePlan(tuple(moves), before, fleet.loads(), spread_before, fleet.spread(),
                       limits.threshold_pct, uses_cpu, stop,
                       tuple(held[k] for k in sorted(held)),
                       tuple(refused[k] for k in sorted(refused)), left_out, cpu_note)


def _movable(fleet: _Balanced, vm: BalanceVM, now_s: float, limits: BalanceLimits,
             ) -> Hold | None:
    if vm.pinned:
        return Hold.PINNED
    if vm.last_move is not None and now_s - vm.last_move.at_s < limits.cooldown_s:
        return Hold.COOLING
    if fleet.uses_cpu and vm.cpu_cores is None:
        return Hold.CPU_UNKNOWN
    return None


# (spread after, cost, VM, destination, placement, the fleet after)
_Option = tuple[float, tuple[int, float, str, str], BalanceVM, str, Placement, "_Balanced"]


def _best_step(fleet: _Balanced, recent: set[tuple[str, str]], pairs: Pairs, now_s: float,
               limits: BalanceLimits, placement: PlacementLimits, held: dict[str, HeldVM],
               refused: dict[str, str], moved: set[str],
               ) -> tuple[BalanceVM, str, Placement, _Balanced] | None:
    """The next move off the most loaded host, or None when no allowed move lowers the
    spread."""
    loads = fleet.loads()
    top = max(loads, key=lambda h: (h.load_pct, h.host))
    source = top.host
    spread = fleet.spread()
    lower = [h.host for h in loads if h.load_pct < top.load_pct and h.host != source]
    options: list[_Option] = []
    candidates = sorted((fleet.vms[n] for n, h in fleet.where.items() if h == source),
                        key=_cost)
    for vm in candidates:
        if vm.key in moved or not vm.active:
            continue
        why = _movable(fleet, vm, now_s, limits)
        if why is not None:
            held[vm.key] = HeldVM(vm.name, source, why)
            continue
        undo = [h for h in lower if (h, source) in recent]
        for h in undo:
            refused[f"{vm.key} {h}"] = (f"{vm.name}: not to {h}, which would undo a recent "
                                         f"balancer move from {h} to {source}")
        dests = [fleet.hosts[h].state for h in lower if h not in undo]
        if not dests:
            continue
        result = place(replace(vm.vm, source=source), [fleet.hosts[source].state, *dests],
                       pairs, placement, slots=False)
        if not isinstance(result, Placement):
            refused[f"{vm.key} "] = f"{vm.name}: {result.reason}"
            continue
        after = fleet.moved(vm, result.destination)
        new = after.spread()
        if new < spread - EPSILON:
            options.append((new, _cost(vm), vm, result.destination, result, after))
    if not options:
        return None
    under = [o for o in options if o[0] <= limits.threshold_pct]
    best = min(under, key=lambda o: o[1]) if under else min(options, key=lambda o: (o[0], o[1]))
    return best[2], best[3], best[4], best[5]


def apply_plan(hosts: Iterable[BalanceHost], vms: Iterable[BalanceVM], plan: BalancePlan,
               now_s: float) -> tuple[list[BalanceHost], list[BalanceVM]]:
    """``hosts`` and ``vms`` as they are once ``plan``'s moves are done at ``now_s``:
    each moved VM on its destination with its last move recorded, and the hosts' memory
    and CPU shifted as the plan expects (what the next plan starts from)."""
    all_hosts, all_vms = _index(hosts, vms)
    part = {n: h for n, h in all_hosts.items() if not _taking_part(h)}
    where = {v.key: v.vm.source for v in all_vms.values() if v.vm.source in part}
    fleet = _Balanced(part, where, all_vms, plan.uses_cpu)
    moved = dict(all_vms)
    for move in plan.moves:
        vm = all_vms[move.ref]
        fleet = fleet.moved(vm, move.destination)
        moved[move.ref] = replace(vm, vm=replace(vm.vm, source=move.destination),
                                 last_move=LastMove(move.source, move.destination, now_s))
    new_hosts = [fleet.hosts.get(n, h) for n, h in sorted(all_hosts.items())]
    return new_hosts, [moved[n] for n in sorted(moved)]
