"""What the lab's ``migrate --check`` tests (tests/integration/test_migrate_checks_real.py)
found wrong or missing in the pre-flight checks, pinned here without a lab: a shut-off
VM that could never start at the destination, a disk the destination cannot see
(its pool refreshed first) or cannot tell about, bridges read as they are now, and a
network interface's bridge that is not a bridge the VM asks for."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace

import pytest

from support import NODE_URI
from virtlife.hypervisor import Host
from virtlife.hypervisor import hostfacts as hf
from virtlife.services.migration.checks import (
    Check,
    CheckOptions,
    Clock,
    CopyStorage,
    Disk,
    DiskAtDestination,
    HostFacts,
    MigrationKind,
    Status,
    VMFacts,
    run_checks,
)
from virtlife.services.migration.gather import _clock, nic_sources
from virtlife.states import StateInfo, VMState

IMAGE = "/srv/lab/images/web1.qcow2"
VM = VMFacts(name="web1", uuid="6c3d2a1b-0000-0000-0000-00000000beef",
             state=StateInfo(VMState.RUNNING, "booted"), memory_mib=1024,
             machine="pc-i440fx-7.2", virt_type="qemu", disks=(Disk("vda", IMAGE),))
SHUTOFF = replace(VM, state=StateInfo(VMState.SHUTOFF, "shutdown"))
SRC = HostFacts(name="lab-a", hypervisor="QEMU", host_uuid="a", virt_types=frozenset({"qemu"}),
                libvirt_version=(9, 0, 0), qemu_version=(7, 2, 0),
                pools={"lab": "/srv/lab/images"})
DST = replace(SRC, name="lab-b", host_uuid="b",
              machine_types=frozenset({"pc-i440fx-7.2"}), cpu="identical",
              free_memory_mib=8192, total_memory_mib=16384,
              disks={IMAGE: DiskAtDestination(True, "a probe volume was seen")})
OFFLINE = CheckOptions(kind=MigrationKind.OFFLINE)


def check(report_checks: tuple[Check, ...], name: str) -> Check:
    return {c.name: c for c in report_checks}[name]


# -- memory of a shut-off VM --------------------------------------------------------------

def test_an_offline_move_of_a_vm_bigger_than_the_whole_destination_fails() -> None:
    vm = replace(SHUTOFF, memory_mib=20000)
    report = run_checks(vm, SRC, DST, OFFLINE)
    memory = check(report.checks, "free memory")
    assert memory.status is Status.FAIL
    assert memory.reason == ("it needs 20000 MiB when it starts on lab-b, which has "
                             "16384 MiB of memory in all: it could never start there")
    assert "virsh setmaxmem web1 SIZE --config" in memory.fix
    assert [c.name for c in report.failures] == ["free memory"]


def test_an_offline_move_of_a_vm_that_fits_but_not_now_warns() -> None:
    vm = replace(SHUTOFF, memory_mib=10000)
    report = run_checks(vm, SRC, DST, OFFLINE)
    memory = check(report.checks, "free memory")
    assert memory.status is Status.WARN and report.ok
    assert "which has 8192 MiB free now" in memory.reason
    assert "before you start it there" in memory.fix


@pytest.mark.parametrize("dst", [DST, replace(DST, total_memory_mib=None,
                                              free_memory_mib=None)])
def test_an_offline_move_that_fits_or_cannot_be_judged_passes(dst: HostFacts) -> None:
    memory = check(run_checks(SHUTOFF, SRC, dst, OFFLINE).checks, "free memory")
    assert memory.status is Status.PASS
    assert memory.reason == ("not needed to move a shut-off VM; it needs 1024 MiB when "
                             "it starts on lab-b")


def test_a_live_move_still_needs_the_free_memory_not_the_total() -> None:
    memory = check(run_checks(replace(VM, memory_mib=9000), SRC, DST).checks, "free memory")
    assert memory.status is Status.FAIL
    assert memory.reason == "lab-b has 8192 MiB free; the VM needs 9000 MiB"


# -- a disk the destination cannot tell about ---------------------------------------------

def test_a_disk_no_active_pool_at_the_destination_holds_is_unknown_not_absent() -> None:
    dst = replace(DST, pools={}, disks={IMAGE: DiskAtDestination(None)})
    report = run_checks(VM, SRC, dst)
    disk = check(report.checks, "disk vda")
    assert disk.status is Status.FAIL
    assert disk.reason == (f"lab-b cannot tell whether {IMAGE} is there: none of its "
                           "active storage pools holds /srv/lab/images")
    assert "start or define a pool at /srv/lab/images on lab-b" in disk.fix
    assert "--copy-storage all" in disk.fix
    assert not report.allows_unsafe


def test_copy_storage_of_a_disk_the_destination_cannot_tell_about() -> None:
    dst = replace(DST, pools={}, disks={IMAGE: DiskAtDestination(None)})
    inc = check(run_checks(VM, SRC, dst, CheckOptions(copy_storage=CopyStorage.INC)).checks,
                "disk vda")
    assert inc.status is Status.FAIL
    assert "is not known to be on lab-b (no active pool there holds /srv/lab/images)" \
        in inc.reason
    full = check(run_checks(VM, SRC, dst, CheckOptions(copy_storage=CopyStorage.ALL)).checks,
                 "disk vda")
    assert full.status is Status.FAIL
    assert "no pool there holds /srv/lab/images" in full.reason


# -- what the destination's libvirt says (the test driver) --------------------------------

@pytest.fixture
def host() -> Iterator[Host]:
    with Host.open("t", NODE_URI) as h:
        yield h


def test_bridges_are_the_interfaces_of_type_bridge_as_they_are_now(host: Host) -> None:
    assert hf.bridges(host) == set()
    bridge = host.conn.interfaceDefineXML(
        "<interface type='bridge' name='br9'><start mode='onboot'/>"
        "<bridge stp='off'><interface type='ethernet' name='eth9'/></bridge></interface>")
    host.conn.interfaceDefineXML(
        "<interface type='ethernet' name='eth7'><start mode='onboot'/></interface>")
    assert hf.bridges(host) == {"br9"}  # defined, not started: there all the same
    bridge.undefine()
    assert hf.bridges(host) == set()


def test_a_disk_is_present_absent_or_unknown_by_the_pools_that_hold_its_directory(
        host: Host) -> None:
    pool = host.conn.storagePoolCreateXML(
        "<pool type='dir'><name>p</name><target><path>/srv/p</path></target></pool>", 0)
    pool.createXML("<volume><name>d.qcow2</name><capacity>1024</capacity></volume>", 0)
    assert hf.disk_present(host, "/srv/p/d.qcow2") is True
    assert hf.disk_present(host, "/srv/p/other.qcow2") is False  # the pool holds the dir
    assert hf.disk_present(host, "/srv/q/d.qcow2") is None  # no pool: libvirt cannot tell
    pool.destroy()
    assert hf.disk_present(host, "/srv/p/d.qcow2") is None  # an inactive pool tells nothing


def test_total_memory_is_the_nodes(host: Host) -> None:
    facts = hf.hypervisor(host)
    assert facts.total_memory_mib == host.conn.getInfo()[1]
    assert facts.total_memory_mib is not None
    assert facts.free_memory_mib <= facts.total_memory_mib


# -- the VM's interfaces ------------------------------------------------------------------

LIVE_XML = """<domain type='qemu'><name>web1</name><devices>
  <interface type='network'>
    <source network='lan' portid='e0a1' bridge='virbr7'/><target dev='vnet3'/>
  </interface>
  <interface type='bridge'><source bridge='br0'/><target dev='vnet4'/></interface>
  <interface type='user'><model type='virtio'/></interface>
