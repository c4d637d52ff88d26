"""The multi-host lab: N libvirt "hosts" on this machine that reach one another over a
private network, share a storage directory, and can migrate VMs between them.

Role: ``up`` brings up hosts ``lab-a``, ``lab-b``, ...: first the network of ``labnet``
(a bridge in the root namespace, a network namespace and veth per host), then in each
namespace a private host (``privhost``: its own mount namespace, /etc/libvirt, /run,
virtlogd and libvirtd) whose libvirtd listens on TCP at the host's address (auth none:
lab only), with its own ``host_uuid`` and its address as ``migration_address``; then a
dir pool ``lab-shared`` on every host over the same directory. ``down`` ends exactly
what the lab started (privhost knows its processes by pid and start time), deletes its
namespaces, veths and bridge, and cleans up just as well after a lab whose processes
died or whose ``up`` was killed (``lab.json`` is written before anything is made, and
everything made carries the lab's mark). ``status`` says how each host is. One lab per
machine: it owns the bridge and the segment. The decisions (is the lab up, stale, in
someone else's use; which inventory rows are the lab's) are plain functions.

Shared storage: a host's mount namespace is a copy of the root's in which only the
libvirt trees and /run are replaced, so the pool directory (like the test guest's
kernel and initrd under /var/cache/virtlife/guest) is the same directory at the same
path for every host and for the client, without a mount of its own. libvirt cannot
tell that it is shared: migrations between lab hosts need ``--unsafe``
(``VIR_MIGRATE_UNSAFE``); ``LabStatus.as_dict()["pool"]["shared"]`` is the lab's word
that it is.

It must not import libvirt (it uses virsh, sockets and processes), touch the inventory
(the CLI does, through the services), or signal a process privhost cannot prove is a
lab host's.

State directory (``STATE``, default /run/virtlife-lab-net)::

    lab.json      token, size, segment, bridge, pool, owner (pid + start time)
    hosts/NAME    each host's private host directory (privhost's layout)
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from virtlife import config
from virtlife.errors import LabError
from virtlife.lab import hostprep, labnet, privhost
from virtlife.lab.common import (
    Say,
    accepts_tcp,
    locked,
    missing_tool,
    stderr_of,
    virsh,
    write_atomic,
)
from virtlife.lab.labnet import NetPlan
from virtlife.lab.privhost import Proc

DEFAULT_STATE_DIR = Path("/run/virtlife-lab-net")
LAB_FILE = "lab.json"
HOSTS_DIR = "hosts"
POOL_NAME = "lab-shared"
PROCESSES = ("holder", "virtlogd", "libvirtd")  # what privhost starts per host
_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._-]+\Z")  # goes into virsh arguments and pool XML
_TOOLS = ("ip", "nsenter", "unshare", "virsh", "timeout", "bash")


def default_pool_dir() -> Path:
    """The shared directory of the lab's pool: ``$VIRTLIFE_CACHE/lab-shared``."""
    return config.cache_dir() / POOL_NAME


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """What ``lab.json`` holds: enough to find everything a lab made."""

    token: str
    size: int
    segment: str
    bridge: str
    pool_dir: Path
    owner: Proc | None
    started_at: str
    netns_dir_made: bool = False  # /run/netns did not exist before: remove it when empty
    pool_name: str = POOL_NAME
    complete: bool = False  # `up` finished: every host, pool and check is in place

    @property
    def plan(self) -> NetPlan:
        return labnet.plan(self.size, self.segment, self.bridge)

    def to_json(self) -> str:
        owner = None if self.owner is None else {"pid": self.owner.pid,
                                                 "start": self.owner.start}
        return json.dumps({
            "token": self.token, "size": self.size, "segment": self.segment,
            "bridge": self.bridge, "pool_name": self.pool_name,
            "pool_dir": str(self.pool_dir), "owner": owner,
            "started_at": self.started_at, "netns_dir_made": self.netns_dir_made,
            "complete": self.complete,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Record:
        d = json.loads(text)
        o = d.get("owner")
        return cls(str(d["token"]), int(d["size"]), str(d["segment"]), str(d["bridge"]),
                   Path(d["pool_dir"]), None if o is None else Proc(int(o["pid"]),
                                                                    int(o["start"])),
                   str(d["started_at"]), bool(d.get("netns_dir_made", False)),
                   str(d.get("pool_name", POOL_NAME)), bool(d.get("complete", False)))


def read_record(state_dir: Path = DEFAULT_STATE_DIR) -> Record | None:
    """The lab's record, or None when there is none (or it cannot be read)."""
    try:
        return Record.from_json((state_dir / LAB_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError, LabError):
        return None


def _write_record(state_dir: Path, record: Record) -> None:
    write_atomic(state_dir / LAB_FILE, record.to_json())


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    uri: str
    netns: str
    host_uuid: str | None
    pids: Mapping[str, int]  # the running ones of PROCESSES
    reachable: bool  # libvirtd accepts TCP at address:16509 from the root namespace

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in PROCESSES if p not in self.pids)

    @property
    def problem(self) -> str | None:
        if self.missing:
            return f"{self.name}: {', '.join(self.missing)} not running"
        if not self.reachable:
            return f"{self.name}: libvirtd does not answer at {self.address}:" \
                   f"{labnet.LIBVIRT_TCP_PORT}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "uri": self.uri,
                "netns": self.netns, "host_uuid": self.host_uuid, "pids": dict(self.pids),
                "missing": list(self.missing), "reachable": self.reachable}


@dataclass(frozen=True)
class LabStatus:
    """A lab as it is now. ``state``: ``up`` (every host runs and answers), ``broken``
    (some do not, and its owner still runs), or ``stale`` (its owner has ended, or it
    has none and some host is down: the next ``up`` or ``down`` cleans it up)."""

    state: str
    reason: str
    record: Record
    hosts: tuple[HostStatus, ...]

    def host(self, name: str) -> HostStatus:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"the lab has no host {name}: it has "
                       f"{', '.join(h.name for h in self.hosts)}")

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "state": self.state, "reason": self.reason, "size": r.size,
            "segment": r.segment, "bridge": r.bridge,
            "bridge_address": str(r.plan.bridge_address),
            "owner_pid": None if r.owner is None else r.owner.pid,
            "started_at": r.started_at,
            "pool": {"name": r.pool_name, "path": str(r.pool_dir), "shared": True},
            "hosts": [h.as_dict() for h in self.hosts],
        }


