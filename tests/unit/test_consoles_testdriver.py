"""``Consoles`` on libvirt's test driver: the live VNC server of a running VM, the viewer
file, refusals for a shut-off VM or one without VNC, the graphics operation (journalled
without the password, the definition changed, the running VM's graphics kept; a listen
address this machine lacks refused, a remote host's taken with a warning), and the
serial console's refusals. The test driver has no console streams (``Unsupported``)
and no graphics sockets: those are tested on QEMU in
tests/integration/test_consoles_real.py."""

from __future__ import annotations

import configparser
import errno

import pytest

from virtlife import errors
from virtlife.services import vnclisten
from virtlife.services.consoles import Consoles
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.vnclisten import bind_error
from virtlife.xml.graphics import vnc

VNC = ("<graphics type='vnc' port='5907' autoport='no' listen='127.0.0.1' {pw}>"
       "<listen type='address' address='127.0.0.1'/></graphics>")
FOREIGN = "203.0.113.77"  # TEST-NET-3: an address no machine has
CONSOLE = ("<serial type='pty'><target port='0'/></serial>"
           "<console type='pty'><target type='serial' port='0'/></console>")


def _define(lc: Lifecycle, name: str, devices: str, *, start: bool = False) -> None:
    lc.define(f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
              f"<os><type>hvm</type></os><devices>{devices}</devices></domain>", host="t")
    if start:
        lc.start(name)


@pytest.fixture
def consoles(lifecycle: Lifecycle) -> Consoles:
    return Consoles(lifecycle.fleet, lifecycle.ops)


def _journal(lc: Lifecycle, vm: str) -> list[tuple[str, str, str]]:
    assert lc.journal is not None
    return [(e.operation, e.outcome, e.detail) for e in lc.journal.list(vm=vm)]


def test_vnc_of_a_running_vm_says_where_it_listens(consoles: Consoles,
                                                   lifecycle: Lifecycle) -> None:
    _define(lifecycle, "g1", VNC.format(pw="passwd='s3cret'"), start=True)
    info = consoles.vnc("g1")
    assert info.as_dict() == {"host": "t", "vm": "g1", "listen": "127.0.0.1", "port": 5907,
                              "display": 7, "password": True, "address": "127.0.0.1"}
    assert str(info) == "g1: VNC at 127.0.0.1:5907 (display :7), password set"


def test_the_viewer_file_points_at_the_port_and_holds_the_password(
        consoles: Consoles, lifecycle: Lifecycle) -> None:
    _define(lifecycle, "g1", VNC.format(pw="passwd='s3cret'"), start=True)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(consoles.viewer_file("g1"))
    assert dict(parser["virt-viewer"]) == {
        "type": "vnc", "host": "127.0.0.1", "port": "5907", "password": "s3cret",
        "title": "g1", "delete-this-file": "1"}


@pytest.mark.parametrize("call", ["vnc", "viewer_file", "vnc_socket"])
def test_a_shut_off_vm_has_no_vnc_server(consoles: Consoles, lifecycle: Lifecycle,
                                         call: str) -> None:
    _define(lifecycle, "g1", VNC.format(pw=""))
    with pytest.raises(errors.InvalidTransition, match="g1: it is shut off, not running; "
                                                       "start it first"):
        getattr(consoles, call)("g1")


def test_a_vm_without_vnc_says_how_to_add_it(consoles: Consoles) -> None:
    with pytest.raises(errors.NotFound, match="vm-running: it has no VNC graphics; add "
                                              "them with `virtlife graphics vm-running"):
        consoles.vnc("vm-running")


def test_graphics_on_a_running_vm_changes_the_definition_for_the_next_boot(
        consoles: Consoles, lifecycle: Lifecycle) -> None:
    _define(lifecycle, "g1", VNC.format(pw=""), start=True)
    result = consoles.set_graphics("g1", listen="0.0.0.0", password="n3w")
    assert result.note.startswith("VNC listens on 0.0.0.0, VNC password set; it applies at "
                                  "the next boot")
    guest = lifecycle.fleet.resolve("g1")
    defined = vnc(guest.xml(inactive=True, secure=True))
    live = vnc(guest.xml(secure=True))
    assert defined is not None and (defined.listen, defined.password) == ("0.0.0.0", "n3w")
    assert live is not None and (live.listen, live.password) == ("127.0.0.1", None)
    [(op, outcome, detail)] = _journal(lifecycle, "g1")[:1]
    assert (op, outcome) == ("graphics", "ok") and "n3w" not in detail
    settings = consoles.graphics("g1")
    assert str(settings) == "g1: VNC on 0.0.0.0, port 5907, a password"


