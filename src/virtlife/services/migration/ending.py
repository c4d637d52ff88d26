"""How a migration ended when virtlife could not watch it end: pure verdicts.

Three cases share one question, "where is the VM now, and what does that say about the
move?": a migration whose process died (the journal's sweep found its row running),
a move whose destination stopped answering before the end was confirmed, and a
post-copy that failed (QEMU may still finish it on its own, or resume it). The facts
are ``Sighting`` values, one per host, gathered by the orchestrator (``settle``);
these functions only judge them and word the result, so that each verdict is tested
without libvirt. Nothing here calls libvirt, sleeps or reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from virtlife.services.migration.phases import MigrationPhase
from virtlife.states import VMState

# In a journal row's detail: the end of this move is not known yet; the next look
# (``settle.reconcile``) asks the hosts again and corrects the row.
UNCONFIRMED = "[end unconfirmed]"
POSTCOPY_FAILED = "post-copy failed"


@dataclass(frozen=True)
class Sighting:
    """What one host says about the VM (found by its UUID), or that it could not be
    asked. ``state`` None: the host has no such VM."""

    host: str
    answered: bool = True
    state: VMState | None = None
    reason: str = ""  # libvirt's reason ("post-copy failed", "migrated", ...)
    job: str | None = None  # libvirt's job on it: "migration", "incoming migration"
    why: str = ""  # why it could not be asked

    @property
    def active(self) -> bool:
        return self.state is not None and self.state.is_active

    @property
    def postcopy_failed(self) -> bool:
        return self.reason == POSTCOPY_FAILED

    def describe(self) -> str:
        if not self.answered:
            return f"{self.host} could not be asked ({self.why})"
        if self.state is None:
            return f"not on {self.host}"
        said = self.state.label + (f" ({self.reason})" if self.reason else "")
        return f"{said} at {self.host}"


class Ending(StrEnum):
    """How the move ended, as far as the hosts tell."""

    COMPLETED = "completed"  # it runs at another host; the source has no running copy
    ABORTED = "aborted"  # it runs at the source, no migration job left
    RUNNING = "running"  # libvirt's migration job still runs
    POSTCOPY_FAILED = "post-copy failed"  # paused between the hosts: --postcopy-resume
    TWICE = "twice"  # active at two hosts: must not be; said, never guessed
    UNKNOWN = "unknown"  # a host that matters could not be asked; or nowhere running


@dataclass(frozen=True)
class Verdict:
    ending: Ending
    outcome: str  # the journal outcome it stands for: ok, interrupted or error
    text: str  # what happened, for the journal and the operator
    settled: bool  # False: look again later (the row keeps ``UNCONFIRMED``)
    at: str = ""  # the host where the VM runs (COMPLETED, ABORTED), else ""


def where_now(vm: str, source: str, sightings: Sequence[Sighting]) -> Verdict:
    """What the hosts' sightings say about the move of ``vm`` from ``source``.

    A migration job still running at either end, or a post-copy paused between them,
    is not an end yet (``settled`` False). A VM active at one other host and not at
    the source completed; active at the source with no job, it was aborted (or
    failed) and stays there. When no host has it running and some host could not be
    asked, nothing can be told yet.
    """
    src = next((s for s in sightings if s.host == source),
               Sighting(source, answered=False, why="not asked"))
    others = [s for s in sightings if s.host != source]
    unasked = [s for s in sightings if not s.answered]
    if not src.answered:
        unasked = [src, *[s for s in unasked if s is not src]]
    moving = [s for s in (src, *others) if s.answered and s.job in (
        "migration", "incoming migration")]
    failed = [s for s in (src, *others) if s.answered and s.postcopy_failed]
    active = [s for s in others if s.answered and s.active and not s.postcopy_failed]
    if failed:
        dest = next((s.host for s in failed if s.host != source),
                    others[0].host if others else "DEST")
        return Verdict(Ending.POSTCOPY_FAILED, "error",
                       f"post-copy failed: {_list(failed)}; its memory is split between "
                       f"the hosts; once the link is back: virtlife migrate "
                       f"{source}/{vm} {dest} --postcopy-resume", settled=False)
    if moving:
        where = moving[0]
        return Verdict(Ending.RUNNING, "interrupted",
                       f"the migration still runs at {where.host} (libvirt's "
                       f"{where.job} job), with no virtlife process watching it; "
                       f"`virtlife migrate-abort {source}/{vm}` ends it, keeping it at "
                       f"{source}", settled=False)
    if src.answered and src.active and active:
        return Verdict(Ending.TWICE, "error",
                       f"active at two hosts: {src.describe()} and {_list(active)}; "
                       "destroy one copy", settled=True)
    if len(active) > 1:
        return Verdict(Ending.TWICE, "error", f"active at two hosts: {_list(active)}; "
                       "destroy one copy", settled=True)
    if active and src.answered:
        left = "" if src.state is None else f"; a {src.describe()} definition remains"
        return Verdict(Ending.COMPLETED, "ok",
                       f"completed: {active[0].describe()}{left}",
                       settled=True, at=active[0].host)
    if active:  # the source cannot be asked: it may run there too
        return Verdict(Ending.UNKNOWN, "error",
                       f"{active[0].describe()}, but {src.describe()}; "
                       f"`virtlife state {source}/{vm}` once it answers", settled=False)
    if src.answered and src.active:
        return Verdict(Ending.ABORTED, "interrupted",
                       f"aborted: {src.describe()}, the migration over", settled=True,
                       at=source)
    if unasked:
        return Verdict(Ending.UNKNOWN, "error",
                       f"not known where it runs: {_list(unasked)}; "
                       f"`virtlife state {vm}` once they answer", settled=False)
    seen = [s for s in (src, *others) if s.state is not None]
    return Verdict(Ending.ABORTED, "interrupted",
                   f"running nowhere: {_list(seen) if seen else 'on no host'}",
                   settled=True)


def _list(sightings: Sequence[Sighting]) -> str:
    return ", ".join(s.describe() for s in sightings)


def after_death(verdict: Verdict) -> tuple[str, str]:
    """The journal outcome and detail of a migration row whose process died."""
    head = "its process ended while it ran; "
    if verdict.ending is Ending.COMPLETED:
        return "ok", f"completed after its process died: {verdict.text.split(': ', 1)[1]}"
    text = head + verdict.text
    return verdict.outcome, text if verdict.settled else f"{text} {UNCONFIRMED}"


def confirmed_later(verdict: Verdict, before: str) -> tuple[str, str]:
    """The journal outcome and detail once a move's end, unconfirmed when its row was
    finished (``before``, its old detail), is known."""
    was = before.replace(UNCONFIRMED, "").strip()
    return verdict.outcome, f"{verdict.text} (confirmed later; first recorded: {was})"


# -- the destination stopped answering before the end was confirmed --------------------

def unconfirmed_message(vm: str, source: str, dest: str, *, phase: MigrationPhase | None,
                        libvirt_done: bool, at_source: Sighting, why: str) -> str:
    """What is known when ``dest`` cannot be asked after the move: the job's last
    phase, whether the VM is still at the source, and what to run to find out."""
    if libvirt_done:
        last = "libvirt at the source reported the migration done"
    elif phase is not None:
        last = f"the job's last phase seen: {phase.label}"
    else:
        last = "no phase of the job was seen"
    if not at_source.answered:
        there = f"{source} could not be asked either ({at_source.why})"
    elif at_source.state is None:
        there = f"{vm} is gone from {source} (libvirt removes it there after the switch-over)"
    else:
        there = f"{vm} is still {at_source.describe()}"
    return (f"cannot confirm that {vm} moved to {dest}: {dest} stopped answering ({why}); "
            f"{last}; {there}; find out with `virtlife state {dest}/{vm}` once {dest} "
            f"answers (`virtlife history {vm}` shows this move, corrected once known)")


# -- a post-copy that failed: keep watching until QEMU settles ---------------------------

class Settle(StrEnum):
    WAIT = "wait"  # not settled yet: look again
    COMPLETED = "completed"  # it finished at the destination (late, by itself)
    FAILED = "failed"  # paused between the hosts, for good: --postcopy-resume
    STILL_RUNNING = "still running"  # the bound passed with the move still going
    UNKNOWN = "unknown"  # the bound passed and a host could not be asked


@dataclass(frozen=True)
class SettleDecision:
    settle: Settle
    text: str
    undefine_source: bool = False  # the source's copy is a stale shut-off definition


def postcopy_settle(vm: str, src: Sighting, dst: Sighting, *, waited_s: float,
                    bound_s: float, failed_for_s: float, stable_s: float) -> SettleDecision:
    """After a post-copy failed, decide from both ends whether it has settled.

    QEMU may finish the move by itself (the link came back): the destination then runs
    it and the source's copy is shut off (migrated) or gone. "post-copy failed" at the
    source counts as the end only once it has held for ``stable_s`` with no migration
    job moving at the destination; until ``bound_s`` the caller keeps looking.
    """
    if dst.answered and dst.active and not dst.postcopy_failed and dst.job is None and (
            not src.answered or not src.active):
        stale = src.answered and src.state is not None and not src.active
        return SettleDecision(Settle.COMPLETED,
                              f"the post-copy finished by itself: {dst.describe()}"
                              + (f"; its shut-off copy at {src.host} was removed"
                                 if stale else ""), undefine_source=stale)
    both_failed = src.answered and src.postcopy_failed and (
        not dst.answered or dst.postcopy_failed or not dst.active)
    if both_failed and failed_for_s >= stable_s:
        return SettleDecision(Settle.FAILED,
                              f"post-copy failed: {src.describe()}, {dst.describe()}; its "
                              "memory is split between the hosts, so it cannot run until "
                              f"the move ends; once {dst.host} is reachable again: "
                              f"virtlife migrate {src.host}/{vm} {dst.host} --postcopy-resume")
    if waited_s < bound_s:
        return SettleDecision(Settle.WAIT, "")
    if not src.answered or not dst.answered:
        return SettleDecision(Settle.UNKNOWN,
                              f"post-copy did not settle within {bound_s:g} s: "
                              f"{src.describe()}, {dst.describe()}; `virtlife state "
                              f"{dst.host}/{vm}` tells how it ends")
    return SettleDecision(Settle.STILL_RUNNING,
                          f"post-copy still running after {bound_s:g} s: {src.describe()}, "
                          f"{dst.describe()}; QEMU may still finish it: `virtlife state "
                          f"{dst.host}/{vm}` tells how it ends")


def resume_refusal(vm: str, src: Sighting, *, qemu_migrating: bool) -> str | None:
    """Why ``--postcopy-resume`` cannot run now, telling "still running" apart from
    "failed"; None when the post-copy failed and can be resumed."""
    if src.postcopy_failed and not qemu_migrating:
        return None
    if src.postcopy_failed or (src.active and src.job == "migration"):
        return (f"cannot resume the post-copy migration of {vm}: it is still running "
                f"({src.describe()}, QEMU still migrating), not failed; wait for it to end "
                f"(`virtlife state {vm}`), or `virtlife migrate-abort {src.host}/{vm}` "
                "before post-copy")
    return (f"cannot resume the post-copy migration of {vm}: it is {src.describe()}, "
            "not paused (post-copy failed)")
