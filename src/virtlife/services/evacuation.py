"""How an evacuation runs its plan: the per-VM state machine (``Runner``) and the loop
that drives it with a mover on threads (``Drive``).

Each VM of the plan is an ``EvacuationStep``, and its phases go::

    PENDING  --a slot is free------------------> MOVING
    PENDING  --cancelled-----------------------> LEFT
    MOVING   --the move ended well-------------> MOVED
    MOVING   --failed, first time, another host-> RETRYING (its new destination chosen)
    MOVING   --failed otherwise----------------> FAILED   (second failure, no other host,
                                                           or where the VM is is unknown)
    MOVING   --failed after a cancel-----------> LEFT     (aborted: it stays at the source)
    RETRYING --a slot is free------------------> MOVING
    RETRYING --cancelled-----------------------> LEFT

A VM the plan could not place, or a shut-off VM kept with ``--stopped leave``, starts as
LEFT with its reason. Nothing loops: a VM moves at most twice (its first destination,
then one other), and a cancel starts nothing more. At most ``limit`` moves run at once
(the concurrency, within the source's outgoing slots) and at most ``max_incoming`` to
one destination.

``Runner`` is pure: it decides, the caller acts and tells it the time. ``Drive`` starts
each move the runner asks for on a thread of its own, feeds the ends back, and cancels
(``cancel()``, or its ``cancelled`` poll: another process's ``--cancel``); it knows no
libvirt, no store: the mover and the abort are given (``services.maintenance``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the drive asks ``cancelled`` while nothing else happens


class Phase(StrEnum):
    """Where one VM of an evacuation is (see the module doc for the transitions)."""

    PENDING = "pending"  # placed, waiting for a slot
    MOVING = "moving"
    RETRYING = "retrying"  # failed once; waiting for a slot on its second destination
    MOVED = "moved"
    FAILED = "failed"
    LEFT = "left"  # not moved: no destination, --stopped leave, or cancelled

    @property
    def over(self) -> bool:
        return self in (Phase.MOVED, Phase.FAILED, Phase.LEFT)


@dataclass
class EvacuationStep:
    """One VM of the evacuation. ``destination`` is where it goes (or last went);
    ``tried`` the destinations it failed on; ``kept`` True when it was left by choice
    (``--stopped leave``), which does not make the evacuation fail."""

    vm: str
    source: str
    kind: str  # "live" or "offline"
    destination: str | None
    phase: Phase = Phase.PENDING
    reason: str = ""
    tried: list[str] = field(default_factory=list)
    kept: bool = False
    started_s: float | None = None  # the first attempt's start
    ended_s: float | None = None

    @property
    def attempts(self) -> int:
        return len(self.tried) + (1 if self.phase in (Phase.MOVING, Phase.MOVED) else 0)

    @property
    def seconds(self) -> float | None:
        if self.started_s is None or self.ended_s is None:
            return None
        return self.ended_s - self.started_s

    @property
    def stays(self) -> bool:
        """Whether the VM ended at its source against the plan (not kept by choice)."""
        return self.phase in (Phase.FAILED, Phase.LEFT) and not self.kept

    def as_dict(self) -> dict[str, object]:
        seconds = self.seconds
        return {"vm": self.vm, "from": self.source, "to": self.destination,
                "kind": self.kind, "outcome": self.phase.value, "reason": self.reason,
                "tried": list(self.tried), "kept": self.kept,
                "seconds": None if seconds is None else round(seconds, 1)}


@dataclass(frozen=True)
class Start:
    """A move the runner wants started now."""

    vm: str
    source: str
    destination: str
    kind: str
    attempt: int  # 1 or 2


@dataclass(frozen=True)
class MoveEnd:
    """How a move ended: ``ok``, or why not and whether the VM is known to be still at
    its source (``retry``: it may be tried on another host; when where it is cannot be
    told, it must not be)."""

    ok: bool
    reason: str = ""
    retry: bool = False


# (vm, the destinations it failed on) -> another destination, or None and why none
Replacer = Callable[[str, frozenset[str]], tuple[str | None, str]]


class Runner:
    """The evacuation's decisions over its ``steps`` (see the module doc)."""

    def __init__(self, steps: Sequence[EvacuationStep], *, concurrency: int = 2,
                 max_outgoing: int = 2, max_incoming: int = 2,
                 replace: Replacer | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.steps = list(steps)
        self.limit = min(concurrency, max(1, max_outgoing))
        self.max_incoming = max(1, max_incoming)
        self.replace = replace
        self.cancelled = ""  # why, once cancelled
        self._by_vm = {s.vm: s for s in self.steps}
        if len(self._by_vm) != len(self.steps):
            raise ValueError("a VM is given twice: one step per VM")
        for s in self.steps:  # nowhere to go: never waits
            if s.phase in (Phase.PENDING, Phase.RETRYING) and s.destination is None:
                s.phase, s.reason = Phase.LEFT, s.reason or "no destination"

    def step(self, vm: str) -> EvacuationStep:
        return self._by_vm[vm]

    def moving(self) -> list[EvacuationStep]:
        return [s for s in self.steps if s.phase is Phase.MOVING]

    @property
    def done(self) -> bool:
        return all(s.phase.over for s in self.steps)

    def counts(self) -> dict[str, int]:
        found = {p.value: 0 for p in Phase}
        for s in self.steps:
            found[s.phase.value] += 1
        return found

    def starts(self, now: float) -> list[Start]:
        """The moves to start now (their steps become MOVING): waiting steps in order,
        while a slot is free at the source and at their destination; none once
        cancelled."""
        if self.cancelled:
            return []
        running = self.moving()
        incoming: dict[str, int] = {}
        for s in running:
            assert s.destination is not None
            incoming[s.destination] = incoming.get(s.destination, 0) + 1
        started: list[Start] = []
        for s in self.steps:
            if len(running) + len(started) >= self.limit:
                break
            if s.phase not in (Phase.PENDING, Phase.RETRYING) or s.destination is None:
                continue
            if incoming.get(s.destination, 0) >= self.max_incoming:
                continue  # that host takes enough now; a later VM may go elsewhere
            incoming[s.destination] = incoming.get(s.destination, 0) + 1
            s.phase = Phase.MOVING
            s.reason = ""
            if s.started_s is None:
                s.started_s = now
            started.append(Start(s.vm, s.source, s.destination, s.kind, len(s.tried) + 1))
        return started

    def ended(self, vm: str, end: MoveEnd, now: float) -> EvacuationStep:
        """The move of ``vm`` ended as ``end`` says; its step as it is now."""
        s = self._by_vm[vm]
        if s.phase is not Phase.MOVING:
            raise ValueError(f"{vm} is {s.phase.value}, not moving: no move of it ended")
        assert s.destination is not None
        if end.ok:
            s.phase, s.reason, s.ended_s = Phase.MOVED, "", now
            return s
        failed_on = s.destination
        s.tried.append(failed_on)
        why = end.reason or "the move failed"
        if self.cancelled:
            s.phase, s.ended_s = Phase.LEFT, now
            s.reason = f"{self.cancelled}: its move to {failed_on} was aborted ({why})"
            return s
        if not end.retry:
            s.phase, s.ended_s = Phase.FAILED, now
            s.reason = f"{why} (not retried: it is not known to be still on {s.source})"
            return s
        if len(s.tried) >= 2:
            s.phase, s.ended_s = Phase.FAILED, now
            s.reason = f"failed twice; on {failed_on}: {why}"
            return s
        other, none_why = (None, "no other destination was asked for") \
            if self.replace is None else self.replace(vm, frozenset(s.tried))
        if other is None or other in s.tried or other == s.source:
            s.phase, s.ended_s = Phase.FAILED, now
            s.reason = f"on {failed_on}: {why}; not retried: {none_why or 'no other host'}"
            return s
        s.phase, s.destination = Phase.RETRYING, other
        s.reason = f"on {failed_on}: {why}; to be retried on {other}"
        return s

    def cancel(self, why: str, now: float) -> list[EvacuationStep]:
        """Start nothing more: every waiting step is LEFT (returned); the moves running
        end as their movers say (the caller aborts them)."""
        if self.cancelled:
            return []
        self.cancelled = why or "cancelled"
        left = []
        for s in self.steps:
            if s.phase in (Phase.PENDING, Phase.RETRYING):
                s.phase, s.ended_s = Phase.LEFT, now
                s.reason = f"{self.cancelled} before it started" + (
                    f" (first try: {s.reason})" if s.tried else "")
                left.append(s)
        return left


Mover = Callable[[Start], MoveEnd]


class Drive:
    """Runs ``runner``'s moves with ``move`` on threads until every step is over.

    ``cancelled`` is asked every ``poll_s`` (another process's cancel, through the
    store): a non-empty answer cancels with that reason, as ``cancel`` does; ``abort``
    is called once on a cancel to stop the moves running. ``on_change`` hears each step
    that changed phase (from the thread that called ``run``)."""

    def __init__(self, runner: Runner, move: Mover, *,
                 cancelled: Callable[[], str] | None = None,
                 abort: Callable[[], object] | None = None,
                 on_change: Callable[[EvacuationStep], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S) -> None:
        self.runner = runner
        self.move = move
        self.cancelled = cancelled
        self.abort = abort
        self.on_change = on_change
        self.clock = clock
        self.poll_s = poll_s
        self._events: queue.Queue[tuple[Start, MoveEnd] | str] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def cancel(self, why: str = "cancelled") -> None:
        """Cancel from any thread (Ctrl-C's handler): the loop acts on it at once."""
        self._events.put(why or "cancelled")

    def _tell(self, step: EvacuationStep) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(step)
        except Exception:  # a broken display must not break the evacuation
            log.exception("evacuation progress callback failed for %s", step.vm)

    def _do_cancel(self, why: str) -> None:
        for step in self.runner.cancel(why, self.clock()):
            self._tell(step)
        if self.abort is not None and self.runner.moving():
            try:
                self.abort()
            except Exception:
                log.exception("aborting the evacuation's running moves failed")

    def _launch(self, start: Start) -> None:
        def work() -> None:
            try:
                end = self.move(start)
            except Exception as err:  # a bug in the mover: the VM's place is unknown
                log.exception("moving %s failed", start.vm)
                end = MoveEnd(False, f"bug: {type(err).__name__}: {err}", retry=False)
            self._events.put((start, end))

        thread = threading.Thread(target=work, name=f"evacuate-{start.vm}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def run(self) -> list[EvacuationStep]:
        runner = self.runner
        while True:
            if not runner.cancelled and self.cancelled is not None:
                asked = self.cancelled()
                if asked:
                    self._do_cancel(asked)
            for start in runner.starts(self.clock()):
                self._tell(runner.step(start.vm))
                self._launch(start)
            if runner.done:
                break
            try:
                event = self._events.get(timeout=self.poll_s)
            except queue.Empty:
                continue
            if isinstance(event, str):
                self._do_cancel(event)
                continue
            start, end = event
            self._tell(runner.ended(start.vm, end, self.clock()))
        for thread in self._threads:
            thread.join()
        return runner.steps
