"""The convergence policy on synthetic sample series, the watchdog and --on-timeout.

The series follow the recipe's measurements (a 256 MiB guest, the link capped at
64 MiB/s): an idle guest is across in 3 passes; a guest rewriting 64 MiB keeps 17-90 MiB
dirty after every pass at ~16,300 dirty pages/s (63.7 MiB/s), one pass a second.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtlife import errors
from virtlife.services.migration.phases import MIB, JobSample, MigrationPhase
from virtlife.services.migration.policy import (
    Decision,
    Limits,
    PolicyAction,
    PolicyState,
    PostcopyMode,
    TimeoutAction,
    compressed_warning,
    estimate_convergence,
    next_step,
    on_timeout,
    plan_start,
    stalled,
    stalled_for,
    watchdog,
)

P = MigrationPhase
TOTAL = 273 * MIB
DIRTY = 16300 * 4096  # the recipe's `dirty 64`: 63.7 MiB/s


def sample(at: float, iteration: int, remaining_mib: float, *, dirty: float | None = DIRTY,
           bw_mib: float | None = 64, processed_mib: float | None = None,
           throttle: int | None = None, phase: MigrationPhase | None = None) -> JobSample:
    if phase is None:
        phase = P.TRANSFERRING if iteration <= 1 else P.ITERATING
    return JobSample(phase=phase, at_s=at, iteration=iteration, memory_total=TOTAL,
                     memory_processed=int((processed_mib if processed_mib is not None
                                           else at * 64) * MIB),
                     memory_remaining=int(remaining_mib * MIB),
                     bandwidth=bw_mib * MIB if bw_mib else None, dirty_rate=dirty,
                     throttle_pct=throttle)


def first_pass(seconds: int = 4) -> list[JobSample]:
    """The first pass: 256 MiB at 64 MiB/s, nothing dirty measured yet."""
    out = [JobSample(P.PREPARING, 0.0)]
    for t in range(1, seconds + 1):
        out.append(sample(t, 1, 256 - 64 * t + 20, dirty=0))
    return out


def dirtier(remaining_mib: Sequence[float], start: int = 5) -> list[JobSample]:
    """Passes 2.. of a guest that dirties as fast as the link sends, one pass a second."""
    return [sample(start + i, 2 + i, r) for i, r in enumerate(remaining_mib)]


HARD = [90, 70, 80, 66, 75, 88, 71, 69, 84, 77, 90, 72, 68, 80, 75]  # > 1 s at 64 MiB/s
# Peaks over 1 s at 64 MiB/s, but the least (60 MiB) would go in 1000 ms: worth a raise.
BORDER = [70, 60, 75, 62, 72, 61, 74, 63, 70, 60, 75, 62, 73, 61, 71]
MEDIUM = [55, 17, 40, 30, 48, 22, 35, 50, 19, 44]  # ~0.9 s at most: 1000 ms lets it through


def drive(series: Sequence[JobSample], limits: Limits, start: PolicyState | None = None,
          ) -> tuple[list[Decision], PolicyState]:
    """Feed the samples one by one, as the orchestrator does, carrying decisions out;
    from ``start`` (default: ``plan_start``'s state)."""
    state = plan_start(limits) if start is None else start
    seen: list[JobSample] = []
    decisions: list[Decision] = []
    for progress in series:
        seen.append(progress)
        decision = next_step(state, seen, limits)
        if decision is not None:
            decisions.append(decision)
            state = state.after(decision)
    return decisions, state


def actions(decisions: Sequence[Decision]) -> list[tuple[PolicyAction, int | None]]:
    return [(d.action, d.value) for d in decisions]


# -- escalation sequences --------------------------------------------------------------

def test_an_idle_guest_converges_without_a_step() -> None:
    series = [*first_pass(2), sample(3, 3, 0, dirty=0, phase=P.STOPPED)]
    assert drive(series, Limits())[0] == []


def test_a_guest_dirtying_slower_than_the_link_is_left_alone() -> None:
    series = [*first_pass(), *[sample(5 + i, 2 + i, r, dirty=20 * MIB)
                               for i, r in enumerate([60, 30, 20, 12, 8])]]
    assert drive(series, Limits())[0] == []


def test_the_dirtier_escalates_downtime_then_auto_converge_then_post_copy() -> None:
    decisions, state = drive([*first_pass(), *dirtier(BORDER)], Limits(auto_converge=True))
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000),
                                  (PolicyAction.AUTO_CONVERGE, None),
                                  (PolicyAction.POSTCOPY, None)]
    assert [d.at_s for d in decisions] == [7, 10, 13]  # a full window (3 samples) each
    assert decisions[0].reason == (
        "dirty rate 64 MiB/s ≥ 95% of bandwidth 64 MiB/s for 3 samples: raising max "
        "downtime 300 → 1000 ms (its bound)")
    assert "leaving it to auto-converge (armed at start; no throttle yet)" in decisions[1].reason
    assert "switching to post-copy" in decisions[2].reason
    assert state.postcopy_started and state.downtime_ms == 1000
    assert [s.action for s in state.steps] == [d.action for d in decisions]


