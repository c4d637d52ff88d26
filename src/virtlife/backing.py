"""Whether a disk image's chain stays within the allowed roots: the policy, pure.

A disk image can name other files itself: a qcow2 header names a backing file (and its
format) and may name an external data file, which QEMU opens for the guest when the
image is opened as qcow2. A guest can write such a header into its own raw disk; an
operator who then names that file as a qcow2 disk would have QEMU open, say,
``/etc/shadow`` or ``/dev/sda`` (backing format raw) for the guest to read. So the
whole chain of an operator's disk must lie under the allowed roots.

libvirt opens a file disk whose ``<driver type>`` is not given as raw (checked on
libvirt 9.0: such a disk is started with QEMU's ``raw`` driver and no backing chain),
so only the format the XML declares is used here; nothing is probed. Only raw (and
libvirt's ``iso``, raw too) and qcow2 are allowed to an operator: the other formats
QEMU knows can name further files in ways this check does not read (a VMDK's extents,
a QED's backing file).

``Chain`` is what a reader found (``services.backing`` reads it with ``qemu-img`` on
this machine, or through a remote host's storage pool); ``chain_refusal`` decides. A
chain that could not be read (``unknown``) is refused: an error is no evidence. This
module does no I/O; ``parse_qemu_img`` only reads the JSON ``qemu-img info
--backing-chain`` printed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass

NO_REFERENCES = frozenset({"raw", "iso"})  # formats that name no other file
READ = "qcow2"  # the one format whose references are read


@dataclass(frozen=True)
class Layer:
    """One image of a chain, top first, and the files its header names."""

    path: str
    format: str
    backing: str | None = None  # the backing file as opened (absolute when resolvable)
    data_file: str | None = None  # a qcow2 external data file
    data_file_known: bool = True  # False: the reader cannot see a data file


@dataclass(frozen=True)
class Chain:
    """The chain of disk ``disk`` as read, or ``unknown`` saying why it could not be."""

    disk: str
    layers: tuple[Layer, ...] = ()
    unknown: str = ""


def needs_reading(fmt: str) -> bool:
    """Whether an image of format ``fmt`` may name other files (and must be read)."""
    return fmt not in NO_REFERENCES


def chain_refusal(chain: Chain, allowed: Callable[[str], bool]) -> str | None:
    """Why an operator may not use the disk ``chain`` is the chain of; None when every
    file it opens lies under the allowed roots (``allowed``)."""
    disk = chain.disk
    if chain.unknown:
        return (f"the backing chain of {disk} cannot be read ({chain.unknown}), so "
                "whether it reaches outside the allowed roots is unknown")
    if not chain.layers:
        return f"the backing chain of {disk} cannot be read (nothing was found)"
    for layer in chain.layers:
        if layer.format not in NO_REFERENCES | {READ}:
            return (f"{layer.path} in the chain of {disk} is a {layer.format} image, "
                    "which can name other host files; an operator may use raw and "
                    "qcow2 images only (convert it: qemu-img convert -O qcow2)")
        if not allowed(layer.path):
            return (f"{disk} has the backing file {layer.path}, outside the allowed "
                    "roots")
        if layer.format != READ:
            continue
        if not layer.data_file_known:
            return (f"{layer.path} in the chain of {disk} is a qcow2 image whose "
                    "external data file, if any, cannot be seen on its host")
        if layer.data_file is not None and not allowed(layer.data_file):
            return (f"{layer.path} in the chain of {disk} names the external data file "
                    f"{layer.data_file}, outside the allowed roots")
    last = chain.layers[-1]
    if last.backing is not None:
        return (f"{last.path} in the chain of {disk} names the backing file "
                f"{last.backing}, which could not be read")
    return None


def parse_qemu_img(disk: str, text: str) -> Chain:
    """The chain in ``qemu-img info --output=json --backing-chain``'s output ``text``
    for ``disk``; ``unknown`` when it is not such output."""
    try:
        images = json.loads(text)
        if isinstance(images, dict):
            images = [images]
        layers = []
        for image in images:
            specific = image.get("format-specific") or {}
            data = specific.get("data") or {} if isinstance(specific, dict) else {}
            backing = image.get("full-backing-filename") or image.get("backing-filename")
            data_file = data.get("data-file") if isinstance(data, dict) else None
            layers.append(Layer(str(image["filename"]), str(image["format"]),
                                str(backing) if backing else None,
                                str(data_file) if data_file else None))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        return Chain(disk, unknown=f"qemu-img's answer is not what was expected: {err}")
    if layers and layers[0].path != disk:  # qemu-img names the top as it was given
        layers[0] = dataclasses.replace(layers[0], path=disk)
    for upper, lower in itertools.pairwise(layers):
        if upper.backing is None:
            return Chain(disk, unknown=f"qemu-img lists {lower.path} below {upper.path}, "
                                       "which names no backing file")
    return Chain(disk, tuple(layers))

