"""Private libvirt "hosts" on this machine: a virtlogd + libvirtd pair in a mount namespace
of their own, for tests and the lab that need a host whose file system is not the client's.

Role: ``start`` builds a host directory under the lab state directory, starts a holder
process in a new mount namespace, binds the host's own trees over /etc/libvirt (a copy
without the system's domains, networks, pools and secrets), /var/lib/libvirt,
/var/log/libvirt, /var/cache/libvirt and /run there, and starts the host's daemons
with its own ``host_uuid`` (libvirtd under virtlife's ``reaper``, which reaps the QEMUs
it orphans, as ``hostprep.ensure_daemons`` starts it). The root namespace reaches it
through the socket ``STATE/NAME/run/libvirt/libvirt-sock`` (``PrivateHost.uri``).
Everything else (the guest's kernel and initrd, the images directory) is the same file
system for both. ``PRIVATE_DIR`` exists only inside the host. ``stop`` kills exactly
the processes it started (recorded by pid and start time) and what runs inside the
host's namespace (the reaper, the QEMUs its libvirtd started), then removes the host
directory; the next ``start`` or ``sweep`` cleans up after a host whose owner or holder died.

It must not import libvirt (it talks to the daemons only through their sockets and
processes, like ``hostprep``), touch the system's daemons, guests or configuration,
signal a process it cannot prove belongs to the host, or leave a mount in the root
namespace. With ``netns`` it also runs in a named network namespace (``ip netns``) that
its caller made and owns (the multi-host lab, ``cluster``), sees that namespace's
interfaces in its own /sys, and with ``listen`` its libvirtd serves TCP as its
libvirtd.conf says.

Layout of a host directory (``STATE/NAME``)::

    state.json   name, owner, holder and daemon pids with start times, host uuid
    etc/   -> /etc/libvirt         lib/  -> /var/lib/libvirt (lib/virtlife-private)
    log/   -> /var/log/libvirt     cache/ -> /var/cache/libvirt (QEMU capabilities)
    run/   -> /run                 (daemon sockets and pid files, the namespace marker,
                                    lock/ for libvirt's pty locks: /var/lock is /run/lock)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from virtlife import config
from virtlife.errors import LabError
from virtlife.lab import hostprep, labnet
from virtlife.lab.common import accepts_unix, locked, missing_tool, mount_points, write_atomic
from virtlife.lab.hostprep import DAEMONS, DaemonPaths
from virtlife.procs import comm, start_time

DEFAULT_STATE_DIR = Path("/run/virtlife-lab")
STATE_FILE = "state.json"
MARKER = "virtlife-privhost"  # in the host's /run: its token, proof that a namespace is it

# Each tree the host gets of its own: its path there, and the host directory's subdir.
# /run comes last: once it is replaced, the host directory (under the state directory,
# normally in /run) can no longer be reached by path inside the namespace.
PRIVATE_TREES: tuple[tuple[Path, str], ...] = (
    (Path("/etc/libvirt"), "etc"),
    (Path("/var/lib/libvirt"), "lib"),
    (Path("/var/log/libvirt"), "log"),
    (Path("/var/cache/libvirt"), "cache"),
    (Path("/run"), "run"),
)
PRIVATE_DIR = Path("/var/lib/libvirt/virtlife-private")  # only the host sees this path

# The namespaces a host has of its own, as unshare(1) and nsenter(1) flags; a host
# started with ``netns`` also enters that network namespace ("--net").
_NAMESPACES: tuple[str, ...] = ("--mount",)
NETNS_DIR = labnet.NETNS_DIR  # where ``ip netns`` names network namespaces
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
_SAFE_PATH = re.compile(r"[A-Za-z0-9/._-]+\Z")  # goes into a URI and config files
_SUN_PATH_MAX = 107  # a Unix socket path is at most 108 bytes with its NUL
_LONGEST_SOCKET = "run/libvirt/virtlogd-admin-sock"

ConfValue = str | int | Sequence[str]

# Added to the copy of the system's qemu.conf on every private host.
QEMU_SETTINGS: dict[str, ConfValue] = {
    # the hosts share the guest's kernel, initrd and images: a private host must never
    # change their owners (the system libvirtd records and restores them, and refuses
    # "Setting different DAC user or group ... already in use" when another daemon
    # changed them under its running guests). Its QEMUs run as root and read them as
    # they are.
    "remember_owner": 0,
    "dynamic_ownership": 0,
    "user": "root",
    "group": "root",
    # both libvirtds would otherwise use the same machine/qemu-ID-NAME cgroups
    "cgroup_controllers": [],
}


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Proc:
    """A process known by pid and start time, so that a reused pid is never taken for it."""

    pid: int
    start: int  # clock ticks after boot (field 22 of /proc/PID/stat)

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    @classmethod
    def owner(cls, pid: int | None, doing: str) -> Proc | None:
        """Process ``pid``, whose life bounds what is about to be made (None without a
        ``pid``); LabError "cannot DOING: its owner pid PID is not running" without it."""
        if pid is None:
            return None
        proc = cls.of(pid)
        if proc is None:
            raise LabError(f"cannot {doing}: its owner pid {pid} is not running")
        return proc


def _mount_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _members(token: str) -> list[int]:
    """Every process in a mount namespace whose /run holds this host's marker ``token``."""
    own = _mount_ns("self")
    by_ns: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (ns := _mount_ns(entry)) is not None and ns != own:
            by_ns.setdefault(ns, []).append(int(entry))
    found: list[int] = []
    for pids in by_ns.values():
        for pid in pids:
            try:
                marker = Path(f"/proc/{pid}/root/run/{MARKER}").read_text().strip()
            except OSError:
                continue  # exited meanwhile, or not readable: ask the next one
            if marker == token:
                found += pids
            break
    return sorted(found)