def test_without_auto_converge_armed_it_goes_from_downtime_to_post_copy_and_says_why() -> None:
    decisions, _ = drive([*first_pass(), *dirtier(BORDER)], Limits())
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000),
                                  (PolicyAction.POSTCOPY, None)]
    assert "auto-converge was not armed at start, and QEMU cannot add it now" in \
        decisions[1].reason


def test_a_raise_that_cannot_let_it_through_is_skipped_while_a_later_rung_exists() -> None:
    decisions, state = drive([*first_pass(), *dirtier(HARD)], Limits(auto_converge=True))
    assert actions(decisions) == [(PolicyAction.AUTO_CONVERGE, None), (PolicyAction.POSTCOPY, None)]
    # the window 90, 70, 80 MiB: its least, 70 MiB, needs 1094 ms at 64 MiB/s
    assert "even the least left needs 1094 ms, over the 1000 ms bound: no downtime raise" \
        in decisions[0].reason
    assert state.downtime_ms == 300  # never raised for nothing
    decisions, _ = drive([*first_pass(), *dirtier(HARD)], Limits())
    assert actions(decisions) == [(PolicyAction.POSTCOPY, None)]
    assert decisions[0].at_s == 7  # one window after the first pass, not two


def test_with_no_later_rung_a_hopeless_raise_is_still_the_last_try() -> None:
    limits = Limits(postcopy=PostcopyMode.NEVER)
    decisions, _ = drive([*first_pass(), *dirtier(HARD)], limits)
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000),
                                  (PolicyAction.EXHAUSTED, None)]


def test_policy_off_takes_no_step() -> None:
    decisions, state = drive([*first_pass(), *dirtier(HARD)],
                             Limits(auto_converge=True, escalate=False))
    assert decisions == [] and state.downtime_ms == 300


def test_postcopy_never_stops_before_it_and_says_so_once() -> None:
    limits = Limits(auto_converge=True, postcopy=PostcopyMode.NEVER)
    decisions, state = drive([*first_pass(), *dirtier(BORDER * 2)], limits)
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000),
                                  (PolicyAction.AUTO_CONVERGE, None),
                                  (PolicyAction.EXHAUSTED, None)]
    assert "post-copy is not allowed (--postcopy never)" in decisions[-1].reason
    assert "--on-timeout abort decides" in decisions[-1].reason
    assert not state.postcopy_armed


def test_postcopy_always_switches_once_the_first_pass_is_done() -> None:
    decisions, _ = drive([*first_pass(), *dirtier(HARD)], Limits(postcopy=PostcopyMode.ALWAYS))
    assert actions(decisions) == [(PolicyAction.POSTCOPY, None)]
    assert decisions[0].at_s == 5 and "iteration 2" in decisions[0].reason


def test_a_downtime_raise_that_lets_it_through_is_the_last_step() -> None:
    decisions, _ = drive([*first_pass(), *dirtier(MEDIUM)], Limits(auto_converge=True))
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1000)]