def test_graphics_removes_the_password_of_a_shut_off_vm(consoles: Consoles,
                                                        lifecycle: Lifecycle) -> None:
    _define(lifecycle, "g1", VNC.format(pw="passwd='old'"))
    result = consoles.set_graphics("g1", password=None)
    assert result.note == "no VNC password; it applies when the VM starts"
    assert not consoles.graphics("g1").password


def test_graphics_adds_vnc_to_a_vm_without_it(consoles: Consoles, lifecycle: Lifecycle) -> None:
    assert not consoles.graphics("vm-off").vnc
    result = consoles.set_graphics("vm-off", listen="127.0.0.1")
    assert result.note.startswith("VNC graphics added, VNC listens on 127.0.0.1")
    assert consoles.graphics("vm-off").as_dict() == {
        "host": "t", "vm": "vm-off", "vnc": True, "listen": "127.0.0.1", "port": None,
        "password": False}


def test_graphics_refuses_bad_input_before_anything_is_journalled(
        consoles: Consoles, lifecycle: Lifecycle) -> None:
    with pytest.raises(errors.InvalidInput, match="nothing to change"):
        consoles.set_graphics("vm-off")
    with pytest.raises(errors.InvalidInput, match="at most 8"):
        consoles.set_graphics("vm-off", password="far-too-long")
    with pytest.raises(errors.InvalidInput, match="is not an IP address"):
        consoles.set_graphics("vm-off", listen="localhost")
    assert _journal(lifecycle, "vm-off") == []


def test_graphics_refuses_an_address_this_machine_lacks_and_changes_nothing(
        consoles: Consoles, lifecycle: Lifecycle) -> None:
    if bind_error(FOREIGN) != errno.EADDRNOTAVAIL:
        pytest.skip(f"{FOREIGN} is an address of this machine")
    _define(lifecycle, "g1", VNC.format(pw=""))
    with pytest.raises(errors.InvalidInput,
                       match=f"cannot make the VNC server of g1 listen on {FOREIGN}: it is "
                             r"not an address of t \(this machine\).*give 0\.0\.0\.0"):
        consoles.set_graphics("g1", listen=FOREIGN)
    assert consoles.graphics("g1").listen == "127.0.0.1"
    assert [op for op, _, _ in _journal(lifecycle, "g1")] == ["define"]  # no graphics
    assert consoles.set_graphics("g1", listen="127.0.0.2").warnings == ()  # 127/8 is ours
    assert consoles.graphics("g1").listen == "127.0.0.2"


def test_graphics_on_a_remote_host_takes_the_address_with_a_warning(
        consoles: Consoles, lifecycle: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vnclisten, "names_this_machine", lambda *a, **k: False)
    _define(lifecycle, "g1", VNC.format(pw=""))
    result = consoles.set_graphics("g1", listen=FOREIGN)
    assert result.warnings == (
        f"{FOREIGN} could not be checked: t is a remote host; make sure it is one of t's "
        "addresses (if it is not, the next start of g1 fails; `virtlife graphics g1 "
        "--listen 0.0.0.0` listens on every address)",)
    assert consoles.graphics("g1").listen == FOREIGN


def test_graphics_of_a_transient_vm_is_refused(consoles: Consoles,
                                               lifecycle: Lifecycle) -> None:
    lifecycle.fleet.resolve("vm-running").undefine()  # running on, transient
    with pytest.raises(errors.InvalidTransition, match="transient VM"):
        consoles.set_graphics("vm-running", listen="0.0.0.0")
    assert _journal(lifecycle, "vm-running")[0][:2] == ("graphics", "refused")


def test_the_serial_console_of_a_shut_off_vm_is_refused(consoles: Consoles,
                                                        lifecycle: Lifecycle) -> None:
    with pytest.raises(errors.InvalidTransition,
                       match="cannot open the serial console of vm-off: it is shut off, "
                             "not running; start it first"):
        consoles.serial("vm-off")


def test_a_vm_without_a_serial_console_says_so(consoles: Consoles) -> None:
    with pytest.raises(errors.NotFound, match="vm-running has no serial console"):
        consoles.serial("vm-running")


def test_the_test_drivers_missing_console_streams_are_unsupported(
        consoles: Consoles, lifecycle: Lifecycle) -> None:
    _define(lifecycle, "g1", CONSOLE, start=True)
    with pytest.raises(errors.Unsupported, match="cannot open the serial console of g1"):
        consoles.serial("g1")
