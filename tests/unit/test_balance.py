"""The balance planner (issue 18): unit tests of its choices and refusals, then
hypothesis properties over random fleets: the spread never grows, no pinned or cooling
VM moves, the plan is deterministic (whatever the order of its input), it is bounded by
max moves, and a second plan right after applying the first plans nothing."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement_support import pairs_for, to_place
from virtlife.services.balance import (
    BalanceHost,
    BalanceLimits,
    BalancePlan,
    BalanceVM,
    Hold,
    LastMove,
    Stop,
    apply_plan,
    plan_balance,
)
from virtlife.services.placement import HostState, PlacementLimits

NOW = 1_800_000_000.0
TOTAL = 8192
NO_RESERVE = PlacementLimits(reserve_pct=0)


def bhost(name: str, vms: list[BalanceVM], *, total: int = TOTAL, cpus: int = 4,
          cpu_pct: float | None = None, **state: object) -> BalanceHost:
    mine = [v for v in vms if v.vm.source == name]
    committed = sum(v.memory_mib for v in mine if v.active)
    hs = replace(HostState(name, total, total - committed, vms=len(mine)), **state)
    return BalanceHost(hs, committed, cpus, cpu_pct, "" if cpu_pct is not None else "test")


def bvm(name: str, memory: int, source: str, *, cpu: float | None = None,
        pinned: bool = False, last: LastMove | None = None,
        running: bool = True) -> BalanceVM:
    vm = to_place(name, memory, source, offline=not running)
    return BalanceVM(vm, cpu, pinned, last)


def fleet(vms: list[BalanceVM], names: tuple[str, ...] = ("a", "b", "c"),
          **per: dict[str, object]) -> list[BalanceHost]:
    return [bhost(n, vms, **per.get(n, {})) for n in names]  # type: ignore[arg-type]


def run(hosts: list[BalanceHost], vms: list[BalanceVM], **limits: object) -> BalancePlan:
    names = [h.name for h in hosts]
    pairs = pairs_for(names, tuple(v.name for v in vms))
    return plan_balance(hosts, vms, pairs, NOW, BalanceLimits(**limits),  # type: ignore[arg-type]
                        NO_RESERVE)


def test_a_balanced_fleet_plans_nothing() -> None:
    vms = [bvm("v1", 1024, "a"), bvm("v2", 1024, "b"), bvm("v3", 1024, "c")]
    plan = run(fleet(vms), vms)
    assert plan.moves == () and plan.stop is Stop.BALANCED
    assert plan.spread_before == pytest.approx(0.0)


def test_an_overloaded_host_is_unloaded_until_the_spread_is_under_the_threshold() -> None:
    vms = [bvm(f"v{i}", 1024, "a") for i in range(4)]  # a at 50%, b and c empty
    plan = run(fleet(vms), vms, threshold_pct=20)
    assert plan.spread_before == pytest.approx(50.0)
    assert plan.stop is Stop.BALANCED and plan.spread_after <= 20
    assert {m.source for m in plan.moves} == {"a"}
    assert len(plan.moves) == 2  # the fewest: one to each empty host
    after = {load.host: load.memory_pct for load in plan.after}
    assert after == {"a": pytest.approx(25.0), "b": pytest.approx(12.5),
                     "c": pytest.approx(12.5)}


def test_the_smallest_vm_that_brings_it_under_is_preferred() -> None:
    vms = [bvm("big", 3072, "a"), bvm("small", 1024, "a"), bvm("mid", 2048, "a")]
    plan = run(fleet(vms, ("a", "b")), vms, threshold_pct=60)  # a 75%, b 0%
    assert [m.vm for m in plan.moves] == ["small"]


def test_a_pinned_or_cooling_vm_is_held_and_said_so() -> None:
    last = LastMove("b", "a", NOW - 60)
    vms = [bvm("pinned", 1024, "a", pinned=True), bvm("cool", 1024, "a", last=last),
           bvm("free", 1024, "a")]
    plan = run(fleet(vms, ("a", "b", "c")), vms, threshold_pct=10)
    assert {m.vm for m in plan.moves} == {"free"}
    held = {h.vm: h.why for h in plan.held}
    assert held == {"pinned": Hold.PINNED, "cool": Hold.COOLING}


def test_a_cooled_down_vm_moves_again() -> None:
    last = LastMove("b", "a", NOW - 1801)
    vms = [bvm("v1", 2048, "a", last=last), bvm("v2", 2048, "a", pinned=True)]
    plan = run(fleet(vms, ("a", "c")), vms, threshold_pct=10, cooldown_s=1800)
    assert [m.vm for m in plan.moves] == ["v1"]


def test_no_move_undoes_a_recent_move_of_another_vm() -> None:
    """The balancer moved x from b to a a minute ago: nothing goes from a back to b
    now, though b is the emptier host; c takes it instead."""
    x = bvm("x", 1024, "a", last=LastMove("b", "a", NOW - 60))
    vms = [x, bvm("v1", 1024, "a"), bvm("v2", 1024, "a"), bvm("v3", 1024, "c")]
    plan = run(fleet(vms), vms, threshold_pct=10)
    assert plan.moves and all((m.source, m.destination) != ("a", "b") for m in plan.moves)
    assert plan.moves[0].destination == "c"
    assert any("undo" in r for r in plan.refused)


def test_max_moves_bounds_the_plan_and_says_so() -> None:
    vms = [bvm(f"v{i}", 512, "a") for i in range(8)]
    plan = run(fleet(vms), vms, threshold_pct=1, max_moves=1)
    assert len(plan.moves) == 1 and plan.stop is Stop.MAX_MOVES


def test_cpu_counts_when_every_host_has_it() -> None:
    """Memory is even (25% each); a's CPU is not (80% against 5%). On a host of the same
    size the busy VM would only carry the overload over, so it stays; on a host with
    four times the CPUs it is the one move that brings the spread under."""
    vms = [bvm("busy", 1024, "a", cpu=3.0), bvm("idle", 1024, "a", cpu=0.1),
           bvm("w", 1024, "b", cpu=0.1), bvm("z", 1024, "b", cpu=0.1)]
    same = run(fleet(vms, ("a", "b"), a={"cpu_pct": 80.0}, b={"cpu_pct": 5.0}), vms,
               threshold_pct=30)
    assert same.uses_cpu and same.spread_before == pytest.approx(55.0)
    assert "busy" not in {m.vm for m in same.moves}
    assert same.spread_after < same.spread_before
    bigger = run(fleet(vms, ("a", "b"), a={"cpu_pct": 80.0},
                       b={"cpu_pct": 5.0, "cpus": 16}), vms, threshold_pct=30)
    assert [m.vm for m in bigger.moves] == ["busy"]
    after = {load.host: load.cpu_pct for load in bigger.after}
    assert after["a"] == pytest.approx(5.0) and after["b"] == pytest.approx(23.75)


def test_an_unknown_cpu_makes_the_load_memory_only_and_says_why() -> None:
    vms = [bvm("v1", 1024, "a", cpu=3.0)]
    plan = run(fleet(vms, ("a", "b"), a={"cpu_pct": 90.0}), vms)
    assert not plan.uses_cpu and "CPU unknown on b" in plan.cpu_note


def test_hosts_in_maintenance_or_unreachable_are_left_out() -> None:
    vms = [bvm(f"v{i}", 1024, "a") for i in range(4)]
    hosts = fleet(vms, ("a", "b", "c"), b={"maintenance": True},
                  c={"reachable": None, "error": "timeout"})
    plan = run(hosts, vms)
    assert plan.moves == () and plan.stop is Stop.TOO_FEW_HOSTS
    assert set(plan.left_out) == {"b", "c"}


def test_a_vm_that_fits_nowhere_is_refused_with_the_reason() -> None:
    vms = [bvm("huge", 6000, "a")]
    plan = run(fleet(vms, ("a", "b"), b={"total": 4096}), vms, threshold_pct=10)
    assert plan.moves == () and plan.stop is Stop.NO_MOVE
    assert any(r.startswith("huge: ") and "needs 6000 MiB" in r for r in plan.refused)


# -- properties -----------------------------------------------------------------------------

HOST_NAMES = ("a", "b", "c", "d")


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[BalanceHost], list[BalanceVM], BalanceLimits]:
    count = draw(st.integers(2, 4))
    names = HOST_NAMES[:count]
    with_cpu = draw(st.booleans())
    vms: list[BalanceVM] = []
    for i in range(draw(st.integers(0, 10))):
        last = draw(st.none() | st.builds(
            LastMove, st.sampled_from(names), st.sampled_from(names),
            st.floats(NOW - 7200, NOW)))
        vms.append(bvm(f"v{i}", draw(st.sampled_from([256, 512, 1024, 2048])),
                       draw(st.sampled_from(names)),
                       cpu=draw(st.floats(0, 2)) if with_cpu else None,
                       pinned=draw(st.booleans()), last=last,
                       running=draw(st.integers(0, 5)) > 0))
    hosts = []
    for name in names:
        mine = [v for v in vms if v.vm.source == name]
        cpu = sum(v.cpu_cores or 0 for v in mine if v.active) * 100 / 4 if with_cpu else None
        hosts.append(bhost(name, vms, cpu_pct=cpu, maintenance=draw(st.integers(0, 6)) == 0))
    limits = BalanceLimits(draw(st.sampled_from([5.0, 10.0, 20.0])), draw(st.integers(0, 6)),
                           1800.0)
    return hosts, vms, limits


def plan_of(hosts: list[BalanceHost], vms: list[BalanceVM], limits: BalanceLimits,
            ) -> BalancePlan:
    pairs = pairs_for(list(HOST_NAMES), tuple(v.name for v in vms))
    return plan_balance(hosts, vms, pairs, NOW, limits, NO_RESERVE)


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_property_the_spread_never_grows(case: tuple) -> None:  # type: ignore[type-arg]
    hosts, vms, limits = case
    plan = plan_of(hosts, vms, limits)
    assert plan.spread_after <= plan.spread_before + 1e-9
    spreads = [plan.spread_before] + [m.spread_after for m in plan.moves]
    assert all(b < a for a, b in itertools.pairwise(spreads))


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_property_no_pinned_or_cooling_vm_moves_and_max_moves_bounds(case: tuple) -> None:  # type: ignore[type-arg]
    hosts, vms, limits = case
    plan = plan_of(hosts, vms, limits)
    by_name = {v.name: v for v in vms}
    assert len(plan.moves) <= limits.max_moves
    for move in plan.moves:
        vm = by_name[move.vm]
        assert not vm.pinned and vm.active
        assert vm.last_move is None or NOW - vm.last_move.at_s >= limits.cooldown_s
        recent = {(v.last_move.source, v.last_move.destination) for v in vms
                  if v.last_move and NOW - v.last_move.at_s < limits.cooldown_s}
        assert (move.destination, move.source) not in recent
    assert len({m.vm for m in plan.moves}) == len(plan.moves)


@settings(max_examples=100, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_property_deterministic_whatever_the_order(case: tuple, rnd) -> None:  # type: ignore[no-untyped-def, type-arg]
    hosts, vms, limits = case
    first = plan_of(hosts, vms, limits)
    hosts2, vms2 = list(hosts), list(vms)
    rnd.shuffle(hosts2)
    rnd.shuffle(vms2)
    assert plan_of(hosts2, vms2, limits) == first


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_property_a_second_plan_right_after_the_first_plans_nothing(case: tuple) -> None:  # type: ignore[type-arg]
    hosts, vms, limits = case
    first = plan_of(hosts, vms, limits)
    hosts2, vms2 = apply_plan(hosts, vms, first, NOW)
    second = plan_of(hosts2, vms2, limits)
    if first.stop is not Stop.MAX_MOVES:
        assert second.moves == ()
    assert second.spread_before == pytest.approx(first.spread_after)


def test_the_second_plan_after_a_real_first_is_empty() -> None:
    """The example behind the property: four VMs on a, balanced, then nothing."""
    vms = [bvm(f"v{i}", 1024, "a") for i in range(4)]
    hosts = fleet(vms)
    first = run(hosts, vms, threshold_pct=20)
    assert first.moves
    hosts2, vms2 = apply_plan(hosts, vms, first, NOW)
    assert run(hosts2, vms2, threshold_pct=20).moves == ()
    assert {v.vm.source for v in vms2 if v.last_move} == {m.destination for m in first.moves}

