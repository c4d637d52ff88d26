"""The multi-host lab's network: a bridge in the root namespace, and per host a named
network namespace joined to it by a veth pair, on a private IPv4 segment.

Role: ``plan`` says which names and addresses a lab of N hosts uses (pure);
``read_view`` reads what this machine's root namespace already has (``ip -j``), and
``clashes`` says, without changing anything, why the plan cannot be used there;
``create`` makes the bridge, namespaces and veths of a plan, each marked with the lab's
token (the interface alias ``virtlife-lab TOKEN``, and the same alias on the ``lo`` of
each namespace), and ``remove`` deletes what a plan names and whatever carries a lab
mark, so that a lab killed half-way is still found. The decisions (what clashes, what
is left over) are plain functions over ``NetView`` with unit tests.

Layout, for the default segment::

    root namespace:  bridge vl-lab0 10.253.7.1/24, ports vl-lab-a, vl-lab-b, ...
    netns vl-lab-a:  lo, eth0 10.253.7.11/24 (the peer of vl-lab-a)
    netns vl-lab-b:  lo, eth0 10.253.7.12/24

It must not import libvirt, start or signal processes (``cluster`` and ``privhost`` own
the daemons), or touch an interface, address or namespace that is neither named by the
plan nor marked as a lab's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from virtlife.errors import LabError
from virtlife.lab import common
from virtlife.procs import comm

SEGMENT = IPv4Network("10.253.7.0/24")  # private (RFC 1918), rarely used by anyone
BRIDGE = "vl-lab0"
NETNS_PREFIX = "vl-lab-"  # netns and root-side veth of host "lab-X": vl-lab-X
HOST_PREFIX = "lab-"  # the hosts' names in the inventory: lab-a, lab-b, ...
FIRST_HOST = 11  # lab-a is the segment's 11th address, lab-b the 12th, ...
MAX_HOSTS = 26  # one letter each
MARK = "virtlife-lab"  # alias prefix of every interface the lab made: "virtlife-lab TOKEN"
LIBVIRT_TCP_PORT = common.LIBVIRT_TCP_PORT
NETNS_DIR = Path("/run/netns")
INNER_IFNAME = "eth0"  # the host's end of its veth, inside its namespace


@dataclass(frozen=True)
class HostNet:
    """One lab host's place on the network."""

    name: str  # lab-a: its name in the inventory and its private host directory
    netns: str  # vl-lab-a
    veth: str  # vl-lab-a: the root namespace's end, a port of the bridge
    address: IPv4Address

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"


@dataclass(frozen=True)
class NetPlan:
    """The names and addresses of a lab of ``len(hosts)`` hosts."""

    segment: IPv4Network
    bridge: str
    bridge_address: IPv4Address  # the root namespace's address on the segment
    hosts: tuple[HostNet, ...]

    @property
    def links(self) -> tuple[str, ...]:
        """The interfaces it makes in the root namespace."""
        return (self.bridge, *(h.veth for h in self.hosts))

    @property
    def netns(self) -> tuple[str, ...]:
        return tuple(h.netns for h in self.hosts)


def plan(n: int, segment: IPv4Network | str = SEGMENT, bridge: str = BRIDGE) -> NetPlan:
    """The plan of a lab of ``n`` hosts on ``segment``; LabError when it cannot hold them."""
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"cannot plan a lab of {n} hosts: give 1 to {MAX_HOSTS}")
    try:
        net = IPv4Network(segment)
    except ValueError as e:
        raise LabError(f"cannot use {segment!r} as the lab's segment: {e}; give an IPv4 "
                       f"network such as {SEGMENT}") from e
    if not net.is_private or net.prefixlen < 16:
        raise LabError(f"cannot use {net} as the lab's segment: give a private IPv4 "
                       f"network of /16 or smaller, such as {SEGMENT}")
    if FIRST_HOST + n >= net.num_addresses - 1:  # the last one is the broadcast address
        raise LabError(f"cannot fit {n} host(s) into {net}: they take its addresses "
                       f"{FIRST_HOST} to {FIRST_HOST + n - 1}; give a larger segment")
    hosts = tuple(
        HostNet(name=f"{HOST_PREFIX}{letter}", netns=f"{NETNS_PREFIX}{letter}",
                veth=f"{NETNS_PREFIX}{letter}", address=net.network_address + FIRST_HOST + i)
        for i, letter in enumerate("abcdefghijklmnopqrstuvwxyz"[:n]))
    return NetPlan(net, bridge, net.network_address + 1, hosts)


