"""The light lab: many libvirt "hosts" on this machine, cheaply, for fleet-scale listings.

Role: ``up`` brings up hosts ``light-001``, ``light-002``, ... each a libvirtd alone
(only the QEMU driver loaded: ``LIBVIRT_DRIVER_DIR`` names a folder holding just that
driver, ~7 MB of memory each) in a network namespace of its own joined to the bridge
``vl-lt0`` by a veth, and a mount namespace of its own (its /etc/libvirt,
/var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /run are directories of the
lab), listening on TCP without authentication (lab only). Each host has ``vms``
persistent domains, written into its /etc/libvirt/qemu before its libvirtd starts
(libvirt loads them as its own definitions). The first ``running_hosts`` hosts also
run virtlogd and put four of their domains in the states that need QEMU, through
libvirt itself: one running, one paused, two managed-saved. Every other host gets
those two managed-save images too, hard links of the first host's (the same domains,
name and UUID, so the images are the ones libvirt would have written; it reports
them as managed-saved). So the fleet has mostly shut-off domains, some saved, and a
few running or paused across the whole lab.

``down`` ends every process in the lab's namespaces (libvirtd, virtlogd, the QEMUs),
deletes the namespaces, veths and bridge, and removes its directory; it finds all of
it again after a killed ``up`` (``light.json`` is written first, and every interface
and namespace carries the mark ``virtlife-light TOKEN``). It is separate from the
migration lab (``cluster``: another state directory, segment, names and mark), so
the two never touch each other's parts.

It must not import libvirt (virsh and processes only), touch the inventory (the CLI
does), or signal a process outside the lab's namespaces.

State directory (``DEFAULT_STATE_DIR``)::

    light.json     token, size, segment, vms, running hosts, owner, complete
    hosts/NAME/    etc/ lib/ log/ cache/ run/: the host's own trees; run/virtlife-drivers
                   holds libvirt_driver_qemu.so (a symlink), the only driver it loads
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

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
from virtlife.lab.privhost import Proc
from virtlife.procs import comm, start_time

DEFAULT_STATE_DIR = Path("/run/virtlife-lab-light")
SEGMENT = IPv4Network("10.252.0.0/22")  # not the migration lab's 10.253.7.0/24
BRIDGE = "vl-lt0"
NETNS_PREFIX = "vl-lt-"  # netns and root-side veth of host light-NNN: vl-lt-NNN
HOST_PREFIX = "light-"
MARK = "virtlife-light"  # never a prefix of the migration lab's "virtlife-lab "
MAX_HOSTS = 500
FIRST_HOST = 11
RECORD = "light.json"
DRIVER_DIR = Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver")
QEMU_DRIVER = "libvirt_driver_qemu.so"
DRIVERS_INSIDE = Path("/run/virtlife-drivers")  # in each host's own /run: only that driver
PORT = labnet.LIBVIRT_TCP_PORT
# The domains that need QEMU on a host with virtlogd, and what is done to each.
RUNNING, PAUSED, SAVED = "vm00", "vm01", ("vm02", "vm03")
_STATE_COMMANDS = (f"start {RUNNING}; start {PAUSED}; suspend {PAUSED}; "
                   + "; ".join(f"start {v}; managedsave {v}" for v in SAVED))
_UUID_NS = uuid.UUID("5b7a6c2e-2f4b-4e0f-9d1e-6c1a3b0f1e11")


@dataclass(frozen=True)
class LightHost:
    name: str  # light-001: its name in the inventory and its directory
    netns: str  # vl-lt-001, also the root side of its veth
    address: IPv4Address
    full: bool  # runs virtlogd too, and the lab's running/paused/saved domains

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"


@dataclass(frozen=True)
class LightRecord:
    token: str
    size: int
    segment: str
    vms: int
    running_hosts: int
    owner: Proc | None
    started_at: str
    netns_dir_made: bool = False
    complete: bool = False

    @property
    def hosts(self) -> tuple[LightHost, ...]:
        return plan(self.size, self.segment, self.running_hosts)

    def to_json(self) -> str:
        d = {k: v for k, v in self.__dict__.items() if k != "owner"}
        d["owner"] = None if self.owner is None else [self.owner.pid, self.owner.start]
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LightRecord:
        d = json.loads(text)
        owner = d.pop("owner", None)
        return cls(**d, owner=None if owner is None else Proc(int(owner[0]), int(owner[1])))


def plan(n: int, segment: IPv4Network | str = SEGMENT,
         running_hosts: int = 0) -> tuple[LightHost, ...]:
    """The hosts of a light lab of ``n``; LabError when the segment cannot hold them."""
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"cannot plan a light lab of {n} hosts: give 1 to {MAX_HOSTS}")
    try:
        net = IPv4Network(segment)
    except ValueError as e:
        raise LabError(f"cannot use {segment!r} as the light lab's segment: {e}") from e
    if not net.is_private or FIRST_HOST + n >= net.num_addresses - 1:
        raise LabError(f"cannot fit {n} light hosts into {net}: give a private segment "
                       f"with {FIRST_HOST + n + 1} addresses or more, such as {SEGMENT}")
    return tuple(LightHost(f"{HOST_PREFIX}{i + 1:03d}", f"{NETNS_PREFIX}{i + 1:03d}",
                           net.network_address + FIRST_HOST + i, i < running_hosts)
                 for i in range(n))


def read_record(state_dir: Path = DEFAULT_STATE_DIR) -> LightRecord | None:
    try:
        return LightRecord.from_json((state_dir / RECORD).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(state_dir: Path, record: LightRecord) -> None:
    write_atomic(state_dir / RECORD, record.to_json())


def domain_xml(index: int) -> str:
    """Domain ``vmNN`` of every light host (the same name and UUID on each host)."""
    name = f"vm{index:02d}"
    memory = 32 if index < 4 else 32 * (1 + index % 4)
    return (f"<domain type='qemu'><name>{name}</name>"
            f"<uuid>{uuid.uuid5(_UUID_NS, name)}</uuid>"
            f"<memory unit='MiB'>{memory}</memory><vcpu>{1 + index % 2}</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
            "</devices></domain>\n")


# --------------------------------------------------------------------------- up


@dataclass(frozen=True)
class LightUpResult:
    record: LightRecord
    hosts: tuple[LightHost, ...]
    actions: list[str]
    seconds: float


def up(n: int, *, vms: int = 50, running_hosts: int = 2,
       segment: IPv4Network | str = SEGMENT, owner_pid: int | None = None,
       state_dir: Path = DEFAULT_STATE_DIR, progress: Say | None = None,
       timeout: float = 120.0) -> LightUpResult:
    """Bring up a light lab of ``n`` hosts with ``vms`` domains each (module doc).

    A light lab already there is taken down first when its owner has ended or its
    ``up`` did not finish; one in use is refused. Raises LabError after undoing what
    it did.
    """
    say: Say = progress or (lambda _m: None)
    if not 4 <= vms <= 1000:
        raise LabError(f"cannot give each light host {vms} domains: give 4 to 1000")
    hosts = plan(n, segment, min(running_hosts, n))
    _check_can_run()
    owner = Proc.owner(owner_pid, "bring the light lab up")
    t0 = time.monotonic()
    with locked(state_dir, timeout, tidy=True):
        old = read_record(state_dir)
        if old is not None and old.complete and (old.owner is None or old.owner.alive()):
            raise LabError(f"cannot bring the light lab up: one of {old.size} hosts is up "
                           f"(since {old.started_at}); take it down first: virtlife lab down")
        actions = _teardown(state_dir, old)
        clashes = _clashes(hosts, IPv4Network(segment))
        if clashes:
            raise LabError("cannot bring the light lab up: " + "; ".join(clashes))
        record = LightRecord(uuid.uuid4().hex, n, str(IPv4Network(segment)), vms,
                             sum(h.full for h in hosts), owner,
                             datetime.now(UTC).isoformat(timespec="seconds"),
                             netns_dir_made=not labnet.NETNS_DIR.exists())
        _write_record(state_dir, record)  # first: a lab killed from here on is found
        try:
            actions += _build(state_dir, record, hosts, say, timeout)
            record = replace(record, complete=True)
            _write_record(state_dir, record)
        except BaseException as e:
            try:
                _teardown(state_dir, record)
            except LabError as cleanup:
                e.add_note(f"cleaning up the light lab failed too: {cleanup}")
            if isinstance(e, LabError | KeyboardInterrupt | SystemExit):
                raise
            raise LabError(f"cannot bring the light lab up: {e}") from e
    return LightUpResult(record, hosts, actions, time.monotonic() - t0)


def down(state_dir: Path = DEFAULT_STATE_DIR, *,
         timeout: float = 60.0) -> tuple[LightRecord | None, list[str]]:
    """Take the light lab down, or clean up what a killed one left; (record, actions)."""
    if not state_dir.exists() and not _marked_links() and not _marked_netns():
        return None, []
    with locked(state_dir, timeout, tidy=True):
        record = read_record(state_dir)
        return record, _teardown(state_dir, record)


def _check_can_run() -> None:
    ok, why = hostprep.can_run_real_stack()
    if not ok:
        raise LabError(f"cannot bring the light lab up: {why}")
    if not (DRIVER_DIR / QEMU_DRIVER).exists():
        raise LabError(f"cannot bring the light lab up: {DRIVER_DIR / QEMU_DRIVER} is "
                       "missing; install libvirt-daemon-driver-qemu")
    tool = missing_tool(("ip", "nsenter", "unshare", "virsh", "libvirtd", "virtlogd"))
    if tool is not None:
        raise LabError(f"cannot bring the light lab up: {tool} is missing")


def _clashes(hosts: Iterable[LightHost], segment: IPv4Network) -> list[str]:
    view = labnet.read_view()
    names = {BRIDGE, *(h.netns for h in hosts)}
    found = [f"an interface named {link.name} exists" for link in view.links
             if link.name in names]
    found += [f"a network namespace named {ns} exists" for ns in view.netns if ns in names]
    found += [f"{ifname} has the address {iface} in {segment}"
              for ifname, iface in view.addresses if iface.ip in segment]
    return found


def _build(state_dir: Path, record: LightRecord, hosts: tuple[LightHost, ...], say: Say,
           timeout: float) -> list[str]:
    say(f"network: bridge {BRIDGE} on {record.segment}, {len(hosts)} namespaces")
    _create_network(hosts, IPv4Network(record.segment), record.token)
    say(f"writing {len(hosts)} host trees with {record.vms} domains each")
    for h in hosts:
        _host_tree(state_dir / "hosts" / h.name, h, record.vms)
    full = [h for h in hosts if h.full]
    light = [h for h in hosts if not h.full]
    actions = [f"network {BRIDGE} {record.segment}: {len(hosts)} namespaces"]
    if full:
        say(f"starting {len(full)} host(s) with virtlogd, and their VMs")
        _start(state_dir, full, timeout)
        for h in full:
            _set_states(h.uri, timeout)
        images = state_dir / "hosts" / full[0].name / "lib" / "qemu" / "save"
        for h in light:
            save = state_dir / "hosts" / h.name / "lib" / "qemu" / "save"
            save.mkdir(parents=True, exist_ok=True)
            for vm in SAVED:
                os.link(images / f"{vm}.save", save / f"{vm}.save")
        actions.append(f"{len(full)} host(s) run {RUNNING}, paused {PAUSED}, managed-saved "
                       f"{', '.join(SAVED)}")
    if light:
        say(f"starting {len(light)} libvirtd (QEMU driver only)")
        _start(state_dir, light, timeout)
    actions.append(f"started {len(hosts)} hosts, {record.vms} domains each")
    return actions


def _host_tree(d: Path, h: LightHost, vms: int) -> None:
    for sub in ("etc/qemu", "lib/qemu", "log/qemu", "cache", "run/libvirt"):
        (d / sub).mkdir(parents=True)
    drivers = d / "run" / DRIVERS_INSIDE.relative_to("/run")
    drivers.mkdir()
    (drivers / QEMU_DRIVER).symlink_to(DRIVER_DIR / QEMU_DRIVER)
    header = f"virtlife light host {h.name}"
    (d / "etc" / "libvirtd.conf").write_text(privhost.override_conf("", {
        "listen_tls": 0, "listen_tcp": 1, "auth_tcp": "none",
        "listen_addr": str(h.address), "host_uuid": str(uuid.uuid4()),
        "min_workers": 1, "max_workers": 4, "prio_workers": 1,
        "log_outputs": "3:file:/var/log/libvirt/libvirtd.log"}, header))
    (d / "etc" / "virtlogd.conf").write_text(privhost.override_conf("", {
        "log_outputs": "3:file:/var/log/libvirt/virtlogd.log"}, header))
    (d / "etc" / "qemu.conf").write_text(privhost.override_conf(
        "", {**privhost.QEMU_SETTINGS, "vnc_listen": "127.0.0.1"}, header))
    caps = Path("/var/cache/libvirt/qemu")
    if caps.is_dir():  # QEMU's capabilities: saves every libvirtd a probe of 1-3 s
        shutil.copytree(caps, d / "cache" / "qemu", symlinks=True)
    for i in range(vms):
        (d / "etc" / "qemu" / f"vm{i:02d}.xml").write_text(domain_xml(i))


def _start(state_dir: Path, hosts: list[LightHost], timeout: float) -> None:
    """Start the hosts' daemons all at once; wait until each answers."""
    env = {**os.environ, "LIBVIRT_DRIVER_DIR": str(DRIVERS_INSIDE)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for h in hosts:
        d = state_dir / "hosts" / h.name
        binds = " && ".join(f"mount --no-mtab --bind {d / sub} {target}"
                            for target, sub in privhost.PRIVATE_TREES)  # /run last
        script = (f"{binds} || exit 97; " + ("virtlogd -d || exit 98; " if h.full else "")
                  + "exec libvirtd --listen")
        with open(d / "daemon.out", "wb") as log:
            procs[h.name] = subprocess.Popen(
                ["nsenter", f"--net={labnet.NETNS_DIR / h.netns}", "--", "unshare",
                 "--mount", "--propagation", "private", "--", "sh", "-c", script],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        _CHILDREN[procs[h.name].pid] = procs[h.name]
    waiting = {h.name: h for h in hosts}
    deadline = time.monotonic() + timeout
    while waiting:
        for name, h in list(waiting.items()):
            if procs[name].poll() is not None:
                out = (state_dir / "hosts" / name / "daemon.out").read_text(errors="replace")
                raise LabError(f"libvirtd of light host {name} ended (exit "
                               f"{procs[name].returncode}): {' '.join(out.split())[-300:]}")
            if accepts_tcp(h.address, PORT, timeout=0.5):
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            raise LabError(f"light hosts {', '.join(sorted(waiting)[:5])} did not accept TCP "
                           f"within {timeout:.0f} s")
        if waiting:
            time.sleep(0.05)
    _await_drivers(hosts, deadline)


def _await_drivers(hosts: list[LightHost], deadline: float) -> None:
    """Wait until every host's QEMU driver answers: libvirtd accepts TCP a moment before
    (a client then gets "no connection driver available")."""
    def ready(h: LightHost) -> str | None:
        while True:
            done = virsh(h.uri, ["uri"], max(1.0, deadline - time.monotonic()))
            if done.returncode == 0:
                return None
            if time.monotonic() > deadline:
                return f"{h.name}: {' '.join(done.stderr.split())[:200]}"
            time.sleep(0.1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(ready, hosts) if p is not None]
    if problems:
        raise LabError("light hosts do not answer: " + "; ".join(problems[:3]))


def _set_states(uri: str, timeout: float) -> None:
    done = virsh(uri, [_STATE_COMMANDS], timeout)
    if done.returncode != 0:
        raise LabError(f"cannot set the light lab's VM states at {uri}: {stderr_of(done)}")


# --------------------------------------------------------------------------- network


def _create_network(hosts: tuple[LightHost, ...], segment: IPv4Network, token: str) -> None:
    alias = labnet.mark(token, MARK)
    prefix = segment.prefixlen
    root = [f"link add {BRIDGE} type bridge forward_delay 0",
            f"link set {BRIDGE} alias \"{alias}\"",
            f"addr add {segment.network_address + 1}/{prefix} dev {BRIDGE}",
            f"link set {BRIDGE} up"]
    root += [f"netns add {h.netns}" for h in hosts]
    labnet.ip_batch(root)
    labnet.ip_batch(line for h in hosts for line in (
        f"link add {h.netns} type veth peer name {labnet.INNER_IFNAME} netns {h.netns}",
        f"link set {h.netns} alias \"{alias}\" master {BRIDGE} up"))
    procs = [subprocess.Popen(["ip", "-n", h.netns, "-batch", "-"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for h in hosts]
    for h, p in zip(hosts, procs, strict=True):
        _, err = p.communicate("\n".join([
            f"link set lo alias \"{alias}\" up",
            f"addr add {h.address}/{prefix} dev {labnet.INNER_IFNAME}",
            f"link set {labnet.INNER_IFNAME} alias \"{alias}\" up"]) + "\n", timeout=60)
        if p.returncode != 0:
            raise LabError(f"cannot set up the network of light host {h.name}: "
                           f"{' '.join(err.split())[:300]}")


def _marked_links() -> list[str]:
    return [link.name for link in labnet.links()
            if labnet.marked_token(link.alias, MARK) is not None]


def _marked_netns() -> list[str]:
    return [ns for ns in labnet.netns_names() if ns.startswith(NETNS_PREFIX)
            and labnet.marked_token(labnet.lo_alias(ns), MARK) is not None]


# --------------------------------------------------------------------------- down

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # daemons this process started: reaped


def _netns_members(names: Iterable[str]) -> dict[int, str]:
    """Every live process in the network namespaces ``names``: pid -> its command."""
    inodes = {}
    for ns in names:
        with contextlib.suppress(OSError):
            inodes[f"net:[{os.stat(labnet.NETNS_DIR / ns).st_ino}]"] = ns
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") not in inodes or _zombie(int(entry)):
                continue
        except OSError:
            continue
        if (name := comm(int(entry))) is not None:
            found[int(entry)] = name
    return found


def _zombie(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return True
    return start_time(pid) is None  # ended, or only its zombie is left


def _end_processes(netns: list[str], timeout: float) -> list[str]:
    members = _netns_members(netns)
    if not members:
        return []
    for sig, wait_s in ((signal.SIGTERM, timeout / 2), (signal.SIGKILL, timeout / 2)):
        for pid in _netns_members(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a stopped daemon (the deadline tests)
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _netns_members(netns) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _netns_members(netns):
            counts: dict[str, int] = {}
            for comm in members.values():
                counts[comm] = counts.get(comm, 0) + 1
            return ["stopped " + ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))]
    left = _netns_members(netns)
    raise LabError("cannot stop " + ", ".join(f"{c} ({p})" for p, c in left.items())
                   + ": still running after SIGKILL")


def _teardown(state_dir: Path, record: LightRecord | None) -> list[str]:
    """End every process in the lab's namespaces, delete its network and directory."""
    named = {h.netns for h in record.hosts} if record is not None else set()
    present = set(labnet.netns_names())
    netns = sorted((named & present) | set(_marked_netns()))
    actions = _end_processes(netns, 20.0)
    links = set(_marked_links())
    if record is not None and BRIDGE in {link.name for link in labnet.links()}:
        links.add(BRIDGE)  # made, then killed before its mark
    if netns:
        labnet.ip_batch([f"netns del {ns}" for ns in netns], check=False)
        actions.append(f"deleted {len(netns)} network namespaces")
    if links:
        labnet.ip_batch([f"link del {name}" for name in sorted(links)], check=False)
        actions.append(f"deleted {len(links)} interfaces")
    for pid, child in list(_CHILDREN.items()):  # reap the daemons this process started
        if child.poll() is not None:
            del _CHILDREN[pid]
    left = [ns for ns in labnet.netns_names() if ns in netns]
    if left:
        raise LabError(f"cannot delete network namespaces {', '.join(left[:5])}; run "
                       "`virtlife lab down` again")
    for sub in ("hosts",):
        if (state_dir / sub).exists():
            shutil.rmtree(state_dir / sub)
            actions.append(f"removed {state_dir / sub}")
    (state_dir / RECORD).unlink(missing_ok=True)
    if record is not None and record.netns_dir_made:
        actions += labnet.remove_netns_dir()
    return actions


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, object] | None:
    """The light lab as recorded, with how many hosts answer on TCP now; None if none."""
    record = read_record(state_dir)
    if record is None:
        return None
    hosts = record.hosts
    answering = sum(accepts_tcp(h.address, PORT, timeout=0.5) for h in hosts)
    return {"size": record.size, "segment": record.segment, "vms": record.vms,
            "running_hosts": record.running_hosts, "complete": record.complete,
            "started_at": record.started_at, "answering": answering,
            "owner_pid": None if record.owner is None else record.owner.pid,
            "hosts": [{"name": h.name, "uri": h.uri} for h in hosts]}


def is_light_row(name: str, uri: str, segments: Iterable[IPv4Network | str]) -> bool:
    """Whether the inventory row (name, uri) is a light host's: ``light-NNN`` at
    ``qemu+tcp://ADDRESS/system`` with ADDRESS in one of ``segments``."""
    if not (name.startswith(HOST_PREFIX) and name[len(HOST_PREFIX):].isdigit()):
        return False
    prefix, suffix = "qemu+tcp://", "/system"
    if not (uri.startswith(prefix) and uri.endswith(suffix)):
        return False
    try:
        address = IPv4Address(uri[len(prefix):-len(suffix)])
    except ValueError:
        return False
    return any(address in IPv4Network(s) for s in segments)


def libvirtd_pid(name: str, state_dir: Path = DEFAULT_STATE_DIR) -> int:
    """The pid of light host ``name``'s libvirtd (to stop it in a test); LabError if none."""
    record = read_record(state_dir)
    host = next((h for h in record.hosts if h.name == name), None) if record else None
    if host is None:
        raise LabError(f"the light lab has no host {name}")
    pids = [p for p, comm in _netns_members([host.netns]).items() if comm == "libvirtd"]
    if len(pids) != 1:
        raise LabError(f"light host {name} runs {len(pids)} libvirtd processes, not one")
    return pids[0]


def memory_kib(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, int]:
    """Resident memory (VmRSS, KiB) of the light lab's processes, summed by command."""
    record = read_record(state_dir)
    if record is None:
        return {}
    total: dict[str, int] = {}
    for pid, command in _netns_members(h.netns for h in record.hosts).items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if x.startswith("VmRSS:"))
            total[command] = total.get(command, 0) + int(line.split()[1])
    return total
