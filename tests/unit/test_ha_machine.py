"""HA decisions (issue 19, ``services.ha.machine``): one test per rule, on hand-built
snapshots. Proof of death, suspicion that moves nothing, recovery by priority through
the placement with at most 4 starts per target, in-place restart then relocation then
error, waits said once, and nothing from a follower."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from virtlife.services.ha.machine import (
    FenceHost,
    HaSnapshot,
    HAState,
    Health,
    HostMode,
    HostView,
    MarkError,
    MarkHost,
    Restart,
    RestartKind,
    Run,
    Timing,
    VMView,
    WaitFor,
    decide,
    lease_waiting,
)
from virtlife.services.ha.sim import CPU, SimVM, _host_facts, _vm_facts
from virtlife.services.placement import PairFacts

NOW = 100.0
NAMES = [f"vm{i}" for i in range(8)]
PAIRS = {(a, b): PairFacts(_host_facts(a, NAMES), _host_facts(b, NAMES),
                           {CPU: ("identical", "")})
         for a in "abc" for b in "abc" if a != b}


def host(name: str, *, expires: float | None = NOW + 14, free: int = 8192,
         **more: Any) -> HostView:
    return replace(HostView(name, expires, total_memory_mib=8192, free_memory_mib=free),
                   **more)


def vm(name: str, on: str = "a", run: Run = Run.RUNNING, *, memory: int = 1024,
       **more: Any) -> VMView:
    sim = SimVM(f"uuid-{name}", name, on, 0, memory)
    return replace(VMView(sim.uuid, name, on, run, 1, _vm_facts(sim)), **more)


def snap(hosts: list[HostView], vms: list[VMView], **more: Any) -> HaSnapshot:
    return replace(HaSnapshot(NOW, 7, True, tuple(hosts), tuple(vms), PAIRS), **more)


DEAD_A = host("a", expires=NOW - 1, keepalive=False, health=Health.SUSPECT)


def of(actions: tuple[object, ...], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


# -- leadership and the epoch ---------------------------------------------------------

def test_a_follower_decides_nothing_even_for_a_dead_host() -> None:
    s = snap([DEAD_A, host("b")], [vm("vm1")])
    assert decide(s)  # the leader would act
    assert decide(replace(s, leader=False)) == ()


def test_every_action_carries_the_snapshot_epoch() -> None:
    actions = decide(snap([DEAD_A, host("b"), host("c", keepalive=False)],
                          [vm("vm1"), vm("vm2", "c"), vm("vm3", "b", Run.CRASHED)]))
    assert {type(a) for a in actions} >= {MarkHost, Restart, WaitFor}
    assert {a.epoch for a in actions} == {7}


# -- proof of death ---------------------------------------------------------------------

def test_keepalive_failure_only_marks_suspect_and_moves_nothing() -> None:
    actions = decide(snap([host("a", keepalive=False), host("b")], [vm("vm1")]))
    assert actions == (MarkHost(7, "a", Health.SUSPECT, "keepalive failed"),
                       WaitFor(7, "vm1", "uuid-vm1", lease_waiting("a"),
                               f"expires at {NOW + 14:g}"))


def test_an_unknown_keepalive_is_suspicion_not_proof() -> None:
    actions = decide(snap([host("a", keepalive=None), host("b")], [vm("vm1")]))
    assert of(actions, MarkHost) == [MarkHost(7, "a", Health.SUSPECT, "keepalive unknown")]
    assert not of(actions, Restart)


def test_a_lease_not_renewed_for_5_s_marks_suspect_but_still_valid_moves_nothing() -> None:
    fresh = decide(snap([host("a", expires=NOW + 11), host("b")], [vm("vm1")]))
    assert fresh == ()
    late = decide(snap([host("a", expires=NOW + 9), host("b")], [vm("vm1")]))
    assert of(late, MarkHost) == [MarkHost(7, "a", Health.SUSPECT,
                                           "lease not renewed for 6 s")]
    assert not of(late, Restart)


def test_the_lease_expiring_by_the_database_clock_proves_death_and_restarts_elsewhere() -> None:
    just_before = decide(snap([replace(DEAD_A, lease_expires=NOW + 0.5), host("b")],
                              [vm("vm1", reason=lease_waiting("a"))]))
    assert not of(just_before, Restart)
    actions = decide(snap([DEAD_A, host("b")], [vm("vm1")]))
    assert of(actions, MarkHost) == [MarkHost(7, "a", Health.DEAD,
                                              f"its lease expired at {NOW - 1:g}")]
    (restart,) = of(actions, Restart)
    assert (restart.source, restart.target, restart.generation, restart.kind) == (
        "a", "b", 2, RestartKind.RECOVER)
    assert (restart.restarts, restart.relocations) == (0, 0)  # a recovery counts nowhere


def test_a_confirmed_fence_command_proves_death_before_the_lease_expires() -> None:
    a = host("a", keepalive=False, fence_command=True, fence_requested=True,
             power_off_confirmed=True, health=Health.SUSPECT)
    actions = decide(snap([a, host("b")], [vm("vm1")]))
    assert of(actions, MarkHost)[0].why == "its fence command confirmed power-off"
    assert of(actions, Restart)[0].target == "b"


def test_a_fence_command_runs_once_when_the_fencer_is_late_too() -> None:
    a = host("a", expires=NOW + 9, keepalive=False, fence_command=True,
             health=Health.SUSPECT)
    assert of(decide(snap([a, host("b")], [vm("vm1")])), FenceHost) == [
        FenceHost(7, "a", "keepalive failed")]
    assert not of(decide(snap([replace(a, fence_requested=True), host("b")], [vm("vm1")])),
                  FenceHost)
    assert not of(decide(snap([host("a", fence_command=True), host("b")], [vm("vm1")])),
                  FenceHost)


def test_a_keepalive_failure_while_the_fencer_renews_runs_no_fence_command() -> None:
    a = host("a", keepalive=False, fence_command=True, health=Health.SUSPECT,
             suspect_since=NOW - 1000)
    assert not of(decide(snap([a, host("b")], [vm("vm1")])), FenceHost)


def test_without_a_fencer_the_fence_command_waits_for_10_s_of_suspicion() -> None:
    a = host("a", expires=None, keepalive=False, fence_command=True)
    assert not of(decide(snap([a, host("b")], [vm("vm1")])), FenceHost)  # marked now
    a = replace(a, health=Health.SUSPECT, suspect_since=NOW - 9.5)
    assert not of(decide(snap([a, host("b")], [vm("vm1")])), FenceHost)
    a = replace(a, suspect_since=NOW - 10)
    assert of(decide(snap([a, host("b")], [vm("vm1")])), FenceHost) == [
        FenceHost(7, "a", "keepalive failed")]


def test_a_host_with_neither_fencer_nor_fence_command_waits_for_the_operator() -> None:
    a = host("a", expires=None, keepalive=False, health=Health.SUSPECT)
    b = host("b", expires=NOW + 10_014)  # b's fencer renews all along
    later = replace(snap([a, b], [vm("vm1")]), now=NOW + 10_000)
    actions = decide(later)
    assert not of(actions, Restart) and not of(actions, MarkHost)
    (wait,) = of(actions, WaitFor)
    assert "virtlife host confirm-dead a" in wait.reason
    confirmed = decide(replace(later, hosts=(replace(a, confirmed_dead=True), b)))
    assert of(confirmed, MarkHost)[0].why == "an operator confirmed it dead"
    assert of(confirmed, Restart)[0].target == "b"


def test_a_dead_host_whose_fencer_renews_again_is_active() -> None:
    actions = decide(snap([host("a", health=Health.DEAD), host("b")], []))
    assert actions == (MarkHost(7, "a", Health.ACTIVE, "keepalive and lease fine"),)


# -- recovery -----------------------------------------------------------------------------

def test_recovery_never_targets_a_suspect_or_dead_host_or_maintenance() -> None:
    hosts = [DEAD_A, host("b", keepalive=False, health=Health.SUSPECT),
             host("c", mode=HostMode.MAINTENANCE)]
    actions = decide(snap(hosts, [vm("vm1")]))
    assert not of(actions, Restart)
    (wait,) = of(actions, WaitFor)
    assert wait.reason == "no host can take vm1: in maintenance on c; not active on b"
    actions = decide(snap([*hosts, host("d")], [vm("vm1")],
                          pairs={**PAIRS, ("a", "d"): PAIRS["a", "b"]}))
    assert [r.target for r in of(actions, Restart)] == ["d"]


def test_the_highest_priority_gets_the_last_room() -> None:
    vms = [vm("vm1", memory=3000, priority=1), vm("vm2", memory=3000, priority=9)]
    actions = decide(snap([DEAD_A, host("b", free=4096)], vms))
    assert [r.vm for r in of(actions, Restart)] == ["vm2"]
    assert [w.vm for w in of(actions, WaitFor)] == ["vm1"]
    assert "not enough memory on b" in of(actions, WaitFor)[0].reason


def test_at_most_4_starts_per_target_count_those_already_under_way() -> None:
    dead = [vm(f"vm{i}") for i in range(6)]
    actions = decide(snap([DEAD_A, host("b", free=65536)], dead))
    assert [r.vm for r in of(actions, Restart)] == ["vm0", "vm1", "vm2", "vm3"]
    assert [w.vm for w in of(actions, WaitFor)] == ["vm4", "vm5"]
    starting = [vm("vm6", "b", Run.STARTING), vm("vm7", "b", Run.STARTING)]
    actions = decide(snap([DEAD_A, host("b", free=65536)], dead + starting))
    assert [r.vm for r in of(actions, Restart)] == ["vm0", "vm1"]


def test_a_stopped_vm_on_a_dead_host_is_left_alone() -> None:
    actions = decide(snap([DEAD_A, host("b")], [vm("vm1", run=Run.STOPPED)]))
    assert actions == (MarkHost(7, "a", Health.DEAD, f"its lease expired at {NOW - 1:g}"),)


# -- a VM that failed on a live host -----------------------------------------------------

@pytest.mark.parametrize("run", [Run.CRASHED, Run.FENCED])
def test_a_failed_vm_restarts_in_place_then_elsewhere_then_goes_to_error(run: Run) -> None:
    hosts = [host("a"), host("b")]
    (first,) = decide(snap(hosts, [vm("vm1", run=run)]))
    assert isinstance(first, Restart)
    assert (first.target, first.kind, first.restarts, first.generation) == (
        "a", RestartKind.IN_PLACE, 1, 2)
    (second,) = decide(snap(hosts, [vm("vm1", run=run, restarts=1)]))
    assert isinstance(second, Restart)
    assert (second.target, second.kind, second.relocations) == ("b", RestartKind.RELOCATE, 1)
    (third,) = decide(snap(hosts, [vm("vm1", "b", run=run, restarts=1, relocations=1)]))
    assert isinstance(third, MarkError)
    assert "after 1 restart(s) in place (max_restart 1) and 1 relocation(s)" in third.reason
    assert decide(snap(hosts, [vm("vm1", "b", run=run, restarts=1, relocations=1,
                                  ha=HAState.ERROR)])) == ()


def test_a_crash_on_a_host_in_maintenance_relocates_instead_of_restarting_in_place() -> None:
    (action,) = decide(snap([host("a", mode=HostMode.MAINTENANCE), host("b")],
                            [vm("vm1", run=Run.CRASHED)]))
    assert isinstance(action, Restart) and action.kind is RestartKind.RELOCATE
    assert action.target == "b"


def test_a_crash_on_a_suspect_host_waits() -> None:
    actions = decide(snap([host("a", keepalive=False, health=Health.SUSPECT), host("b")],
                          [vm("vm1", run=Run.CRASHED)]))
    assert [type(a) for a in actions] == [WaitFor]


# -- waits are said once ----------------------------------------------------------------

def test_a_wait_is_not_repeated_when_only_its_figures_change() -> None:
    a = host("a", keepalive=False, health=Health.SUSPECT)
    (wait,) = decide(snap([a, host("b")], [vm("vm1")]))
    assert isinstance(wait, WaitFor)
    # the fencer renews while libvirt stays unreachable: a new expiry, the same wait
    renewed = replace(a, lease_expires=NOW + 15)
    assert decide(snap([renewed, host("b")], [vm("vm1", reason=wait.reason)])) == ()
    full = decide(snap([DEAD_A, host("b", free=1000)], [vm("vm1")]))
    reason = of(full, WaitFor)[0].reason
    fuller = decide(snap([host("a", expires=NOW - 1, keepalive=False, health=Health.DEAD),
                          host("b", free=900)], [vm("vm1", reason=reason)]))
    assert fuller == ()


def test_a_vm_that_runs_again_has_its_wait_cleared_once() -> None:
    (cleared,) = decide(snap([host("a"), host("b")], [vm("vm1", reason=lease_waiting("a"))]))
    assert cleared == WaitFor(7, "vm1", "uuid-vm1", "")
    assert decide(snap([host("a"), host("b")], [vm("vm1")])) == ()


def test_timing_refuses_an_order_that_would_allow_a_double_run() -> None:
    with pytest.raises(ValueError, match="renew < self-fence < TTL"):
        Timing(self_fence_s=15, ttl_s=15)