# --------------------------------------------------------------------------- state


@dataclass
class _State:
    name: str
    token: str
    host_uuid: str
    owner: Proc | None
    holder: Proc | None = None
    daemons: dict[str, Proc] = field(default_factory=dict)
    netns: str | None = None  # the named network namespace it runs in, if any
    listen: bool = False  # libvirtd started with --listen

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*_NAMESPACES, "--net") if self.netns else _NAMESPACES

    def to_json(self) -> str:
        def proc(p: Proc | None) -> dict[str, int] | None:
            return None if p is None else {"pid": p.pid, "start": p.start}

        return json.dumps({
            "name": self.name, "token": self.token, "host_uuid": self.host_uuid,
            "owner": proc(self.owner), "holder": proc(self.holder),
            "daemons": {d: proc(p) for d, p in self.daemons.items()},
            "netns": self.netns, "listen": self.listen,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> _State:
        data = json.loads(text)

        def proc(d: dict[str, int] | None) -> Proc | None:
            return None if d is None else Proc(int(d["pid"]), int(d["start"]))

        daemons = {k: p for k, v in data["daemons"].items() if (p := proc(v)) is not None}
        netns = data.get("netns")
        return cls(str(data["name"]), str(data["token"]), str(data["host_uuid"]),
                   proc(data["owner"]), proc(data["holder"]), daemons,
                   None if netns is None else str(netns), bool(data.get("listen", False)))


def _read_state(directory: Path) -> _State | None:
    try:
        return _State.from_json((directory / STATE_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_state(directory: Path, state: _State) -> None:
    write_atomic(directory / STATE_FILE, state.to_json())


def _token(directory: Path, state: _State | None) -> str | None:
    if state is not None:
        return state.token
    try:
        return (directory / "run" / MARKER).read_text().strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------- the host


class PrivateHost:
    """A running private host. Get one from ``start`` (or ``attach``); ``stop`` ends it."""

    def __init__(self, directory: Path, state: _State,
                 holder_proc: subprocess.Popen[bytes] | None = None) -> None:
        self.dir = directory
        self._state = state
        self._holder_proc = holder_proc  # ours to reap when this process started it

    def __repr__(self) -> str:
        return f"PrivateHost({self.name!r}, {self.uri!r})"

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def host_uuid(self) -> str:
        return self._state.host_uuid

    @property
    def socket(self) -> Path:
        """libvirtd's read-write socket, as the root namespace sees it."""
        return DaemonPaths(run_dir=self.dir / "run").socket("libvirtd")

    @property
    def uri(self) -> str:
        return host_uri(self.socket)

    @property
    def pids(self) -> dict[str, int]:
        """The processes this module started and that are running: holder and daemons."""
        procs = {"holder": self._state.holder, **self._state.daemons}
        return {k: p.pid for k, p in procs.items() if p is not None and p.alive()}

    @property
    def daemon_paths(self) -> DaemonPaths:
        """Where ``hostprep`` finds this host's daemons, and how it runs them there."""
        return DaemonPaths(run_dir=self.dir / "run", log_dir=self.dir / "log",
                           launcher=("nsenter", f"--target={self._holder().pid}",
                                     *self._state.namespaces, "--"),
                           libvirtd_args=("--listen",) if self._state.listen else ())

    def processes(self) -> list[int]:
        """Every process running in the host: holder, daemons, the QEMUs they started."""
        return _members(self._state.token)

    def inside(self, path: str | Path) -> Path:
        """``path`` as the host sees it, reachable from here (through /proc/HOLDER/root)."""
        p = Path(path)
        if not p.is_absolute():
            raise LabError(f"cannot look up {p} in private host {self.name}: give an "
                           "absolute path")
        return Path(f"/proc/{self._holder().pid}/root") / p.relative_to("/")

    def run(self, argv: Sequence[str], *, timeout: float = 30.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host's namespaces; with ``check``, a failure raises."""
        command = [*self.daemon_paths.launcher, *argv]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise LabError(f"cannot run {argv[0]} in private host {self.name}: {e}") from e
        if check and done.returncode != 0:
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            detail = " ".join(lines)[:300] or f"exit status {done.returncode}"
            raise LabError(f"{' '.join(argv)} failed in private host {self.name}: {detail}")
        return done

    def start_daemons(self, *, timeout: float = 30.0) -> list[str]:
        """Start whichever of virtlogd and libvirtd does not answer; record their pids."""
        actions = hostprep.ensure_daemons(timeout, self.daemon_paths)
        ns = _mount_ns(self._holder().pid)
        for daemon in DAEMONS:
            pid_file = self.daemon_paths.pid_file(daemon)
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError) as e:
                raise LabError(f"{daemon} of private host {self.name} answers, but its pid "
                               f"file {pid_file} cannot be read: {e}") from e
            proc = Proc.of(pid)
            if proc is None or _mount_ns(pid) != ns:
                raise LabError(f"{daemon} of private host {self.name} answers, but pid "
                               f"{pid} of {pid_file} is not running in the host")
            self._state.daemons[daemon] = proc
        _write_state(self.dir, self._state)
        return actions

    def stop_daemon(self, daemon: str, *, timeout: float = 15.0) -> str | None:
        """Stop one of the host's daemons (SIGTERM, then SIGKILL) and wait until it is gone.

        Returns what was done, or None if it was not running.
        """
        proc = self._state.daemons.pop(daemon, None)
        _write_state(self.dir, self._state)
        if proc is None or not proc.alive():
            return None
        _end({proc: daemon}, timeout)
        return f"stopped {daemon} (pid {proc.pid})"

    def stop(self, *, timeout: float = 30.0) -> list[str]:
        """Stop everything the host runs, remove its directory; returns what was done."""
        state_dir = self.dir.parent
        with locked(state_dir, timeout, tidy=True):
            return _teardown(self.dir, self._state, self._holder_proc, timeout)

    def __enter__(self) -> PrivateHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _holder(self) -> Proc:
        holder = self._state.holder
        if holder is None or not holder.alive():
            raise LabError(f"private host {self.name} is not running (its namespace holder "
                           "is gone); stop it and start it again")
        return holder


def display_ports(name: str, netns: str | None) -> dict[str, ConfValue]:
    """VNC ports of their own for a host in this machine's network namespace: another
    libvirtd here (the system's, another host's) allocates from 5900 too, and two
    daemons checking the same free port race (QEMU then fails "Failed to find an
    available port"). A host in a namespace of its own needs none."""
    if netns is not None:
        return {}
    low = 10000 + zlib.crc32(name.encode()) % 300 * 100
    return {"remote_display_port_min": low, "remote_display_port_max": low + 99}


def host_uri(socket: Path) -> str:
    """The libvirt URI of the QEMU driver behind the libvirtd socket ``socket``."""
    return f"qemu+unix:///system?socket={socket}"


def start(name: str, *, state_dir: Path = DEFAULT_STATE_DIR, owner_pid: int | None = None,
          shared: Sequence[Path] | None = None,
          libvirtd_conf: Mapping[str, ConfValue] | None = None,
          qemu_conf: Mapping[str, ConfValue] | None = None,
          netns: str | None = None, listen: bool = False,
          timeout: float = 30.0) -> PrivateHost:
    """Start private host ``name`` (directory ``state_dir/name``) and return it.

    ``owner_pid``: the process whose life bounds the host's (a test session): once it
    has died, the host counts as stale. Without one, the host is stale when its holder
    or libvirtd is gone. ``shared``: paths that must stay visible to the host (default:
    the test guest and images directories). ``libvirtd_conf`` and ``qemu_conf``: extra
    settings for its configuration files. ``netns``: a named network namespace (made
    with ``ip netns add``, its addresses set) to run in; ``listen``: libvirtd serves
    TCP (``listen_tcp`` and friends in ``libvirtd_conf``). A stale host of the same name
    is cleaned up first; a live one is refused. Raises LabError, after undoing what it
    did, on failure.
    """
    _check_can_run(name)
    if netns is not None and not (_NAME.match(netns) and (NETNS_DIR / netns).exists()):
        raise LabError(f"cannot start private host {name}: there is no network namespace "
                       f"{netns!r} ({NETNS_DIR / netns}); create it with `ip netns add`")
    directory = state_dir / name
    _check_layout(name, state_dir, directory,
                  [config.guest_dir(), config.images_dir()] if shared is None else shared)
    libvirtd_settings = dict(libvirtd_conf or {})
    qemu_settings = {**QEMU_SETTINGS, **display_ports(name, netns), **(qemu_conf or {})}
    for value in (*libvirtd_settings.values(), *qemu_settings.values()):
        _conf_value(value)  # refuse a bad value before anything is written
    owner = Proc.owner(owner_pid, f"start private host {name}")
    with locked(state_dir, timeout):
        if directory.exists():
            _clear_stale(directory, timeout)
        state = _State(name, token=uuid.uuid4().hex, host_uuid=str(uuid.uuid4()),
                       owner=owner, netns=netns, listen=listen)
        holder_proc: subprocess.Popen[bytes] | None = None
        try:
            _build_tree(directory, state, libvirtd_settings, qemu_settings)
            holder_proc, state.holder = _spawn_holder(name, timeout, netns)
            _write_state(directory, state)
            host = PrivateHost(directory, state, holder_proc)
            for target, sub in PRIVATE_TREES:
                host.run(["mount", "--no-mtab", "--bind", str(directory / sub), str(target)],
                         timeout=timeout)
            if netns:  # /sys/class/net of its own network namespace, as `ip netns exec`
                host.run(["mount", "--no-mtab", "-t", "sysfs", "sysfs", "/sys"],
                         timeout=timeout)
            host.start_daemons(timeout=timeout)
        except BaseException as e:
            try:
                _teardown(directory, state, holder_proc, timeout)
            except LabError as cleanup:
                e.add_note(f"cleaning up private host {name} failed too: {cleanup}")
            if isinstance(e, LabError | KeyboardInterrupt | SystemExit):
                raise
            raise LabError(f"cannot start private host {name}: {e}") from e
    return host


def attach(name: str, *, state_dir: Path = DEFAULT_STATE_DIR) -> PrivateHost:
    """The private host ``name`` that another process started (to stop it, say)."""
    directory = state_dir / name
    state = _read_state(directory)
    if state is None:
        raise LabError(f"there is no private host {name}: {directory / STATE_FILE} is "
                       "missing or unreadable; `sweep` removes a half-made host")
    return PrivateHost(directory, state)


def sweep(state_dir: Path = DEFAULT_STATE_DIR, *, timeout: float = 30.0) -> list[str]:
    """Clean up every stale host under ``state_dir`` (owner or holder dead, libvirtd
    gone, or never finished); hosts in use are left alone. Returns what was done."""
    if not state_dir.is_dir():
        return []
    actions: list[str] = []
    with locked(state_dir, timeout, tidy=True):
        for directory in sorted(p for p in state_dir.iterdir() if p.is_dir()):
            if _in_use(directory, _read_state(directory)) is None:
                actions += _clear_stale(directory, timeout)
    return actions


def stop_all(state_dir: Path, *, timeout: float = 30.0) -> list[str]:
    """Stop every host under ``state_dir``, in use or not, and remove the directory.

    For a state directory of one's own (a test's); ``sweep`` is the polite version.
    """
    if not state_dir.is_dir():
        return []
    actions: list[str] = []
    with locked(state_dir, timeout, tidy=True):
        for directory in sorted(p for p in state_dir.iterdir() if p.is_dir()):
            actions += _teardown(directory, _read_state(directory), None, timeout)
    return actions


@contextlib.contextmanager
def private_host(name: str, **options: object) -> Iterator[PrivateHost]:
    """``with private_host("a") as host:``: ``start`` with ``options``, always ``stop``."""
    host = start(name, **options)  # type: ignore[arg-type]
    try:
        yield host
    finally:
        host.stop()


# --------------------------------------------------------------------------- start


def _check_can_run(name: str) -> None:
    if not _NAME.match(name):
        raise LabError(f"cannot start private host {name!r}: a name is 1-32 lower-case "
                       "letters, digits and dashes, starting with a letter or digit")
    ok, why = hostprep.can_run_real_stack()
    if not ok:
        raise LabError(f"cannot start private host {name}: {why}")
    if (tool := missing_tool(("unshare", "nsenter", "mount", "sleep"))) is not None:
        raise LabError(f"cannot start private host {name}: {tool} is missing; install "
                       "util-linux and coreutils")


def _check_layout(name: str, state_dir: Path, directory: Path,
                  shared: Sequence[Path]) -> None:
    """Refuse a state directory or shared path that the host's own trees would hide."""
    if not state_dir.is_absolute() or not _SAFE_PATH.match(str(state_dir)):
        raise LabError(f"cannot start private host {name}: the state directory {state_dir} "
                       "must be an absolute path of letters, digits and / . _ -")
    if len(str(directory / _LONGEST_SOCKET)) > _SUN_PATH_MAX:
        raise LabError(f"cannot start private host {name}: its socket paths under "
                       f"{directory} exceed {_SUN_PATH_MAX} bytes; use a shorter state "
                       "directory or name")
    trees = [(t, t.resolve()) for t, _ in PRIVATE_TREES]
    state_real = state_dir.resolve()
    for tree, real in trees[:-1]:  # only /run may hold the state directory: it is bound last
        if state_real == real or real in state_real.parents:
            raise LabError(f"cannot start private host {name}: the state directory "
                           f"{state_dir} lies under {tree}, which the host replaces")
    for path in shared:
        real = Path(path).resolve()
        for tree, tree_real in trees:
            if real == tree_real or tree_real in real.parents:
                raise LabError(f"cannot start private host {name}: {path} must stay visible "
                               f"to it, but lies under {tree}, which the host replaces; "
                               "move it (VIRTLIFE_CACHE, VIRTLIFE_IMAGES)")


def _build_tree(directory: Path, state: _State, libvirtd_settings: Mapping[str, ConfValue],
                qemu_settings: Mapping[str, ConfValue]) -> None:
    directory.mkdir(mode=0o755)
    run = directory / "run"
    (run / "libvirt").mkdir(parents=True)
    (run / MARKER).write_text(state.token + "\n")  # first: a half-made host is still found
    # /var/lock is /run/lock: libvirt locks a serial console's pty there (LCK.._pts_N),
    # and without it every `console` on the host fails. Mode 1777, as the system's.
    (run / "lock").mkdir()
    os.chmod(run / "lock", 0o1777)  # mkdir's mode would be masked by the umask

    etc = directory / "etc"
    shutil.copytree("/etc/libvirt", etc, symlinks=True, ignore=_not_copied)
    header = f"virtlife private host {state.name}"
    _edit_conf(etc / "libvirtd.conf", {
        "host_uuid": state.host_uuid,
        "log_outputs": "3:file:/var/log/libvirt/libvirtd.log",
        **libvirtd_settings}, header)
    _edit_conf(etc / "virtlogd.conf",
               {"log_outputs": "3:file:/var/log/libvirt/virtlogd.log"}, header)
    _edit_conf(etc / "qemu.conf", qemu_settings, header)

    lib = directory / "lib"
    lib.mkdir()
    _copy_owner_and_mode(Path("/var/lib/libvirt"), lib)
    (lib / PRIVATE_DIR.relative_to("/var/lib/libvirt")).mkdir()
    (directory / "log" / "qemu").mkdir(parents=True)  # serial logs of the test guest
    cache = directory / "cache"
    if Path("/var/cache/libvirt").is_dir():  # QEMU's capabilities: saves a probe of 1-3 s
        shutil.copytree("/var/cache/libvirt", cache, symlinks=True)
    else:
        cache.mkdir()


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """What a fresh host must not inherit: the system's domains, networks, pools, secrets."""
    where = Path(folder).relative_to("/etc/libvirt").as_posix()
    if where == ".":
        return {n for n in names if n in ("storage", "secrets")}
    if where == "qemu":
        return {n for n in names if n.endswith(".xml") or n in ("autostart", "networks")}
    return set()


def _copy_owner_and_mode(source: Path, target: Path) -> None:
    st = source.stat()
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, st.st_mode & 0o7777)


def _edit_conf(path: Path, settings: Mapping[str, ConfValue], header: str) -> None:
    text = path.read_text() if path.exists() else ""
    path.write_text(override_conf(text, settings, header))


def override_conf(text: str, settings: Mapping[str, ConfValue], header: str) -> str:
    """libvirt config ``text`` with each active setting of a key in ``settings`` commented
    out (a list over several lines included) and ``settings`` appended under ``header``.

    libvirt reads the first assignment of a key, so appending alone would not do.
    """
    out: list[str] = []
    in_list = False  # inside a multi-line list value being commented out
    for line in text.splitlines():
        if in_list:
            out.append("#" + line)
            in_list = "]" not in line
            continue
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if m and m.group(1) in settings:
            out.append("#" + line)
            value = line[m.end():]
            in_list = "[" in value and "]" not in value
            continue
        out.append(line)
    if settings:
        out += ["", f"# --- {header}"]
        out += [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
    return "\n".join(out) + "\n"


def _conf_value(value: ConfValue) -> str:
    if isinstance(value, bool | int):
        return str(int(value))

    def quoted(s: str) -> str:
        if not isinstance(s, str) or any(c in s for c in '"\\\n'):
            raise LabError(f"cannot write {s!r} into a libvirt config file: a value is a "
                           "string without quotes, backslashes or newlines")
        return f'"{s}"'

    if isinstance(value, str):
        return quoted(value)
    items = [quoted(s) for s in value]
    return "[ " + ", ".join(items) + " ]" if items else "[ ]"


def _spawn_holder(name: str, timeout: float,
                  netns: str | None = None) -> tuple[subprocess.Popen[bytes], Proc]:
    """A process in new namespaces (and the network namespace ``netns``) that keeps them
    alive; returned once it is ready.

    Ready means it has exec'd ``sleep``: unshare(1) does that after making every mount
    private, so nothing mounted there afterwards can propagate back to the root namespace.
    """
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [*(("nsenter", f"--net={NETNS_DIR / netns}", "--") if netns else ()),
                 "unshare", *_NAMESPACES, "--propagation", "private", "--",
                 "sleep", "infinity"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)  # a Ctrl-C of our terminal must not reach it
        except OSError as e:
            raise LabError(f"cannot start private host {name}: unshare: {e}") from e
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err.seek(0)
                detail = err.read().decode(errors="replace").strip()
                raise LabError(f"cannot start private host {name}: unshare failed: "
                               f"{detail or f'exit status {proc.returncode}'}")
            holder = Proc.of(proc.pid)
            if holder is not None and comm(proc.pid) == "sleep":
                return proc, holder
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise LabError(f"cannot start private host {name}: its namespace holder "
                               f"was not ready within {timeout:.0f} s")
            time.sleep(0.002)


# --------------------------------------------------------------------------- stop


def _in_use(directory: Path, state: _State | None) -> str | None:
    """Why the host in ``directory`` is not stale, or None when it is."""
    if state is None:
        return None
    if state.owner is not None:
        return f"its owner pid {state.owner.pid} is running" if state.owner.alive() else None
    holder_up = state.holder is not None and state.holder.alive()
    if holder_up and accepts_unix(directory / "run" / "libvirt" / "libvirt-sock"):
        return "it is running"
    return None


def _clear_stale(directory: Path, timeout: float) -> list[str]:
    state = _read_state(directory)
    why = _in_use(directory, state)
    if why is not None:
        raise LabError(f"cannot start private host {directory.name}: it already exists and "
                       f"{why}; stop it first (or pick another name)")
    done = _teardown(directory, state, None, timeout)
    return [f"cleaned up an earlier private host {directory.name}: " + "; ".join(done)]


def _teardown(directory: Path, state: _State | None,
              holder_proc: subprocess.Popen[bytes] | None, timeout: float) -> list[str]:
    """End every process of the host, then remove its directory; returns what was done."""
    targets: dict[Proc, str] = {}
    if state is not None:
        for label, proc in [("holder", state.holder), *state.daemons.items()]:
            if proc is not None and proc.alive():
                targets[proc] = label
    token = _token(directory, state)
    actions: list[str] = []
    for _round in range(3):  # again for a process started while the others were ending
        for pid in _members(token) if token else []:
            proc = Proc.of(pid)
            if proc is not None and proc not in targets:
                targets[proc] = comm(pid) or "?"  # a QEMU its libvirtd started, a helper
        if not targets:
            break
        _end(targets, timeout)
        actions.append("stopped " + ", ".join(f"{label} ({p.pid})"
                                              for p, label in targets.items()))
        targets = {}
    if holder_proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            holder_proc.wait(timeout)  # reap our child
    # the host's mounts lived in its namespace and went with it; any in ours below the
    # directory (none today) would keep rmtree from removing it
    for mount in _mounts_under(directory):
        subprocess.run(["umount", "--lazy", str(mount)], capture_output=True, check=False,
                       timeout=timeout)
        actions.append(f"unmounted {mount}")
    if directory.exists():
        shutil.rmtree(directory)
        actions.append(f"removed {directory}")
    return actions


def _end(targets: Mapping[Proc, str], timeout: float) -> None:
    """SIGTERM every process of ``targets``, SIGKILL those still there after a while."""
    for sig, wait_s in ((signal.SIGTERM, timeout / 2), (signal.SIGKILL, timeout / 2)):
        for proc in targets:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
        deadline = time.monotonic() + wait_s
        while any(p.alive() for p in targets):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        else:
            return
    left = ", ".join(f"{label} ({p.pid})" for p, label in targets.items() if p.alive())
    raise LabError(f"cannot stop {left}: still running after SIGKILL")


def _mounts_under(directory: Path) -> list[Path]:
    """Mount points in this namespace at or below ``directory``, deepest first."""
    top = directory.resolve()
    points = [p for p in mount_points() if p == top or top in p.parents]
    return sorted(points, key=lambda p: len(p.parts), reverse=True)
