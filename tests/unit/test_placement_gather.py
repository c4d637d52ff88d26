"""Placement's facts from libvirt (``migration.gather.gather_pairs``, ``host_state``) on
two test-driver hosts: the pair's facts are asked once for all the source's VMs, not once
per VM, and judge each VM as the per-VM gatherer of ``migrate --check`` does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from support import NODE2_URI, NODE_URI
from virtlife.hypervisor import Host
from virtlife.hypervisor import hostfacts as hf
from virtlife.services.migration import gather as gathering
from virtlife.services.migration.checks import run_checks
from virtlife.services.placement import Placement, Unplaced, Why, plan

POOL = "<pool type='dir'><name>p</name><target><path>/srv/p</path></target></pool>"


def domain(name: str, uuid_end: str) -> str:
    return f"""<domain type='test'><name>{name}</name>
<uuid>6c3d2a1b-0000-4000-8000-0000000{uuid_end}</uuid><memory unit='MiB'>64</memory>
<os><type>hvm</type></os><devices><disk type='file' device='disk'>
<source file='/srv/p/{name}.qcow2'/><target dev='vda'/></disk></devices></domain>"""


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    """lab-a with three VMs in pool p, and lab-b with pool p at the same path."""
    with Host.open("lab-a", NODE_URI, events=False) as a, \
            Host.open("lab-b", NODE2_URI, events=False) as b:
        pool = a.conn.storagePoolCreateXML(POOL, 0)
        b.conn.storagePoolCreateXML(POOL, 0)
        for i, name in enumerate(("web1", "web2", "web3")):
            pool.createXML(f"<volume><name>{name}.qcow2</name><capacity>1024</capacity>"
                           "</volume>", 0)
            a.conn.defineXML(domain(name, f"0000{i}")).create()
        yield a, b


def counted(monkeypatch: pytest.MonkeyPatch, calls: Counter[str], name: str) -> None:
    real: Callable[..., Any] = getattr(hf, name)

    def call(*args: Any) -> Any:
        calls[name] += 1
        return real(*args)

    monkeypatch.setattr(hf, name, call)


def test_the_pair_is_asked_once_for_every_vm_of_the_source(
        hosts: tuple[Host, Host], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = hosts
    guests = [a.lookup(n) for n in ("web1", "web2", "web3")]
    calls: Counter[str] = Counter()
    for name in ("cpu_runs", "shared_storage", "hypervisor", "clock_offset", "domains"):
        counted(monkeypatch, calls, name)
    got = gathering.gather_pairs(a, guests, {"lab-a": a, "lab-b": b})
    assert [vm.name for vm in got.vms] == ["web1", "web2", "web3"]
    assert set(got.pairs) == {("lab-a", "lab-b")} and got.failed == {}
    assert len({vm.cpu for vm in got.vms}) == 1  # one guest CPU definition among them
    assert calls == Counter(cpu_runs=1, shared_storage=1, hypervisor=2, domains=2,
                            clock_offset=1)  # the source and lab-b once each; the test
    # driver's pools give no file times, so the clock stops at the source's
    pair = got.pairs["lab-a", "lab-b"]
    assert set(pair.destination.disks) == {f"/srv/p/{n}.qcow2" for n in ("web1", "web2",
                                                                           "web3")}
    assert set(pair.cpus) == {got.vms[0].cpu}

    calls.clear()  # what `migrate --check` asks, VM by VM, for the same three
    per_vm = [gathering.gather(g, b, "lab-b") for g in guests]
    assert calls["cpu_runs"] == 6 and calls["shared_storage"] == 3

    lab_b = gathering.host_state("lab-b", b)
    assert lab_b.free_memory_mib == 0  # the test driver's: give it some to reach the checks
    states = [gathering.host_state("lab-a", a), replace(lab_b, free_memory_mib=2048)]
    result = plan(got.vms, states, got.pairs, slots=False)
    assert len(result.placements) + len(result.unplaced) == 3
    for vm, (facts, src, dst) in zip(got.vms, per_vm, strict=True):
        alone = run_checks(facts, src, replace(dst, free_memory_mib=2048), vm.options)
        judged = next(r for r in (*result.placements, *result.unplaced) if r.vm == vm.name)
        report = judged.report if isinstance(judged, Placement) else \
            judged.per_host["lab-b"].report
        assert report is not None
        assert [(c.name, c.status) for c in report.checks] == \
            [(c.name, c.status) for c in alone.checks]
    # the test driver offers no "test" domains, compares no CPU, and its disks are other
    # storage: every VM stays, each with the checks that failed and their fixes
    assert [(u.vm, u.kind) for u in result.unplaced] == [
        (n, Why.CHECKS) for n in ("web1", "web2", "web3")]
    assert "disk vda" in result.unplaced[0].reason
    assert "--copy-storage all" in result.unplaced[0].per_host["lab-b"].fix



def test_host_state_reads_memory_and_domains_and_says_unreachable(
        hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    state = gathering.host_state("lab-a", a, maintenance=True, outgoing=1)
    facts = hf.hypervisor(a)
    assert (state.total_memory_mib, state.vms, state.maintenance, state.outgoing) == \
        (facts.total_memory_mib, len(hf.domains(a)), True, 1)
    assert state.free_memory_mib is not None and state.reachable is True
    gone = gathering.host_state("lab-c", None, "connection refused")
    assert (gone.reachable, gone.error, gone.free_memory_mib) == \
        (False, "connection refused", None)


def test_an_unreachable_destination_is_a_fact_and_placement_says_so(
        hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    got = gathering.gather_pairs(a, [a.lookup("web1")], {"lab-c": None},
                                 {"lab-c": "connection refused"})
    assert not got.pairs["lab-a", "lab-c"].destination.reachable
    states = [gathering.host_state("lab-a", a),
              gathering.host_state("lab-c", None, "connection refused")]
    result = plan(got.vms, states, got.pairs)
    assert isinstance(result.unplaced[0], Unplaced)
    assert result.unplaced[0].kind is Why.UNREACHABLE
    assert result.unplaced[0].reason == ("web1 cannot go to lab-c: cannot reach lab-c: "
                                         "connection refused")
