"""The listing's bulk read on the real libvirtd: a running VM's vCPUs and memory come
from its live definition (``info``), not from QEMU's statistics, and match what libvirt
reports for the domain; a shut-off VM's come from the statistics of its definition."""

from __future__ import annotations

from collections.abc import Callable

from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.hypervisor.listing import list_domains
from virtlife.services.context import Services
from virtlife.states import VMState

MakeVM = Callable[..., str]


def test_a_running_vm_row_shows_its_vcpus_and_memory(services: Services,
                                                      make_vm: MakeVM) -> None:
    running = make_vm("-on", vcpus=2, memory_mib=160)
    off = make_vm("-off", vcpus=3, memory_mib=144)
    services.lifecycle.start(running)
    host = services.fleet.host(services.default_host())
    rows = {r.guest.name: r for r in list_domains(host)}
    assert rows[running].state.state is VMState.RUNNING
    assert (rows[running].vcpus, rows[running].max_memory_mib) == (2, 160)
    assert rows[off].state.state is VMState.SHUTOFF
    assert (rows[off].vcpus, rows[off].max_memory_mib) == (3, 144)
    assert rows[running].persistent and rows[off].persistent
    # the numbers libvirt's statistics groups give (they query QEMU for a running VM)
    dom = host.conn.lookupByName(running)
    stats = host.conn.domainListGetStats(
        [dom], libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON)[0][1]
    assert (rows[running].vcpus, rows[running].max_memory_mib) == (
        stats["vcpu.current"], stats["balloon.maximum"] // 1024)
    listed = {r.name: r for r in services.fleet.list_vms().rows}
    assert (listed[running].vcpus, listed[running].memory_mib) == (2, 160)
