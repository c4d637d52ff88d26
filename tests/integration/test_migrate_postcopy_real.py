"""Post-copy between the two lab hosts (marker ``postcopy``: not in ``make test``; run
by ``make test-postcopy``). On this stack (QEMU 7.2 under TCG, libvirt 9.0) post-copy is
not reliable enough for CI: in about 20 runs here a memory-dirtying guest panicked at
the destination once, and a post-copy stalled (no byte moved, for good) three times,
under load more often. What these tests check when it works: the policy's post-copy
rung moves a dirtying guest with its boot kept; a post-copy paused on purpose leaves
both ends "post-copy failed" with the way out in the error; ``--postcopy-resume``
either ends the move or (as seen here, ``virsh migrate --postcopy-resume`` alike)
pauses it again and says so rather than hang."""

from __future__ import annotations

import json
import os
import time

import pytest
from migrate_support import (
    CAP,
    DIRTY,
    boot_id,
    domstate,
    finish,
    outcome_of,
    start_migration,
    start_vm,
    virsh,
)

from lab_support import LabSession
from virtlife.lab.guest import GuestImage

pytestmark = [pytest.mark.integration, pytest.mark.postcopy]

def test_policy_auto_switches_a_dirtying_guest_to_post_copy_under_a_tight_bound(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    name = f"vl-it-migpc-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, **DIRTY)
    before = boot_id(lab, f"lab-a/{name}")
    # a 50 ms bound (under QEMU's 300 ms: it starts there): post-copy at the first rung
    run = lab.virtlife("migrate", name, "lab-b", *CAP, "--max-downtime", "50",
                       "--timeout", "120", "--json")
    assert run.returncode == 0, run.stderr
    _updates, outcome = outcome_of(run.stdout)
    steps = [s["action"] for s in outcome["policy"]["steps"]]  # type: ignore[index]
    assert steps == ["postcopy"], outcome["policy"]
    reason = outcome["policy"]["steps"][0]["reason"]  # type: ignore[index]
    assert "at max downtime 50 ms (its bound)" in reason, reason
    assert "switching to post-copy" in reason, reason
    stats = outcome["stats"]
    assert stats is None or stats["phase"] == "completed", stats  # type: ignore[index]
    assert domstate(lab, "lab-b", name).startswith("running")
    assert boot_id(lab, f"lab-b/{name}") == before
    history = json.loads(lab.virtlife("history", f"lab-b/{name}", "--json").stdout)
    moved = [h for h in history if h["operation"] == "migrate" and h["outcome"] == "ok"]
    assert moved and "switching to post-copy" in moved[0]["detail"], moved  # newest first


def test_an_interrupted_post_copy_is_resumed_with_postcopy_resume(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    """An idle guest switched to post-copy 3 s into its first pass (--on-timeout
    postcopy), slowed to 8 MiB/s so the post-copy lasts; then paused on purpose, as a
    lost link pauses it."""
    name = f"vl-it-migp-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, memory_mib=256)
    before = boot_id(lab, f"lab-a/{name}")
    proc = start_migration(lab, name, "--bandwidth", "8", "--timeout", "3", "--on-timeout",
                           "postcopy", until="post-copy, running at destination")
    try:
        # once it runs at B (before, B still loads the device state and cannot pause)
        deadline = time.monotonic() + 60
        while domstate(lab, "lab-b", name) != "running (post-copy)":
            assert time.monotonic() < deadline, domstate(lab, "lab-b", name)
            time.sleep(0.2)
        # what a lost link does to a post-copy, on purpose: both ends pause
        paused = virsh(lab.uri("lab-a"), "domjobabort", name, "--postcopy")
        assert paused.returncode == 0, paused.stderr
    finally:
        code, _out, err = finish(proc)
    assert code not in (0, 130), err
    # watched until it settled (issue 15, F): failed for good, and how to resume it
    assert "post-copy failed" in err and "--postcopy-resume" in err, err
    assert domstate(lab, "lab-a", name) == "paused (post-copy failed)"
    # libvirt calls B "running": its vCPUs run, stalled on the pages still at A
    assert domstate(lab, "lab-b", name) in ("running (post-copy failed)",
                                             "paused (post-copy failed)")
    run = lab.virtlife("migrate", name, "lab-b")  # a plain move cannot be the answer
    assert run.returncode != 0

    run = lab.virtlife("migrate", name, "lab-b", "--postcopy-resume", "--bandwidth", "64")
    if run.returncode == 0:  # the move ends at B, alive
        assert "post-copy resumed" in run.stdout, run.stdout
        assert domstate(lab, "lab-b", name).startswith("running")
        assert name not in virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout
        assert boot_id(lab, f"lab-b/{name}") == before
        return
    # Seen here (libvirt 9.0, QEMU 7.2; `virsh migrate --postcopy-resume` alike): the
    # resume moves no byte. virtlife must not hang on it: it pauses it again, and says so
    assert run.returncode == 5, run.stderr
    assert "the post-copy resume of" in run.stderr and "moved nothing for 1" in run.stderr
    assert "paused again (post-copy failed)" in run.stderr, run.stderr
    assert domstate(lab, "lab-a", name) == "paused (post-copy failed)"
