"""What ``/metrics`` says, in the Prometheus text exposition format (version 0.0.4),
written by ``prometheus_client``.

Gauges are read at scrape time from a fleet listing (a collector of our own): VMs per
host and state, and whether each host answered; and each host's load
(``services.load``): memory committed against total, and CPU busy between the
server's last two background readings (``LoadSampler``: a scrape reads no host; CPU is
absent until a host has two readings, never a made-up figure). Counters cover the operations this
server ran: how many ended with each outcome, and how long they took (a summary's
``_sum``/``_count``). Each app has a registry of its own (never the library's global
one: a process may hold several apps, as the tests do).

The CLI does not import this module on its cold path: ``prometheus_client`` loads only
with the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Summary, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from virtlife.services.fleet import FleetListing
from virtlife.services.load import HostLoad
from virtlife.states import VMState

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OPERATION_LABELS = ("operation", "outcome")

# The fleet as the server knows it now: its listing, and every host of the inventory.
FleetSource = Callable[[], tuple[FleetListing, Sequence[str]]]
# The hosts' latest loads (``services.load.LoadSampler.loads``).
LoadSource = Callable[[], Mapping[str, HostLoad]]


class _Fleet(Collector):
    """``virtlife_vms`` and ``virtlife_host_up``, from the listing at each scrape."""

    def __init__(self, source: FleetSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        listing, hosts = self._source()
        vms = GaugeMetricFamily("virtlife_vms", "VMs by host and state.",
                                labels=("host", "state"))
        per: dict[tuple[str, str], int] = {}
        for row in listing.rows:
            key = (row.host, row.state.state.value)
            per[key] = per.get(key, 0) + 1
        for host in listing.answered:
            for state in VMState:
                if state is not VMState.UNDEFINED:
                    vms.add_metric((host, state.value), per.get((host, state.value), 0))
        yield vms
        down = {p.host for p in listing.unreachable}
        up = GaugeMetricFamily("virtlife_host_up",
                               "Whether the host's libvirtd answered (1) or not.",
                               labels=("host",))
        for host in hosts:
            up.add_metric((host,), 0 if host in down else 1)
        yield up

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time: nothing to check at registration


class _Loads(Collector):
    """``virtlife_host_memory_percent`` and ``virtlife_host_cpu_percent``, from the
    latest loads (read in the background, not by the scrape)."""

    def __init__(self, source: LoadSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        loads = self._source()
        memory = GaugeMetricFamily(
            "virtlife_host_memory_percent",
            "Memory committed to the host's active VMs, in % of its total.", labels=("host",))
        cpu = GaugeMetricFamily(
            "virtlife_host_cpu_percent",
            "The host's CPU busy share between its last two readings, in %.",
            labels=("host",))
        for name, load in loads.items():
            memory.add_metric((name,), load.memory_pct)
            if load.cpu_pct is not None:
                cpu.add_metric((name,), load.cpu_pct)
        yield memory
        yield cpu

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """The registry of one app: the fleet's gauges and the operations' counters."""

    def __init__(self, fleet: FleetSource, loads: LoadSource | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Fleet(fleet))
        if loads is not None:
            self.registry.register(_Loads(loads))
        self._operations = Counter("virtlife_operations",
                                   "Operations this server ran, by outcome.",
                                   OPERATION_LABELS, registry=self.registry)
        self._seconds = Summary("virtlife_operation_seconds",
                                "How long those operations took.",
                                OPERATION_LABELS, registry=self.registry)

    def operation_done(self, operation: str, outcome: str, seconds: float) -> None:
        self._operations.labels(operation, outcome).inc()
        self._seconds.labels(operation, outcome).observe(seconds)

    def render(self) -> bytes:
        """The text a scrape gets (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
