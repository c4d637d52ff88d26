"""A disk image's backing chain as a host's storage pools read it (for a remote host,
whose files this machine cannot open).

``pool_chain(host, path, fmt)`` follows the chain volume by volume: each must be a
volume of a pool on ``host`` (the pool is refreshed first: a pool lists what it saw at
its last refresh), and a qcow2 one names its backing file and format as the pool read
its header. A pool does not show a qcow2 image's external data file, so a qcow2 layer
says it cannot be seen (``data_file_known`` False). A file no pool holds, or any error,
makes the chain unknown, with the reason: it is no answer. Reads only; decides nothing
(``backing.chain_refusal`` does).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from virtlife.backing import READ, Chain, Layer, needs_reading
from virtlife.hypervisor.libvirt_api import LibvirtError, libvirt, translate

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host

MAX_DEPTH = 32


def _volume_xml(host: Host, path: str) -> tuple[str | None, str]:
    """The volume XML at ``path`` after a refresh of its pool; (None, why) else."""
    try:
        vol = host.conn.storageVolLookupByPath(path)
        vol.storagePoolLookupByVolume().refresh(0)
        return str(host.conn.storageVolLookupByPath(path).XMLDesc(0)), ""
    except LibvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None, (f"no storage pool on host {host.name} holds {path}, so libvirt "
                          "there cannot read it; put it in a pool's directory")
        return None, str(translate(err, f"read the volume at {path} on {host.name}"))


def pool_chain(host: Host, path: str, fmt: str) -> Chain:
    """The chain of ``path`` opened as ``fmt`` on ``host``, as its pools read it."""
    layers: list[Layer] = []
    current, current_fmt = path, fmt
    while True:
        if len(layers) >= MAX_DEPTH or any(layer.path == current for layer in layers):
            return Chain(path, tuple(layers), unknown=f"the chain loops or is deeper "
                                                      f"than {MAX_DEPTH} images")
        xml, why = _volume_xml(host, current)
        if xml is None:
            return Chain(path, tuple(layers), unknown=why)
        root = ET.fromstring(xml)
        format_el = root.find("target/format")
        read_as = format_el.get("type", "") if format_el is not None else ""
        opened_as = current_fmt or read_as  # no backing format: QEMU probes, as the pool
        if not needs_reading(opened_as) or opened_as != READ:
            layers.append(Layer(current, opened_as))
            return Chain(path, tuple(layers))
        if read_as != READ:
            return Chain(path, tuple(layers), unknown=(
                f"the pool on host {host.name} reads {current} as {read_as or 'unknown'}, "
                "not qcow2"))
        backing = root.findtext("backingStore/path") or None
        backing_format = root.find("backingStore/format")
        layers.append(Layer(current, READ, backing, data_file_known=False))
        if backing is None:
            return Chain(path, tuple(layers))
        current = backing
        current_fmt = backing_format.get("type", "") if backing_format is not None else ""