def mark(token: str, lab: str = MARK) -> str:
    """The alias of everything lab ``lab`` (``MARK``, or the light lab's) made."""
    return f"{lab} {token}"


def marked_token(alias: str | None, lab: str = MARK) -> str | None:
    """The token in an interface alias marked by lab ``lab``, or None when the alias is
    not that lab's."""
    if alias and alias.startswith(lab + " "):
        return alias[len(lab) + 1:].strip() or None
    return None


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Link:
    name: str
    alias: str | None = None


@dataclass(frozen=True)
class NetView:
    """What the root network namespace has, as far as the lab cares."""

    links: tuple[Link, ...] = ()
    addresses: tuple[tuple[str, IPv4Interface], ...] = ()  # (interface, address/prefix)
    routes: tuple[tuple[IPv4Network, str], ...] = ()  # (destination, device)
    netns: Mapping[str, str | None] = field(default_factory=dict)  # name -> its lo's alias


def clashes(p: NetPlan, view: NetView) -> list[str]:
    """Why ``p`` cannot be set up next to what ``view`` shows (empty: it can).

    Interfaces and namespaces carrying a lab mark are leftovers of an earlier lab, not
    clashes: ``remove`` takes them away first.
    """
    ours = {link.name for link in view.links if marked_token(link.alias) is not None}
    found: list[str] = []
    for link in view.links:
        if link.name in p.links and link.name not in ours:
            found.append(f"an interface named {link.name} exists and is not the lab's")
    for name, lo_alias in sorted(view.netns.items()):
        if name in p.netns and marked_token(lo_alias) is None:
            found.append(f"a network namespace named {name} exists and is not the lab's")
    for ifname, iface in view.addresses:
        if ifname not in ours and iface.ip in p.segment:
            found.append(f"{ifname} has the address {iface} in {p.segment}")
    for dst, dev in view.routes:
        if dev not in ours and dst.prefixlen > 0 and dst.overlaps(p.segment):
            found.append(f"a route to {dst} via {dev} overlaps {p.segment}")
    return list(dict.fromkeys(found))  # an address and its route say the same: once


@dataclass(frozen=True)
class Leftovers:
    links: tuple[str, ...]  # to delete (a veth takes its peer with it)
    netns: tuple[str, ...]  # to delete
    foreign: tuple[str, ...]  # named by the plan, but someone else's: left alone


def leftovers(view: NetView, recorded: NetPlan | None, keep: str | None = None) -> Leftovers:
    """What of a lab to delete: every interface or namespace marked by a lab other than
    ``keep`` (the token of a lab in use), and what ``recorded`` (a dead lab's plan)
    names unless it carries someone else's alias (made, then killed before its mark)."""
    named_links = set(recorded.links) if recorded else set()
    named_ns = set(recorded.netns) if recorded else set()
    links: list[str] = []
    foreign: list[str] = []
    for link in view.links:
        token = marked_token(link.alias)
        if token is not None and token != keep:
            links.append(link.name)
        elif token is None and link.name in named_links:
            if link.alias:
                foreign.append(f"interface {link.name} (alias {link.alias!r})")
            else:
                links.append(link.name)
    netns: list[str] = []
    for name, lo_alias in sorted(view.netns.items()):
        token = marked_token(lo_alias)
        if token is not None and token != keep:
            netns.append(name)
        elif token is None and name in named_ns:
            if lo_alias:
                foreign.append(f"network namespace {name} (lo alias {lo_alias!r})")
            else:
                netns.append(name)
    return Leftovers(tuple(links), tuple(netns), tuple(foreign))


