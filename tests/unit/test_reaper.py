"""virtlife's reaper (``virtlife.lab.reaper``): a daemon's ``-d`` start under a child
subreaper, which reaps what the daemon orphans, passes signals on, and ends with it.

These run real processes (a fake ``-d`` daemon in Python), no libvirt. The daemon's
"QEMU" is a double-forked ``sleep``: orphaned at once, as libvirtd's QEMUs are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlife.lab import reaper
from virtlife.procs import start_time

pytestmark = pytest.mark.skipif(
    sys.platform != "linux",
    reason="a child subreaper (prctl PR_SET_CHILD_SUBREAPER) exists on Linux only")

FAKE_DAEMON = r'''
import os, signal, sys, time
out = sys.argv[1]

def note(name, value):
    with open(os.path.join(out, name + ".tmp"), "w") as f:
        f.write(str(value))
    os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))

if "--fail" in sys.argv:
    note("reaper", os.getppid())
    sys.exit("cannot start: the pid file is held by another process")
ready_r, ready_w = os.pipe()
if os.fork():  # the start (what `-d` leaves running until the daemon is ready)
    os.close(ready_w)
    sys.exit(0 if os.read(ready_r, 1) == b"y" else 1)
os.setsid()
if os.fork():
    os._exit(0)
# the daemon, orphaned by its start as libvirtd is

def orphan(*_):  # a "QEMU": double-forked, so orphaned at once
    if os.fork() == 0:
        if os.fork() == 0:
            note("orphan", os.getpid())
            time.sleep(600)
        os._exit(0)
    os.wait()

def stop(signum, _frame):
    note("signal", signum)
    os._exit(3)

signal.signal(signal.SIGUSR1, orphan)
signal.signal(signal.SIGTERM, stop)
note("daemon", os.getpid())
os.write(ready_w, b"y")
for fd in (0, 1, 2):  # as a daemon does: the caller's stdio is not its
    os.dup2(os.open(os.devnull, os.O_RDWR), fd)
while True:
    signal.pause()
'''


def wait_for(check: object, what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` (a callable) until it is true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g} s")
        time.sleep(0.01)


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("\nPPid:", 1)[1].split()[0])


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def entry_gone(pid: int) -> bool:
    """Not even a zombie is left: someone reaped it."""
    return not Path(f"/proc/{pid}").exists()


class Fake:
    """The fake daemon's notes (pids, signals) in a directory."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def pid(self, name: str) -> int:
        wait_for(lambda: (self.out / name).exists(), f"note {name!r} from the fake daemon")
        return int((self.out / name).read_text())

    def start(self, *args: str) -> subprocess.CompletedProcess[str]:
        script = self.out / "fake-daemon.py"
        script.write_text(FAKE_DAEMON)
        return subprocess.run([*reaper.command(), sys.executable, str(script), str(self.out),
                               *args, "-d"], capture_output=True, text=True, timeout=60,
                              start_new_session=True, check=False)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    fake = Fake(tmp_path)
    try:
        yield fake
    finally:  # nothing it started outlives the test
        for name in ("orphan", "daemon", "reaper"):
            if (tmp_path / name).exists():
                pid = int((tmp_path / name).read_text())
                if start_time(pid) is not None:
                    os.kill(pid, signal.SIGKILL)


def test_the_start_returns_once_the_daemon_is_ready_and_leaves_it_under_the_reaper(
        fake: Fake) -> None:
    done = fake.start()
    assert done.returncode == 0, done.stderr
    daemon = fake.pid("daemon")
    holder = ppid(daemon)
    (fake.out / "reaper").write_text(str(holder))
    assert holder != 1
    assert comm(holder) == ("reap:" + os.path.basename(sys.executable))[:15]
    # the reaper let go of the caller's pipes: run() above returned, and its stdio is null
    assert os.readlink(f"/proc/{holder}/fd/1") == os.devnull
    assert os.readlink(f"/proc/{holder}/cwd") == "/"


