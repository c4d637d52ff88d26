"""``xml.graphics`` (the VNC server in a domain's XML, and its change) and the pure parts
of ``services.consoles``: which address a client uses, and the remote-viewer file."""

from __future__ import annotations

import configparser

import pytest

from virtlife import errors
from virtlife.services.consoles import client_address, escape_ini, viewer_text
from virtlife.xml.graphics import (
    KEEP,
    check_listen,
    check_vnc_password,
    graphics,
    has_console,
    vnc,
    with_vnc,
)

LIVE = """<domain type='kvm' id='3'><name>web1</name><devices>
  <serial type='pty'><source path='/dev/pts/4'/><target port='0'/></serial>
  <console type='pty' tty='/dev/pts/4'><target type='serial' port='0'/></console>
  <graphics type='spice' port='5901' autoport='yes' listen='127.0.0.1'>
    <listen type='address' address='127.0.0.1'/></graphics>
  <graphics type='vnc' port='5902' autoport='yes' listen='0.0.0.0' passwd='s3cret'>
    <listen type='address' address='0.0.0.0'/></graphics>
</devices></domain>"""

DEFINED = """<domain type='kvm'><name>web1</name><devices>
  <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='old'
            passwdValidTo='2030-01-01T00:00:00'>
    <listen type='address' address='127.0.0.1'/></graphics>
</devices></domain>"""

BARE = "<domain type='kvm'><name>web1</name><devices/></domain>"


def test_live_vnc_is_found_after_other_graphics_with_its_index_port_and_password() -> None:
    found = vnc(LIVE)
    assert found is not None
    assert (found.index, found.type, found.port, found.display, found.autoport) == (
        1, "vnc", 5902, 2, True)
    assert (found.listen_type, found.listen, found.password) == ("address", "0.0.0.0", "s3cret")
    assert [g.type for g in graphics(LIVE)] == ["spice", "vnc"]


def test_an_autoport_definition_has_no_port_and_no_display() -> None:
    found = vnc(DEFINED)
    assert found is not None and found.port is None and found.display is None


def test_a_socket_listen_has_a_path_and_no_address() -> None:
    xml = ("<domain><devices><graphics type='vnc'><listen type='socket' "
           "socket='/run/vnc.sock'/></graphics></devices></domain>")
    found = vnc(xml)
    assert found is not None
    assert (found.listen_type, found.listen, found.socket, found.port) == (
        "socket", "", "/run/vnc.sock", None)


def test_no_vnc_and_no_console_in_a_bare_domain() -> None:
    assert vnc(BARE) is None
    assert not has_console(BARE)
    assert has_console(LIVE)


def test_with_vnc_changes_the_listen_address_and_keeps_the_password() -> None:
    found = vnc(with_vnc(DEFINED, listen="0.0.0.0"))
    assert found is not None
    assert (found.listen_type, found.listen, found.password, found.autoport) == (
        "address", "0.0.0.0", "old", True)


def test_with_vnc_sets_a_password_and_drops_its_old_expiry() -> None:
    xml = with_vnc(DEFINED, password="new")
    assert "passwdValidTo" not in xml
    found = vnc(xml)
    assert found is not None and (found.password, found.listen) == ("new", "127.0.0.1")


def test_with_vnc_removes_the_password() -> None:
    found = vnc(with_vnc(DEFINED, password=None))
    assert found is not None and found.password is None


def test_with_vnc_adds_vnc_on_loopback_to_a_domain_without_it() -> None:
    found = vnc(with_vnc(BARE, password=KEEP))
    assert found is not None
    assert (found.listen, found.autoport, found.port, found.password) == (
        "127.0.0.1", True, None, None)


def test_a_listen_that_is_not_an_ip_address_is_refused() -> None:
    with pytest.raises(errors.InvalidInput, match=r"'example\.com' is not an IP address"):
        with_vnc(DEFINED, listen="example.com")
    assert check_listen(" ::0 ") == "::"


@pytest.mark.parametrize(("password", "why"), [
    ("", "empty"), ("123456789", "9 characters long; VNC uses at most 8"),
    ("pa\nss", "printable ASCII"), ("pässwd", "printable ASCII")])
def test_unusable_vnc_passwords_are_refused(password: str, why: str) -> None:
    with pytest.raises(errors.InvalidInput, match=why):
        check_vnc_password(password)


@pytest.mark.parametrize(("listen", "remote", "address"), [
    ("127.0.0.1", None, "127.0.0.1"), ("", None, "127.0.0.1"), ("0.0.0.0", None, "127.0.0.1"),
    ("::", None, "127.0.0.1"), ("::1", None, "::1"), ("192.168.1.5", None, "192.168.1.5"),
    ("0.0.0.0", "node2.example", "node2.example"), ("10.0.0.7", "node2", "10.0.0.7")])
def test_client_address_is_reachable_from_this_machine(
        listen: str, remote: str | None, address: str) -> None:
    assert client_address(listen, remote) == address


def test_a_remote_hosts_loopback_is_refused_with_the_fix() -> None:
    with pytest.raises(errors.Unsupported) as err:
        client_address("127.0.0.1", "node2", vm="web1", host="node2")
    assert "listens on 127.0.0.1, the loopback of remote host node2" in str(err.value)
    assert "virtlife graphics web1 --listen 0.0.0.0" in str(err.value)


def test_the_viewer_file_parses_as_ini_with_every_field() -> None:
    text = viewer_text(host="127.0.0.1", port=5902, title="web1", password="s3c%ret")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert dict(parser["virt-viewer"]) == {
        "type": "vnc", "host": "127.0.0.1", "port": "5902", "password": "s3c%ret",
        "title": "web1", "delete-this-file": "1"}


def test_the_viewer_file_has_no_password_line_without_a_password() -> None:
    assert "password" not in viewer_text(host="h", port=5900, title="t", password=None)


def test_ini_values_are_escaped_as_glib_reads_them() -> None:
    assert escape_ini(" a\\b\n") == "\\sa\\\\b\\n"
