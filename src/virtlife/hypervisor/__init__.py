"""The hypervisor layer: the only package that touches libvirt objects.

``Host`` owns a connection and its events, ``Guest`` wraps one domain, and
``libvirt_api`` is the one module importing libvirt and translating its errors.
Callers get virtlife errors, ``StateInfo`` values and ``DomainEvent`` values back.
"""

from virtlife.hypervisor.events import DomainEvent, Listener
from virtlife.hypervisor.guest import Guest, GuestInfo
from virtlife.hypervisor.host import Host, HostInfo

__all__ = ["DomainEvent", "Guest", "GuestInfo", "Host", "HostInfo", "Listener"]
