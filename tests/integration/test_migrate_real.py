"""``virtlife migrate`` between the two lab hosts: the pre-flight check, a live move that
keeps the guest's boot, an offline move back, and refusals that move nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from migrate_support import (
    boot_id,
    domstate,
    finish,
    outcome_of,
    start_migration,
    start_vm,
    still_at_a,
    virsh,
    wait_agent,
)

from lab_support import LabSession
from virtlife.lab import cluster
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def test_check_then_live_move_then_offline_move_back(lab: LabSession, real_stack: GuestImage,
                                                     lab_vms: list[str]) -> None:
    name = f"vl-it-mig-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    before = boot_id(lab, f"lab-a/{name}")

    run = lab.virtlife("migrate", name, "lab-b", "--check", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert "fail" not in statuses.values(), report
    assert report["allows_unsafe"] is True
    assert "probe volume made in pool lab-shared on lab-a was seen" in report["unsafe_reason"]

    run = lab.virtlife("migrate", name, "lab-b", "--json")
    assert run.returncode == 0, run.stderr
    updates, outcome = outcome_of(run.stdout)
    assert outcome["state"] == "running" and outcome["host"] == "lab-b", outcome
    assert "libvirt's unsafe flag passed: every disk proven shared" in outcome["note"]
    samples = [u["detail"] for u in updates if u["stage"] == "progress"]
    assert samples and all(s["phase_label"] in u["message"] for s, u in zip(
        samples, [u for u in updates if u["stage"] == "progress"], strict=True)), updates
    stats = outcome["stats"]  # the completed job, as the destination keeps it
    assert stats["phase"] == "completed", stats
    assert stats["memory_processed"] >= 8 * 1024 * 1024  # the guest's memory went over
    assert 0 < stats["job_elapsed_ms"] <= outcome["wall_s"] * 1000
    # an idle guest stops for the switch-over within the policy's start value
    assert stats["downtime_ms"] is not None and 0 < stats["downtime_ms"] <= 1000, stats
    assert outcome["policy"]["steps"] == []  # idle: nothing to escalate
    assert [u["detail"] for u in updates if u["stage"] == "stats"] == [stats]
    b, a = lab.uri("lab-b"), lab.uri("lab-a")
    assert virsh(b, "domstate", name).stdout.strip() == "running"
    assert virsh(a, "list", "--all", "--name").stdout.strip() == ""  # gone from A
    assert boot_id(lab, f"lab-b/{name}") == before  # the same boot: it moved live
    history = json.loads(lab.virtlife("history", f"lab-b/{name}", "--json").stdout)
    moved = next(h for h in history if h["operation"] == "migrate")
    assert moved["outcome"] == "ok" and "migrated: " in moved["detail"]
    assert f"downtime {stats['downtime_ms']} ms" in moved["detail"], moved
    assert "policy: no step needed" in moved["detail"]
    # issue 17: the VM is its UUID: history shows its operations at both hosts, and the
    # UUID names it wherever it is now
    assert any(h["host"] == "lab-a" and h["operation"] != "migrate" for h in history), history
    uuid = virsh(b, "domuuid", name).stdout.strip()
    by_uuid = json.loads(lab.virtlife("history", uuid, "--json").stdout)
    assert [h["op_id"] for h in by_uuid] == [h["op_id"] for h in history]
    state = json.loads(lab.virtlife("state", uuid, "--json").stdout)
    assert (state["host"], state["state"]) == ("lab-b", "running"), state

    run = lab.virtlife("migrate", f"lab-b/{name}", "lab-a", "--offline")  # it runs
    assert run.returncode == 3 and "--shutdown-first" in run.stderr, run.stderr
    run = lab.virtlife("migrate", f"lab-b/{name}", "lab-a", "--offline", "--shutdown-first",
                       "--keep-source")
    assert run.returncode == 0, run.stderr
    assert "migrated (the whole move" in run.stdout, run.stdout  # no job: no statistics
    assert virsh(a, "domstate", name).stdout.strip() == "shut off"
    assert virsh(b, "domstate", name).stdout.strip() == "shut off"  # kept, shut down
    history = json.loads(lab.virtlife("history", f"lab-b/{name}", "--json").stdout)
    assert [h["operation"] for h in history][:2] == ["migrate-offline", "shutdown"], history
    assert {"lab-a", "lab-b"} <= {h["host"] for h in history}  # the moves and both hosts'
    assert "migrate" in [h["operation"] for h in history]
    run = lab.virtlife("migrate", f"lab-b/{name}", "lab-a")  # shut off: not live
    assert run.returncode == 3 and "--offline" in run.stderr
    assert lab.virtlife("undefine", f"lab-b/{name}").returncode == 0
    run = lab.virtlife("migrate", f"lab-a/{name}", "lab-b", "--offline")  # a plain move
    assert run.returncode == 0, run.stderr
    assert virsh(b, "domstate", name).stdout.strip() == "shut off"
    assert virsh(a, "list", "--all", "--name").stdout.strip() == ""


def test_a_disk_only_this_host_has_is_refused_and_nothing_moves(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    name = f"vl-it-migl-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, in_pool=False)  # its disk outside the shared pool
    run = lab.virtlife("migrate", name, "lab-b")
    assert run.returncode == 3
    assert f"cannot migrate {name} to lab-b: disk vda:" in run.stderr
    assert "--copy-storage all" in run.stderr
    assert virsh(lab.uri("lab-a"), "domstate", name).stdout.strip() == "running"
    assert name not in virsh(lab.uri("lab-b"), "list", "--all", "--name").stdout


def test_migrate_abort_and_ctrl_c_leave_the_vm_running_at_the_source(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    name = f"vl-it-migab-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    proc = start_migration(lab, name)
    try:
        run = lab.virtlife("migrate-abort", name)
        assert run.returncode == 0, run.stderr
        assert "migration aborted; the VM stays on lab-a" in run.stdout
    finally:
        code, _out, err = finish(proc, 120)
    assert code != 0
    assert f"{name} is running" in err and "on lab-a" in err
    still_at_a(lab, name)

    proc = start_migration(lab, name)
    proc.send_signal(signal.SIGINT)
    code, _out, err = finish(proc, 120)
    assert code == 130, err
    still_at_a(lab, name)
    run = lab.virtlife("migrate-abort", name)  # nothing runs any more
    assert run.returncode == 3 and "no migration runs on it" in run.stderr

    # SIGHUP (a closed terminal, a dropped ssh session) ends it as SIGTERM does (issue
    # 15, E): aborted, not left running in libvirt with no watchdog
    proc = start_migration(lab, name)
    proc.send_signal(signal.SIGHUP)
    code, _out, err = finish(proc, 120)
    assert code == 129, err
    still_at_a(lab, name)


def test_a_migration_whose_process_was_killed_is_journalled_as_it_really_ended(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    """SIGKILL leaves libvirt's peer-to-peer job running. The next virtlife process's
    sweep asks the hosts: "still runs at lab-a" while it does; once it completed, the
    row says so (issue 15, E)."""
    name = f"vl-it-migk-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    proc = start_migration(lab, name)  # 4 MiB/s: it lasts while the sweep looks
    proc.kill()
    finish(proc, 30)

    def row() -> dict[str, str]:
        run = lab.virtlife("history", name, "--json")
        assert run.returncode == 0, run.stderr
        return next(h for h in json.loads(run.stdout) if h["operation"] == "migrate")

    first = row()
    assert first["outcome"] == "interrupted", first
    assert "its process ended while it ran; the migration still runs at lab-a" in \
        first["detail"], first
    # let libvirt finish it at full speed, then look again
    assert virsh(lab.uri("lab-a"), "migrate-setspeed", name, "1000").returncode == 0
    deadline = time.monotonic() + 120
    while virsh(lab.uri("lab-b"), "domstate", name).stdout.strip() != "running" or \
            name in virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout:
        assert time.monotonic() < deadline, "the migration never completed"
        time.sleep(0.5)
    last = row()
    assert last["op_id"] == first["op_id"], (first, last)
    assert last["outcome"] == "ok", last
    assert last["detail"].startswith("completed: running (migrated) at lab-b (confirmed "
                                     "later"), last


def incoming_qemu_pid(name: str) -> int:
    """The pid of the QEMU that lab-b started for the incoming VM ``name``."""
    from pathlib import Path

    for pid in cluster.host("lab-b").processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qemu-system" in argv[0] and f"guest={name},".encode() in b" ".join(argv):
            return pid
    raise AssertionError(f"no incoming QEMU for {name} at lab-b")


def test_faults_mid_migration_leave_the_vm_running_at_the_source(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    """The destination's libvirtd dies; its QEMU is killed; the link to it is cut (the
    watchdog ends that one before libvirt's ~28 s keepalive). Each time the VM keeps
    running at the source, the error says where it is, and nothing is left at the
    destination."""
    name = f"vl-it-migf-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)

    proc = start_migration(lab, name)
    try:
        cluster.host("lab-b").stop_daemon("libvirtd")
    finally:
        code, _out, err = finish(proc)
        cluster.host("lab-b").start_daemons()
    assert code == 4, err  # the destination lost: "host unreachable", as for a lost source
    assert f"{name} is running" in err and "on lab-a" in err, err
    assert f"cannot migrate {name} from lab-a to lab-b" in err, err  # named, not its URI
    assert "cannot migrate to qemu+tcp" not in err, err
    still_at_a(lab, name)

    proc = start_migration(lab, name)
    try:
        os.kill(incoming_qemu_pid(name), signal.SIGKILL)
    finally:
        code, _out, err = finish(proc)
    assert code not in (0, 130), err
    assert f"{name} is running" in err and "on lab-a" in err, err
    still_at_a(lab, name)

    proc = start_migration(lab, name)
    try:
        subprocess.run(["ip", "link", "set", "vl-lab-b", "down"], check=True, timeout=30)
        cut = time.monotonic()
        code, _out, err = finish(proc)
        took = time.monotonic() - cut
    finally:
        subprocess.run(["ip", "link", "set", "vl-lab-b", "up"], check=False, timeout=30)
    assert code not in (0, 130), err
    # virtlife's watchdog ended it (10 s without a byte moved), not libvirt's keepalive
    # (~28 s): the command ends within 15 s of the cut (issue 15, O), saying it once
    assert took <= 15.0, f"ended {took:.1f} s after the cut:\n{err}"
    assert "no bytes moved for 1" in err and "(bound 10 s)" in err, err
    assert f"{name} is running" in err and "on lab-a" in err, err
    ended = [line for line in err.splitlines()
             if line.startswith(("… failed", "… cancelled"))]
    assert len(ended) <= 1, err  # not one "cancelled" line per sample after the abort
    # only the link was down: lab-b's libvirtd was never said to be gone
    assert "libvirt is gone" not in err and "did not answer over the network" in err, err
    still_at_a(lab, name)


def test_a_suspended_move_pauses_the_vm_for_the_copy_and_resumes_it_at_dest(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    name = f"vl-it-migs-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    before = boot_id(lab, f"lab-a/{name}")
    proc = start_migration(lab, name, "--suspended", "--bandwidth", "16")
    try:
        during = virsh(lab.uri("lab-a"), "domstate", name, "--reason").stdout.strip()
    finally:
        code, out, err = finish(proc)
    assert during == "paused (migrating)", during  # not live: paused while it copies
    assert code == 0, err
    assert f"{name}: running" in out, out
    assert virsh(lab.uri("lab-b"), "domstate", name).stdout.strip() == "running"
    assert name not in virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout
    assert boot_id(lab, f"lab-b/{name}") == before


# ``virtlife migrate`` whose destination stops answering just after libvirt reported the
# move done, before virtlife looked at the VM there: the link to lab-b is cut then.
CUT_AFTER_DONE = """
import subprocess, sys
from virtlife.cli.main import main
from virtlife.services.migration.service import Migrations

