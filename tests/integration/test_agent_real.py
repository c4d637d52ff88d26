"""``virtlife agent VM ...`` against the real qemu-ga in the test guest, checking real values.

One running test guest serves the commands that only read or that put back what they
change (module scope); each error case and each change of the VM's life has its own.
Values are checked against what the guest itself says through ``exec`` (its mounts,
its addresses, its /etc/shadow) or against this machine's clock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from support import VIRTLIFE
from virtlife import config
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def virtlife(*args: str, stdin: str | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, env=os.environ.copy(), check=False)


def ok(*args: str, stdin: str | None = None) -> str:
    run = virtlife(*args, stdin=stdin)
    assert run.returncode == 0, f"{args}: exit {run.returncode}: {run.stderr}"
    return run.stdout


def remove(name: str) -> None:
    virtlife("destroy", name)
    virtlife("undefine", name, "--managed-save", "--snapshots-metadata")
    (config.images_dir() / f"{name}.qcow2").unlink(missing_ok=True)


def guest_sh(vm: str, script: str) -> str:
    """Run a shell script in the guest through the agent; its stdout."""
    return ok("agent", vm, "exec", "--", "/bin/sh", "-c", script)


def agent_down(vm: str) -> None:
    """Stop the guest's agent for good: its channel is then disconnected."""
    guest_sh(vm, "touch /run/qga.off; (sleep 1; kill $(pidof qemu-ga)) >/dev/null 2>&1 &")
    deadline = time.monotonic() + 30
    while virtlife("agent", vm, "ping").returncode != 8:
        assert time.monotonic() < deadline, "the agent did not go down"
        time.sleep(0.5)


def create(name: str, *options: str) -> str:
    remove(name)
    ok("lab", "create", name, *options, "--start", "--wait-agent")
    return name


@pytest.fixture(scope="module")
def vm(real_stack: GuestImage) -> Iterator[str]:
    name = f"vl-it-agent-{os.getpid()}"
    try:
        yield create(name)
    finally:
        remove(name)


