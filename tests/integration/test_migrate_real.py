"""``virtlife migrate`` between the two lab hosts: the pre-flight check, a live move that
keeps the guest's boot, an offline move back, and refusals that move nothing."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from lab_support import LabSession
from virtlife import config
from virtlife.lab import cluster
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def vms(lab: LabSession) -> Iterator[list[str]]:
    """VMs to remove from every lab host afterwards, with their disks."""
    names: list[str] = []
    yield names
    status = cluster.status()
    for h in status.hosts if status is not None else ():
        for name in names:
            virsh(h.uri, "destroy", name)
            virsh(h.uri, "undefine", name, "--managed-save", "--snapshots-metadata")
    for name in names:
        for directory in ((lab.pool_dir,) if status else ()) + (config.images_dir(),):
            for leftover in directory.glob(f"{name}.*"):
                leftover.unlink()


def start_vm(lab: LabSession, image: GuestImage, name: str, *, in_pool: bool = True) -> None:
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision
    from virtlife.services.context import open_services

    spec = lab_guest_spec(image, name, images_dir=lab.pool_dir if in_pool else None)
    with open_services(store_path=lab.home / "virtlife.db") as services:
        result = provision.create(services.lifecycle, spec, host="lab-a", start=True,
                                  wait_agent=True)
    assert str(result.state).startswith("running"), result


def boot_id(lab: LabSession, vm: str) -> str:
    run = lab.virtlife("agent", vm, "exec", "--", "/bin/cat", "/proc/sys/kernel/random/boot_id")
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_check_then_live_move_then_offline_move_back(lab: LabSession, real_stack: GuestImage,
                                                     vms: list[str]) -> None:
    name = f"vl-it-mig-{os.getpid()}"
    vms.append(name)
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
    *updates, outcome = [json.loads(line) for line in run.stdout.splitlines()]
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

    assert lab.virtlife("destroy", f"lab-b/{name}").returncode == 0
    run = lab.virtlife("migrate", f"lab-b/{name}", "lab-a")  # shut off: not live
    assert run.returncode == 3 and "--offline" in run.stderr
    run = lab.virtlife("migrate", f"lab-b/{name}", "lab-a", "--offline")
    assert run.returncode == 0, run.stderr
    assert virsh(a, "domstate", name).stdout.strip() == "shut off"
    assert virsh(b, "list", "--all", "--name").stdout.strip() == ""


def test_a_disk_only_this_host_has_is_refused_and_nothing_moves(
        lab: LabSession, real_stack: GuestImage, vms: list[str]) -> None:
    name = f"vl-it-migl-{os.getpid()}"
    vms.append(name)
    start_vm(lab, real_stack, name, in_pool=False)  # its disk outside the shared pool
    run = lab.virtlife("migrate", name, "lab-b")
    assert run.returncode == 3
    assert f"cannot migrate {name} to lab-b: disk vda:" in run.stderr
    assert "--copy-storage all" in run.stderr
    assert virsh(lab.uri("lab-a"), "domstate", name).stdout.strip() == "running"
    assert name not in virsh(lab.uri("lab-b"), "list", "--all", "--name").stdout


def start_migration(lab: LabSession, name: str) -> subprocess.Popen[str]:
    """``virtlife migrate NAME lab-b`` slowed down (4 MiB/s, no post-copy), in the
    background, returned once its memory transfer is under way."""
    import signal
    import time

    from support import VIRTLIFE

    proc = subprocess.Popen(
        [*VIRTLIFE, "migrate", name, "lab-b", "--bandwidth", "4", "--postcopy", "never"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if "transferring memory" in line:
            return proc
        assert time.monotonic() < deadline, "no memory transfer began"
    raise AssertionError(f"migrate ended before transferring memory: {proc.wait()}")


def still_at_a(lab: LabSession, name: str) -> None:
    """Running at A and answering; its incoming copy gone from B (libvirt removes it
    once the source told it the migration was cancelled: a moment later)."""
    import time

    assert virsh(lab.uri("lab-a"), "domstate", name).stdout.strip() == "running"
    deadline = time.monotonic() + 60
    while name in virsh(lab.uri("lab-b"), "list", "--all", "--name").stdout:
        assert time.monotonic() < deadline, f"{name} is still at lab-b"
        time.sleep(0.5)
    assert boot_id(lab, f"lab-a/{name}")  # the guest still answers at A


def test_migrate_abort_and_ctrl_c_leave_the_vm_running_at_the_source(
        lab: LabSession, real_stack: GuestImage, vms: list[str]) -> None:
    import signal

    name = f"vl-it-migab-{os.getpid()}"
    vms.append(name)
    start_vm(lab, real_stack, name)
    proc = start_migration(lab, name)
    try:
        run = lab.virtlife("migrate-abort", name)
        assert run.returncode == 0, run.stderr
        assert "migration aborted; the VM stays on lab-a" in run.stdout
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert f"{name} is running" in err and "on lab-a" in err
    still_at_a(lab, name)

    proc = start_migration(lab, name)
    try:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    still_at_a(lab, name)
    run = lab.virtlife("migrate-abort", name)  # nothing runs any more
    assert run.returncode == 3 and "no migration runs on it" in run.stderr


def test_faults_mid_migration_leave_the_vm_running_at_the_source(
        lab: LabSession, real_stack: GuestImage, vms: list[str]) -> None:
    """The destination's libvirtd dies; then the link to the destination is cut (the
    watchdog ends it before libvirt's ~28 s keepalive). Each time the VM keeps running
    at the source, the error says where it is, and nothing is left at the destination."""
    name = f"vl-it-migf-{os.getpid()}"
    vms.append(name)
    start_vm(lab, real_stack, name)

    proc = start_migration(lab, name)
    try:
        cluster.host("lab-b").stop_daemon("libvirtd")
        _out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        cluster.host("lab-b").start_daemons()
    assert proc.returncode not in (0, 130), err
    assert f"{name} is running" in err and "on lab-a" in err, err
    still_at_a(lab, name)

    proc = start_migration(lab, name)
    try:
        subprocess.run(["ip", "link", "set", "vl-lab-b", "down"], check=True, timeout=30)
        _out, err = proc.communicate(timeout=180)
    finally:
        subprocess.run(["ip", "link", "set", "vl-lab-b", "up"], check=False, timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode not in (0, 130), err
    assert "no bytes moved for" in err or "keepalive" in err.lower(), err
    assert f"{name} is running" in err and "on lab-a" in err, err
    still_at_a(lab, name)
