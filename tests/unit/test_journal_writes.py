"""Tests of how the journal writes an operation's two rows: one SQL statement each (the
hot path of every operation), still the cross-process lock, still waiting for another
process's write instead of failing.

Real SQLite files under ``tmp_path``; other processes are real processes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import virtlife
from virtlife.store import Store, open_store
from virtlife.store.journal import Actor, Held

SRC = str(Path(virtlife.__file__).resolve().parents[1])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "virtlife.db") as opened:
        yield opened


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement the store's connection runs from now on."""
    seen: list[str] = []
    conn = store._db._connection
    conn.set_trace_callback(seen.append)
    yield seen
    conn.set_trace_callback(None)


def _begin(store: Store, op_id: str, *, uuid: str = "u-1", key: str | None = "u-1") -> None:
    store.journal.begin(op_id=op_id, host="h", vm="vm1", operation="suspend",
                        actor=Actor("u"), lock_key=key, uuid=uuid, domid=4)


def test_the_running_row_and_its_completion_are_one_statement_each(
        store: Store, statements: list[str]) -> None:
    _begin(store, "op-1")
    assert [s.split()[0] for s in statements] == ["INSERT"]  # no BEGIN ... COMMIT around it
    statements.clear()
    store.journal.finish("op-1", "ok", "paused (user)", 0.01)
    assert [s.split()[0] for s in statements] == ["UPDATE"]
    entry = store.journal.get("op-1")
    assert entry is not None and (entry.outcome, entry.detail) == ("ok", "paused (user)")


def test_the_completion_leaves_what_the_running_row_has_and_fills_in_what_it_lacks(
        store: Store, statements: list[str]) -> None:
    _begin(store, "op-1")
    store.journal.finish("op-1", "ok", "paused (user)", 0.01)
    # the VM's name and UUID are not written again (their indexes not rewritten)
    [update] = [s for s in statements if s.startswith("UPDATE")]
    assert " vm = " not in update and " uuid = " not in update
    entry = store.journal.get("op-1")
    assert entry is not None and (entry.vm, entry.uuid) == ("vm1", "u-1")
    _begin(store, "op-2", uuid="", key="h/vm1")  # a VM defined by the operation itself
    store.journal.finish("op-2", "ok", "shut off (unknown)", 0.01, uuid="u-2")
    entry = store.journal.get("op-2")
    assert entry is not None and (entry.vm, entry.uuid) == ("vm1", "u-2")


def test_the_completion_frees_the_vm(store: Store) -> None:
    _begin(store, "op-1")
    with pytest.raises(Held) as held:
        _begin(store, "op-2")
    assert held.value.holder.op_id == "op-1"
    store.journal.finish("op-1", "ok", "paused (user)", 0.01)
    _begin(store, "op-2")
    assert [e.op_id for e in store.journal.running()] == ["op-2"]


HOLD_WRITE_LOCK = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
""")


def test_a_row_waits_for_another_processs_write_transaction_instead_of_failing(
        store: Store) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(store.path), "0.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        _begin(store, "op-1")  # waits for the other process's COMMIT (busy timeout)
        store.journal.finish("op-1", "ok", "paused (user)", 0.01)
    finally:
        assert holder.wait(20) == 0
    entry = store.journal.get("op-1")
    assert entry is not None and entry.outcome == "ok"


RACER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from virtlife.store import open_store
    from virtlife.store.journal import Actor, Held
    n, won = int(sys.argv[2]), 0
    with open_store(Path(sys.argv[1])) as store:
        while won < n:
            op = f"p{sys.argv[4]}-{won}"
            try:
                store.journal.begin(op_id=op, host="h", vm="vm1", operation="suspend",
                                    actor=Actor("u"), lock_key="u-1", uuid="u-1")
            except Held:
                time.sleep(0.001)
                continue
            # while this process holds the VM, nobody else runs on it
            assert [e.op_id for e in store.journal.running()] == [op]
            store.journal.finish(op, "ok", "paused (user)", 0.0)
            won += 1
""")


def test_processes_racing_for_one_vm_take_it_in_turn_and_never_fail(store: Store) -> None:
    per_process = 40
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(store.path), str(per_process),
                               SRC, str(n)], stderr=subprocess.PIPE, text=True)
             for n in range(3)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    rows = store.journal.list(limit=1000)
    assert len(rows) == 3 * per_process
    assert {e.outcome for e in rows} == {"ok"} and store.journal.running() == []
