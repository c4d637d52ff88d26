"""`host list` with load, `vm pin`/`unpin` and `balance` from the command line, on two
test-driver hosts (issue 18). The balance runner is not built: without --dry-run a plan
with moves exits 1 and moves nothing; with none, there is nothing to run."""

from __future__ import annotations

import json

from test_bad_input import virtlife

from support import NODE2_URI, NODE_URI


def two_hosts() -> None:
    for name, uri in (("hv1", NODE_URI), ("hv2", NODE2_URI)):
        run = virtlife("host", "add", name, uri)
        assert run.code == 0, run.err


def test_host_list_shows_each_hosts_memory_and_cpu_load() -> None:
    two_hosts()
    run = virtlife("host", "list", "--json", "--window", "0.2")
    assert run.code == 0, run.err
    rows = {r["name"]: r for r in json.loads(run.out)}
    assert set(rows) == {"hv1", "hv2"}
    for row in rows.values():
        load = row["load"]
        assert 0 < load["memory_pct"] <= 100 and load["total_memory_mib"] == 4096
        # the test driver's node CPU counters stand still: unknown, with the reason
        assert load["cpu_pct"] is None and "did not advance" in load["cpu_unknown"]
    table = virtlife("host", "list", "--window", "0.1")
    assert table.code == 0 and "MEMORY" in table.out and "CPU" in table.out


def test_pin_and_unpin_a_vm_by_its_uuid() -> None:
    two_hosts()
    pinned = virtlife("vm", "pin", "hv2/db1", "--json")
    assert pinned.code == 0, pinned.err
    first = json.loads(pinned.out)
    assert first["vm"] == "db1" and first["changed"] is True
    again = virtlife("vm", "pin", "hv2/db1")
    assert again.code == 0 and "pinned already" in again.out
    unpinned = virtlife("vm", "unpin", first["uuid"], "--json")
    assert unpinned.code == 0, unpinned.err
    assert json.loads(unpinned.out)["changed"] is True
    assert "was not pinned" in virtlife("vm", "unpin", "hv2/db1").out


def test_balance_dry_run_prints_the_plan_and_the_load_after() -> None:
    two_hosts()
    run = virtlife("balance", "--dry-run", "--json", "--window", "0.1", "--threshold", "5")
    assert run.code == 0, run.err
    plan = json.loads(run.out)
    assert plan["dry_run"] is True and plan["ran"] is False
    assert {h["host"] for h in plan["before"]} == {"hv1", "hv2"}
    assert {h["host"] for h in plan["after"]} == {"hv1", "hv2"}
    assert plan["spread_after_pct"] <= plan["spread_before_pct"]
    real = virtlife("balance", "--window", "0.1", "--threshold", "5")
    if plan["moves"]:
        assert real.code == 1 and "not built" in real.err and "nothing was moved" in real.err
    else:
        assert real.code == 0, real.err