def test_downtime_rises_step_by_step_to_what_is_needed_under_a_high_bound() -> None:
    series = [*first_pass(), *dirtier([55, 17, 40, 30, 48, 90, 70, 80, 66, 75, 88])]
    decisions, state = drive(series, Limits(max_downtime_ms=5000))
    # 55 MiB at 64 MiB/s needs 859 ms (+25 %: 1100); then 90 MiB needs 1406 (+25 %: 1800)
    assert actions(decisions) == [(PolicyAction.RAISE_DOWNTIME, 1100),
                                  (PolicyAction.RAISE_DOWNTIME, 1800)]
    assert state.downtime_ms == 1800


def test_a_bound_under_the_start_downtime_starts_there_and_never_rises() -> None:
    limits = Limits(max_downtime_ms=50)
    assert plan_start(limits).downtime_ms == 50
    decisions, _ = drive([*first_pass(), *dirtier(HARD)], limits)
    assert actions(decisions) == [(PolicyAction.POSTCOPY, None)]
    assert "at max downtime 50 ms (its bound)" in decisions[0].reason


@pytest.mark.parametrize("good_one", [0, 1, 2])
def test_one_sample_under_the_bandwidth_holds_the_step_back(good_one: int) -> None:
    window = dirtier([90, 60, 30])  # each a new pass, each leaving less
    assert actions(drive([*first_pass(), *window], Limits())[0]) == \
        [(PolicyAction.RAISE_DOWNTIME, 1000)]  # QEMU's dirty rate says it cannot last
    window[good_one] = dataclasses.replace(window[good_one], dirty_rate=10 * MIB)
    assert drive([*first_pass(), *window], Limits())[0] == []


def test_a_pass_seen_mid_way_is_not_mistaken_for_shrinking() -> None:
    # one slow pass sampled three times (90 -> 30 as it sends), then the next starts at 88
    window = [sample(5, 2, 90, dirty=30 * MIB), sample(6, 2, 60, dirty=30 * MIB),
              sample(7, 2, 30, dirty=30 * MIB), sample(8, 3, 88, dirty=30 * MIB)]
    found = estimate_convergence(window, 300)
    assert found.converges is False and "(iterations 2-3)" in found.reason


def test_no_step_on_a_single_sample_or_during_the_first_pass() -> None:
    slow_first_pass = [JobSample(P.PREPARING, 0.0),
                       *[sample(t, 1, 256 - 2 * t, dirty=DIRTY) for t in range(1, 30)]]
    assert drive(slow_first_pass, Limits(window=1))[0] == []
    assert drive([*first_pass(), *dirtier([90, 90])], Limits())[0] == []


def test_nothing_is_decided_once_post_copy_runs_or_the_job_stopped() -> None:
    state = plan_start(Limits())
    series = [*first_pass(), *dirtier(HARD[:3])]
    assert next_step(state, series, Limits()) is not None
    assert next_step(state, [*series, sample(8, 5, 0, phase=P.STOPPED)], Limits()) is None
    started = state.after(Decision(PolicyAction.POSTCOPY, "switch", 7))
    assert next_step(started, [*series, *dirtier(HARD, start=8)], Limits()) is None


@settings(max_examples=200, deadline=None)
@given(
    remaining=st.lists(st.floats(0, 300), min_size=1, max_size=40),
    dirty=st.lists(st.one_of(st.none(), st.floats(0, 200)), min_size=1, max_size=40),
    bw=st.lists(st.one_of(st.none(), st.floats(1, 200)), min_size=1, max_size=40),
    bound=st.integers(1, 5000),
    start=st.integers(1, 5000),
    auto_converge=st.booleans(),
    postcopy=st.sampled_from(list(PostcopyMode)),
    window=st.integers(1, 5),
)
def test_the_policy_never_exceeds_its_bounds(
        remaining: list[float], dirty: list[float | None], bw: list[float | None],
        bound: int, start: int, auto_converge: bool, postcopy: PostcopyMode,
        window: int) -> None:
    series = [sample(1 + i, 1 + i, r, dirty=None if d is None else d * MIB, bw_mib=b)
              for i, (r, d, b) in enumerate(zip(remaining, dirty * 40, bw * 40, strict=False))]
    limits = Limits(max_downtime_ms=bound, start_downtime_ms=start,
                    auto_converge=auto_converge, postcopy=postcopy, window=window)
    decisions, state = drive(series, limits)
    raised = [d.value or 0 for d in decisions if d.action is PolicyAction.RAISE_DOWNTIME]
    assert all(min(start, bound) < v <= bound for v in raised)
    assert raised == sorted(set(raised))  # each raise goes higher
    kinds = [d.action for d in decisions]
    assert kinds.count(PolicyAction.AUTO_CONVERGE) <= int(auto_converge)
    assert kinds.count(PolicyAction.POSTCOPY) <= int(postcopy is not PostcopyMode.NEVER)
    assert kinds.count(PolicyAction.EXHAUSTED) <= 1
    assert all(k in (PolicyAction.POSTCOPY, PolicyAction.EXHAUSTED) for k in kinds[-1:]) or \
        not any(k in (PolicyAction.POSTCOPY, PolicyAction.EXHAUSTED) for k in kinds)
    if postcopy is not PostcopyMode.ALWAYS:
        times = [series[0].at_s - 1, *(d.at_s for d in decisions)]
        assert all(b - a >= window for a, b in itertools.pairwise(times))
    assert state.downtime_ms <= bound


