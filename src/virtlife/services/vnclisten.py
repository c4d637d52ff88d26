"""Whether a VNC listen address can work on a VM's host, checked before ``graphics``
writes it into the definition (an address the host lacks was accepted, and the VM's
next start failed: QEMU cannot listen there).

``listen_verdict`` decides, a pure function of what was found: a wildcard (0.0.0.0,
::) always works; on a host that is this machine the address must be one this
machine can bind (EADDRNOTAVAIL: not one of its addresses; EAFNOSUPPORT: no IPv6 here)
or it is refused, naming the address and listing what works; a remote host's
addresses cannot be checked from here, so the verdict is a warning to show beside the
result. ``names_this_machine`` says whether a URI's host is this machine, also pure
(the bind test is passed in). ``bind_error`` and ``this_machines_addresses`` gather
the facts on this machine: a bind to (address, port 0), closed at once, and the
addresses in /proc/net (IPv4's local routes, IPv6's interface addresses). Nothing here
imports libvirt, changes anything or prints.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from virtlife import errors

WILDCARDS = frozenset({"0.0.0.0", "::"})
# bind() errors that mean "not an address of this machine" (rather than "could not tell")
NOT_HERE = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})
FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")
_IPV6_SCOPE_GLOBAL = 0x00  # if_inet6's scope column; 0x10 host (::1), 0x20 link (fe80::)


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def names_this_machine(uri: str, can_bind: Callable[[str], bool], *,
                       hostname: str = "") -> bool:
    """Whether the libvirt ``uri`` is a host on this machine (its network is ours): a URI
    without a host (``qemu:///system``, ``qemu+unix://``, ``test://``), one naming
    localhost or a loopback address, an IP address ``can_bind`` accepts, or this
    machine's ``hostname``. Another name is not looked up (that may block): remote."""
    name = urlparse(uri).hostname
    if not name or _is_loopback(name):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return bool(hostname) and name.lower() == hostname.lower()
    return can_bind(name)


def listen_verdict(listen: str, *, vm: str, host: str, local: bool,
                   bind_errno: int | None, addresses: Sequence[str] = ()) -> str:
    """What to do with VM ``vm``'s new VNC listen address ``listen`` (an IP address, as
    ``check_listen`` returns it) on host ``host``: "" when it works, a warning when it
    could not be checked. ``local``: the host is this machine; ``bind_errno``: what a
    bind to it here failed with (None: it worked, or was not tried); ``addresses``:
    this machine's own, for the message. ``InvalidInput`` when this machine lacks it."""
    if listen in WILDCARDS:
        return ""
    next_start = (f"if it is not, the next start of {vm} fails; `virtlife graphics {vm} "
                  "--listen 0.0.0.0` listens on every address")
    if not local:
        return (f"{listen} could not be checked: {host} is a remote host; make sure it is "
                f"one of {host}'s addresses ({next_start})")
    if bind_errno is None:
        return ""
    if bind_errno in NOT_HERE:
        found = (f"one of its addresses: {', '.join(addresses)}" if addresses
                 else "one of its addresses (`ip -brief address` lists them)")
        no_ipv6 = " (IPv6 is off here)" if bind_errno == errno.EAFNOSUPPORT else ""
        raise errors.InvalidInput(
            f"cannot make the VNC server of {vm} listen on {listen}: it is not an address "
            f"of {host} (this machine){no_ipv6}, so the VM's next start would fail; give "
            "0.0.0.0 (every IPv4 address), :: (every address), 127.0.0.1 (this machine "
            f"only) or {found}")
    return (f"could not check that {listen} is an address of {host} (this machine): "
            f"{os.strerror(bind_errno)}; {next_start}")


def bind_error(address: str) -> int | None:
    """The errno of a bind of a TCP socket to (``address``, 0) here; None when it binds.
    The socket is closed at once: nothing listens, no port is kept."""
    try:
        [(family, kind, proto, _, where), *_] = socket.getaddrinfo(
            address, 0, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        with socket.socket(family, kind, proto) as sock:
            sock.bind(where)
    except socket.gaierror:
        return errno.EADDRNOTAVAIL  # e.g. an IPv6 scope naming no interface here
    except OSError as err:
        return err.errno if err.errno is not None else errno.EIO
    return None


def fib_trie_addresses(text: str) -> list[str]:
    """The IPv4 addresses of this machine in /proc/net/fib_trie's ``text`` (each
    ``|-- ADDRESS`` followed by a ``/32 host LOCAL`` line), in order, once each."""
    found: list[str] = []
    last = ""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["|--"] and len(words) == 2:
            last = words[1]
        elif last and words == ["/32", "host", "LOCAL"]:
            if last not in found:
                found.append(last)
            last = ""
    return found


def if_inet6_addresses(text: str) -> list[str]:
    """The global-scope IPv6 addresses in /proc/net/if_inet6's ``text`` (a link-local
    address needs an interface to be named; ::1 is the loopback)."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 6 or len(words[0]) != 32:
            continue
        try:
            address = ipaddress.IPv6Address(int(words[0], 16))
            scope = int(words[3], 16)
        except ValueError:
            continue
        if scope == _IPV6_SCOPE_GLOBAL and str(address) not in found:
            found.append(str(address))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def this_machines_addresses() -> list[str]:
    """This machine's addresses other than loopback, IPv4 first (none where /proc/net
    cannot be read)."""
    found: Iterable[str] = [*fib_trie_addresses(_read(FIB_TRIE)),
                            *if_inet6_addresses(_read(IF_INET6))]
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


def check_listen_on(uri: str, listen: str, *, vm: str, host: str) -> str:
    """``listen_verdict`` for VM ``vm`` on host ``host`` (at ``uri``), with the facts of
    this machine gathered: "" or a warning, ``InvalidInput`` when the address is not
    this machine's."""
    if listen in WILDCARDS:
        return ""
    local = names_this_machine(uri, lambda a: bind_error(a) is None,
                               hostname=socket.gethostname())
    failed = bind_error(listen) if local else None
    addresses = this_machines_addresses() if failed in NOT_HERE else []
    return listen_verdict(listen, vm=vm, host=host, local=local, bind_errno=failed,
                          addresses=addresses)
