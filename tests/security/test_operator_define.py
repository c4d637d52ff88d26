"""An operator token may define domain XML only when it reaches nothing of the host
(issue 16): a ``<hostdev>``, ``<qemu:commandline>``, another ``<emulator>``, a disk on
``/dev/sda`` or ``/etc/shadow``, a serial console writing to ``/etc``... is refused
with 403 naming each element, before libvirt sees it; the same XML from an admin is
defined. On a served app over libvirt's test driver, with the real roles' tokens."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api_support import Served

DEFINE = "/api/hosts/local/define"
XML = {"content-type": "application/xml"}  # define takes nothing else
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def domain(name: str, devices: str = "", *, head: str = "", ns: str = "") -> str:
    return (f"<domain type='test'{ns}><name>{name}</name><memory unit='MiB'>64</memory>"
            f"{head}<os><type>hvm</type></os><devices>{devices}</devices></domain>")


ATTACKS = {
    "hostdev": domain("evil", "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
                              "<address domain='0' bus='1' slot='0' function='0'/></source>"
                              "</hostdev>"),
    "qemu-commandline": domain(
        "evil", ns=f" xmlns:qemu='{QEMU_NS}'",
        head="<qemu:commandline><qemu:arg value='-drive'/>"
             "<qemu:arg value='file=/etc/shadow,if=virtio'/></qemu:commandline>"),
    "emulator": domain("evil", "<emulator>/tmp/evil-emulator</emulator>"),
    "shadow-disk": domain("evil", "<disk type='file' device='disk'><source "
                                  "file='/etc/shadow'/><target dev='vda'/></disk>"),
    "block-disk": domain("evil", "<disk type='block' device='disk'><source dev='/dev/sda'/>"
                                 "<target dev='vda'/></disk>"),
    "serial-file": domain("evil", "<serial type='file'><source path='/etc/cron.d/evil'/>"
                                  "</serial>"),
    "kernel": domain("evil").replace("<os><type>hvm</type>",
                                     "<os><type>hvm</type><kernel>/etc/shadow</kernel>"),
}


def _names(client: httpx.Client) -> list[str]:
    return sorted(v["name"] for v in client.get("/api/vms").json()["vms"])


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_operators_host_reaching_xml_is_refused_naming_it(api: Served,
                                                             attack: str) -> None:
    with api.client(token=api.operator_token) as op:
        r = op.post(DEFINE, content=ATTACKS[attack], headers=XML)
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "not_permitted"
        assert error["message"].startswith("cannot define evil with an operator token: "
                                           "its XML reaches the host")
        assert "ask an admin" in error["message"]
        assert _names(op) == ["test"]
        assert op.get("/api/history").json() == []  # refused before any operation


def test_the_refusal_names_every_element(api: Served) -> None:
    xml = domain("evil", "<hostdev/><emulator>/tmp/e</emulator>"
                         "<disk type='block'><source dev='/dev/sda'/></disk>")
    with api.client(token=api.operator_token) as op:
        message = op.post(DEFINE, content=xml, headers=XML).json()["error"]["message"]
    assert "devices/hostdev: passes a host device to the guest" in message
    assert "devices/emulator: the emulator /tmp/e is not one of the host's " \
           "(/usr/bin/test-hv)" in message
    assert "devices/disk: a disk of type block" in message
    assert "devices/disk/source@dev: a host device (/dev/sda)" in message


def test_an_operator_defines_and_updates_xml_that_keeps_to_the_vm(api: Served,
                                                                  images: Path) -> None:
    devices = (f"<emulator>/usr/bin/test-hv</emulator><disk type='file' device='disk'>"
               f"<source file='{images}/ok.img'/><target dev='vda'/></disk>"
               "<interface type='network'><source network='default'/></interface>"
               "<serial type='pty'/>")
    with api.client(token=api.operator_token) as op:
        xml = domain("ok", devices, head="<uuid>7a1c0e4e-0000-4000-8000-00000000e001</uuid>")
        r = op.post(DEFINE, content=xml, headers=XML)
        assert r.status_code == 200, r.text
        again = op.post(DEFINE, content=xml.replace(">64<", ">96<"), headers=XML)
        assert again.status_code == 200, again.text
        assert op.get("/api/vms/local/ok").json()["memory_mib"] == 96
        entry = op.get("/api/vms/local/ok/history").json()[0]
        assert entry["user"] == f"api:{api.operator_name}"


@pytest.mark.parametrize("attack", ["hostdev", "shadow-disk", "emulator", "serial-file"])
def test_an_admin_defines_the_same_xml(api: Served, attack: str) -> None:
    with api.client() as root:
        r = root.post(DEFINE, content=ATTACKS[attack], headers=XML)
        assert r.status_code == 200, r.text
        assert _names(root) == ["evil", "test"]
