"""The multi-host lab (``virtlife lab up/down/status``, ``virtlife.lab.cluster``) on the
real stack: each host answers on its own TCP URI with its own host_uuid, the shared pool
is one directory everywhere, a VM migrates live from lab-a to lab-b and its agent
answers there, a killed lab is rebuilt by ``up`` and cleaned up by ``down``, and
``down`` leaves nothing behind. One lab (``lab_session``) serves the whole module."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_support import LabSession, lab_processes, leftovers
from virtlife import config
from virtlife.lab import cluster, labnet
from virtlife.lab.guest import GuestImage
from virtlife.lab.privhost import Proc

pytestmark = pytest.mark.integration


def virsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True,
                         timeout=120, check=False)
    if check:
        assert run.returncode == 0, f"virsh {' '.join(args)} at {uri}: {run.stderr}"
    return run


def host_uuid(uri: str) -> str:
    found = re.search(r"<host>\s*<uuid>([0-9a-f-]+)</uuid>", virsh(uri, "capabilities").stdout)
    assert found
    return found.group(1)


def inventory(lab: LabSession) -> dict[str, str]:
    run = lab.virtlife("host", "list", "--json")
    assert run.returncode == 0, run.stderr
    return {h["name"]: h["uri"] for h in json.loads(run.stdout)}


def kill_hosts(status: cluster.LabStatus) -> list[int]:
    """SIGKILL every lab host's holder and daemons (not the QEMUs); their pids."""
    pids = [pid for h in status.hosts for pid in h.pids.values()]
    assert len(pids) == 3 * len(status.hosts)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


@pytest.fixture
def remove_vm(lab: LabSession) -> Iterator[list[str]]:
    """Names of VMs to destroy and undefine on every lab host afterwards (disks too)."""
    names: list[str] = []
    yield names
    status = cluster.status()
    for h in status.hosts if status is not None else ():
        for name in names:
            virsh(h.uri, "destroy", name, check=False)
            virsh(h.uri, "undefine", name, "--managed-save", check=False)
    for name in names:
        for directory in (lab.pool_dir if status else None, config.images_dir()):
            if directory is not None:
                (directory / f"{name}.qcow2").unlink(missing_ok=True)


def start_vm(lab: LabSession, image: GuestImage, host: str, name: str, *, disk: bool,
             wait_agent: bool) -> None:
    """Define and start the test guest on lab host ``host`` through the lab's inventory,
    its disk (if any) in the shared pool."""
    from virtlife.lab.spec import lab_guest_spec
    from virtlife.services import provision
    from virtlife.services.context import open_services

    spec = lab_guest_spec(image, name, disk=disk, user_nic=disk,
                          memory_mib=192 if disk else 128, images_dir=lab.pool_dir)
    with open_services(store_path=lab.home / "virtlife.db") as services:
        result = provision.create(services.lifecycle, spec, host=host, start=True,
                                  wait_agent=wait_agent)
    assert str(result.state).startswith("running"), result


def guest_boot_id(lab: LabSession, vm: str) -> str:
    run = lab.virtlife("agent", vm, "exec", "--", "/bin/cat",
                       "/proc/sys/kernel/random/boot_id")
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


# --------------------------------------------------------------------------- the hosts


def test_each_host_answers_on_its_tcp_uri_with_its_own_host_uuid(lab: LabSession) -> None:
    status = lab.status()
    assert status.state == "up"
    assert [(h.name, h.address, h.uri) for h in status.hosts] == [
        ("lab-a", "10.253.7.11", "qemu+tcp://10.253.7.11/system"),
        ("lab-b", "10.253.7.12", "qemu+tcp://10.253.7.12/system")]
    uuids = {h.name: host_uuid(h.uri) for h in status.hosts}
    assert uuids == {h.name: h.host_uuid for h in status.hosts}
    assert len(set(uuids.values())) == 2
    assert host_uuid("qemu:///system") not in uuids.values()
    assert inventory(lab) == {"lab-a": "qemu+tcp://10.253.7.11/system",
                              "lab-b": "qemu+tcp://10.253.7.12/system"}
    for h in status.hosts:
        host = cluster.host(h.name)
        # its own network namespace: its daemons are there, and its /sys shows it
        assert set(h.pids.values()) <= set(labnet.netns_pids(h.netns))
        assert host.run(["ls", "/sys/class/net"]).stdout.split() == ["eth0", "lo"]
        qemu_conf = host.inside("/etc/libvirt/qemu.conf").read_text()
        assert f'migration_address = "{h.address}"' in qemu_conf
        assert virsh(h.uri, "list", "--all", "--name").stdout.strip() == ""


