"""An operator's disk image must not reach outside the allowed roots through its header
(issue 16 follow-up): the policy (``backing.chain_refusal``), the XML's images and
their formats (``xml.images``), and both readers, qemu-img on real qcow2 files made
here and a host's storage pools (the test driver's, which keep a volume's backing
store as given).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from real_support import needs_qemu_img
from support import NODE_URI
from virtlife.backing import Chain, Layer, chain_refusal, parse_qemu_img
from virtlife.hypervisor import Host
from virtlife.hypervisor.volchain import pool_chain
from virtlife.services.backing import local_chain
from virtlife.xml.images import DiskImage, file_images

pytestmark = needs_qemu_img


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def under(root: Path) -> Callable[[str], bool]:
    """The allowed-roots check for the one root ``root`` (paths here are normalised)."""
    prefix = str(root).rstrip("/") + "/"
    return lambda path: path.startswith(prefix)


# -- the policy --------------------------------------------------------------------------

ROOT = under(Path("/images"))


def test_a_chain_inside_the_roots_is_allowed() -> None:
    chain = Chain("/images/a.qcow2", (Layer("/images/a.qcow2", "qcow2", "/images/b.raw"),
                                      Layer("/images/b.raw", "raw")))
    assert chain_refusal(chain, ROOT) is None


def test_a_backing_file_outside_the_roots_is_refused_by_name() -> None:
    chain = Chain("/images/a.qcow2", (Layer("/images/a.qcow2", "qcow2", "/etc/shadow"),
                                      Layer("/etc/shadow", "raw")))
    assert chain_refusal(chain, ROOT) == ("/images/a.qcow2 has the backing file "
                                          "/etc/shadow, outside the allowed roots")


def test_an_external_data_file_outside_the_roots_is_refused() -> None:
    chain = Chain("/images/a.qcow2", (Layer("/images/a.qcow2", "qcow2",
                                            data_file="/dev/sda"),))
    refusal = chain_refusal(chain, ROOT)
    assert refusal is not None and "external data file /dev/sda" in refusal


def test_an_unknown_chain_or_data_file_is_refused() -> None:
    assert "cannot be read (qemu-img: boom)" in str(
        chain_refusal(Chain("/images/a.qcow2", unknown="qemu-img: boom"), ROOT))
    assert "cannot be read" in str(chain_refusal(Chain("/images/a.qcow2"), ROOT))
    unseen = Chain("/images/a.qcow2", (Layer("/images/a.qcow2", "qcow2",
                                             data_file_known=False),))
    assert "external data file, if any, cannot be seen" in str(chain_refusal(unseen, ROOT))


def test_formats_that_name_files_unread_are_refused() -> None:
    chain = Chain("/images/a.vmdk", (Layer("/images/a.vmdk", "vmdk"),))
    assert "is a vmdk image" in str(chain_refusal(chain, ROOT))


def test_a_last_layer_naming_a_backing_file_is_refused() -> None:
    chain = Chain("/images/a.qcow2", (Layer("/images/a.qcow2", "qcow2", "/images/gone"),))
    assert "could not be read" in str(chain_refusal(chain, ROOT))


def test_qemu_img_output_that_is_not_json_is_unknown() -> None:
    assert parse_qemu_img("/images/a", "not json").unknown
    assert parse_qemu_img("/images/a", '[{"format": "raw"}]').unknown


# -- the XML's images --------------------------------------------------------------------

def test_a_disk_without_a_driver_type_is_raw_and_backing_stores_are_listed() -> None:
    xml = ("<domain type='test'><name>v</name><devices>"
           "<disk type='file'><source file='/i/a'/></disk>"
           "<disk type='file'><driver name='qemu' type='qcow2'/><source file='/i/b'/>"
           "<backingStore type='file'><format type='qcow2'/><source file='/i/c'/>"
           "<backingStore type='file'><source file='/i/d'/></backingStore>"
           "</backingStore></disk>"
           "<disk type='block'><source dev='/dev/sda'/></disk></devices></domain>")
    assert file_images(xml) == [
        DiskImage("devices/disk[1]", "/i/a", "raw"),
        DiskImage("devices/disk[2]", "/i/b", "qcow2"),
        DiskImage("devices/disk[2]/backingStore", "/i/c", "qcow2"),
        DiskImage("devices/disk[2]/backingStore/backingStore", "/i/d", "")]


# -- reading the chain with qemu-img -----------------------------------------------------

def test_qemu_img_reads_a_backing_file_outside_the_roots(tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",
             str(evil), "1M")
    chain = local_chain(str(evil), "qcow2")
    assert [(layer.path, layer.format) for layer in chain.layers] == [
        (str(evil), "qcow2"), ("/etc/hostname", "raw")]
    assert chain_refusal(chain, under(tmp_path)) == (
        f"{evil} has the backing file /etc/hostname, outside the allowed roots")


def test_qemu_img_reads_a_clean_overlay_and_an_external_data_file(tmp_path: Path) -> None:
    base, top = tmp_path / "base.raw", tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "raw", str(base), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(top), "1M")
    assert chain_refusal(local_chain(str(top), "qcow2"), under(tmp_path)) is None
    data = tmp_path / "data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "data_file=/tmp/virtlife-no-such-data",
             str(data), "1M")
    refusal = chain_refusal(local_chain(str(data), "qcow2"), under(tmp_path))
    assert refusal is not None and "/tmp/virtlife-no-such-data" in refusal


def test_a_file_that_is_not_what_the_xml_says_is_unknown(tmp_path: Path) -> None:
    raw = tmp_path / "plain.img"
    raw.write_bytes(b"\0" * 4096)
    chain = local_chain(str(raw), "qcow2")  # never probed: read as the XML says
    assert chain.unknown.startswith("qemu-img: ")
    assert local_chain(str(tmp_path / "missing.qcow2"), "qcow2").unknown


# -- reading the chain through a host's pools --------------------------------------------

POOL = "<pool type='dir'><name>p</name><target><path>/srv/p</path></target></pool>"


def volume(name: str, fmt: str, backing: str = "", backing_format: str = "") -> str:
    store = (f"<backingStore><path>{backing}</path>"
             + (f"<format type='{backing_format}'/>" if backing_format else "")
             + "</backingStore>") if backing else ""
    return (f"<volume><name>{name}</name><capacity>1024</capacity>"
            f"<target><format type='{fmt}'/></target>{store}</volume>")


@pytest.fixture
def host() -> Iterator[Host]:
    with Host.open("hv1", NODE_URI, events=False) as h:
        h.conn.storagePoolCreateXML(POOL, 0)
        yield h


def test_the_pool_chain_follows_backing_files_and_stops_at_one_no_pool_holds(
        host: Host) -> None:
    pool = host.conn.storagePoolLookupByName("p")
    pool.createXML(volume("base.raw", "raw"), 0)
    pool.createXML(volume("top.qcow2", "qcow2", "/srv/p/base.raw", "raw"), 0)
    pool.createXML(volume("evil.qcow2", "qcow2", "/etc/shadow", "raw"), 0)
    chain = pool_chain(host, "/srv/p/top.qcow2", "qcow2")
    assert [(layer.path, layer.format) for layer in chain.layers] == [
        ("/srv/p/top.qcow2", "qcow2"), ("/srv/p/base.raw", "raw")]
    assert not chain.layers[0].data_file_known  # a pool does not show it
    evil = pool_chain(host, "/srv/p/evil.qcow2", "qcow2")
    assert "no storage pool on host hv1 holds /etc/shadow" in evil.unknown
    assert "no storage pool on host hv1 holds /srv/q/x" in pool_chain(
        host, "/srv/q/x", "qcow2").unknown
    raw = pool_chain(host, "/srv/p/evil.qcow2", "raw")  # as the XML says: no chain
    assert [(layer.path, layer.format) for layer in raw.layers] == [
        ("/srv/p/evil.qcow2", "raw")]
