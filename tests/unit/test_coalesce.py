"""``virtlife.coalesce``: one call for the callers that asked before it started, and never
the result of a call that began before a caller asked. Synchronised on events and on
the helper's own count of waiting callers, never on sleeps."""

from __future__ import annotations

import threading
import time

import pytest

from virtlife.coalesce import Coalesced


class Gate:
    """A call that blocks until released, numbering its runs."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0

    def __call__(self, key: str) -> str:
        self.runs += 1
        run = self.runs
        self.started.set()
        if run == 1:
            assert self.release.wait(10)
        return f"{key}#{run}"


def wait_until(check: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.001)


def test_a_lone_caller_gets_its_own_call() -> None:
    c = Coalesced(lambda key: key.upper())
    assert c("a") == "A" and c("a") == "A"
    assert c.calls == 2  # one after the other: each asked after the last ended


def test_callers_asking_while_a_call_runs_share_the_next_one_not_the_running_one() -> None:
    gate = Gate()
    c: Coalesced[str, str] = Coalesced(gate)
    results: dict[str, str] = {}

    def ask(who: str) -> None:
        results[who] = c("h")

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert gate.started.wait(10)  # the first call runs (and blocks)
    later = [threading.Thread(target=ask, args=(f"later{i}",)) for i in range(5)]
    for t in later:
        t.start()
    wait_until(lambda: "h" in c._waiting and c._waiting["h"].callers == 5)
    gate.release.set()
    for t in [first, *later]:
        t.join(10)
    assert results["first"] == "h#1"
    # they asked after call 1 began: they share call 2, made once for all five
    assert {results[f"later{i}"] for i in range(5)} == {"h#2"}
    assert gate.runs == 2 and c.calls == 2


def test_keys_do_not_share() -> None:
    c = Coalesced(lambda key: key * 2)
    assert c("a") == "aa" and c("b") == "bb"


def test_an_error_reaches_every_caller_that_shared_the_call() -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def failing(key: str) -> str:
        runs.append(1)
        if len(runs) == 1:
            started.set()
            assert release.wait(10)
            return "ok"
        raise RuntimeError("host gone")

    c: Coalesced[str, str] = Coalesced(failing)
    errors: list[str] = []

    def ask() -> None:
        try:
            c("h")
        except RuntimeError as err:
            errors.append(str(err))

    first = threading.Thread(target=c, args=("h",))
    first.start()
    assert started.wait(10)
    later = [threading.Thread(target=ask) for _ in range(3)]
    for t in later:
        t.start()
    wait_until(lambda: "h" in c._waiting and c._waiting["h"].callers == 3)
    release.set()
    for t in [first, *later]:
        t.join(10)
    assert errors == ["host gone"] * 3 and len(runs) == 2
    with pytest.raises(RuntimeError):  # and the next caller calls again
        c("h")
