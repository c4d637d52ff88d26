"""``virtlife migrate VM lab-b --check`` catching each failing precondition alone, each
made for real in the lab: a bridge or a virtual network lab-b lacks (or has stopped), a
disk lab-b does not see, a name or UUID lab-b already has, too little memory (free now
for a live move, in all for an offline one), and a clock that cannot be measured.

One running test guest serves the cases (a module fixture: its disk in the shared pool,
an interface on a virtual network and one on a bridge, both made on both hosts). Each
case adds its one condition, then: the check concerned fails (the clock warns) with a
reason naming the thing and a fix, every other line says what it said with nothing
wrong, ``--check`` exits 3 (0 with warnings only), and a plain ``virtlife migrate`` is
refused with exit 3 and that reason in its one error line, having moved nothing (the VM
as it was on lab-a, lab-b's domains as they were). The condition is taken away again
even when the case fails. A disk outside the shared pool is test_migrate_real's case.

Last, with a guest of its own: a storage probe that a libvirt error stopped (injected
into the ``virtlife`` process) is unknown, and refuses ``--copy-storage`` on storage
that is in truth shared, leaving the disk's bytes as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lab_support import (
    LabSession,
    create_on_lab,
    in_netns,
    remove_from_lab,
    virsh,
)
from support import VIRTLIFE
from virtlife.lab import cluster
from virtlife.lab.guest import GuestImage
from virtlife.lab.spec import lab_guest_spec
from virtlife.xml.domain import NicSpec

pytestmark = pytest.mark.integration

PID = os.getpid()
NAME = f"vl-it-migck-{PID}"  # the shared test guest
TWIN = f"{NAME}-twin"  # a domain on lab-b with NAME's UUID
BRIDGE = f"vlck{PID % 100000}br"  # a host bridge (at most 15 characters)
NET = f"vl-it-ck-{PID}"  # a libvirt network without addresses, and its bridge
NET_BRIDGE = f"vlck{PID % 100000}nt"
POOL = "lab-shared"
# the lines of a diskless VM with only a user-mode NIC
PLAIN_CHECKS = ["destination reachable", "same hypervisor", "libvirt and QEMU versions",
                "machine type", "guest CPU", "free memory", "name and UUID free",
                "host clocks", "VM state"]


@dataclass(frozen=True)
class Guest:
    lab: LabSession
    name: str
    uuid: str
    disk: str
    code: int  # --check's exit code with nothing wrong
    baseline: dict[str, str]  # check -> status with nothing wrong


# -- making and undoing the conditions ----------------------------------------------------

def make_bridge(lab: LabSession, host: str) -> None:
    if in_netns(lab, host, "ip", "link", "show", BRIDGE).returncode != 0:
        made = in_netns(lab, host, "ip", "link", "add", BRIDGE, "type", "bridge")
        assert made.returncode == 0, made.stderr
    up = in_netns(lab, host, "ip", "link", "set", BRIDGE, "up")
    assert up.returncode == 0, up.stderr


def make_network(lab: LabSession, host: str, xml: Path) -> None:
    """NET defined and active on ``host`` (whichever part is missing)."""
    uri = lab.uri(host)
    if virsh(uri, "net-info", NET).returncode != 0:
        done = virsh(uri, "net-define", str(xml))
        assert done.returncode == 0, done.stderr
    if NET not in virsh(uri, "net-list", "--name").stdout.split():
        done = virsh(uri, "net-start", NET)
        assert done.returncode == 0, done.stderr


def unmake_network_and_bridge(lab: LabSession) -> None:
    if cluster.status() is None:
        return  # the lab is gone, and both with it
    for host in ("lab-a", "lab-b"):
        virsh(lab.uri(host), "net-destroy", NET)
        virsh(lab.uri(host), "net-undefine", NET)
        in_netns(lab, host, "ip", "link", "del", BRIDGE)


def define_on_b(lab: LabSession, name: str, uid: str, tmp_path: Path) -> None:
    """A shut-off domain on lab-b (never started: a definition is what clashes)."""
    xml = tmp_path / f"{name}.xml"
    xml.write_text(f"<domain type='qemu'><name>{name}</name><uuid>{uid}</uuid>"
                   "<memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>"
                   "hvm</type></os></domain>")
    done = virsh(lab.uri("lab-b"), "define", str(xml))
    assert done.returncode == 0, done.stderr


def node_memory_mib(lab: LabSession, host: str) -> int:
    info = virsh(lab.uri(host), "nodeinfo").stdout
    found = re.search(r"Memory size:\s+(\d+) KiB", info)
    assert found, info
    return int(found.group(1)) // 1024


# -- asking and judging ------------------------------------------------------------------

def check(lab: LabSession, ref: str, *options: str) -> tuple[int, dict[str, Any]]:
    """``virtlife migrate REF lab-b --check --json``: its exit code and report."""
    run = lab.virtlife("migrate", ref, "lab-b", "--check", "--json", *options)
    assert run.stdout.strip(), f"exit {run.returncode}: {run.stderr}"
    report: dict[str, Any] = json.loads(run.stdout)
    return run.returncode, report


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def line(report: dict[str, Any], name: str) -> dict[str, str]:
    found: dict[str, str] = {c["name"]: c for c in report["checks"]}[name]
    return found


def changed_alone(guest: Guest, report: dict[str, Any],
                  changes: dict[str, str]) -> None:
    """The checks in ``changes`` have those statuses; every other says what it said with
    nothing wrong."""
    assert statuses(report) == {**guest.baseline, **changes}, report


def refused(lab: LabSession, ref: str, *options: str) -> str:
    """A plain ``virtlife migrate REF lab-b``: exit 3, and its one error line."""
    run = lab.virtlife("migrate", ref, "lab-b", *options)
    assert run.returncode == 3, f"exit {run.returncode}: {run.stdout}{run.stderr}"
    errors = [x for x in run.stderr.splitlines() if x.startswith("virtlife: ")]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(f"virtlife: cannot migrate {ref.split('/')[-1]} to lab-b: ")
    return errors[0]


def domains(lab: LabSession, host: str) -> dict[str, str]:
    """Every domain on ``host`` and its state."""
    uri = lab.uri(host)
    return {n: virsh(uri, "domstate", n).stdout.strip()
            for n in virsh(uri, "list", "--all", "--name").stdout.split()}


def nothing_moved(guest: Guest, at_b: dict[str, str] | None = None) -> None:
    assert domains(guest.lab, "lab-a").get(guest.name) == "running"
    assert domains(guest.lab, "lab-b") == (at_b or {})


# -- the shared guest ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def guest(lab_session: LabSession, real_stack: GuestImage,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """NAME running on lab-a: its disk in the shared pool, an interface on NET and one
    on BRIDGE, both made on both hosts; with its report when nothing is wrong."""
    lab = lab_session
    lab.ensure_up()
    net_xml = tmp_path_factory.mktemp("net") / "net.xml"
    net_xml.write_text(f"<network><name>{NET}</name><bridge name='{NET_BRIDGE}'/></network>")
    try:
        for host in ("lab-a", "lab-b"):
            make_bridge(lab, host)
            make_network(lab, host, net_xml)
        spec = lab_guest_spec(real_stack, NAME, images_dir=lab.pool_dir)
        spec = replace(spec, nics=(*spec.nics, NicSpec("network", NET),
                                   NicSpec("bridge", BRIDGE)))
        state = create_on_lab(lab, spec, start=True)
        assert state.startswith("running"), state
        uid = virsh(lab.uri("lab-a"), "domuuid", NAME).stdout.strip()
        code, report = check(lab, NAME)
        yield Guest(lab, NAME, uid, str(spec.disks[0]), code, statuses(report))
    finally:
        remove_from_lab(lab, [NAME, TWIN])
        unmake_network_and_bridge(lab)


@pytest.fixture
def net_xml(tmp_path: Path) -> Path:
    xml = tmp_path / "net.xml"
    xml.write_text(f"<network><name>{NET}</name><bridge name='{NET_BRIDGE}'/></network>")
    return xml


def test_with_nothing_wrong_every_check_passes(guest: Guest) -> None:
    assert guest.code == 0
    assert set(guest.baseline.values()) == {"pass"}, guest.baseline
    assert {"disk vda", f"pool {POOL}", f"network {NET}", f"bridge {BRIDGE}",
            "host clocks"} <= set(guest.baseline)
    # the network's own bridge is the network's business, not a bridge the VM names
    assert f"bridge {NET_BRIDGE}" not in guest.baseline


# -- one condition each -----------------------------------------------------------------------

def test_a_bridge_lab_b_lacks_fails_alone(guest: Guest) -> None:
    lab = guest.lab
    gone = in_netns(lab, "lab-b", "ip", "link", "del", BRIDGE)
    assert gone.returncode == 0, gone.stderr
    try:
        code, report = check(lab, NAME)
        assert code == 3
        changed_alone(guest, report, {f"bridge {BRIDGE}": "fail"})
        bridge = line(report, f"bridge {BRIDGE}")
        assert bridge["reason"] == f"lab-b has no bridge {BRIDGE}"
        assert f"create bridge {BRIDGE} on lab-b" in bridge["fix"]
        assert f"bridge {BRIDGE}: lab-b has no bridge {BRIDGE}" in refused(lab, NAME)
        nothing_moved(guest)
    finally:
        make_bridge(lab, "lab-b")


@pytest.mark.parametrize("how", ["undefined", "stopped"])
def test_a_network_lab_b_lacks_or_has_stopped_fails_alone(guest: Guest, how: str,
                                                          net_xml: Path) -> None:
    lab, b = guest.lab, guest.lab.uri("lab-b")
    assert virsh(b, "net-destroy", NET).returncode == 0
    if how == "undefined":
        assert virsh(b, "net-undefine", NET).returncode == 0
    try:
        code, report = check(lab, NAME)
        assert code == 3
        changed_alone(guest, report, {f"network {NET}": "fail"})
        network = line(report, f"network {NET}")
        if how == "undefined":
            assert network["reason"] == f"lab-b has no network {NET}"
            assert network["fix"] == f"define network {NET} on lab-b as on the source"
        else:
            assert network["reason"] == f"network {NET} is defined but not active on lab-b"
            assert f"`virsh net-start {NET}` on lab-b" in network["fix"]
        assert f"network {NET}: {network['reason']}" in refused(lab, NAME)
        nothing_moved(guest)
    finally:
        make_network(lab, "lab-b", net_xml)


def test_a_disk_lab_b_does_not_see_fails_alone(guest: Guest) -> None:
    """lab-b's view of the shared directory hidden by an empty tmpfs (its storage not
    mounted there), after lab-b's pool listed the disk: the pool is asked afresh."""
    lab, b = guest.lab, guest.lab.uri("lab-b")
    host_b = cluster.host("lab-b")
    assert virsh(b, "pool-refresh", POOL).returncode == 0
    assert NAME + ".qcow2" in virsh(b, "vol-list", POOL).stdout  # listed before the mount
    host_b.run(["mount", "-t", "tmpfs", "-o", "size=1m", "vl-it-empty", str(lab.pool_dir)])
    try:
        code, report = check(lab, NAME)
        assert code == 3
        changed_alone(guest, report, {"disk vda": "fail"})
        disk = line(report, "disk vda")
        assert disk["reason"] == f"{guest.disk} is not on lab-b"
        assert "--copy-storage all" in disk["fix"]
        assert not report["allows_unsafe"]
        assert report["unsafe_reason"] == "not proven shared: disk vda"
        assert f"disk vda: {guest.disk} is not on lab-b" in refused(lab, NAME)
        nothing_moved(guest)
    finally:
        host_b.run(["umount", str(lab.pool_dir)])
        virsh(b, "pool-refresh", POOL)


