"""Which libvirt URIs virtlife opens for a host of its inventory: a pure function.

A libvirt URI can do more than name a host: ``qemu+ext:///system?command=P`` and
``qemu+ssh://H/system?command=P`` (or ``netcat=P``) run the program P as this process's
user, ``socket=`` connects to any local socket, ``keyfile``/``pkipath``/``known_hosts``/
``authfile`` make libvirt read files, ``name=`` is the URI the remote daemon opens, and
``test:///FILE`` makes libvirt parse FILE (its first line comes back in the error). A
host added over the API (any read-write token) must not be able to do any of that, so
``refusal`` accepts only what an operator uses, and says why it refuses the rest:

- ``qemu:///system`` (or ``qemu+unix:///system``): the local system daemon;
- ``qemu+ssh://``, ``qemu+tls://`` (or ``qemu://``), ``qemu+tcp://`` ``[USER@]HOST[:PORT]/system``,
  with a host name, an IPv4 or a bracketed IPv6 address (never one that begins with
  '-', which ssh would read as an option);
- ``test:///default`` or ``test:///PATH`` only when the caller allows the test driver
  (``config.allow_test_uris``: for tests);
- query parameters only from ``ALLOWED_PARAMS``, each with its few values.

It is an allow-list over a strict grammar: no '%' escapes, no ';' (libvirt splits
parameters on it too), lower-case scheme and parameter names (libvirt compares names
without case), so nothing a client can spell reaches libvirt as another parameter.
libvirt 9.0's remote driver reads these parameters (src/remote/remote_driver.c):

==================  ====================================================  ========
parameter           what it does                                          verdict
==================  ====================================================  ========
command             the program run for ext, or instead of ssh            refused
netcat              the program ssh runs on the remote host               refused
proxy               which helper runs on the remote host                  refused
socket              the UNIX socket connected to (locally or remotely)    refused
keyfile             a private key file read by ssh/libssh                 refused
pkipath             the directory of TLS certificates read                refused
known_hosts         the known-hosts file read and written (libssh)        refused
authfile            the credentials file read (virauth)                   refused
name                the URI the remote daemon opens                       refused
auth, sshauth       the authentication methods tried                      refused
known_hosts_verify  whether the remote host key is checked (libssh)       refused
tls_priority        the GnuTLS priority string                            refused
no_sanity           skip the check that netcat exists remotely            refused
(any other)         passed on to the remote daemon as part of ``name``    refused
no_verify           skip the TLS certificate checks (0 or 1)              allowed
no_tty              never ask ssh for a password on a terminal (0 or 1)   allowed
mode                which daemon to reach: auto, legacy or direct         allowed
==================  ====================================================  ========

An operator who needs one of the refused forms adds the host from the CLI with
``--allow-any-uri`` (the store records that, and the API can never set it). This
module does no I/O and must not import libvirt.
"""

from __future__ import annotations

import functools
import re
from typing import Final

__all__ = ["ACCEPTED", "ALLOWED_PARAMS", "add_refusal", "refusal", "stored_refusal"]

# What an operator is told is accepted, after a refusal.
ACCEPTED: Final = ("virtlife accepts qemu:///system and qemu+ssh://, qemu+tls:// or "
                   "qemu+tcp://[USER@]HOST[:PORT]/system, with no parameters but "
                   "no_verify, no_tty and mode")

# parameter -> the whole value it may have
ALLOWED_PARAMS: Final[dict[str, re.Pattern[str]]] = {
    "no_verify": re.compile(r"[01]"),
    "no_tty": re.compile(r"[01]"),
    "mode": re.compile(r"auto|legacy|direct"),
}

# What the refused parameters do, for the message (the refusal is by ALLOWED_PARAMS).
_PARAM_ROLES: Final[dict[str, str]] = {
    "command": "names a program that libvirt runs",
    "netcat": "names a program that ssh runs on the remote host",
    "proxy": "chooses the program run on the remote host",
    "socket": "names a socket that libvirt connects to",
    "keyfile": "names a key file that libvirt reads",
    "pkipath": "names a directory of certificates that libvirt reads",
    "known_hosts": "names a file that libvirt reads and writes",
    "authfile": "names a credentials file that libvirt reads",
    "name": "names the URI that the remote daemon opens",
}

# scheme://[user@]host[:port]/path[?query][#fragment], split loosely: each part is
# then checked strictly, so that the refusal can say which part is wrong.
_SPLIT: Final = re.compile(
    r"(?P<scheme>[^:/?#]+)://"
    r"(?:(?P<user>[^@/?#]*)@)?"
    r"(?P<host>\[[^\]/?#]*\]|[^:/?#]*)"
    r"(?::(?P<port>[^/?#]*))?"
    r"(?P<path>/[^?#]*)?"
    r"(?:\?(?P<query>[^#]*))?"
    r"(?P<fragment>#.*)?", re.DOTALL)
_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\]")
_USER: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_TEST_PATH: Final = re.compile(r"/[A-Za-z0-9._/+-]*")
_VISIBLE: Final = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space
_PARAM: Final = re.compile(r"(?P<name>[^=&]*)=(?P<value>[^&]*)")