# -- estimate_convergence --------------------------------------------------------------

@pytest.mark.parametrize(("samples", "allowed", "verdict", "words"), [
    ([], 300, None, "not measured yet"),
    ([sample(1, 1, 200, bw_mib=None)], 300, None, "not measured yet"),
    (first_pass()[1:], 300, None, "first pass over memory not done"),
    ([sample(5, 2, 15), sample(6, 3, 10)], 300, True, "15 MiB left goes in 234 ms"),
    (dirtier([90, 70, 80]), 300, False, "dirty rate 64 MiB/s ≥ 95% of bandwidth"),
    (dirtier([90, 70, 80]), 1500, True, "within the 1500 ms allowed"),
    ([sample(5 + i, 2 + i, r, dirty=30 * MIB) for i, r in enumerate([80, 78, 79])],
     300, False, "79 MiB still left after 3 samples (iterations 2-4)"),
    ([sample(5 + i, 2 + i, r, dirty=30 * MIB) for i, r in enumerate([80, 50, 30])],
     300, True, "remaining shrinks 80 MiB → 30 MiB over 3 passes, dirty rate 30 MiB/s"),
    ([sample(5, 2, 80, dirty=30 * MIB), sample(6, 2, 50, dirty=30 * MIB)],
     300, True, "each pass leaves less than the last"),
])
def test_estimate_convergence(samples: list[JobSample], allowed: int, verdict: bool | None,
                              words: str) -> None:
    found = estimate_convergence(samples, allowed)
    assert found.converges is verdict
    assert words in found.reason


def test_estimate_uses_the_largest_remaining_of_the_window() -> None:
    found = estimate_convergence(dirtier([17, 55, 40]), 300)
    assert found.needed_downtime_ms == pytest.approx(55 / 64 * 1000)
    assert found.bandwidth == 64 * MIB and found.dirty_rate == DIRTY


# -- limits and start -------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "words"), [
    ({"max_downtime_ms": 0}, "at least 1 ms"),
    ({"start_downtime_ms": -5}, "at least 1 ms"),
    ({"window": 0}, "use 1 or more"),
    ({"postcopy": PostcopyMode.NEVER, "on_timeout": TimeoutAction.POSTCOPY},
     "--postcopy never"),
])
def test_limits_refuse_what_cannot_work(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(errors.InvalidInput, match=words):
        Limits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("limits", "ac", "pc", "downtime"), [
    (Limits(), False, True, 300),
    (Limits(auto_converge=True, postcopy=PostcopyMode.NEVER), True, False, 300),
    (Limits(postcopy=PostcopyMode.ALWAYS, max_downtime_ms=100), False, True, 100),
])
def test_plan_start_says_which_flags_to_arm(limits: Limits, ac: bool, pc: bool,
                                            downtime: int) -> None:
    state = plan_start(limits)
    assert (state.auto_converge_armed, state.postcopy_armed, state.downtime_ms) == \
        (ac, pc, downtime)
    assert state.as_dict()["steps"] == []


# -- the watchdog ------------------------------------------------------------------------

