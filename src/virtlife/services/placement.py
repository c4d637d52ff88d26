"""Where a VM goes: the one placement that maintenance, balancing and HA share.

``place(vm, hosts, pairs, limits)`` chooses a destination for one VM; ``plan(vms,
hosts, pairs, limits)`` places several in order (an evacuation), counting each
placement's memory, VM and migration slots against the hosts before the next. A host is
a destination only when it is active, not in maintenance, known to answer, has a free
incoming slot (and the VM's source a free outgoing one), keeps its memory reserve once
the VM is there, and passes the migration pre-flight checks for this VM
(``migration.checks.run_checks``) with no fact of theirs unknown: unknown is not yes.
Among those, the most free memory after placement wins; ties go to the fewest VMs, then
the name, whatever the order of the hosts given. A VM that fits nowhere is ``Unplaced``
with its reason and one ``PlacementRefusal`` per host (a failed check's fix with it), never
skipped.

The checks' facts come per host pair (``PairFacts`` by (source, destination)), gathered
once for every VM of the source (``migration.gather.gather_pairs``) and judged here per
VM. This module is pure: plain values in and out; no libvirt, no store, no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from virtlife.config import Settings
from virtlife.errors import InvalidInput
from virtlife.services.migration.checks import (
    CheckOptions,
    HostFacts,
    MigrationKind,
    Report,
    VMFacts,
    run_checks,
)


class Why(StrEnum):
    """Why a host is not a VM's destination (or, for ``Unplaced.kind``, the VM's)."""

    SOURCE = "its source"  # the VM is there
    NO_HOST = "no other host"  # (``Unplaced`` only) nothing but the source was given
    NOT_ACTIVE = "not active"
    MAINTENANCE = "in maintenance"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"  # a fact the choice needs could not be gathered
    NO_SLOT = "no migration slot"
    NO_MEMORY = "not enough memory"
    CHECKS = "failed checks"


@dataclass(frozen=True)
class HostState:
    """One host as placement sees it. ``None`` is unknown, and refuses: a host whose
    reachability or memory is unknown is not a destination."""

    name: str
    total_memory_mib: int | None
    free_memory_mib: int | None
    vms: int = 0  # the VMs it runs (for ties)
    active: bool = True  # in the inventory and taking VMs
    maintenance: bool = False
    reachable: bool | None = True
    error: str = ""  # why it is unreachable or unknown
    outgoing: int = 0  # migrations running from it now
    incoming: int = 0  # migrations running to it now


@dataclass(frozen=True)
class VMToPlace:
    """A VM to move: its facts (as the checks read them), where it is, how it would
    move (live, or offline for a shut-off VM), and the key of its CPU definition in
    ``PairFacts.cpus``."""

    facts: VMFacts
    source: str
    options: CheckOptions = field(default_factory=CheckOptions)
    cpu: str = ""

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def need_mib(self) -> int:
        """The free memory it takes at the destination: none for an offline move."""
        return 0 if self.options.kind is MigrationKind.OFFLINE else self.facts.memory_mib


@dataclass(frozen=True)
class PairFacts:
    """What the pre-flight checks read about one (source, destination) pair, gathered
    once for every VM of the source: the destination's disks hold every path of those
    VMs; ``cpus`` is the destination's answer for each distinct guest CPU definition,
    by key: (``"identical"``/``"superset"``/``"incompatible"`` or None, detail)."""

    source: HostFacts
    destination: HostFacts
    cpus: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)


Pairs = Mapping[tuple[str, str], PairFacts]


@dataclass(frozen=True)
class PlacementLimits:
    """The placement's bounds (``[placement]`` in settings.toml)."""

    reserve_pct: float = 10.0  # of each host's memory, kept free
    max_outgoing: int = 2  # migrations at once from one host
    max_incoming: int = 2  # and to one host

    @classmethod
    def from_settings(cls, settings: Settings) -> PlacementLimits:
        return cls(settings.reserve_pct, settings.max_outgoing, settings.max_incoming)

    def reserve_mib(self, total_mib: int) -> int:
        return math.ceil(total_mib * self.reserve_pct / 100)


@dataclass(frozen=True)
class PlacementRefusal:
    """Why one host cannot take the VM, with what to do about it; ``report`` is the
    pre-flight report when the checks ran."""

    kind: Why
    why: str
    fix: str = ""
    report: Report | None = None


@dataclass(frozen=True)
class Placement:
    vm: str
    source: str
    destination: str
    free_after_mib: int  # the destination's free memory once the VM is there
    report: Report  # the checks behind the choice
    per_host: Mapping[str, PlacementRefusal] = field(default_factory=dict)  # the hosts passed over


@dataclass(frozen=True)
class Unplaced:
    vm: str
    source: str
    kind: Why  # the VM's own problem (no slot at the source, unknown source) or the most
    reason: str  # common refusal; ``reason`` says it in a sentence
    per_host: Mapping[str, PlacementRefusal] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]
    hosts: tuple[HostState, ...]  # as the placements leave them, by name