# --------------------------------------------------------------------------- reading


def ip(*args: str, netns: str | None = None, check: bool = True,
       timeout: float = 15.0) -> str:
    """``ip ARGS`` (in ``netns``, if given): its output; with ``check``, LabError on failure."""
    command = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"cannot run {' '.join(command)}: {e}") from e
    if check and done.returncode != 0:
        detail = " ".join(done.stderr.split())[:300] or f"exit status {done.returncode}"
        raise LabError(f"{' '.join(command)} failed: {detail}")
    return done.stdout


def _json(text: str) -> list[dict[str, object]]:
    if not text.strip():
        return []
    data = json.loads(text)
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def parse_routes(text: str) -> tuple[tuple[IPv4Network, str], ...]:
    """``ip -j -4 route show table all`` as (destination, device) pairs."""
    routes: list[tuple[IPv4Network, str]] = []
    for r in _json(text):
        dst = str(r.get("dst", ""))
        if dst in ("", "default"):
            continue
        try:
            routes.append((IPv4Network(dst, strict=False), str(r.get("dev", "?"))))
        except ValueError:
            continue
    return tuple(routes)


def parse_addresses(text: str) -> tuple[tuple[str, IPv4Interface], ...]:
    """``ip -j -4 addr show`` as (interface, address/prefix) pairs."""
    found: list[tuple[str, IPv4Interface]] = []
    for link in _json(text):
        infos = link.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            if isinstance(info, dict) and info.get("family") == "inet":
                found.append((str(link.get("ifname")),
                              IPv4Interface(f"{info['local']}/{info['prefixlen']}")))
    return tuple(found)


def parse_links(text: str) -> tuple[Link, ...]:
    """``ip -j link show`` as names and aliases."""
    return tuple(Link(str(d["ifname"]), str(d["ifalias"]) if d.get("ifalias") else None)
                 for d in _json(text) if "ifname" in d)


def netns_names() -> list[str]:
    return sorted(str(d["name"]) for d in _json(ip("-j", "netns", "list")) if "name" in d)


def links() -> tuple[Link, ...]:
    """The root namespace's interfaces, with their aliases (a lab's mark)."""
    return parse_links(ip("-j", "link", "show"))


def lo_alias(netns: str) -> str | None:
    """The alias of the ``lo`` of network namespace ``netns`` (a lab's mark), if any."""
    found = parse_links(ip("-j", "link", "show", "lo", netns=netns, check=False))
    return found[0].alias if found else None


def read_view() -> NetView:
    """The root namespace's interfaces, IPv4 addresses and routes, and the named network
    namespaces with the alias of their ``lo`` (a lab's mark)."""
    return NetView(
        links=links(),
        addresses=parse_addresses(ip("-j", "-4", "addr", "show")),
        routes=parse_routes(ip("-j", "-4", "route", "show", "table", "all")),
        netns={name: lo_alias(name) for name in netns_names()},
    )


def netns_pids(netns: str) -> list[int]:
    """The processes in network namespace ``netns``."""
    out = ip("netns", "pids", netns, check=False)
    return sorted(int(word) for word in out.split() if word.isdigit())


# --------------------------------------------------------------------------- acting


