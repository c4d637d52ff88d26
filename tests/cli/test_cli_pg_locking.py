"""The per-VM lock and the interrupted sweep in a PostgreSQL store shared by machines.

"Machine A" is a Python process holding VM vm-running of the test node (a running
journal row, as an operation's), with ``VIRTLIFE_MACHINE_ID=machine-a`` and a short
lease TTL; "machine B" is the real ``virtlife`` command with another machine id, which
cannot read A's ``/proc``. B's operation on the VM is refused while A lives (also after
A's first lease would have lapsed: A renews it); once A is killed with SIGKILL, B sees
A's row ``interrupted`` after A's lease lapses, and then operates on the VM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from test_bad_input import on_node, virtlife

from virtlife.store import open_store

UUID = "11111111-1111-1111-1111-111111111111"  # vm-running in tests/data/node.xml
TTL_S = 3.0  # machine A's lease TTL (production: 15 s)
EXIT_BUSY = 6

HOLD = """
import sys
from virtlife.store import open_store
from virtlife.store.journal import Actor
store = open_store(sys.argv[1])
store.journal.begin(op_id="a-holds-vm", host="node", vm="vm-running", operation="save",
                    actor=Actor("alice", "cli"), lock_key=sys.argv[2], uuid=sys.argv[2])
print("held", flush=True)
sys.stdin.read()  # until killed
"""


@pytest.fixture
def machine_a(pg_url: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "VIRTLIFE_MACHINE_ID": "machine-a",
           "VIRTLIFE_LEASE_TTL_S": str(TTL_S)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, pg_url, UUID], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _row(pg_url: str, env: dict[str, str]) -> dict[str, object]:
    run = virtlife("operations", "--all", "--json", env=env)
    assert run.code == 0, run.err
    (row,) = [r for r in json.loads(run.out) if r["op_id"] == "a-holds-vm"]
    return dict(row)


def _lease_ends(pg_url: str) -> float:
    with open_store(pg_url) as store, store.database.read() as conn:
        (row,) = conn.execute("SELECT expires_s FROM process_leases WHERE machine = ?",
                              ("machine-a",)).fetchall()
        return float(row["expires_s"])


def test_machine_b_is_kept_off_a_vm_machine_a_holds_and_sees_it_interrupted_once_a_dies(
        pg_url: str, machine_a: subprocess.Popen[str]) -> None:
    b = {"VIRTLIFE_DB": pg_url, "VIRTLIFE_MACHINE_ID": "machine-b"}
    row = _row(pg_url, b)
    assert (row["outcome"], row["machine"]) == ("running", "machine-a")
    refused = on_node("suspend", "vm-running", env=b)
    assert refused.code == EXIT_BUSY, refused.err
    assert "a-holds-vm" in refused.err

    # A lives on past its first lease's end (it renews it): B still keeps off.
    first = _lease_ends(pg_url)
    deadline = time.monotonic() + 60
    while _lease_ends(pg_url) <= first + TTL_S:
        assert time.monotonic() < deadline, "machine A never renewed its lease"
        time.sleep(0.1)
    assert _row(pg_url, b)["outcome"] == "running"
    assert on_node("suspend", "vm-running", env=b).code == EXIT_BUSY

    machine_a.send_signal(signal.SIGKILL)
    machine_a.wait(timeout=30)
    deadline = time.monotonic() + TTL_S + 30  # the TTL, and a loaded machine's slack
    while (row := _row(pg_url, b))["outcome"] == "running":
        assert time.monotonic() < deadline, "machine A's row was never interrupted"
        time.sleep(0.2)
    assert row["outcome"] == "interrupted"
    assert "process ended" in str(row["detail"])
    done = on_node("suspend", "vm-running", env=b)
    assert done.code == 0, done.err
