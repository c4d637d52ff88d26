"""Snapshots on the real libvirtd + QEMU with the test guest, seen from inside the guest.

The guest's qemu-ga runs an fsfreeze hook that appends ``<uptime> freeze`` and
``<uptime> thaw`` to /var/log/fsfreeze.log; tests read it back through the agent's
``exec``. The data disk (vda, qcow2, ext4 on /mnt/data) is what snapshots keep; the
content of an image is read on the host with ``qemu-img convert`` and ``debugfs``.
Each test makes its own VM (``make_vm``) and removes it, its overlay files included,
even when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import VIRTLIFE
from virtlife import config, errors
from virtlife.hypervisor.snapshot import DomainSnapshots
from virtlife.services.context import Services
from virtlife.services.snapshots import WHY_DISK_ONLY

pytestmark = pytest.mark.integration

URI = "qemu:///system"
MakeVM = Callable[..., str]


@pytest.fixture
def vm(services: Services, make_vm: MakeVM) -> Iterator[str]:
    """A running test guest whose agent answers; removed afterwards with every overlay
    file its snapshots left beside its disk."""
    name = make_vm()
    try:
        services.lifecycle.start(name, wait_agent=True)
        yield name
    finally:
        guest = services.fleet.host(services.default_host()).find(name)
        if guest is not None:
            if guest.status().state.is_active:
                guest.destroy()
            guest.undefine(managed_save=True, snapshots=True)
        for leftover in config.images_dir().glob(f"{name}.*"):
            leftover.unlink()


def sh(services: Services, vm: str, script: str) -> str:
    got = services.agent.exec(vm, ["/bin/sh", "-c", script])
    assert got.exit_code == 0, got.stderr
    return got.stdout.decode()


def hook_log(services: Services, vm: str) -> list[str]:
    """The fsfreeze hook's calls in the guest, in order (``freeze`` / ``thaw``)."""
    text = sh(services, vm, "cat /var/log/fsfreeze.log 2>/dev/null || true")
    return [line.split()[1] for line in text.splitlines() if line.strip()]


def disk_chain(services: Services, vm: str) -> list[str]:
    """The live XML's vda: its source file, then its backing files' in order."""
    root = ET.fromstring(services.lifecycle.dumpxml(vm))
    [disk] = [d for d in root.iterfind("devices/disk") if d.find("target[@dev='vda']") is not None]
    chain = []
    node: ET.Element | None = disk
    while node is not None and node.find("source") is not None:
        chain.append(node.find("source").get("file", ""))  # type: ignore[union-attr]
        node = node.find("backingStore")
    return chain


