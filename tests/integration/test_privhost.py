"""A private libvirt host in its own mount namespace (``virtlife.lab.privhost``): it
answers as a host of its own, leaves nothing behind, and serves the cases where the
client's file system is not the host's (save/restore paths) or its libvirtd restarts."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import VIRTLIFE, EventStream
from virtlife import errors
from virtlife.lab import privhost
from virtlife.lab.guest import GuestImage
from virtlife.lab.privhost import PRIVATE_DIR, PrivateHost
from virtlife.services.context import Services, open_services

pytestmark = pytest.mark.integration



def virtlife(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy(), check=False)


def host_uuid(uri: str) -> str:
    caps = subprocess.run(["virsh", "-c", uri, "capabilities"], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    found = re.search(r"<host>\s*<uuid>([0-9a-f-]+)</uuid>", caps)
    assert found, caps[:500]
    return found.group(1)


def virsh_quiet(uri: str, *args: str) -> None:
    subprocess.run(["virsh", "-c", uri, *args], capture_output=True, timeout=60, check=False)


def leftovers(host: PrivateHost, pids: list[int]) -> list[str]:
    """What of ``host`` is still there: processes, mounts in this namespace, its directory."""
    left = [f"process {pid}" for pid in {*pids, *host.processes()}
            if privhost.Proc.of(pid) is not None]
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount {line}" for line in mounts.splitlines() if str(host.dir) in line]
    if host.dir.exists():
        left.append(f"directory {host.dir}")
    return left


def start_diskless_vm(services: Services, image: GuestImage, name: str) -> None:
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    spec = lab_guest_spec(image, name, disk=False, user_nic=False, memory_mib=128)
    provision.create(services.lifecycle, spec, host=services.default_host(), virt_type="qemu")
    assert str(services.lifecycle.start(name).state) == "running (booted)"


# --------------------------------------------------------------------------- the host


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short state directory of its own (socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vl-", dir="/tmp"))
    try:
        yield path
    finally:
        privhost.stop_all(path)


def test_private_host_answers_as_a_host_of_its_own(private_host: PrivateHost) -> None:
    run = virtlife("-c", private_host.uri, "list", "--all")
    assert run.returncode == 0, run.stderr
    assert private_host.uri == ("qemu+unix:///system?socket="
                                f"{private_host.dir}/run/libvirt/libvirt-sock")
    assert host_uuid(private_host.uri) == private_host.host_uuid
    assert private_host.host_uuid != host_uuid("qemu:///system")
    assert set(private_host.pids) == {"holder", "virtlogd", "libvirtd"}
    networks = subprocess.run(["virsh", "-c", private_host.uri, "net-list", "--all", "--name"],
                              capture_output=True, text=True, timeout=60, check=True)
    assert networks.stdout.strip() == ""  # none of the system's definitions came along
    # its own private directory, which the client does not see
    assert private_host.inside(PRIVATE_DIR).is_dir()
    assert not os.path.exists(PRIVATE_DIR)


def test_stop_leaves_no_process_mount_or_directory(real_stack: GuestImage,
                                                   state_dir: Path) -> None:
    host = privhost.start("stop", state_dir=state_dir, owner_pid=os.getpid())
    assert set(host.pids) == {"holder", "virtlogd", "libvirtd"}
    pids = host.processes()
    assert set(host.pids.values()) <= set(pids)  # with a helper libvirtd may be running
    assert host.run(["test", "-S", "/run/libvirt/libvirt-sock"]).returncode == 0
    actions = host.stop()
    assert actions[-1] == f"removed {host.dir}"
    assert leftovers(host, pids) == []
    assert not state_dir.exists()


def test_a_host_whose_owner_was_killed_is_swept_away_with_its_guests(
        real_stack: GuestImage, state_dir: Path, tmp_path: Path) -> None:
    owner = subprocess.Popen(["sleep", "60"])
    try:
        host = privhost.start("stale", state_dir=state_dir, owner_pid=owner.pid)
        with open_services(host.uri, store_path=tmp_path / "store.db") as services:
            start_diskless_vm(services, real_stack, "vl-it-priv-stale")
        pids = host.processes()
        assert "qemu-system-x86" in {Path(f"/proc/{pid}/comm").read_text().strip()
                                     for pid in pids}
        with pytest.raises(errors.LabError, match=f"its owner pid {owner.pid} is running"):
            privhost.start(host.name, state_dir=state_dir)
    finally:
        owner.kill()
        owner.wait()
    actions = privhost.sweep(state_dir)
    assert actions and actions[0].startswith(f"cleaned up an earlier private host {host.name}")
    assert leftovers(host, pids) == []


# --------------------------------------------------------------------------- save / restore


@pytest.fixture
def priv_services(private_host: PrivateHost, tmp_path: Path) -> Iterator[Services]:
    with open_services(private_host.uri, store_path=tmp_path / "store.db") as s:
        yield s


@pytest.fixture
def priv_vm(private_host: PrivateHost, priv_services: Services, real_stack: GuestImage,
            request: pytest.FixtureRequest) -> Iterator[str]:
    """A running test-guest VM on the private host (booted, agent not awaited)."""
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    name = f"vl-it-priv-{request.node.name.removeprefix('test_')[:16]}-{os.getpid()}"
    spec = lab_guest_spec(real_stack, name)
    try:
        provision.create(priv_services.lifecycle, spec, host=priv_services.default_host(),
                         virt_type="qemu")
        assert str(priv_services.lifecycle.start(name).state) == "running (booted)"
        yield name
    finally:
        virsh_quiet(private_host.uri, "destroy", name)
        virsh_quiet(private_host.uri, "undefine", name, "--managed-save")
        for disk in spec.disks:
            disk.unlink(missing_ok=True)


def test_save_and_restore_at_a_path_only_the_host_has(private_host: PrivateHost,
                                                     priv_services: Services,
                                                     priv_vm: str) -> None:
    path = PRIVATE_DIR / f"{priv_vm}.sav"
    assert not os.path.exists(path.parent)  # the client has no such directory
    result = priv_services.lifecycle.save(priv_vm, path)
    assert str(result.state) == "saved (saved to file)"
    assert private_host.inside(path).stat().st_size > 100_000
    result = priv_services.lifecycle.restore(path, host=priv_services.default_host())
    assert result.vm == priv_vm
    assert str(result.state) == "running (restored)"
    assert private_host.inside(path).exists()  # restore keeps the file


def test_save_over_a_file_only_the_host_has_is_refused(private_host: PrivateHost,
                                                       priv_services: Services,
                                                       priv_vm: str) -> None:
    path = PRIVATE_DIR / f"{priv_vm}-taken"
    private_host.inside(path).write_bytes(b"someone else's file\n")
    assert not os.path.exists(path)
    with pytest.raises(errors.AlreadyExists):
        priv_services.lifecycle.save(priv_vm, path)
    assert str(priv_services.lifecycle.state(priv_vm)[1]).startswith("running")
    assert private_host.inside(path).read_bytes() == b"someone else's file\n"


# --------------------------------------------------------------------------- events


def test_events_reconnect_after_the_hosts_libvirtd_restarts(
        private_host: PrivateHost, priv_services: Services, real_stack: GuestImage) -> None:
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    name = f"vl-it-priv-events-{os.getpid()}"
    uri = private_host.uri
    spec = lab_guest_spec(real_stack, name, disk=False, user_nic=False, memory_mib=128)
    provision.create(priv_services.lifecycle, spec, host=priv_services.default_host(),
                     virt_type="qemu")
    stream = EventStream("--timeout", "90", uri=uri)
    try:
        stream.read_until({"kind": "host", "event": "connected"})
        assert private_host.stop_daemon("libvirtd") is not None
        stream.read_until({"kind": "host", "event": "disconnected"})
        assert private_host.start_daemons() == [
            f"started libvirtd ({private_host.socket} was absent)"]
        stream.read_until({"kind": "host", "event": "connected"}, timeout_s=30)
        run = virtlife("-c", uri, "start", name)
        assert run.returncode == 0, run.stderr
        stream.read_until({"vm": name, "kind": "lifecycle", "event": "started"})
    finally:
        stream.close()
        virsh_quiet(uri, "destroy", name)
        virsh_quiet(uri, "undefine", name)
