"""Create a VM from a small spec: choose the policy values, build XML, define it.

Policy lives here, not in the XML builder: the virt type (``kvm`` only where KVM
really works, ``qemu`` otherwise, ``test`` on libvirt's test driver), the CPU model
that goes with it, and the refusal of a name already in use on the target host.
"""

from __future__ import annotations

from dataclasses import replace

from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.hypervisor.kvm import kvm_works_locally
from virtlife.services.lifecycle import Lifecycle, OperationResult
from virtlife.xml.domain import DomainSpec, build_domain_xml


def choose_virt_type(available: set[str], *, uri: str, kvm_works: bool | None,
                     requested: str | None = None) -> str:
    """Pick the domain type for a new VM.

    ``kvm_works`` is the local probe's verdict (None when the host is remote and we
    can only trust its capabilities). An explicit ``requested`` type must be offered.
    """
    if requested is not None:
        if available and requested not in available:
            offered = ", ".join(sorted(available)) or "none"
            raise errors.InvalidDefinition(
                f"virt type {requested} is not offered by {uri} (it offers {offered})")
        return requested
    if uri.startswith("test:"):
        return "test"
    if "kvm" in available and kvm_works is not False:
        return "kvm"
    if "qemu" in available:
        return "qemu"
    raise errors.Unsupported(f"{uri} offers no x86_64 virt type we can use ({available})")


def _is_local(uri: str) -> bool:
    return uri.startswith("qemu:///")


def finish_spec(spec: DomainSpec, host: Host, requested_virt_type: str | None) -> DomainSpec:
    """Fill in the virt type and the CPU model that goes with it."""
    kvm_works = kvm_works_locally() if _is_local(host.uri) else None
    virt_type = choose_virt_type(host.virt_types(), uri=host.uri, kvm_works=kvm_works,
                                 requested=requested_virt_type)
    cpu_model = None if virt_type == "kvm" else spec.cpu_model
    return replace(spec, virt_type=virt_type, cpu_model=cpu_model)


def create(lifecycle: Lifecycle, spec: DomainSpec, *, host: str,
           virt_type: str | None = None, start: bool = False,
           wait_agent: bool = False) -> OperationResult:
    """Define a new VM from ``spec`` on ``host`` (and start it when asked)."""
    h = lifecycle.fleet.host(host)
    if h.find(spec.name) is not None:
        raise errors.VMAlreadyExists(
            f"cannot create {spec.name}: a VM of that name already exists on host {host}")
    full = finish_spec(spec, h, virt_type)
    result = lifecycle.define(build_domain_xml(full), host=host)
    if start:
        result = lifecycle.start(f"{host}/{spec.name}", wait_agent=wait_agent)
    return result