# qemu transports that reach a remote daemon over the network (qemu:// alone is TLS)
_REMOTE: Final = frozenset({"qemu", "qemu+ssh", "qemu+tls", "qemu+tcp"})
_LOCAL: Final = frozenset({"qemu", "qemu+unix"})


def refusal(uri: str, *, allow_test: bool = False) -> str | None:
    """Why ``uri`` must not be opened for a host of the inventory, or None to open it.

    The reason is a sentence fragment ("its parameter 'command' names a program that
    libvirt runs") for the caller to put in its own message beside ``ACCEPTED``.
    """
    if not _VISIBLE.fullmatch(uri) or "%" in uri:
        return "it holds '%' escapes, spaces or characters that a host URI never needs"
    parts = _SPLIT.fullmatch(uri)
    if parts is None:
        return "it is not of the form DRIVER[+TRANSPORT]://[[USER@]HOST[:PORT]]/PATH"
    scheme = parts["scheme"]
    user, host, port = parts["user"], parts["host"], parts["port"]
    path, query = parts["path"] or "", parts["query"]
    if parts["fragment"] is not None:
        return "it has a '#' fragment"
    if scheme == "test":
        if not allow_test:
            return ("the test driver reads any file its URI names; it is accepted only "
                    "where VIRTLIFE_ALLOW_TEST_URIS=1 is set (for tests)")
        if user is not None or host or port is not None or query is not None:
            return "a test driver URI names no host and has no parameters (test:///default)"
        if not _TEST_PATH.fullmatch(path):
            return "a test driver URI's path is /default or a plain file path"
        return None
    transport = scheme.partition("+")[2]
    if scheme.partition("+")[0] != "qemu":
        return f"the driver {scheme.partition('+')[0]!r} is not QEMU/KVM's ('qemu')"
    if transport == "ext":
        return "the ext transport runs a program that the URI names"
    if scheme not in _REMOTE | _LOCAL:
        return f"the transport {transport!r} is not ssh, tls, tcp or unix"
    if path != "/system":
        return (f"its path {path or '(none)'!r} is not /system (qemu:///session starts a "
                "daemon of this process's user, qemu:///embed runs the driver in-process)")
    if host.startswith("-") or (user or "").startswith("-"):
        return "its host or user begins with '-', which ssh reads as an option"
    if not host:
        if user is not None or port is not None:
            return "it has a user or port but no host"
        if scheme not in _LOCAL:
            return f"{scheme}:// needs a host (qemu+ssh://HOST/system)"
    else:
        if scheme not in _REMOTE:
            return f"{scheme}:// names no host (qemu+unix:///system)"
        if not _HOST.fullmatch(host):
            return f"its host {host!r} is not a host name or IP address"
        if user is not None and not _USER.fullmatch(user):
            return f"its user {user!r} is not a user name"
        if port is not None and not (_PORT.fullmatch(port) and 0 < int(port) < 65536):
            return f"its port {port!r} is not a port number"
    return None if query is None else _query_refusal(query)


def add_refusal(name: str, uri: str, *, allow_test: bool = False) -> str | None:
    """Why ``host add NAME URI`` is refused, as the operator reads it; None if it is not."""
    why = refusal(uri, allow_test=allow_test)
    if why is None:
        return None
    return (f"cannot add host {name}: the URI {uri} is refused: {why}. {ACCEPTED}. An "
            f"operator who trusts this URI adds it from the command line with "
            f"`virtlife host add --allow-any-uri {name} URI`")


@functools.lru_cache(maxsize=4096)
def stored_refusal(name: str, uri: str, *, allow_test: bool = False) -> str | None:
    """Why the inventory's host ``name`` at ``uri`` (not added with ``--allow-any-uri``)
    is not opened, as its problem reads; None when it may be.

    Kept per (name, URI, allow_test), the answer being a function of them alone: the
    server re-reads the inventory on every request, and checking 500 URIs again each
    time cost ~20 ms an inventory read of 500 hosts (this 2-core machine, loaded)."""
    why = refusal(uri, allow_test=allow_test)
    if why is None:
        return None
    return (f"host {name} is not opened: its URI {uri} is refused: {why}. If you trust "
            f"it, `virtlife host remove {name}` and add it again with "
            f"`virtlife host add --allow-any-uri {name} URI`")


def _query_refusal(query: str) -> str | None:
    """Why the query string is refused, or None when every parameter is allowed."""
    if ";" in query:
        return "its parameters are separated by ';' (use '&')"
    for item in query.split("&"):
        param = _PARAM.fullmatch(item)
        if param is None:
            return f"its parameter {item!r} is not NAME=VALUE"
        name, value = param["name"], param["value"]
        allowed = ALLOWED_PARAMS.get(name)
        if allowed is None:
            role = _PARAM_ROLES.get(name.lower(), "is not one virtlife passes on")
            return f"its parameter {name!r} {role}"
        if not allowed.fullmatch(value):
            return f"its parameter {name}={value!r} has a value virtlife does not pass on"
    return None
