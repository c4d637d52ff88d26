"""The evacuation's state machine (``services.evacuation``) with a fake mover: moves that
succeed, fail and are retried once elsewhere, fail twice, a cancel mid-way, and the
concurrency and per-destination bounds, which are never exceeded. The fake mover blocks
each move until the test releases it, so the tests synchronise on events, never sleeps.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import pytest

from virtlife.services.evacuation import Drive, EvacuationStep, MoveEnd, Phase, Runner, Start

WAIT_S = 30.0  # a bound on each wait, so that a bug fails the test instead of hanging it


def steps(*plan: tuple[str, str | None]) -> list[EvacuationStep]:
    return [EvacuationStep(vm, "lab-a", "live", dest) for vm, dest in plan]


@dataclass
class FakeMover:
    """Each move waits for the test's answer (``answer(vm, end)``); it records each
    start and how many ran at once, per source and per destination."""

    started: queue.Queue[Start] = field(default_factory=queue.Queue)
    starts: list[Start] = field(default_factory=list)
    most_at_once: int = 0
    most_into: dict[str, int] = field(default_factory=dict)
    aborts: int = 0
    _answers: dict[str, queue.Queue[MoveEnd]] = field(default_factory=dict)
    _running: list[Start] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _box(self, vm: str) -> queue.Queue[MoveEnd]:
        with self._lock:
            return self._answers.setdefault(vm, queue.Queue())

    def __call__(self, start: Start) -> MoveEnd:
        box = self._box(start.vm)
        with self._lock:
            self.starts.append(start)
            self._running.append(start)
            self.most_at_once = max(self.most_at_once, len(self._running))
            into = sum(1 for r in self._running if r.destination == start.destination)
            self.most_into[start.destination] = max(self.most_into.get(start.destination, 0),
                                                    into)
        self.started.put(start)
        end = box.get(timeout=WAIT_S)
        with self._lock:
            self._running.remove(start)
        return end

    def answer(self, vm: str, end: MoveEnd) -> None:
        self._box(vm).put(end)

    def next_start(self) -> Start:
        return self.started.get(timeout=WAIT_S)

    def abort_all(self) -> None:
        """What the migration service's abort does: each running move ends, failed."""
        with self._lock:
            self.aborts += 1
            running = list(self._running)
        for r in running:
            self.answer(r.vm, MoveEnd(False, "migration aborted", retry=True))


@pytest.fixture
def mover() -> FakeMover:
    return FakeMover()


def drive_in_thread(drive: Drive) -> tuple[threading.Thread, list[list[EvacuationStep]]]:
    out: list[list[EvacuationStep]] = []
    thread = threading.Thread(target=lambda: out.append(drive.run()), daemon=True)
    thread.start()
    return thread, out


def finish(thread: threading.Thread, out: list[list[EvacuationStep]]) -> list[EvacuationStep]:
    thread.join(WAIT_S)
    assert not thread.is_alive(), "the drive did not end"
    return out[0]


def by_vm(done: list[EvacuationStep]) -> dict[str, EvacuationStep]:
    return {s.vm: s for s in done}


# -- the pure runner ------------------------------------------------------------------------

def test_the_runner_starts_no_more_than_the_limit_and_skips_a_full_destination() -> None:
    runner = Runner(steps(("a1", "lab-b"), ("a2", "lab-b"), ("a3", "lab-c"), ("a4", "lab-c")),
                    concurrency=3, max_outgoing=3, max_incoming=1)
    first = runner.starts(0.0)
    assert [(s.vm, s.destination) for s in first] == [("a1", "lab-b"), ("a3", "lab-c")]
    assert runner.starts(0.0) == []  # lab-b and lab-c each take one at a time
    runner.ended("a1", MoveEnd(True), 1.0)
    assert [s.vm for s in runner.starts(1.0)] == ["a2"]
    assert runner.step("a1").phase is Phase.MOVED and runner.step("a1").seconds == 1.0


def test_concurrency_is_kept_within_the_outgoing_slots() -> None:
    runner = Runner(steps(*((f"v{i}", f"h{i}") for i in range(5))), concurrency=8,
                    max_outgoing=2)
    assert runner.limit == 2
    assert len(runner.starts(0.0)) == 2
    with pytest.raises(ValueError, match="at least 1"):
        Runner([], concurrency=0)


