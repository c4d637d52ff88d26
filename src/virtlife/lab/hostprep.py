"""Prepares this machine to run real guests for the lab: /dev/kvm access, the libvirt
daemons, and the sysctl post-copy migration needs.

Role: idempotent local host preparation, as root, on a Debian host that may have no
systemd (containers, CI runners, microVMs): every step first looks, and changes only
what is not already right, and says what it changed. It must not import libvirt (it
talks to the daemons only through their sockets), install packages, or touch guests.
None of its changes survive a reboot: /dev/kvm lives on devtmpfs, and sysctls in
/proc are not persisted. ``ensure_daemons`` takes the daemons' paths (``DaemonPaths``),
so that the lab can start the daemons of a host in a namespace with its own /run.
libvirtd runs under virtlife's ``reaper`` (a child subreaper, as a service manager
would be), so that the QEMUs it orphans are reaped at once whatever PID 1 is.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from virtlife.errors import LabError
from virtlife.lab import reaper
from virtlife.lab.common import Say, accepts_unix, find_tool

KVM_NODE = Path("/dev/kvm")
KVM_GROUP = "kvm"
RUN_DIR = Path("/run")
LOG_DIR = Path("/var/log/libvirt")
DAEMONS = ("virtlogd", "libvirtd")  # in start order: libvirtd hands QEMU's output to virtlogd
# Daemons started under the reaper: libvirtd daemonizes every QEMU it starts, and reports
# a QEMU's end only once its process is gone, zombie included: without a subreaper the
# zombie waits for PID 1 (measured 1.9 s under a microVM's init; a domain destroyed or
# killed was reported that much later). virtlogd orphans nothing.
REAPED = ("libvirtd",)
USERFAULTFD_SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")


@dataclass(frozen=True)
class DaemonPaths:
    """Where one host's virtlogd and libvirtd keep their sockets and pid files, seen from
    this process, and the command prefix that runs a program on that host.

    The defaults are this machine's own daemons. A lab host in its own mount namespace
    has its run directory elsewhere (its ``/run`` is a directory of the lab) and a
    ``launcher`` such as ``("nsenter", "--target=PID", "--mount", "--")``, and may
    give libvirtd options (``libvirtd_args=("--listen",)``: TCP, as its libvirtd.conf
    says; libvirtd ignores ``listen_tcp`` without it).
    """

    run_dir: Path = RUN_DIR
    log_dir: Path = LOG_DIR
    launcher: tuple[str, ...] = ()
    libvirtd_args: tuple[str, ...] = ()

    def socket(self, daemon: str) -> Path:
        """The read-write socket of ``daemon`` (``virtlogd`` or ``libvirtd``)."""
        name = {"virtlogd": "virtlogd-sock", "libvirtd": "libvirt-sock"}[daemon]
        return self.run_dir / "libvirt" / name

    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"


LOCAL_DAEMONS = DaemonPaths()
VIRTLOGD_SOCKET = LOCAL_DAEMONS.socket("virtlogd")
LIBVIRTD_SOCKET = LOCAL_DAEMONS.socket("libvirtd")


@dataclass(frozen=True)
class PrepReport:
    """What ``prepare_local_host`` changed (``actions``) and what it wants known (``notes``)."""

    actions: list[str]
    notes: list[str]


def can_run_real_stack() -> tuple[bool, str]:
    """(True, "") if this host can run the real libvirt + QEMU stack, else (False, why)."""
    if os.geteuid() != 0:
        return False, "not running as root (qemu:///system and host preparation need root)"
    if not Path("/etc/debian_version").is_file():
        return False, "not a Debian host (/etc/debian_version is missing)"
    if find_tool("libvirtd") is None:
        return False, "libvirtd is not installed; install libvirt-daemon-system"
    if find_tool("qemu-system-x86_64") is None:
        return False, "qemu-system-x86_64 is not installed; install qemu-system-x86"
    return True, ""


def fix_kvm_node() -> str | None:
    """Make /dev/kvm ``root:kvm`` and group read-write, if it exists and is not already.

    Why: libvirt caches each QEMU binary's capabilities, and the cache records whether
    KVM was usable when it probed. On every capability lookup (each domain start or
    restore does several) it checks whether the QEMU user (libvirt-qemu, in group
    kvm) can open /dev/kvm *now*. With a root-only node (0600, as on hosts without
    udev) the answers disagree: libvirt drops the cache and probes QEMU again, and
    since the new probe again records KVM, the next lookup does the same. Each probe
    takes 3-4 s (+3 s per start/restore in the spike; measured on a busy host with
    libvirt 9.0, a single start took 120-130 s because every client's lookups queued
    behind back-to-back probes). Guests still run under TCG (``type='qemu'``) either
    way; the fix only lets the cache stay valid.

    libvirtd needs no restart after the fix (measured): it notices the node changed,
    keeps its cache, and the next start took 2.2 s (waiting for a probe already in
    flight) and the ones after it 0.3-0.4 s.

    A node that already is ``root:kvm`` with at least 0660 (e.g. 0666) is left alone.
    Returns what changed, or None if nothing had to.
    """
    try:
        st = KVM_NODE.stat()
    except FileNotFoundError:
        return None
    try:
        kvm_gid = grp.getgrnam(KVM_GROUP).gr_gid
    except KeyError as e:
        raise LabError(
            f"cannot fix {KVM_NODE}: there is no group {KVM_GROUP}; install qemu-system-x86"
        ) from e
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == 0 and st.st_gid == kvm_gid and mode & 0o660 == 0o660:
        return None
    new_mode = mode | 0o660
    try:
        os.chown(KVM_NODE, 0, kvm_gid)
        os.chmod(KVM_NODE, new_mode)
    except OSError as e:
        raise LabError(f"cannot fix {KVM_NODE}: {e.strerror}; run as root") from e
    before = f"{_user(st.st_uid)}:{_group(st.st_gid)} {mode:04o}"
    return f"{KVM_NODE}: {before} -> root:{KVM_GROUP} {new_mode:04o}"


def ensure_daemons(timeout: float = 20.0, paths: DaemonPaths = LOCAL_DAEMONS) -> list[str]:
    """Start virtlogd and libvirtd (``-d``; libvirtd under the reaper) where their sockets
    do not answer.

    ``paths`` says which host's daemons: this machine's by default, or a lab host's
    (its run directory and the launcher that runs a program there). Waits until each
    socket accepts connections; returns the actions done (empty if both were already
    up). Raises LabError if a daemon is missing or does not come up within ``timeout``
    seconds.
    """
    actions: list[str] = []
    for daemon in DAEMONS:
        sock = paths.socket(daemon)
        if accepts_unix(sock):
            continue
        exe = find_tool(daemon)
        if exe is None:
            raise LabError(
                f"cannot start {daemon}: it is not installed; install libvirt-daemon-system"
            )
        was = "stale" if sock.exists() else "absent"
        args = paths.libvirtd_args if daemon == "libvirtd" else ()
        under = reaper.command() if daemon in REAPED else []
        command = ([*paths.launcher, *under, exe, *args] if paths.launcher or args or under
                   else exe)
        try:
            _start_daemon(daemon, command, sock, timeout)
        except LabError as e:
            raise LabError(f"{e}; see {paths.log_file(daemon)}") from e
        actions.append(f"started {daemon} ({sock} was {was})")
    return actions


@dataclass(frozen=True)
class Parentage:
    """Whose child a running daemon is: what reaps it and the processes it orphans."""

    pid: int
    parent: int
    parent_comm: str

    @property
    def reaped(self) -> bool:
        """Under virtlife's reaper (the lab's ``ensure_daemons`` started it)."""
        return self.parent_comm.startswith(reaper.NAME_PREFIX)

    def describe(self) -> str:
        if self.reaped:
            return f"its parent is virtlife's reaper ({self.parent_comm}, pid {self.parent})"
        return f"its parent is {self.parent_comm} (pid {self.parent})"


def parentage(daemon: str = "libvirtd", paths: DaemonPaths = LOCAL_DAEMONS) -> Parentage | None:
    """The parent of ``daemon`` as its pid file names it; None if it is not running."""
    try:
        pid = int(paths.pid_file(daemon).read_text().strip())
        status = Path(f"/proc/{pid}/status").read_text()
        ppid = int(status.split("\nPPid:", 1)[1].split()[0])
        comm = Path(f"/proc/{ppid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return Parentage(pid, ppid, comm)


def reaper_note(paths: DaemonPaths = LOCAL_DAEMONS) -> str | None:
    """A word on a libvirtd left to a PID 1 that is not systemd (started before virtlife
    ran it under its reaper): its QEMUs' ends may be reported late. None otherwise."""
    found = parentage("libvirtd", paths)
    if found is None or found.reaped or found.parent != 1 or found.parent_comm == "systemd":
        return None
    return (f"libvirtd (pid {found.pid}) runs without virtlife's reaper: {found.describe()}, "
            "which may reap the QEMUs it orphans late, and libvirt reports a destroyed or "
            "killed VM only once its QEMU is reaped. When no VM runs, restart it: "
            f"kill $(cat {paths.pid_file('libvirtd')}) and run `virtlife lab setup` again")


