"""Load figures (issue 18): the arithmetic of two readings (memory committed against
total, the node's CPU busy share, each domain's CPU in cores), a reading of the test
driver, and the tracker behind /metrics."""

from __future__ import annotations

import threading

import pytest

from virtlife.hypervisor import Host
from virtlife.hypervisor.load import DomainReading, LoadReading, read_load
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.load import (
    LoadSampler,
    LoadTracker,
    cpu_busy_pct,
    host_load,
    sample_loads,
)

GIB_KIB = 1024 * 1024


def reading(at: float, node: dict[str, int] | None, *doms: DomainReading,
            total_kib: int = 8 * GIB_KIB) -> LoadReading:
    return LoadReading("h", at, total_kib, 4, node, "" if node else "no stats", doms)


def node(busy: int, idle: int) -> dict[str, int]:
    return {"user": busy // 2, "kernel": busy - busy // 2, "idle": idle, "iowait": 0}


def test_cpu_busy_is_busy_time_against_all_time_between_readings() -> None:
    assert cpu_busy_pct(node(100, 900), node(400, 1600)) == (pytest.approx(30.0), "")


@pytest.mark.parametrize(("first", "second", "why"), [
    (None, None, "gives no CPU statistics"),
    (node(100, 900), node(100, 900), "did not advance"),
    (node(500, 900), node(100, 900), "went back"),
])
def test_cpu_busy_is_unknown_with_the_reason(first: dict[str, int] | None,
                                             second: dict[str, int] | None,
                                             why: str) -> None:
    value, reason = cpu_busy_pct(first, second)
    assert value is None and why in reason


def test_memory_counts_active_domains_and_cpu_cores_per_domain() -> None:
    web = DomainReading("u1", "web", True, 2 * GIB_KIB, 1_000_000_000)
    off = DomainReading("u2", "off", False, 2 * GIB_KIB, None)
    new = DomainReading("u3", "new", True, GIB_KIB, 50)
    first = reading(10.0, node(0, 0), web, off)
    second = reading(12.0, node(3_000, 5_000),
                     DomainReading("u1", "web", True, 2 * GIB_KIB, 4_000_000_000), off, new)
    load = host_load(first, second)
    assert load.committed_mib == pytest.approx(3072)  # web and new: off holds nothing
    assert load.memory_pct == pytest.approx(37.5)
    assert load.cpu_pct == pytest.approx(37.5)
    assert load.vms["u1"].cpu_cores == pytest.approx(1.5)  # 3 s of CPU in 2 s
    assert load.vms["u3"].cpu_cores is None  # not in the first reading: unknown
    assert load.vms["u2"].cpu_cores is None
    assert load.window_s == pytest.approx(2.0)


def test_readings_of_two_hosts_are_refused() -> None:
    with pytest.raises(ValueError, match="two hosts"):
        host_load(reading(0, None), LoadReading("other", 1, GIB_KIB, 1, None, "", ()))


def test_the_tracker_gives_cpu_from_the_second_reading_on() -> None:
    tracker = LoadTracker()
    first = tracker.update({"h": reading(0.0, node(0, 0))})
    assert first["h"].cpu_pct is None and first["h"].memory_pct == pytest.approx(0)
    second = tracker.update({"h": reading(1.0, node(250, 750))})
    assert second["h"].cpu_pct == pytest.approx(25.0)


def test_the_test_driver_reads_memory_and_domain_cpu() -> None:
    with Host.open("t", "test:///default") as host:
        got = read_load(host)
        info = host.conn.getInfo()
    assert got.total_memory_kib == int(info[1]) * 1024 and got.cpus == int(info[2])
    assert got.node_cpu_ns is not None and set(got.node_cpu_ns) == {
        "user", "kernel", "idle", "iowait"}
    test = [d for d in got.domains if d.name == "test"]
    assert len(test) == 1 and test[0].cpu_time_ns is not None
    if test[0].active:
        assert test[0].memory_kib > 0


def test_sample_loads_waits_the_window_through_the_sleep_given() -> None:
    slept: list[float] = []
    with Fleet([HostRef("t", "test:///default")]) as fleet:
        loads, problems = sample_loads(fleet, window_s=0.25, sleep=slept.append)
    assert slept == [0.25] and problems == []
    load = loads["t"]
    assert load.total_memory_mib > 0 and 0 <= load.memory_pct <= 100
    # the test driver's node counters stand still: its CPU is unknown, and says why
    assert load.cpu_pct is None and "did not advance" in load.cpu_why


def test_metrics_show_memory_at_once_and_cpu_from_the_second_reading() -> None:
    from virtlife.api.metrics import Metrics
    from virtlife.services.fleet import FleetListing

    readings = iter([{"h": reading(0.0, node(0, 0), DomainReading(
                         "u1", "web", True, 2 * GIB_KIB, 0))},
                     {"h": reading(1.0, node(400, 600), DomainReading(
                         "u1", "web", True, 2 * GIB_KIB, 10))}])
    sampler = LoadSampler(lambda: next(readings))
    metrics = Metrics(lambda: (FleetListing([], [], ["h"]), ["h"]), sampler.loads)
    assert "virtlife_host_memory_percent{" not in metrics.render().decode()  # none yet
    sampler.sample()
    first = metrics.render().decode()
    assert 'virtlife_host_memory_percent{host="h"} 25.0' in first
    assert 'virtlife_host_cpu_percent{host="h"}' not in first
    assert metrics.render().decode() == first  # a scrape reads no host
    sampler.sample()
    second = metrics.render().decode()
    assert 'virtlife_host_cpu_percent{host="h"} 40.0' in second


def test_the_sampler_reads_in_the_background_until_closed() -> None:
    read = threading.Event()
    calls: list[int] = []

    def reader() -> dict[str, LoadReading]:
        calls.append(1)
        read.set()
        return {"h": reading(0.0, node(0, 0))}

    sampler = LoadSampler(reader, every_s=3600.0)
    sampler.start()
    try:
        assert read.wait(5), "the first reading is taken at start"
    finally:
        sampler.close()
    assert calls == [1] and "h" in sampler.loads()