def test_a_vm_without_destination_is_left_with_its_reason_and_never_started() -> None:
    plan = steps(("a1", None), ("a2", "lab-b"))
    plan[0].reason = "no host can take a1: not enough memory on lab-b"
    runner = Runner(plan)
    assert runner.step("a1").phase is Phase.LEFT and "not enough memory" in plan[0].reason
    assert [s.vm for s in runner.starts(0.0)] == ["a2"]
    with pytest.raises(ValueError, match="not moving"):
        runner.ended("a1", MoveEnd(True), 1.0)


def test_a_failure_whose_vm_is_not_known_at_the_source_is_not_retried() -> None:
    asked: list[str] = []

    def replace(vm: str, tried: frozenset[str]) -> tuple[str | None, str]:
        asked.append(vm)
        return "lab-c", ""

    runner = Runner(steps(("a1", "lab-b")), replace=replace)
    runner.starts(0.0)
    step = runner.ended("a1", MoveEnd(False, "lab-b stopped answering", retry=False), 2.0)
    assert step.phase is Phase.FAILED and asked == [] and step.stays
    assert "not known to be still on lab-a" in step.reason


# -- the drive, with the fake mover ----------------------------------------------------------

def test_every_vm_moves_when_every_move_succeeds(mover: FakeMover) -> None:
    runner = Runner(steps(("a1", "lab-b"), ("a2", "lab-c"), ("a3", "lab-b")))
    changes: list[tuple[str, Phase]] = []
    thread, out = drive_in_thread(Drive(runner, mover,
                                        on_change=lambda s: changes.append((s.vm, s.phase))))
    for _ in range(3):
        start = mover.next_start()
        mover.answer(start.vm, MoveEnd(True))
    done = by_vm(finish(thread, out))
    assert {vm: (s.phase, s.destination) for vm, s in done.items()} == {
        "a1": (Phase.MOVED, "lab-b"), "a2": (Phase.MOVED, "lab-c"), "a3": (Phase.MOVED, "lab-b")}
    assert [s.vm for s in mover.starts] == ["a1", "a2", "a3"]
    assert not any(s.stays for s in done.values())
    assert ("a3", Phase.MOVING) in changes and ("a3", Phase.MOVED) in changes


def test_a_failed_vm_is_retried_once_on_another_destination(mover: FakeMover) -> None:
    asked: list[tuple[str, frozenset[str]]] = []

    def replace(vm: str, tried: frozenset[str]) -> tuple[str | None, str]:
        asked.append((vm, tried))
        return "lab-c", ""

    runner = Runner(steps(("a1", "lab-b")), replace=replace)
    thread, out = drive_in_thread(Drive(runner, mover))
    first = mover.next_start()
    assert (first.destination, first.attempt) == ("lab-b", 1)
    mover.answer("a1", MoveEnd(False, "pre-flight failed: network lan missing", retry=True))
    second = mover.next_start()
    assert (second.destination, second.attempt) == ("lab-c", 2)
    mover.answer("a1", MoveEnd(True))
    step = finish(thread, out)[0]
    assert (step.phase, step.destination, step.tried) == (Phase.MOVED, "lab-c", ["lab-b"])
    assert asked == [("a1", frozenset({"lab-b"}))]


def test_a_vm_that_fails_twice_is_reported_and_not_tried_a_third_time(
        mover: FakeMover) -> None:
    hosts = iter(["lab-c", "lab-d"])
    runner = Runner(steps(("a1", "lab-b")), replace=lambda vm, tried: (next(hosts), ""))
    thread, out = drive_in_thread(Drive(runner, mover))
    for _ in range(2):
        start = mover.next_start()
        mover.answer(start.vm, MoveEnd(False, f"refused by {start.destination}", retry=True))
    step = finish(thread, out)[0]
    assert [s.destination for s in mover.starts] == ["lab-b", "lab-c"]  # never lab-d
    assert step.phase is Phase.FAILED and step.stays and step.tried == ["lab-b", "lab-c"]
    assert step.reason == "failed twice; on lab-c: refused by lab-c"


def test_a_failed_vm_with_no_other_destination_fails_with_why(mover: FakeMover) -> None:
    runner = Runner(steps(("a1", "lab-b"), ("a2", "lab-b")),
                    replace=lambda vm, tried: (None, "no host can take it: lab-c in "
                                               "maintenance"))
    thread, out = drive_in_thread(Drive(runner, mover))
    for _ in range(2):
        start = mover.next_start()
        mover.answer(start.vm, MoveEnd(start.vm == "a2", "it broke", retry=True))
    done = by_vm(finish(thread, out))
    assert done["a2"].phase is Phase.MOVED  # a failure does not block the others
    assert done["a1"].phase is Phase.FAILED
    assert done["a1"].reason == ("on lab-b: it broke; not retried: no host can take it: "
                                 "lab-c in maintenance")