def create(p: NetPlan, token: str) -> list[str]:
    """Make the bridge, and each host's namespace and veth, marked with ``token``.

    The caller has found no clash and recorded the plan (so that ``remove`` finds a
    half-made lab); on failure it calls ``remove``. Returns what was done.
    """
    alias = mark(token)
    prefix = p.segment.prefixlen
    ip("link", "add", p.bridge, "type", "bridge", "forward_delay", "0")
    ip("link", "set", p.bridge, "alias", alias)
    ip("addr", "add", f"{p.bridge_address}/{prefix}", "dev", p.bridge)
    ip("link", "set", p.bridge, "up")
    done = [f"bridge {p.bridge} {p.bridge_address}/{prefix}"]
    for h in p.hosts:
        ip("netns", "add", h.netns)
        ip("link", "set", "lo", "alias", alias, "up", netns=h.netns)
        ip("link", "add", h.veth, "type", "veth", "peer", "name", INNER_IFNAME,
            "netns", h.netns)
        ip("link", "set", h.veth, "alias", alias, "master", p.bridge, "up")
        ip("addr", "add", f"{h.address}/{prefix}", "dev", INNER_IFNAME, netns=h.netns)
        ip("link", "set", INNER_IFNAME, "alias", alias, "up", netns=h.netns)
        done.append(f"netns {h.netns} {h.address}/{prefix} (veth {h.veth})")
    return done


def remove(recorded: NetPlan | None, keep: str | None = None) -> list[str]:
    """Delete the lab's interfaces and namespaces (see ``leftovers``); what was done.

    A namespace is deleted even when processes the lab did not start are still in it
    (a shell of ``ip netns exec``): they keep an anonymous namespace, said in the result.
    """
    gone = leftovers(read_view(), recorded, keep)
    actions: list[str] = []
    for name in gone.links:
        ip("link", "del", name, check=False)
        actions.append(f"deleted interface {name}")
    for name in gone.netns:
        stray = netns_pids(name)
        ip("netns", "del", name)
        actions.append(f"deleted network namespace {name}" + (
            f" (processes {', '.join(_describe(stray))} still run in it: not the lab's, "
            "left alone)" if stray else ""))
    actions += [f"left {what} alone: not the lab's" for what in gone.foreign]
    return actions


def ip_batch(lines: Iterable[str], netns: str | None = None, check: bool = True) -> None:
    """Run ``lines`` as one ``ip -force -batch -`` (in ``netns``, if given): many
    interfaces or namespaces in one process; with ``check``, LabError on failure."""
    text = "\n".join(lines) + "\n"
    command = ["ip", *(("-n", netns) if netns else ()), "-force", "-batch", "-"]
    done = subprocess.run(command, input=text, capture_output=True, text=True,
                          timeout=60, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)} failed: {' '.join(done.stderr.split())[:300]}")


def remove_netns_dir() -> list[str]:
    """Remove ``NETNS_DIR`` when it is empty (for a lab that made it: ``ip netns add``
    bind-mounts it on itself, so it is unmounted first); what was done."""
    if not NETNS_DIR.is_dir() or any(NETNS_DIR.iterdir()):
        return []
    if NETNS_DIR in common.mount_points():
        subprocess.run(["umount", str(NETNS_DIR)], capture_output=True, check=False,
                       timeout=15)
    try:
        NETNS_DIR.rmdir()
    except OSError:
        return []
    return [f"removed {NETNS_DIR}"]


def _describe(pids: Iterable[int]) -> list[str]:
    return [f"{pid} ({comm(pid) or '?'})" for pid in pids]


def reaches(netns: str, targets: Sequence[IPv4Address], port: int = LIBVIRT_TCP_PORT,
            timeout_s: int = 5) -> list[str]:
    """From inside ``netns``, the targets whose ``port`` does not accept a connection
    within ``timeout_s`` each (empty: all do)."""
    failed: list[str] = []
    for target in targets:
        done = subprocess.run(
            ["nsenter", f"--net={NETNS_DIR / netns}", "--", "timeout", str(timeout_s),
             "bash", "-c", 'exec 3<>"/dev/tcp/$0/$1"', str(target), str(port)],
            capture_output=True, text=True, timeout=timeout_s + 10,
            stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            failed.append(f"{target}:{port}")
    return failed
