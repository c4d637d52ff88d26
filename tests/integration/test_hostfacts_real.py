"""What the pre-flight check asks a host, against the real local libvirtd (the lab's
tests ask two hosts): versions, machine types, CPU, pools, the storage and clock probes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlife.hypervisor import Host
from virtlife.hypervisor import hostfacts as hf
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration
URI = "qemu:///system"


@pytest.fixture
def host(real_stack: GuestImage) -> Iterator[Host]:
    with Host.open("local", URI, events=False) as h:
        yield h


@pytest.fixture
def pool(host: Host, tmp_path: Path) -> Iterator[str]:
    name = f"vl-it-probe-{int(time.time() * 1000) % 10**8}"
    xml = f"<pool type='dir'><name>{name}</name><target><path>{tmp_path}</path></target></pool>"
    made = host.conn.storagePoolCreateXML(xml, 0)  # transient: gone when destroyed
    try:
        yield name
    finally:
        made.destroy()


def test_versions_machine_types_memory_and_cpu(host: Host) -> None:
    facts = hf.hypervisor(host)
    assert facts.hypervisor == "QEMU" and facts.libvirt_version >= 9_000_000
    assert {"pc", "q35"} <= facts.machine_types and facts.free_memory_mib > 0
    assert hf.cpu_runs(host, "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>",
                       "pc", "qemu")[0]
    ok, why = hf.cpu_runs(host, "<cpu mode='custom' match='exact'><model>qemu64</model>"
                          "<feature policy='require' name='avx512f'/></cpu>", "pc", "qemu")
    assert not ok and "lacks features" in why


def test_storage_and_clock_probes_leave_nothing(host: Host, pool: str,
                                                tmp_path: Path) -> None:
    assert [p for p in hf.pools(host) if p.name == pool] == [
        hf.PoolFacts(pool, str(tmp_path), True, "dir")]
    assert hf.shared_storage(host, host, pool) == hf.StorageProbe(hf.Storage.SHARED)  # same pool
    reading = hf.clock_offset(host, pool)
    assert abs(reading.offset_s) < 0.5 + reading.uncertainty_s  # one machine, one clock
    assert "mtime" in reading.how
    assert list(tmp_path.iterdir()) == []  # the probes were deleted
    assert hf.volume_exists(host, str(tmp_path / "none")) is None
    (tmp_path / "disk.img").write_bytes(b"x")
    host.conn.storagePoolLookupByName(pool).refresh(0)
    assert hf.volume_exists(host, str(tmp_path / "disk.img")) is True
    assert "lo" in hf.interfaces(host)