def test_lab_status_json_says_each_host_runs_and_answers(lab: LabSession) -> None:
    run = lab.virtlife("lab", "status", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert (data["state"], data["size"], data["bridge"]) == ("up", 2, "vl-lab0")
    assert data["owner_pid"] == os.getpid()
    for h in data["hosts"]:
        assert set(h["pids"]) == {"holder", "virtlogd", "libvirtd"}
        assert (h["missing"], h["reachable"]) == ([], True)
    text = lab.virtlife("lab", "status")
    assert text.stdout.startswith("lab: up, 2 host(s) on 10.253.7.0/24"), text.stdout


def test_the_shared_pool_is_one_directory_on_every_host(lab: LabSession) -> None:
    status = lab.status()
    probe = lab.pool_dir / f"vl-it-lab-probe-{os.getpid()}.img"
    probe.write_bytes(b"\0" * 4096)
    try:
        for h in status.hosts:
            info = virsh(h.uri, "pool-info", lab.pool_name).stdout
            assert re.search(r"State:\s+running", info) and re.search(r"Autostart:\s+yes",
                                                                       info), info
            xml = virsh(h.uri, "pool-dumpxml", lab.pool_name).stdout
            assert f"<path>{lab.pool_dir}</path>" in xml
            virsh(h.uri, "pool-refresh", lab.pool_name)
            assert probe.name in virsh(h.uri, "vol-list", lab.pool_name).stdout
    finally:
        probe.unlink()


def test_up_again_keeps_the_lab_and_another_size_is_refused(lab: LabSession) -> None:
    before = lab.status()
    again = lab.virtlife("lab", "up", "2", "--owner-pid", str(os.getpid()))
    assert again.returncode == 0, again.stderr
    assert "note: the lab is already up (2 hosts)" in again.stdout
    bigger = lab.virtlife("lab", "up", "3", "--owner-pid", str(os.getpid()))
    assert bigger.returncode == 1
    assert "the lab is up with 2 hosts on 10.253.7.0/24, not 3" in bigger.stderr
    not_owner = lab.virtlife("lab", "up", "2")
    assert not_owner.returncode == 1
    assert f"a lab of 2 hosts is up (owned by pid {os.getpid()})" in not_owner.stderr
    assert [h.pids for h in lab.status().hosts] == [h.pids for h in before.hosts]


# --------------------------------------------------------------------------- migration


def test_a_vm_migrates_live_from_lab_a_to_lab_b_and_its_agent_answers_there(
        lab: LabSession, real_stack: GuestImage, remove_vm: list[str]) -> None:
    name = f"vl-it-lab-mig-{os.getpid()}"
    remove_vm.append(name)
    a, b = lab.uri("lab-a"), lab.uri("lab-b")
    start_vm(lab, real_stack, "lab-a", name, disk=True, wait_agent=True)
    disk = virsh(a, "domblklist", name).stdout
    assert str(lab.pool_dir / f"{name}.qcow2") in disk  # in the shared pool
    boot_id = guest_boot_id(lab, f"lab-a/{name}")

    move = virsh(a, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
                 "--unsafe", name, b, check=False)
    assert move.returncode == 0, move.stderr

    assert virsh(b, "domstate", name).stdout.strip() == "running"
    assert "Persistent:     yes" in virsh(b, "dominfo", name).stdout
    assert virsh(a, "list", "--all", "--name").stdout.strip() == ""  # undefined at A
    ping = virsh(b, "qemu-agent-command", name, '{"execute":"guest-ping"}')
    assert json.loads(ping.stdout) == {"return": {}}
    assert guest_boot_id(lab, f"lab-b/{name}") == boot_id  # the same boot: it moved live


# --------------------------------------------------------------------------- killed, down


def test_a_killed_lab_is_broken_and_the_next_up_rebuilds_it(lab: LabSession) -> None:
    before = lab.status()
    killed = kill_hosts(before)
    broken = json.loads(lab.virtlife("lab", "status", "--json").stdout)
    assert broken["state"] == "broken"
    assert "lab-a: holder, virtlogd, libvirtd not running" in broken["reason"]

    run = lab.virtlife("lab", "up", "2", "--owner-pid", str(os.getpid()))
    assert run.returncode == 0, run.stderr
    assert "rebuilding the lab: lab-a: holder, virtlogd, libvirtd not running" in run.stdout
    after = lab.status()
    assert after.state == "up"
    assert not set(killed) & {pid for h in after.hosts for pid in h.pids.values()}
    for h in after.hosts:
        assert host_uuid(h.uri) == h.host_uuid
        assert lab.pool_name in virsh(h.uri, "pool-list", "--name").stdout
    assert inventory(lab) == {h.name: h.uri for h in after.hosts}


def test_down_stops_the_hosts_and_their_vms_and_leaves_nothing(
        lab: LabSession, real_stack: GuestImage, remove_vm: list[str]) -> None:
    name = f"vl-it-lab-down-{os.getpid()}"
    remove_vm.append(name)
    start_vm(lab, real_stack, "lab-b", name, disk=False, wait_agent=False)
    status = lab.status()
    pids = lab_processes(status)
    assert "qemu-system-x86" in {Path(f"/proc/{p}/comm").read_text().strip() for p in pids}

    run = lab.virtlife("lab", "down")
    assert run.returncode == 0, run.stderr
    assert "removed lab-a, lab-b from the inventory" in run.stdout
    assert leftovers(pids) == []
    assert inventory(lab) == {"local": "qemu:///system"}  # only the implicit host
    assert json.loads(lab.virtlife("lab", "status", "--json").stdout) == {
        "state": "down", "hosts": []}


def test_down_cleans_up_a_killed_lab_with_its_vms_and_a_half_made_ones_leftovers(
        lab: LabSession, real_stack: GuestImage, remove_vm: list[str]) -> None:
    name = f"vl-it-lab-kill-{os.getpid()}"
    remove_vm.append(name)
    start_vm(lab, real_stack, "lab-a", name, disk=False, wait_agent=False)
    status = lab.status()
    pids = lab_processes(status)
    kill_hosts(status)  # the QEMU runs on, in the hosts' namespaces
    assert any(Proc.of(p) is not None for p in pids)
    # what a `lab up` killed half-way leaves: a namespace and a bridge with a lab mark
    subprocess.run(["ip", "netns", "add", "vl-lab-q"], check=True)
    try:
        subprocess.run(["ip", "-n", "vl-lab-q", "link", "set", "lo", "alias",
                        labnet.mark("deadbeef")], check=True)
        subprocess.run(["ip", "link", "add", "vl-lab-q0", "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "set", "vl-lab-q0", "alias", labnet.mark("deadbeef")],
                       check=True)

        run = lab.virtlife("lab", "down")
        assert run.returncode == 0, run.stderr
        assert "deleted network namespace vl-lab-q" in run.stdout
        assert "deleted interface vl-lab-q0" in run.stdout
        assert leftovers(pids) == []
        assert inventory(lab) == {"local": "qemu:///system"}
    finally:
        subprocess.run(["ip", "link", "del", "vl-lab-q0"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", "vl-lab-q"], capture_output=True, check=False)
