"""``virtlife host maintenance`` and ``host activate`` on two test-driver hosts (lab-a:
tests/data/node.xml, lab-b: node2.xml). The test driver migrates nothing, and its hosts
report no free memory: every VM of lab-a stays, each with its reason, which is what the
dry run and a real run must say. The real moves are the lab's test
(tests/integration/test_maintenance_real.py). Runs the real ``virtlife`` command."""

from __future__ import annotations

import json

from test_bad_input import Run, virtlife

from support import NODE2_URI, NODE_URI

LAB_A_VMS = {"vm-running", "vm-paused", "vm-saved", "vm-off", "vm-crashed", "vm-pmsusp"}


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}\n{run.out}\n{run.err}"
    return run


def modes() -> dict[str, str]:
    return {h["name"]: h["mode"] for h in json.loads(ok(virtlife("host", "list", "--json")).out)}


def two_hosts() -> None:
    ok(virtlife("host", "add", "lab-a", NODE_URI))
    ok(virtlife("host", "add", "lab-b", NODE2_URI))


def test_the_dry_run_lists_every_vm_with_its_reason_and_changes_nothing() -> None:
    two_hosts()
    run = virtlife("host", "maintenance", "lab-a", "--dry-run", "--json")
    assert run.code == 1, run.err  # VMs would stay on lab-a
    plan = json.loads(run.out)
    by_vm = {v["vm"]: v for v in plan["vms"]}
    assert set(by_vm) == LAB_A_VMS and plan["host"] == "lab-a"
    assert set(plan["stays"]) == LAB_A_VMS
    assert by_vm["vm-running"]["kind"] == "live" and by_vm["vm-off"]["kind"] == "offline"
    assert "lab-b has 0 MiB free" in by_vm["vm-running"]["reason"]
    assert "fix: free memory on lab-b" in by_vm["vm-running"]["reason"]
    assert "only running, paused and shut-off VMs move" in by_vm["vm-crashed"]["reason"]
    assert "save image" in by_vm["vm-saved"]["reason"]
    assert all(v["to"] is None for v in plan["vms"])
    assert modes() == {"lab-a": "active", "lab-b": "active"}  # nothing changed
    assert json.loads(ok(virtlife("operations", "--all", "--json")).out) == []

    table = virtlife("host", "maintenance", "lab-a", "--dry-run", env={"COLUMNS": "300"})
    assert table.code == 1
    assert "dry run: nothing moves" in table.out
    assert "6 VM(s) would stay on lab-a" in table.out
    kept = virtlife("host", "maintenance", "lab-a", "--dry-run", "--stopped", "leave",
                    "--json")
    by_vm = {v["vm"]: v for v in json.loads(kept.out)["vms"]}
    assert by_vm["vm-off"]["kept"] and "--stopped leave keeps it here" in \
        by_vm["vm-off"]["reason"]
    assert "vm-off" not in json.loads(kept.out)["stays"]


def test_the_last_active_host_and_an_unknown_host_are_refused() -> None:
    ok(virtlife("host", "add", "lab-a", NODE_URI))
    run = virtlife("host", "maintenance", "lab-a")
    assert run.code == 3, run.err
    assert "lab-a in maintenance: it is the last active host (the inventory has no other " \
        "host)" in run.err
    assert modes() == {"lab-a": "active"}
    missing = virtlife("host", "maintenance", "nosuch", "--dry-run")
    assert missing.code != 0 and "no host named nosuch" in missing.err


def test_an_evacuation_marks_the_host_journals_one_parent_and_reports_what_stays() -> None:
    two_hosts()
    run = virtlife("host", "maintenance", "lab-a", "--json", "--stopped", "leave")
    assert run.code == 1, run.err  # VMs stay: exit non-zero
    lines = [json.loads(line) for line in run.out.splitlines()]
    summary = lines[-1]["summary"]
    parent = summary["op_id"]
    assert summary["host"] == "lab-a" and summary["cancelled"] is None
    outcomes = {s["vm"]: s["outcome"] for s in summary["steps"]}
    assert outcomes == dict.fromkeys(LAB_A_VMS, "left")
    assert set(summary["stays"]) == LAB_A_VMS - {"vm-off", "vm-saved"}  # kept by choice
    assert {u["stage"] for u in lines[:-1]} >= {"plan", "step", "overall"}
    assert all(u["op_id"] == parent for u in lines[:-1])
    assert modes() == {"lab-a": "maintenance", "lab-b": "active"}

    row = json.loads(ok(virtlife("operation", parent, "--json")).out)
    assert (row["operation"], row["host"], row["outcome"]) == ("host-maintenance", "lab-a",
                                                               "error")
    assert "lab-a in maintenance; 0 moved, 0 failed, 6 left" in row["detail"]
    assert "children" not in row  # nothing moved: no migration ran

    # lab-b is now the last active host: it cannot go into maintenance too
    refused = virtlife("host", "maintenance", "lab-b", "--dry-run")
    assert refused.code == 3 and "the others (lab-a) are in maintenance" in refused.err
    none = virtlife("host", "maintenance", "lab-a", "--cancel")
    assert none.code != 0 and "no evacuation of lab-a is running" in none.err

    assert "lab-a is active: it takes VMs again" in ok(virtlife("host", "activate",
                                                                "lab-a")).out
    assert "lab-a was active already" in ok(virtlife("host", "activate", "lab-a")).out
    assert modes() == {"lab-a": "active", "lab-b": "active"}
    history = json.loads(ok(virtlife("history", "--host", "lab-a", "--json")).out)
    assert [h["operation"] for h in history[:2]] == ["host-activate", "host-maintenance"]


def test_cancel_and_dry_run_together_are_a_usage_error() -> None:
    two_hosts()
    run = virtlife("host", "maintenance", "lab-a", "--cancel", "--dry-run")
    assert run.code == 64 and "give one of them" in run.err


def test_a_host_in_maintenance_takes_no_part_in_balancing() -> None:
    two_hosts()
    assert virtlife("host", "maintenance", "lab-a", "--stopped", "leave").code == 1
    run = virtlife("balance", "--dry-run", "--json", "--window", "0.1")
    assert run.code == 0, run.err
    plan = json.loads(run.out)
    assert plan["left_out"].get("lab-a") == "in maintenance", plan
    assert all(m["to"] != "lab-a" for m in plan["moves"])