def cut_link(cut_at: int, until: int) -> list[JobSample]:
    """A pass at 20 MiB/s whose bytes stop moving when the link is cut at ``cut_at``."""
    return [sample(t, 1, 200 - 20 * min(t, cut_at), processed_mib=20 * min(t, cut_at))
            for t in range(1, until + 1)]


def test_a_cut_link_is_caught_after_the_bound_not_libvirts_28_s() -> None:
    assert not stalled(cut_link(5, 14))
    assert stalled_for(cut_link(5, 14)) == 9
    assert stalled(cut_link(5, 15))
    decision = watchdog(cut_link(5, 15))
    assert decision is not None and decision.action is PolicyAction.ABORT
    assert decision.at_s == 15
    assert decision.reason.startswith("no bytes moved for 10 s (bound 10 s) at 100 MiB")
    assert "the VM keeps running at the source" in decision.reason


def test_moving_bytes_and_a_shorter_bound() -> None:
    moving = cut_link(99, 30)
    assert not stalled(moving) and watchdog(moving) is None
    assert stalled(cut_link(5, 8), bound_s=3)
    assert not stalled([])


def test_disk_bytes_count_as_movement() -> None:
    frozen = cut_link(1, 12)
    copying = [dataclasses.replace(s, disk_processed=int(s.at_s) * MIB) for s in frozen]
    assert stalled(frozen) and not stalled(copying)


def test_a_stalled_post_copy_is_not_aborted_but_reported_with_the_way_back() -> None:
    post = [sample(t, 4, 50, processed_mib=300, phase=P.POSTCOPY) for t in range(1, 13)]
    decision = watchdog(post)
    assert decision is not None and decision.action is PolicyAction.POSTCOPY_STALLED
    assert "cannot go back" in decision.reason and "--postcopy-resume" in decision.reason


def test_a_finished_job_is_never_stalled() -> None:
    done = [sample(t, 3, 0, processed_mib=150, phase=P.COMPLETED) for t in range(1, 20)]
    assert not stalled(done) and watchdog(done) is None


# -- --on-timeout ------------------------------------------------------------------------

START = plan_start(Limits())
IN_POSTCOPY = START.after(Decision(PolicyAction.POSTCOPY, "switch", 5))
NOT_ARMED = plan_start(Limits(postcopy=PostcopyMode.NEVER))
PAUSED = START.after(Decision(PolicyAction.PAUSE, "pause", 5))


@pytest.mark.parametrize(("action", "state", "expected", "words"), [
    (TimeoutAction.ABORT, START, PolicyAction.ABORT, "keeps running at the source"),
    (TimeoutAction.POSTCOPY, START, PolicyAction.POSTCOPY, "switching to post-copy"),
    (TimeoutAction.POSTCOPY, NOT_ARMED, PolicyAction.ABORT, "post-copy was not armed"),
    (TimeoutAction.PAUSE, START, PolicyAction.PAUSE, "pausing the VM at the source"),
    (TimeoutAction.PAUSE, PAUSED, PolicyAction.CONTINUE, "paused at the source already"),
    (TimeoutAction.ABORT, IN_POSTCOPY, PolicyAction.CONTINUE, "letting post-copy finish"),
    (TimeoutAction.POSTCOPY, IN_POSTCOPY, PolicyAction.CONTINUE, "letting post-copy finish"),
    (TimeoutAction.PAUSE, IN_POSTCOPY, PolicyAction.CONTINUE, "letting post-copy finish"),
])
def test_on_timeout(action: TimeoutAction, state: PolicyState, expected: PolicyAction,
                    words: str) -> None:
    decision = on_timeout(action, state, timeout_s=60, at_s=60.5)
    assert decision.action is expected
    assert decision.reason.startswith("not finished within --timeout 60 s")
    assert words in decision.reason
    assert decision.as_dict()["action"] == expected.value


# -- --compressed -----------------------------------------------------------------------

def test_compressed_warns_loudest_under_tcg() -> None:
    tcg = compressed_warning(virt_type="qemu", qemu_version=(7, 2, 22))
    assert "2 of 2 runs" in tcg and "under TCG on QEMU 7.2.22" in tcg
    assert "unless the guest is idle" in tcg
    kvm = compressed_warning(virt_type="kvm", qemu_version=None)
    assert "not measured under KVM on this QEMU" in kvm
