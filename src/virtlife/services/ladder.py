"""The shutdown and reboot ladder: agent, then the ACPI button twice, then (if asked) force.

``climb`` is plain policy over three callables, so it is unit-tested without libvirt:
``ask(step, share_s)`` makes one request within ``share_s`` seconds and returns None,
or why it could not be made (a reason, or the error saying it: the agent is not
connected, or did not answer within its share); ``settled(seconds)`` waits up to that
long for the result (the VM powered off, or the guest reset) and says whether it came;
``force()`` destroys or resets. Each step gets its own share: what is left of the whole
timeout, shared by the steps still to come. Asking spends from that share, and a step
whose share is spent falls through to the next, so a missing or hung agent (even one
whose stuck call holds libvirt's lock on the VM) costs its share and gives the rest
to the ACPI presses. Without ``force`` a guest that ignores everything
ends in ``OperationTimeout`` naming each step and why it failed; the VM is left as it is.
When no step could even be asked (a driver without agent or ACPI button), ``auto``
makes one request in libvirt's own way instead (the ``fallback``); if that cannot be
asked either, or the mode named one way only, it is ``Unsupported`` (or, when the
agent was the only way and it failed, that agent error: ``AgentTimeout``, exit 5, for
a hung one), and ``force`` is not used: nothing was tried that the guest ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from virtlife import errors
from virtlife.states import ShutdownMode


class Step(StrEnum):
    LIBVIRT = "libvirt's choice"  # --mode default: one request, libvirt picks how
    AGENT = "guest agent"
    ACPI = "ACPI button"
    ACPI_AGAIN = "ACPI button, again"
    FORCE = "force"

    @property
    def by(self) -> str:
        """How the step reads after "powered off by"."""
        return _BY[self]


_BY = {Step.LIBVIRT: "the method libvirt chose", Step.AGENT: "the guest agent",
       Step.ACPI: "the ACPI button", Step.ACPI_AGAIN: "a second press of the ACPI button",
       Step.FORCE: "force"}


STEPS: dict[ShutdownMode, tuple[Step, ...]] = {
    ShutdownMode.AUTO: (Step.AGENT, Step.ACPI, Step.ACPI_AGAIN),
    ShutdownMode.AGENT: (Step.AGENT,),
    ShutdownMode.ACPI: (Step.ACPI, Step.ACPI_AGAIN),
    ShutdownMode.DEFAULT: (Step.LIBVIRT,),
}


@dataclass(frozen=True)
class Attempt:
    step: Step
    outcome: str  # "worked", or why it did not
    seconds: float

    @property
    def worked(self) -> bool:
        return self.outcome == "worked"

    def __str__(self) -> str:
        return f"{self.step}: {self.outcome}"


@dataclass
class Climb:
    """The steps taken, in order; the last one that worked ends it."""

    attempts: list[Attempt] = field(default_factory=list)

    @property
    def winner(self) -> Attempt | None:
        return next((a for a in self.attempts if a.worked), None)

    def failures(self) -> str:
        return "; ".join(str(a) for a in self.attempts if not a.worked)

    def note(self, done: str) -> str:
        """``powered off by the ACPI button after 2.1 s (guest agent: not connected)``"""
        win = self.winner
        if win is None:
            return self.failures()
        text = f"{done} by {win.step.by} after {win.seconds:.1f} s"
        before = self.failures()
        return f"{text} ({before})" if before else text

    def as_dict(self) -> list[dict[str, object]]:
        return [{"step": a.step.value, "outcome": a.outcome, "seconds": round(a.seconds, 2)}
                for a in self.attempts]


Refusal = str | errors.VirtlifeError | None  # what ``ask`` returns: None when asked


def _cannot(what: str, vm: str, result: Climb,
            failures: list[errors.VirtlifeError]) -> errors.VirtlifeError:
    """Nothing could be asked: ``Unsupported``, unless only the agent was tried and
    failed (hung: ``AgentTimeout``, exit 5; unavailable: exit 8)."""
    text = f"cannot {what} {vm}: {result.failures()}"
    agent = [f for f in failures if isinstance(f, errors.AgentUnavailable)]
    if agent and len(agent) == len(result.attempts):
        timed_out = [f for f in agent if isinstance(f, errors.AgentTimeout)]
        return type(timed_out[0] if timed_out else agent[0])(text)
    return errors.Unsupported(text)


def climb(steps: tuple[Step, ...], total_s: float, *,
          ask: Callable[[Step, float], Refusal],
          settled: Callable[[float], bool], force: Callable[[], None] | None,
          what: str, vm: str, fallback: Step | None = None) -> Climb:
    """Take ``steps`` within ``total_s``; ``what`` is the goal (``power off``).
    ``fallback`` is the one request made when no step could be asked at all."""
    start = time.monotonic()
    result = Climb()
    failures: list[errors.VirtlifeError] = []

    def left() -> float:
        return max(0.0, total_s - (time.monotonic() - start))

    def refused(step: Step, why_not: str | errors.VirtlifeError, t0: float) -> None:
        if isinstance(why_not, errors.VirtlifeError):
            failures.append(why_not)
            why_not = errors.reason_of(why_not)
        result.attempts.append(Attempt(step, why_not, time.monotonic() - t0))

    for index, step in enumerate(steps):
        t0 = time.monotonic()
        share = left() / (len(steps) - index)
        why_not = ask(step, share)
        if why_not is not None:
            refused(step, why_not, t0)
            continue
        bound = max(0.0, share - (time.monotonic() - t0))
        if settled(bound):
            result.attempts.append(Attempt(step, "worked", time.monotonic() - start))
            return result
        result.attempts.append(Attempt(
            step, f"asked; no {what} within {bound:.0f} s", time.monotonic() - t0))
    if all(not a.outcome.startswith("asked") for a in result.attempts):
        # no way of asking worked at all (a driver without agent and ACPI button): one
        # request in the way libvirt chooses, else it is not a guest that ignored us
        t0 = time.monotonic()
        if fallback is None:
            raise _cannot(what, vm, result, failures)
        why_not = ask(fallback, left())
        if why_not is not None:  # the fallback's own reason is part of the answer
            refused(fallback, why_not, t0)
            raise _cannot(what, vm, result, failures)
        if settled(left()):
            result.attempts.append(Attempt(fallback, "worked", time.monotonic() - start))
            return result
        result.attempts.append(Attempt(fallback, f"asked; no {what} within the time left",
                                       time.monotonic() - t0))
    if force is None:
        raise errors.OperationTimeout(
            f"{vm} did not {what} within {total_s:g} s: {result.failures()}; it is left as "
            f"it is: add --force to end it by force after the timeout, or run "
            f"`virtlife destroy {vm}`")
    force()
    result.attempts.append(Attempt(Step.FORCE, "worked", time.monotonic() - start))
    return result
