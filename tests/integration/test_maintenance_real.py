"""``virtlife host maintenance lab-a`` in the lab: the dry run places a running VM on
lab-b with its checks, the evacuation moves it there live (same boot, as a child
operation of the evacuation's), lab-a stays in maintenance, and ``host activate`` ends
it. The VM is removed from every lab host afterwards, and lab-a is activated, even when
the test fails."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from migrate_support import boot_id, start_vm, virsh

from lab_support import LabSession
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def modes(lab: LabSession) -> dict[str, str]:
    run = lab.virtlife("host", "list", "--json")
    assert run.returncode == 0, run.stderr
    return {h["name"]: h["mode"] for h in json.loads(run.stdout)}


@pytest.fixture
def lab_a_back(lab: LabSession) -> Iterator[None]:
    """lab-a active again after the test, whatever it did."""
    yield
    lab.virtlife("host", "maintenance", "lab-a", "--cancel")
    lab.virtlife("host", "activate", "lab-a")


def test_maintenance_moves_a_running_vm_live_to_lab_b_and_activate_ends_it(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str], lab_a_back: None,
        ) -> None:
    name = f"vl-it-maint-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    before = boot_id(lab, f"lab-a/{name}")

    dry = lab.virtlife("host", "maintenance", "lab-a", "--dry-run", "--json")
    plan = json.loads(dry.stdout)
    ours = next(v for v in plan["vms"] if v["vm"] == name)
    assert (ours["to"], ours["kind"]) == ("lab-b", "live"), ours
    assert "checks pass" in ours["checks"], ours
    assert dry.returncode == (1 if plan["stays"] else 0), dry.stderr
    assert modes(lab)["lab-a"] == "active"  # the dry run changed nothing
    assert virsh(lab.uri("lab-a"), "domstate", name).stdout.strip() == "running"

    run = lab.virtlife("host", "maintenance", "lab-a", "--json", "--timeout", "300",
                       timeout=600)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert run.returncode == (1 if summary["stays"] else 0), run.stderr
    step = next(s for s in summary["steps"] if s["vm"] == name)
    assert (step["outcome"], step["from"], step["to"]) == ("moved", "lab-a", "lab-b"), step
    assert step["seconds"] is not None and step["tried"] == []
    progress = [u for u in lines[:-1] if u["vm"] == name and u["stage"] == "progress"]
    assert progress, "no migration progress was reported"

    assert virsh(lab.uri("lab-b"), "domstate", name).stdout.strip() == "running"
    assert name not in virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout
    assert boot_id(lab, f"lab-b/{name}") == before  # it moved live
    assert modes(lab)["lab-a"] == "maintenance"

    parent = json.loads(lab.virtlife("operation", summary["op_id"], "--json").stdout)
    assert parent["operation"] == "host-maintenance" and parent["host"] == "lab-a"
    child = next(c for c in parent["children"] if c["vm"] == name)
    assert (child["operation"], child["outcome"]) == ("migrate", "ok"), child
    assert child["parent_op_id"] == summary["op_id"]

    # lab-b is the last active host now: nothing may evacuate it
    refused = lab.virtlife("host", "maintenance", "lab-b", "--dry-run")
    assert refused.returncode == 3 and "last active host" in refused.stderr

    run = lab.virtlife("host", "activate", "lab-a")
    assert run.returncode == 0 and "lab-a is active" in run.stdout, run.stderr
    assert modes(lab)["lab-a"] == "active"
