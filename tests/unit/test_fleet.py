"""The fleet over several test-driver hosts, one of them unreachable."""

from __future__ import annotations

import time

import pytest

from support import NODE2_URI, NODE_URI, UNREACHABLE_URI
from virtlife import errors
from virtlife.services.fleet import Fleet, HostRef, split_ref


def _fleet(*refs: HostRef, timeout: float = 10.0) -> Fleet:
    return Fleet(refs, connect_timeout_s=timeout)


def test_list_shows_every_reachable_host_and_names_the_unreachable() -> None:
    with _fleet(HostRef("a", NODE_URI), HostRef("b", NODE2_URI),
                HostRef("down", UNREACHABLE_URI),
                HostRef("gone", "test:///nonexistent/node.xml")) as fleet:
        listing = fleet.list_vms()
    seen = {(r.host, r.name): str(r.state) for r in listing.rows}
    assert seen[("a", "vm-saved")] == "saved (managed save)"
    assert seen[("a", "vm-crashed")] == "crashed (unknown)"
    assert seen[("a", "vm-pmsusp")] == "pmsuspended (unknown)"
    assert seen[("b", "db1")] == "shut off (unknown)"
    assert len([r for r in listing.rows if r.host == "a"]) == 6
    assert len([r for r in listing.rows if r.host == "b"]) == 2
    assert [p.host for p in listing.unreachable] == ["down", "gone"]
    assert "Connection refused" in listing.unreachable[0].message
    assert listing.answered == ["a", "b"]


def test_a_listing_where_no_host_answered_says_so() -> None:
    with _fleet(HostRef("down", UNREACHABLE_URI)) as fleet:
        listing = fleet.list_vms()
    assert listing.rows == [] and listing.answered == []
    assert [p.host for p in listing.unreachable] == ["down"]


def test_list_without_all_hides_inactive_vms() -> None:
    with _fleet(HostRef("a", NODE_URI)) as fleet:
        names = {r.name for r in fleet.list_vms(include_inactive=False).rows}
    assert names == {"vm-running", "vm-paused", "vm-crashed", "vm-pmsusp"}


def test_list_of_one_host() -> None:
    with _fleet(HostRef("a", NODE_URI), HostRef("b", NODE2_URI)) as fleet:
        rows = fleet.list_vms(host="b").rows
    assert {r.host for r in rows} == {"b"}


def test_hosts_are_asked_concurrently() -> None:
    # each slow host costs its own delay; asked in turn, three would take three delays
    delay = 0.3

    def slow(_host: object) -> int:
        time.sleep(delay)
        return 1

    with _fleet(HostRef("a", NODE_URI), HostRef("b", NODE2_URI),
                HostRef("c", "test:///default")) as fleet:
        t0 = time.monotonic()
        results, problems = fleet.each_host(slow)  # type: ignore[arg-type]
        elapsed = time.monotonic() - t0
    assert results == {"a": 1, "b": 1, "c": 1} and problems == []
    assert elapsed < 3 * delay


def test_a_host_that_does_not_answer_in_time_is_reported() -> None:
    with _fleet(HostRef("a", NODE_URI), timeout=0.2) as fleet:
        _results, problems = fleet.each_host(lambda h: time.sleep(2))
    assert problems and "did not answer within" in problems[0].message


def test_name_on_one_host_resolves_without_the_host_part() -> None:
    with _fleet(HostRef("a", NODE_URI), HostRef("b", NODE2_URI)) as fleet:
        guest = fleet.resolve("db1")
        assert (guest.host.name, guest.name) == ("b", "db1")


def test_name_on_two_hosts_is_ambiguous_and_lists_both() -> None:
    with _fleet(HostRef("a", NODE_URI), HostRef("b", NODE2_URI)) as fleet:
        with pytest.raises(errors.AmbiguousName) as err:
            fleet.resolve("vm-running")
        assert err.value.candidates == ["a/vm-running", "b/vm-running"]
        assert fleet.resolve("b/vm-running").host.name == "b"


def test_unknown_name_mentions_unreachable_hosts() -> None:
    with _fleet(HostRef("a", NODE_URI), HostRef("down", UNREACHABLE_URI)) as fleet:
        with pytest.raises(errors.VMNotFound, match=r"unreachable: down"):
            fleet.resolve("ghost")


def test_unknown_host_prefix_is_host_not_found() -> None:
    with _fleet(HostRef("a", NODE_URI)) as fleet:
        with pytest.raises(errors.HostNotFound, match="no host named zz"):
            fleet.resolve("zz/vm-off")


@pytest.mark.parametrize(("ref", "expected"), [
    ("web1", (None, "web1")), ("h1/web1", ("h1", "web1")),
    # a host that only a -c URI names is called by that URI; a VM name has no "/"
    ("qemu:///system/web1", ("qemu:///system", "web1")),
    ("qemu+tcp://10.0.0.1/system/web1", ("qemu+tcp://10.0.0.1/system", "web1")),
])
def test_split_ref(ref: str, expected: tuple[str | None, str]) -> None:
    assert split_ref(ref) == expected


@pytest.mark.parametrize("ref", ["/web1", "h1/", "qemu:///system/"])
def test_split_ref_rejects_half_names(ref: str) -> None:
    with pytest.raises(errors.VMNotFound):
        split_ref(ref)


def test_a_host_closed_by_its_user_is_replaced_by_a_new_one() -> None:
    with _fleet(HostRef("a", NODE_URI)) as fleet:
        first = fleet.host("a")
        first.close()
        second = fleet.host("a")
        assert second is not first and not second.closed


def test_the_same_host_object_serves_every_call() -> None:
    with _fleet(HostRef("a", NODE_URI)) as fleet:
        assert fleet.host("a") is fleet.host("a") is fleet.resolve("vm-off").host


def test_one_vm_defined_on_two_hosts_is_named_where_it_runs() -> None:
    """After a move with --keep-source: the VM runs at a, a shut-off copy of it (same
    UUID) is defined at b. Its name and its UUID name the running one; two different
    VMs of one name stay ambiguous, as does one VM running nowhere."""
    uuid = "11111111-1111-1111-1111-111111111111"
    with _fleet(HostRef("a", NODE_URI), HostRef("b", NODE2_URI)) as fleet:
        b = fleet.host("b")
        b.conn.lookupByName("vm-running").destroy()  # b's own VM of that name goes
        b.conn.lookupByName("vm-running").undefine()
        b.conn.defineXML(f"<domain type='test'><name>vm-running</name><uuid>{uuid}</uuid>"
                         "<memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>")
        for ref in ("vm-running", uuid, uuid.replace("-", "").upper()):
            guest = fleet.resolve(ref)
            assert (guest.host.name, guest.name, guest.uuid()) == ("a", "vm-running", uuid)
        assert fleet.resolve("b/vm-running").host.name == "b"  # the copy, by its host
        fleet.host("a").conn.lookupByName("vm-running").destroy()  # runs nowhere now
        with pytest.raises(errors.AmbiguousName) as err:
            fleet.resolve(uuid)
        assert err.value.candidates == ["a/vm-running", "b/vm-running"]