def test_an_orphaned_grandchild_is_the_reapers_child_and_is_reaped_when_killed(
        fake: Fake) -> None:
    assert fake.start().returncode == 0
    daemon = fake.pid("daemon")
    holder = ppid(daemon)
    (fake.out / "reaper").write_text(str(holder))
    os.kill(holder, signal.SIGUSR1)  # forwarded: the daemon orphans a "QEMU"
    orphan = fake.pid("orphan")
    assert ppid(orphan) == holder  # not PID 1: the reaper is its subreaper
    os.kill(orphan, signal.SIGKILL)
    wait_for(lambda: entry_gone(orphan), "reaping of the killed orphan")
    assert start_time(holder) is not None  # the daemon still runs: so does its reaper


def test_sigterm_reaches_the_daemon_and_the_reaper_ends_with_it(fake: Fake) -> None:
    assert fake.start().returncode == 0
    daemon = fake.pid("daemon")
    holder = ppid(daemon)
    (fake.out / "reaper").write_text(str(holder))
    os.kill(holder, signal.SIGTERM)
    assert fake.pid("signal") == signal.SIGTERM
    wait_for(lambda: entry_gone(daemon), "reaping of the daemon")
    wait_for(lambda: start_time(holder) is None, "end of the reaper")


def test_the_reaper_stays_for_what_its_daemon_left_until_told_to_stop(fake: Fake) -> None:
    assert fake.start().returncode == 0
    daemon = fake.pid("daemon")
    holder = ppid(daemon)
    (fake.out / "reaper").write_text(str(holder))
    os.kill(holder, signal.SIGUSR1)
    orphan = fake.pid("orphan")
    os.kill(daemon, signal.SIGKILL)  # the daemon dies; its "QEMU" runs on
    wait_for(lambda: entry_gone(daemon), "reaping of the daemon")
    assert start_time(holder) is not None and ppid(orphan) == holder
    os.kill(holder, signal.SIGTERM)  # nothing to pass it to: the reaper ends
    wait_for(lambda: start_time(holder) is None, "end of the reaper")
    assert start_time(orphan) is not None  # left running, to the next reaper up


def test_a_failed_start_passes_the_daemons_status_and_words_and_leaves_no_reaper(
        fake: Fake) -> None:
    done = fake.start("--fail")
    assert done.returncode == 1
    assert "the pid file is held by another process" in done.stderr
    holder = fake.pid("reaper")
    wait_for(lambda: start_time(holder) is None, "end of the reaper")


def test_a_missing_daemon_is_said_and_fails_like_a_shell(tmp_path: Path) -> None:
    done = subprocess.run([*reaper.command(), str(tmp_path / "no-such-daemon"), "-d"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 127
    assert f"reaper: cannot run {tmp_path / 'no-such-daemon'}" in done.stderr


def test_without_a_command_it_says_how_to_call_it() -> None:
    done = subprocess.run(reaper.command()[:-1], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and "usage: reaper.py -- DAEMON" in done.stderr


def test_parentage_tells_a_reaped_libvirtd_from_one_left_to_pid_1(fake: Fake,
                                                                 tmp_path: Path) -> None:
    from virtlife.lab import hostprep

    run = tmp_path / "run"
    run.mkdir()
    paths = hostprep.DaemonPaths(run_dir=run)
    assert hostprep.parentage("libvirtd", paths) is None  # no pid file: not running
    assert fake.start().returncode == 0
    daemon = fake.pid("daemon")
    (fake.out / "reaper").write_text(str(ppid(daemon)))
    (run / "libvirtd.pid").write_text(f"{daemon}\n")
    found = hostprep.parentage("libvirtd", paths)
    assert found is not None and found.reaped and found.parent == ppid(daemon)
    assert "virtlife's reaper" in found.describe()
    assert hostprep.reaper_note(paths) is None

    # a daemon that daemonized itself with no reaper: orphaned to PID 1 (or whichever
    # subreaper runs this test)
    lone = subprocess.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
                          capture_output=True, text=True, check=True, timeout=30)
    orphan = int(lone.stdout)
    (fake.out / "orphan").write_text(str(orphan))
    (run / "libvirtd.pid").write_text(f"{orphan}\n")
    left = hostprep.parentage("libvirtd", paths)
    assert left is not None and not left.reaped and left.parent == ppid(orphan)
    if left.parent == 1 and comm(1) != "systemd":
        note = hostprep.reaper_note(paths)
        assert note is not None and "runs without virtlife's reaper" in note
        assert f"kill $(cat {run / 'libvirtd.pid'})" in note