def condition(owner: Proc | None, owner_alive: bool, hosts: Sequence[HostStatus],
              complete: bool = True) -> tuple[str, str]:
    """(state, reason) of a lab, from its owner, its hosts and whether its ``up``
    finished (see ``LabStatus``)."""
    if owner is not None and not owner_alive:
        return "stale", f"its owner pid {owner.pid} has ended"
    if not complete:
        return "stale", "its `lab up` did not finish (or is still running)"
    problems = [p for h in hosts if (p := h.problem) is not None]
    if not problems:
        return "up", ""
    if owner is not None:
        return "broken", "; ".join(problems) + f" (its owner pid {owner.pid} is running)"
    return "stale", "; ".join(problems)


@dataclass(frozen=True)
class UpDecision:
    action: str  # "create" (after cleaning up what is there), "keep" or "refuse"
    reason: str


def decide_up(current: LabStatus | None, wanted: NetPlan, owner: Proc | None) -> UpDecision:
    """What ``up`` does with the lab that is there (``current``)."""
    if current is None:
        return UpDecision("create", "")
    rec = current.record
    if current.state == "stale":
        return UpDecision("create", f"cleaning up an earlier lab: {current.reason}")
    if rec.owner != owner:
        whose = (f"owned by pid {rec.owner.pid}" if rec.owner is not None
                 else "started without --owner-pid")
        return UpDecision("refuse", f"a lab of {rec.size} hosts is up ({whose}); take it "
                                    "down first: virtlife lab down")
    if current.state != "up":
        return UpDecision("create", f"rebuilding the lab: {current.reason}")
    if rec.size != len(wanted.hosts) or IPv4Network(rec.segment) != wanted.segment:
        return UpDecision("refuse", f"the lab is up with {rec.size} hosts on {rec.segment}, "
                                    f"not {len(wanted.hosts)} on {wanted.segment}; take it "
                                    "down first to change it: virtlife lab down")
    return UpDecision("keep", f"the lab is already up ({rec.size} hosts)")


