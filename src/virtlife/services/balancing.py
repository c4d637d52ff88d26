"""What ``virtlife balance`` and ``vm pin`` do: gather the fleet's facts, ask the pure
planner (``services.balance``), keep the pins.

``balance_plan`` samples every host's load (``services.load``), reads each host as
placement sees it and the pre-flight facts of each (source, destination) pair for the
active VMs of the source (``migration.gather``: once per pair, not per VM), adds the
pins and the balancer's last moves from the store, and returns the plan. It moves
nothing. A host that did not answer takes no part (the plan says why). ``pin`` and
``unpin`` record a VM by its UUID. The run of a plan (through the maintenance
machinery's runner) is not here yet.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.services.balance import (
    BalanceHost,
    BalanceLimits,
    BalancePlan,
    BalanceVM,
    LastMove,
    plan_balance,
)
from virtlife.services.fleet import Fleet
from virtlife.services.load import DEFAULT_WINDOW_S, HostLoad, sample_loads
from virtlife.services.migration.gather import gather_pairs, host_state
from virtlife.services.placement import HostState, PairFacts, PlacementLimits
from virtlife.store import Store


@dataclass(frozen=True)
class Pinned:
    vm: str
    uuid: str
    changed: bool  # False: it was so already


def pin(fleet: Fleet, store: Store, ref: str) -> Pinned:
    """Keep the VM ``ref`` names out of balancing (by its UUID, wherever it goes)."""
    guest = fleet.resolve(ref)
    uuid = guest.uuid()
    return Pinned(guest.name, uuid, store.balance.pin(uuid, guest.name))


def unpin(fleet: Fleet, store: Store, ref: str) -> Pinned:
    """Let the balancer move the VM again. A UUID that no host has any more may be
    given, to drop its pin."""
    try:
        guest = fleet.resolve(ref)
        name, uuid = guest.name, guest.uuid()
    except errors.VMNotFound:
        pins = store.balance.pins()
        if ref not in pins:
            raise
        name, uuid = pins[ref].vm, ref
    return Pinned(name, uuid, store.balance.unpin(uuid))


def _gathered(host: Host, others: dict[str, Host | None], problems: dict[str, str],
              ) -> tuple[HostState, list[BalanceVM], dict[tuple[str, str], PairFacts]]:
    state = host_state(host.name, host)
    active = [g for g in host.guests() if g.status().state.is_active]
    if not active:
        return state, [], {}
    got = gather_pairs(host, active, others, problems)
    return state, [BalanceVM(vm) for vm in got.vms], dict(got.pairs)


def balance_plan(fleet: Fleet, store: Store | None, limits: BalanceLimits,
                 placement: PlacementLimits, *, window_s: float = DEFAULT_WINDOW_S,
                 sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], float] = time.time) -> tuple[BalancePlan, dict[str, HostLoad]]:
    """The balance plan for the fleet now, and the loads it was made from."""
    loads, problems = sample_loads(fleet, window_s=window_s, sleep=sleep)
    unreachable = {p.host: p.message for p in problems}
    names = sorted(fleet.refs)
    hosts = {n: fleet.host(n, connect=False) for n in loads}
    others_of = {n: {o: hosts.get(o) for o in names if o != n} for n in loads}
    results, failed = fleet.each_host(
        lambda h: _gathered(h, others_of[h.name], unreachable), sorted(loads),
        deadline_s=max(60.0, fleet.connect_timeout_s))
    unreachable.update({p.host: p.message for p in failed})
    away = {h.name for h in store.hosts.list() if h.maintenance} if store is not None \
        else set()  # hosts in maintenance take no part (``services.maintenance``)
    pins = store.balance.pins() if store is not None else {}
    moves = store.balance.moves() if store is not None else {}
    balance_hosts: list[BalanceHost] = []
    vms: list[BalanceVM] = []
    pairs: dict[tuple[str, str], PairFacts] = {}
    for name in names:
        load = loads.get(name)
        if name not in results or load is None:
            balance_hosts.append(BalanceHost(HostState(
                name, None, None, reachable=False,
                error=unreachable.get(name, "no answer")), 0.0))
            continue
        state, found, got = results[name]
        if name in away:
            state = dataclasses.replace(state, maintenance=True)
        pairs.update(got)
        balance_hosts.append(BalanceHost(state, load.committed_mib, load.cpus, load.cpu_pct,
                                         load.cpu_why))
        for vm in found:
            uuid = vm.vm.facts.uuid
            seen = load.vms.get(uuid)
            last = moves.get(uuid)
            vms.append(BalanceVM(
                vm.vm, seen.cpu_cores if seen is not None else None, uuid in pins,
                None if last is None else LastMove(last.from_host, last.to_host,
                                                   last.moved_at.timestamp())))
    plan = plan_balance(balance_hosts, vms, pairs, now(), limits, placement)
    return plan, loads
