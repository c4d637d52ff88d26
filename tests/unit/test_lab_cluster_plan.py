"""The multi-host lab's pure parts (``virtlife.lab.labnet`` and ``virtlife.lab.cluster``):
its address plan, what clashes with this machine's network, what a sweep deletes,
when a lab is up, stale or someone else's, its hosts' config text, and which inventory
rows are the lab's."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from virtlife.errors import LabError
from virtlife.lab import cluster, hostprep, labnet, privhost, reaper
from virtlife.lab.cluster import HostStatus, LabStatus, Record
from virtlife.lab.labnet import Link, NetView
from virtlife.lab.privhost import Proc

# --------------------------------------------------------------------------- the plan


def test_the_plan_names_each_host_by_letter_with_its_address_and_uri() -> None:
    p = labnet.plan(3)
    assert p.segment == IPv4Network("10.253.7.0/24")
    assert (p.bridge, p.bridge_address) == ("vl-lab0", IPv4Address("10.253.7.1"))
    assert [(h.name, h.netns, h.veth, str(h.address), h.uri) for h in p.hosts] == [
        ("lab-a", "vl-lab-a", "vl-lab-a", "10.253.7.11", "qemu+tcp://10.253.7.11/system"),
        ("lab-b", "vl-lab-b", "vl-lab-b", "10.253.7.12", "qemu+tcp://10.253.7.12/system"),
        ("lab-c", "vl-lab-c", "vl-lab-c", "10.253.7.13", "qemu+tcp://10.253.7.13/system"),
    ]
    assert p.links == ("vl-lab0", "vl-lab-a", "vl-lab-b", "vl-lab-c")
    assert all(len(name) <= 15 for name in p.links)  # IFNAMSIZ


def test_the_plan_takes_another_segment() -> None:
    p = labnet.plan(2, "192.168.77.0/24")
    assert [str(h.address) for h in p.hosts] == ["192.168.77.11", "192.168.77.12"]
    assert str(p.bridge_address) == "192.168.77.1"


@pytest.mark.parametrize(("n", "segment", "message"), [
    (0, "10.253.7.0/24", "give 1 to 26"),
    (27, "10.253.7.0/24", "give 1 to 26"),
    (2, "10.253.7.0/33", "cannot use '10.253.7.0/33'"),
    (2, "10.253.7.5/24", "has host bits set"),
    (2, "8.8.8.0/24", "give a private IPv4 network"),
    (2, "10.0.0.0/8", "give a private IPv4 network of /16 or smaller"),
    (5, "10.253.7.0/28", "cannot fit 5 host\\(s\\) into 10.253.7.0/28"),
])
def test_a_plan_that_cannot_be_is_refused(n: int, segment: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        labnet.plan(n, segment)


# --------------------------------------------------------------------------- clashes


def test_a_machine_without_the_labs_names_and_segment_has_no_clash() -> None:
    view = NetView(links=(Link("lo"), Link("eth0")),
                   addresses=(("eth0", IPv4Interface("192.0.2.2/24")),),
                   routes=((IPv4Network("192.0.2.0/24"), "eth0"),),
                   netns={"other": None})
    assert labnet.clashes(labnet.plan(2), view) == []


def test_clashes_name_each_interface_namespace_address_and_route_in_the_way() -> None:
    view = NetView(
        links=(Link("vl-lab0"), Link("eth1")),
        addresses=(("eth1", IPv4Interface("10.253.7.40/24")),),
        routes=((IPv4Network("10.253.7.0/24"), "eth1"), (IPv4Network("10.0.0.0/8"), "tun0")),
        netns={"vl-lab-b": None})
    assert labnet.clashes(labnet.plan(2), view) == [
        "an interface named vl-lab0 exists and is not the lab's",
        "a network namespace named vl-lab-b exists and is not the lab's",
        "eth1 has the address 10.253.7.40/24 in 10.253.7.0/24",
        "a route to 10.253.7.0/24 via eth1 overlaps 10.253.7.0/24",
        "a route to 10.0.0.0/8 via tun0 overlaps 10.253.7.0/24",
    ]


def test_a_default_route_and_a_marked_leftover_are_no_clash() -> None:
    view = NetView(links=(Link("vl-lab0", "virtlife-lab old"),),
                   addresses=(("vl-lab0", IPv4Interface("10.253.7.1/24")),),
                   routes=((IPv4Network("0.0.0.0/0"), "eth0"),
                           (IPv4Network("10.253.7.0/24"), "vl-lab0")),
                   netns={"vl-lab-a": "virtlife-lab old"})
    assert labnet.clashes(labnet.plan(2), view) == []


def test_ip_json_output_is_read_as_links_addresses_and_routes() -> None:
    links = json.dumps([{"ifname": "lo"}, {"ifname": "vl-lab0", "ifalias": "virtlife-lab t"}])
    assert labnet.parse_links(links) == (Link("lo"), Link("vl-lab0", "virtlife-lab t"))
    addrs = json.dumps([{"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.0.2.2", "prefixlen": 24}]}])
    assert labnet.parse_addresses(addrs) == (("eth0", IPv4Interface("192.0.2.2/24")),)
    routes = json.dumps([{"dst": "default", "dev": "eth0"},
                         {"dst": "192.0.2.0/24", "dev": "eth0"},
                         {"type": "local", "dst": "127.0.0.1", "dev": "lo"}])
    assert labnet.parse_routes(routes) == ((IPv4Network("192.0.2.0/24"), "eth0"),
                                           (IPv4Network("127.0.0.1/32"), "lo"))
    assert labnet.parse_links("") == ()  # `ip -j netns list` prints nothing when empty


# --------------------------------------------------------------------------- sweep


def test_the_sweep_deletes_what_any_dead_lab_marked_and_keeps_a_live_labs() -> None:
    view = NetView(links=(Link("eth0"), Link("vl-lab0", "virtlife-lab dead"),
                          Link("vl-lab-a", "virtlife-lab dead"),
                          Link("vl-lab-x", "virtlife-lab live")),
                   netns={"vl-lab-a": "virtlife-lab dead", "vl-lab-x": "virtlife-lab live",
                          "mine": None})
    gone = labnet.leftovers(view, None, keep="live")
    assert gone.links == ("vl-lab0", "vl-lab-a")
    assert gone.netns == ("vl-lab-a",)
    assert gone.foreign == ()


def test_the_sweep_deletes_what_a_killed_up_named_before_marking_it() -> None:
    view = NetView(links=(Link("vl-lab0"), Link("vl-lab-a", "someone's")),
                   netns={"vl-lab-a": None, "vl-lab-b": "a note of someone"})
    gone = labnet.leftovers(view, labnet.plan(2))
    assert gone.links == ("vl-lab0",)
    assert gone.netns == ("vl-lab-a",)
    assert gone.foreign == ("interface vl-lab-a (alias \"someone's\")",
                            "network namespace vl-lab-b (lo alias 'a note of someone')")


def test_without_a_record_the_sweep_touches_only_marked_things() -> None:
    view = NetView(links=(Link("vl-lab0"),), netns={"vl-lab-a": None})
    assert labnet.leftovers(view, None) == labnet.Leftovers((), (), ())


def test_the_mark_holds_the_token() -> None:
    assert labnet.marked_token(labnet.mark("abc")) == "abc"
    assert labnet.marked_token("virtlife-lab") is None
    assert labnet.marked_token("my bridge") is None
    assert labnet.marked_token(None) is None


# --------------------------------------------------------------------------- condition


def _host(name: str = "lab-a", *, pids: dict[str, int] | None = None,
          reachable: bool = True) -> HostStatus:
    running = {"holder": 1, "virtlogd": 2, "libvirtd": 3} if pids is None else pids
    return HostStatus(name, "10.253.7.11", "qemu+tcp://10.253.7.11/system", "vl-lab-a",
                      "u-1", running, reachable)


def _record(size: int = 2, owner: Proc | None = None) -> Record:
    return Record("tok", size, "10.253.7.0/24", "vl-lab0", Path("/var/cache/x/lab-shared"),
                  owner, "2026-01-01T00:00:00+00:00", complete=True)


def test_a_lab_whose_hosts_all_run_and_answer_is_up() -> None:
    assert cluster.condition(None, False, [_host(), _host("lab-b")]) == ("up", "")
    assert cluster.condition(Proc(7, 1), True, [_host()]) == ("up", "")


def test_a_lab_whose_owner_ended_is_stale_whatever_its_hosts_do() -> None:
    assert cluster.condition(Proc(7, 1), False, [_host()]) == (
        "stale", "its owner pid 7 has ended")


def test_a_lab_whose_up_did_not_finish_is_stale() -> None:
    assert cluster.condition(None, False, [_host()], complete=False) == (
        "stale", "its `lab up` did not finish (or is still running)")


def test_a_lab_with_a_host_down_is_broken_while_its_owner_runs_else_stale() -> None:
    hosts = [_host(pids={"holder": 1}), _host("lab-b", reachable=False)]
    reason = ("lab-a: virtlogd, libvirtd not running; "
              "lab-b: libvirtd does not answer at 10.253.7.11:16509")
    assert cluster.condition(Proc(7, 1), True, hosts) == (
        "broken", reason + " (its owner pid 7 is running)")
    assert cluster.condition(None, False, hosts) == ("stale", reason)


def _status(state: str, owner: Proc | None = None, size: int = 2) -> LabStatus:
    return LabStatus(state, "why", _record(size, owner), (_host(),))


@pytest.mark.parametrize(("current", "n", "owner", "action", "reason"), [
    (None, 2, None, "create", ""),
    (_status("stale", Proc(7, 1)), 2, None, "create", "cleaning up an earlier lab: why"),
    (_status("up"), 2, None, "keep", "the lab is already up (2 hosts)"),
    (_status("up", Proc(7, 1)), 2, Proc(7, 1), "keep", "the lab is already up (2 hosts)"),
    (_status("broken", Proc(7, 1)), 2, Proc(7, 1), "create", "rebuilding the lab: why"),
    (_status("up"), 3, None, "refuse", "the lab is up with 2 hosts on 10.253.7.0/24, not 3"),
    (_status("up", Proc(7, 1)), 2, None, "refuse", "a lab of 2 hosts is up (owned by pid 7)"),
    (_status("broken", Proc(7, 1)), 2, Proc(8, 1), "refuse", "owned by pid 7"),
    (_status("up"), 2, Proc(8, 1), "refuse", "(started without --owner-pid)"),
])
def test_up_keeps_rebuilds_or_refuses_the_lab_that_is_there(
        current: LabStatus | None, n: int, owner: Proc | None, action: str,
        reason: str) -> None:
    decision = cluster.decide_up(current, labnet.plan(n), owner)
    assert decision.action == action
    assert reason in decision.reason if reason else decision.reason == ""


def test_the_record_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    record = _record(owner=Proc(7, 123))
    cluster._write_record(tmp_path, record)
    assert cluster.read_record(tmp_path) == record
    assert record.plan == labnet.plan(2)
    (tmp_path / cluster.LAB_FILE).write_text('{"token": "t"}')
    assert cluster.read_record(tmp_path) is None


def test_status_as_json_names_the_shared_pool_and_each_host() -> None:
    data = _status("up").as_dict()
    assert data["pool"] == {"name": "lab-shared", "path": "/var/cache/x/lab-shared",
                            "shared": True}
    assert data["bridge_address"] == "10.253.7.1"
    assert data["hosts"][0] == {
        "name": "lab-a", "address": "10.253.7.11", "uri": "qemu+tcp://10.253.7.11/system",
        "netns": "vl-lab-a", "host_uuid": "u-1",
        "pids": {"holder": 1, "virtlogd": 2, "libvirtd": 3}, "missing": [],
        "reachable": True}


# --------------------------------------------------------------------------- config


def test_a_lab_host_listens_on_tcp_at_its_address_and_migrates_there() -> None:
    address = IPv4Address("10.253.7.12")
    libvirtd = privhost.override_conf('#listen_tcp = 1\nlisten_addr = "0.0.0.0"\n',
                                      cluster.libvirtd_settings(address), "lab-b")
    assert libvirtd.endswith('# --- lab-b\nlisten_tls = 0\nlisten_tcp = 1\n'
                             'auth_tcp = "none"\nlisten_addr = "10.253.7.12"\n')
    assert '#listen_addr = "0.0.0.0"' in libvirtd
    qemu = privhost.override_conf("", {**privhost.QEMU_SETTINGS,
                                       **cluster.qemu_settings(address)}, "lab-b")
    assert 'migration_address = "10.253.7.12"\nmigration_host = "10.253.7.12"\n' in qemu
    assert "cgroup_controllers = [ ]" in qemu


def test_a_hosts_network_namespace_and_listening_are_recorded(tmp_path: Path) -> None:
    state = privhost._State("lab-a", "tok", "uuid-1", None, privhost.Proc(3, 4), {},
                            netns="vl-lab-a", listen=True)
    privhost._write_state(tmp_path, state)
    again = privhost._read_state(tmp_path)
    assert again == state
    assert again is not None and again.namespaces == ("--mount", "--net")
    holder = privhost.Proc.of(os.getpid())  # a live process stands in for the holder
    assert holder is not None
    state.holder = holder
    paths = privhost.PrivateHost(tmp_path, state).daemon_paths
    assert paths.launcher == ("nsenter", f"--target={holder.pid}", "--mount", "--net", "--")
    assert paths.libvirtd_args == ("--listen",)


def test_a_host_recorded_before_network_namespaces_reads_as_without_one(
        tmp_path: Path) -> None:
    (tmp_path / privhost.STATE_FILE).write_text(json.dumps({
        "name": "a", "token": "t", "host_uuid": "u", "owner": None, "holder": None,
        "daemons": {}}))
    state = privhost._read_state(tmp_path)
    assert state is not None and (state.netns, state.listen) == (None, False)
    assert state.namespaces == ("--mount",)


def test_a_network_namespace_that_does_not_exist_is_refused_before_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privhost, "_check_can_run", lambda name: None)
    with pytest.raises(LabError, match="there is no network namespace 'vl-nope'"):
        privhost.start("a", state_dir=tmp_path / "lab", netns="vl-nope")
    assert not (tmp_path / "lab").exists()


def test_libvirtd_gets_its_options_after_the_launcher(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = hostprep.DaemonPaths(run_dir=tmp_path, launcher=("nsenter", "--"),
                                 libvirtd_args=("--listen",))
    started: list[object] = []
    up: set[Path] = set()
    monkeypatch.setattr(hostprep, "accepts_unix", lambda sock: sock in up)
    monkeypatch.setattr(hostprep, "find_tool", lambda program: f"/usr/sbin/{program}")

    def start(daemon: str, exe: object, sock: Path, timeout: float) -> None:
        started.append(exe)
        up.add(sock)

    monkeypatch.setattr(hostprep, "_start_daemon", start)
    hostprep.ensure_daemons(5.0, paths)
    assert started == [["nsenter", "--", "/usr/sbin/virtlogd"],
                       ["nsenter", "--", *reaper.command(), "/usr/sbin/libvirtd", "--listen"]]


def test_the_shared_pool_must_stay_visible_to_every_host() -> None:
    with pytest.raises(LabError, match="lies under /var/lib/libvirt, which every lab host"):
        cluster._check_can_run(Path("/var/lib/libvirt/images/lab"))
    with pytest.raises(LabError, match="give an absolute path"):
        cluster._check_can_run(Path("/tmp/a pool"))


# --------------------------------------------------------------------------- inventory


def test_inventory_rows_of_the_lab_are_told_from_a_users_hosts() -> None:
    segments = [labnet.SEGMENT]
    assert cluster.is_lab_row("lab-a", "qemu+tcp://10.253.7.11/system", segments)
    assert not cluster.is_lab_row("lab-a", "qemu+tcp://10.0.0.5/system", segments)
    assert not cluster.is_lab_row("lab-a", "qemu+ssh://10.253.7.11/system", segments)
    assert not cluster.is_lab_row("hv1", "qemu+tcp://10.253.7.11/system", segments)
    assert not cluster.is_lab_row("lab-ab", "qemu+tcp://10.253.7.11/system", segments)


def test_up_adds_the_missing_hosts_removes_a_larger_labs_and_refuses_a_name_taken() -> None:
    rows = [("local", "qemu:///system"), ("lab-a", "qemu+tcp://10.253.7.11/system"),
            ("lab-c", "qemu+tcp://10.253.7.13/system")]
    changes = cluster.inventory_changes(rows, labnet.plan(2))
    assert changes.add == (("lab-b", "qemu+tcp://10.253.7.12/system"),)
    assert changes.remove == ("lab-c",)
    assert changes.conflicts == ()
    taken = cluster.inventory_changes([("lab-b", "qemu+ssh://hv2/system")], labnet.plan(2))
    assert taken.conflicts == (
        "the inventory has a host lab-b at qemu+ssh://hv2/system, not at the lab's "
        "qemu+tcp://10.253.7.12/system; remove it (virtlife host remove lab-b)",)


def test_the_postcopy_sysctl_is_checked(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sysctl = tmp_path / "unprivileged_userfaultfd"
    monkeypatch.setattr(hostprep, "USERFAULTFD_SYSCTL", sysctl)
    assert cluster._postcopy_note() is None  # no such sysctl: nothing to say
    sysctl.write_text("1\n")
    assert cluster._postcopy_note() is None
    sysctl.write_text("0\n")
    note = cluster._postcopy_note()
    assert note is not None and note.startswith("vm.unprivileged_userfaultfd is 0: "
                                                "post-copy migration will fail")


def test_down_keeps_a_pool_that_holds_files_and_removes_what_the_lab_made_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netns_dir = tmp_path / "netns"
    monkeypatch.setattr(labnet, "NETNS_DIR", netns_dir)
    pool = tmp_path / "lab-shared"
    pool.mkdir()
    (pool / "vm1.qcow2").write_bytes(b"")
    netns_dir.mkdir()
    record = Record("t", 2, "10.253.7.0/24", "vl-lab0", pool, None, "now",
                    netns_dir_made=True)
    assert cluster._tidy(record) == [f"kept {pool}: it holds 1 file(s), e.g. vm1.qcow2",
                                     f"removed {netns_dir}"]
    (pool / "vm1.qcow2").unlink()
    netns_dir.mkdir()
    (netns_dir / "someone-elses").write_text("")
    assert cluster._tidy(record) == [f"removed {pool}"]  # /run/netns is in use: kept
    assert netns_dir.is_dir()
