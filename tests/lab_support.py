"""The multi-host lab for tests (``virtlife lab up``): one per test module, owned by the
pytest process, always taken down.

``LabSession`` brings the lab up through the CLI (so that its hosts ``lab-a``,
``lab-b`` land in an inventory of its own, ``LabSession.home``), says where each host
is, and takes the lab down. The lab is one per machine: ``lab_session`` first claims it
for the whole module (an abstract Unix socket only one process can bind: another
pytest worker or session waits, bounded, and nothing is left on disk), refuses to touch
a lab started by hand, and at the end takes down only a lab that is its own (or stale).
``leftovers`` lists what of a lab is still on the machine after ``down``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import VIRTLIFE
from virtlife.lab import cluster, labnet
from virtlife.lab.cluster import LabStatus
from virtlife.lab.privhost import Proc

WAIT_FOR_OTHER_LAB_S = 200.0  # under pytest-timeout's 300 s, which covers fixture setup
_CLAIM = b"\0virtlife-lab-tests"  # abstract socket name: gone with its process
LIGHT_CLAIM = b"\0virtlife-light-lab-tests"  # the light lab's (it coexists with the other)


class LabSession:
    """A two-host lab owned by this pytest process, its inventory in ``home``."""

    def __init__(self, home: Path, size: int = 2) -> None:
        self.home = home
        self.size = size
        self.env = {**os.environ, "VIRTLIFE_HOME": str(home)}

    def virtlife(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)

    def status(self) -> LabStatus:
        found = cluster.status()
        assert found is not None, "no lab is up"
        return found

    def uri(self, name: str) -> str:
        return self.status().host(name).uri

    @property
    def pool_dir(self) -> Path:
        return self.status().record.pool_dir

    @property
    def pool_name(self) -> str:
        return self.status().record.pool_name

    def up(self) -> dict[str, Any]:
        """``virtlife lab up N --owner-pid ME --json``, once no other session's lab is up."""
        _wait_for_the_lab()
        run = self.virtlife("lab", "up", str(self.size), "--owner-pid", str(os.getpid()),
                            "--json")
        assert run.returncode == 0, f"lab up failed: {run.stderr}"
        data: dict[str, Any] = json.loads(run.stdout)
        assert data["state"] == "up", data
        return data

    def ensure_up(self) -> None:
        """Bring the lab back up when a test left it down, broken or stale."""
        found = cluster.status()
        if found is None or found.state != "up":
            self.up()

    def down_if_ours(self) -> None:
        """``virtlife lab down``, unless the lab up now is another session's."""
        found = cluster.status()
        if found is not None and found.state != "stale" and not _mine(found):
            return
        run = self.virtlife("lab", "down")
        assert run.returncode == 0, f"lab down failed: {run.stderr}"


def _mine(status: LabStatus) -> bool:
    return status.record.owner is not None and status.record.owner.pid == os.getpid()


def _wait_for_the_lab() -> None:
    """Return once no live lab but this process's is up; fail on a hand-started lab, or
    after WAIT_FOR_OTHER_LAB_S of another test session's."""
    deadline = time.monotonic() + WAIT_FOR_OTHER_LAB_S
    while True:
        found = cluster.status()
        if found is None or found.state == "stale" or _mine(found):
            return
        owner = found.record.owner
        if owner is None:
            pytest.fail("a lab started by hand is up (`virtlife lab status`); take it down "
                        "(`virtlife lab down`) before running the lab tests")
        if time.monotonic() > deadline:
            pytest.fail(f"the lab of test session pid {owner.pid} was still up after "
                        f"{WAIT_FOR_OTHER_LAB_S:.0f} s")
        time.sleep(1.0)


@contextlib.contextmanager
def _claim(name: bytes = _CLAIM) -> Iterator[None]:
    """Hold the machine's lab for the block: wait while another test process holds it.
    ``name``: which lab (``LIGHT_CLAIM`` for the light lab, ``light.up``'s)."""
    deadline = time.monotonic() + WAIT_FOR_OTHER_LAB_S
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as claim:
        while True:
            try:
                claim.bind(name)
                break
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
                if time.monotonic() > deadline:
                    pytest.fail(f"another test process held the lab for more than "
                                f"{WAIT_FOR_OTHER_LAB_S:.0f} s")
                time.sleep(1.0)
        yield


def claim_light_lab() -> contextlib.AbstractContextManager[None]:
    """Hold the light lab (one per machine) for the block, as ``lab_session`` holds the
    migration lab: test modules on other pytest workers wait for it."""
    return _claim(LIGHT_CLAIM)


@contextlib.contextmanager
def lab_session(home: Path, size: int = 2) -> Iterator[LabSession]:
    """A lab that is up for the ``with`` block, and always taken down after it."""
    session = LabSession(home, size)
    with _claim():
        try:
            session.up()
            yield session
        finally:
            session.down_if_ours()


def lab_processes(status: LabStatus) -> list[int]:
    """Every process running in the lab's hosts (holders, daemons, QEMUs)."""
    pids: list[int] = []
    for h in status.hosts:
        with contextlib.suppress(Exception):
            pids += cluster.host(h.name).processes()
        pids += h.pids.values()
    return sorted(set(pids))


def leftovers(pids: Iterable[int] = ()) -> list[str]:
    """What of a lab is on this machine: live processes among ``pids``, network
    namespaces, interfaces, mounts and the state directory."""
    left = [f"process {pid}" for pid in pids if Proc.of(pid) is not None]
    left += [f"netns {name}" for name in labnet.netns_names()
             if name.startswith(labnet.NETNS_PREFIX)]
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    left += [f"interface {link.name}" for link in labnet.parse_links(links)
             if link.name.startswith("vl-lab") or labnet.marked_token(link.alias)]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith((str(cluster.DEFAULT_STATE_DIR), "/run/netns/vl-lab")):
            left.append(f"mount {point}")
    if cluster.DEFAULT_STATE_DIR.exists():
        left.append(f"directory {cluster.DEFAULT_STATE_DIR}")
    return left


# -- helpers for tests that put VMs on the lab's hosts ------------------------------------

def virsh(uri: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``virsh -q -c URI ARGS`` with its output captured; a failure is in the result."""
    return subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def in_netns(lab: LabSession, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` in lab host ``host``'s network namespace (``ip netns exec``)."""
    return subprocess.run(["ip", "netns", "exec", lab.status().host(host).netns, *argv],
                          capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


def create_on_lab(lab: LabSession, spec: Any, *, host: str = "lab-a", start: bool = False,
                  wait_agent: bool = False) -> str:
    """Define the VM of ``spec`` (a ``DomainSpec``) on a lab host through virtlife, in the
    lab's inventory (and start it); its state word."""
    from virtlife.services import provision
    from virtlife.services.context import open_services

    with open_services(store_path=lab.home / "virtlife.db") as services:
        result = provision.create(services.lifecycle, spec, host=host, start=start,
                                  wait_agent=wait_agent)
    return str(result.state)


def remove_from_lab(lab: LabSession, names: Iterable[str]) -> None:
    """Destroy and undefine the VMs ``names`` on every lab host, and remove their disk
    copies from the shared pool; whatever is not there is skipped."""
    names = list(names)
    found = cluster.status()
    for h in found.hosts if found is not None else ():
        for name in names:
            virsh(h.uri, "destroy", name)
            virsh(h.uri, "undefine", name, "--managed-save", "--snapshots-metadata")
    if found is not None:
        for name in names:
            for leftover in found.record.pool_dir.glob(f"{name}.*"):
                leftover.unlink(missing_ok=True)
