"""The ``operations`` and ``operation`` commands and operation ids in results, run as the
real ``virtlife`` command against the test driver with a private store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import assert_one_line_error, on_node, virtlife

from support import NODE_URI
from virtlife.store import open_store
from virtlife.store.journal import Actor

SRC = Path(__file__).resolve().parents[2] / "src"


def test_a_result_carries_its_operation_id_and_operation_shows_it() -> None:
    done = on_node("suspend", "vm-running", "--json")
    assert done.code == 0, done.err
    op_id = json.loads(done.out)["op_id"]
    shown = virtlife("operation", op_id, "--json")
    assert shown.code == 0, shown.err
    row = json.loads(shown.out)
    assert (row["op_id"], row["operation"], row["vm"], row["outcome"]) == (
        op_id, "suspend", "vm-running", "ok")
    assert row["process"] == "cli" and row["user"]
    table = virtlife("operation", op_id)
    assert table.code == 0 and "suspend" in table.out and op_id in table.out


def test_operations_lists_only_running_ones_and_all_with_all(isolated_home: Path) -> None:
    assert on_node("suspend", "vm-running").code == 0
    assert json.loads(virtlife("operations", "--json").out) == []
    with open_store(isolated_home / "virtlife.db") as store:
        store.journal.begin(op_id="inflight0001", host="t", vm="web1", operation="save",
                            actor=Actor("carol", "server"), lock_key="t/web1")
        listed = json.loads(virtlife("operations", "--json").out)
        assert [(r["op_id"], r["user"], r["process"]) for r in listed] == [
            ("inflight0001", "carol", "server")]
        table = virtlife("operations")
        assert "inflight0001" in table.out and "carol (server)" in table.out
        every = json.loads(virtlife("operations", "--all", "--limit", "5", "--json").out)
        assert [r["operation"] for r in every] == ["save", "suspend"]
        store.journal.finish("inflight0001", "ok", "saved", 1.0)


def test_operations_marks_a_dead_process_operation_interrupted(isolated_home: Path) -> None:
    with open_store(isolated_home / "virtlife.db"):
        pass
    code = ("import sys; from pathlib import Path; from virtlife.store import open_store;"
            "from virtlife.store.journal import Actor;"
            "s = open_store(Path(sys.argv[1]));"
            "s.journal.begin(op_id='deadproc0001', host='t', vm='w', operation='save',"
            " actor=Actor('x'), lock_key='t/w')")
    subprocess.run([sys.executable, "-c", code, str(isolated_home / "virtlife.db")],
                   check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert json.loads(virtlife("operations", "--json").out) == []
    row = json.loads(virtlife("operation", "deadproc0001", "--json").out)
    assert row["outcome"] == "interrupted"


def test_an_unknown_operation_is_not_found_with_exit_2() -> None:
    line = assert_one_line_error(virtlife("operation", "nosuchop0000"), code=2)
    assert line.startswith("no operation nosuchop0000")


def test_queue_flag_is_accepted_and_the_operation_runs() -> None:
    run = virtlife("-c", NODE_URI, "--queue", "suspend", "vm-running")
    assert run.code == 0, run.err
    assert "paused (user)" in run.out