@pytest.mark.parametrize("clash", ["name", "uuid", "name and uuid"])
def test_a_name_or_uuid_lab_b_has_fails_alone(guest: Guest, clash: str,
                                              tmp_path: Path) -> None:
    lab = guest.lab
    other = str(uuid.uuid4())
    name, uid = {"name": (NAME, other), "uuid": (TWIN, guest.uuid),
                 "name and uuid": (NAME, guest.uuid)}[clash]
    define_on_b(lab, name, uid, tmp_path)
    try:
        ref = f"lab-a/{NAME}"  # NAME alone is ambiguous once lab-b has one
        code, report = check(lab, ref)
        assert code == 3
        changed_alone(guest, report, {"name and UUID free": "fail"})
        taken = line(report, "name and UUID free")
        if clash == "name":
            assert taken["reason"] == f"lab-b has another VM named {NAME} (UUID {other})"
            assert "rename one of them" in taken["fix"]
        elif clash == "uuid":
            assert taken["reason"] == (f"lab-b has a VM with {NAME}'s UUID {guest.uuid}, "
                                       f"named {TWIN}")
            assert taken["fix"] == f"remove or rename {TWIN} on lab-b"
        else:
            assert taken["reason"] == (f"lab-b already has {NAME} with the same UUID (a "
                                       "copy left by an earlier move?)")
            assert f"`virtlife undefine lab-b/{NAME}`" in taken["fix"]
        assert f"name and UUID free: {taken['reason']}" in refused(lab, ref)
        if clash == "name":  # two VMs under one name: which one is meant is asked
            run = lab.virtlife("migrate", NAME, "lab-b")
            assert run.returncode != 0 and "is ambiguous" in run.stderr, run.stderr
        elif clash == "name and uuid":  # one VM, running at lab-a: that one is meant,
            # and the check refuses the move for the copy lab-b keeps
            assert f"name and UUID free: {taken['reason']}" in refused(lab, NAME)
        nothing_moved(guest, at_b={name: "shut off"})
        assert virsh(lab.uri("lab-b"), "domuuid", name).stdout.strip() == uid
    finally:
        virsh(lab.uri("lab-b"), "undefine", name)


