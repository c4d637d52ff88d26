"""A real libvirtd started by the lab (``hostprep.ensure_daemons``, here through a private
host) runs under virtlife's reaper: the QEMUs it daemonizes are the reaper's children,
so a destroyed or killed QEMU is reaped at once instead of waiting for PID 1, and the
host's stop ends the reaper with everything else."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlife.lab import hostprep, privhost
from virtlife.lab.guest import GuestImage
from virtlife.lab.privhost import PrivateHost
from virtlife.procs import start_time
from virtlife.services.context import open_services

pytestmark = pytest.mark.integration

VM = f"vl-it-reap-{os.getpid()}"


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("\nPPid:", 1)[1].split()[0])


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)


def qemu_pid(host: PrivateHost) -> int:
    return int((host.dir / "run" / "libvirt" / "qemu" / f"{VM}.pid").read_text())


def start_vm(host: PrivateHost) -> int:
    done = virsh(host.uri, "start", VM)
    assert done.returncode == 0, done.stderr
    return qemu_pid(host)


@pytest.fixture
def host(real_stack: GuestImage, tmp_path: Path) -> Iterator[PrivateHost]:
    """A private host of this test with the diskless test VM defined (shut off)."""
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    state_dir = Path(tempfile.mkdtemp(prefix="vl-", dir="/tmp"))
    try:
        host = privhost.start("reap", state_dir=state_dir, owner_pid=os.getpid())
        spec = lab_guest_spec(real_stack, VM, disk=False, user_nic=False, memory_mib=128)
        with open_services(host.uri, store_path=tmp_path / "store.db") as services:
            provision.create(services.lifecycle, spec, host=services.default_host(),
                             virt_type="qemu")
        yield host
    finally:
        privhost.stop_all(state_dir)


def test_libvirtd_and_its_qemus_are_the_reapers_children_and_leave_no_zombie(
        host: PrivateHost) -> None:
    found = hostprep.parentage("libvirtd", host.daemon_paths)
    assert found is not None and found.reaped, found
    reaper = found.parent
    assert reaper != 1 and reaper in host.processes()  # inside the host: its stop ends it

    qemu = start_vm(host)
    assert ppid(qemu) == reaper  # libvirtd daemonized it: the reaper, not PID 1, took it
    done = virsh(host.uri, "destroy", VM)
    assert done.returncode == 0, done.stderr
    # libvirt answered once the QEMU was gone; gone means reaped, not even a zombie left
    assert not Path(f"/proc/{qemu}").exists()

    qemu = start_vm(host)
    assert ppid(qemu) == reaper
    os.kill(qemu, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while virsh(host.uri, "domstate", VM).stdout.strip() != "shut off":
        assert time.monotonic() < deadline, "libvirtd did not see its killed QEMU end"
        time.sleep(0.05)
    assert not Path(f"/proc/{qemu}").exists()


def test_the_hosts_stop_ends_its_reaper_and_running_qemu(host: PrivateHost) -> None:
    found = hostprep.parentage("libvirtd", host.daemon_paths)
    assert found is not None and found.reaped
    qemu = start_vm(host)
    host.stop()
    assert start_time(found.parent) is None
    assert start_time(found.pid) is None
    assert start_time(qemu) is None
