"""Placement (issue 18): which host a VM goes to, and why a host is not one. Unit tests
of each refusal and of the choice, then hypothesis properties over random fleets:
never over capacity (the reserve included), never onto a host in maintenance,
unreachable or unknown, the same answer whatever the order of the hosts, a reason for
every VM that fits nowhere, and never more migrations at once than the slots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement_support import CPU, host_facts, pairs_for, to_place, vm_facts
from virtlife import config, errors
from virtlife.services.migration.checks import (
    Status,
    run_checks,
)
from virtlife.services.placement import (
    HostState,
    PairFacts,
    Placement,
    PlacementLimits,
    Plan,
    Unplaced,
    VMToPlace,
    Why,
    place,
    plan,
)


def host(name: str, free: int | None = 4096, total: int | None = 8192,
         **more: object) -> HostState:
    return replace(HostState(name, total, free), **more)


HOSTS = ["a", "b", "c", "d"]
PAIRS = pairs_for(HOSTS, ("web1", "web2", "web3"))


# -- the choice ---------------------------------------------------------------------------

def test_the_host_with_most_free_memory_after_placement_is_chosen() -> None:
    got = place(to_place("web1"), [host("a"), host("b", 3000), host("c", 5000),
                                   host("d", 4000)], PAIRS)
    assert isinstance(got, Placement)
    assert (got.destination, got.free_after_mib) == ("c", 4488)
    assert got.report.ok and got.report.destination == "c"
    assert got.per_host["a"].kind is Why.SOURCE and set(got.per_host) == {"a"}


def test_ties_go_to_fewest_vms_then_to_the_name() -> None:
    hosts = [host("a"), host("d", vms=3), host("c", vms=1), host("b", vms=1)]
    got = place(to_place("web1"), hosts, PAIRS)
    assert isinstance(got, Placement) and got.destination == "b"
    got = place(to_place("web1"), [*hosts[:2], replace(hosts[2], vms=0), hosts[3]], PAIRS)
    assert isinstance(got, Placement) and got.destination == "c"


# -- refusals, one host at a time ---------------------------------------------------------

@pytest.mark.parametrize(("state", "kind", "says"), [
    (host("b", maintenance=True), Why.MAINTENANCE, "b is in maintenance"),
    (host("b", active=False), Why.NOT_ACTIVE, "b is not active"),
    (host("b", reachable=False, error="connection refused"), Why.UNREACHABLE,
     "cannot reach b: connection refused"),
    (host("b", reachable=None), Why.UNKNOWN, "unknown: whether b answers"),
    (host("b", free=None), Why.UNKNOWN, "unknown: how much free memory b has"),
    (host("b", total=None), Why.UNKNOWN, "unknown: how much memory b has"),
    (host("b", incoming=2), Why.NO_SLOT, "b receives 2 migration(s) already, at most 2"),
    (host("b", free=1300), Why.NO_MEMORY, "b has 1300 MiB free: web1 needs 512 MiB, and "
     "820 MiB (10% of 8192 MiB) stay in reserve"),
])
def test_a_host_that_cannot_take_the_vm_is_refused_with_why(
        state: HostState, kind: Why, says: str) -> None:
    got = place(to_place("web1"), [host("a"), state], PAIRS)
    assert isinstance(got, Unplaced)
    assert got.per_host["b"].kind is kind and got.per_host["b"].why.startswith(says)
    assert got.kind is kind and got.reason == f"web1 cannot go to b: {got.per_host['b'].why}"


def test_the_reserve_is_kept_to_the_mebibyte() -> None:
    reserve = PlacementLimits().reserve_mib(8192)  # 820
    fits = place(to_place("web1", 1000), [host("a"), host("b", 1000 + reserve)], PAIRS)
    assert isinstance(fits, Placement) and fits.free_after_mib == reserve
    short = place(to_place("web1", 1000), [host("a"), host("b", 999 + reserve)], PAIRS)
    assert isinstance(short, Unplaced) and short.kind is Why.NO_MEMORY
    none = place(to_place("web1", 1000), [host("a"), host("b", 999 + reserve)], PAIRS,
                 PlacementLimits(reserve_pct=0))
    assert isinstance(none, Placement)


def test_a_failed_check_refuses_with_its_fix() -> None:
    pairs = pairs_for(HOSTS, ("web1",), networks={})
    got = place(to_place("web1"), [host("a"), host("b")], pairs)
    assert isinstance(got, Unplaced) and got.kind is Why.CHECKS
    refusal = got.per_host["b"]
    assert refusal.why == "network default: b has no network default"
    assert refusal.fix == "define network default on b as on the source"
    assert refusal.report is not None and not refusal.report.ok


def test_an_unknown_check_is_not_a_yes() -> None:
    pairs = pairs_for(HOSTS, ("web1",), clock=None)
    assert run_checks(vm_facts("web1"), pairs["a", "b"].source,
                      replace(pairs["a", "b"].destination, cpu="identical")).ok
    got = place(to_place("web1"), [host("a"), host("b")], pairs)
    assert isinstance(got, Unplaced) and got.per_host["b"].kind is Why.UNKNOWN
    assert got.per_host["b"].why == "unknown: host clocks: offset unknown (not measured)"
    assert "NTP" in got.per_host["b"].fix


def test_a_cpu_or_pair_not_gathered_is_unknown() -> None:
    vm = replace(to_place("web1"), cpu="another cpu")
    got = place(vm, [host("a"), host("b")], PAIRS)
    assert isinstance(got, Unplaced)
    assert got.per_host["b"].why.startswith("unknown: guest CPU: not compared")
    got = place(to_place("web1"), [host("a"), host("b"), host("z", 9000)], PAIRS)
    assert isinstance(got, Placement) and got.destination == "b"
    assert got.per_host["z"].why == ("unknown: the pre-flight facts from a to z were not "
                                     "gathered")


def test_a_vm_that_fits_nowhere_gets_a_reason_naming_each_host() -> None:
    hosts = [host("a"), host("b", maintenance=True), host("c", free=100),
             host("d", free=200), host("e", reachable=False)]
    got = place(to_place("web1"), hosts, PAIRS)
    assert isinstance(got, Unplaced) and got.kind is Why.NO_MEMORY
    assert got.reason == ("no host can take web1: not enough memory on c, d; in "
                          "maintenance on b; unreachable on e")
    assert set(got.per_host) == {"a", "b", "c", "d", "e"}
    alone = place(to_place("web1"), [host("a")], PAIRS)
    assert isinstance(alone, Unplaced) and alone.kind is Why.NO_HOST
    assert alone.reason == "no host but a to move web1 to"


def test_the_source_must_be_known_and_have_a_free_slot() -> None:
    got = place(to_place("web1", source="x"), [host("a"), host("b")], PAIRS)
    assert isinstance(got, Unplaced) and got.kind is Why.UNKNOWN
    assert got.reason.startswith("unknown: web1's host x is not among the hosts")
    busy = place(to_place("web1"), [host("a", outgoing=2), host("b")], PAIRS)
    assert isinstance(busy, Unplaced) and busy.kind is Why.NO_SLOT
    assert busy.reason.startswith("a sends 2 migration(s) already, at most 2 at once")
    assert "placement.max_outgoing" in busy.reason
    free = place(to_place("web1"), [host("a", outgoing=2), host("b")], PAIRS, slots=False)
    assert isinstance(free, Placement)


def test_an_offline_move_takes_no_free_memory_but_must_fit_the_host() -> None:
    got = place(to_place("web1", 4000, offline=True), [host("a"), host("b", free=10)], PAIRS)
    assert isinstance(got, Unplaced) and got.kind is Why.NO_MEMORY  # b is in its reserve
    got = place(to_place("web1", 4000, offline=True), [host("a"), host("b", free=900)],
                PAIRS)
    assert isinstance(got, Placement) and got.free_after_mib == 900
    big = place(to_place("web1", 9000, offline=True), [host("a"), host("b", free=900)],
                PAIRS)
    assert isinstance(big, Unplaced) and big.per_host["b"].kind is Why.CHECKS
    assert "could never start there" in big.per_host["b"].why


def test_hosts_given_twice_are_refused() -> None:
    with pytest.raises(errors.InvalidInput, match="host b is given twice"):
        place(to_place("web1"), [host("a"), host("b"), host("b")], PAIRS)


# -- plans --------------------------------------------------------------------------------

def test_a_plan_counts_each_placement_before_the_next() -> None:
    vms = [to_place("web1", 3000), to_place("web2", 3000), to_place("web3", 3000)]
    got = plan(vms, [host("a"), host("b", 6000), host("c", 5000)], PAIRS,
               PlacementLimits(max_outgoing=3))
    assert [(p.vm, p.destination, p.free_after_mib) for p in got.placements] == [
        ("web1", "b", 3000), ("web2", "c", 2000)]  # web2 would leave b under its reserve
    assert [(u.vm, u.kind) for u in got.unplaced] == [("web3", Why.NO_MEMORY)]
    by_name = {h.name: h for h in got.hosts}
    assert (by_name["b"].free_memory_mib, by_name["b"].vms, by_name["b"].incoming) == \
        (3000, 1, 1)
    assert by_name["a"].outgoing == 2


def test_a_plan_keeps_to_the_slots_and_without_slots_lists_every_move() -> None:
    vms = [to_place(f"web{i}", 100) for i in (1, 2, 3)]
    hosts = [host("a"), host("b"), host("c", 9000)]
    got = plan(vms, hosts, PAIRS)
    assert [(p.vm, p.destination) for p in got.placements] == [("web1", "c"), ("web2", "c")]
    assert [(u.vm, u.kind) for u in got.unplaced] == [("web3", Why.NO_SLOT)]
    whole = plan(vms, hosts, PAIRS, slots=False)
    assert [p.destination for p in whole.placements] == ["c", "c", "c"]
    assert {h.name: (h.incoming, h.outgoing) for h in whole.hosts}["c"] == (0, 0)


def test_a_plan_does_not_send_two_vms_of_one_name_to_one_host() -> None:
    twin = replace(to_place("web1", 100, source="b"),
                   facts=replace(vm_facts("web1", 100), uuid="11111111-0000-4000-8000-1"))
    pairs = {**PAIRS, ("b", "c"): PairFacts(host_facts("b"), host_facts("c", ("web1",)),
                                            {CPU: ("identical", "")})}
    got = plan([to_place("web1", 100), twin], [host("a", 0), host("b", free=0), host("c")],
               pairs)
    assert [(p.vm, p.source, p.destination) for p in got.placements] == [("web1", "a", "c")]
    assert got.unplaced[0].per_host["c"].why.startswith(
        "name and UUID free: c has another VM named web1")


# -- settings -----------------------------------------------------------------------------

def test_placement_settings_are_read_with_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    assert PlacementLimits.from_settings(config.load_settings(path)) == PlacementLimits(10.0, 2, 2)
    path.write_text("[placement]\nreserve_pct = 5\nmax_outgoing = 1\nmax_incoming = 3\n")
    assert PlacementLimits.from_settings(config.load_settings(path)) == PlacementLimits(5.0, 1, 3)


@pytest.mark.parametrize(("text", "says"), [
    ("[placement]\nreserve_pct = 100\n", "placement.reserve_pct in"),
    ("[placement]\nreserve_pct = -1\n", "placement.reserve_pct in"),
    ("[placement]\nmax_outgoing = 0\n", "placement.max_outgoing in"),
    ("[placement]\nmax_incoming = 2.5\n", "placement.max_incoming in"),
    ("[placement]\nmax_incoming = true\n", "placement.max_incoming in"),
    ("[placement]\nslots = 2\n", "unknown setting(s) slots"),
    ("placement = 3\n", "are tables"),
])
def test_bad_placement_settings_are_refused(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(errors.InvalidInput) as err:
        config.load_settings(path)
    assert says in str(err.value)


def test_the_checks_mark_their_unknown_facts() -> None:
    facts = pairs_for(["a", "b"], ("web1",))["a", "b"]
    dst = replace(facts.destination, cpu=None, cpu_detail="no answer", clock=None,
                  free_memory_mib=None)
    report = run_checks(vm_facts("web1"), facts.source, dst)
    assert [c.name for c in report.unknowns] == ["guest CPU", "free memory", "host clocks"]
    assert all(c.status is Status.WARN for c in report.unknowns)
    assert report.ok  # a migration may go on past them; placement may not


# -- properties ---------------------------------------------------------------------------

NAMES = ["h0", "h1", "h2", "h3", "h4", "h5"]


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[HostState], list[VMToPlace], dict[
        tuple[str, str], PairFacts], PlacementLimits]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=6, unique=True))
    hosts = []
    for name in names:
        total = draw(st.sampled_from([8192, 4096, 16384, 512] * 3 + [None]))
        free = draw(st.one_of(st.integers(0, total or 16384), st.none())
                    if draw(st.integers(0, 9)) == 9 else st.integers(0, total or 16384))
        rarely = st.sampled_from([False] * 5 + [True])  # most hosts can take VMs
        busy = st.sampled_from([0] * 4 + [1, 2, 3])
        hosts.append(HostState(
            name, total, free, vms=draw(st.integers(0, 4)), active=not draw(rarely),
            maintenance=draw(rarely),
            reachable=draw(st.sampled_from([True] * 8 + [False, None])),
            outgoing=draw(busy), incoming=draw(busy)))
    vm_names = [f"vm{i}" for i in range(draw(st.integers(1, 8)))]
    vms = [to_place(v, draw(st.integers(64, 6000)),
                    draw(st.sampled_from(names * 4 + ["gone"])), offline=draw(st.booleans()))
           for v in vm_names]
    pairs = {}
    for a in names:
        for b in names:
            if a == b or draw(st.integers(0, 19)) == 19:
                continue  # now and then a pair not gathered
            dst = host_facts(b, tuple(vm_names))
            flaw = draw(st.sampled_from(["none"] * 15 + ["network", "clock", "cpu"]))
            if flaw == "network":
                dst = replace(dst, networks={})
            elif flaw == "clock":
                dst = replace(dst, clock=None)
            cpus = {} if flaw == "cpu" else {CPU: ("identical", "")}
            pairs[a, b] = PairFacts(host_facts(a), dst, cpus)
    limits = PlacementLimits(draw(st.sampled_from([0.0, 10.0, 25.0])), draw(st.integers(1, 6)),
                    draw(st.integers(1, 4)))
    return hosts, vms, pairs, limits


def _check_plan(got: Plan, hosts: list[HostState], vms: list[VMToPlace],
                pairs: dict[tuple[str, str], PairFacts], limits: PlacementLimits,
                slots: bool = True) -> None:
    before = {h.name: h for h in hosts}
    assert [v.name for v in vms] == sorted(
        [p.vm for p in got.placements] + [u.vm for u in got.unplaced],
        key=[v.name for v in vms].index)  # every VM once: placed or with a reason
    need = {v.name: v.need_mib for v in vms}
    taken = {h: 0 for h in before}
    incoming = {h: 0 for h in before}
    outgoing = {h: 0 for h in before}
    for p in got.placements:
        dst = before[p.destination]
        assert dst.active and not dst.maintenance and dst.reachable is True
        assert dst.free_memory_mib is not None and dst.total_memory_mib is not None
        assert (p.source, p.destination) in pairs and p.report.ok
        assert not p.report.unknowns and p.source != p.destination
        taken[p.destination] += need[p.vm]
        incoming[p.destination] += 1
        outgoing[p.source] += 1
    for name, h in before.items():
        if incoming[name]:
            assert h.free_memory_mib is not None and h.total_memory_mib is not None
            left = h.free_memory_mib - taken[name]
            assert left >= limits.reserve_mib(h.total_memory_mib)  # never over capacity
            assert h.incoming + incoming[name] <= limits.max_incoming or not slots
        if outgoing[name] and slots:
            assert h.outgoing + outgoing[name] <= limits.max_outgoing
    for u in got.unplaced:
        assert u.reason
        if not u.reason.startswith((f"{u.source} sends", f"unknown: {u.vm}'s host")):
            assert set(u.per_host) == set(before)  # a reason from every host


@given(fleets(), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_plans_keep_every_bound_and_ignore_the_order_of_hosts(
        fleet: tuple[list[HostState], list[VMToPlace],
                     dict[tuple[str, str], PairFacts], PlacementLimits],
        rnd: object) -> None:
    hosts, vms, pairs, limits = fleet
    got = plan(vms, hosts, pairs, limits)
    _check_plan(got, hosts, vms, pairs, limits)
    shuffled = list(hosts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan(vms, shuffled, pairs, limits) == got == plan(vms, hosts, pairs, limits)


@given(fleets())
@settings(max_examples=150, deadline=None)
def test_a_plan_without_slots_on_healthy_hosts_still_keeps_the_memory(
        fleet: tuple[list[HostState], list[VMToPlace],
                     dict[tuple[str, str], PairFacts], PlacementLimits]) -> None:
    hosts, vms, pairs, limits = fleet
    healthy = [replace(h, active=True, maintenance=False, reachable=True,
                       total_memory_mib=16384, free_memory_mib=(h.free_memory_mib or 0) + 4096)
               for h in hosts]  # so that many VMs share a host and its memory runs out
    many = [replace(v, facts=replace(v.facts, name=f"{v.name}-{i}",
                                     uuid=f"{v.facts.uuid[:-1]}{i}"))
            for i in range(3) for v in vms]  # the same disks: the pairs know them
    got = plan(many, healthy, pairs, limits, slots=False)
    _check_plan(got, healthy, many, pairs, limits, slots=False)


@given(fleets())
@settings(max_examples=150, deadline=None)
def test_place_picks_the_best_host_it_did_not_refuse(
        fleet: tuple[list[HostState], list[VMToPlace],
                     dict[tuple[str, str], PairFacts], PlacementLimits]) -> None:
    hosts, vms, pairs, limits = fleet
    vm = vms[0]
    got = place(vm, hosts, pairs, limits)
    by_name = {h.name: h for h in hosts}
    if isinstance(got, Unplaced):
        assert got.reason
        return
    eligible = set(by_name) - set(got.per_host)
    assert got.destination in eligible

    def rank(name: str) -> tuple[int, int, str]:
        h = by_name[name]
        assert h.free_memory_mib is not None
        return (-(h.free_memory_mib - vm.need_mib), h.vms, name)

    assert rank(got.destination) == min(rank(n) for n in eligible)
