"""Two real supervisors (``virtlife serve --supervise``) electing one leader.

PostgreSQL: machines A and B (each its own ``VIRTLIFE_MACHINE_ID``, home and port) share
a database of the private cluster. A leads; SIGSTOP A, and B takes over within the
documented bound (``services.leadership.FAILOVER_BOUND_S``, by the database's clock,
from the moment A stopped to the start of B's term); SIGCONT A, and A's next renewal
(a write under its epoch) is refused: it steps down, journalled, and writes nothing
more. Every change is read back from the journal (``operations --json``) and ``leader
--json``, as an operator would, by a third process that takes no part. SQLite: two
supervisors on one machine get one leader (the file lock), and the other takes over
once the first ends.

Waits poll with a deadline, never a fixed sleep; every process started is killed at
the end (SIGCONT first), whatever the outcome.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from test_bad_input import VIRTLIFE, virtlife

from support import NODE_URI
from virtlife.services.leadership import (
    ACQUIRED,
    FAILOVER_BOUND_S,
    STEPPED_DOWN,
    TOOK_OVER,
    TTL_S,
)
from virtlife.store import leadership as lease
from virtlife.store import open_store

EXIT_NOT_FOUND = 2
START_S = 90.0  # a loaded 2-core machine starts a server in ~5-15 s
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Supervisors:
    """Starts ``virtlife serve --supervise`` processes; ``close`` kills them all."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self._tmp = tmp_path
        self._env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, machine: str, home: Path | None = None) -> tuple[subprocess.Popen[bytes],
                                                                     int]:
        port = free_port()
        home = home or self._tmp / machine
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self._env, "VIRTLIFE_MACHINE_ID": machine,
               "VIRTLIFE_HOME": str(home)}
        log = (self._tmp / f"{machine}.log").open("wb")
        proc = subprocess.Popen([*VIRTLIFE, "serve", "--supervise", "--listen",
                                 f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        wait_for(f"{machine}'s server", lambda: _answers(port, proc), START_S)
        return proc, port

    def log(self, machine: str) -> str:
        return (self._tmp / f"{machine}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=30)


def _answers(port: int, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"the server exited with {proc.returncode}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def pg_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    env = {"VIRTLIFE_DB": pg_url}
    add = virtlife("host", "add", "node", NODE_URI, env={**env, "VIRTLIFE_HOME": str(
        tmp_path / "setup")})
    assert add.code == 0, add.err
    return env


@pytest.fixture
def supervisors(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Supervisors]:
    env = request.getfixturevalue("pg_env") if "pg_env" in request.fixturenames else {}
    started = Supervisors(tmp_path, env)
    try:
        yield started
    finally:
        started.close()


def leader_json(env: dict[str, str]) -> dict[str, Any] | None:
    run = virtlife("leader", "--json", env=env)
    if run.code == EXIT_NOT_FOUND:
        return None
    assert run.code == 0, run.err
    found = json.loads(run.out)
    assert isinstance(found, dict)
    return found


def changes(env: dict[str, str]) -> list[dict[str, Any]]:
    """The journal's leadership changes, oldest first (as ``operations --json`` shows)."""
    run = virtlife("operations", "--all", "--limit", "200", "--json", env=env)
    assert run.code == 0, run.err
    rows = [r for r in json.loads(run.out) if str(r["operation"]).startswith("leader-")]
    return list(reversed(rows))


def test_a_stopped_leader_is_replaced_in_the_bound_and_steps_down_when_it_wakes(
        pg_url: str, pg_env: dict[str, str], supervisors: Supervisors,
        tmp_path: Path) -> None:
    observer = {**pg_env, "VIRTLIFE_MACHINE_ID": "observer",
                "VIRTLIFE_HOME": str(tmp_path / "observer")}
    a, _ = supervisors.start("machine-a")
    first = wait_for("machine-a to lead", lambda: leader_json(observer), 30)
    assert (first["machine"], first["pid"], first["epoch"]) == ("machine-a", a.pid, 1)
    assert set(first) >= {"machine", "pid", "epoch", "since"}
    b, _ = supervisors.start("machine-b")
    assert leader_json(observer) == {**first, "expires_in_s": pytest.approx(
        first["expires_in_s"], abs=10)}  # B follows: still A, epoch 1

    with open_store(pg_url) as store:  # the database's clock as A stops (just before)
        _, stopped_s = lease.read(store.database)
        a.send_signal(signal.SIGSTOP)
        a_term, _ = lease.read(store.database)
    taken = wait_for("machine-b to take over",
                     lambda: (v := leader_json(observer)) and v["machine"] == "machine-b"
                     and v, FAILOVER_BOUND_S + 60)
    assert (taken["pid"], taken["epoch"]) == (b.pid, 2)
    with open_store(pg_url) as store:
        b_term, _ = lease.read(store.database)
    assert a_term is not None and b_term is not None and b_term.epoch == 2
    failover_s = b_term.since_s - stopped_s
    print(f"failover: B's term began {failover_s:.2f} s after A stopped, "
          f"{b_term.since_s - a_term.expires_s:.2f} s after A's lease ended (by the "
          f"database's clock; bound {FAILOVER_BOUND_S:g} s)")
    assert b_term.since_s >= a_term.expires_s  # never while A's lease was in force
    assert a_term.expires_s - stopped_s <= TTL_S
    assert failover_s <= FAILOVER_BOUND_S + 1.0, supervisors.log("machine-b")  # + its step

    a.send_signal(signal.SIGCONT)
    rows = wait_for("machine-a to step down",
                    lambda: (r := changes(observer)) and r[-1]["operation"] == STEPPED_DOWN
                    and r, 60)
    assert [(r["operation"], r["machine"], r["epoch"], r["outcome"]) for r in rows] == [
        (ACQUIRED, "machine-a", 1, "ok"),
        (TOOK_OVER, "machine-b", 2, "ok"),
        (STEPPED_DOWN, "machine-a", 1, "refused")]
    assert "took over from machine-a" in rows[1]["detail"]
    assert "renewal was refused: epoch 1 is stale: machine-b" in rows[2]["detail"]
    assert a.poll() is None  # A lives on, a follower
    after = leader_json(observer)
    assert after is not None and (after["machine"], after["epoch"]) == ("machine-b", 2)
    # A acts no more: after B's term began, its only row is its stepping down.
    run = virtlife("operations", "--all", "--limit", "200", "--json", env=observer)
    newer = [r for r in json.loads(run.out) if r["machine"] == "machine-a"
             and r["started"] > rows[1]["started"]]
    assert [r["operation"] for r in newer] == [STEPPED_DOWN]

    b.send_signal(signal.SIGTERM)  # a clean stop releases the lease: A takes over at once
    assert b.wait(timeout=60) != 0
    back = wait_for("machine-a to take over again",
                    lambda: (v := leader_json(observer)) and v["machine"] == "machine-a"
                    and v, 30)
    assert back["epoch"] == 3
    assert [(r["operation"], r["machine"], r["epoch"]) for r in changes(observer)[3:]] == [
        (STEPPED_DOWN, "machine-b", 2), (TOOK_OVER, "machine-a", 3)]


def test_two_supervisors_on_one_sqlite_store_get_one_leader(
        supervisors: Supervisors, tmp_path: Path) -> None:
    home = tmp_path / "shared"
    env = {"VIRTLIFE_HOME": str(home)}
    a, _ = supervisors.start("machine-a", home)
    first = wait_for("a leader", lambda: leader_json(env), 30)
    assert (first["pid"], first["epoch"], first["engine"]) == (a.pid, 1, "sqlite")
    b, _ = supervisors.start("machine-a", home)
    # B is up (its health answered), and its loop polls: still one leader, A.
    rows = changes(env)
    assert [(r["operation"], r["pid"]) for r in rows] == [(ACQUIRED, a.pid)]
    assert leader_json(env) == {**first, "expires_in_s": pytest.approx(
        first["expires_in_s"], abs=10)}

    a.kill()  # the file lock is freed with its holder
    a.wait(timeout=30)
    taken = wait_for("the other to take over",
                     lambda: (v := leader_json(env)) and v["pid"] == b.pid and v, 60)
    assert taken["epoch"] == 2
    assert [(r["operation"], r["pid"], r["epoch"]) for r in changes(env)] == [
        (ACQUIRED, a.pid, 1), (TOOK_OVER, b.pid, 2)]
