"""The convergence policy between the two lab hosts, on the test guest's memory dirtier
(``virtlife.dirty=64``: it rewrites 64 MiB in a loop): plain pre-copy cannot move it
under a 64 MiB/s cap and times out, leaving it at the source; ``--policy auto`` moves
it with its boot kept. Its post-copy rung: ``test_migrate_postcopy_real.py``."""

from __future__ import annotations

import json
import os

import pytest
from migrate_support import CAP, DIRTY, boot_id, domstate, outcome_of, start_vm, still_at_a, virsh

from lab_support import LabSession
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration

def test_policy_auto_moves_a_guest_that_plain_precopy_cannot(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    name = f"vl-it-migd-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, **DIRTY)
    before = boot_id(lab, f"lab-a/{name}")

    run = lab.virtlife("migrate", name, "lab-b", *CAP, "--policy", "off", "--postcopy",
                       "never", "--timeout", "15", "--json")
    assert run.returncode == 5, run.stdout + run.stderr  # timed out, aborted
    assert "not finished within --timeout 15 s: aborting (--on-timeout abort)" in run.stderr
    assert f"{name} is running" in run.stderr and "on lab-a" in run.stderr, run.stderr
    progress = [json.loads(line)["detail"] for line in run.stdout.splitlines()
                if json.loads(line)["stage"] == "progress"]
    assert max(p["iteration"] for p in progress) >= 3  # it kept iterating, in vain
    still_at_a(lab, name)

    # the default bound (1000 ms) lets a downtime raise through: what is left after a
    # pass swings between ~17 and ~64 MiB, and 64 MiB/s sends 17 MiB in 265 ms
    run = lab.virtlife("migrate", name, "lab-b", *CAP, "--timeout", "120", "--json")
    # on failure, the policy's steps and the last samples too: one clean-clone run (-n 2,
    # another lab test beside it) found the guest panicked at lab-b after this move, and
    # one found no completed-job statistics; alone it passed 3 of 3
    said = [line for line in run.stdout.splitlines()
            if '"stage":"policy"' in line or '"stage":"stats"' in line][-8:]
    assert run.returncode == 0, run.stderr + "\n".join(said)
    updates, outcome = outcome_of(run.stdout)
    steps = [s["action"] for s in outcome["policy"]["steps"]]  # type: ignore[index]
    assert steps[0] == "raise-downtime", outcome["policy"]
    assert [u["detail"]["action"] for u in updates  # type: ignore[index]
            if u["stage"] == "policy"] == steps  # each step printed as it was taken
    stats = outcome["stats"]
    assert isinstance(stats, dict) and stats["phase"] == "completed", stats
    assert 0 < stats["downtime_ms"] <= 1000, stats  # never above the bound
    assert domstate(lab, "lab-b", name).startswith("running"), domstate(lab, "lab-b", name)
    assert virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout.strip() == ""
    assert boot_id(lab, f"lab-b/{name}") == before  # the same boot: alive all along
