"""The pre-flight checks: every check passing on a good pair of hosts, then failing (or
warning) one at a time, the VM-state table per kind of migration, and the report."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from virtlife.services.migration.checks import (
    Check,
    CheckOptions,
    Clock,
    CopyStorage,
    Disk,
    DiskAtDestination,
    HostFacts,
    MigrationKind,
    Report,
    Status,
    VMFacts,
    run_checks,
    version_from_int,
)
from virtlife.services.migration.policy import PostcopyMode
from virtlife.states import StateInfo, classify

UUID = "6b0c2a7e-3f5d-4c1e-9a0b-7d2e8f1c4a55"
IMAGE = "/srv/lab/images/web1.qcow2"
ISO = "/srv/iso/tools.iso"
RUNNING = classify(1, 1)
SHARED = "lab: the hosts' settings declare /srv/lab shared"

VM = VMFacts(
    name="web1", uuid=UUID, state=RUNNING, memory_mib=256, machine="pc-i440fx-7.2",
    virt_type="qemu",
    disks=(Disk("vda", IMAGE), Disk("sda", ISO, device="cdrom", readonly=True),
           Disk("hdc", None, device="cdrom", readonly=True)),
    networks=("default",), bridges=("br0",))
SRC = HostFacts(
    name="lab-a", hypervisor="QEMU", host_uuid="5a5a0001-0000-0000-0000-000000000001",
    virt_types=frozenset({"qemu"}), libvirt_version=(9, 0, 0), qemu_version=(7, 2, 22),
    pools={"lab": "/srv/lab/images"}, userfaultfd=True)
DST = HostFacts(
    name="lab-b", hypervisor="QEMU", host_uuid="5a5a0002-0000-0000-0000-000000000002",
    virt_types=frozenset({"qemu"}), libvirt_version=(9, 0, 0), qemu_version=(7, 2, 22),
    machine_types=frozenset({"pc", "pc-i440fx-7.2", "q35", "pc-q35-7.2"}),
    cpu="identical", free_memory_mib=4096,
    domains={"db1": "0f0e0d0c-0000-0000-0000-000000000000"},
    disks={IMAGE: DiskAtDestination(True, SHARED), ISO: DiskAtDestination(True)},
    pools={"lab": "/srv/lab/images"}, networks={"default": True},
    bridges=frozenset({"br0", "virbr0"}),
    clock=Clock(12.0, "midpoint of 3 getTime round trips from this machine"),
    userfaultfd=True)


def test_every_check_passes_on_a_good_pair_of_hosts() -> None:
    report = run_checks(VM, SRC, DST)
    assert [(c.status, c.name) for c in report.checks] == [
        (Status.PASS, name) for name in (
            "destination reachable", "same hypervisor", "libvirt and QEMU versions",
            "machine type", "guest CPU", "free memory", "name and UUID free", "disk vda",
            "disk sda", "disk hdc", "pool lab", "network default", "bridge br0",
            "host clocks", "post-copy", "VM state")]
    assert report.ok and report.failures == () and report.warnings == ()
    assert report.allows_unsafe
    assert report.unsafe_reason == f"every disk proven shared: disk vda ({SHARED})"
    by_name = {c.name: c.reason for c in report.checks}
    assert by_name["disk vda"] == f"{IMAGE}: same storage ({SHARED})"
    assert by_name["disk sda"] == f"{ISO} (read-only) is at the same path on lab-b"
    assert by_name["host clocks"] == ("lab-b is 12 ms ahead (midpoint of 3 getTime round "
                                      "trips from this machine), within 500 ms")


def case(vm: dict[str, Any] | None = None, src: dict[str, Any] | None = None,
         dst: dict[str, Any] | None = None, **options: Any) -> tuple[Any, ...]:
    return (replace(VM, **(vm or {})), replace(SRC, **(src or {})),
            replace(DST, **(dst or {})), CheckOptions(**options))


F, W = Status.FAIL, Status.WARN
ONE_AT_A_TIME = {
    "same host": (case(dst={"host_uuid": SRC.host_uuid}), F, "same hypervisor",
                  "are the same host"),
    "other hypervisor": (case(dst={"hypervisor": "Xen"}), F, "same hypervisor",
                         "lab-a runs QEMU, lab-b runs Xen"),
    "no kvm there": (case(vm={"virt_type": "kvm"}, src={"virt_types": frozenset({"kvm"})}),
                     F, "same hypervisor", "lab-b offers qemu for x86_64"),
    "older qemu": (case(dst={"qemu_version": (7, 0, 0)}), W, "libvirt and QEMU versions",
                   "the destination is older"),
    "version unknown": (case(dst={"libvirt_version": None}), W,
                        "libvirt and QEMU versions", "libvirt 9.0.0 → unknown"),
    "machine missing": (case(dst={"machine_types": frozenset({"pc-q35-7.2"})}), F,
                        "machine type", "does not support machine type pc-i440fx-7.2"),
    "machines unknown": (case(dst={"machine_types": frozenset()}), W, "machine type",
                         "did not list its machine types"),
    "cpu incompatible": (case(dst={"cpu": "incompatible", "cpu_detail": "no avx512f"}), F,
                         "guest CPU", "does not run on lab-b (incompatible): no avx512f"),
    "cpu unknown": (case(dst={"cpu": None, "cpu_detail": "not supported by the driver"}),
                    W, "guest CPU", "not compared with lab-b's CPU: not supported"),
    "memory short": (case(dst={"free_memory_mib": 200}), F, "free memory",
                     "lab-b has 200 MiB free; the VM needs 256 MiB"),
    "memory tight": (case(dst={"free_memory_mib": 400}), W, "free memory",
                     "less than 256 MiB would be left"),
    "memory unknown": (case(dst={"free_memory_mib": None}), W, "free memory",
                       "did not say its free memory"),
    "name clash": (case(dst={"domains": {"web1": "11111111-0000-0000-0000-000000000000"}}),
                   F, "name and UUID free", "another VM named web1"),
    "stale copy": (case(dst={"domains": {"web1": UUID.upper()}}), F, "name and UUID free",
                   "already has web1 with the same UUID"),
    "uuid clash": (case(dst={"domains": {"web9": UUID}}), F, "name and UUID free",
                   "named web9"),
    "disk missing": (case(dst={"disks": {IMAGE: DiskAtDestination(False),
                                         ISO: DiskAtDestination(True)}}),
                     F, "disk vda", f"{IMAGE} is not on lab-b"),
    "disk unproven": (case(dst={"disks": {IMAGE: DiskAtDestination(True),
                                          ISO: DiskAtDestination(True)}}),
                      F, "disk vda", "nothing proves it is the same storage"),
    "copy onto shared": (case(copy_storage=CopyStorage.ALL), F, "disk vda",
                         "copying it would write over the disk the VM is using"),
    "iso missing": (case(dst={"disks": {IMAGE: DiskAtDestination(True, SHARED),
                                        ISO: DiskAtDestination(False)}}),
                    F, "disk sda", f"{ISO} is not on lab-b"),
    "pool missing": (case(dst={"pools": {}}), W, "pool lab", "lab-b has no pool lab"),
    "pool elsewhere": (case(dst={"pools": {"lab": "/var/lib/lab"}}), W, "pool lab",
                       "lab is /srv/lab/images on lab-a but /var/lib/lab on lab-b"),
    "network missing": (case(dst={"networks": {}}), F, "network default",
                        "lab-b has no network default"),
    "network inactive": (case(dst={"networks": {"default": False}}), F, "network default",
                         "defined but not active"),
    "bridge missing": (case(dst={"bridges": frozenset({"virbr0"})}), F, "bridge br0",
                       "lab-b has no bridge br0"),
    "clock ahead": (case(dst={"clock": Clock(812.0, "ntp")}), F, "host clocks",
                    "lab-b is 812 ms ahead (ntp): more than the 500 ms allowed"),
    "clock behind": (case(dst={"clock": Clock(-640.0, "ntp")}), F, "host clocks",
                     "640 ms behind"),
    "clock unknown": (case(dst={"clock": Clock(None, "lab-b answers no time query")}), W,
                      "host clocks", "offset unknown (lab-b answers no time query)"),
    "clock not measured": (case(dst={"clock": None}), W, "host clocks",
                           "offset unknown (not measured)"),
    "no userfaultfd": (case(dst={"userfaultfd": False}), W, "post-copy",
                       "userfaultfd is closed to QEMU on lab-b"),
    "no userfaultfd, always": (case(dst={"userfaultfd": False},
                                    postcopy=PostcopyMode.ALWAYS),
                               F, "post-copy", "QEMU refuses post-copy"),
    "compressed": (case(compressed=True), W, "compression", "2 of 2 runs"),
    "crashed": (case(vm={"state": classify(6, 1)}), F, "VM state", "web1 is crashed"),
}


@pytest.mark.parametrize(("facts", "status", "name", "words"), ONE_AT_A_TIME.values(),
                         ids=ONE_AT_A_TIME.keys())
def test_each_check_catches_its_fault_alone(facts: tuple[Any, ...], status: Status,
                                            name: str, words: str) -> None:
    report = run_checks(*facts)
    odd = [c for c in report.checks if c.status is not Status.PASS]
    assert [(c.status, c.name) for c in odd] == [(status, name)]
    assert words in odd[0].reason
    assert odd[0].fix, "every warning and failure says what to do"
    assert report.ok is (status is Status.WARN)


def test_an_unreachable_destination_ends_the_list_early() -> None:
    report = run_checks(VM, SRC, replace(DST, reachable=False, error="Connection refused"))
    assert [(c.status, c.name) for c in report.checks] == [
        (Status.FAIL, "destination reachable"), (Status.PASS, "VM state")]
    assert "cannot reach lab-b: Connection refused" in report.checks[0].reason
    assert not report.ok and not report.allows_unsafe


def test_copy_storage_creates_a_missing_disk_in_a_pool_and_needs_no_unsafe_flag() -> None:
    dst = replace(DST, disks={IMAGE: DiskAtDestination(False), ISO: DiskAtDestination(True)})
    report = run_checks(VM, SRC, dst, CheckOptions(copy_storage=CopyStorage.ALL))
    assert report.ok and report.warnings == ()
    assert {c.name: c.reason for c in report.checks}["disk vda"] == \
        f"{IMAGE}: created in pool lab on lab-b and copied by --copy-storage all"
    assert {c.name: c.reason for c in report.checks}["disk sda"] == \
        f"{ISO} (read-only) is at the same path on lab-b"  # libvirt never copies it
    assert not report.allows_unsafe
    assert report.unsafe_reason == "not needed: --copy-storage copies the disks"


@pytest.mark.parametrize(("dst_changes", "copy", "status", "words"), [
    ({"pools": {}}, CopyStorage.ALL, Status.FAIL,
     "no pool there holds /srv/lab/images, where libvirt would create it"),
    ({}, CopyStorage.INC, Status.FAIL, "--copy-storage inc cannot create it"),
    ({"disks": {IMAGE: DiskAtDestination(True, distinct="probe not seen"),
                ISO: DiskAtDestination(True)}},
     CopyStorage.ALL, Status.WARN, "writes over the file already at that path on lab-b"),
    ({"disks": {IMAGE: DiskAtDestination(True), ISO: DiskAtDestination(True)}},
     CopyStorage.ALL, Status.FAIL, "nothing proves it is not the very file the VM uses"),
    ({"disks": {IMAGE: DiskAtDestination(True, distinct="probe not seen"),
                ISO: DiskAtDestination(True)}},
     CopyStorage.INC, Status.FAIL, "has no backing file: --copy-storage inc is for an overlay"),
])
def test_copy_storage_follows_libvirts_pre_create_rules(
        dst_changes: dict[str, Any], copy: CopyStorage, status: Status, words: str) -> None:
    dst = replace(DST, **{"disks": {IMAGE: DiskAtDestination(False),
                                    ISO: DiskAtDestination(True)}, **dst_changes})
    check = {c.name: c for c in run_checks(VM, SRC, dst, CheckOptions(copy_storage=copy))
             .checks}["disk vda"]
    assert check.status is status and words in check.reason and check.fix


def test_copy_storage_inc_needs_an_overlay_over_the_same_backing_file_there() -> None:
    base = "/srv/base/guest.qcow2"
    vm = replace(VM, disks=(Disk("vda", IMAGE, backing=base),))

    def vda(backing: str | None) -> Check:
        dst = replace(DST, disks={IMAGE: DiskAtDestination(True, distinct="probe not seen",
                                                           backing=backing)})
        return {c.name: c for c in run_checks(vm, SRC, dst, CheckOptions(
            copy_storage=CopyStorage.INC)).checks}["disk vda"]

    assert vda(base).status is Status.WARN  # written over: only the top image moves
    for other, has in ((None, "it has no backing file"),
                       ("/tmp/x.qcow2", "its backing file is /tmp/x.qcow2")):
        check = vda(other)
        assert check.status is Status.FAIL and "use --copy-storage all" in check.fix
        assert f"must be an overlay over {base}, and {has}" in check.reason, check


def test_an_unproven_disk_keeps_the_unsafe_flag_off_and_says_which() -> None:
    dst = replace(DST, disks={IMAGE: DiskAtDestination(True), ISO: DiskAtDestination(True)})
    report = run_checks(VM, SRC, dst)
    assert not report.allows_unsafe
    assert report.unsafe_reason == "not proven shared: disk vda"


def test_network_and_empty_disks_and_a_diskless_vm() -> None:
    vm = replace(VM, disks=(Disk("vdb", None, network="rbd vms/web1"),))
    report = run_checks(vm, SRC, DST)
    assert report.ok
    assert {c.name: c.reason for c in report.checks}["disk vdb"] == \
        "network disk rbd vms/web1: reached from both hosts"
    diskless = run_checks(replace(VM, disks=()), SRC, DST)
    assert diskless.ok and not diskless.allows_unsafe
    assert diskless.unsafe_reason == "not needed: no disk on a local path"


def test_a_volume_disk_needs_its_pool_at_the_destination() -> None:
    path = "/srv/vols/web1-data.qcow2"
    vm = replace(VM, disks=(*VM.disks, Disk("vdb", path, pool="vols")))
    src = replace(SRC, pools={**SRC.pools, "vols": "/srv/vols"})
    dst = replace(DST, disks={**DST.disks, path: DiskAtDestination(True, SHARED)})
    report = run_checks(vm, src, dst)
    assert [(c.status, c.name) for c in report.failures] == [(Status.FAIL, "pool vols")]
    assert "virsh pool-define-as vols dir --target /srv/vols" in report.failures[0].fix
    fixed = run_checks(vm, src, replace(dst, pools={**dst.pools, "vols": "/srv/vols"}))
    assert fixed.ok


def test_the_clock_bound_is_an_option() -> None:
    dst = replace(DST, clock=Clock(812.0, "ntp"))
    assert run_checks(VM, SRC, dst, CheckOptions(clock_bound_ms=1000)).ok


def test_post_copy_is_not_checked_when_it_cannot_be_used() -> None:
    closed = replace(DST, userfaultfd=False)
    for options in (CheckOptions(postcopy=PostcopyMode.NEVER),
                    CheckOptions(kind=MigrationKind.SUSPENDED)):
        names = [c.name for c in run_checks(VM, SRC, closed, options).checks]
        assert "post-copy" not in names
    unknown = replace(DST, userfaultfd=None)
    assert "post-copy" not in [c.name for c in run_checks(VM, SRC, unknown).checks]
    always = run_checks(VM, SRC, unknown, CheckOptions(postcopy=PostcopyMode.ALWAYS))
    assert [(c.status, c.name) for c in always.warnings] == [(Status.WARN, "post-copy")]


# -- the VM's state against the kind of migration ---------------------------------------

MANAGED = classify(5, 0, has_managed_save=True)
SAVED_TO_FILE = classify(5, 5)
SHUTOFF = classify(5, 1)
PAUSED = classify(3, 1)
LIVE, OFF, SUSP = MigrationKind.LIVE, MigrationKind.OFFLINE, MigrationKind.SUSPENDED


@pytest.mark.parametrize(("state", "kind", "extra", "status", "words"), [
    (RUNNING, LIVE, {}, Status.PASS, "web1 is running (booted)"),
    (classify(2, 0), LIVE, {}, Status.PASS, "idle"),
    (PAUSED, LIVE, {}, Status.PASS, "it moves paused"),
    (SHUTOFF, LIVE, {}, Status.FAIL, "a live migration moves a VM that runs"),
    (MANAGED, LIVE, {}, Status.FAIL, "a managed-save image cannot move"),
    (classify(7, 0), LIVE, {}, Status.FAIL, "pmsuspended"),
    (classify(4, 1), LIVE, {}, Status.FAIL, "in shutdown"),
    (SHUTOFF, OFF, {}, Status.PASS, "its definition moves"),
    (SAVED_TO_FILE, OFF, {}, Status.PASS, "its save file stays on the source"),
    (MANAGED, OFF, {}, Status.FAIL, "a managed-save image cannot move"),
    (RUNNING, OFF, {}, Status.FAIL, "--offline moves a shut-off VM"),
    (RUNNING, OFF, {"shutdown_first": True}, Status.PASS, "shut down first"),
    (PAUSED, OFF, {"shutdown_first": True}, Status.FAIL, "a paused guest cannot shut down"),
    (SHUTOFF, OFF, {"persistent": False}, Status.FAIL, "transient"),
    (RUNNING, SUSP, {}, Status.PASS, "paused for the copy and resumed at the destination"),
    (PAUSED, SUSP, {}, Status.PASS, "it moves paused"),
    (SHUTOFF, SUSP, {}, Status.FAIL, "a suspended migration moves a VM that runs"),
    (classify(6, 1), SUSP, {}, Status.FAIL, "crashed"),
])
def test_the_vm_state_allows_the_kind_asked(state: StateInfo, kind: MigrationKind,
                                            extra: dict[str, bool], status: Status,
                                            words: str) -> None:
    vm = replace(VM, state=state, persistent=extra.get("persistent", True))
    options = CheckOptions(kind=kind, shutdown_first=extra.get("shutdown_first", False))
    check = {c.name: c for c in run_checks(vm, SRC, DST, options).checks}["VM state"]
    assert check.status is status
    assert words in check.reason
    assert check.status is Status.PASS or check.fix


def test_offline_needs_no_free_memory_now() -> None:
    vm = replace(VM, state=SHUTOFF)
    report = run_checks(vm, SRC, replace(DST, free_memory_mib=10),
                        CheckOptions(kind=MigrationKind.OFFLINE))
    assert report.ok
    assert "it needs 256 MiB when it starts on lab-b" in \
        {c.name: c.reason for c in report.checks}["free memory"]


# -- the report --------------------------------------------------------------------------

def test_render_is_a_table_with_fixes_under_the_lines_that_need_them() -> None:
    report = run_checks(VM, SRC, replace(DST, bridges=frozenset(), clock=None))
    text = report.render().splitlines()
    assert text[0] == "live migration of web1: lab-a → lab-b"
    width = len("libvirt and QEMU versions")
    assert f"  pass  {'destination reachable':<{width}}  lab-b answers" in text
    bridge = text.index(f"  fail  {'bridge br0':<{width}}  lab-b has no bridge br0")
    assert text[bridge + 1].strip().startswith("fix: create bridge br0 on lab-b")
    assert any(line.startswith("  warn  host clocks") for line in text)
    assert text[-1] == "cannot migrate: 1 check failed"
    assert run_checks(VM, SRC, DST).render().splitlines()[-1] == "can migrate (0 warnings)"


def test_as_dict_is_json_with_the_verdict_and_every_line() -> None:
    report = run_checks(VM, SRC, replace(DST, networks={}))
    data = json.loads(json.dumps(report.as_dict()))
    assert data["ok"] is False and data["kind"] == "live"
    assert data["allows_unsafe"] is True
    failing = [c for c in data["checks"] if c["status"] == "fail"]
    assert failing == [Check(Status.FAIL, "network default", "lab-b has no network default",
                             "define network default on lab-b as on the source").as_dict()]


def test_report_ok_means_no_failure() -> None:
    warn = Check(Status.WARN, "x", "y", "z")
    fail = Check(Status.FAIL, "x", "y", "z")
    assert Report("v", "a", "b", MigrationKind.LIVE, (warn,)).ok
    assert not Report("v", "a", "b", MigrationKind.LIVE, (warn, fail)).ok


def test_version_from_libvirts_integers() -> None:
    assert version_from_int(9000000) == (9, 0, 0)
    assert version_from_int(7002022) == (7, 2, 22)
