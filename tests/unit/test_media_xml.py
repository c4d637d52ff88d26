"""CD-ROM and SCSI controller XML (xml/devices.py) and where a new CD-ROM goes
(services.media.plan_cdrom), from domain XML alone; the built devices are checked by
libvirt's own parser on the test driver."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.services.media import CdromPlan, plan_cdrom
from virtlife.xml.devices import (
    Cdrom,
    aliases,
    cdrom_ref_xml,
    cdroms,
    disk_targets,
    scsi_cdrom_xml,
    scsi_controller_xml,
    scsi_controllers,
    scsi_disk_name,
    scsi_units,
)


def domain(*devices: str) -> str:
    return (f"<domain type='test'><name>d</name><memory unit='MiB'>64</memory>"
            f"<os><type>hvm</type></os><devices>{''.join(devices)}</devices></domain>")


VDA = ("<disk type='file' device='disk'><source file='/img/d.qcow2'/>"
       "<target dev='vda' bus='virtio'/></disk>")
IDE_CD = ("<disk type='file' device='cdrom'><source file='/isos/other.iso'/>"
          "<target dev='hdc' bus='ide'/></disk>")
LSI = "<controller type='scsi' index='0' model='lsilogic'/>"
VIRTIO0 = "<controller type='scsi' index='0' model='virtio-scsi'/>"


def cd(target: str, controller: int, unit: int, source: str = "/isos/a.iso") -> str:
    return scsi_cdrom_xml(source, target=target, controller=controller, unit=unit)


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


def test_libvirt_accepts_the_built_devices_in_a_definition() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain(VDA, scsi_controller_xml(1), cd("sda", 1, 0)))
        xml = dom.XMLDesc(0)
    finally:
        conn.close()
    [found] = cdroms(xml)
    assert found == Cdrom("sda", "scsi", "/isos/a.iso", "ua-virtlife-iso-sda")
    assert found.by_virtlife
    assert scsi_units(xml, 1) == {0}


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
    assert scsi_disk_name(index) == name


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