def enable_postcopy() -> str | None:
    """Set ``vm.unprivileged_userfaultfd=1``, needed for post-copy migration.

    QEMU runs as libvirt-qemu, and without this sysctl its userfaultfd() fails with
    EPERM, so libvirt reports "Postcopy is not supported". Returns what changed, or
    None when the sysctl is already 1 or this kernel has no such sysctl.
    """
    try:
        current = USERFAULTFD_SYSCTL.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LabError(f"cannot read {USERFAULTFD_SYSCTL}: {e.strerror}") from e
    if current == "1":
        return None
    try:
        USERFAULTFD_SYSCTL.write_text("1\n")
    except OSError as e:
        raise LabError(
            f"cannot set vm.unprivileged_userfaultfd=1 ({e.strerror}); "
            "post-copy migration will fail with 'Postcopy is not supported'"
        ) from e
    return f"vm.unprivileged_userfaultfd: {current} -> 1 (post-copy migration)"


def prepare_local_host(progress: Say | None = None) -> PrepReport:
    """Everything above, in order: /dev/kvm, daemons, post-copy sysctl.

    Raises LabError when the host cannot run the stack at all or a required step
    fails; the post-copy sysctl is optional, so its failure is only a note.
    """
    say: Say = progress or (lambda _m: None)
    ok, why = can_run_real_stack()
    if not ok:
        raise LabError(f"cannot prepare this host: {why}")
    actions: list[str] = []
    notes: list[str] = []

    say(f"checking {KVM_NODE}")
    kvm_change = fix_kvm_node()
    if kvm_change:
        actions.append(kvm_change)
        notes.append("libvirtd was not restarted: it sees the new /dev/kvm on its next start")
    elif not KVM_NODE.exists():
        notes.append(f"no {KVM_NODE}: guests run under TCG (domain type 'qemu')")

    say("checking virtlogd and libvirtd")
    actions += ensure_daemons()
    if (note := reaper_note()) is not None:
        notes.append(note)

    say("checking vm.unprivileged_userfaultfd")
    try:
        postcopy = enable_postcopy()
    except LabError as e:
        notes.append(str(e))
    else:
        if postcopy:
            actions.append(postcopy)

    if actions:
        notes.append("these changes last until the next reboot")
    return PrepReport(actions=actions, notes=notes)