def status(state_dir: Path = DEFAULT_STATE_DIR) -> LabStatus | None:
    """The lab's status, or None when no lab is recorded."""
    record = read_record(state_dir)
    return None if record is None else _status(state_dir, record)


def _status(state_dir: Path, record: Record) -> LabStatus:
    hosts: list[HostStatus] = []
    for h in record.plan.hosts:
        try:
            ph = privhost.attach(h.name, state_dir=state_dir / HOSTS_DIR)
            pids, host_uuid = ph.pids, ph.host_uuid
        except LabError:
            pids, host_uuid = {}, None
        hosts.append(HostStatus(h.name, str(h.address), h.uri, h.netns, host_uuid, pids,
                                accepts_tcp(h.address)))
    owner_alive = record.owner is not None and record.owner.alive()
    state, reason = condition(record.owner, owner_alive, hosts, record.complete)
    return LabStatus(state, reason, record, tuple(hosts))


def host(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> privhost.PrivateHost:
    """Lab host ``name`` as a private host: to run a command in it (``run``), stop or
    start its daemons (``stop_daemon``, ``start_daemons``), or list its processes."""
    return privhost.attach(name, state_dir=state_dir / HOSTS_DIR)


# --------------------------------------------------------------------------- inventory


@dataclass(frozen=True)
class InventoryChanges:
    add: tuple[tuple[str, str], ...]  # (name, uri) the lab's hosts that are missing
    remove: tuple[str, ...]  # rows of a larger earlier lab
    conflicts: tuple[str, ...]  # rows that hold a lab host's name with another URI


def is_lab_row(name: str, uri: str, segments: Sequence[IPv4Network | str]) -> bool:
    """Whether the inventory row (name, uri) is a lab host's: ``lab-X`` at
    ``qemu+tcp://ADDRESS/system`` with ADDRESS in one of the lab's ``segments``."""
    m = re.fullmatch(r"qemu\+tcp://([0-9.]+)/system", uri)
    if not re.fullmatch(re.escape(labnet.HOST_PREFIX) + r"[a-z]", name) or m is None:
        return False
    try:
        address = IPv4Address(m.group(1))
    except ValueError:
        return False
    return any(address in IPv4Network(s) for s in segments)


def inventory_changes(rows: Sequence[tuple[str, str]], p: NetPlan) -> InventoryChanges:
    """How the inventory's ``rows`` (name, uri) must change to hold the lab of ``p``."""
    wanted = {h.name: h.uri for h in p.hosts}
    present: set[str] = set()
    remove: list[str] = []
    conflicts: list[str] = []
    for name, uri in rows:
        if name in wanted:
            if uri == wanted[name]:
                present.add(name)
            else:
                conflicts.append(f"the inventory has a host {name} at {uri}, not at the "
                                 f"lab's {wanted[name]}; remove it (virtlife host remove "
                                 f"{name})")
        elif is_lab_row(name, uri, [p.segment]):
            remove.append(name)
    add = tuple((n, u) for n, u in wanted.items() if n not in present)
    return InventoryChanges(add, tuple(remove), tuple(conflicts))


# --------------------------------------------------------------------------- up / down


@dataclass(frozen=True)
class UpResult:
    status: LabStatus
    actions: list[str]
    notes: list[str]
    already_up: bool = False


def up(n: int = 2, *, segment: IPv4Network | str = labnet.SEGMENT,
       owner_pid: int | None = None, state_dir: Path = DEFAULT_STATE_DIR,
       pool_dir: Path | None = None, progress: Say | None = None,
       timeout: float = 60.0) -> UpResult:
    """Bring up a lab of ``n`` hosts (see the module doc) and return its status.

    ``owner_pid``: the process whose life bounds the lab's (a test session); without
    one, the lab lasts until ``down``. A lab already up with the same size, segment and
    owner is kept; a stale one, or a broken one of the same owner, is cleaned up and
    built again; any other is refused. Raises LabError, after undoing what it did.
    """
    say: Say = progress or (lambda _m: None)
    wanted = labnet.plan(n, segment)
    pool = pool_dir or default_pool_dir()
    _check_can_run(pool)
    owner = Proc.owner(owner_pid, "bring the lab up")
    notes = [note] if (note := _postcopy_note()) else []
    with locked(state_dir, timeout, tidy=True):  # one up/down at a time
        record = read_record(state_dir)
        current = _status(state_dir, record) if record is not None else None
        decision = decide_up(current, wanted, owner)
        if decision.action == "refuse":
            raise LabError(f"cannot bring the lab up: {decision.reason}")
        if decision.action == "keep":
            assert current is not None
            return UpResult(current, [], [decision.reason, *notes], already_up=True)
        if decision.reason:
            say(decision.reason)
        actions = _teardown(state_dir, record)
        problems = labnet.clashes(wanted, labnet.read_view())
        if problems:
            raise LabError(f"cannot bring the lab up on {wanted.segment}: "
                           + "; ".join(problems)
                           + "; pick another segment with --segment, or remove them")
        record = Record(token=uuid.uuid4().hex, size=n, segment=str(wanted.segment),
                        bridge=wanted.bridge, pool_dir=pool, owner=owner,
                        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                        netns_dir_made=not labnet.NETNS_DIR.exists())
        _write_record(state_dir, record)  # first: a lab killed from here on is found
        try:
            actions += _build(state_dir, record, wanted, say, timeout)
            record = dataclasses.replace(record, complete=True)
            _write_record(state_dir, record)
        except BaseException as e:
            try:
                _teardown(state_dir, record)
            except LabError as cleanup:
                e.add_note(f"cleaning up the lab failed too: {cleanup}")
            if isinstance(e, LabError | KeyboardInterrupt | SystemExit):
                raise
            raise LabError(f"cannot bring the lab up: {e}") from e
        return UpResult(_status(state_dir, record), actions, notes)


def down(state_dir: Path = DEFAULT_STATE_DIR, *,
         timeout: float = 60.0) -> tuple[Record | None, list[str]]:
    """Take the lab down, or clean up what a dead one left; (its record, what was done).

    Raises LabError when something could not be removed (after removing the rest; the
    record is kept, so that the next ``down`` tries again).
    """
    with locked(state_dir, timeout, tidy=True):
        record = read_record(state_dir)
        return record, _teardown(state_dir, record)


def _build(state_dir: Path, record: Record, p: NetPlan, say: Say,
           timeout: float) -> list[str]:
    say(f"network: bridge {p.bridge} on {p.segment}, a namespace per host")
    actions = [f"made {what}" for what in labnet.create(p, record.token)]
    record.pool_dir.mkdir(parents=True, exist_ok=True)
    shared = [config.guest_dir(), config.images_dir(), record.pool_dir]
    for h in p.hosts:
        say(f"starting {h.name} at {h.address} (netns {h.netns})")
        started = privhost.start(
            h.name, state_dir=state_dir / HOSTS_DIR,
            owner_pid=None if record.owner is None else record.owner.pid, shared=shared,
            libvirtd_conf=libvirtd_settings(h.address), qemu_conf=qemu_settings(h.address),
            netns=h.netns, listen=True, timeout=timeout)
        actions.append(f"started {h.name}: " + ", ".join(
            f"{k} {v}" for k, v in started.pids.items()))
    for h in p.hosts:
        say(f"defining pool {record.pool_name} on {h.name}")
        _define_pool(h.uri, record.pool_name, record.pool_dir, timeout)
    say("checking that the hosts reach one another")
    _check_reach(p)
    return actions


def libvirtd_settings(address: IPv4Address) -> dict[str, privhost.ConfValue]:
    """A lab host's libvirtd.conf additions: TCP without authentication, at its address
    only (lab only: anyone on the segment may manage the host)."""
    return {"listen_tls": 0, "listen_tcp": 1, "auth_tcp": "none",
            "listen_addr": str(address)}


def qemu_settings(address: IPv4Address) -> dict[str, privhost.ConfValue]:
    """A lab host's qemu.conf additions: incoming migrations at its address (and never
    the machine's hostname, which every host shares)."""
    return {"migration_address": str(address), "migration_host": str(address),
            "vnc_listen": "127.0.0.1"}


def _define_pool(uri: str, name: str, path: Path, timeout: float) -> None:
    for args in (("pool-define-as", name, "dir", "--target", str(path)),
                 ("pool-start", name), ("pool-autostart", name)):
        done = virsh(uri, args, timeout)
        if done.returncode != 0:
            raise LabError(f"cannot define pool {name} at {uri}: virsh {args[0]}: "
                           f"{stderr_of(done)}")


def _check_reach(p: NetPlan) -> None:
    """Every host answers on libvirt's TCP port from the root namespace and from every
    other host (migrations go host to host, across the bridge)."""
    problems = [f"this machine cannot reach {h.name} at {h.address}"
                for h in p.hosts if not accepts_tcp(h.address)]
    for h in p.hosts:
        others = [o.address for o in p.hosts if o is not h]
        problems += [f"{h.name} cannot reach {target}"
                     for target in labnet.reaches(h.netns, others)]
    if problems:
        raise LabError(
            "cannot bring the lab up: " + "; ".join(problems) + f" (libvirt's TCP port); "
            f"a firewall may drop traffic across the bridge {p.bridge} (with "
            "net.bridge.bridge-nf-call-iptables=1 it goes through iptables' FORWARD chain)")


def _teardown(state_dir: Path, record: Record | None) -> list[str]:
    """End every host, delete the network, remove the record; what was done.

    Goes on past a step that fails, then raises LabError naming what is left.
    """
    actions: list[str] = []
    failed: list[str] = []
    steps: list[tuple[str, Callable[[], list[str]]]] = [
        ("stop the hosts", lambda: privhost.stop_all(state_dir / HOSTS_DIR)),
        ("delete the network", lambda: labnet.remove(
            record.plan if record is not None else None)),
    ]
    if record is not None:
        steps.append(("tidy up", lambda: _tidy(record)))
    for what, step in steps:
        try:
            actions += step()
        except LabError as e:
            failed.append(f"{what}: {e}")
    if failed:
        raise LabError("cannot take the lab down completely: " + "; ".join(failed)
                       + "; run `virtlife lab down` again")
    (state_dir / LAB_FILE).unlink(missing_ok=True)
    return actions


def _tidy(record: Record) -> list[str]:
    """Remove the pool directory when empty, and /run/netns when the lab made it."""
    actions: list[str] = []
    pool = record.pool_dir
    if pool.is_dir():
        kept = sorted(pool.iterdir())
        if kept:
            actions.append(f"kept {pool}: it holds {len(kept)} file(s), e.g. {kept[0].name}")
        else:
            pool.rmdir()
            actions.append(f"removed {pool}")
    if record.netns_dir_made:
        actions += labnet.remove_netns_dir()
    return actions


# --------------------------------------------------------------------------- checks


def _check_can_run(pool: Path) -> None:
    ok, why = hostprep.can_run_real_stack()
    if not ok:
        raise LabError(f"cannot bring the lab up: {why}")
    if (tool := missing_tool(_TOOLS)) is not None:
        raise LabError(f"cannot bring the lab up: {tool} is missing; install iproute2, "
                       "util-linux, coreutils and libvirt-clients")
    if not _SAFE_PATH.match(str(pool)):
        raise LabError(f"cannot use {pool} as the lab's shared pool: give an absolute path "
                       "of letters, digits and / . _ -")
    real = pool.resolve()
    for tree, _sub in privhost.PRIVATE_TREES:
        if real == tree.resolve() or tree.resolve() in real.parents:
            raise LabError(f"cannot use {pool} as the lab's shared pool: it lies under "
                           f"{tree}, which every lab host replaces with its own; set "
                           "VIRTLIFE_CACHE elsewhere")


def _postcopy_note() -> str | None:
    """Why post-copy migration between lab hosts would fail, if it would."""
    try:
        value = hostprep.USERFAULTFD_SYSCTL.read_text().strip()
    except OSError:
        return None
    if value == "1":
        return None
    return (f"vm.unprivileged_userfaultfd is {value}: post-copy migration will fail "
            "('Postcopy is not supported'); `virtlife lab setup` or `sysctl -w "
            "vm.unprivileged_userfaultfd=1` sets it")

