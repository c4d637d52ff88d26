"""What the lab's migration tests share: virsh at a lab host, a running test guest at
lab-a, a migration started in the background, and where a VM is afterwards."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

from lab_support import LabSession
from support import VIRTLIFE
from virtlife.lab.guest import GuestImage

# The test guest's memory dirtier (it rewrites 64 MiB in a loop) and the cap that plain
# pre-copy cannot beat it under.
DIRTY: dict[str, Any] = {"memory_mib": 256, "dirty_mib": 64}
CAP = ("--bandwidth", "64")


def outcome_of(stdout: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``virtlife migrate --json``'s lines: the progress updates, then the outcome."""
    *updates, outcome = [json.loads(line) for line in stdout.splitlines()]
    return updates, outcome


def virsh(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def start_vm(lab: LabSession, image: GuestImage, name: str, *, in_pool: bool = True,
             **spec: object) -> None:
    """The test guest running at lab-a, its agent up; ``spec``: ``lab_guest_spec``'s
    options (``memory_mib``, ``dirty_mib``...)."""
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision
    from virtlife.services.context import open_services

    made = lab_guest_spec(image, name, images_dir=lab.pool_dir if in_pool else None,
                          **spec)  # type: ignore[arg-type]
    with open_services(store_path=lab.home / "virtlife.db") as services:
        result = provision.create(services.lifecycle, made, host="lab-a", start=True,
                                  wait_agent=True)
    assert str(result.state).startswith("running"), result


def wait_agent(lab: LabSession, host: str, name: str, timeout: float = 60) -> None:
    """Until the agent of ``name`` at ``host`` answers a ping. A VM that has just moved
    answers only once QEMU reconnected its agent channel at the destination, which can
    come a while after libvirt calls the move done on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        ping = virsh(lab.uri(host), "qemu-agent-command", name, '{"execute": "guest-ping"}',
                     "--timeout", "5")
        if ping.returncode == 0:
            return
        assert time.monotonic() < deadline, f"no agent answered in {host}/{name}: {ping.stderr}"
        time.sleep(0.2)


def boot_id(lab: LabSession, vm: str) -> str:
    """The guest's boot id (``HOST/NAME``), once its agent answers."""
    host, _, name = vm.partition("/")
    wait_agent(lab, host, name)
    run = lab.virtlife("agent", vm, "exec", "--", "/bin/cat", "/proc/sys/kernel/random/boot_id")
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def domstate(lab: LabSession, host: str, name: str) -> str:
    """``virsh domstate --reason`` at a lab host ("" when it has no such VM)."""
    return virsh(lab.uri(host), "domstate", name, "--reason").stdout.strip()


def start_migration(lab: LabSession, name: str, *args: str,
                    until: str = "transferring memory") -> subprocess.Popen[str]:
    """``virtlife migrate NAME lab-b ARGS`` (default: slowed down to 4 MiB/s, no
    post-copy) in the background, returned once a progress line says ``until``."""
    proc = subprocess.Popen(
        [*VIRTLIFE, "migrate", name, "lab-b",
         *(args or ("--bandwidth", "4", "--postcopy", "never"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if until in line:
            return proc
        assert time.monotonic() < deadline, f"no progress line said {until!r}"
    raise AssertionError(f"migrate ended before {until!r}: {proc.wait()}")


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    """Wait for a background migrate; killed (exit -9, with what it printed so far) if
    it outlives ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[killed: still running after {timeout:g} s]"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def still_at_a(lab: LabSession, name: str) -> None:
    """Running at A and answering; its incoming copy gone from B (libvirt removes it
    once the source told it the migration was cancelled: a moment later), and no job
    left on it at A."""
    assert virsh(lab.uri("lab-a"), "domstate", name).stdout.strip() == "running"
    deadline = time.monotonic() + 60
    while name in virsh(lab.uri("lab-b"), "list", "--all", "--name").stdout:
        assert time.monotonic() < deadline, f"{name} is still at lab-b"
        time.sleep(0.5)
    # an abort over a cut link: the command ended, libvirt's job at A winds down later
    while "Job type:         None" not in virsh(lab.uri("lab-a"), "domjobinfo", name).stdout:
        assert time.monotonic() < deadline, f"libvirt's job on {name} at lab-a never ended"
        time.sleep(0.5)
    assert boot_id(lab, f"lab-a/{name}")  # the guest still answers at A
