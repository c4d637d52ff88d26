"""The hypervisor layer: the only package that touches libvirt objects.

``Host`` owns a connection (``connection``), its events (``dispatch``) and the calls
about its domains (``domains``), ``Guest`` wraps one domain, and ``libvirt_api`` is
the one module importing libvirt and translating its errors.
Callers get virtlife errors, ``StateInfo`` values and ``DomainEvent`` values back.

The names below are imported from their modules on first use (PEP 562), so that
importing one module of the package (``hypervisor.events``, ``hypervisor.listing``)
does not load the others, nor libvirt when that module does not need it.
"""

from __future__ import annotations

from virtlife.lazyexports import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from virtlife.hypervisor.domains import HostInfo
    from virtlife.hypervisor.events import DomainEvent, Listener
    from virtlife.hypervisor.guest import Guest, GuestInfo
    from virtlife.hypervisor.host import Host

__all__ = ["DomainEvent", "Guest", "GuestInfo", "Host", "HostInfo", "Listener"]

# Where each exported name lives (a module of this package).
_HOMES = {"DomainEvent": "events", "Listener": "events", "Guest": "guest",
          "GuestInfo": "guest", "Host": "host", "HostInfo": "domains"}


__getattr__ = lazy_exports(__name__, _HOMES)
