"""The backing chains of the disk images a domain XML names, read and judged for an
operator token (``backing.chain_refusal`` is the policy).

For each file disk whose format may name other files (qcow2, and anything but raw),
under the allowed roots (a path outside them is already refused by
``xml.reach.host_reaching``, and is not opened here), the chain is read:

- on this machine's hosts with ``qemu-img info --output=json --backing-chain -U -f
  FORMAT`` (the format the XML declares: nothing is probed), under a deadline;
- on a remote host through its storage pools (``hypervisor.volchain``).

A chain that cannot be read (qemu-img fails or is missing, no pool holds the file) is
unknown, and refused. This module decides nothing about roles: ``api`` asks it for an
operator only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from virtlife.backing import Chain, chain_refusal, needs_reading, parse_qemu_img
from virtlife.hypervisor.host import is_remote
from virtlife.hypervisor.volchain import pool_chain
from virtlife.services.fleet import Fleet
from virtlife.xml.images import file_images
from virtlife.xml.reach import Reach

QEMU_IMG_TIMEOUT_S = 30.0


def local_chain(path: str, fmt: str, *, timeout_s: float = QEMU_IMG_TIMEOUT_S) -> Chain:
    """The chain of ``path`` on this machine opened as ``fmt``, as qemu-img reads it."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        return Chain(path, unknown="qemu-img is not installed on the server's machine "
                                   "(package qemu-utils)")
    try:
        done = subprocess.run(
            [qemu_img, "info", "--output=json", "--backing-chain", "-U", "-f", fmt, path],
            capture_output=True, text=True, timeout=timeout_s, check=False,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        return Chain(path, unknown=f"qemu-img did not answer within {timeout_s:g} s")
    except OSError as err:
        return Chain(path, unknown=f"qemu-img could not be run: {err}")
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return Chain(path, unknown=f"qemu-img: {said.removeprefix('qemu-img: ')}")
    return parse_qemu_img(path, done.stdout)


def image_reach(fleet: Fleet, host: str, xml: str, allowed: Callable[[str], bool]
                ) -> list[Reach]:
    """What the images of domain ``xml`` on ``host`` reach beyond the allowed roots
    (``allowed``) through their headers; [] when every chain keeps to the roots."""
    images = [i for i in file_images(xml) if allowed(i.path)]
    found: list[Reach] = []
    remote = any(needs_reading(i.format) for i in images) and is_remote(fleet.ref(host).uri)
    for image in images:
        if not image.format:
            found.append(Reach(image.where, f"a backing store ({image.path}) without a "
                                            "<format>: give its format"))
            continue
        if not needs_reading(image.format):
            continue
        chain = (pool_chain(fleet.host(host), image.path, image.format) if remote
                 else local_chain(image.path, image.format))
        refusal = chain_refusal(chain, allowed)
        if refusal is not None:
            found.append(Reach(image.where, refusal))
    return found