# --------------------------------------------------------------------------- helpers


def _start_daemon(daemon: str, exe: str | Sequence[str], sock: Path, timeout: float) -> None:
    """Run ``exe -d`` until it starts, then wait for ``sock`` to accept connections.

    ``exe`` is the daemon's path, or a command (launcher + path) that runs it. A
    daemon that was just told to stop may still hold its pid file for a moment, so a
    failed start is retried until ``timeout``; someone else starting it also counts.
    """
    deadline = time.monotonic() + timeout
    while True:
        status, detail = _spawn_daemon(exe, timeout)
        if status == 0 or accepts_unix(sock):
            break
        if time.monotonic() > deadline:
            raise LabError(f"cannot start {daemon}: {detail or f'exit status {status}'}")
        time.sleep(0.2)
    while not accepts_unix(sock):
        if time.monotonic() > deadline:
            raise LabError(
                f"started {daemon}, but {sock} accepted no connection within {timeout:.0f} s"
            )
        time.sleep(0.05)


def _spawn_daemon(exe: str | Sequence[str], timeout: float) -> tuple[int, str]:
    """(exit status, last line of stderr) of ``exe -d``, which forks into the background."""
    command = [exe] if isinstance(exe, str) else list(exe)
    with tempfile.TemporaryFile() as err:
        try:
            # A new session and no inherited pipes keep the daemon from belonging to
            # our caller (or holding a pytest capture pipe open).
            done = subprocess.run(
                [*command, "-d"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise LabError(f"cannot start {command[-1]}: {e}") from e
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return done.returncode, lines[-1].strip() if lines else ""


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
