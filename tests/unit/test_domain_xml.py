"""The domain XML builder against golden files, and the XML readers.

Regenerate the golden files with ``VIRTLIFE_REGEN_GOLDEN=1 pytest tests/unit/test_domain_xml.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtlife.errors import InvalidDefinition
from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.xml.domain import DomainSpec, NicSpec, build_domain_xml, domain_name

GOLDEN = Path(__file__).parent.parent / "data" / "golden"

SPECS = {
    "direct-kernel-qemu": DomainSpec(
        name="t1", memory_mib=192, kernel=Path("/g/vmlinuz"), initrd=Path("/g/initrd.img"),
        cmdline="console=ttyS0 quiet", disks=(Path("/img/t1.qcow2"),),
        nics=(NicSpec("user"),), serial_log=Path("/var/log/libvirt/qemu/t1-serial.log")),
    "disk-boot-kvm": DomainSpec(
        name="web1", memory_mib=2048, vcpus=2, virt_type="kvm", cpu_model=None,
        disks=(Path("/img/web1.qcow2"), Path("/img/data.raw")),
        nics=(NicSpec("network", "default"), NicSpec("bridge", "br0"))),
    "minimal-no-agent-no-vnc": DomainSpec(name="m", agent=False, vnc=False, panic=False,
                                          on_crash="destroy", virtio_scsi=False),
}


@pytest.mark.parametrize("key", sorted(SPECS))
def test_builder_output_matches_golden_file(key: str) -> None:
    xml = build_domain_xml(SPECS[key])
    golden = GOLDEN / f"{key}.xml"
    if os.environ.get("VIRTLIFE_REGEN_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(xml)
    assert xml == golden.read_text()


@pytest.mark.parametrize("key", sorted(SPECS))
def test_built_xml_is_accepted_by_libvirt(key: str) -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(build_domain_xml(SPECS[key]))
        assert dom.name() == SPECS[key].name
    finally:
        conn.close()


def test_domain_name_reads_the_name() -> None:
    assert domain_name("<domain type='kvm'><name> web1 </name></domain>") == "web1"


@pytest.mark.parametrize(("xml", "message"), [
    ("<domain><name>x</name>", "not well-formed"),
    ("<network><name>x</name></network>", "not a <domain>"),
    ("<domain type='kvm'></domain>", "no <name>"),
])
def test_domain_name_rejects_what_is_not_a_domain(xml: str, message: str) -> None:
    with pytest.raises(InvalidDefinition, match=message):
        domain_name(xml)