T = TypeVar("T")


def unique_by(items: Iterable[T], key: Callable[[T], str],
              twice: Callable[[str], str]) -> dict[str, T]:
    """``items`` by ``key``; ``InvalidInput`` saying ``twice(key)`` for a key given twice
    (a pure planner's input must name each host or VM once)."""
    found: dict[str, T] = {}
    for item in items:
        k = key(item)
        if k in found:
            raise InvalidInput(twice(k))
        found[k] = item
    return found


def _index(hosts: Iterable[HostState]) -> dict[str, HostState]:
    return unique_by(hosts, lambda h: h.name,
                     lambda n: f"host {n} is given twice: placement needs one state per host")


def _destination(vm: VMToPlace, pair: PairFacts, host: HostState,
                 planned: Mapping[str, str]) -> HostFacts:
    """The destination's facts for this VM: its answer about the VM's CPU, the memory
    the plan leaves there, the domains the plan has sent there already."""
    cpu, detail = pair.cpus.get(vm.cpu, (None, f"{vm.name}'s CPU definition was not "
                                               "among those gathered"))
    dst = pair.destination
    domains = {**dst.domains, **planned} if planned else dst.domains
    return replace(dst, cpu=cpu, cpu_detail=detail, free_memory_mib=host.free_memory_mib,
                   total_memory_mib=host.total_memory_mib, domains=domains)


def _judge(vm: VMToPlace, host: HostState, pairs: Pairs, limits: PlacementLimits, slots: bool,
           planned: Mapping[str, str]) -> PlacementRefusal | tuple[int, Report]:
    """A refusal, or the free memory left after the VM and the report that passed."""
    name = host.name
    if name == vm.source:
        return PlacementRefusal(Why.SOURCE, f"{vm.name} is there")
    if not host.active:
        return PlacementRefusal(Why.NOT_ACTIVE, f"{name} is not active",
                                f"`virtlife host activate {name}`")
    if host.maintenance:
        return PlacementRefusal(Why.MAINTENANCE, f"{name} is in maintenance",
                                f"`virtlife host activate {name}` ends it")
    if host.reachable is None:
        return PlacementRefusal(Why.UNKNOWN, f"unknown: whether {name} answers"
                                + (f" ({host.error})" if host.error else ""),
                                "check `virtlife host list`, then plan again")
    if not host.reachable:
        return PlacementRefusal(
            Why.UNREACHABLE, f"cannot reach {name}: {host.error or 'no answer'}",
            f"check that libvirtd runs on {name} and that this machine reaches it")
    if slots and host.incoming >= limits.max_incoming:
        return PlacementRefusal(
            Why.NO_SLOT, f"{name} receives {host.incoming} migration(s) already, "
            f"at most {limits.max_incoming} at once",
            "wait for one to end, or raise placement.max_incoming in settings.toml")
    total, free = host.total_memory_mib, host.free_memory_mib
    if total is None or free is None:
        which = "free memory" if total is not None else "memory"
        return PlacementRefusal(Why.UNKNOWN, f"unknown: how much {which} {name} has"
                                + (f" ({host.error})" if host.error else ""),
                                f"check `virsh nodeinfo` and `virsh freecell` on {name}")
    reserve, after = limits.reserve_mib(total), free - vm.need_mib
    if after < reserve:
        return PlacementRefusal(Why.NO_MEMORY, f"{name} has {free} MiB free: {vm.name} needs "
                                f"{vm.need_mib} MiB, and {reserve} MiB ({limits.reserve_pct:g}% of "
                                f"{total} MiB) stay in reserve",
                                f"free memory on {name}, or lower placement.reserve_pct")
    pair = pairs.get((vm.source, name))
    if pair is None:
        return PlacementRefusal(Why.UNKNOWN, f"unknown: the pre-flight facts from {vm.source} to "
                                f"{name} were not gathered", "gather them, then plan again")
    report = run_checks(vm.facts, pair.source, _destination(vm, pair, host, planned),
                        vm.options)
    if report.failures:
        fails = report.failures
        return PlacementRefusal(Why.CHECKS, "; ".join(f"{c.name}: {c.reason}" for c in fails),
                                "; ".join(c.fix for c in fails if c.fix), report)
    if report.unknowns:
        unknowns = report.unknowns
        return PlacementRefusal(Why.UNKNOWN, "unknown: " + "; ".join(f"{c.name}: {c.reason}"
                                                                     for c in unknowns),
                                "; ".join(c.fix for c in unknowns if c.fix), report)
    return after, report


