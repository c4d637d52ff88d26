"""The REST API's management routes: what the CLI's ``create``, ``define``, ``restore``,
``host add/remove``, ``attach-iso``, ``windows-drivers-iso``, ``graphics`` and ``vnc``
do, thin over the same services.

Reads (``GET``) need a reader token. Host changes need an admin token; the others an
operator token (its paths and XML are checked further, see below). Changes are checked
at once where the answer does not depend on the change itself (an unknown host or VM:
404, a name taken or a state that forbids it: 409, bad input: 422, with the CLI's
message and nothing started), and run as journalled background operations that the request waits
for a bounded time (``routes_more.run_or_accept``): 200 with the result, or 202 with
the operation id (``wait_s`` says how long to wait; 0 answers 202 at once).

``define`` takes the domain XML as ``application/xml`` (or ``text/xml``) only: a page
of another site can post text/plain or a form without asking, never XML. These routes
run on their own threads (``api.limits.LongCallRoute``): they wait for their changes.

Paths in bodies (kernel, disks, ISO, save file) are paths on the VM's host and must be
absolute: a relative path would name a file relative to wherever the server was
started. Every one goes through ``allowed.caller_paths``: an operator's must lie under
the allowed roots (403 else, before the file is looked at); an admin's may be anywhere.
A VNC password travels in a ``SecretStr`` to ``Consoles.set_graphics`` only: no answer,
operation description, journal row or log line carries it. This module must not decide
anything the services decide.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path as FilePath
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from virtlife import errors
from virtlife.api.allowed import CallerPaths, caller_paths
from virtlife.api.limits import LongCallRoute, long_limiter
from virtlife.api.routes import (
    Admin,
    HostName,
    Operator,
    Reader,
    VMName,
    ref_of,
    refuse_now,
    services_of,
)
from virtlife.api.routes_more import ACCEPTED, Reply, run_or_accept
from virtlife.services import provision
from virtlife.services.base import Call
from virtlife.services.hosts import add_host, remove_host
from virtlife.services.isos import DEFAULT_LABEL, build_iso
from virtlife.services.media import CdromBus, Media
from virtlife.services.roots import create_reach, define_reach, restore_reach
from virtlife.states import Operation, check_transition
from virtlife.store.tokens import Role, TokenRecord
from virtlife.xml.domain import (
    MAX_XML_BYTES,
    DomainSpec,
    NicSpec,
    decode_xml,
    domain_name,
    validate_vm_name,
)
from virtlife.xml.graphics import KEEP, Keep, check_listen, check_vnc_password

# their calls may block long (agent timeouts, waits): not on the default threads
router = APIRouter(route_class=LongCallRoute)

MAX_WAIT_S = 60.0
WAIT_S = 30.0  # how long a change is waited for by default before answering 202
PathText = Annotated[str, Field(min_length=1, max_length=4096)]
Wait = Annotated[float, Field(ge=0, le=MAX_WAIT_S,
                              description="seconds to wait for the end before answering "
                                          "202 with the operation id")]
InventoryName = Annotated[str, Path(min_length=1, max_length=255,
                                    pattern=r"^[^/\x00-\x1f]+$",
                                    description="a host as the inventory names it")]


# -- hosts ------------------------------------------------------------------------------

class HostBody(BaseModel):
    """``host add``'s arguments."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63, description="e.g. hv2")
    uri: str = Field(min_length=1, max_length=1024,
                     description="a libvirt URI, e.g. qemu+ssh://root@10.0.0.2/system")


@router.post("/api/hosts", tags=["hosts"], status_code=201)
def host_add(request: Request, body: HostBody, _t: Admin) -> dict[str, object]:
    """Add a host to the inventory (``host add``): it is checked, and added even when it
    does not answer now (``reachable`` false, ``problem`` says why)."""
    svc = services_of(request)
    added = add_host(svc.need_store(), body.name, body.uri,
                     connect_timeout_s=svc.fleet.connect_timeout_s)
    return {"name": added.record.name, "uri": added.record.uri,
            "reachable": added.info is not None, "problem": added.problem,
            "info": None if added.info is None else dataclasses.asdict(added.info),
            "facts": None if added.facts is None else added.facts.as_dict(),
            "warnings": [added.dropped_local] if added.dropped_local else []}


