"""One host's domains in three round trips: the bulk read behind the fleet listing.

``list_domains`` asks libvirt once for every domain's state, vCPUs and memory
(``getAllDomainStats`` with ``NOWAIT``, so a domain busy with a job never delays the
answer), once for the domains with a managed-save image and once for the transient
ones, instead of five calls per domain. A driver without bulk statistics (or without
the vCPU and balloon groups, like the test driver) gets the per-domain ``info()``
call for what is missing. It classifies states (``states.classify``) and holds no
policy: which VMs to show is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtlife.hypervisor.guest import Guest
from virtlife.hypervisor.libvirt_api import calling, libvirt
from virtlife.states import StateInfo, classify

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host

STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU
         | libvirt.VIR_DOMAIN_STATS_BALLOON)
# Without a job on a busy domain: its state is still reported, its balloon maybe not.
STATS_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
_NO_BULK = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            libvirt.VIR_ERR_INVALID_ARG}


@dataclass(frozen=True)
class DomainRow:
    """One domain as the bulk read saw it."""

    guest: Guest
    state: StateInfo
    vcpus: int
    max_memory_mib: int
    persistent: bool


def list_domains(host: Host) -> list[DomainRow]:
    """Every domain of ``host`` with its state, vCPUs, maximum memory and persistence."""
    conn = host.conn
    with calling(f"list VMs on {host.name}"):
        records = _bulk_stats(conn)
        saved = {d.name() for d in conn.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)}
        transient = {d.name() for d in conn.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)}
        rows = [_row(host, dom, stats, saved, transient) for dom, stats in records]
    return [row for row in rows if row is not None]


def managed_saved(host: Host) -> set[str]:
    """The names of ``host``'s domains that have a managed-save image (one round trip)."""
    conn = host.conn
    with calling(f"list the managed-saved VMs on {host.name}"):
        return {d.name() for d in conn.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)}


def _bulk_stats(conn: Any) -> list[tuple[Any, Mapping[str, Any]]]:
    try:
        return list(conn.getAllDomainStats(STATS, STATS_FLAGS))
    except libvirt.libvirtError as err:
        if err.get_error_code() not in _NO_BULK:
            raise
    return [(d, {}) for d in conn.listAllDomains(0)]  # a driver without bulk statistics


def _row(host: Host, dom: Any, stats: Mapping[str, Any], saved: set[str],
         transient: set[str]) -> DomainRow | None:
    """The row of one domain; None when it ended while we read (a transient one)."""
    guest = Guest(host, dom)
    lv_state, lv_reason = stats.get("state.state"), stats.get("state.reason")
    vcpus, max_kib = stats.get("vcpu.current"), stats.get("balloon.maximum")
    if lv_state is None or lv_reason is None or vcpus is None or max_kib is None:
        try:  # what the bulk read lacks, one domain at a time
            info = dom.info()
            lv_state, lv_reason = (dom.state(0) if lv_state is None or lv_reason is None
                                   else (lv_state, lv_reason))
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        vcpus = info[3] if vcpus is None else vcpus
        max_kib = info[1] if max_kib is None else max_kib
    state = classify(int(lv_state), int(lv_reason), has_managed_save=guest.name in saved)
    return DomainRow(guest, state, int(vcpus), int(max_kib) // 1024,
                     guest.name not in transient)
