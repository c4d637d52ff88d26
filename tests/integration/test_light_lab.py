"""The light lab on this machine: up and down leaving nothing, and the fleet listing
over its hosts with one libvirtd stopped (SIGSTOP) ending at the per-host deadline,
with that host unreachable and no thread left behind per listing."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_support import claim_light_lab
from virtlife.lab import labnet, light
from virtlife.lab.light import LightUpResult
from virtlife.services.fleet import Fleet, HostRef


@pytest.fixture(scope="module", autouse=True)
def _the_light_lab_is_ours() -> Iterator[None]:
    with claim_light_lab():  # test_fleet_frozen_host brings one up too
        yield


def _leftovers() -> list[str]:
    """Anything of a light lab on this machine."""
    found = [f"netns {ns}" for ns in labnet.netns_names() if ns.startswith(light.NETNS_PREFIX)]
    found += [f"link {link.name}" for link in labnet.links()
              if link.name.startswith("vl-lt") or (link.alias or "").startswith(light.MARK)]
    found += [f"mount {line.split()[4]}" for line in
              Path("/proc/self/mountinfo").read_text().splitlines()
              if str(light.DEFAULT_STATE_DIR) in line or "/netns/vl-lt-" in line]
    if light.DEFAULT_STATE_DIR.exists():
        found.append(f"directory {light.DEFAULT_STATE_DIR}")
    return found


def test_up_and_down_leave_nothing_behind(real_stack: object) -> None:
    before = _leftovers()
    own = [x for x in before if not x.startswith("directory")]
    if own:  # first in this file: the module's lab is not up yet
        message = f"a light lab is up on this machine already: {own[:3]}"
        if os.environ.get("VIRTLIFE_REQUIRE_REAL_STACK") == "1":  # CI: a fresh machine
            pytest.fail(message + " (left by an earlier test?)")
        pytest.skip(message + " (started by hand?): `virtlife lab down` takes it down")
    result = light.up(2, vms=4, running_hosts=0, owner_pid=os.getpid())
    pids = [light.libvirtd_pid(h.name) for h in result.hosts]
    try:
        assert all(Path(f"/proc/{p}").exists() for p in pids)
    finally:
        _, actions = light.down()
    assert "stopped 2 libvirtd" in actions, actions
    assert _leftovers() == []
    assert not any(_running(p) for p in pids)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def lab(real_stack: object) -> Iterator[LightUpResult]:
    result = light.up(3, vms=6, running_hosts=1, owner_pid=os.getpid())
    try:
        yield result
    finally:
        light.down()


def test_the_hosts_report_their_domains_in_mixed_states(lab: LightUpResult) -> None:
    with Fleet([HostRef(h.name, h.uri) for h in lab.hosts]) as fleet:
        listing = fleet.list_vms()
    assert listing.answered == ["light-001", "light-002", "light-003"]
    assert len(listing.rows) == 18
    states = {(r.host, r.name): str(r.state) for r in listing.rows}
    assert states[("light-001", light.RUNNING)].startswith("running")
    assert states[("light-001", light.PAUSED)].startswith("paused")
    for host in ("light-001", "light-002", "light-003"):
        for vm in light.SAVED:  # real images; the other hosts hold links to light-001's
            assert states[(host, vm)] == "saved (managed save)"
        assert states[(host, "vm05")].startswith("shut off")
    row = next(r for r in listing.rows if r.name == "vm05")
    assert (row.vcpus, row.memory_mib, row.persistent) == (2, 64, True)


def test_a_stopped_libvirtd_is_unreachable_at_the_deadline_and_leaks_no_thread(
        lab: LightUpResult) -> None:
    pid = light.libvirtd_pid("light-002")
    with Fleet([HostRef(h.name, h.uri) for h in lab.hosts], list_deadline_s=1.0) as fleet:
        fleet.list_vms()  # connections open, as in a running server
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            listing = fleet.list_vms()
            assert time.monotonic() - t0 < 1.6
            assert [p.host for p in listing.unreachable] == ["light-002"]
            assert listing.answered == ["light-001", "light-003"]
            threads = threading.active_count()
            for _ in range(3):
                t0 = time.monotonic()
                again = fleet.list_vms()
                assert time.monotonic() - t0 < 1.6
                assert [p.host for p in again.unreachable] == ["light-002"]
            assert threading.active_count() <= threads
        finally:
            os.kill(pid, signal.SIGCONT)
    with Fleet([HostRef("light-002", lab.hosts[1].uri)], list_deadline_s=1.0) as fresh:
        os.kill(pid, signal.SIGSTOP)  # a cold process: libvirt.open itself blocks
        try:
            t0 = time.monotonic()
            listing = fresh.list_vms()
            assert time.monotonic() - t0 < 1.6
            assert [p.host for p in listing.unreachable] == ["light-002"]
            assert "did not answer within 1 s" in listing.unreachable[0].message
        finally:
            os.kill(pid, signal.SIGCONT)
