"""``xml.reach.host_reaching``: what in a domain XML reaches the host, as a table of
devices (each alone in an otherwise harmless domain), the plain XML it must let
through, and a hypothesis test that no mix of harmless devices is ever refused and
no mix with one host-reaching device ever passes."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtlife.xml.reach import host_reaching

ROOT = "/srv/images"
EMULATOR = "/usr/bin/qemu-system-x86_64"
QEMU_NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"


def _domain(devices: str = "", *, head: str = "", os: str = "", ns: str = "") -> str:
    return (f"<domain type='kvm' {ns}><name>d</name><memory unit='MiB'>64</memory>{head}"
            f"<os><type>hvm</type>{os}</os><devices>{devices}</devices></domain>")


def _reach(xml: str) -> list[str]:
    found = host_reaching(xml, path_allowed=lambda p: posixpath.normpath(p).startswith(
                              ROOT + "/"),
                          emulators={EMULATOR})
    return [str(r) for r in found]


HARMLESS = [
    f"<emulator>{EMULATOR}</emulator>",
    f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    f"<source file='{ROOT}/a.qcow2'/><target dev='vda' bus='virtio'/></disk>",
    f"<disk device='cdrom'><source file='{ROOT}/x.iso'/><target dev='sda' bus='sata'/>"
    "<readonly/></disk>",
    "<disk type='file' device='cdrom'><target dev='sdb' bus='sata'/></disk>",
    f"<disk type='file'><source file='{ROOT}/top.qcow2'/><backingStore type='file'>"
    f"<format type='qcow2'/><source file='{ROOT}/base.qcow2'/></backingStore>"
    "<target dev='vdb'/></disk>",
    "<interface type='network'><source network='default'/><target dev='vnet9'/>"
    "<model type='virtio'/></interface>",
    "<interface type='bridge'><source bridge='br0'/></interface>",
    "<interface type='user'><backend type='passt'/></interface>",
    "<serial type='pty'><target port='0'/></serial>",
    "<console type='pty'><target type='serial' port='0'/></console>",
    "<channel type='unix'><source mode='bind'/>"
    "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
    f"<serial type='file'><source path='{ROOT}/console.log'/></serial>",
    "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>",
    "<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>"
    "<listen type='address' address='127.0.0.1'/></graphics>",
    "<graphics type='spice' autoport='yes'/>",
    "<video><model type='virtio' heads='1'/></video>",
    "<input type='tablet' bus='usb'/>",
    "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>",
    "<memballoon model='virtio'/>",
    "<watchdog model='i6300esb' action='reset'/>",
    "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>"
    f"<source dir='{ROOT}/share'/><target dir='share'/></filesystem>",
    "<controller type='usb' index='0' model='qemu-xhci'/>",
    "<audio id='1' type='none'/>",
    "<vsock model='virtio'><cid auto='yes'/></vsock>",
]

REACHING = [
    ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0' "
     "bus='1' slot='0' function='0'/></source></hostdev>", "passes a host device"),
    ("<emulator>/usr/bin/evil</emulator>", "the emulator /usr/bin/evil is not one of"),
    ("<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vda'/></disk>",
     "a disk of type block"),
    ("<disk type='file'><source file='/etc/shadow'/><target dev='vda'/></disk>",
     "the file /etc/shadow is outside the allowed roots"),
    (f"<disk type='file'><source file='{ROOT}/../../etc/shadow'/><target dev='vda'/></disk>",
     "is outside the allowed roots"),
    ("<disk type='network'><source protocol='nbd' name='x'><host name='10.0.0.1'/>"
     "</source><target dev='vda'/></disk>", "a disk of type network"),
    ("<disk type='volume'><source pool='p' volume='v'/><target dev='vda'/></disk>",
     "a disk of type volume"),
    (f"<disk type='file'><source file='{ROOT}/top.qcow2'/><backingStore type='block'>"
     "<source dev='/dev/sdb'/></backingStore><target dev='vdb'/></disk>",
     "a disk of type block"),
    (f"<disk type='file'><source file='{ROOT}/top.qcow2'/><backingStore type='file'>"
     "<source file='/etc/shadow'/></backingStore><target dev='vdb'/></disk>",
     "/etc/shadow is outside"),
    ("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>",
     "an interface of type direct"),
    ("<interface type='hostdev'><source><address type='pci' bus='1'/></source></interface>",
     "an interface of type hostdev"),
    ("<interface type='ethernet'><script path='/tmp/x.sh'/></interface>",
     "an interface of type ethernet"),
    ("<interface type='bridge'><source bridge='br0'/><script path='/tmp/x.sh'/></interface>",
     "runs a host script"),
    ("<interface type='network'><source network='default'/><target dev='eth0' "
     "managed='no'/></interface>", "managed='no'"),
    ("<interface type='network'><source network='default'/><backend tap='/dev/net/tun'/>"
     "</interface>", "a host tap device"),
    ("<interface type='user'><backend type='passt' logFile='/etc/passwd'/></interface>",
     "/etc/passwd is outside"),
    ("<serial type='file'><source path='/etc/cron.d/x'/></serial>", "/etc/cron.d/x is"),
    ("<serial type='dev'><source path='/dev/ttyS0'/></serial>", "a serial of type dev"),
    ("<serial type='tcp'><source mode='connect' host='10.0.0.1' service='22'/></serial>",
     "a serial of type tcp"),
    ("<channel type='unix'><source mode='bind' path='/run/libvirt/x.sock'/>"
     "<target type='virtio' name='x'/></channel>", "/run/libvirt/x.sock is outside"),
    ("<serial type='pty'><log file='/etc/motd' append='on'/></serial>", "/etc/motd is"),
    ("<parallel type='pipe'><source path='/tmp/p'/></parallel>", "/tmp/p is outside"),
    ("<console type='stdio'/>", "a console of type stdio"),
    ("<redirdev bus='usb' type='spicevmc'/>", "redirects a USB device"),
    ("<smartcard mode='host'/>", "host smartcard"),
    ("<shmem name='s'><model type='ivshmem-plain'/></shmem>", "shares host memory"),
    ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/>"
     "</backend></tpm>", "a TPM of type passthrough"),
    ("<input type='evdev'><source dev='/dev/input/event0'/></input>", "input device"),
    ("<input type='passthrough' bus='virtio'><source evdev='/dev/input/event1'/></input>",
     "a host input device"),
    ("<rng model='virtio'><backend model='random'>/dev/sda</backend></rng>",
     "reads the host device /dev/sda"),
    ("<rng model='virtio'><backend model='egd' type='tcp'><source mode='connect' "
     "host='1.2.3.4' service='1'/></backend></rng>", "opens the host's network"),
    ("<graphics type='sdl' display=':0'/>", "graphics of type sdl"),
    ("<graphics type='vnc'><listen type='socket' socket='/etc/x.sock'/></graphics>",
     "/etc/x.sock is outside"),
    ("<graphics type='spice'><gl enable='yes' rendernode='/dev/dri/renderD128'/></graphics>",
     "a host GPU render node"),
    ("<audio id='1' type='file' path='/etc/x.wav'/>", "audio of type file"),
    ("<filesystem type='mount'><source dir='/'/><target dir='root'/></filesystem>",
     "the file / is outside"),
    ("<filesystem type='block'><source dev='/dev/sda1'/><target dir='x'/></filesystem>",
     "a filesystem of type block"),
    ("<filesystem type='mount'><driver type='virtiofs'/><binary path='/bin/sh'/>"
     f"<source dir='{ROOT}/s'/><target dir='s'/></filesystem>", "runs a host program"),
    ("<memory model='nvdimm'><source><path>/dev/pmem0</path></source><target><size "
     "unit='MiB'>64</size></target></memory>", "/dev/pmem0 is outside"),
    ("<lease><lockspace>s</lockspace><key>k</key><target path='/etc/lease'/></lease>",
     "/etc/lease is outside"),
]

HEAD_REACHING = [
    ("<seclabel type='none'/>", "", "type none"),
    ("<seclabel type='static' model='selinux' relabel='yes'><label>system_u:x</label>"
     "</seclabel>", "", "type static"),
    ("<seclabel type='dynamic' model='dac' relabel='no'/>", "", "relabel='no'"),
    ("<seclabel type='dynamic' model='selinux'><baselabel>x</baselabel></seclabel>", "",
     "chooses a security label"),
    ("<memoryBacking><source type='file'/></memoryBacking>", "", "file-backed"),
    ("<blkiotune><device><path>/dev/sda</path><weight>500</weight></device></blkiotune>",
     "", "tunes a host block device"),
    ("<resource><partition>/machine/other</partition></resource>", "", "cgroup"),
    ("<qemu:commandline><qemu:arg value='-drive'/><qemu:arg value='file=/etc/shadow'/>"
     "</qemu:commandline>", QEMU_NS, "qemu:commandline: an element of another namespace"),
    ("<qemu:capabilities><qemu:add capability='blockdev'/></qemu:capabilities>", QEMU_NS,
     "qemu:capabilities: an element of another namespace"),
    ("<sysinfo type='fwcfg'><entry name='opt/x' file='/etc/shadow'/></sysinfo>", "",
     "/etc/shadow is outside"),
]

OS_REACHING = [
    ("<kernel>/boot/vmlinuz</kernel>", "the kernel file /boot/vmlinuz"),
    ("<initrd>/etc/shadow</initrd>", "the initrd file /etc/shadow"),
    ("<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>",
     "the loader file"),
    ("<nvram template='/etc/shadow'>/srv/images/d_VARS.fd</nvram>", "/etc/shadow"),
    ("<nvram>/etc/x_VARS.fd</nvram>", "the nvram file /etc/x_VARS.fd"),
    ("<dtb>/etc/x.dtb</dtb>", "the dtb file"),
    ("<acpi><table type='slic'>/etc/slic.dat</table></acpi>", "the table file"),
]


@pytest.mark.parametrize("device", HARMLESS)
def test_what_keeps_to_the_vm_passes(device: str) -> None:
    assert _reach(_domain(device)) == []


def test_the_harmless_os_and_head_pass() -> None:
    xml = _domain(head="<metadata><qemu:commandline xmlns:qemu='http://libvirt.org/"
                       "schemas/domain/qemu/1.0'/></metadata>"  # metadata is inert
                       "<seclabel type='dynamic' model='selinux' relabel='yes'>"
                       "<label>s0:c1</label></seclabel>"
                       "<memoryBacking><source type='memfd'/></memoryBacking>"
                       # libvirt's own cgroup partition: a running VM's XML names it
                       "<resource><partition>/machine</partition></resource>",
                  os=f"<kernel>{ROOT}/vmlinuz</kernel><initrd>{ROOT}/initrd</initrd>"
                     f"<loader>{ROOT}/OVMF.fd</loader><nvram>{ROOT}/v.fd</nvram>"
                     "<boot dev='hd'/><cmdline>console=ttyS0</cmdline>")
    assert _reach(xml) == []


@pytest.mark.parametrize(("device", "words"), REACHING)
def test_a_device_that_reaches_the_host_is_named(device: str, words: str) -> None:
    found = _reach(_domain(HARMLESS[1] + device + HARMLESS[5]))
    assert found and any(words in f for f in found), found
    assert all(f.startswith("devices/") for f in found), found


@pytest.mark.parametrize(("head", "ns", "words"), HEAD_REACHING)
def test_a_domain_setting_that_reaches_the_host_is_named(head: str, ns: str,
                                                         words: str) -> None:
    found = _reach(_domain(HARMLESS[1], head=head, ns=ns))
    assert found and any(words in f for f in found), found


@pytest.mark.parametrize(("os", "words"), OS_REACHING)
def test_a_boot_file_outside_the_roots_is_named(os: str, words: str) -> None:
    found = _reach(_domain(os=os))
    assert found and any(words in f for f in found), found
    assert all(f.startswith("os/") for f in found), found


def test_a_doctype_is_refused_for_its_entities() -> None:
    xml = ("<!DOCTYPE domain [<!ENTITY x 'y'>]>" + _domain().replace(
        "<name>d</name>", "<name>d</name><description>&x;</description>"))
    assert [f.split(":")[0] for f in _reach(xml)] == ["<!DOCTYPE>"]


def test_each_element_is_named_where_it_is() -> None:
    found = _reach(_domain(HARMLESS[1] + "<disk type='file'><source file='/etc/a'/></disk>"
                           + "<hostdev/><hostdev/>"))
    assert found == [
        "devices/disk[2]/source@file: the file /etc/a is outside the allowed roots",
        "devices/hostdev[1]: passes a host device to the guest",
        "devices/hostdev[2]: passes a host device to the guest"]


@given(st.lists(st.sampled_from(HARMLESS), max_size=6),
       st.one_of(st.none(), st.sampled_from([d for d, _ in REACHING])),
       st.integers(min_value=0, max_value=6))
def test_harmless_devices_never_hide_nor_cause_a_refusal(
        harmless: list[str], reaching: str | None, at: int) -> None:
    devices = list(harmless)
    if reaching is not None:
        devices.insert(min(at, len(devices)), reaching)
    found = _reach(_domain("".join(devices)))
    assert bool(found) == (reaching is not None), found
