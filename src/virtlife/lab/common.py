"""What every lab module does the same way: lock a state directory, write a record, find
a tool, ask whether a daemon answers, run virsh, list mount points.

Role: small helpers shared by ``hostprep``, ``privhost``, ``cluster`` and ``light`` (the
network's own, ``ip`` and the marks, are ``labnet``'s). Each is the one copy of its job;
none knows about a particular lab. It must not import libvirt, or another lab module
(they import it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from virtlife.errors import LabError

LIBVIRT_TCP_PORT = 16509
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")  # where root's tools are, beyond PATH

Say = Callable[[str], None]  # where a lab step tells the operator what it is doing


@contextlib.contextmanager
def locked(state_dir: Path, timeout: float, *, tidy: bool = False) -> Iterator[None]:
    """Hold the state directory's lock: one start, stop, up or down at a time, across
    processes. With ``tidy``, an empty state directory is removed on the way out."""
    deadline = time.monotonic() + timeout
    while True:
        state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(f"cannot lock {state_dir}: another process has held "
                                       f"it for more than {timeout:.0f} s") from None
                    time.sleep(0.05)
            try:
                st = os.stat(state_dir)
                mine = os.fstat(fd)
                same = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # someone removed the directory while we waited: take the new one
    try:
        yield
    finally:
        if tidy:
            with contextlib.suppress(OSError):
                state_dir.rmdir()
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, then renamed): a
    reader, or a process killed meanwhile, never leaves half a record."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def find_tool(program: str) -> str | None:
    """Where ``program`` is, on PATH or in the system's sbin and bin directories."""
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN]))


def missing_tool(programs: Iterable[str]) -> str | None:
    """The first of ``programs`` that ``find_tool`` cannot find, or None."""
    return next((p for p in programs if find_tool(p) is None), None)


def accepts_unix(sock_path: Path, timeout: float = 2.0) -> bool:
    """Whether a daemon is listening on the Unix socket ``sock_path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(sock_path))
        except OSError:
            return False
    return True


def accepts_tcp(address: IPv4Address, port: int = LIBVIRT_TCP_PORT,
                timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection at ``address``:``port``."""
    try:
        with socket.create_connection((str(address), port), timeout=timeout):
            return True
    except OSError:
        return False


def virsh(uri: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``virsh -q -c URI ARGS...`` (its output as text); LabError when it cannot run or
    does not end within ``timeout``. The caller judges the exit status."""
    command = ["virsh", "-q", "-c", uri, *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"cannot run virsh {args[0] if args else ''} at {uri}: {e}") from e


def stderr_of(done: subprocess.CompletedProcess[str], limit: int = 300) -> str:
    """A failed command's error output on one line (at most ``limit`` characters), or its
    exit status when it said nothing."""
    return " ".join(done.stderr.split())[:limit] or f"exit status {done.returncode}"


def mount_points() -> list[Path]:
    """The mount points of this process's mount namespace (from /proc/self/mountinfo)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    return [Path(line.split()[4].replace("\\040", " ").replace("\\011", "\t"))
            for line in lines]
