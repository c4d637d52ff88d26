"""A child subreaper for a daemon that forks into the background: what a service manager
is to the services it starts.

Role: ``python -I -S reaper.py -- DAEMON [ARGS] -d`` runs the daemon's own start (which
forks the daemon into the background and exits once it is ready) under a process marked
``PR_SET_CHILD_SUBREAPER``. The daemon, and every process it orphans in turn (libvirtd
daemonizes each QEMU it starts), then has this process as its parent instead of PID 1,
and is reaped the moment it exits. That matters where PID 1 is not an init that reaps
promptly (containers, microVMs): libvirt reports a destroyed or killed domain only once
its QEMU process is gone, and a zombie still counts as there (``kill(pid, 0)``).

The command line keeps the daemon's ``-d`` contract: the process that was started exits,
with the status of the daemon's start, once the daemon is ready (its stderr passes
through); the reaper stays behind in a session of its own. It forwards SIGTERM, SIGINT,
SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the daemon, and ends with it, with its exit
status; if the daemon left processes running (QEMUs outlive a libvirtd restart, as under
systemd) it reaps them until the last one has ended, or until it is told to stop. It is
named ``reap:DAEMON`` (``/proc/PID/comm``).

It must not import anything outside the standard library (it runs as a file, without
site-packages, inside a lab host's namespaces too), hold its caller's stdio or working
directory once the daemon is up, or signal a process that is not its own unreaped child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)  # once the daemon has ended
NAME_PREFIX = "reap:"


def command() -> list[str]:
    """The prefix that runs a command under the reaper: this interpreter, this file."""
    return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--"]


def _prctl(option: int, arg: int | bytes) -> None:
    import ctypes  # here: whoever only wants ``command()`` does not pay for it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _children() -> list[int]:
    """This process's children (threads included: a child may belong to any of them)."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            pids += [int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return pids


def _daemon_among(children: Sequence[int], exe: str) -> int | None:
    """The child running ``exe`` (the daemon its start left behind); else the child that
    started first (what the daemon orphans comes after it); None if there is none."""
    want = os.path.realpath(exe)
    started: list[tuple[int, int]] = []
    for pid in children:
        try:
            if os.readlink(f"/proc/{pid}/exe") == want:
                return pid
            stat = Path(f"/proc/{pid}/stat").read_text()
            started.append((int(stat[stat.rindex(")") + 2:].split()[19]), pid))
        except (OSError, ValueError, IndexError):
            continue
    return min(started)[1] if started else None


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by a signal: as a shell says it


class _Stop(Exception):
    """Raised by the signal handler: told to stop once the daemon has ended."""


class _Reaper:
    """The reaper's side: spawn the daemon's start, then reap until it is done.

    Its daemon is first unknown (starting), then known (signals go to it), then ended
    (a stopping signal ends the reaper; it no longer waits for what the daemon left).
    """

    def __init__(self, argv: Sequence[str], report_fd: int) -> None:
        self.argv = list(argv)
        self.report_fd = report_fd
        self.starting = True
        self.daemon: int | None = None
        self.daemon_fd: int | None = None  # a pidfd: a signal never reaches a reused pid
        self.pending: list[int] = []  # signals that came while the daemon was starting
        self.code = 0

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.starting:
            self.pending.append(signum)
        elif self.daemon_fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.daemon_fd, signum)
        elif signum in STOPPING:
            raise _Stop

    def run(self) -> int:
        os.setsid()
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _prctl(PR_SET_NAME, (NAME_PREFIX + os.path.basename(self.argv[0]))[:15].encode())
        for signum in FORWARDED:
            signal.signal(signum, self.on_signal)
        try:
            start = os.posix_spawnp(self.argv[0], self.argv, os.environ)
        except OSError as e:
            print(f"reaper: cannot run {self.argv[0]}: {e.strerror}", file=sys.stderr)
            self._report(127)
            return 127
        _, status = os.waitpid(start, 0)
        self.code = _exit_code(status)
        if self.code == 0:
            self.daemon = _daemon_among(_children(), self.argv[0])
            if self.daemon is not None:
                self.daemon_fd = os.pidfd_open(self.daemon)  # a zombie has one too
        self._report(self.code)
        self._detach()
        try:
            self.starting = False
            for pending in self.pending:
                self.on_signal(pending, None)
            self._reap()
        except _Stop:
            pass
        return self.code

    def _report(self, code: int) -> None:
        os.write(self.report_fd, f"{code}\n".encode())
        os.close(self.report_fd)

    def _detach(self) -> None:
        """Let go of the caller's stdio (pipes it waits on, a terminal) and directory."""
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.chdir("/")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return  # no child left: the daemon and all it orphaned are gone
            if pid == self.daemon:
                self.code = _exit_code(status)
                self.daemon = None
                if self.daemon_fd is not None:
                    os.close(self.daemon_fd)
                    self.daemon_fd = None


def main(args: Sequence[str]) -> int:
    if len(args) < 2 or args[0] != "--":
        print("usage: reaper.py -- DAEMON [ARGS...]", file=sys.stderr)
        return 2
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the reaper
        os.close(read_fd)
        code = 1
        try:
            code = _Reaper(args[1:], write_fd).run()
        except BaseException as e:  # said, then the reaper's exit status
            print(f"reaper: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            os._exit(code)
    os.close(write_fd)
    report = b""
    while chunk := os.read(read_fd, 64):
        report += chunk
    try:
        return int(report)
    except ValueError:
        print(f"reaper: ended before {args[1]} had started", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
