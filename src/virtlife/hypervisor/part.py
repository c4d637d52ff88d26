"""``DomainPart``: what the wrappers of one side of a domain share (its agent, its
migration job, its snapshots): the ``Guest`` they belong to, the libvirt domain behind
it (hypervisor-private) and how their errors name what was being done."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from virtlife.hypervisor.guest import Guest


class DomainPart:
    """A wrapper of one part of ``guest``'s domain."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.vm = guest.name
        self._dom = guest._dom  # the same libvirt domain (hypervisor-private)

    def _what(self, verb: str) -> str:
        """``read the clock of web1 on hv2``: ``verb`` then the VM and its host."""
        return f"{verb} {self.vm} on {self.guest.host.name}"
