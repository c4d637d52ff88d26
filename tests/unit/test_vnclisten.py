"""``services.vnclisten``: the verdict on a VNC listen address (pure), whether a URI is
this machine, the /proc/net parsers, and the bind test on this machine."""

from __future__ import annotations

import errno

import pytest

from virtlife import errors
from virtlife.services import vnclisten
from virtlife.services.vnclisten import (
    bind_error,
    fib_trie_addresses,
    if_inet6_addresses,
    listen_verdict,
    names_this_machine,
)

FOREIGN = "203.0.113.77"  # TEST-NET-3: no machine has it


def _not_here(address: str) -> str:
    if bind_error(address) != errno.EADDRNOTAVAIL:
        pytest.skip(f"{address} is an address of this machine")
    return address


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
@pytest.mark.parametrize("local", [True, False])
def test_a_wildcard_always_works(listen: str, local: bool) -> None:
    assert listen_verdict(listen, vm="w", host="h", local=local,
                          bind_errno=errno.EADDRNOTAVAIL) == ""


def test_an_address_this_machine_binds_works() -> None:
    assert listen_verdict("10.0.0.5", vm="w", host="local", local=True,
                          bind_errno=None) == ""


def test_an_address_this_machine_lacks_is_refused_with_what_works() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        listen_verdict("10.9.9.9", vm="web1", host="local", local=True,
                       bind_errno=errno.EADDRNOTAVAIL, addresses=["10.0.0.5", "fd00::2"])
    assert str(caught.value) == (
        "cannot make the VNC server of web1 listen on 10.9.9.9: it is not an address of "
        "local (this machine), so the VM's next start would fail; give 0.0.0.0 (every "
        "IPv4 address), :: (every address), 127.0.0.1 (this machine only) or one of its "
        "addresses: 10.0.0.5, fd00::2")
    assert caught.value.exit_code == 64


def test_without_a_list_of_addresses_the_refusal_says_where_to_find_them() -> None:
    with pytest.raises(errors.InvalidInput, match=r"\(IPv6 is off here\).*`ip -brief "
                                                  r"address` lists them"):
        listen_verdict("fd00::9", vm="web1", host="local", local=True,
                       bind_errno=errno.EAFNOSUPPORT)


def test_a_bind_that_fails_otherwise_is_a_warning_not_a_refusal() -> None:
    warning = listen_verdict("10.9.9.9", vm="web1", host="local", local=True,
                             bind_errno=errno.EPERM)
    assert warning.startswith("could not check that 10.9.9.9 is an address of local (this "
                              "machine): Operation not permitted; if it is not, the next "
                              "start of web1 fails")


def test_a_remote_hosts_address_is_taken_with_a_warning() -> None:
    warning = listen_verdict("10.253.7.11", vm="web1", host="lab-a", local=False,
                             bind_errno=None)
    assert warning == (
        "10.253.7.11 could not be checked: lab-a is a remote host; make sure it is one of "
        "lab-a's addresses (if it is not, the next start of web1 fails; `virtlife "
        "graphics web1 --listen 0.0.0.0` listens on every address)")


@pytest.mark.parametrize(("uri", "here"), [
    ("qemu:///system", True),
    ("qemu+unix:///system?socket=/run/x/libvirt-sock", True),
    ("test:///default", True),
    ("qemu+ssh://localhost/system", True),
    ("qemu+tcp://127.0.0.1:16510/system", True),
    ("qemu+tcp://[::1]/system", True),
    ("qemu+tcp://10.0.0.5/system", True),  # an address of ours (can_bind below)
    ("qemu+tcp://10.253.7.11/system", False),  # a lab host: another network namespace
    ("qemu+ssh://root@MyBox/system", True),  # this machine's hostname
    ("qemu+ssh://other.example.com/system", False),
])
def test_which_uris_are_this_machine(uri: str, here: bool) -> None:
    assert names_this_machine(uri, lambda a: a == "10.0.0.5", hostname="mybox") is here


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 10.1.2.3
              /32 host LOCAL
"""

IF_INET6 = """fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


def test_fib_trie_gives_the_local_ipv4_addresses_once_each() -> None:
    assert fib_trie_addresses(FIB_TRIE) == ["127.0.0.1", "192.0.2.2", "10.1.2.3"]


def test_if_inet6_gives_the_global_ipv6_addresses() -> None:
    assert if_inet6_addresses(IF_INET6) == ["fd00::2"]
    assert if_inet6_addresses("garbage\n\n") == []


def test_this_machines_addresses_leave_out_the_loopback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vnclisten, "_read", lambda path: FIB_TRIE if path ==
                        vnclisten.FIB_TRIE else IF_INET6)
    assert vnclisten.this_machines_addresses() == ["192.0.2.2", "10.1.2.3", "fd00::2"]


def test_bind_tells_this_machines_addresses_from_others() -> None:
    assert bind_error("127.0.0.1") is None
    assert bind_error(_not_here(FOREIGN)) == errno.EADDRNOTAVAIL


def test_check_listen_on_refuses_an_address_this_machine_lacks() -> None:
    foreign = _not_here(FOREIGN)
    with pytest.raises(errors.InvalidInput, match=f"listen on {foreign}: it is not an "
                                                  "address of local"):
        vnclisten.check_listen_on("qemu:///system", foreign, vm="web1", host="local")
    assert vnclisten.check_listen_on("qemu:///system", "127.0.0.1", vm="web1",
                                     host="local") == ""
    assert "lab-a is a remote host" in vnclisten.check_listen_on(
        "qemu+tcp://203.0.113.78/system", foreign, vm="web1", host="lab-a")