def file_in_image(image: Path, path: str, tmp_path: Path) -> str:
    """The content of ``path`` in the ext4 file system of a qcow2 image (read while the
    VM runs: ``-U`` shares QEMU's lock)."""
    raw = tmp_path / f"{image.name}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(image),
                    str(raw)], check=True, capture_output=True, timeout=120)
    try:
        got = subprocess.run(["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True,
                             text=True, check=True, timeout=60)
    finally:
        raw.unlink()
    return got.stdout


def test_a_quiesced_snapshot_freezes_and_thaws_the_guest_and_puts_an_overlay_on_its_disk(
        services: Services, vm: str, tmp_path: Path) -> None:
    sh(services, vm, ": > /var/log/fsfreeze.log; echo written-before > /mnt/data/before.txt")
    base = config.images_dir() / f"{vm}.qcow2"
    overlay = config.images_dir() / f"{vm}.q1"

    result = services.snapshots.create(vm, "q1", quiesce=True)

    assert hook_log(services, vm) == ["freeze", "thaw"]  # the guest saw both
    assert services.agent.freeze_status(vm).status == "thawed"
    assert "quiesced: 1 file system(s) frozen for " in result.note, result.note
    assert WHY_DISK_ONLY in result.note and f"vda now writes to the overlay {overlay}" in \
        result.note
    assert disk_chain(services, vm) == [str(overlay), str(base)]
    [info] = services.snapshots.list(vm)
    assert (info.name, info.state, info.location, info.memory, info.files) == (
        "q1", "disk-snapshot", "external", False, (str(overlay),))
    # the file written before the freeze is in the image the snapshot keeps
    assert file_in_image(base, "/before.txt", tmp_path) == "written-before\n"
    assert services.store is not None and services.store.freezes.list() == []

    # an external snapshot with no internal parent is deleted by merging its overlay back
    deleted = services.snapshots.delete(vm, "q1")
    assert "overlay was merged into the disk chain and removed" in deleted.note
    assert disk_chain(services, vm) == [str(base)]
    assert not overlay.exists()
    assert sh(services, vm, "cat /mnt/data/before.txt") == "written-before\n"
    journal = [(e.operation, e.outcome) for e in services.store.journal.list(vm=vm)
               if e.operation.startswith("snapshot-")]
    assert journal == [("snapshot-delete", "ok"), ("snapshot-create", "ok")]


def test_an_error_between_freeze_and_snapshot_still_thaws_the_guest(
        services: Services, vm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sh(services, vm, ": > /var/log/fsfreeze.log")
    seen: list[str] = []

    def fail(self: DomainSnapshots, *_a: object, **_k: object) -> None:
        seen.append(services.agent.freeze_status(self.vm).status)
        raise errors.OperationFailed("injected between the freeze and the snapshot")

    monkeypatch.setattr(DomainSnapshots, "create", fail)
    with pytest.raises(errors.OperationFailed, match="injected"):
        services.snapshots.create(vm, "q1", quiesce=True)
    monkeypatch.undo()

    assert seen == ["frozen"]
    assert hook_log(services, vm) == ["freeze", "thaw"]
    assert services.agent.freeze_status(vm).status == "thawed"
    assert services.snapshots.list(vm) == []
    assert services.store is not None and services.store.freezes.list() == []
    assert [e.outcome for e in services.store.journal.list(vm=vm)
            if e.operation == "snapshot-create"] == ["error"]


CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from virtlife.hypervisor.snapshot import DomainSnapshots
    from virtlife.services.context import open_services

    # the snapshot step never returns: the process is killed while the guest is frozen
    DomainSnapshots.create = lambda *a, **k: threading.Event().wait()
    with open_services(sys.argv[1], store_path=Path(sys.argv[2])) as s:
        s.snapshots.create(sys.argv[3], "k1", quiesce=True, freeze_bound_s=600)
""")


def test_a_freeze_left_by_a_killed_process_is_thawed_by_the_next_command(
        services: Services, vm: str, tmp_path: Path) -> None:
    sh(services, vm, ": > /var/log/fsfreeze.log")
    home = tmp_path / "home"
    home.mkdir()
    child = subprocess.Popen([sys.executable, "-c", CHILD, URI, str(home / "virtlife.db"), vm],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # the agent refuses guest-exec while frozen, so the hook's log is read after; the
        # agent's own freeze status says when the guest is frozen
        while services.agent.freeze_status(vm).status != "frozen":
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never froze the guest"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert services.agent.freeze_status(vm).status == "frozen"  # nobody thawed it

    env = {**os.environ, "VIRTLIFE_HOME": str(home)}
    run = subprocess.run([*VIRTLIFE, "-c", URI, "suspend", vm], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert f"thawed the file systems of {vm}: operation " in run.stderr
    assert "ended without thawing them" in run.stderr
    services.lifecycle.resume(vm)
    assert services.agent.freeze_status(vm).status == "thawed"
    assert hook_log(services, vm) == ["freeze", "thaw"]
    assert services.snapshots.list(vm) == []  # the snapshot was never taken


CTRL_C_CHILD = textwrap.dedent("""
    import sys, threading
    from virtlife.cli.main import main
    from virtlife.hypervisor.snapshot import DomainSnapshots

    # the snapshot step never returns: Ctrl-C comes while the guest is frozen
    DomainSnapshots.create = lambda *a, **k: threading.Event().wait()
    sys.exit(main(sys.argv[1:]))
""")


def test_ctrl_c_during_a_quiesced_snapshot_thaws_the_guest_before_exiting(
        services: Services, vm: str, tmp_path: Path) -> None:
    sh(services, vm, ": > /var/log/fsfreeze.log")
    env = {**os.environ, "VIRTLIFE_HOME": str(tmp_path)}
    child = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, "-c", URI, "snapshot", vm, "create", "c1",
         "--quiesce", "--freeze-bound", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while services.agent.freeze_status(vm).status != "frozen":
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never froze the guest"
            time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == 130, err
    # thawed by the interrupt itself, not left for the next command
    assert services.agent.freeze_status(vm).status == "thawed"
    assert hook_log(services, vm) == ["freeze", "thaw"]


def test_an_internal_snapshot_with_memory_reverted_brings_back_that_moment(
        services: Services, vm: str) -> None:
    sh(services, vm, "echo one > /mnt/data/state.txt; sync")
    taken = services.snapshots.create(vm, "s1", description="state one")
    assert "internal snapshot s1 with the VM's memory (running)" in taken.note
    sh(services, vm, "echo two > /mnt/data/state.txt; sync")

    back = services.snapshots.revert(vm, "s1")

    assert str(back.state) == "running (from snapshot)"
    assert "guest clock" in back.note and "now" in back.note, back.note
    assert sh(services, vm, "cat /mnt/data/state.txt") == "one\n"
    [info] = services.snapshots.list(vm)
    assert (info.state, info.location, info.memory, info.current, info.description) == (
        "running", "internal", True, True, "state one")

    services.snapshots.create(vm, "s2")
    services.snapshots.delete(vm, "s1", children=True)
    assert services.snapshots.list(vm) == []


def test_external_snapshots_cannot_be_reverted_and_say_what_works(
        services: Services, vm: str) -> None:
    services.snapshots.create(vm, "s1")
    services.snapshots.create(vm, "d1", disk_only=True)
    with pytest.raises(errors.InvalidTransition,  # exit 3: refused, as any bad transition
                       match=r"it is an external .* revert to an internal snapshot instead"):
        services.snapshots.revert(vm, "d1")
    with pytest.raises(errors.Unsupported,
                       match=r"whose parent is an internal one; drop only its metadata"):
        services.snapshots.delete(vm, "d1")
    with pytest.raises(errors.Unsupported, match="revert to s1 first"):
        services.snapshots.delete(vm, "s1")
    # what the messages say works does work
    services.snapshots.revert(vm, "s1", sync_time=False)
    services.snapshots.delete(vm, "s1")
    dropped = services.snapshots.delete(vm, "d1", metadata_only=True)
    overlay = config.images_dir() / f"{vm}.d1"
    assert f"its overlay file(s) stay on the host: {overlay}" in dropped.note
    assert overlay.exists() and services.snapshots.list(vm) == []


def test_quiesce_without_an_agent_fails_clearly_and_no_quiesce_ok_goes_on(
        services: Services, vm: str) -> None:
    sh(services, vm, "touch /run/qga.off; (sleep 1; kill $(pidof qemu-ga)) >/dev/null 2>&1 &")
    deadline = time.monotonic() + 60
    while True:
        try:
            services.agent.ping(vm, timeout_s=2)
        except errors.AgentUnavailable:
            break
        assert time.monotonic() < deadline, "the agent did not go down"
        time.sleep(0.5)

    with pytest.raises(errors.AgentUnavailable, match=r"--no-quiesce-ok"):
        services.snapshots.create(vm, "q1", quiesce=True)
    assert services.snapshots.list(vm) == []

    result = services.snapshots.create(vm, "q1", quiesce=True, no_quiesce_ok=True)
    assert "not quiesced (--no-quiesce-ok): the guest agent cannot freeze: " in result.note
    [info] = services.snapshots.list(vm)
    assert (info.name, info.location) == ("q1", "external")


def test_undefine_drops_internal_and_external_snapshot_metadata_and_keeps_the_files(
        services: Services, vm: str) -> None:
    services.snapshots.create(vm, "s1")
    services.snapshots.create(vm, "d1", disk_only=True)
    services.lifecycle.destroy(vm)
    with pytest.raises(errors.InvalidTransition, match="it has 2 snapshot"):
        services.lifecycle.undefine(vm)

    result = services.lifecycle.undefine(vm, snapshots=True)
    assert str(result.state) == "undefined"

    base, overlay = (config.images_dir() / f"{vm}.{s}" for s in ("qcow2", "d1"))
    assert f"their external files stay on disk: {overlay} " in result.note  # named
    info = subprocess.run(["qemu-img", "info", "--backing-chain", str(overlay)],
                          capture_output=True, text=True, check=True).stdout
    assert f"backing file: {base}" in info  # the overlay stays, on top of the disk
    tags = subprocess.run(["qemu-img", "snapshot", "-l", str(base)], capture_output=True,
                          text=True, check=True).stdout
    assert " s1 " in tags  # the internal snapshot stays inside the image


# A fsfreeze hook that stops qemu-ga (SIGSTOP) right after it froze the file systems:
# it waits for qemu-ga's own "frozen" state file, gives it a second to answer the
# freeze, then stops it: no thaw is ever answered. Written over the guest's hook.
HANG_AFTER_FREEZE_HOOK = """#!/bin/sh
echo "$(cut -d' ' -f1 /proc/uptime) $1" >> /var/log/fsfreeze.log
if [ "$1" = freeze ]; then
    ( while [ ! -e /run/qga.state.isfrozen ]; do usleep 20000; done
      sleep 1; kill -STOP "$(pidof qemu-ga)" ) < /dev/null > /dev/null 2>&1 &
fi
exit 0
"""
# ``snapshot create`` whose snapshot step first waits until the agent is stopped (a
# guest-ping, answered even while frozen, no longer is), so the thaw meets a hung agent.
HUNG_CHILD = textwrap.dedent("""
    import sys, time, libvirt, libvirt_qemu
    from virtlife.cli.main import main
    from virtlife.hypervisor.snapshot import DomainSnapshots

    real = DomainSnapshots.create
    def create(self, *a, **k):
        dom = libvirt.open(sys.argv[2]).lookupByName(self.vm)
        for _ in range(60):
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute": "guest-ping"}', 1, 0)
            except libvirt.libvirtError:
                break
            time.sleep(0.2)
        return real(self, *a, **k)
    DomainSnapshots.create = create
    sys.exit(main(sys.argv[1:]))
""")


def cli(home: Path, *args: str, timeout: float = 90,
        command: tuple[str, ...] = tuple(VIRTLIFE)) -> tuple[int, str, str, float]:
    """``virtlife -c URI ARGS`` with its own store; (exit code, stdout, stderr, seconds).
    A command still running after ``timeout`` is killed and counts as exit -9."""
    env = {**os.environ, "VIRTLIFE_HOME": str(home)}
    t0 = time.monotonic()
    proc = subprocess.Popen([*command, "-c", URI, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:g} s)"
    return proc.returncode, out, err, time.monotonic() - t0


def test_a_hung_agent_after_the_freeze_fails_in_bound_and_the_ladder_still_presses_acpi(
        services: Services, vm: str, tmp_path: Path) -> None:
    """Issue 15 D: qemu-ga stops right after the freeze. The quiesced snapshot ends within
    its bound + 5 s saying the guest may still be frozen; later agent calls cost their
    deadline, not libvirt's 30 s; and the shutdown ladder gets past the agent to the ACPI
    button while a stuck typed thaw holds libvirt's lock on the VM."""
    services.agent.exec(vm, ["/bin/sh", "-c", "cat > /etc/qemu/fsfreeze-hook"],
                        stdin=HANG_AFTER_FREEZE_HOOK.encode())
    bound = 4

    code, _out, err, took = cli(tmp_path, "snapshot", vm, "create", "h1", "--quiesce",
                                "--freeze-bound", str(bound), timeout=60,
                                command=(sys.executable, "-c", HUNG_CHILD))

    assert code == 8, err
    assert f"the file systems of {vm} may still be frozen" in err, err
    assert f"`virtlife agent {vm} thaw`" in err
    # bound + 5 s, and the CLI's start and its guest checks on a busy 2-core host (a
    # generous margin: the old code never returned)
    assert took < bound + 5 + 10, took
    assert "Snapshot h1 was taken while the file systems were frozen, and is kept" in err
    assert [s.name for s in services.snapshots.list(vm)] == ["h1"]

    # a later agent command costs its deadlines (its own 2 s + margin, and as much to
    # check the freeze left behind), not libvirt's 30 s for each call
    code, _out, err, took = cli(tmp_path, "agent", vm, "ping", "--timeout", "2")
    assert code == 5 and "did not answer within" in err, err
    assert f"{vm} may still have frozen file systems" in err, err
    assert took < 25, took  # the old code: libvirt's 30 s for the freeze check alone
    # the agent is the only way asked: a hung one is a timeout (5), not "failed" (1)
    code, _out, err, took = cli(tmp_path, "shutdown", vm, "--mode", "agent", "--timeout", "6")
    assert code == 5, err
    assert took < 6 + 15, took  # the ladder's bound, then the CLI's start and checks

    # a typed thaw (as virsh's) blocks in libvirtd for good, holding the VM's agent lock
    stuck = subprocess.Popen(["virsh", "-c", URI, "domfsthaw", vm], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        code, out, err, took = cli(tmp_path, "shutdown", vm, "--timeout", "12", "--force")
    finally:
        stuck.kill()
        stuck.wait(30)
    assert code == 0, err
    assert "ACPI button" in out, out  # pressed: it worked, or it was asked and then forced
    assert "guest agent: " in out, out
    assert took < 12 + 12, took
