"""One host's domains in a few round trips: the bulk read behind the fleet listing.

``list_domains`` reads every domain's state, vCPUs and maximum memory without asking
any QEMU. libvirt answers the vCPU and balloon statistics groups of an inactive domain
from its definition, but queries QEMU's monitor for a running one (~2 ms per group and
domain), so the read starts with ``getAllDomainStats(STATE)`` of the active domains:

- none (most hosts of a fleet): one ``getAllDomainStats(STATE | VCPU | BALLOON)`` of
  every domain, which asks no QEMU (only a domain started in between is asked);
- some: ``getAllDomainStats(STATE | VCPU | BALLOON)`` of the inactive domains, then
  ``getAllDomainStats(STATE)`` of the active ones again. The last sighting of a domain
  wins: a domain started during the read shows in the last call, and one stopped
  during it (in the first call only) is read alone (``state`` and ``info``). An active
  domain's vCPUs and maximum memory come from ``info()``, which libvirt answers from
  the live definition (the numbers the two groups would give).

Then the managed-save listing (only when a domain is shut off: only those can have an
image) and the transient listing (only when one is active: a transient domain exists
only then). A host of shut-off domains costs three round trips, as many as before this
split, and a running domain no QEMU query. ``NOWAIT``: a domain busy with a job never
delays the answer. A driver without bulk statistics, or without the two groups (the
test driver), gets ``info()`` per domain for what is missing. A domain that disappears
while it is read is left out. It classifies states (``states.classify``) and holds no
policy: which VMs to show is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtlife.hypervisor.guest import Guest
from virtlife.hypervisor.libvirt_api import calling, libvirt
from virtlife.states import LV_SHUTOFF, StateInfo, classify

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host

STATE_STATS = libvirt.VIR_DOMAIN_STATS_STATE
# Answered from the definition for an inactive domain; by QEMU for a running one.
SIZE_STATS = libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
# Without a job on a busy domain: its state is still reported.
NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
ACTIVE = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | NOWAIT
INACTIVE = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE | NOWAIT
_NO_BULK = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            libvirt.VIR_ERR_INVALID_ARG}


@dataclass(frozen=True, slots=True)
class DomainRow:
    """One domain as the bulk read saw it."""

    guest: Guest
    state: StateInfo
    vcpus: int
    max_memory_mib: int
    persistent: bool


@dataclass
class _Seen:
    """A domain's last sighting: its (state, reason) and (vCPUs, maximum KiB), each
    None when that read did not give it (then asked of the domain itself)."""

    dom: Any
    state: tuple[int, int] | None
    size: tuple[int, int] | None = None

    @property
    def shut_off(self) -> bool:
        return self.state is not None and self.state[0] == LV_SHUTOFF


def list_domains(host: Host) -> list[DomainRow]:
    """Every domain of ``host`` with its state, vCPUs, maximum memory and persistence."""
    conn = host.conn
    with calling(f"list VMs on {host.name}"):
        seen = _read(conn)
        off = any(s.state is None or s.shut_off for s in seen)
        on = any(not s.shut_off for s in seen)
        saved = _names(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE) if off else set()
        transient = _names(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT) if on else set()
        classified: dict[tuple[int, int, bool], StateInfo] = {}  # a host has few kinds
        rows = [_row(host, s, saved, transient, classified) for s in seen]
    return [row for row in rows if row is not None]


def managed_saved(host: Host) -> set[str]:
    """The names of ``host``'s domains that have a managed-save image (one round trip)."""
    conn = host.conn
    with calling(f"list the managed-saved VMs on {host.name}"):
        return _names(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)


def _names(conn: Any, flags: int) -> set[str]:
    return {d.name() for d in conn.listAllDomains(flags)}


def _read(conn: Any) -> list[_Seen]:
    """Every domain's last sighting over the reads (see the module doc)."""
    try:
        before = conn.getAllDomainStats(STATE_STATS, ACTIVE)
    except libvirt.libvirtError as err:
        if err.get_error_code() not in _NO_BULK:
            raise
        return [_Seen(d, None) for d in conn.listAllDomains(0)]  # no bulk statistics
    if not before:  # nothing runs: the groups are read from the definitions
        return [_Seen(dom, _state_of(stats), _size_of(stats)) for dom, stats
                in conn.getAllDomainStats(STATE_STATS | SIZE_STATS, NOWAIT)]
    inactive = conn.getAllDomainStats(STATE_STATS | SIZE_STATS, INACTIVE)
    after = conn.getAllDomainStats(STATE_STATS, ACTIVE)
    seen: dict[str, _Seen] = {}
    for dom, _stats in before:  # stopped since, unless seen below: read alone
        seen[dom.name()] = _Seen(dom, None)
    for dom, stats in inactive:
        seen[dom.name()] = _Seen(dom, _state_of(stats), _size_of(stats))
    for dom, stats in after:
        seen[dom.name()] = _Seen(dom, _state_of(stats))
    return list(seen.values())


def _state_of(stats: Mapping[str, Any]) -> tuple[int, int] | None:
    state, reason = stats.get("state.state"), stats.get("state.reason")
    return None if state is None or reason is None else (int(state), int(reason))


def _size_of(stats: Mapping[str, Any]) -> tuple[int, int] | None:
    vcpus, max_kib = stats.get("vcpu.current"), stats.get("balloon.maximum")
    return None if vcpus is None or max_kib is None else (int(vcpus), int(max_kib))


def _row(host: Host, seen: _Seen, saved: set[str], transient: set[str],
         classified: dict[tuple[int, int, bool], StateInfo]) -> DomainRow | None:
    """The row of one domain; None when it ended while we read (a transient one).
    ``classified``: the states classified so far (a ``StateInfo`` is immutable, so the
    rows of one kind share one)."""
    dom, state, size = seen.dom, seen.state, seen.size
    guest = Guest(host, dom)
    if state is None or size is None:
        try:  # what the bulk reads lack, one domain at a time (no QEMU query)
            info = dom.info()
            if state is None:
                lv_state, lv_reason = dom.state(0)
                state = (int(lv_state), int(lv_reason))
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        if size is None:
            size = (int(info[3]), int(info[1]))
    # classify counts a managed-save image only for a shut-off domain
    key = (state[0], state[1], guest.name in saved)
    kind = classified.get(key)
    if kind is None:
        kind = classified[key] = classify(state[0], state[1], has_managed_save=key[2])
    return DomainRow(guest, kind, size[0], size[1] // 1024, guest.name not in transient)
