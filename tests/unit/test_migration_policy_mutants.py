"""The convergence policy, pinned where mutation testing (mutmut) found it loose.

Each test here failed on at least one surviving mutant of ``policy.py``: a reason an
operator reads, a bound met exactly, a decision in a state the other tests never built.
The series helpers and the recipe's sample shapes are those of test_migration_policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_migration_policy import (
    BORDER,
    DIRTY,
    HARD,
    P,
    actions,
    cut_link,
    dirtier,
    drive,
    first_pass,
    sample,
)

from virtlife import errors
from virtlife.services.migration.phases import MIB, JobSample, MigrationPhase
from virtlife.services.migration.policy import (
    Decision,
    Limits,
    PolicyAction,
    PolicyState,
    PostcopyMode,
    TimeoutAction,
    estimate_convergence,
    next_step,
    on_timeout,
    plan_start,
    stalled,
    stalled_for,
    watchdog,
)

AT_BOUND = ("dirty rate 64 MiB/s ≥ 95% of bandwidth 64 MiB/s for 3 samples, "
            "at max downtime 1000 ms (its bound)")
NOT_ARMED_AC = " (auto-converge was not armed at start, and QEMU cannot add it now)"
RAISED = ("dirty rate 64 MiB/s ≥ 95% of bandwidth 64 MiB/s for 3 samples: raising max "
          "downtime 300 → 1000 ms (its bound)")


# -- next_step: every reason in full -------------------------------------------------------

@pytest.mark.parametrize(("limits", "series", "reasons"), [
    (Limits(postcopy=PostcopyMode.ALWAYS), dirtier(HARD), [
        "first pass over memory done (iteration 2): switching to post-copy (--postcopy "
        "always); the VM runs at the destination from now on"]),
    (Limits(auto_converge=True), dirtier(BORDER), [
        RAISED,
        f"{AT_BOUND}: leaving it to auto-converge (armed at start; no throttle yet) for 3 "
        "more samples",
        f"{AT_BOUND}: switching to post-copy; the VM runs at the destination from now on"]),
    (Limits(), dirtier(BORDER), [
        RAISED,
        f"{AT_BOUND}{NOT_ARMED_AC}: switching to post-copy; the VM runs at the destination "
        "from now on"]),
    (Limits(postcopy=PostcopyMode.NEVER), dirtier(BORDER), [
        RAISED,
        f"{AT_BOUND}{NOT_ARMED_AC}; post-copy is not allowed (--postcopy never): nothing "
        "left to try, --on-timeout abort decides"]),
    (Limits(auto_converge=True, postcopy=PostcopyMode.NEVER,
            on_timeout=TimeoutAction.PAUSE), dirtier(HARD), [
        "dirty rate 64 MiB/s ≥ 95% of bandwidth 64 MiB/s for 3 samples; even the least "
        "left needs 1094 ms, over the 1000 ms bound: no downtime raise: leaving it to "
        "auto-converge (armed at start; no throttle yet) for 3 more samples",
        RAISED,
        f"{AT_BOUND}; post-copy is not allowed (--postcopy never): nothing left to try, "
        "--on-timeout pause decides"]),
])
def test_each_rung_says_what_it_saw_and_does_in_full(
        limits: Limits, series: list[JobSample], reasons: list[str]) -> None:
    decisions, _ = drive([*first_pass(), *series], limits)
    assert [d.reason for d in decisions] == reasons
    assert [str(d) for d in decisions] == reasons


def test_a_raise_under_the_bound_does_not_call_itself_the_bound() -> None:
    # 51.456 MiB at 64 MiB/s needs 804 ms; +25 % is 1005 ms, rounded up to 1100 (not 1000)
    decisions, state = drive([*first_pass(), *dirtier([51.456, 40, 45])],
                             Limits(max_downtime_ms=5000))
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1100)]
    assert decisions[0].reason == (
        "dirty rate 64 MiB/s ≥ 95% of bandwidth 64 MiB/s for 3 samples: raising max "
        "downtime 300 → 1100 ms")
    assert state.downtime_ms == 1100


# -- next_step: the skip of a hopeless raise, at its edge and with each later rung -----------

def test_a_least_remaining_that_just_fits_the_bound_is_worth_a_raise() -> None:
    # the window 70, 64, 75 MiB: its least, 64 MiB, needs exactly 1000 ms at 64 MiB/s
    decisions, _ = drive([*first_pass(), *dirtier([70, 64, 75])], Limits(auto_converge=True))
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000)]


def test_auto_converge_alone_is_a_later_rung_then_the_raise_is_the_last_try() -> None:
    limits = Limits(auto_converge=True, postcopy=PostcopyMode.NEVER)
    decisions, state = drive([*first_pass(), *dirtier(HARD)], limits)
    assert actions(decisions) == [(PolicyAction.AUTO_CONVERGE, None),
                                  (PolicyAction.RAISE_DOWNTIME, 1000),
                                  (PolicyAction.EXHAUSTED, None)]
    assert [d.at_s for d in decisions] == [7, 10, 13]
    assert state.exhausted and state.auto_converge_rung and state.downtime_ms == 1000


def test_post_copy_not_armed_is_no_later_rung_and_never_switched_to() -> None:
    # --postcopy auto, but the flag was not set at the start: no switch is possible
    state = dataclasses.replace(plan_start(Limits()), postcopy_armed=False)
    decisions, after = drive([*first_pass(), *dirtier(HARD)], Limits(), start=state)
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000),
                                  (PolicyAction.EXHAUSTED, None)]
    assert decisions[1].reason == (
        f"{AT_BOUND}{NOT_ARMED_AC}; post-copy was not armed at start: nothing left to try, "
        "--on-timeout abort decides")
    assert not after.postcopy_started


@pytest.mark.parametrize("postcopy", list(PostcopyMode))
def test_post_copy_is_never_armed_for_a_vm_that_does_not_run(postcopy: PostcopyMode) -> None:
    # libvirt refuses post-copy for a paused VM or a --suspended move
    limits = Limits(postcopy=postcopy)
    assert not plan_start(limits, running=False).postcopy_armed
    assert plan_start(limits).postcopy_armed is (postcopy is not PostcopyMode.NEVER)


@pytest.mark.parametrize("done", [
    {"paused": True}, {"exhausted": True}, {"postcopy_started": True}])
def test_no_step_once_paused_exhausted_or_in_post_copy(done: dict[str, Any]) -> None:
    series = [*first_pass(), *dirtier(HARD[:3])]
    assert next_step(plan_start(Limits()), series, Limits()) is not None
    assert next_step(dataclasses.replace(plan_start(Limits()), **done), series,
                     Limits()) is None


def test_no_step_without_samples() -> None:
    assert next_step(plan_start(Limits()), [], Limits()) is None


# -- estimate_convergence: the edges and what it measured ---------------------------------------

def test_what_is_left_going_in_exactly_the_allowed_downtime_converges() -> None:
    found = estimate_convergence(dirtier([64, 60, 62]), 1000)
    assert found.converges is True
    assert found.reason == "64 MiB left goes in 1000 ms at 64 MiB/s, within the 1000 ms allowed"


def test_a_dirty_rate_of_exactly_95_percent_of_the_bandwidth_does_not_converge() -> None:
    window = [sample(5 + i, 2 + i, r, dirty=0.95 * (64 * MIB)) for i, r in enumerate([80, 50, 30])]
    found = estimate_convergence(window, 300)
    assert found.converges is False
    assert found.reason == "dirty rate 61 MiB/s ≥ 95% of bandwidth 64 MiB/s for 3 samples"


def test_a_pass_leaving_exactly_90_percent_is_stuck_just_under_it_shrinks() -> None:
    window = [sample(5, 2, 100, dirty=30 * MIB), sample(6, 3, 90, dirty=30 * MIB)]
    found = estimate_convergence(window, 300)
    assert found.converges is False
    assert found.reason == ("90 MiB still left after 2 samples (iterations 2-3), needing "
                            "1562 ms at 64 MiB/s")
    window[1] = sample(6, 3, 89.5, dirty=30 * MIB)
    assert estimate_convergence(window, 300).converges is True


def test_a_pass_is_judged_by_its_largest_remaining_not_its_last_sample() -> None:
    # pass 3 began with 85 MiB (stuck against 90); sampled late it shows 20 MiB
    window = [sample(5, 2, 90, dirty=30 * MIB), sample(6, 3, 85, dirty=30 * MIB),
              sample(7, 3, 20, dirty=30 * MIB)]
    found = estimate_convergence(window, 300)
    assert found.converges is False
    assert found.reason.startswith("85 MiB still left after 3 samples (iterations 2-3)")


def test_two_passes_that_shrink_say_so() -> None:
    window = [sample(5, 2, 80, dirty=30 * MIB), sample(6, 3, 50, dirty=30 * MIB)]
    found = estimate_convergence(window, 300)
    assert found.converges is True
    assert found.reason == ("remaining shrinks 80 MiB → 50 MiB over 2 passes, dirty rate "
                            "30 MiB/s under bandwidth 64 MiB/s")


def test_nothing_measured_says_why() -> None:
    found = estimate_convergence([], 300)
    assert found == dataclasses.replace(
        found, converges=None, reason="not measured yet: no bandwidth reading in pre-copy",
        needed_downtime_ms=None, least_downtime_ms=None, dirty_rate=None, bandwidth=None)


SHRINKING = [sample(5 + i, 2 + i, r, dirty=30 * MIB) for i, r in enumerate([80, 50, 30])]


@pytest.mark.parametrize(("samples", "allowed", "verdict", "needed", "least", "rate"), [
    (dirtier([90, 70, 80]), 1500, True, 90 / 64 * 1000, 70 / 64 * 1000, DIRTY),
    (first_pass()[1:], 300, None, 212 / 64 * 1000, 20 / 64 * 1000, 0),
    (dirtier([90, 70, 80]), 300, False, 90 / 64 * 1000, 70 / 64 * 1000, DIRTY),
    ([sample(5 + i, 2 + i, r, dirty=30 * MIB) for i, r in enumerate([80, 78, 79])], 300,
     False, 80 / 64 * 1000, 78 / 64 * 1000, 30 * MIB),
    (SHRINKING, 300, True, 80 / 64 * 1000, 30 / 64 * 1000, 30 * MIB),
    (SHRINKING[:2], 300, True, 80 / 64 * 1000, 50 / 64 * 1000, 30 * MIB),
    ([sample(5, 2, 80, dirty=30 * MIB), sample(6, 2, 50, dirty=30 * MIB)], 300, True,
     80 / 64 * 1000, 50 / 64 * 1000, 30 * MIB),
    ([sample(5, 2, 30), sample(6, 3, 0)], 1000, True, 30 / 64 * 1000, 0, DIRTY),
    ([sample(5, 2, 0), sample(6, 3, 0)], 300, True, 0, 0, DIRTY),
])
def test_every_verdict_carries_what_it_measured(
        samples: list[JobSample], allowed: int, verdict: bool | None, needed: float,
        least: float, rate: float) -> None:
    found = estimate_convergence(samples, allowed)
    assert found.converges is verdict
    assert (found.needed_downtime_ms, found.least_downtime_ms, found.dirty_rate,
            found.bandwidth) == (needed, least, rate, 64 * MIB)  # exactly


# -- PolicyState and Decision: what --json prints ----------------------------------------------

def test_each_decision_carried_out_changes_only_its_own_part_of_the_state() -> None:
    start = plan_start(Limits(auto_converge=True))
    untouched: dict[str, object] = {"downtime_ms": 300, "auto_converge_rung": False,
                                    "postcopy_started": False, "exhausted": False,
                                    "paused": False}
    cases: list[tuple[Decision, dict[str, object]]] = [
        (Decision(PolicyAction.RAISE_DOWNTIME, "r", 7.0, 1000), {"downtime_ms": 1000}),
        (Decision(PolicyAction.RAISE_DOWNTIME, "r", 7.0), {}),
        (Decision(PolicyAction.AUTO_CONVERGE, "a", 7.0), {"auto_converge_rung": True}),
        (Decision(PolicyAction.POSTCOPY, "p", 7.0), {"postcopy_started": True}),
        (Decision(PolicyAction.EXHAUSTED, "e", 7.0), {"exhausted": True}),
        (Decision(PolicyAction.PAUSE, "z", 7.0), {"paused": True}),
        (Decision(PolicyAction.ABORT, "x", 7.0), {}),
        (Decision(PolicyAction.CONTINUE, "c", 7.0), {})]
    for decision, changed in cases:
        after = start.after(decision)
        assert {k: getattr(after, k) for k in untouched} == {**untouched, **changed}, decision
        assert after.last_step_at_s == 7.0 and after.steps == (decision,)
        assert after.auto_converge_armed and after.postcopy_armed


def test_the_state_and_its_decisions_as_json() -> None:
    assert plan_start(Limits()).as_dict() == {
        "downtime_ms": 300, "auto_converge": False, "postcopy_armed": True,
        "postcopy_started": False, "steps": []}
    state = plan_start(Limits(auto_converge=True)).after(
        Decision(PolicyAction.RAISE_DOWNTIME, "raised", 7.126, 1000)).after(
        Decision(PolicyAction.POSTCOPY, "switched", 10.0))
    assert state.as_dict() == {
        "downtime_ms": 1000, "auto_converge": True, "postcopy_armed": True,
        "postcopy_started": True,
        "steps": [{"action": "raise-downtime", "value": 1000, "at_s": 7.13, "reason": "raised"},
                  {"action": "postcopy", "value": None, "at_s": 10.0, "reason": "switched"}]}


# -- Limits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_downtime_ms": 0}, "cannot use a max downtime of 0 ms: give at least 1 ms "
                             "(--max-downtime)"),
    ({"start_downtime_ms": -5}, "cannot use a max downtime of -5 ms: give at least 1 ms "
                                "(--max-downtime)"),
    ({"start_downtime_ms": 0}, "cannot use a max downtime of 0 ms: give at least 1 ms "
                               "(--max-downtime)"),
    ({"window": 0}, "cannot decide on 0 samples: use 1 or more"),
    ({"postcopy": PostcopyMode.NEVER, "on_timeout": TimeoutAction.POSTCOPY},
     "cannot switch to post-copy on timeout with --postcopy never: use --on-timeout abort "
     "or pause, or allow post-copy (--postcopy auto)"),
])
def test_limits_say_exactly_what_cannot_work(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        Limits(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_the_smallest_limits_are_allowed_and_the_defaults_are_policy_auto() -> None:
    Limits(max_downtime_ms=1, start_downtime_ms=1, window=1)
    Limits(postcopy=PostcopyMode.ALWAYS, on_timeout=TimeoutAction.POSTCOPY)
    assert Limits() == Limits(max_downtime_ms=1000, start_downtime_ms=300,
                              auto_converge=False, postcopy=PostcopyMode.AUTO,
                              on_timeout=TimeoutAction.ABORT, window=3, escalate=True)


# -- the watchdog ------------------------------------------------------------------------------

def test_the_watchdog_keeps_to_its_given_bound() -> None:
    decision = watchdog(cut_link(5, 8), bound_s=3)
    assert decision is not None and decision.action is PolicyAction.ABORT
    assert decision.reason == ("no bytes moved for 3 s (bound 3 s) at 100 MiB: the link to "
                               "the destination may be down; aborting, the VM keeps running "
                               "at the source")
    assert watchdog(cut_link(5, 7), bound_s=3) is None


def test_a_stalled_post_copy_is_reported_in_full_at_its_last_sample() -> None:
    post = [sample(t, 4, 50, processed_mib=300, phase=P.POSTCOPY) for t in range(1, 13)]
    decision = watchdog(post)
    assert decision is not None and decision.at_s == 12
    assert decision.reason == (
        "no bytes moved for 11 s (bound 10 s) at 300 MiB in post-copy: the VM runs at the "
        "destination and its missing pages are still at the source, so it cannot go back; "
        "libvirt pauses it at the destination if the link is lost (paused, post-copy "
        "failed): once the link is back, recover it with --postcopy-resume")


@pytest.mark.parametrize("phase", [P.PREPARING, P.STOPPED])
def test_a_stall_while_preparing_or_stopped_at_the_source_is_aborted(
        phase: MigrationPhase) -> None:
    # the destination never answers, or the last pages and device state do not move
    frozen = [JobSample(phase, float(t), memory_processed=5 * MIB) for t in range(11)]
    decision = watchdog(frozen)
    assert decision is not None and decision.action is PolicyAction.ABORT


def test_a_stall_of_one_sample_counts() -> None:
    assert stalled_for(cut_link(5, 6)) == 1
    assert stalled_for(cut_link(5, 5)) == 0


def test_a_job_that_completed_after_frozen_samples_is_not_stalled() -> None:
    frozen = cut_link(1, 12)
    done = [*frozen, dataclasses.replace(frozen[-1], at_s=13, phase=P.COMPLETED)]
    assert stalled(frozen)
    assert stalled_for(done) == 0.0 and not stalled(done, bound_s=0.5)
    assert watchdog(done) is None
    assert stalled_for([done[-1]]) == 0.0


@pytest.mark.parametrize(("moved_mib", "shown"), [
    (9.5, "9.5 MiB"), (10, "10 MiB"), (10.25, "10 MiB"), (300, "300 MiB")])
def test_bytes_moved_are_shown_to_a_tenth_under_10_mib_whole_above(
        moved_mib: float, shown: str) -> None:
    frozen = [sample(t, 1, 100, processed_mib=moved_mib) for t in range(1, 12)]
    decision = watchdog(frozen)
    assert decision is not None
    assert decision.reason.startswith(f"no bytes moved for 10 s (bound 10 s) at {shown}:")


# -- --on-timeout --------------------------------------------------------------------------------

START = plan_start(Limits())


@pytest.mark.parametrize(("action", "state", "reason"), [
    (TimeoutAction.ABORT, START,
     ": aborting (--on-timeout abort); the VM keeps running at the source"),
    (TimeoutAction.POSTCOPY, START,
     ": switching to post-copy (--on-timeout postcopy); the VM runs at the destination from "
     "now on"),
    (TimeoutAction.POSTCOPY, plan_start(Limits(postcopy=PostcopyMode.NEVER)),
     "; post-copy was not armed at start: aborting instead, the VM keeps running at the "
     "source"),
    (TimeoutAction.PAUSE, START,
     ": pausing the VM at the source so the rest goes across (--on-timeout pause); it "
     "resumes at the destination"),
    (TimeoutAction.PAUSE, START.after(Decision(PolicyAction.PAUSE, "pause", 5)),
     "; the VM is paused at the source already: letting the rest go across"),
    (TimeoutAction.ABORT, START.after(Decision(PolicyAction.POSTCOPY, "switch", 5)),
     ", in post-copy: the VM runs at the destination and cannot come back; letting "
     "post-copy finish"),
])
def test_on_timeout_says_it_in_full(action: TimeoutAction, state: PolicyState,
                                    reason: str) -> None:
    decision = on_timeout(action, state, timeout_s=90.5, at_s=91.0)
    assert decision.reason == f"not finished within --timeout 90.5 s{reason}"
    assert decision.at_s == 91.0 and decision.value is None