def test_a_cancel_mid_way_aborts_the_running_move_and_starts_nothing_more(
        mover: FakeMover) -> None:
    runner = Runner(steps(("a1", "lab-b"), ("a2", "lab-b"), ("a3", "lab-c")), concurrency=1,
                    replace=lambda vm, tried: ("lab-c", ""))
    drive = Drive(runner, mover, abort=mover.abort_all)
    thread, out = drive_in_thread(drive)
    mover.answer(mover.next_start().vm, MoveEnd(True))  # a1 moves
    assert mover.next_start().vm == "a2"  # a2 is moving: cancel now
    drive.cancel("cancelled by Ctrl-C")
    done = by_vm(finish(thread, out))
    assert mover.aborts == 1
    assert [s.vm for s in mover.starts] == ["a1", "a2"]  # nothing started after, no retry
    assert done["a1"].phase is Phase.MOVED
    assert done["a2"].phase is Phase.LEFT and "aborted" in done["a2"].reason
    assert done["a3"].phase is Phase.LEFT
    assert done["a3"].reason == "cancelled by Ctrl-C before it started"
    assert runner.cancelled == "cancelled by Ctrl-C"


def test_a_cancel_asked_through_the_poll_is_taken(mover: FakeMover) -> None:
    asked = threading.Event()
    runner = Runner(steps(("a1", "lab-b"), ("a2", "lab-c")), concurrency=1)
    drive = Drive(runner, mover, abort=mover.abort_all,
                  cancelled=lambda: "cancelled from another shell" if asked.is_set() else "",
                  poll_s=0.05)
    thread, out = drive_in_thread(drive)
    assert mover.next_start().vm == "a1"
    asked.set()
    done = by_vm(finish(thread, out))
    assert done["a1"].phase is Phase.LEFT and done["a2"].phase is Phase.LEFT
    assert "cancelled from another shell" in done["a2"].reason and len(mover.starts) == 1


@pytest.mark.parametrize("concurrency,max_incoming", [(1, 2), (2, 2), (3, 1)])
def test_the_bounds_are_never_exceeded(mover: FakeMover, concurrency: int,
                                       max_incoming: int) -> None:
    dests = ["lab-b", "lab-c", "lab-b", "lab-b", "lab-c", "lab-d", "lab-b", "lab-c"]
    runner = Runner(steps(*((f"v{i}", d) for i, d in enumerate(dests))),
                    concurrency=concurrency, max_outgoing=3, max_incoming=max_incoming)
    thread, out = drive_in_thread(Drive(runner, mover))
    for _ in dests:  # each start is answered in turn: the drive starts the next one
        mover.answer(mover.next_start().vm, MoveEnd(True))
    done = finish(thread, out)
    assert all(s.phase is Phase.MOVED for s in done)
    assert 1 <= mover.most_at_once <= concurrency
    assert max(mover.most_into.values()) <= max_incoming


def test_the_bound_holds_while_moves_pile_up(mover: FakeMover) -> None:
    """Nothing is answered until the drive has started all it may: exactly the bound."""
    runner = Runner(steps(*((f"v{i}", f"h{i % 3}") for i in range(6))), concurrency=2)
    thread, out = drive_in_thread(Drive(runner, mover))
    held = [mover.next_start(), mover.next_start()]
    assert [s.phase for s in runner.steps].count(Phase.MOVING) == 2
    assert mover.started.empty()
    for start in held:
        mover.answer(start.vm, MoveEnd(True))
    for _ in range(4):
        mover.answer(mover.next_start().vm, MoveEnd(True))
    finish(thread, out)
    assert mover.most_at_once == 2


def test_a_mover_that_raises_leaves_the_vm_failed_unretried(mover: FakeMover) -> None:
    def broken(start: Start) -> MoveEnd:
        raise RuntimeError("boom")

    retried: list[str] = []
    runner = Runner(steps(("a1", "lab-b")),
                    replace=lambda vm, tried: (retried.append(vm), ("lab-c", ""))[1])
    step = Drive(runner, broken).run()[0]
    assert step.phase is Phase.FAILED and "bug: RuntimeError: boom" in step.reason
    assert retried == []