@router.delete("/api/hosts/{name}", tags=["hosts"])
def host_remove(request: Request, name: InventoryName, _t: Admin) -> dict[str, object]:
    """Remove a host from the inventory (``host remove``); its VMs are not touched."""
    record = remove_host(services_of(request).need_store(), name)
    return {"name": record.name, "uri": record.uri, "removed": True}


# -- create, define, restore -------------------------------------------------------------

class CreateBody(BaseModel):
    """``create``'s options (``agent`` and ``vnc`` are the CLI's ``--no-agent`` and
    ``--no-vnc`` turned round)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    memory_mib: int = Field(default=256, ge=1, le=16 * 1024 * 1024)
    vcpus: int = Field(default=1, ge=1, le=4096)
    kernel: PathText | None = Field(default=None, description="kernel for direct boot")
    initrd: PathText | None = None
    cmdline: str = Field(default="", max_length=4096)
    disks: list[PathText] = Field(default_factory=list, max_length=32,
                                  description="disk images on the host; the first is vda")
    networks: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=16, description="a NIC on each libvirt network")
    bridges: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=16, description="a NIC on each host bridge")
    user_nic: bool = False
    agent: bool = True
    vnc: bool = True
    virt_type: Literal["kvm", "qemu", "test"] | None = None
    start: bool = False
    wait_agent: bool = False
    wait_s: Wait = WAIT_S


def _spec(body: CreateBody, allowed: CallerPaths) -> DomainSpec:
    nics = tuple(NicSpec("network", n) for n in body.networks) + tuple(
        NicSpec("bridge", b) for b in body.bridges) + (
        (NicSpec("user"),) if body.user_nic else ())

    def path(value: str | None, what: str) -> FilePath | None:
        return None if value is None else FilePath(allowed(value, what))

    return DomainSpec(
        name=validate_vm_name(body.name), memory_mib=body.memory_mib, vcpus=body.vcpus,
        kernel=path(body.kernel, "kernel"), initrd=path(body.initrd, "initrd"),
        cmdline=body.cmdline,
        disks=tuple(FilePath(allowed(d, "disk")) for d in body.disks), nics=nics,
        agent=body.agent, vnc=body.vnc)


@router.post("/api/hosts/{host}/vms", tags=["vms"], responses=ACCEPTED)
def vm_create(request: Request, host: HostName, body: CreateBody,
              token: Operator) -> JSONResponse:
    """Define a new VM on ``host`` from a small spec (``create``), and start it when
    asked; 200 with the result (the start's, when it started), or 202. An operator's
    kernel, initrd and disks must lie under the allowed roots, and so must every file
    a disk image's header names (its backing chain, a qcow2 data file): 403 else."""
    svc = services_of(request)
    svc.fleet.ref(host)  # 404 for an unknown host
    allowed = caller_paths(request, token, host)
    spec = _spec(body, allowed)
    if not token.role.allows(Role.ADMIN):
        reach = create_reach(svc.fleet, host, spec, allowed.roots())
        if reach:
            raise errors.NotPermitted(
                f"cannot create {spec.name} with an operator token: a disk image reaches "
                "the host beyond the allowed roots: " + "; ".join(str(r) for r in reach)
                + ". Use images whose whole backing chain lies under the allowed roots, "
                "or ask an admin to create it")
    if svc.fleet.host(host).find(spec.name) is not None:
        raise errors.VMAlreadyExists(
            f"cannot create {spec.name}: a VM of that name already exists on host {host}")
    ref = ref_of(host, spec.name)
    virt_type, start, wait_agent = body.virt_type, body.start, body.wait_agent
    return run_or_accept(request, f"create {ref}", ref,
                         lambda call: provision.create(
                             svc.lifecycle, spec, host=host, facts=svc.facts,
                             virt_type=virt_type, start=start, wait_agent=wait_agent,
                             **call),
                         body.wait_s)


def require_xml(request: Request) -> None:
    """415 unless the body says it is XML: a page of another site can post text/plain
    or a form without asking first, never XML."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in XML_TYPES and not kind.endswith("+xml"):
        raise HTTPException(415, f"define takes the domain XML as application/xml, not "
                                 f"{kind or 'a body without a Content-Type'}; send it with "
                                 "Content-Type: application/xml")


async def _bounded_text(request: Request) -> str:
    """The request's body as domain XML text, read no further than ``MAX_XML_BYTES``
    (+1 to tell)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_XML_BYTES:
            break
    return decode_xml(bytes(data[:MAX_XML_BYTES + 1]), "the request's domain XML")


XML_TYPES = ("application/xml", "text/xml")
DEFINE_BODY = {"requestBody": {"required": True, "content": {"application/xml": {
    "schema": {"type": "string", "maxLength": MAX_XML_BYTES,
               "description": "a libvirt domain XML document"}}}}}


@router.post("/api/hosts/{host}/define", tags=["vms"], responses=ACCEPTED,
             openapi_extra=DEFINE_BODY)
async def vm_define(request: Request, host: HostName, token: Operator,
                    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = WAIT_S
                    ) -> JSONResponse:
    """Define a VM from the domain XML in the body, or update an existing VM's definition
    (``define``; at most 1 MiB). A malformed or rejected XML changes nothing. An
    operator's XML must not reach the host (403 naming each element that does: host
    devices, <qemu:commandline>, another emulator, files outside the allowed roots, a
    disk image whose backing chain leaves them...); an admin's may."""
    require_xml(request)
    xml = await _bounded_text(request)
    return await anyio.to_thread.run_sync(_define, request, host, xml, wait_s, token,
                                          limiter=long_limiter())


def _define(request: Request, host: str, xml: str, wait_s: float,
            token: TokenRecord) -> JSONResponse:
    name = domain_name(xml)  # 422 for what is no domain XML
    svc = services_of(request)
    svc.fleet.ref(host)
    if not token.role.allows(Role.ADMIN):
        reach = define_reach(svc.fleet, host, xml, svc.settings)
        if reach:
            raise errors.NotPermitted(
                f"cannot define {name} with an operator token: its XML reaches the host "
                f"beyond the VM's own files: " + "; ".join(str(r) for r in reach)
                + ". Remove these, name files under the allowed roots, or ask an admin "
                "to define it")
    guest = svc.fleet.host(host).find(name)
    if guest is not None:
        check_transition(Operation.DEFINE, name, svc.lifecycle.state(ref_of(host, name))[1])
    ref = ref_of(host, name)
    return run_or_accept(request, f"{Operation.DEFINE.value} {ref}", ref,
                         lambda call: svc.lifecycle.define(xml, host=host, **call), wait_s)


class RestoreBody(BaseModel):
    """``restore``'s options."""

    model_config = ConfigDict(extra="forbid")
    path: PathText = Field(description="the save file, an absolute path on the host")
    paused: bool = False
    wait_agent: bool = False
    sync_time: bool | None = Field(default=None, description="set the guest clock right "
                                   "after (default: the settings' agent.sync_time)")
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    ignore_unreachable: bool = Field(default=False, description="go ahead although a host "
                                     "where the VM was last seen cannot be asked")
    wait_s: Wait = WAIT_S


@router.post("/api/hosts/{host}/restore", tags=["lifecycle"], responses=ACCEPTED)
def vm_restore(request: Request, host: HostName, body: RestoreBody,
               token: Operator) -> JSONResponse:
    """Restore a VM from a save file on ``host`` (``restore``); the file names the VM. An
    operator's file outside the allowed roots is a 403 whether or not it exists; else a
    missing file is a 404, a file that is no save image a 422, a VM of that name already
    running a 409; a failed restore keeps the file. An operator's is refused (403) when
    the VM's XML in the file reaches the host (as ``define`` judges it, backing chains
    included) beyond what that VM's definition on the host reaches already."""
    svc = services_of(request)
    svc.fleet.ref(host)
    path = caller_paths(request, token, host)(body.path, "the save file")
    if not token.role.allows(Role.ADMIN):
        reach = restore_reach(svc.fleet, host, path, svc.settings)
        if reach:
            raise errors.NotPermitted(
                f"cannot restore {path} with an operator token: the VM's definition "
                "in it reaches the host beyond what an operator may define: "
                + "; ".join(str(r) for r in reach) + ". Ask an admin to restore it")
    options = body.model_dump(include={"paused", "wait_agent", "sync_time", "timeout_s",
                                       "ignore_unreachable"})
    return run_or_accept(request, f"{Operation.RESTORE.value} {host}:{path}", host,
                         lambda call: svc.lifecycle.restore(path, host=host, **options,
                                                            **call),
                         body.wait_s)


# -- media ------------------------------------------------------------------------------

MEDIA = "/api/vms/{host}/{name}/media"


class IsoBody(BaseModel):
    """``attach-iso``'s options."""

    model_config = ConfigDict(extra="forbid")
    path: PathText = Field(description="the ISO file, an absolute path on the VM's host")
    bus: CdromBus = Field(default=CdromBus.SCSI, description="scsi (hot-pluggable), or "
                          "sata or ide (read by Windows without drivers; shut-off VMs only)")
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    wait_s: Wait = WAIT_S


def _media(request: Request) -> Media:
    svc = services_of(request)
    return Media(svc.fleet, svc.lifecycle.ops)


@router.get(MEDIA, tags=["media"])
def media_list(request: Request, host: HostName, name: VMName,
               _t: Reader) -> list[dict[str, object]]:
    """The VM's CD-ROMs: where each is (``live``: in the running VM, ``defined``: in its
    definition) and whether virtlife attached it (only those can be detached here)."""
    return [c.as_dict() for c in _media(request).cdroms(ref_of(host, name))]


@router.post(MEDIA, tags=["media"], responses=ACCEPTED)
def media_attach(request: Request, host: HostName, name: VMName, body: IsoBody,
                 token: Operator) -> JSONResponse:
    """Attach an ISO file to the VM as a CD-ROM (``attach-iso``); an operator's ISO
    must lie under the allowed roots."""
    ref = refuse_now(request, host, name, Operation.ATTACH_ISO)
    path = caller_paths(request, token, host)(body.path, "the ISO")
    media, bus, timeout_s = _media(request), body.bus, body.timeout_s
    return run_or_accept(request, f"{Operation.ATTACH_ISO.value} {ref}", ref,
                         lambda call: media.attach_iso(ref, path, bus=bus,
                                                       timeout_s=timeout_s, **call),
                         body.wait_s)


@router.delete(MEDIA, tags=["media"], responses=ACCEPTED)
def media_detach(request: Request, host: HostName, name: VMName, token: Operator,
                 path: Annotated[str, Query(min_length=1, max_length=4096,
                                            description="the ISO's absolute path")],
                 timeout_s: Annotated[float | None, Query(gt=0, le=3600)] = None,
                 wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = WAIT_S
                 ) -> JSONResponse:
    """Remove the CD-ROM virtlife attached for ISO ``path`` (``attach-iso --detach``)."""
    ref = refuse_now(request, host, name, Operation.DETACH_ISO)
    iso = caller_paths(request, token, host)(path, "the ISO")
    media = _media(request)
    return run_or_accept(request, f"{Operation.DETACH_ISO.value} {ref}", ref,
                         lambda call: media.detach_iso(ref, iso, timeout_s=timeout_s,
                                                       **call),
                         wait_s)


class DriversIsoBody(BaseModel):
    """``windows-drivers-iso``'s options; both paths are on the server's machine."""

    model_config = ConfigDict(extra="forbid")
    drivers: PathText = Field(description="the virtio-win driver tree (absolute path)")
    out: PathText = Field(description="the .iso file to write (absolute path)")
    force: bool = Field(default=False, description="replace ``out`` if it exists")
    label: str = Field(default=DEFAULT_LABEL, min_length=1, max_length=32)
    wait_s: Wait = WAIT_S


@router.post("/api/media/windows-drivers-iso", tags=["media"], responses=ACCEPTED)
def media_drivers_iso(request: Request, body: DriversIsoBody,
                      token: Operator) -> JSONResponse:
    """Build the virtio-win driver ISO for Windows guests from a driver tree, on the
    server's machine (``windows-drivers-iso``); ``warnings`` lists missing drivers. An
    operator's tree and ISO must both lie under this machine's allowed roots; an admin
    may pack any tree."""
    allowed = caller_paths(request, token, None)
    drivers = allowed(body.drivers, "the driver tree")
    out = allowed(body.out, "the ISO to write")
    if not out.lower().endswith(".iso"):
        raise errors.InvalidInput(f"{out} does not end in .iso: name the ISO file to write "
                                  "(e.g. /var/lib/libvirt/images/virtio-win.iso)")
    force, label = body.force, body.label

    def work(_call: Call) -> Reply:
        return Reply(build_iso(drivers, out, force=force, label=label).as_dict())

    return run_or_accept(request, f"windows-drivers-iso {out}", "", work, body.wait_s)


# -- graphics -----------------------------------------------------------------------------

class GraphicsBody(BaseModel):
    """What ``graphics`` changes: give ``listen``, ``password`` or ``remove_password``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    listen: str | None = Field(default=None, min_length=1, max_length=255,
                               description="127.0.0.1, 0.0.0.0 or one of the host's "
                                           "addresses")
    password: SecretStr | None = Field(default=None, min_length=1, max_length=64,
                                       description="the new VNC password (at most 8 "
                                                   "characters); never logged or shown")
    remove_password: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    wait_s: Wait = WAIT_S


@router.get("/api/vms/{host}/{name}/graphics", tags=["consoles"])
def graphics_show(request: Request, host: HostName, name: VMName,
                  _t: Reader) -> dict[str, object]:
    """The VNC settings of the VM's definition (``graphics VM``); the password is only
    said to be there, never shown."""
    return services_of(request).consoles.graphics(ref_of(host, name)).as_dict()


@router.put("/api/vms/{host}/{name}/graphics", tags=["consoles"], responses=ACCEPTED)
def graphics_change(request: Request, host: HostName, name: VMName, body: GraphicsBody,
                    _t: Operator) -> JSONResponse:
    """Change the VM's VNC listen address and/or password (``graphics VM --listen
    --password/--no-password``); a VM without VNC gets it. The result's note says
    when it applies (a running VM keeps its VNC server until it is started again)."""
    if body.password is not None and body.remove_password:
        raise errors.InvalidInput("give password or remove_password, not both")
    password: str | Keep | None = KEEP
    if body.password is not None:
        password = body.password.get_secret_value()
    elif body.remove_password:
        password = None
    listen: str | Keep = KEEP if body.listen is None else check_listen(body.listen)
    if isinstance(password, str):
        check_vnc_password(password)  # 422 at once, before anything starts
    if isinstance(listen, Keep) and isinstance(password, Keep):
        raise errors.InvalidInput("nothing to change: give listen, password or "
                                  "remove_password")
    ref = refuse_now(request, host, name, Operation.GRAPHICS)
    consoles, timeout_s = services_of(request).consoles, body.timeout_s
    return run_or_accept(request, f"{Operation.GRAPHICS.value} {ref}", ref,
                         lambda call: consoles.set_graphics(ref, listen=listen,
                                                            password=password,
                                                            timeout_s=timeout_s, **call),
                         body.wait_s)


@router.get("/api/vms/{host}/{name}/vnc", tags=["consoles"])
def vnc_info(request: Request, host: HostName, name: VMName,
             _t: Reader) -> dict[str, object]:
    """Where the running VM's VNC server is (``vnc VM``): the address it listens on, the
    address a client on the server's machine connects to (null when it cannot:
    ``unreachable`` says why), port and display."""
    info = services_of(request).consoles.vnc(ref_of(host, name))
    return {**info.as_dict(), "unreachable": info.unreachable or None}
