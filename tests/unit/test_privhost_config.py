"""The parts of the private lab host (``virtlife.lab.privhost``) that need no namespace:
its config edits, its recorded state, process identity, the layout checks, and the
daemon paths that ``hostprep`` now takes as parameters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from virtlife.errors import LabError
from virtlife.lab import hostprep, privhost, reaper
from virtlife.lab.hostprep import DaemonPaths


def test_override_conf_comments_out_earlier_settings_and_appends_its_own() -> None:
    text = ('#host_uuid = "00000000-0000-0000-0000-000000000000"\n'
            'host_uuid = "11111111-1111-1111-1111-111111111111"\n'
            'cgroup_controllers = [ "cpu",\n    "memory" ]\n'
            'max_clients = 5000\n')
    out = privhost.override_conf(text, {"host_uuid": "abc", "cgroup_controllers": []},
                                 "private host t")
    assert out == ('#host_uuid = "00000000-0000-0000-0000-000000000000"\n'
                   '#host_uuid = "11111111-1111-1111-1111-111111111111"\n'
                   '#cgroup_controllers = [ "cpu",\n#    "memory" ]\n'
                   'max_clients = 5000\n'
                   '\n# --- private host t\n'
                   'host_uuid = "abc"\n'
                   'cgroup_controllers = [ ]\n')


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (True, "1"), ("a b", '"a b"'), (["x", "y"], '[ "x", "y" ]'), ([], "[ ]")])
def test_conf_values_are_written_as_libvirt_reads_them(value: privhost.ConfValue,
                                                       text: str) -> None:
    assert privhost._conf_value(value) == text


def test_a_conf_value_with_a_quote_is_refused() -> None:
    with pytest.raises(LabError, match="without quotes"):
        privhost._conf_value('say "hi"')


def test_state_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    state = privhost._State("a", "tok", "uuid-1", privhost.Proc(1, 2), privhost.Proc(3, 4),
                            {"libvirtd": privhost.Proc(5, 6)})
    privhost._write_state(tmp_path, state)
    assert privhost._read_state(tmp_path) == state
    (tmp_path / privhost.STATE_FILE).write_text("{not json")
    assert privhost._read_state(tmp_path) is None


def test_a_process_is_known_by_pid_and_start_time() -> None:
    me = privhost.Proc.of(os.getpid())
    assert me is not None and me.alive()
    assert not privhost.Proc(os.getpid(), me.start + 1).alive()  # a reused pid
    child = subprocess.Popen(["sleep", "30"])
    proc = privhost.Proc.of(child.pid)
    assert proc is not None and proc.alive()
    child.kill()
    child.wait()
    assert not proc.alive()


def test_a_zombie_is_not_alive_for_the_lab_nor_for_the_journal() -> None:
    from virtlife.procs import start_time
    from virtlife.store.journal import ProcessRef, is_dead, this_process

    child = subprocess.Popen(["sleep", "30"])
    start = start_time(child.pid)
    assert start is not None
    me = this_process()
    ref = ProcessRef(me.machine, me.boot_id, child.pid, start)
    assert not is_dead(ref)
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    assert start_time(child.pid) is None
    assert not privhost.Proc(child.pid, start).alive()
    assert is_dead(ref)
    child.wait()


def test_the_host_must_still_see_the_guest_and_images(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lies under /var/lib/libvirt, which the host replaces"):
        privhost._check_layout("a", tmp_path, tmp_path / "a",
                               [Path("/var/lib/libvirt/images/x")])
    privhost._check_layout("a", tmp_path, tmp_path / "a", [Path("/var/cache/virtlife")])


def test_the_state_directory_may_only_lie_under_run() -> None:
    with pytest.raises(LabError, match="lies under /etc/libvirt"):
        privhost._check_layout("a", Path("/etc/libvirt/lab"), Path("/etc/libvirt/lab/a"), [])
    privhost._check_layout("a", Path("/run/lab"), Path("/run/lab/a"), [])


def test_socket_paths_past_the_kernels_limit_are_refused() -> None:
    deep = Path("/tmp/" + "d" * 80)
    with pytest.raises(LabError, match="exceed 107 bytes"):
        privhost._check_layout("a", deep, deep / "a", [])


def test_a_bad_name_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="a name is 1-32 lower-case"):
        privhost.start("../x", state_dir=tmp_path / "lab")
    assert not (tmp_path / "lab").exists()


def test_a_fresh_host_inherits_no_domains_networks_pools_or_secrets() -> None:
    assert privhost._not_copied("/etc/libvirt", ["qemu", "storage", "secrets", "nwfilter",
                                                 "qemu.conf"]) == {"storage", "secrets"}
    assert privhost._not_copied("/etc/libvirt/qemu", ["vm1.xml", "networks", "autostart",
                                                      "README"]) == {
        "vm1.xml", "networks", "autostart"}


def test_uri_names_the_socket() -> None:
    assert privhost.host_uri(Path("/run/l/a/run/libvirt/libvirt-sock")) == \
        "qemu+unix:///system?socket=/run/l/a/run/libvirt/libvirt-sock"


def test_daemon_paths_default_to_this_machines_daemons() -> None:
    assert hostprep.LOCAL_DAEMONS.socket("libvirtd") == Path("/run/libvirt/libvirt-sock")
    assert hostprep.LOCAL_DAEMONS.socket("virtlogd") == Path("/run/libvirt/virtlogd-sock")
    assert hostprep.LOCAL_DAEMONS.pid_file("libvirtd") == Path("/run/libvirtd.pid")


def test_ensure_daemons_starts_a_lab_hosts_daemons_through_its_launcher(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = DaemonPaths(run_dir=tmp_path / "run", log_dir=tmp_path / "log",
                        launcher=("nsenter", "--target=42", "--mount", "--"))
    up: set[Path] = set()
    started: list[object] = []
    monkeypatch.setattr(hostprep, "accepts_unix", lambda sock: sock in up)
    monkeypatch.setattr(hostprep, "find_tool", lambda program: f"/usr/sbin/{program}")

    def start(daemon: str, exe: object, sock: Path, timeout: float) -> None:
        started.append(exe)
        up.add(sock)

    monkeypatch.setattr(hostprep, "_start_daemon", start)
    actions = hostprep.ensure_daemons(5.0, paths)
    assert started == [["nsenter", "--target=42", "--mount", "--", "/usr/sbin/virtlogd"],
                       ["nsenter", "--target=42", "--mount", "--", *reaper.command(),
                        "/usr/sbin/libvirtd"]]
    assert actions == [
        f"started virtlogd ({tmp_path}/run/libvirt/virtlogd-sock was absent)",
        f"started libvirtd ({tmp_path}/run/libvirt/libvirt-sock was absent)"]


def test_a_daemon_that_fails_to_start_points_at_its_hosts_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = DaemonPaths(run_dir=tmp_path / "run", log_dir=tmp_path / "log")
    monkeypatch.setattr(hostprep, "accepts_unix", lambda sock: False)
    monkeypatch.setattr(hostprep, "find_tool", lambda program: f"/usr/sbin/{program}")

    def fail(daemon: str, exe: object, sock: Path, timeout: float) -> None:
        raise LabError(f"cannot start {daemon}: boom")

    monkeypatch.setattr(hostprep, "_start_daemon", fail)
    with pytest.raises(LabError, match=rf"^cannot start virtlogd: boom; see {tmp_path}/log/"
                                       r"virtlogd\.log$"):
        hostprep.ensure_daemons(5.0, paths)


def test_a_host_in_this_network_namespace_gets_vnc_ports_of_its_own() -> None:
    from virtlife.lab.privhost import display_ports

    ports = display_ports("pytest-123", None)
    low, high = ports["remote_display_port_min"], ports["remote_display_port_max"]
    assert isinstance(low, int) and isinstance(high, int)
    assert 10000 <= low and high == low + 99 and high < 49152  # clear of 5900 and migration
    assert display_ports("pytest-123", None) == ports  # the same name, the same range
    assert display_ports("pytest-123", "vl-lab-a") == {}  # its own netns: its own ports