real = Migrations._verify
def verify(self, *args, **kwargs):
    subprocess.run(["ip", "link", "set", "vl-lab-b", "down"], check=True, timeout=30)
    return real(self, *args, **kwargs)
Migrations._verify = verify
sys.exit(main(sys.argv[1:]))
"""


def test_a_move_whose_destination_is_lost_after_the_switch_over_says_what_is_known(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    """Issue 15, I: the VM runs at lab-b and is gone from lab-a, but lab-b stops answering
    before the end is confirmed. The command says what is known (libvirt said done, the
    VM is gone from lab-a, what to run), not only "cannot reach host lab-b"; the journal
    marks the end unconfirmed, and corrects the row once lab-b answers again."""
    name = f"vl-it-migi-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    try:
        run = subprocess.run([sys.executable, "-c", CUT_AFTER_DONE, "migrate", name, "lab-b",
                              "--postcopy", "never"], capture_output=True, text=True,
                             timeout=180, env=lab.env, check=False)
    finally:
        subprocess.run(["ip", "link", "set", "vl-lab-b", "up"], check=False, timeout=30)
    assert run.returncode == 4, run.stderr
    assert f"cannot confirm that {name} moved to lab-b" in run.stderr, run.stderr
    assert "libvirt at the source reported the migration done" in run.stderr, run.stderr
    assert f"{name} is gone from lab-a" in run.stderr, run.stderr
    assert f"virtlife state lab-b/{name}" in run.stderr, run.stderr
    # where it really is: running at lab-b only
    assert virsh(lab.uri("lab-b"), "domstate", name).stdout.strip() == "running"
    assert name not in virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout

    history = lab.virtlife("history", name, "--json")  # lab-b answers again: corrected
    assert history.returncode == 0, history.stderr
    row = next(h for h in json.loads(history.stdout) if h["operation"] == "migrate")
    assert row["outcome"] == "ok", row
    assert row["detail"].startswith("completed: running (migrated) at lab-b (confirmed "
                                    "later; first recorded: cannot confirm"), row


def test_a_post_copy_libvirt_called_failed_that_qemu_finished_is_reported_completed(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    """Issue 15, F: the link to lab-b is cut in post-copy long enough for libvirt's
    keepalive to call the move failed, then comes back; QEMU's stream, still open,
    finishes the move by itself. virtlife watches until it settles and reports (and
    journals) the move completed, with the source's stale copy undefined. In make test
    (unlike tests/integration/test_migrate_postcopy_real.py): an idle guest's post-copy,
    which passed 4 runs of 4 here; the old code said failed, exit 1."""
    name = f"vl-it-migpl-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name, memory_mib=256)
    before = boot_id(lab, f"lab-a/{name}")
    proc = start_migration(lab, name, "--bandwidth", "8", "--timeout", "3", "--on-timeout",
                           "postcopy", until="post-copy, running at destination")
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while domstate(lab, "lab-b", name) != "running (post-copy)":
            assert time.monotonic() < deadline, domstate(lab, "lab-b", name)
            time.sleep(0.2)
        subprocess.run(["ip", "link", "set", "vl-lab-b", "down"], check=True, timeout=30)
        try:
            for line in proc.stderr:  # until libvirt gave up on it, and virtlife watches
                seen.append(line)
                if "watching both ends until it settles" in line:
                    break
        finally:
            subprocess.run(["ip", "link", "set", "vl-lab-b", "up"], check=False, timeout=30)
    finally:
        code, out, err = finish(proc)
    err = "".join(seen) + err
    assert code == 0, err
    assert "post-copy of" in err and "watching both ends until it settles" in err, err
    assert "the post-copy finished by itself: running (migrated) at lab-b" in out, out
    assert "its shut-off copy at lab-a was undefined" in out, out
    assert domstate(lab, "lab-b", name).startswith("running"), domstate(lab, "lab-b", name)
    assert name not in virsh(lab.uri("lab-a"), "list", "--all", "--name").stdout
    try:
        wait_agent(lab, "lab-b", name, timeout=20)
    except AssertionError:
        # libvirt at lab-b can keep the agent channel "not connected" after a move it
        # called failed (QEMU's port event came while it held the job failed; seen in 2
        # of 8 clean-clone runs): a libvirtd restart reads the channels' state again
        cluster.host("lab-b").stop_daemon("libvirtd")
        cluster.host("lab-b").start_daemons()
    assert boot_id(lab, f"lab-b/{name}") == before
    run = lab.virtlife("history", name, "--json")
    row = next(h for h in json.loads(run.stdout) if h["operation"] == "migrate")
    assert row["outcome"] == "ok", row
