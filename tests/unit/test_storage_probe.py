"""The storage probe answers shared, distinct or unknown, and unknown refuses: an error
met while looking for the probe volume at the destination is no evidence of other
storage, so it never lets ``--copy-storage`` write over the file there nor passes
libvirt's unsafe flag (issue 16, section 5).

Two test-driver "hosts" (``node.xml`` and ``node2.xml``: separate states, so separate
storage) each with a dir pool at /srv/p; errors are injected at the one libvirt call
they stand for, as libvirt would raise them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import libvirt
import pytest

from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor import hostfacts as hf
from virtlife.services.migration.checks import (
    CheckOptions,
    CopyStorage,
    Status,
    run_checks,
)
from virtlife.services.migration.gather import gather

POOL = "<pool type='dir'><name>p</name><target><path>/srv/p</path></target></pool>"
DISK = "/srv/p/web1.qcow2"
VOLUME = "<volume><name>web1.qcow2</name><capacity>1024</capacity></volume>"
DOMAIN = f"""<domain type='test'><name>web1</name>
<uuid>6c3d2a1b-0000-4000-8000-00000000beef</uuid><memory unit='MiB'>64</memory>
<os><type>hvm</type></os><devices><disk type='file' device='disk'>
<source file='{DISK}'/><target dev='vda'/></disk></devices></domain>"""


class InjectedError(libvirt.libvirtError):  # type: ignore[misc]
    """A libvirtError as libvirt raises it, with its code and domain."""

    def __init__(self, code: int, message: str,
                 domain: int = libvirt.VIR_FROM_STORAGE) -> None:
        Exception.__init__(self, message)
        self.err = (code, domain, message, 2, None, None, None, 0, 0)


TRANSIENT = (libvirt.VIR_ERR_INTERNAL_ERROR, "injected: cannot open directory '/srv/p'")


def failing(monkeypatch: pytest.MonkeyPatch, cls: Any, method: str,
            error: tuple[int, str] = TRANSIENT,
            when: Callable[..., bool] = lambda *a: True) -> None:
    """``cls.method`` raises ``error`` when ``when(*args)``; it works as before otherwise."""
    real = getattr(cls, method)

    def call(self: Any, *args: Any) -> Any:
        if when(*args):
            raise InjectedError(*error)
        return real(self, *args)

    monkeypatch.setattr(cls, method, call)


def probe_name(name: object, *_: object) -> bool:
    return isinstance(name, str) and name.startswith(hf.PROBE_PREFIX)


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    """lab-a and lab-b, each with pool p at /srv/p (other storage); the disk is on
    lab-b too, at the same path."""
    with Host.open("lab-a", NODE_URI, events=False) as a, \
            Host.open("lab-b", NODE2_URI, events=False) as b:
        a.conn.storagePoolCreateXML(POOL, 0).createXML(VOLUME, 0)
        b.conn.storagePoolCreateXML(POOL, 0).createXML(VOLUME, 0)
        yield a, b


def volumes(host: Host) -> list[str]:
    names: list[str] = host.conn.storagePoolLookupByName("p").listVolumes()
    return sorted(names)


# -- hypervisor.hostfacts.shared_storage ----------------------------------------------------

def test_the_probe_is_shared_when_seen_and_distinct_when_libvirt_says_not_there(
        hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    assert hf.shared_storage(a, a, "p") == hf.StorageProbe(hf.Storage.SHARED)
    assert hf.shared_storage(a, b, "p") == hf.StorageProbe(hf.Storage.DISTINCT)
    assert volumes(a) == volumes(b) == ["web1.qcow2"]  # the probes were deleted


@pytest.mark.parametrize(("where", "words"), [
    ("lookup", "cannot look for the probe volume .virtlife-probe-"),
    ("refresh", "cannot refresh the storage pool p of lab-b"),
    ("pool", "cannot refresh the storage pool p of lab-b"),
    ("create", "cannot make a probe volume in pool p on lab-a"),
])
def test_an_error_on_the_way_is_unknown_never_other_storage(
        hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch, where: str,
        words: str) -> None:
    a, b = hosts
    if where == "lookup":  # the probe's own lookup at the destination
        failing(monkeypatch, libvirt.virStoragePool, "storageVolLookupByName",
                when=probe_name)
    elif where == "refresh":
        failing(monkeypatch, libvirt.virStoragePool, "refresh")
    elif where == "pool":  # the pool at the destination stopped since it was listed
        b.conn.storagePoolLookupByName("p").destroy()
    else:
        failing(monkeypatch, libvirt.virStoragePool, "createXML", when=probe_name_in_xml)
    probe = hf.shared_storage(a, b, "p")
    assert probe.answer is hf.Storage.UNKNOWN, probe
    assert words in probe.why, probe.why
    monkeypatch.undo()
    assert volumes(a) == ["web1.qcow2"]  # no probe left behind


def probe_name_in_xml(xml: object, *_: object) -> bool:
    return isinstance(xml, str) and hf.PROBE_PREFIX in xml


def test_a_lost_connection_in_the_lookup_is_unknown_too(
        hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = hosts
    failing(monkeypatch, libvirt.virStoragePool, "storageVolLookupByName",
            error=(libvirt.VIR_ERR_RPC, "injected: cannot recv data"), when=probe_name)
    probe = hf.shared_storage(a, b, "p")
    assert probe.answer is hf.Storage.UNKNOWN and "cannot recv data" in probe.why


# -- the other probes: an error is raised, translated, never an answer -------------------

def test_a_volume_lookup_error_is_raised_translated_not_taken_as_absent(
        hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch) -> None:
    _, b = hosts
    # libvirt's "no such volume" is an answer: none there (or no pool holds the path)
    assert hf.volume_exists(b, "/srv/q/x.qcow2") is None
    assert hf.volume_backing(b, "/srv/q/x.qcow2") is None
    assert hf.volume_backing(b, DISK) is None  # there, without a backing file
    assert hf.disk_present(b, "/srv/p/x.qcow2") is False
    # any other error is none: raised as a virtlife error, never a libvirtError
    failing(monkeypatch, libvirt.virConnect, "storageVolLookupByPath")
    for probe in (hf.volume_exists, hf.volume_backing, hf.disk_present):
        with pytest.raises(errors.OperationFailed, match="on lab-b: injected: cannot open"):
            probe(b, DISK)


# -- gather and the checks: unknown fails --copy-storage and never passes unsafe --------

def checked(a: Host, b: Host, copy: CopyStorage | None) -> Any:
    guest = a.define(DOMAIN)
    vm, src, at = gather(guest, b, "lab-b")
    return at.disks[DISK], run_checks(vm, src, at, CheckOptions(copy_storage=copy))


@pytest.mark.parametrize("copy", [CopyStorage.ALL, CopyStorage.INC])
def test_copy_storage_is_refused_when_the_probe_lookup_fails(
        hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch,
        copy: CopyStorage) -> None:
    a, b = hosts
    at, report = checked(a, b, copy)  # no fault: other storage, proven
    assert at.distinct and at.shared is None and at.present is True
    failing(monkeypatch, libvirt.virStoragePool, "storageVolLookupByName", when=probe_name)
    at, report = checked(a, b, copy)
    assert at.shared is None and at.distinct is None and at.present is True
    assert at.unknown and "could not tell" in at.unknown and "injected" in at.unknown
    disk = {c.name: c for c in report.checks}["disk vda"]
    assert disk.status is Status.FAIL, disk
    assert f"{DISK}: the storage probe between pool p on lab-a and pool p on lab-b could " \
        "not tell" in disk.reason
    assert f"--copy-storage {copy} could write over it" in disk.reason
    assert "run the check again" in disk.fix
    assert not report.ok and not report.allows_unsafe


def test_without_copy_storage_an_unknown_probe_fails_and_passes_no_unsafe_flag(
        hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = hosts
    failing(monkeypatch, libvirt.virStoragePool, "storageVolLookupByName", when=probe_name)
    _, report = checked(a, b, None)
    disk = {c.name: c for c in report.checks}["disk vda"]
    assert disk.status is Status.FAIL and "nothing proves it is the same storage" \
        in disk.reason and "could not tell" in disk.reason, disk
    assert not report.allows_unsafe
    assert report.unsafe_reason == "not proven shared: disk vda"


def test_a_disk_the_destination_was_not_asked_about_fails(hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    vm, src, at = gather(a.define(DOMAIN), b, "lab-b")
    for copy in (None, CopyStorage.ALL):
        report = run_checks(vm, src, replace(at, disks={}), CheckOptions(copy_storage=copy))
        disk = {c.name: c for c in report.checks}["disk vda"]
        assert disk.status is Status.FAIL, disk
        assert disk.reason == f"{DISK}: lab-b was not asked about it"
        assert not report.ok and not report.allows_unsafe
