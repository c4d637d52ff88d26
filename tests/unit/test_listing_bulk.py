"""The bulk read behind the listing (``hypervisor.listing``) on libvirt's test driver:
states, reasons, vCPUs, memory, managed-save and transient domains; no vCPU or balloon
statistics asked of an active domain (for QEMU those query its monitor); the reads
that fill what the driver lacks; domains that start, stop or vanish mid-read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support import NODE_URI
from virtlife.hypervisor import Host
from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.hypervisor.listing import DomainRow, list_domains

SIZE_GROUPS = libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON
TRANSIENT_XML = """<domain type='test'><name>vm-transient</name>
<memory unit='MiB'>96</memory><vcpu>3</vcpu><os><type>hvm</type></os></domain>"""


class Recorder:
    """A connection that records the bulk calls made on it (and which domains each
    returned), optionally runs ``between`` after the first one, and can fill the vCPU
    and balloon groups the test driver leaves empty (as QEMU's driver does: from the
    definition)."""

    def __init__(self, conn: Any, *, fill_groups: bool = False,
                 between: Callable[[], None] | None = None) -> None:
        self._conn = conn
        self.fill_groups = fill_groups
        self.between = between
        self.calls: list[tuple[int, int, list[str]]] = []  # stats, flags, domains

    def getAllDomainStats(self, stats: int, flags: int = 0) -> list[tuple[Any, dict[str, Any]]]:
        records = self._conn.getAllDomainStats(stats, flags)
        if self.fill_groups and stats & SIZE_GROUPS:
            for dom, values in records:
                info = dom.info()
                values.update({"vcpu.current": info[3], "balloon.maximum": info[1]})
        self.calls.append((stats, flags, sorted(d.name() for d, _v in records)))
        if self.between is not None:
            between, self.between = self.between, None
            between()
        return list(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def host() -> Iterator[Host]:
    with Host.open("t", NODE_URI, events=False) as h:
        yield h


def _rows(host: Host, conn: Any) -> dict[str, DomainRow]:
    class Wrapped:  # the Host as list_domains sees it, on the recording connection
        name = host.name

        def __getattr__(self, attr: str) -> Any:
            return getattr(host, attr)

    Wrapped.conn = conn  # type: ignore[attr-defined]
    return {row.guest.name: row for row in list_domains(Wrapped())}  # type: ignore[arg-type]


def _view(rows: dict[str, DomainRow]) -> dict[str, tuple[str, int, int, bool]]:
    return {name: (str(r.state), r.vcpus, r.max_memory_mib, r.persistent)
            for name, r in rows.items()}


EXPECTED = {
    "vm-running": ("running (unknown)", 1, 128, True),
    "vm-paused": ("paused (unknown)", 1, 128, True),
    "vm-saved": ("saved (managed save)", 2, 256, True),
    "vm-off": ("shut off (unknown)", 1, 128, True),
    "vm-crashed": ("crashed (unknown)", 1, 128, True),
    "vm-pmsusp": ("pmsuspended (unknown)", 1, 128, True),
}


def test_states_reasons_sizes_managed_save_and_persistence(host: Host) -> None:
    host.conn.createXML(TRANSIENT_XML, 0)
    rows = _rows(host, Recorder(host.conn))
    assert _view(rows) == EXPECTED | {"vm-transient": ("running (booted)", 3, 96, False)}


def test_the_rows_match_the_per_domain_calls(host: Host) -> None:
    rows = _rows(host, Recorder(host.conn))
    for dom in host.conn.listAllDomains(0):
        _st, max_kib, _mem, vcpus, _cpu = dom.info()
        row = rows[dom.name()]
        assert (row.vcpus, row.max_memory_mib) == (vcpus, max_kib // 1024)
        assert row.persistent == bool(dom.isPersistent())


def test_no_vcpu_or_balloon_statistics_are_asked_of_an_active_domain(host: Host) -> None:
    conn = Recorder(host.conn, fill_groups=True)
    assert _view(_rows(host, conn)) == EXPECTED
    active = {d.name() for d in host.conn.listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
    assert active  # the node has running, paused, crashed and suspended domains
    sized = [names for stats, _flags, names in conn.calls if stats & SIZE_GROUPS]
    assert sized == [["vm-off", "vm-saved"]]  # the inactive ones, in one call
    assert not active & {n for names in sized for n in names}


def test_a_host_with_nothing_active_is_read_in_one_statistics_call(host: Host) -> None:
    for dom in host.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        dom.destroy()
    conn = Recorder(host.conn, fill_groups=True)
    rows = _rows(host, conn)
    assert [(stats & SIZE_GROUPS, names) for stats, _f, names in conn.calls] == [
        (0, []), (SIZE_GROUPS, sorted(EXPECTED))]
    assert _view(rows)["vm-saved"] == ("saved (managed save)", 2, 256, True)
    assert {str(r.state) for n, r in rows.items() if n not in ("vm-saved", "vm-off")} == {
        "shut off (destroyed)"}


def test_a_driver_without_bulk_statistics_is_read_per_domain(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoBulk(Recorder):
        def getAllDomainStats(self, stats: int, flags: int = 0) -> Any:
            raise libvirt.libvirtError("this function is not supported")

    monkeypatch.setattr(libvirt.libvirtError, "get_error_code",
                        lambda _self: libvirt.VIR_ERR_NO_SUPPORT)
    assert _view(_rows(host, NoBulk(host.conn))) == EXPECTED


def test_a_domain_undefined_during_the_read_is_left_out(host: Host) -> None:
    conn = Recorder(host.conn, between=lambda: host.conn.lookupByName("vm-off").undefine())
    rows = _rows(host, conn)
    assert "vm-off" not in rows
    assert _view(rows) == {k: v for k, v in EXPECTED.items() if k != "vm-off"}


def test_a_transient_domain_that_ends_during_the_read_is_left_out(host: Host) -> None:
    host.conn.createXML(TRANSIENT_XML, 0)
    conn = Recorder(host.conn,
                    between=lambda: host.conn.lookupByName("vm-transient").destroy())
    assert _view(_rows(host, conn)) == EXPECTED


def test_a_domain_stopped_during_the_read_is_read_alone(host: Host) -> None:
    conn = Recorder(host.conn, between=lambda: host.conn.lookupByName("vm-running").destroy())
    rows = _rows(host, conn)
    assert _view(rows)["vm-running"] == ("shut off (destroyed)", 1, 128, True)
    assert _view(rows) == EXPECTED | {"vm-running": ("shut off (destroyed)", 1, 128, True)}


def test_a_domain_started_during_the_read_is_listed_running(host: Host) -> None:
    conn = Recorder(host.conn, between=lambda: host.conn.lookupByName("vm-off").create())
    assert _view(_rows(host, conn)) == EXPECTED | {"vm-off": ("running (booted)", 1, 128,
                                                              True)}
