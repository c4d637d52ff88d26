"""What in a domain XML reaches the host beyond the VM's own files: the policy of an
operator token's ``define`` (an admin's may reach anything).

``host_reaching(xml, path_allowed, emulators)`` lists each such element with its
reason, in document order; empty means the XML keeps to the VM. A pure function: the
caller says which paths are allowed (the allowed roots, ``services.roots``) and which
emulators are the host's own (its capabilities). What it lists:

- anything libvirt passes to the hypervisor unchecked: an element in another namespace
  outside ``<metadata>`` (``<qemu:commandline>``, ``<qemu:capabilities>``,
  ``<qemu:override>``...), and a document type declaration (its entities could pull a
  host file into the definition);
- an ``<emulator>`` that is not one of the host's;
- host devices: ``<hostdev>``, ``<redirdev>``, ``<smartcard>``, ``<shmem>``, a disk of
  type block, network, volume, nvme or vhostuser (also in a backing chain), a
  filesystem of a type other than mount, file, bind or ram, or run by a ``<binary>``,
  an interface other than network, bridge or user (direct, hostdev, ethernet,
  vhostuser, vdpa, sockets), a tap or vhost ``<backend>``, an unmanaged target, any
  ``<script>``/``<downscript>``, a TPM other than the emulator, an evdev or passthrough
  input, a random-number source other than /dev/random or /dev/urandom, graphics other
  than VNC and SPICE, audio other than none, SPICE and D-Bus, a GL ``rendernode``,
  file-backed ``<memoryBacking>``, ``<blkiotune>`` of a host device, a cgroup
  ``<resource><partition>`` other than libvirt's own ``/machine`` (which the XML of a
  running VM, and so its save image, names);
- character devices (serial, parallel, console, channel, an egd RNG's backend) of a
  type that opens the host's network, stdio or a host device (tcp, udp, stdio, dev,
  nmdm...);
- security labels that turn confinement off or choose a label (type none or static,
  ``relabel='no'``, a ``<baselabel>`` or a device's ``<label>``);
- every file the XML names (a disk's, a loader's, an NVRAM file or template, kernel,
  initrd, DTB, ACPI table, a serial log or socket, an fw_cfg entry, an NVDIMM's file,
  a lease) that ``path_allowed`` refuses, and any device path (``source dev=``).

It never decides who may define what; ``api`` asks it for an operator only.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from virtlife.xml.domain import parse_domain


@dataclass(frozen=True)
class Reach:
    """One element of a domain XML that reaches the host, and why."""

    where: str  # "devices/hostdev[1]"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


DISK_TYPES = frozenset({"file", "dir"})
FS_TYPES = frozenset({"mount", "file", "bind", "ram"})
NIC_TYPES = frozenset({"network", "bridge", "user"})
CHAR_TYPES = frozenset({"pty", "vc", "null", "spicevmc", "spiceport", "qemu-vdagent",
                        "dbus", "file", "pipe", "unix"})
CHAR_DEVICES = frozenset({"serial", "parallel", "console", "channel"})
GRAPHICS_TYPES = frozenset({"vnc", "spice"})
AUDIO_TYPES = frozenset({"none", "spice", "dbus"})
RNG_FILES = frozenset({"/dev/random", "/dev/urandom"})
DEFAULT_PARTITION = "/machine"  # where libvirt puts every VM unless told otherwise
ALWAYS = {"hostdev": "passes a host device to the guest",
          "redirdev": "redirects a USB device over a host channel",
          "smartcard": "gives the guest a host smartcard or its channel",
          "shmem": "shares host memory with the guest"}
PATH_ATTRS = ("file", "dir", "path", "socket", "template", "logFile")
DEVICE_ATTRS = {"evdev": "a host input device", "rendernode": "a host GPU render node",
                "tap": "a host tap device", "vhost": "a host vhost device"}
OS_FILES = ("loader", "nvram", "kernel", "initrd", "dtb")
_DOCTYPE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


NAMESPACES = {"http://libvirt.org/schemas/domain/qemu/1.0": "qemu",
              "http://libvirt.org/schemas/domain/lxc/1.0": "lxc"}


def _walk(element: ET.Element, where: str) -> Iterator[tuple[ET.Element, ET.Element | None,
                                                                 str]]:
    """Each element below ``element`` (not into ``<metadata>``) with its parent and its
    path ("devices/disk[2]/source")."""
    children = [c for c in element if isinstance(c.tag, str)]  # no comments, PIs
    totals: dict[str, int] = {}
    for child in children:
        totals[child.tag] = totals.get(child.tag, 0) + 1
    counts: dict[str, int] = {}
    for child in children:
        counts[child.tag] = counts.get(child.tag, 0) + 1
        name = _shown(child.tag)
        step = f"{name}[{counts[child.tag]}]" if totals[child.tag] > 1 else name
        path = f"{where}/{step}" if where else step
        yield child, element, path
        if child.tag != "metadata":
            yield from _walk(child, path)


def _shown(tag: str) -> str:
    """``{qemu's URI}commandline`` -> ``qemu:commandline``."""
    if tag.startswith("{"):
        uri, _, name = tag[1:].partition("}")
        if uri in NAMESPACES:
            return f"{NAMESPACES[uri]}:{name}"
    return tag


def host_reaching(xml: str, *, path_allowed: Callable[[str], bool],
                  emulators: Collection[str]) -> list[Reach]:
    """What in ``xml`` (a domain) reaches the host; [] when nothing does.

    ``path_allowed(path)``: whether a file the XML names may be used (the allowed
    roots); ``emulators``: the host's own emulator binaries."""
    root = parse_domain(xml)
    found: list[Reach] = []
    if _DOCTYPE.search(xml):
        found.append(Reach("<!DOCTYPE>", "a document type declaration: its entities "
                                         "could pull a host file into the definition"))

    def note(where: str, reason: str) -> None:
        found.append(Reach(where, reason))

    def path(where: str, value: str | None, what: str) -> None:
        if value and not path_allowed(value.strip()):
            note(where, f"{what} {value.strip()} is outside the allowed roots")

    for element, parent, where in _walk(root, ""):
        tag = element.tag
        if tag.startswith("{"):
            note(where, "an element of another namespace: libvirt passes it to the "
                        "hypervisor unchecked (e.g. <qemu:commandline>)")
            continue
        _element_rules(element, parent, where, note, path, emulators)
    return found


def _element_rules(element: ET.Element, parent: ET.Element | None, where: str,
                   note: Callable[[str, str], None],
                   path: Callable[[str, str | None, str], None],
                   emulators: Collection[str]) -> None:
    tag, kind = element.tag, element.get("type")
    parent_tag = parent.tag if parent is not None else ""
    if tag in ALWAYS:
        note(where, ALWAYS[tag])
    elif tag == "emulator":
        binary = (element.text or "").strip()
        if binary not in emulators:
            note(where, f"the emulator {binary or '(empty)'} is not one of the host's ("
                        f"{', '.join(sorted(emulators)) or 'none known'})")
    elif tag in ("disk", "backingStore", "mirror") and (kind or "file") not in DISK_TYPES:
        note(where, f"a disk of type {kind}: a host block device, pool volume or "
                    "network storage; name an image file instead")
    elif tag == "filesystem" and (kind or "mount") not in FS_TYPES:
        note(where, f"a filesystem of type {kind} takes a host device or template")
    elif tag == "binary" and parent_tag == "filesystem":
        note(where, "runs a host program for the filesystem (virtiofsd)")
    elif tag == "interface" and (kind or "") not in NIC_TYPES:
        note(where, f"an interface of type {kind}: a host device, tap or socket; use "
                    "a network, bridge or user interface")
    elif tag in ("script", "downscript"):
        note(where, "runs a host script")
    elif tag == "target" and element.get("managed") == "no":
        note(where, "uses an existing host device (managed='no')")
    elif tag in CHAR_DEVICES and (kind or "pty") not in CHAR_TYPES:
        note(where, f"a {tag} of type {kind} opens the host's network, stdio or a device")
    elif tag == "backend" and parent_tag == "rng":
        model = element.get("model")
        if model == "random" and (element.text or "").strip() not in RNG_FILES | {""}:
            note(where, f"reads the host device {(element.text or '').strip()}")
        elif model == "egd" and (kind or "") not in CHAR_TYPES:
            note(where, f"a random-number channel of type {kind} opens the host's network")
    elif tag == "backend" and parent_tag == "tpm" and kind not in (None, "emulator"):
        note(where, f"a TPM of type {kind}: the host's TPM or its socket")
    elif tag == "input" and kind in ("evdev", "passthrough"):
        note(where, f"a host input device ({kind})")
    elif tag == "graphics" and kind not in GRAPHICS_TYPES:
        note(where, f"graphics of type {kind} use the host's display or GPU")
    elif tag == "audio" and kind not in AUDIO_TYPES:
        note(where, f"audio of type {kind} uses the host's sound system or a file")
    elif tag == "source" and parent_tag == "memoryBacking" and kind == "file":
        note(where, "file-backed guest memory on the host")
    elif tag == "device" and parent_tag == "blkiotune":
        note(where, "tunes a host block device")
    elif (tag == "partition" and parent_tag == "resource"
          and (element.text or "").strip() != DEFAULT_PARTITION):
        note(where, "places the VM in a host cgroup partition")
    elif tag == "seclabel":
        _seclabel(element, parent_tag, where, note)
    elif tag == "baselabel" or (tag == "label" and parent is not None
                                and parent.get("type") != "dynamic"):
        note(where, "chooses a security label")
    _files(element, parent_tag, where, note, path)


def _seclabel(element: ET.Element, parent_tag: str, where: str,
              note: Callable[[str, str], None]) -> None:
    kind = element.get("type")
    if element.get("relabel") == "no":
        note(where, "turns libvirt's relabelling off (relabel='no')")
    elif parent_tag == "domain" and kind in ("none", "static"):
        note(where, f"a security label of type {kind}: confinement off or chosen by hand")


def _files(element: ET.Element, parent_tag: str, where: str,
           note: Callable[[str, str], None],
           path: Callable[[str, str | None, str], None]) -> None:
    """The files and devices ``element`` names, on the host."""
    tag = element.tag
    if tag not in ("target", "alias", "address") or parent_tag == "lease":
        for attr in PATH_ATTRS:
            path(f"{where}@{attr}", element.get(attr), "the file")
        for attr, what in DEVICE_ATTRS.items():
            if element.get(attr):
                note(f"{where}@{attr}", f"{what} ({element.get(attr)})")
    if tag == "source" and element.get("dev"):
        note(f"{where}@dev", f"a host device ({element.get('dev')})")
    if (parent_tag == "os" and tag in OS_FILES) or (parent_tag == "acpi" and tag == "table"):
        path(where, element.text, f"the {tag} file")
    if tag == "path" and parent_tag in ("source", "pstore"):
        path(where, element.text, "the file")
