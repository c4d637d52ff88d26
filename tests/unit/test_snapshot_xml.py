"""The ``<domainsnapshot>`` XML (xml/snapshot.py): the request virtlife writes, libvirt's
description read back (as libvirt 9.0's qemu driver writes it), names and descriptions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from virtlife import errors
from virtlife.xml.snapshot import (
    MAX_NAME,
    default_name,
    parse_snapshot,
    snapshot_xml,
    validate_description,
    validate_snapshot_name,
)

# What libvirt 9.0 + QEMU 7.2 answered here (the <domain> parts cut out).
INTERNAL_RUNNING = """<domainsnapshot>
  <name>s1</name>
  <description>first</description>
  <state>running</state>
  <creationTime>1795664593</creationTime>
  <memory snapshot='internal'/>
  <disks>
    <disk name='vda' snapshot='internal'/>
  </disks>
  <domain type='qemu'><name>web1</name></domain>
  <cookie><cpu mode='custom'/></cookie>
</domainsnapshot>"""

EXTERNAL_DISK_ONLY = """<domainsnapshot>
  <name>s2</name>
  <state>disk-snapshot</state>
  <parent>
    <name>s1</name>
  </parent>
  <creationTime>1795664595</creationTime>
  <memory snapshot='no'/>
  <disks>
    <disk name='vda' snapshot='external' type='file'>
      <driver type='qcow2'/>
      <source file='/var/cache/virtlife/images/web1.s2'/>
    </disk>
    <disk name='hdc' snapshot='no'/>
  </disks>
  <domain type='qemu'><name>web1</name></domain>
  <inactiveDomain type='qemu'><name>web1</name></inactiveDomain>
</domainsnapshot>"""

INTERNAL_SHUTOFF = """<domainsnapshot>
  <name>off</name>
  <state>shutoff</state>
  <parent><name>s5</name></parent>
  <creationTime>1795664638</creationTime>
  <memory snapshot='no'/>
  <disks><disk name='vda' snapshot='internal'/></disks>
  <domain type='qemu'><name>web1</name></domain>
</domainsnapshot>"""


def test_an_internal_snapshot_of_a_running_vm_keeps_memory_and_has_no_parent() -> None:
    doc = parse_snapshot(INTERNAL_RUNNING)
    assert (doc.name, doc.description, doc.state, doc.parent) == ("s1", "first", "running",
                                                                 None)
    assert doc.created == datetime.fromtimestamp(1795664593, UTC)
    assert (doc.location, doc.external, doc.has_memory, doc.overlays) == (
        "internal", False, True, ())


def test_an_external_disk_only_snapshot_names_its_overlay_files() -> None:
    doc = parse_snapshot(EXTERNAL_DISK_ONLY)
    assert (doc.state, doc.parent, doc.location, doc.has_memory) == (
        "disk-snapshot", "s1", "external", False)
    assert doc.overlays == ("/var/cache/virtlife/images/web1.s2",)
    assert [(d.name, d.kind) for d in doc.disks] == [("vda", "external"), ("hdc", "no")]


def test_a_shut_off_internal_snapshot_has_no_memory() -> None:
    doc = parse_snapshot(INTERNAL_SHUTOFF)
    assert (doc.state, doc.location, doc.has_memory, doc.parent) == (
        "shutoff", "internal", False, "s5")


def test_an_external_memory_file_makes_a_snapshot_external() -> None:
    doc = parse_snapshot("<domainsnapshot><name>m</name><memory snapshot='external' "
                         "file='/x/m.mem'/></domainsnapshot>")
    assert doc.external and doc.has_memory and doc.created is None and doc.disks == ()


@pytest.mark.parametrize("xml", ["<domainsnapshot>", "<domain><name>x</name></domain>",
                                 "<domainsnapshot><state>running</state></domainsnapshot>"])
def test_what_is_not_a_snapshot_description_is_refused(xml: str) -> None:
    with pytest.raises(errors.InvalidDefinition):
        parse_snapshot(xml)


def test_the_request_holds_name_and_description_escaped() -> None:
    root = ET.fromstring(snapshot_xml("before-upgrade", 'kernel <6.1> & "glibc"'))
    assert root.tag == "domainsnapshot"
    assert root.findtext("name") == "before-upgrade"
    assert root.findtext("description") == 'kernel <6.1> & "glibc"'
    assert root.find("memory") is None  # libvirt decides: memory when running


def test_a_memory_request_asks_for_internal_memory_and_an_empty_description_is_left_out(
        ) -> None:
    root = ET.fromstring(snapshot_xml("m1", memory=True))
    assert root.find("memory").get("snapshot") == "internal"  # type: ignore[union-attr]
    assert root.find("description") is None


@pytest.mark.parametrize("name", ["a", "snap-20250131-142502", "v1.2_rc+3", "A" * MAX_NAME])
def test_names_that_fit_a_file_name_and_a_qcow2_tag_are_accepted(name: str) -> None:
    assert validate_snapshot_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a/b", "a b", "é", "a\nb", "x:y",
                                  "A" * (MAX_NAME + 1), "../etc"])
def test_names_that_cannot_name_an_overlay_file_are_refused(name: str) -> None:
    with pytest.raises(errors.InvalidInput, match=r"snapshot name|cannot name a snapshot"):
        validate_snapshot_name(name)
    with pytest.raises(errors.InvalidInput):
        snapshot_xml(name)


def test_descriptions_with_control_characters_or_too_long_are_refused() -> None:
    assert validate_description("line one\nline two\ttab") == "line one\nline two\ttab"
    with pytest.raises(errors.InvalidInput, match="control characters"):
        validate_description("bell\x07")
    with pytest.raises(errors.InvalidInput, match="at most"):
        validate_description("x" * 5000)


def test_the_default_name_is_the_utc_time() -> None:
    when = datetime(2025, 1, 31, 14, 25, 2, tzinfo=UTC)
    assert default_name(when) == "snap-20250131-142502"
    assert validate_snapshot_name(default_name()).startswith("snap-")
