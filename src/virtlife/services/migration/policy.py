"""The convergence policy (``--policy auto``), the stall watchdog and ``--on-timeout``.

Plain functions over a series of ``JobSample`` and the limits the operator allowed; they
decide, the orchestrator acts (each ``PolicyAction`` names the one libvirt call it stands
for) and prints each ``Decision`` with its reason. Nothing here calls libvirt, sleeps
or reads a clock: time is the samples' ``at_s``.

The ladder, one rung per decision, each only after ``window`` samples in a row (since
the last rung) said pre-copy does not converge:

1. raise the allowed downtime: first to what the largest remaining of the window needs
   (with a margin), then to its bound, never above ``Limits.max_downtime_ms``; skipped,
   saying so, when even the least remaining of the window needs more than the bound
   and a later rung exists (a raise that cannot let it through only costs a window);
2. auto-converge: QEMU refuses to add that capability to a running migration, so it
   exists only when it was armed at the start (``plan_start``); then this rung gives
   QEMU's throttle one more window before the next;
3. post-copy where allowed (``--postcopy auto``; ``always`` switches as soon as the
   first pass is over, ``never`` never): the VM runs at the destination from then on;
4. nothing left: said once (``PolicyAction.EXHAUSTED``); ``--timeout`` and ``--on-timeout``
   decide the rest (``on_timeout``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from virtlife import errors
from virtlife.services.migration.phases import MIB, JobSample, MigrationPhase

QEMU_DOWNTIME_MS = 300  # QEMU's default allowed downtime: where a migration starts
DEFAULT_MAX_DOWNTIME_MS = 1000  # the bound when --max-downtime is not given
STALL_BOUND_S = 10.0  # a cut link stalls libvirt ~28 s (keepalive) before it fails
NEAR = 0.95  # a dirty rate at 95 % of the bandwidth counts as "as fast as sent"
STUCK = 0.9  # remaining still above 90 % of where the window began: not shrinking
MARGIN = 1.25  # a raised downtime leaves a quarter more than the window needed


class PostcopyMode(StrEnum):
    """``--postcopy``: whether the policy may switch to post-copy."""

    AUTO = "auto"  # when pre-copy does not converge otherwise
    NEVER = "never"
    ALWAYS = "always"  # as soon as the first pass over memory is done


class TimeoutAction(StrEnum):
    """``--on-timeout``: what happens when ``--timeout`` passes."""

    ABORT = "abort"  # cancel; the VM keeps running at the source
    POSTCOPY = "postcopy"  # switch to post-copy (the VM runs at the destination)
    PAUSE = "pause"  # pause the VM at the source so the rest fits (libvirt resumes it)


class PolicyAction(StrEnum):
    """What a decision asks of the orchestrator, and the libvirt call for it."""

    RAISE_DOWNTIME = "raise-downtime"  # migrateSetMaxDowntime(value)
    AUTO_CONVERGE = "auto-converge"  # no call: armed at start, QEMU throttles the vCPUs
    POSTCOPY = "postcopy"  # migrateStartPostCopy()
    EXHAUSTED = "exhausted"  # no call: nothing left to try before --timeout
    CONTINUE = "continue"  # no call: the timeout's action is done already or impossible
    ABORT = "abort"  # abortJob(); the VM keeps running at the source
    PAUSE = "pause"  # suspend() at the source; libvirt resumes it at the destination
    POSTCOPY_STALLED = "postcopy-stalled"  # no call can help: report, offer the resume


@dataclass(frozen=True)
class Decision:
    action: PolicyAction
    reason: str  # what was seen and what is done, for the operator
    at_s: float  # the sample it was decided on
    value: int | None = None  # RAISE_DOWNTIME: the new max downtime in ms

    def __str__(self) -> str:
        return self.reason

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "value": self.value,
                "at_s": round(self.at_s, 2), "reason": self.reason}


@dataclass(frozen=True)
class Limits:
    """What the operator allows the policy (defaults: ``--policy auto`` alone)."""

    max_downtime_ms: int = DEFAULT_MAX_DOWNTIME_MS  # --max-downtime: the bound
    start_downtime_ms: int = QEMU_DOWNTIME_MS  # where it starts (capped by the bound)
    auto_converge: bool = False  # --auto-converge: armed at the start
    postcopy: PostcopyMode = PostcopyMode.AUTO
    on_timeout: TimeoutAction = TimeoutAction.ABORT
    window: int = 3  # samples in a row before a rung (the hysteresis)
    escalate: bool = True  # --policy auto; False (--policy off): no rung is ever taken

    def __post_init__(self) -> None:
        if self.max_downtime_ms < 1 or self.start_downtime_ms < 1:
            raise errors.InvalidInput(
                f"cannot use a max downtime of {min(self.max_downtime_ms, self.start_downtime_ms)}"
                " ms: give at least 1 ms (--max-downtime)")
        if self.window < 1:
            raise errors.InvalidInput(f"cannot decide on {self.window} samples: use 1 or more")
        if self.on_timeout is TimeoutAction.POSTCOPY and self.postcopy is PostcopyMode.NEVER:
            raise errors.InvalidInput(
                "cannot switch to post-copy on timeout with --postcopy never: use "
                "--on-timeout abort or pause, or allow post-copy (--postcopy auto)")


@dataclass(frozen=True)
class PolicyState:
    """What the policy has done so far; ``after`` gives the next state."""

    downtime_ms: int  # the max downtime in force
    auto_converge_armed: bool  # VIR_MIGRATE_AUTO_CONVERGE at the start
    postcopy_armed: bool  # VIR_MIGRATE_POSTCOPY at the start (the switch is ours)
    auto_converge_rung: bool = False  # its window was given
    postcopy_started: bool = False
    exhausted: bool = False
    paused: bool = False
    last_step_at_s: float | None = None
    steps: tuple[Decision, ...] = ()

    def after(self, decision: Decision) -> PolicyState:
        """The state once the orchestrator has carried ``decision`` out."""
        changes: dict[str, Any] = {"last_step_at_s": decision.at_s,
                                   "steps": (*self.steps, decision)}
        if decision.action is PolicyAction.RAISE_DOWNTIME and decision.value is not None:
            changes["downtime_ms"] = decision.value
        elif decision.action is PolicyAction.AUTO_CONVERGE:
            changes["auto_converge_rung"] = True
        elif decision.action is PolicyAction.POSTCOPY:
            changes["postcopy_started"] = True
        elif decision.action is PolicyAction.EXHAUSTED:
            changes["exhausted"] = True
        elif decision.action is PolicyAction.PAUSE:
            changes["paused"] = True
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {"downtime_ms": self.downtime_ms,
                "auto_converge": self.auto_converge_armed,
                "postcopy_armed": self.postcopy_armed,
                "postcopy_started": self.postcopy_started,
                "steps": [d.as_dict() for d in self.steps]}


def plan_start(limits: Limits, *, running: bool = True) -> PolicyState:
    """The state a migration starts in, which says how to start it: the flags
    VIR_MIGRATE_AUTO_CONVERGE (``auto_converge_armed``) and VIR_MIGRATE_POSTCOPY
    (``postcopy_armed``: it only allows the switch), and the max downtime to set with
    migrateSetMaxDowntime once the job exists (libvirt 9.0 has no start parameter).

    ``running`` False: a live move of a paused VM, or one paused for the copy
    (--suspended). libvirt refuses post-copy there ("not supported with non-live or
    paused migration"), and a paused guest writes no memory, so pre-copy ends anyway:
    post-copy is not armed whatever the limits say."""
    return PolicyState(downtime_ms=min(limits.start_downtime_ms, limits.max_downtime_ms),
                       auto_converge_armed=limits.auto_converge,
                       postcopy_armed=running and limits.postcopy is not PostcopyMode.NEVER)


@dataclass(frozen=True)
class Convergence:
    """Whether pre-copy converges: True, False, or None (not measured yet)."""

    converges: bool | None
    reason: str
    needed_downtime_ms: float | None = None  # what the window's largest remaining needs
    least_downtime_ms: float | None = None  # what its least remaining needs
    dirty_rate: float | None = None  # mean over the window, bytes/s
    bandwidth: float | None = None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _mib(nbytes: float) -> str:
    value = nbytes / MIB
    return f"{value:.1f} MiB" if value < 10 else f"{value:.0f} MiB"


def estimate_convergence(samples: Sequence[JobSample], max_downtime_ms: int) -> Convergence:
    """Will pre-copy converge with ``max_downtime_ms`` allowed, judging by ``samples``?

    QEMU stops the VM once what is left goes within the allowed downtime:
    remaining / bandwidth <= max downtime, with the window's largest remaining (a sample
    in the middle of a pass sees less than the pass began with). Otherwise, over samples
    of the later passes, it does not converge when every one of them saw the guest
    dirty memory at 95 % of the bandwidth or more, or when what is left after a pass
    (each pass's largest remaining) did not shrink below 90 % of the window's first.
    A window still in the first pass, or without a bandwidth, tells nothing yet.
    """
    usable = [s for s in samples if s.phase.is_precopy and s.bandwidth
              and s.memory_remaining is not None]
    if not usable:
        return Convergence(None, "not measured yet: no bandwidth reading in pre-copy")
    bandwidth = _mean([s.bandwidth for s in usable if s.bandwidth])
    peak = max(s.memory_remaining or 0 for s in usable)
    needed = peak / bandwidth * 1000
    least = min(s.memory_remaining or 0 for s in usable) / bandwidth * 1000
    dirty = [s.dirty_rate for s in usable if s.dirty_rate is not None]
    rate = _mean(dirty) if dirty else None
    bw = _mib(bandwidth) + "/s"
    found = {"needed_downtime_ms": needed, "least_downtime_ms": least, "dirty_rate": rate,
             "bandwidth": bandwidth}
    if needed <= max_downtime_ms:
        return Convergence(True, f"{_mib(peak)} left goes in {needed:.0f} ms at {bw}, "
                                 f"within the {max_downtime_ms} ms allowed", **found)
    later = [s for s in usable if s.phase is MigrationPhase.ITERATING]
    if len(later) < len(usable) or len(later) < 2:
        return Convergence(None, f"first pass over memory not done; {_mib(peak)} left "
                                 f"would need {needed:.0f} ms at {bw}", **found)
    n = len(later)
    if rate is not None and all(s.dirty_rate is not None and s.bandwidth
                                and s.dirty_rate >= NEAR * s.bandwidth for s in later):
        return Convergence(False, f"dirty rate {_mib(rate)}/s ≥ {NEAR:.0%} of bandwidth "
                                  f"{bw} for {n} samples", **found)
    passes: dict[int, int] = {}
    for s in later:
        passes[s.iteration] = max(passes.get(s.iteration, 0), s.memory_remaining or 0)
    peaks = [passes[i] for i in sorted(passes)]
    first, last = peaks[0], peaks[-1]
    if len(peaks) >= 2 and last >= STUCK * first:
        return Convergence(False, f"{_mib(last)} still left after {n} samples "
                                  f"(iterations {min(passes)}-{max(passes)}), "
                                  f"needing {needed:.0f} ms at {bw}", **found)
    under = f"dirty rate {_mib(rate)}/s under bandwidth {bw}" if rate is not None \
        else f"bandwidth {bw}"
    if len(peaks) < 2:
        return Convergence(True, f"{under}: each pass leaves less than the last", **found)
    return Convergence(True, f"remaining shrinks {_mib(first)} → {_mib(last)} over "
                             f"{len(peaks)} passes, {under}", **found)


def _raise_to(state: PolicyState, limits: Limits, seen: Convergence) -> int:
    """The next allowed downtime: what the window needed (with the margin, rounded up
    to 100 ms) when that is under the bound and above today's, else the bound."""
    bound = limits.max_downtime_ms
    if seen.needed_downtime_ms is None:
        return bound
    wanted = int(math.ceil(seen.needed_downtime_ms * MARGIN / 100) * 100)
    return wanted if state.downtime_ms < wanted < bound else bound


def next_step(state: PolicyState, samples: Sequence[JobSample], limits: Limits,
              ) -> Decision | None:
    """The policy's next rung, or None to let the migration run as it is.

    Only samples after the last decision count, and only pre-copy ones: each rung gets
    a full window of its own before the next is taken.
    """
    if (not limits.escalate or state.postcopy_started or state.exhausted or state.paused
            or not samples):
        return None
    now = samples[-1]
    if not now.phase.is_precopy:
        return None
    if (limits.postcopy is PostcopyMode.ALWAYS and state.postcopy_armed
            and now.phase is MigrationPhase.ITERATING):
        return Decision(PolicyAction.POSTCOPY, f"first pass over memory done (iteration "
                        f"{now.iteration}): switching to post-copy (--postcopy always); "
                        "the VM runs at the destination from now on", now.at_s)
    since = [s for s in samples if state.last_step_at_s is None
             or s.at_s > state.last_step_at_s]
    window = since[-limits.window:]
    if len(window) < limits.window or not all(s.phase.is_precopy for s in window):
        return None
    seen = estimate_convergence(window, state.downtime_ms)
    if seen.converges is not False:
        return None
    later_rung = (state.auto_converge_armed and not state.auto_converge_rung) or (
        limits.postcopy is PostcopyMode.AUTO and state.postcopy_armed)
    hopeless = (seen.least_downtime_ms is not None
                and seen.least_downtime_ms > limits.max_downtime_ms)
    if state.downtime_ms < limits.max_downtime_ms and not (hopeless and later_rung):
        value = _raise_to(state, limits, seen)
        bound = " (its bound)" if value == limits.max_downtime_ms else ""
        return Decision(PolicyAction.RAISE_DOWNTIME, f"{seen.reason}: raising max downtime "
                        f"{state.downtime_ms} → {value} ms{bound}", now.at_s, value)
    if state.downtime_ms < limits.max_downtime_ms:
        at_bound = (f"{seen.reason}; even the least left needs "
                    f"{seen.least_downtime_ms:.0f} ms, over the {limits.max_downtime_ms} ms "
                    "bound: no downtime raise")
    else:
        at_bound = f"{seen.reason}, at max downtime {state.downtime_ms} ms (its bound)"
    if state.auto_converge_armed and not state.auto_converge_rung:
        throttle = f"throttle now {now.throttle_pct} %" if now.throttle_pct else \
            "no throttle yet"
        return Decision(PolicyAction.AUTO_CONVERGE, f"{at_bound}: leaving it to auto-converge "
                        f"(armed at start; {throttle}) for {limits.window} more samples",
                        now.at_s)
    ac_note = "" if state.auto_converge_armed else \
        " (auto-converge was not armed at start, and QEMU cannot add it now)"
    if limits.postcopy is PostcopyMode.AUTO and state.postcopy_armed:
        return Decision(PolicyAction.POSTCOPY, f"{at_bound}{ac_note}: switching to post-copy; "
                        "the VM runs at the destination from now on", now.at_s)
    why = ("post-copy is not allowed (--postcopy never)" if limits.postcopy is
           PostcopyMode.NEVER else "post-copy was not armed at start")
    return Decision(PolicyAction.EXHAUSTED, f"{at_bound}{ac_note}; {why}: nothing left to try, "
                    f"--on-timeout {limits.on_timeout.value} decides", now.at_s)


# -- the watchdog -----------------------------------------------------------------------

_WATCHED = {MigrationPhase.PREPARING, MigrationPhase.TRANSFERRING, MigrationPhase.ITERATING,
            MigrationPhase.STOPPED, MigrationPhase.POSTCOPY}


def stalled_for(samples: Sequence[JobSample]) -> float:
    """Seconds the transferred bytes (memory and disks) have not moved, up to the last
    sample; 0 when they moved at the last sample or the job is not running."""
    if not samples or samples[-1].phase not in _WATCHED:
        return 0.0
    last = samples[-1]
    since = last
    for sample in reversed(samples[:-1]):
        if sample.transferred != last.transferred or sample.phase not in _WATCHED:
            break
        since = sample
    return last.at_s - since.at_s


def stalled(samples: Sequence[JobSample], bound_s: float = STALL_BOUND_S) -> bool:
    """True when nothing has moved for ``bound_s`` seconds of samples."""
    return stalled_for(samples) >= bound_s


def watchdog(samples: Sequence[JobSample], bound_s: float = STALL_BOUND_S,
             ) -> Decision | None:
    """Abort a stalled migration sooner than libvirt's keepalive (~28 s), saying why;
    a stalled post-copy cannot be aborted: it is reported with how to recover."""
    if not stalled(samples, bound_s):
        return None
    last = samples[-1]
    idle = stalled_for(samples)
    moved = f"no bytes moved for {idle:.0f} s (bound {bound_s:g} s) at {_mib(last.transferred)}"
    if last.phase is MigrationPhase.POSTCOPY:
        return Decision(PolicyAction.POSTCOPY_STALLED, f"{moved} in post-copy: the VM runs at the "
                        "destination and its missing pages are still at the source, so it "
                        "cannot go back; libvirt pauses it at the destination if the link is "
                        "lost (paused, post-copy failed): once the link is back, recover it "
                        "with --postcopy-resume", last.at_s)
    return Decision(PolicyAction.ABORT, f"{moved}: the link to the destination may be down; "
                    "aborting, the VM keeps running at the source", last.at_s)


# -- --timeout ----------------------------------------------------------------------------

def on_timeout(action: TimeoutAction, state: PolicyState, *, timeout_s: float,
               at_s: float) -> Decision:
    """What ``--on-timeout`` does once ``--timeout`` has passed. Once in post-copy
    nothing can be done (it cannot be aborted, paused or switched again): CONTINUE,
    with the reason; likewise when the VM is paused already."""
    head = f"not finished within --timeout {timeout_s:g} s"
    if state.postcopy_started:
        return Decision(PolicyAction.CONTINUE, f"{head}, in post-copy: the VM runs at the "
                        "destination and cannot come back; letting post-copy finish", at_s)
    if action is TimeoutAction.POSTCOPY:
        if not state.postcopy_armed:
            return Decision(PolicyAction.ABORT, f"{head}; post-copy was not armed at start: "
                            "aborting instead, the VM keeps running at the source", at_s)
        return Decision(PolicyAction.POSTCOPY, f"{head}: switching to post-copy (--on-timeout "
                        "postcopy); the VM runs at the destination from now on", at_s)
    if action is TimeoutAction.PAUSE:
        if state.paused:
            return Decision(PolicyAction.CONTINUE, f"{head}; the VM is paused at the source "
                            "already: letting the rest go across", at_s)
        return Decision(PolicyAction.PAUSE, f"{head}: pausing the VM at the source so the rest "
                        "goes across (--on-timeout pause); it resumes at the destination",
                        at_s)
    return Decision(PolicyAction.ABORT, f"{head}: aborting (--on-timeout abort); the VM keeps "
                    "running at the source", at_s)


# -- --compressed -----------------------------------------------------------------------

def compressed_warning(*, virt_type: str, qemu_version: tuple[int, int, int] | None,
                       ) -> str:
    """The warning printed before a ``--compressed`` (XBZRLE) migration.

    Measured on QEMU 7.2 under TCG (libvirt ``type='qemu'``): a guest writing to memory
    panicked at the destination after an XBZRLE migration in 2 of 2 runs (stack
    corruption); an idle guest was fine. Not measured under KVM.
    """
    version = "QEMU " + ".".join(map(str, qemu_version)) if qemu_version else "this QEMU"
    if virt_type == "qemu":
        return (f"--compressed (XBZRLE) corrupted the memory of a guest writing to memory "
                f"under TCG on QEMU 7.2 in 2 of 2 runs (it panicked at the destination); "
                f"this VM runs under TCG on {version}: migrate without --compressed "
                f"unless the guest is idle")
    return (f"--compressed (XBZRLE) corrupted a memory-writing TCG guest on QEMU 7.2 in 2 "
            f"of 2 runs; it was not measured under KVM on {version}: check the guest "
            f"after the move")
