"""libvirtd restarted in the middle of an operation (issue 15, M), on a private host whose
libvirtd the tests stop and start again (never the system's): the operation reconnects
within its time, looks the VM up again by its UUID, and says what happened; exit 0 when
the VM got where it was meant to be anyway, a clear error when it did not. Before, the
first call after the restart failed with libvirt's raw words ("End of file while
reading data", "client socket is closed", exit 1)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from support import VIRTLIFE
from virtlife.lab.guest import GuestImage
from virtlife.lab.privhost import PrivateHost
from virtlife.services.context import Services, open_services
from virtlife.states import Operation, VMState

pytestmark = pytest.mark.integration

RESTARTED = re.compile(r"libvirtd on \S+ restarted during (\S+); the guest is now ([^;,]+)")


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def services(private_host: PrivateHost, tmp_path: Path) -> Iterator[Services]:
    with open_services(private_host.uri, store_path=tmp_path / "store.db") as s:
        yield s


@pytest.fixture
def make_vm(private_host: PrivateHost, services: Services, real_stack: GuestImage,
            request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """``make_vm(agent=True) -> name``: a shut-off diskless test-guest VM on the private
    host; ``agent=False``: a shell is the guest's init, so no agent ever answers. Each is
    destroyed and undefined afterwards, whatever happened."""
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision

    made: list[str] = []

    def make(*, agent: bool = True) -> str:
        name = f"vl-it-rst-{request.node.name.removeprefix('test_')[:14]}-{os.getpid()}"
        spec = lab_guest_spec(real_stack, name, disk=False, user_nic=False, memory_mib=128)
        if not agent:
            spec = replace(spec, cmdline=spec.cmdline + " rdinit=/bin/sh")
        made.append(name)
        provision.create(services.lifecycle, spec, host=services.default_host(),
                         virt_type="qemu")
        return name

    yield make
    private_host.start_daemons()  # whatever a failed test left stopped
    for name in made:
        virsh(private_host.uri, "destroy", name)
        virsh(private_host.uri, "undefine", name)


def restart_libvirtd(host: PrivateHost, *, meanwhile: Callable[[], None] | None = None) -> None:
    """Stop the host's libvirtd (it is gone when this returns), run ``meanwhile``, start
    it again (it answers when this returns)."""
    assert host.stop_daemon("libvirtd") is not None
    if meanwhile is not None:
        meanwhile()
    assert host.start_daemons() == [f"started libvirtd ({host.socket} was absent)"]


class Background:
    """``virtlife -v -c URI ARGS`` running, its progress lines (stderr) read as they come."""

    def __init__(self, uri: str, home: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*VIRTLIFE, "-v", "-c", uri, *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "VIRTLIFE_HOME": str(home)})
        self.err: list[str] = []

    def read_until(self, words: str, timeout_s: float = 120) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        for line in self.proc.stderr:
            self.err.append(line)
            if words in line:
                return
            assert time.monotonic() < deadline, f"no progress line said {words!r}"
        raise AssertionError(f"it ended before saying {words!r}: {''.join(self.err)}")

    def finish(self, timeout_s: float = 240) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return self.proc.returncode, out, "".join(self.err) + err


def qemu_pid(host: PrivateHost, name: str) -> int:
    """The pid of VM ``name``'s QEMU on ``host``, proven to run in the host."""
    pid = int((host.dir / "run" / "libvirt" / "qemu" / f"{name}.pid").read_text().strip())
    assert pid in host.processes()
    assert Path(f"/proc/{pid}/comm").read_text().strip().startswith("qemu-system")
    return pid


def test_start_wait_agent_reconnects_when_libvirtd_restarts_during_the_agent_wait(
        private_host: PrivateHost, make_vm: Callable[..., str], tmp_path: Path) -> None:
    name = make_vm()
    run = Background(private_host.uri, tmp_path, "start", name, "--wait-agent")
    try:
        run.read_until(f"waiting for the agent of {name}")
        restart_libvirtd(private_host)
    finally:
        code, out, err = run.finish()
    assert code == 0, err
    found = RESTARTED.search(out)
    assert found, out
    assert found.groups() == ("start", "running (booted)")
    assert "guest agent answered after" in out
    assert virsh(private_host.uri, "domstate", name).stdout.strip() == "running"


def test_start_wait_agent_says_the_guest_died_while_libvirtd_was_away(
        private_host: PrivateHost, make_vm: Callable[..., str], tmp_path: Path) -> None:
    name = make_vm(agent=False)
    run = Background(private_host.uri, tmp_path, "start", name, "--wait-agent")
    try:
        run.read_until(f"waiting for the agent of {name}")
        pid = qemu_pid(private_host, name)
        restart_libvirtd(private_host, meanwhile=lambda: os.kill(pid, signal.SIGKILL))
    finally:
        code, out, err = run.finish()
    assert code == 1, (out, err)  # HostRestarted: the operation failed
    found = RESTARTED.search(err)
    assert found, err
    assert found.group(1) == "start"
    assert found.group(2).startswith("shut off")
    assert "so it will not be running with its guest agent answering" in err
    assert "End of file" not in err and "socket is closed" not in err


def test_a_wait_for_a_state_reconnects_and_reads_the_vm_again_by_its_uuid(
        private_host: PrivateHost, services: Services, make_vm: Callable[..., str]) -> None:
    """A shutdown's wait for "shut off" across a restart, during which the guest's QEMU
    went away: the wait reconnects, finds the VM shut off, and says so (exit 0)."""
    name = make_vm()
    assert services.lifecycle.start(name).state.state is VMState.RUNNING
    guest = services.fleet.resolve(name)
    with services.operations.run(Operation.SHUTDOWN, guest.host, name, guest) as run:
        # the request went out (as the ladder's would); then libvirtd restarts, and the
        # guest's QEMU ends while it is away
        pid = qemu_pid(private_host, name)
        restart_libvirtd(private_host, meanwhile=lambda: os.kill(pid, signal.SIGKILL))
        state = run.wait()
    assert state.state is VMState.SHUTOFF
    assert run.result is not None
    found = RESTARTED.search(run.result.note)
    assert found, run.result.note
    assert found.groups() == ("shutdown", str(state))
    [entry] = [e for e in services.journal.list(vm=name)  # type: ignore[union-attr]
               if e.operation == "shutdown"]
    assert entry.outcome == "ok"
    assert "restarted during shutdown" in entry.detail