def _source_problem(vm: VMToPlace, hosts: Mapping[str, HostState], limits: PlacementLimits,
                    slots: bool) -> PlacementRefusal | None:
    source = hosts.get(vm.source)
    if source is None:
        return PlacementRefusal(Why.UNKNOWN, f"unknown: {vm.name}'s host {vm.source} is not among "
                                "the hosts, so its migration slots are not known")
    if slots and source.outgoing >= limits.max_outgoing:
        return PlacementRefusal(
            Why.NO_SLOT, f"{vm.source} sends {source.outgoing} migration(s) "
            f"already, at most {limits.max_outgoing} at once",
            "wait for one to end, or raise placement.max_outgoing in settings.toml")
    return None


def _names(hosts: list[str]) -> str:
    shown = ", ".join(hosts[:3])
    return shown + (f" and {len(hosts) - 3} more" if len(hosts) > 3 else "")


def _unplaced(vm: VMToPlace, per_host: dict[str, PlacementRefusal]) -> Unplaced:
    others = {h: r for h, r in per_host.items() if r.kind is not Why.SOURCE}
    if not others:
        return Unplaced(vm.name, vm.source, Why.NO_HOST,
                        f"no host but {vm.source} to move {vm.name} to", per_host)
    if len(others) == 1:
        (host, refusal), = others.items()
        return Unplaced(vm.name, vm.source, refusal.kind,
                        f"{vm.name} cannot go to {host}: {refusal.why}", per_host)
    groups: dict[Why, list[str]] = {}
    for host, refusal in sorted(others.items()):
        groups.setdefault(refusal.kind, []).append(host)
    ranked = sorted(groups.items(), key=lambda g: (-len(g[1]), g[0].value))
    said = "; ".join(f"{kind.value} on {_names(hosts)}" for kind, hosts in ranked)
    return Unplaced(vm.name, vm.source, ranked[0][0],
                    f"no host can take {vm.name}: {said}", per_host)


def _place(vm: VMToPlace, hosts: Mapping[str, HostState], pairs: Pairs, limits: PlacementLimits,
           slots: bool, planned: Mapping[str, Mapping[str, str]]) -> Placement | Unplaced:
    per_host: dict[str, PlacementRefusal] = {}
    best: tuple[tuple[int, int, str], str, int, Report] | None = None
    for name in sorted(hosts):
        host = hosts[name]
        judged = _judge(vm, host, pairs, limits, slots, planned.get(name, {}))
        if isinstance(judged, PlacementRefusal):
            per_host[name] = judged
            continue
        after, report = judged
        rank = (-after, host.vms, name)
        if best is None or rank < best[0]:
            best = (rank, name, after, report)
    problem = _source_problem(vm, hosts, limits, slots)
    if problem is not None:
        return Unplaced(vm.name, vm.source, problem.kind, problem.why
                        + (f"; {problem.fix}" if problem.fix else ""), per_host)
    if best is None:
        return _unplaced(vm, per_host)
    _, name, after, report = best
    return Placement(vm.name, vm.source, name, after, report, per_host)


def place(vm: VMToPlace, hosts: Iterable[HostState], pairs: Pairs,
          limits: PlacementLimits | None = None, *, slots: bool = True) -> Placement | Unplaced:
    """The destination for ``vm`` among ``hosts`` (see the module doc), or why none.

    ``pairs`` holds the pre-flight facts by (source, destination); a host without its
    pair is unknown, and refused. ``slots`` False leaves the migration slots out (a
    dry run that lists where each VM would go, whatever runs now).
    """
    return _place(vm, _index(hosts), pairs, limits or PlacementLimits(), slots, {})


def plan(vms: Iterable[VMToPlace], hosts: Iterable[HostState], pairs: Pairs,
         limits: PlacementLimits | None = None, *, slots: bool = True) -> Plan:
    """Place ``vms`` in the order given, each against the hosts as the earlier
    placements leave them: the destination's free memory less the VM's, one more VM
    there, and (``slots``) one more incoming migration there and outgoing at the
    source, so the plan never holds more migrations at once than the slots allow.

    With ``slots`` the plan is what may start now; a VM refused for want of a slot
    (``Why.NO_SLOT``) waits for the next plan. Without, it is an order to run within
    the slots as they free up (what an evacuation's dry run shows); the runner then
    starts each placement only while both its slots are free. The source's memory is
    not credited: both hosts hold the VM while it moves.
    """
    limits = limits or PlacementLimits()
    state = _index(hosts)
    planned: dict[str, dict[str, str]] = {}
    placements: list[Placement] = []
    unplaced: list[Unplaced] = []
    for vm in vms:
        result = _place(vm, state, pairs, limits, slots, planned)
        if isinstance(result, Unplaced):
            unplaced.append(result)
            continue
        placements.append(result)
        dst = state[result.destination]
        state[dst.name] = replace(dst, free_memory_mib=result.free_after_mib,
                                  vms=dst.vms + 1, incoming=dst.incoming + int(slots))
        src = state[vm.source]
        state[src.name] = replace(src, outgoing=src.outgoing + int(slots))
        planned.setdefault(dst.name, {})[vm.name] = vm.facts.uuid
    return Plan(tuple(placements), tuple(unplaced),
                tuple(state[name] for name in sorted(state)))