</devices></domain>"""


def test_a_network_interfaces_own_bridge_is_not_a_bridge_the_vm_needs() -> None:
    """A running VM's type='network' interface names its network's bridge on the source;
    the destination's network may call it otherwise, and only the network must exist."""
    assert nic_sources(ET.fromstring(LIVE_XML)) == (("lan",), ("br0",))


# -- a pool that is there but stopped -----------------------------------------------------

@pytest.mark.parametrize(("disk", "status"), [(Disk("vda", IMAGE), Status.WARN),
                                              (Disk("vda", IMAGE, pool="lab"), Status.FAIL)])
def test_a_pool_defined_but_stopped_at_the_destination_says_start_it(
        disk: Disk, status: Status) -> None:
    dst = replace(DST, pools={}, stopped_pools=frozenset({"lab"}))
    pool = check(run_checks(replace(VM, disks=(disk,)), SRC, dst).checks, "pool lab")
    assert pool.status is status
    assert pool.reason == "pool lab is defined but not active on lab-b"
    assert pool.fix == "start it: `virsh pool-start lab` on lab-b (and pool-autostart)"


# -- a clock that cannot be measured says why ---------------------------------------------

def test_the_clock_is_not_measured_without_a_pool_that_gives_file_times(host: Host) -> None:
    assert _clock(host, host, {}, {}) == Clock(
        None, "not measured: t has no active storage pool to make a probe volume in")
    host.conn.storagePoolCreateXML(
        "<pool type='dir'><name>p</name><target><path>/srv/p</path></target></pool>", 0)
    clock = _clock(host, host, {"p": "/srv/p"}, {"p": "/srv/p"}, ("p",))
    assert clock.offset_ms is None  # the test driver's volumes have no mtime
    assert clock.how == ("not measured: no probe volume could be made on t (pool p: t's "
                         "pool p gives no file times)")
