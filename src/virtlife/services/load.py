"""Hosts' load figures: memory committed against total, and CPU over a short window.

A host's load is two figures, worked out here from two readings of its counters
(``hypervisor.load.read_load``) taken ``window_s`` apart:

- **memory**: the current memory of its active domains (running, paused, suspended)
  against the host's total, as a percentage;
- **CPU**: the share of the host's processor time spent busy (user and kernel
  against all modes, ``virNodeGetCPUStats``) between the readings, as a percentage;
  and each domain's CPU use in cores (its CPU time's growth over the wall time).

A figure the readings cannot give is None with the reason, never a guess: a driver
without node CPU statistics, counters that did not advance, a domain that started or
restarted between the readings. ``host_load`` and ``cpu_busy_pct`` are pure;
``sample_loads`` reads every host of a fleet twice (both readings of all hosts at
once), with the wait injectable (``sleep``) for tests. ``LoadSampler`` reads the hosts
in the background for a server, every ``SAMPLE_EVERY_S``, so that a ``/metrics`` scrape
reads no host (a scrape of 500 hosts would otherwise be 500 round trips).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from virtlife import errors
from virtlife.hypervisor.load import BUSY_MODES, IDLE_MODES, LoadReading, read_load
from virtlife.services.fleet import Fleet, HostProblem

__all__ = ["DEFAULT_WINDOW_S", "SAMPLE_EVERY_S", "HostLoad", "LoadReading", "LoadSampler",
           "LoadTracker", "VMLoad",
           "cpu_busy_pct", "host_load", "read_loads", "sample_loads"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 1.0
SAMPLE_EVERY_S = 15.0  # a server's background readings (Prometheus's default scrape)


@dataclass(frozen=True)
class VMLoad:
    uuid: str
    name: str
    active: bool
    memory_mib: float
    cpu_cores: float | None  # cores it kept busy over the window; None unknown


@dataclass(frozen=True)
class HostLoad:
    host: str
    total_memory_mib: float
    committed_mib: float  # the active domains' current memory
    cpus: int
    cpu_pct: float | None  # busy share of all its CPUs over the window; None unknown
    cpu_why: str = ""  # why ``cpu_pct`` is None
    window_s: float = 0.0
    vms: Mapping[str, VMLoad] = field(default_factory=dict)  # by UUID

    @property
    def memory_pct(self) -> float:
        return 100.0 * self.committed_mib / self.total_memory_mib

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "memory_pct": round(self.memory_pct, 1),
                "committed_mib": round(self.committed_mib),
                "total_memory_mib": round(self.total_memory_mib), "cpus": self.cpus,
                "cpu_pct": None if self.cpu_pct is None else round(self.cpu_pct, 1),
                "cpu_unknown": self.cpu_why or None, "window_s": round(self.window_s, 3)}


def cpu_busy_pct(first: Mapping[str, int] | None, second: Mapping[str, int] | None,
                 ) -> tuple[float | None, str]:
    """The busy share (%) of the node's CPU time between two readings of its counters,
    or None and why."""
    if first is None or second is None:
        return None, "the host gives no CPU statistics"
    busy = sum(second[m] - first[m] for m in BUSY_MODES)
    idle = sum(second[m] - first[m] for m in IDLE_MODES)
    if busy < 0 or idle < 0:
        return None, "the host's CPU counters went back (a reboot between the readings?)"
    if busy + idle == 0:
        return None, "the host's CPU counters did not advance over the window"
    return 100.0 * busy / (busy + idle), ""


def host_load(first: LoadReading, second: LoadReading) -> HostLoad:
    """The load of the host that ``first`` and then ``second`` read (``second`` gives the
    memory: the newer figure)."""
    if first.host != second.host:
        raise ValueError(f"readings of two hosts: {first.host} and {second.host}")
    window = second.at_s - first.at_s
    cpu, why = cpu_busy_pct(first.node_cpu_ns, second.node_cpu_ns)
    if cpu is None and first.node_cpu_ns is None:
        why = first.node_cpu_error or why
    before = {d.uuid: d for d in first.domains}
    vms: dict[str, VMLoad] = {}
    for dom in second.domains:
        old = before.get(dom.uuid)
        cores = None
        if (window > 0 and old is not None and old.cpu_time_ns is not None
                and dom.cpu_time_ns is not None and dom.cpu_time_ns >= old.cpu_time_ns
                and dom.active and old.active):
            cores = (dom.cpu_time_ns - old.cpu_time_ns) / (window * 1e9)
        vms[dom.uuid] = VMLoad(dom.uuid, dom.name, dom.active, dom.memory_kib / 1024, cores)
    committed = sum(v.memory_mib for v in vms.values() if v.active)
    return HostLoad(second.host, second.total_memory_kib / 1024, committed, second.cpus,
                    cpu, why, window, vms)


def sample_loads(fleet: Fleet, names: Iterable[str] | None = None, *,
                 window_s: float = DEFAULT_WINDOW_S,
                 sleep: Callable[[float], None] = time.sleep,
                 ) -> tuple[dict[str, HostLoad], list[HostProblem]]:
    """The load of every host (or of ``names``), read twice ``window_s`` apart, all
    hosts at once; a host that did not answer either time is a problem, never a zero."""
    wanted = list(names) if names is not None else None
    first, problems = fleet.each_host(read_load, wanted)
    sleep(window_s)
    second, later = fleet.each_host(read_load, sorted(first))
    loads = {name: host_load(first[name], second[name]) for name in sorted(second)}
    return loads, problems + later


def read_loads(fleet: Fleet, deadline_s: float | None = None) -> dict[str, LoadReading]:
    """One reading of every host that answers within ``deadline_s`` (the others are left
    out: no reading is no figure)."""
    readings, _ = fleet.each_host(read_load, deadline_s=deadline_s)
    return readings


class LoadTracker:
    """The load of each host between its last two readings, for a reader that comes back
    now and then (a ``/metrics`` scrape): the window is the time since the last call.
    A host's first reading gives its memory, and CPU None (no window yet)."""

    def __init__(self) -> None:
        self._last: dict[str, LoadReading] = {}

    def update(self, readings: Mapping[str, LoadReading]) -> dict[str, HostLoad]:
        loads = {name: host_load(self._last.get(name, reading), reading)
                 for name, reading in sorted(readings.items())}
        self._last = dict(readings)
        return loads


class LoadSampler:
    """The fleet's loads for a server: ``read`` (every host's reading) is called in the
    background every ``every_s`` (first at ``start``), and ``loads()`` gives the loads
    between the last two readings without reading any host. A host's CPU comes from
    the second reading on; one that stops answering drops out at the next reading (no
    reading is no figure). ``sample()`` takes one reading now (the loop's step)."""

    def __init__(self, read: Callable[[], Mapping[str, LoadReading]],
                 every_s: float = SAMPLE_EVERY_S) -> None:
        self._read = read
        self._every_s = every_s
        self._tracker = LoadTracker()
        self._loads: dict[str, HostLoad] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        readings = self._read()
        with self._lock:
            self._loads = self._tracker.update(readings)

    def loads(self) -> dict[str, HostLoad]:
        with self._lock:
            return dict(self._loads)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except errors.VirtlifeError as err:  # the store or inventory: next time
                log.info("cannot read the hosts' loads: %s", err)
            self._stop.wait(self._every_s)