@pytest.fixture
def fresh(real_stack: GuestImage) -> Iterator[list[str]]:
    """The VMs a test made with ``new_vm``; all removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        remove(name)


def new_vm(made: list[str], suffix: str, *options: str) -> str:
    name = f"vl-it-ag{suffix}-{os.getpid()}"
    made.append(name)
    return create(name, *options)


# -- reads ---------------------------------------------------------------------------------

def test_ping_info_osinfo_hostname_timezone_users(vm: str) -> None:
    assert re.fullmatch(rf"{vm}: the guest agent answered in \d+ ms\n", ok("agent", vm, "ping"))
    info = json.loads(ok("agent", vm, "info", "--json"))
    host_ga = subprocess.run(["/usr/sbin/qemu-ga", "--version"], capture_output=True,
                             text=True, check=True).stdout
    assert info["version"] in host_ga  # the guest runs this machine's qemu-ga
    names = {c["name"]: c["enabled"] for c in info["supported_commands"]}
    assert names["guest-exec"] is True and names["guest-fsfreeze-freeze"] is True
    osinfo = json.loads(ok("agent", vm, "osinfo", "--json"))
    assert (osinfo["id"], osinfo["pretty-name"]) == ("virtlife-guest", "virtlife test guest")
    assert osinfo["kernel-release"] == real_kernel(vm)
    assert ok("agent", vm, "hostname") == "virtlife-guest\n"
    assert json.loads(ok("agent", vm, "timezone", "--json")) == {"name": "UTC", "offset_s": 0}
    assert ok("agent", vm, "timezone") == "UTC (UTC+00:00)\n"
    assert json.loads(ok("agent", vm, "users", "--json")) == []  # nobody logged in


def real_kernel(vm: str) -> str:
    return guest_sh(vm, "uname -r").strip()


def test_fsinfo_lists_the_file_systems_the_guest_mounted(vm: str) -> None:
    mounts = guest_sh(vm, "grep ^/dev/vd /proc/mounts").split()
    assert mounts[:3] == ["/dev/vda", "/mnt/data", "ext4"]
    fs = json.loads(ok("agent", vm, "fsinfo", "--json"))
    assert [(f["mountpoint"], f["name"], f["fstype"], f["disks"]) for f in fs] == [
        ("/mnt/data", "vda", "ext4", ["vda"])]
    blocks = guest_sh(vm, "df -k /mnt/data | tail -1").split()
    # the agent's total is what non-root users can have: used + available, as df says
    assert fs[0]["total_bytes"] // 1024 == int(blocks[2]) + int(blocks[3])


def test_ifaddr_gives_the_address_the_guest_really_has(vm: str) -> None:
    ip = guest_sh(vm, "ip -o -4 addr show dev eth0").split()
    address = ip[ip.index("inet") + 1]  # e.g. 10.0.2.15/24 from QEMU's user network
    mac = guest_sh(vm, "cat /sys/class/net/eth0/address").strip()
    nics = {n["name"]: n for n in json.loads(ok("agent", vm, "ifaddr", "--json"))}
    eth0 = nics["eth0"]
    assert eth0["hwaddr"] == mac
    assert f"{eth0['addresses'][0]['address']}/{eth0['addresses'][0]['prefix']}" == address
    assert {"address": "127.0.0.1", "family": "ipv4", "prefix": 8} in nics["lo"]["addresses"]
    table = ok("agent", vm, "ifaddr")
    assert re.search(rf"eth0\s+{mac}\s+ipv4\s+{re.escape(address)}", table)


def test_exec_returns_the_exit_code_and_output_of_a_real_program(vm: str) -> None:
    run = virtlife("agent", vm, "exec", "--", "/bin/sh", "-c",
                   "echo out; echo err >&2; exit 7")
    assert (run.returncode, run.stdout, run.stderr) == (7, "out\n", "err\n")
    got = json.loads(ok("agent", vm, "exec", "--json", "--", "/bin/cat", "/etc/hostname"))
    assert (got["exit_code"], got["stdout"]) == (0, "virtlife-guest\n")
    run = virtlife("agent", vm, "exec", "--stdin", "--", "/usr/bin/wc", "-c", stdin="12345")
    assert (run.returncode, run.stdout.strip()) == (0, "5")
    run = virtlife("agent", vm, "exec", "--timeout", "1", "--", "/bin/sleep", "30")
    assert run.returncode == 5
    assert "did not end within 1 s" in run.stderr and "still runs there as pid" in run.stderr
    run = virtlife("agent", vm, "exec", "--", "/no/such/program")
    assert run.returncode == 9 and "guest reported an error for guest-exec" in run.stderr


def test_raw_command_and_its_errors(vm: str) -> None:
    reply = json.loads(ok("agent", vm, "command", '{"execute": "guest-get-vcpus"}'))
    assert reply["return"][0]["online"] is True
    run = virtlife("agent", vm, "command", '{"execute": guest-info}')
    assert run.returncode == 64
    assert run.stderr == ("virtlife: invalid JSON at line 1, column 13 (character 12): "
                          "Expecting value\n")
    run = virtlife("agent", vm, "command", '{"execute": "guest-no-such"}')
    assert run.returncode == 9
    assert "the guest's agent does not have guest-no-such" in run.stderr


def now() -> float:
    return time.time()


def guest_offset(vm: str) -> float:
    return float(json.loads(ok("agent", vm, "time", "--json"))["offset_s"])


def test_time_is_right_after_set_and_after_sync(vm: str) -> None:
    t0 = now()
    target = datetime.fromtimestamp(t0 - 3600, UTC).isoformat()
    ok("agent", vm, "time", "--set", target)
    took = now() - t0  # the guest was set to t0 - 3600 at some moment within this
    assert -3600 - took - 0.5 < guest_offset(vm) < -3600 + 0.5  # an hour behind, as set
    guest_epoch = int(guest_sh(vm, "date +%s"))
    assert abs(guest_epoch - (now() - 3600)) < 2 + took  # the guest's own `date` agrees
    result = json.loads(ok("agent", vm, "time", "--sync", "--json"))
    assert result["clock"]["before_s"] < -3599 and abs(result["clock"]["after_s"]) < 0.5
    assert abs(guest_offset(vm)) < 1.0
    assert abs(int(guest_sh(vm, "date +%s")) - now()) < 2
    history = json.loads(ok("history", vm, "--json"))
    synced = next(h for h in history if h["operation"] == "agent-set-time")
    assert re.search(r"guest clock 360\d\.\d+ s behind, now", synced["detail"])


def test_set_password_changes_the_hash_in_the_guest_shadow(vm: str) -> None:
    before = guest_sh(vm, "grep ^root: /etc/shadow")
    secret = "Very-S3cret-pw"
    out = ok("agent", vm, "set-password", "root", stdin=secret + "\n")
    assert out == f"{vm}: running (booted); password of root set\n"
    after = guest_sh(vm, "grep ^root: /etc/shadow")
    hashed = after.split(":")[1]
    assert after != before and hashed.startswith("$6$")
    salt = hashed.split("$")[2]
    again = guest_sh(vm, f"printf '%s\\n' '{secret}' | mkpasswd -m sha512 -S {salt} -P 0")
    assert again.strip() == hashed  # the guest's own crypt of the password matches
    crypted = "$6$abcdefgh$" + "x" * 86
    ok("agent", vm, "set-password", "root", "--crypted", stdin=crypted + "\n")
    assert guest_sh(vm, "grep ^root: /etc/shadow").split(":")[1] == crypted
    # the password is nowhere: journal, the debug log, command lines
    log = config.images_dir() / f"{vm}-debug.log"
    try:
        run = virtlife("-vv", "--log-file", str(log), "agent", vm, "set-password", "root",
                       stdin=secret + "\n")
        assert run.returncode == 0 and "agent-set-password" in run.stderr  # progress
        assert "connected to host" in log.read_text()
        assert secret not in log.read_text() + run.stderr + run.stdout
    finally:
        log.unlink(missing_ok=True)
    history = ok("history", vm, "--json")
    assert secret not in history and "set-password" in history
    run = virtlife("agent", vm, "set-password", "nobody", stdin=secret + "\n")
    assert run.returncode == 9 and secret not in run.stderr + run.stdout
    assert "failed to set user password" in run.stderr


def test_freeze_and_thaw_are_seen_in_the_guest(vm: str) -> None:
    guest_sh(vm, ": > /var/log/fsfreeze.log")
    out = ok("agent", vm, "freeze")
    assert "froze 1 file system(s)" in out
    assert ok("agent", vm, "freeze-status").startswith("frozen (by operation ")
    run = virtlife("agent", vm, "freeze")
    assert run.returncode == 3 and "already frozen" in run.stderr
    run = virtlife("agent", vm, "hostname")  # the agent refuses most commands meanwhile
    assert run.returncode != 0
    assert "thawed 1 file system(s)" in ok("agent", vm, "thaw")
    assert ok("agent", vm, "freeze-status") == "thawed\n"
    run = virtlife("agent", vm, "thaw")
    assert run.returncode == 3 and "not frozen" in run.stderr
    events = [line.split()[1] for line in guest_sh(vm, "cat /var/log/fsfreeze.log").split("\n")
              if line]
    assert events == ["freeze", "thaw"]


# -- errors ------------------------------------------------------------------------------

def test_agent_errors_say_what_to_do(fresh: list[str]) -> None:
    name = new_vm(fresh, "err")
    agent_down(name)
    run = virtlife("agent", name, "ping")
    assert run.returncode == 8
    assert "no agent listens in the guest" in run.stderr
    assert "apt install qemu-guest-agent" in run.stderr and "dnf install" in run.stderr
    assert "qemu-ga-x86_64.msi" in run.stderr
    ok("destroy", name)
    run = virtlife("agent", name, "ifaddr")
    assert run.returncode == 3
    assert run.stderr == (f"virtlife: cannot read the addresses of {name}: it is shut off "
                          "(destroyed), not running; start it first: the guest agent runs "
                          "inside the guest\n")
    # a definition without the channel, then `agent enable`
    xml = ok("dumpxml", name, "--inactive")
    bare = re.sub(r"<channel type=.unix.>.*?</channel>", "", xml, flags=re.S)
    assert bare != xml
    path = config.images_dir() / f"{name}.xml"
    path.write_text(bare)
    try:
        ok("define", str(path))
    finally:
        path.unlink()
    ok("start", name)
    run = virtlife("agent", name, "ping")
    assert run.returncode == 8
    assert f"add it with `virtlife agent enable {name}` (it applies at the next boot)" \
        in run.stderr
    out = ok("agent", "enable", name)
    assert "it applies at the next boot" in out
    assert virtlife("agent", "enable", name).returncode == 1  # already there
    ok("destroy", name)
    ok("start", name, "--wait-agent")
    assert virtlife("agent", name, "ping").returncode == 0


def test_a_hung_agent_times_out_in_seconds(fresh: list[str]) -> None:
    name = new_vm(fresh, "hung")
    guest_sh(name, "(sleep 1; kill -STOP $(pidof qemu-ga)) >/dev/null 2>&1 &")
    time.sleep(2)
    t0 = time.monotonic()
    run = virtlife("agent", name, "ping", "--timeout", "2")
    assert run.returncode == 5
    assert "did not answer in time" in run.stderr
    assert time.monotonic() - t0 < 30  # seconds, not libvirt's minutes
    # the ladder gives up on the agent at once and presses the ACPI button
    out = ok("shutdown", name)
    assert "powered off by the ACPI button" in out
    assert "guest agent: the guest agent did not answer within" in out


# -- the shutdown and reboot ladder -----------------------------------------------------

def test_ladder_agent_step_wins_with_an_agent(fresh: list[str]) -> None:
    name = new_vm(fresh, "lad")
    out = ok("reboot", name, "--wait-agent")
    assert re.match(rf"{name}: running \(booted\); rebooted by the guest agent after ", out)
    assert "guest agent answered after" in out
    out = ok("shutdown", name)
    assert re.fullmatch(rf"{name}: shut off \(shutdown\); powered off by the guest agent "
                        r"after \d+\.\d s\n", out)
    detail = json.loads(ok("history", name, "--json"))[0]["detail"]
    assert "powered off by the guest agent" in detail


def test_ladder_acpi_step_wins_without_an_agent(fresh: list[str]) -> None:
    name = new_vm(fresh, "acpi")
    agent_down(name)
    t0 = time.monotonic()
    out = ok("shutdown", name)
    assert "powered off by the ACPI button after" in out
    assert "guest agent: no agent listens in the guest" in out
    assert time.monotonic() - t0 < 60


def test_ladder_on_a_guest_that_ignores_everything(fresh: list[str]) -> None:
    name = new_vm(fresh, "deaf", "--ignore-acpi")
    agent_down(name)
    run = virtlife("shutdown", name, "--timeout", "6")
    assert run.returncode == 5
    assert f"{name} did not power off within 6 s" in run.stderr
    assert "ACPI button: asked; no power off within" in run.stderr
    assert "ACPI button, again: asked" in run.stderr and "--force" in run.stderr
    assert ok("state", name) == "running (booted)\n"  # left as it is
    run = virtlife("reboot", name, "--timeout", "6")
    assert run.returncode == 5 and f"{name} did not reset within 6 s" in run.stderr
    out = ok("reboot", name, "--timeout", "6", "--force")
    assert re.match(rf"{name}: running \(booted\); rebooted by force after ", out)
    out = ok("shutdown", name, "--timeout", "6", "--force")
    assert re.match(rf"{name}: shut off \(destroyed\); powered off by force after ", out)
    history = json.loads(ok("history", name, "--json"))
    assert [(h["operation"], h["outcome"]) for h in history[:4]] == [
        ("shutdown", "ok"), ("reboot", "ok"), ("reboot", "error"), ("shutdown", "error")]


# -- the guest clock after the guest lost time ------------------------------------------

def test_clock_is_synced_after_restore_resume_start_and_wakeup(fresh: list[str]) -> None:
    name = new_vm(fresh, "clk")
    behind = datetime.fromtimestamp(now() - 300, UTC).isoformat()
    ok("agent", name, "time", "--set", behind)
    assert guest_offset(name) < -299
    image = config.images_dir() / f"{name}.sav"
    try:
        ok("save", name, str(image))
        out = ok("restore", str(image))
    finally:
        image.unlink(missing_ok=True)
    assert re.search(r"guest clock 3\d\d\.\d+ s behind, now .* \(set from this "
                     r"machine's clock\)", out), out
    assert abs(guest_offset(name)) < 1.0
    detail = json.loads(ok("history", name, "--json"))[0]["detail"]
    assert re.search(r"guest clock 3\d\d\.\d+ s behind, now", detail)  # journalled
    ok("agent", name, "time", "--set", behind)
    ok("suspend", name)
    assert "guest clock not synced" not in ok("resume", name)
    assert abs(guest_offset(name)) < 1.0
    ok("agent", name, "time", "--set", behind)
    ok("managedsave", name)
    assert re.search(r"guest clock 3\d\d\.\d+ s behind", ok("start", name))
    assert abs(guest_offset(name)) < 1.0
    ok("agent", name, "time", "--set", behind)
    ok("pmsuspend", name, "--target", "mem")
    assert re.search(r"guest clock 3\d\d\.\d+ s behind", ok("pmwakeup", name))
    assert abs(guest_offset(name)) < 1.0
    ok("agent", name, "time", "--set", behind)
    ok("suspend", name)
    assert ok("resume", name, "--no-sync-time") == f"{name}: running (unpaused)\n"
    assert guest_offset(name) < -299


# -- exec's output limit and input (issue 15 G) ------------------------------------------

def test_a_large_exec_output_is_cut_in_the_guest_and_the_agent_still_answers(vm: str) -> None:
    # 12 MB of output: over libvirt's 10 MiB agent answer, which broke the agent's channel
    t0 = time.monotonic()
    run = virtlife("agent", vm, "exec", "--", "/bin/sh", "-c",
                   "head -c 12000000 /dev/zero | tr '\\0' a; echo done >&2")
    took = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    assert run.stdout == "a" * 2**20
    assert run.stderr == ("done\nvirtlife: warning: the program's stdout was cut at 1048576 "
                          "bytes (--max-output)\n")
    assert took < 60, took  # TCG makes the 12 MB in seconds; before, it failed after 16 s
    assert re.fullmatch(rf"{vm}: the guest agent answered in \d+ ms\n", ok("agent", vm, "ping"))
    got = json.loads(ok("agent", vm, "exec", "--json", "--", "/bin/sh", "-c",
                        "head -c 3000000 /dev/zero >&2"))
    assert (got["exit_code"], got["cut"], got["truncated"]) == (0, ["stderr"], True)
    assert len(got["stderr"]) == 2**20 and got["max_output"] == 2**20
    detail = json.loads(ok("history", vm, "--json"))[0]["detail"]
    assert "its stderr was cut at 1048576 bytes (max_output)" in detail


def test_max_output_cuts_at_its_bytes_and_the_program_runs_to_its_end(vm: str) -> None:
    run = virtlife("agent", vm, "exec", "--max-output", "100", "--", "/bin/sh", "-c",
                   "yes | head -c 50000; echo ran > /run/vl-cut; exit 3")
    assert run.returncode == 3
    assert run.stdout == "y\n" * 50
    assert run.stderr == ("virtlife: warning: the program's stdout was cut at 100 bytes "
                          "(--max-output)\n")
    assert guest_sh(vm, "cat /run/vl-cut; rm /run/vl-cut") == "ran\n"
    run = virtlife("agent", vm, "exec", "--max-output", "100", "--", "/bin/echo", "short")
    assert (run.returncode, run.stdout, run.stderr) == (0, "short\n", "")
    # a signal still reads as the signal, and stdin still reaches the program
    run = virtlife("agent", vm, "exec", "--json", "--", "/bin/sh", "-c", "kill -9 $$")
    got = json.loads(run.stdout)
    assert (run.returncode, got["exit_code"], got["signal"]) == (128 + 9, None, 9)
    run = virtlife("agent", vm, "exec", "--stdin", "--", "/usr/bin/wc", "-c",
                   stdin="x" * 65536)
    assert (run.returncode, run.stdout.strip()) == (0, "65536")


def test_what_one_agent_call_cannot_carry_is_bad_input_and_the_agent_stays_up(
        vm: str) -> None:
    t0 = time.monotonic()
    run = virtlife("agent", vm, "exec", "--stdin", "--", "/usr/bin/wc", "-c",
                   stdin="x" * 3_200_000)  # was exit 4, "host unreachable"
    assert run.returncode == 64, run.stderr
    assert run.stderr.startswith("virtlife: the input for /usr/bin/wc is larger than 65536 "
                                 "bytes (64 KiB), the most that one guest-agent command "
                                 "carries safely through libvirt")
    run = virtlife("agent", vm, "exec", "--stdin", "--", "/usr/bin/wc", "-c",
                   stdin="x" * 100_000)  # under 4 MiB, over the agent socket's buffer
    assert run.returncode == 64 and "larger than 65536 bytes" in run.stderr
    run = virtlife("agent", vm, "exec", "--max-output", "2000000", "--", "/bin/true")
    assert run.returncode == 64
    assert "output limit must be within 0 and 1536000 bytes (1500 KiB)" in run.stderr
    assert time.monotonic() - t0 < 30
    assert ok("agent", vm, "exec", "--", "/bin/echo", "up") == "up\n"


def test_output_over_what_libvirt_passes_without_an_output_limit_says_it_is_lost(
        vm: str) -> None:
    # over the 4 MiB a client gets (and under the 10 MiB that breaks the channel): the
    # answer is lost, and the agent goes on (this was exit 4, "host unreachable")
    run = virtlife("agent", vm, "exec", "--max-output", "0", "--", "/bin/sh", "-c",
                   "head -c 3500000 /dev/zero")
    assert run.returncode == 9, run.stderr
    assert "its answer was longer than libvirt passes to a client (4 MiB), and is lost" \
        in run.stderr and "--max-output" in run.stderr
    assert virtlife("agent", vm, "ping").returncode == 0
    run = virtlife("agent", vm, "exec", "--max-output", "0", "--", "/bin/echo", "as it is")
    assert (run.returncode, run.stdout, run.stderr) == (0, "as it is\n", "")
