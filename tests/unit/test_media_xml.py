"""CD-ROM and SCSI controller XML (xml/devices.py) and where a new CD-ROM goes on SCSI,
SATA or IDE (services.media.plan_cdrom), from domain XML alone; the built devices are
checked by libvirt's own parser on the test driver. The SATA and IDE rules follow what
libvirt 9.0 + QEMU 7.2 do, measured on this machine: an i440fx ``pc`` machine gets an
AHCI controller added with its first SATA disk, q35 has SATA controller 0 built in and
no IDE, and a duplicate drive address is defined but then never started."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from virtlife import errors
from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.services.media import CdromBus, CdromPlan, plan_cdrom
from virtlife.xml.devices import (
    Cdrom,
    DriveAddress,
    aliases,
    cdrom_ref_xml,
    cdrom_xml,
    cdroms,
    controller_indexes,
    disk_index,
    disk_name,
    disk_targets,
    drive_addresses,
    machine,
    scsi_cdrom_xml,
    scsi_controller_xml,
    scsi_controllers,
    scsi_disk_name,
    scsi_units,
)


def domain(*devices: str, machine: str = "") -> str:
    kind = f" machine='{machine}'" if machine else ""
    return (f"<domain type='test'><name>d</name><memory unit='MiB'>64</memory>"
            f"<os><type{kind}>hvm</type></os><devices>{''.join(devices)}</devices></domain>")


VDA = ("<disk type='file' device='disk'><source file='/img/d.qcow2'/>"
       "<target dev='vda' bus='virtio'/></disk>")
IDE_CD = ("<disk type='file' device='cdrom'><source file='/isos/other.iso'/>"
          "<target dev='hdc' bus='ide'/></disk>")
LSI = "<controller type='scsi' index='0' model='lsilogic'/>"
VIRTIO0 = "<controller type='scsi' index='0' model='virtio-scsi'/>"


def cd(target: str, controller: int, unit: int, source: str = "/isos/a.iso") -> str:
    return scsi_cdrom_xml(source, target=target, controller=controller, unit=unit)


PC, Q35 = "pc-i440fx-7.2", "pc-q35-7.2"  # what libvirt 9.0 writes for pc and q35
SATA0 = "<controller type='sata' index='0'/>"


def sata_cd(target: str, controller: int, port: int, source: str = "/isos/s.iso") -> str:
    return cdrom_xml(source, target=target, bus="sata",
                     address=DriveAddress(controller, 0, 0, port))


def ide_disk(target: str, address: tuple[int, int] | None = None, *,
             device: str = "cdrom") -> str:
    """An IDE disk named ``target``, at (channel, unit) ``address`` when given."""
    where = "" if address is None else (
        f"<address type='drive' controller='0' bus='{address[0]}' target='0' "
        f"unit='{address[1]}'/>")
    return (f"<disk type='file' device='{device}'><source file='/isos/{target}.iso'/>"
            f"<target dev='{target}' bus='ide'/>{where}</disk>")


def test_the_cdrom_is_a_read_only_scsi_disk_with_virtlifes_alias() -> None:
    disk = ET.fromstring(cd("sdb", 2, 5, "/var/lib/isos/virtio win.iso"))
    assert (disk.get("type"), disk.get("device")) == ("file", "cdrom")
    assert disk.find("source").get("file") == "/var/lib/isos/virtio win.iso"  # type: ignore[union-attr]
    assert disk.find("target").attrib == {"dev": "sdb", "bus": "scsi"}  # type: ignore[union-attr]
    assert disk.find("address").attrib == {  # type: ignore[union-attr]
        "type": "drive", "controller": "2", "bus": "0", "target": "0", "unit": "5"}
    assert disk.find("readonly") is not None
    assert disk.find("alias").get("name") == "ua-virtlife-iso-sdb"  # type: ignore[union-attr]
    assert ET.fromstring(scsi_controller_xml(3)).attrib == {
        "type": "scsi", "index": "3", "model": "virtio-scsi"}


@pytest.mark.parametrize(("bus", "address"), [("sata", DriveAddress(1, 0, 0, 4)),
                                               ("ide", DriveAddress(0, 1, 0, 1))])
def test_sata_and_ide_cdroms_are_read_only_with_their_address_and_alias(
        bus: str, address: DriveAddress) -> None:
    disk = ET.fromstring(cdrom_xml("/isos/w.iso", target="hdd", bus=bus, address=address))
    assert disk.find("target").attrib == {"dev": "hdd", "bus": bus}  # type: ignore[union-attr]
    assert disk.find("address").attrib == {  # type: ignore[union-attr]
        "type": "drive", "controller": str(address.controller), "bus": str(address.bus),
        "target": "0", "unit": str(address.unit)}
    assert disk.find("readonly") is not None
    assert disk.find("alias").get("name") == "ua-virtlife-iso-hdd"  # type: ignore[union-attr]


def test_libvirt_accepts_the_built_devices_in_a_definition() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain(
            VDA, scsi_controller_xml(1), cd("sda", 1, 0), sata_cd("sdb", 0, 3),
            cdrom_xml("/isos/i.iso", target="hdc", bus="ide",
                      address=DriveAddress(0, 1, 0, 0)), machine="q35"))
        xml = dom.XMLDesc(0)
    finally:
        conn.close()
    found = cdroms(xml)
    assert found == [Cdrom("sda", "scsi", "/isos/a.iso", "ua-virtlife-iso-sda"),
                     Cdrom("sdb", "sata", "/isos/s.iso", "ua-virtlife-iso-sdb"),
                     Cdrom("hdc", "ide", "/isos/i.iso", "ua-virtlife-iso-hdc")]
    assert all(c.by_virtlife for c in found)
    assert scsi_units(xml, 1) == {0}
    assert drive_addresses(xml, "sata") == {DriveAddress(0, 0, 0, 3)}
    assert drive_addresses(xml, "ide") == {DriveAddress(0, 1, 0, 0)}
    assert machine(xml) == "q35"
    assert controller_indexes(xml, "sata") == {0} and controller_indexes(xml, "ide") == {0}


def test_readers_list_controllers_targets_units_aliases_and_cdroms() -> None:
    xml = domain(VDA, IDE_CD, LSI, "<controller type='scsi' index='0x2' model='virtio-scsi'/>",
                 cd("sda", 2, 0), cd("sdb", 2, 3, "/isos/b.iso"), cd("sdc", 0, 1))
    assert [(c.index, c.model) for c in scsi_controllers(xml)] == [
        (0, "lsilogic"), (2, "virtio-scsi")]
    assert disk_targets(xml) == {"vda", "hdc", "sda", "sdb", "sdc"}
    assert scsi_units(xml, 2) == {0, 3} and scsi_units(xml, 0) == {1}
    assert aliases(xml) == {"ua-virtlife-iso-sda", "ua-virtlife-iso-sdb", "ua-virtlife-iso-sdc"}
    found = cdroms(xml)
    assert [(c.target, c.source, c.by_virtlife) for c in found] == [
        ("hdc", "/isos/other.iso", False), ("sda", "/isos/a.iso", True),
        ("sdb", "/isos/b.iso", True), ("sdc", "/isos/a.iso", True)]


def test_an_empty_cdrom_has_no_source_and_its_detach_xml_names_its_target() -> None:
    [empty] = cdroms(domain("<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/>"
                            "</disk>"))
    assert empty == Cdrom("hdc", "ide", "", "")
    ref = ET.fromstring(cdrom_ref_xml(empty))
    assert ref.find("source") is None
    assert ref.find("target").attrib == {"dev": "hdc", "bus": "ide"}  # type: ignore[union-attr]


@pytest.mark.parametrize(("index", "name"), [(0, "sda"), (25, "sdz"), (26, "sdaa"),
                                             (27, "sdab"), (701, "sdzz"), (702, "sdaaa")])
def test_scsi_disk_names_count_like_linux(index: int, name: str) -> None:
    assert scsi_disk_name(index) == name == disk_name("sd", index)
    assert disk_index("sd", name) == index
    assert disk_name("hd", index) == "hd" + name[2:]


@pytest.mark.parametrize("name", ["vda", "sd", "sd1", "sdA", "hda", ""])
def test_a_name_of_another_kind_has_no_index(name: str) -> None:
    assert disk_index("sd", name) is None


def test_sata_and_ide_disks_without_an_address_are_where_libvirt_puts_them() -> None:
    xml = domain("<disk type='file' device='disk'><target dev='sdh' bus='sata'/></disk>",
                 "<disk type='file' device='cdrom'><target dev='sdb' bus='scsi'/></disk>",
                 ide_disk("hdd"), ide_disk("hda", (1, 0)), VDA)
    # sdh is SATA disk 7: port 1 of controller 1; hdd is channel 1, unit 1
    assert drive_addresses(xml, "sata") == {DriveAddress(1, 0, 0, 1)}
    assert drive_addresses(xml, "ide") == {DriveAddress(0, 1, 0, 1), DriveAddress(0, 1, 0, 0)}
    assert drive_addresses(xml, "scsi") == set()  # SCSI depends on the controller: unread
    assert disk_targets(xml, bus="ide") == {"hdd", "hda"}
    assert machine(xml) == ""


def test_a_vm_without_virtio_scsi_gets_a_controller_after_its_others() -> None:
    assert plan_cdrom([domain(VDA)]) == CdromPlan("sda", 0, 0, add_controller=True)
    # libvirt's lsilogic on a pc machine is not used: guests lack its driver
    assert plan_cdrom([domain(VDA, LSI)]) == CdromPlan("sda", 1, 0, add_controller=True)


def test_an_existing_virtio_scsi_controller_is_used_at_its_first_free_unit() -> None:
    xml = domain(VDA, IDE_CD, VIRTIO0, cd("sda", 0, 0), cd("sdb", 0, 2))
    assert plan_cdrom([xml]) == CdromPlan("sdc", 0, 1, add_controller=False)


def test_the_place_is_free_in_both_the_live_and_the_persistent_definition() -> None:
    live = domain(VIRTIO0, cd("sda", 0, 0))
    config = domain(VIRTIO0, cd("sdb", 0, 1, "/isos/b.iso"))
    assert plan_cdrom([live, config]) == CdromPlan("sdc", 0, 2, add_controller=False)
    # a controller only in the definition (not plugged in yet) is not shared: a new one
    # takes an index free in both
    pending = domain("<controller type='scsi' index='1' model='virtio-scsi'/>")
    assert plan_cdrom([domain(VDA), pending]) == CdromPlan("sda", 2, 0, add_controller=True)


def test_a_target_whose_alias_is_left_in_use_is_skipped() -> None:
    leftover = ("<disk type='file' device='cdrom'><source file='/x.iso'/>"
                "<target dev='hdc' bus='ide'/><alias name='ua-virtlife-iso-sda'/></disk>")
    assert plan_cdrom([domain(VIRTIO0, leftover)]).target == "sdb"


def test_plan_needs_a_definition() -> None:
    with pytest.raises(ValueError, match="at least one"):
        plan_cdrom([])


# -- SATA -------------------------------------------------------------------------------

def test_sata_on_a_pc_machine_asks_for_controller_0_which_libvirt_adds() -> None:
    assert plan_cdrom([domain(VDA, VIRTIO0, machine=PC)], CdromBus.SATA) == CdromPlan(
        "sda", 0, 0, add_controller=True, bus=CdromBus.SATA)


def test_sata_names_are_shared_with_scsi_and_addresses_are_not() -> None:
    # sda is a SCSI CD-ROM at 0:0:0:0: the SATA one takes the next name, but port 0 of
    # SATA controller 0 is another bus (libvirt 9.0 starts such a VM)
    xml = domain(VIRTIO0, cd("sda", 0, 0), SATA0, machine=Q35)
    plan = plan_cdrom([xml], CdromBus.SATA)
    assert plan == CdromPlan("sdb", 0, 0, add_controller=False, bus=CdromBus.SATA)
    assert plan.address == DriveAddress(0, 0, 0, 0)


def test_sata_takes_the_first_free_port_whatever_the_names_say() -> None:
    # sdb was placed by hand at port 0; sdc sits at port 2; sda is free as a name
    xml = domain(SATA0, sata_cd("sdb", 0, 0), sata_cd("sdc", 0, 2, "/isos/c.iso"),
                 machine=Q35)
    assert plan_cdrom([xml], CdromBus.SATA) == CdromPlan("sda", 0, 1, add_controller=False,
                                                         bus=CdromBus.SATA)


def test_a_full_sata_controller_is_followed_by_a_new_one() -> None:
    full = [sata_cd(disk_name("sd", p), 0, p, f"/isos/{p}.iso") for p in range(6)]
    assert plan_cdrom([domain(SATA0, *full, machine=Q35)], CdromBus.SATA) == CdromPlan(
        "sdg", 1, 0, add_controller=True, bus=CdromBus.SATA)
    # a disk on a controller not written in the XML still counts for the next index
    on_1 = sata_cd("sdg", 1, 0, "/isos/g.iso")
    assert plan_cdrom([domain(SATA0, *full, on_1)], CdromBus.SATA).controller == 2


def test_sata_ports_are_free_in_both_definitions() -> None:
    live = domain(SATA0, sata_cd("sda", 0, 0))
    config = domain(SATA0, sata_cd("sdb", 0, 1, "/isos/b.iso"))
    assert plan_cdrom([live, config], CdromBus.SATA) == CdromPlan(
        "sdc", 0, 2, add_controller=False, bus=CdromBus.SATA)


# -- IDE --------------------------------------------------------------------------------

def test_ide_takes_the_secondary_channel_first() -> None:
    assert plan_cdrom([domain(VDA, machine=PC)], CdromBus.IDE) == CdromPlan(
        "hdc", 0, 0, add_controller=False, bus=CdromBus.IDE, channel=1)
    assert plan_cdrom([domain(IDE_CD, machine=PC)], CdromBus.IDE) == CdromPlan(
        "hdd", 0, 1, add_controller=False, bus=CdromBus.IDE, channel=1)
    plan = plan_cdrom([domain(IDE_CD, ide_disk("hdd"), machine=PC)], CdromBus.IDE)
    assert plan == CdromPlan("hda", 0, 0, add_controller=False, bus=CdromBus.IDE)
    assert plan.address == DriveAddress(0, 0, 0, 0)


def test_an_ide_place_is_taken_by_its_name_its_address_or_its_alias() -> None:
    # hda placed by hand at hdc's address (1, 0): hdc's place and hda's name are taken
    moved = domain(ide_disk("hda", (1, 0), device="disk"), machine=PC)
    assert plan_cdrom([moved], CdromBus.IDE).target == "hdd"
    leftover = ("<disk type='file' device='cdrom'><source file='/x.iso'/>"
                "<target dev='sda' bus='sata'/><alias name='ua-virtlife-iso-hdc'/></disk>")
    assert plan_cdrom([domain(leftover, machine=PC)], CdromBus.IDE).target == "hdd"


def test_a_vm_with_four_ide_disks_has_no_room_and_is_told_to_use_sata() -> None:
    xml = domain(*(ide_disk(f"hd{c}") for c in "abcd"), machine=PC)
    with pytest.raises(errors.InvalidInput, match=re.escape(
            "win1 has no free IDE place (IDE has 2 channels x 2 units, taken by hda, hdb, "
            "hdc, hdd): use --bus sata, or detach one")):
        plan_cdrom([xml], CdromBus.IDE, vm="win1")


@pytest.mark.parametrize("kind", ["pc", PC, "pc-1.0", "isapc", ""])
def test_ide_is_planned_on_i440fx_machines_and_left_to_libvirt_when_unsaid(
        kind: str) -> None:
    assert plan_cdrom([domain(machine=kind)], CdromBus.IDE).target == "hdc"


@pytest.mark.parametrize("kind", ["q35", Q35, "microvm"])
def test_ide_on_a_machine_without_ide_is_refused_before_libvirt_defines_it(
        kind: str) -> None:
    # libvirt 9.0 defines an IDE CD-ROM on q35, then cannot start the VM, even after
    # the CD-ROM is detached (the IDE controller it added stays)
    with pytest.raises(errors.InvalidInput, match=re.escape(
            f"win1 is a {kind} machine, which has no IDE controller (i440fx `pc` machines "
            "have one): use --bus sata")):
        plan_cdrom([domain(machine=kind)], CdromBus.IDE, vm="win1")