def test_too_little_free_memory_for_a_live_move_fails_alone(
        lab: LabSession, real_stack: GuestImage) -> None:
    """A VM with more memory than lab-b has free, started paused on lab-a: QEMU reserves
    its memory but never touches it (the lab's hosts share this machine's memory, and
    the kernel lets one reservation up to all of it)."""
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "2":
        pytest.skip("strict overcommit: QEMU could not reserve more than is free")
    big = f"{NAME}-big"
    meminfo = Path("/proc/meminfo").read_text()
    found = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    assert found
    need = min(node_memory_mib(lab, "lab-b"), int(found.group(1)) // 1024) - 64
    try:
        create_on_lab(lab, lab_guest_spec(real_stack, big, memory_mib=need, disk=False))
        started = virsh(lab.uri("lab-a"), "start", "--paused", big)
        assert started.returncode == 0, started.stderr
        code, report = check(lab, big)
        assert code == 3
        assert list(statuses(report)) == PLAIN_CHECKS
        assert {n: s for n, s in statuses(report).items() if s != "pass"} == \
            {"free memory": "fail"}, report
        memory = line(report, "free memory")
        said = re.fullmatch(r"lab-b has (\d+) MiB free; the VM needs (\d+) MiB",
                            memory["reason"])
        assert said and int(said.group(2)) == need > int(said.group(1)), memory
        assert memory["fix"] == "free memory on lab-b or choose another host"
        error = refused(lab, big)  # what is free may have moved a little since
        assert "free memory: lab-b has " in error and f"the VM needs {need} MiB" in error
        assert domains(lab, "lab-a").get(big) == "paused"
        assert big not in domains(lab, "lab-b")
    finally:
        remove_from_lab(lab, [big])


def test_a_paused_vm_moves_paused_with_the_default_post_copy_setting(
        lab: LabSession, real_stack: GuestImage) -> None:
    """A paused VM, moved with migrate's defaults (post-copy 'auto'), arrives paused at
    lab-b. Before, post-copy was armed for it and libvirt refused the move ("post-copy
    migration is not supported with non-live or paused migration")."""
    name = f"{NAME}-paused"
    try:
        create_on_lab(lab, lab_guest_spec(real_stack, name, memory_mib=128, disk=False))
        started = virsh(lab.uri("lab-a"), "start", "--paused", name)
        assert started.returncode == 0, started.stderr
        run = lab.virtlife("migrate", name, "lab-b")
        assert run.returncode == 0, run.stderr
        assert domains(lab, "lab-b").get(name) == "paused"
        assert name not in domains(lab, "lab-a")
    finally:
        remove_from_lab(lab, [name])


def test_an_offline_move_of_a_vm_that_could_never_start_there_fails_alone(
        lab: LabSession, real_stack: GuestImage) -> None:
    """A shut-off VM with more memory than lab-b has in all: moving its definition
    needs no memory, but it is moved to be started there, and never could be."""
    huge = f"{NAME}-huge"
    total = node_memory_mib(lab, "lab-b")
    need = total + 1024
    try:
        create_on_lab(lab, lab_guest_spec(real_stack, huge, memory_mib=need, disk=False))
        code, report = check(lab, huge, "--offline")
        assert code == 3
        assert list(statuses(report)) == PLAIN_CHECKS
        assert {n: s for n, s in statuses(report).items() if s != "pass"} == \
            {"free memory": "fail"}, report
        memory = line(report, "free memory")
        assert memory["reason"] == (f"it needs {need} MiB when it starts on lab-b, which "
                                    f"has {total} MiB of memory in all: it could never "
                                    "start there")
        assert f"`virsh setmaxmem {huge} SIZE --config`" in memory["fix"]
        assert f"free memory: {memory['reason']}" in refused(lab, huge, "--offline")
        assert domains(lab, "lab-a").get(huge) == "shut off"
        assert huge not in domains(lab, "lab-b")
    finally:
        remove_from_lab(lab, [huge])


def test_a_clock_that_cannot_be_measured_warns_and_says_why(
        guest: Guest, real_stack: GuestImage) -> None:
    """lab-b's only storage pool stopped: no probe volume can be made there, so its
    clock is unknown (a warning); the guest's disk cannot be proven there either (its
    fail refuses the move, not the warning). A diskless VM moved offline has the clock
    as its only warning: --check exits 0."""
    lab, b = guest.lab, guest.lab.uri("lab-b")
    idle = f"{NAME}-idle"
    try:
        create_on_lab(lab, lab_guest_spec(real_stack, idle, disk=False))
        assert virsh(b, "pool-destroy", POOL).returncode == 0
        code, report = check(lab, NAME)
        assert code == 3
        changed_alone(guest, report, {"disk vda": "fail", f"pool {POOL}": "warn",
                                      "host clocks": "warn"})
        clock = line(report, "host clocks")
        assert clock["reason"] == ("offset unknown (not measured: lab-b has no active "
                                   "storage pool to make a probe volume in)")
        assert "sync their clocks" in clock["fix"]
        disk = line(report, "disk vda")
        assert disk["reason"] == (f"lab-b cannot tell whether {guest.disk} is there: none "
                                  f"of its active storage pools holds {lab.pool_dir}")
        assert line(report, f"pool {POOL}")["fix"] == \
            f"start it: `virsh pool-start {POOL}` on lab-b (and pool-autostart)"
        error = refused(lab, NAME)
        assert f"disk vda: {disk['reason']}" in error and "host clocks" not in error
        nothing_moved(guest)

        code, report = check(lab, idle, "--offline")
        assert code == 0, report
        assert report["ok"] is True
        assert [(c["name"], c["status"]) for c in report["checks"] if c["status"] != "pass"] \
            == [("host clocks", "warn")]
        assert line(report, "host clocks")["reason"] == clock["reason"]
    finally:
        virsh(b, "pool-start", POOL)
        remove_from_lab(lab, [idle])


# -- a storage probe that an error stopped (issue 16, section 5) --------------------------

# Loaded by the `virtlife` process through PYTHONPATH: lab-b's lookup of the storage
# probe's volume fails as a transient libvirt error would; every other call is real.
PROBE_FAULT = '''
import libvirt

class _Injected(libvirt.libvirtError):
    def __init__(self, message):
        Exception.__init__(self, message)
        self.err = (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_STORAGE, message, 2,
                    None, None, None, 0, 0)

_real = libvirt.virStoragePool.storageVolLookupByName

def _lookup(self, name):
    if name.startswith(".virtlife-probe-"):
        raise _Injected("injected by the test: cannot read the pool's directory")
    return _real(self, name)

libvirt.virStoragePool.storageVolLookupByName = _lookup
'''


def with_probe_fault(lab: LabSession, hook_dir: Path, *args: str) -> Any:
    """``virtlife ARGS`` with lab-b's probe volume lookup failing (PROBE_FAULT)."""
    (hook_dir / "sitecustomize.py").write_text(PROBE_FAULT)
    path = os.pathsep.join(p for p in (str(hook_dir), lab.env.get("PYTHONPATH")) if p)
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True, timeout=180,
                          env={**lab.env, "PYTHONPATH": path}, check=False)


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_copy_storage_is_refused_when_the_storage_probe_errs(
        lab_session: LabSession, real_stack: GuestImage, tmp_path: Path) -> None:
    """A guest's disk in the shared pool, on truly shared storage; lab-b's lookup of the
    probe volume fails. That proves nothing: `--copy-storage all` (which would copy the
    disk onto the very file the VM runs on) is refused with the probe's error as its
    reason, the disk's bytes are unchanged and the VM is still on lab-a alone. The guest
    is paused throughout, so that its own writes cannot change the checksum."""
    lab = lab_session
    lab.ensure_up()
    name = f"{NAME}-probe"
    a = lab.uri("lab-a")
    try:
        spec = lab_guest_spec(real_stack, name, images_dir=lab.pool_dir)
        disk = Path(spec.disks[0])
        assert create_on_lab(lab, spec, start=True).startswith("running")
        assert virsh(a, "suspend", name).returncode == 0
        before = sha256(disk)
        # without the fault the probe proves the storage shared: no copy onto itself
        code, report = check(lab, name, "--copy-storage", "all")
        assert code == 3 and "is the same storage at both ends" in \
            line(report, "disk vda")["reason"], report

        run = with_probe_fault(lab, tmp_path, "migrate", name, "lab-b", "--check", "--json",
                               "--copy-storage", "all")
        assert run.returncode == 3, f"exit {run.returncode}: {run.stdout}{run.stderr}"
        report = json.loads(run.stdout)
        vda = line(report, "disk vda")
        assert vda["status"] == "fail", vda
        assert vda["reason"].startswith(
            f"{disk}: the storage probe between pool {POOL} on lab-a and pool {POOL} on "
            "lab-b could not tell (cannot look for the probe volume"), vda
        assert "injected by the test" in vda["reason"]
        assert "--copy-storage all could write over it" in vda["reason"]
        assert report["allows_unsafe"] is False and report["ok"] is False

        run = with_probe_fault(lab, tmp_path, "migrate", name, "lab-b", "--copy-storage",
                               "all")
        assert run.returncode == 3, f"exit {run.returncode}: {run.stdout}{run.stderr}"
        assert f"virtlife: cannot migrate {name} to lab-b: " in run.stderr
        assert "disk vda" in run.stderr and "could not tell" in run.stderr, run.stderr

        assert sha256(disk) == before
        assert domains(lab, "lab-a").get(name) == "paused"
        assert name not in domains(lab, "lab-b")
        assert virsh(a, "resume", name).returncode == 0
        assert domains(lab, "lab-a").get(name) == "running"
        assert name not in domains(lab, "lab-b")
    finally:
        remove_from_lab(lab, [name])
