"""One reading of a host's load figures, from libvirt's node and domain statistics.

``read_load`` asks a host, in a few calls, for what its load is made of: its memory
and CPU count (``virNodeGetInfo``), the CPU time its processors spent per mode since
boot (``virNodeGetCPUStats`` over all CPUs), and for every domain its state, current
memory and CPU time (the bulk domain statistics, ``virConnectGetAllDomainStats``; a
domain the bulk read says nothing of is read alone with ``virDomainGetInfo``). A
reading is raw counters at one instant of this machine's monotonic clock: the load is
the difference of two readings, worked out by ``services.load`` (pure arithmetic).
A driver without node CPU statistics gives ``node_cpu_ns`` None with the reason; no
figure is ever made up. Nothing here decides or waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtlife import errors
from virtlife.hypervisor.libvirt_api import LibvirtError, calling, libvirt, translate

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host

_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
          | libvirt.VIR_DOMAIN_STATS_BALLOON)
_ACTIVE_STATES = {libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED,
                  libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED}
# The node CPU modes whose time counts as busy, and those that count as not.
BUSY_MODES = ("user", "kernel")
IDLE_MODES = ("idle", "iowait")


@dataclass(frozen=True)
class DomainReading:
    uuid: str
    name: str
    active: bool  # running, paused or suspended: it holds memory on the host
    memory_kib: int  # its current memory (the balloon's, else libvirt's info)
    cpu_time_ns: int | None  # the CPU time it used since it started; None unknown


@dataclass(frozen=True)
class LoadReading:
    """A host's counters at ``at_s`` (this machine's ``time.monotonic``)."""

    host: str
    at_s: float
    total_memory_kib: int
    cpus: int
    node_cpu_ns: Mapping[str, int] | None  # per mode (user, kernel, idle, iowait)
    node_cpu_error: str  # why ``node_cpu_ns`` is None
    domains: tuple[DomainReading, ...]


def _node_cpu(conn: Any, name: str) -> tuple[dict[str, int] | None, str]:
    try:
        stats = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
    except LibvirtError as err:
        return None, str(translate(err, f"read the CPU statistics of {name}"))
    wanted = BUSY_MODES + IDLE_MODES
    if not all(mode in stats for mode in wanted):
        return None, (f"{name}'s CPU statistics lack "
                      + ", ".join(m for m in wanted if m not in stats))
    return {mode: int(stats[mode]) for mode in wanted}, ""


def _domain(dom: Any, stats: Mapping[str, Any]) -> DomainReading | None:
    """One domain's reading; None when it went away while we read."""
    state = stats.get("state.state")
    memory = stats.get("balloon.current")
    cpu = stats.get("cpu.time")
    try:
        if state is None or memory is None or cpu is None:
            info = dom.info()  # [state, max KiB, current KiB, vcpus, cpu time ns]
            state = info[0] if state is None else state
            memory = info[2] if memory is None else memory
            active = int(state) in _ACTIVE_STATES
            cpu = (info[4] if active else None) if cpu is None else cpu
        return DomainReading(dom.UUIDString(), dom.name(), int(state) in _ACTIVE_STATES,
                             int(memory), None if cpu is None else int(cpu))
    except LibvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def read_load(host: Host, clock: Callable[[], float] = time.monotonic) -> LoadReading:
    """``host``'s load counters now (see the module doc). ``HostUnreachable`` and the
    other translated errors when the host cannot be read at all."""
    with calling(f"read the load of {host.name}"):
        conn = host.conn
        info = conn.getInfo()  # [arch, memory MiB, cpus, ...]
        node, why = _node_cpu(conn, host.name)
        at = clock()
        found = []
        for dom, stats in conn.getAllDomainStats(_STATS, 0):
            reading = _domain(dom, stats)
            if reading is not None:
                found.append(reading)
    if int(info[1]) <= 0:
        raise errors.OperationFailed(f"cannot read the load of {host.name}: libvirt "
                                     f"reports {info[1]} MiB of memory")
    return LoadReading(host.name, at, int(info[1]) * 1024, int(info[2]), node, why,
                       tuple(sorted(found, key=lambda d: d.name)))
