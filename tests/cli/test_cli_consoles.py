"""``vnc``, ``viewer-file``, ``viewer``, ``graphics`` and ``console`` run as the real
``virtlife`` command on a test-driver node with a running VNC VM: output, JSON, the
``.vv`` file's mode, and the refusals (exit code and one line). The console's
exchange with a guest, the refused second console and a change of graphics on a
running VM are tested on QEMU (tests/integration/test_consoles_real.py)."""

from __future__ import annotations

import configparser
import errno
import json
import stat
from pathlib import Path

import pytest
from test_cli import (
    EXIT_INVALID_TRANSITION,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Run,
    assert_ok,
    assert_one_line_error,
    virtlife,
)

NODE = """<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>2</active><nodes>1</nodes>
    <sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vnc1</name><uuid>77777777-7777-7777-7777-777777777777</uuid>
    <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <devices>
      <graphics type='vnc' port='5911' autoport='no' listen='127.0.0.1' passwd='pw%1'>
        <listen type='address' address='127.0.0.1'/></graphics>
    </devices>
    <test:runstate>1</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>off1</name><uuid>88888888-8888-8888-8888-888888888888</uuid>
    <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <test:runstate>5</test:runstate>
  </domain>
</node>
"""


@pytest.fixture
def node(tmp_path: Path) -> str:
    path = tmp_path / "consoles-node.xml"
    path.write_text(NODE)
    return f"test://{path}"


def on(node: str, *args: str) -> Run:
    return virtlife("-c", node, *args)


def test_vnc_prints_the_address_and_display_or_json(node: str) -> None:
    run = on(node, "vnc", "vnc1")
    assert_ok(run)
    assert run.out == "vnc1: VNC at 127.0.0.1:5911 (display :11), password set\n"
    run = on(node, "vnc", "vnc1", "--json")
    assert_ok(run)
    assert json.loads(run.out) == {"host": node, "vm": "vnc1", "listen": "127.0.0.1",
                                   "port": 5911, "display": 11, "password": True,
                                   "address": "127.0.0.1"}


def test_viewer_file_goes_to_stdout_or_to_a_private_file(node: str, tmp_path: Path) -> None:
    run = on(node, "viewer-file", "vnc1")
    assert_ok(run)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(run.out)
    assert dict(parser["virt-viewer"]) == {
        "type": "vnc", "host": "127.0.0.1", "port": "5911", "password": "pw%1",
        "title": "vnc1", "delete-this-file": "1"}
    out = tmp_path / "vnc1.vv"
    out.write_text("old")
    out.chmod(0o644)
    run = on(node, "viewer-file", "vnc1", "-o", str(out))
    assert_ok(run)
    assert run.out == f"vnc1: viewer file written to {out}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text() == parser_text(parser)


def parser_text(parser: configparser.ConfigParser) -> str:
    fields = parser["virt-viewer"]
    return "[virt-viewer]\n" + "".join(f"{k}={v}\n" for k, v in fields.items())


@pytest.mark.parametrize("command", ["vnc", "viewer-file", "viewer", "console"])
def test_a_shut_off_vm_is_refused_in_one_line(node: str, command: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    if command == "viewer":  # get past the check for remote-viewer
        fake = tmp_path / "bin" / "remote-viewer"
        fake.parent.mkdir()
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    message = assert_one_line_error(on(node, command, "off1"), EXIT_INVALID_TRANSITION)
    assert "off1: it is shut off, not running; start it first" in message


def test_a_vm_without_vnc_is_not_found(node: str) -> None:
    message = assert_one_line_error(on(node, "vnc", "off1"), EXIT_INVALID_TRANSITION)
    assert "shut off" in message
    message = assert_one_line_error(virtlife("-c", "test:///default", "vnc", "test"),
                                    EXIT_NOT_FOUND)
    assert message.startswith("cannot show the VNC server of test: it has no VNC graphics")


def test_viewer_without_remote_viewer_says_how_to_install_it(
        node: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    message = assert_one_line_error(on(node, "viewer", "vnc1"), 1)
    assert "remote-viewer is not installed: install it with `apt-get install virt-viewer`" \
        in message


def test_graphics_shows_the_definition_without_options(node: str) -> None:
    run = on(node, "graphics", "vnc1")
    assert_ok(run)
    assert run.out == "vnc1: VNC on 127.0.0.1, port 5911, a password\n"
    run = on(node, "graphics", "off1", "--json")
    assert_ok(run)
    assert json.loads(run.out)["vnc"] is False


def test_graphics_reads_the_password_from_stdin_and_never_prints_it(node: str) -> None:
    import subprocess

    from support import VIRTLIFE

    proc = subprocess.run([*VIRTLIFE, "-c", node, "graphics", "vnc1", "--password",
                           "--listen", "0.0.0.0"], input="pw42\n", capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("vnc1: running")
    assert "VNC listens on 0.0.0.0, VNC password set; it applies at the next boot" \
        in proc.stdout
    assert "pw42" not in proc.stdout + proc.stderr


def test_graphics_refuses_a_bad_address_or_password(node: str) -> None:
    message = assert_one_line_error(on(node, "graphics", "vnc1", "--listen", "nowhere"),
                                    EXIT_USAGE)
    assert "'nowhere' is not an IP address" in message


def test_graphics_refuses_an_address_this_machine_lacks_naming_what_works(node: str) -> None:
    from virtlife.services.vnclisten import bind_error, this_machines_addresses

    if bind_error("203.0.113.77") != errno.EADDRNOTAVAIL:
        pytest.skip("203.0.113.77 is an address of this machine")
    run = on(node, "graphics", "vnc1", "--listen", "203.0.113.77")
    message = assert_one_line_error(run, EXIT_USAGE)
    assert message.startswith("cannot make the VNC server of vnc1 listen on 203.0.113.77: "
                              f"it is not an address of {node} (this machine), so the VM's "
                              "next start would fail; give 0.0.0.0 (every IPv4 address), "
                              ":: (every address), 127.0.0.1 (this machine only) or one "
                              "of its addresses"), message
    assert all(address in message for address in this_machines_addresses())
    assert_ok(on(node, "graphics", "vnc1", "--listen", "127.0.0.1"))
