"""``Host``: one libvirt connection, its domain lookups and its event callbacks.

The Host is the one place where "no such domain" becomes ``VMNotFound`` and where a
failed or lost connection becomes ``HostUnreachable``. It hands out ``Guest``
wrappers and turns libvirt event callbacks into ``DomainEvent`` values for listeners.
It holds no policy: which operation is allowed is decided in ``services``.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from virtlife import errors
from virtlife.hypervisor.events import (
    AGENT_REASONS,
    AGENT_STATES,
    DomainEvent,
    Listener,
    lifecycle_names,
)
from virtlife.hypervisor.guest import Guest
from virtlife.hypervisor.libvirt_api import calling, ensure_event_loop, libvirt, translate


@dataclass(frozen=True)
class HostInfo:
    name: str
    uri: str
    hostname: str
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    cpus: int
    memory_mib: int


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def is_remote(uri: str) -> bool:
    """True for URIs that go over a network transport (keepalive matters there)."""
    parsed = urlparse(uri)
    return "+" in parsed.scheme or bool(parsed.hostname)


class Host:
    """A connected libvirt host. Create with ``Host.open``; close when done."""

    def __init__(self, name: str, uri: str, conn: Any) -> None:
        self.name = name
        self.uri = uri
        self._conn = conn
        self._closed = False
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._callback_ids: list[int] = []

    # -- connection ------------------------------------------------------------

    @classmethod
    def open(cls, name: str, uri: str, *, events: bool = True) -> Host:
        """Connect to ``uri``; raise ``HostUnreachable`` with libvirt's reason if we cannot."""
        ensure_event_loop()
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as err:
            raise errors.HostUnreachable(
                f"cannot reach host {name} ({uri}): {err.get_error_message()}"
            ) from err
        if conn is None:  # pragma: no cover - old bindings returned None
            raise errors.HostUnreachable(f"cannot reach host {name} ({uri})")
        host = cls(name, uri, conn)
        if is_remote(uri):
            with calling(f"set keepalive on {name}"):
                conn.setKeepAlive(5, 3)
        with calling(f"watch connection to {name}"):
            conn.registerCloseCallback(host._on_close, None)
        if events:
            host._register_events()
        return host

    @property
    def conn(self) -> Any:
        """The raw connection, for other ``hypervisor`` modules only."""
        if self._closed:
            raise errors.HostUnreachable(f"the connection to host {self.name} is closed")
        return self._conn

    @property
    def closed(self) -> bool:
        return self._closed

    def alive(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for cb_id in self._callback_ids:
            try:
                self._conn.domainEventDeregisterAny(cb_id)
            except libvirt.libvirtError:
                pass
        try:
            self._conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> HostInfo:
        with calling(f"read host information of {self.name}"):
            conn = self.conn
            node = conn.getInfo()
            return HostInfo(
                name=self.name,
                uri=self.uri,
                hostname=conn.getHostname(),
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor=conn.getType(),
                hypervisor_version=_version(conn.getVersion()),
                cpus=int(node[2]),
                memory_mib=int(node[1]),
            )

    def virt_types(self) -> set[str]:
        """Domain types the host's capabilities offer for x86_64 hvm guests."""
        with calling(f"read capabilities of {self.name}"):
            caps = ET.fromstring(self.conn.getCapabilities())
        found: set[str] = set()
        for guest in caps.findall("guest"):
            arch = guest.find("arch")
            if arch is None or arch.get("name") != "x86_64":
                continue
            found.update(d.get("type", "") for d in arch.findall("domain"))
        found.discard("")
        return found

    # -- domains -----------------------------------------------------------------

    def lookup(self, vm: str) -> Guest:
        """The domain named ``vm``; ``VMNotFound`` if there is none."""
        try:
            dom = self.conn.lookupByName(vm)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise errors.VMNotFound(f"no VM named {vm} on host {self.name}") from err
            raise translate(err, f"look up {vm} on {self.name}") from err
        return Guest(self, dom)

    def find(self, vm: str) -> Guest | None:
        try:
            return self.lookup(vm)
        except errors.VMNotFound:
            return None

    def guests(self) -> list[Guest]:
        with calling(f"list VMs on {self.name}"):
            doms = self.conn.listAllDomains(0)
        return [Guest(self, d) for d in doms]

    def define(self, xml: str) -> Guest:
        with calling(f"define a VM on {self.name}"):
            dom = self.conn.defineXML(xml)
        return Guest(self, dom)

    def restore(self, path: str, *, paused: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0
        with calling(f"restore {path} on {self.name}"):
            self.conn.restoreFlags(path, None, flags)

    def saved_image_xml(self, path: str) -> str:
        """The domain XML stored inside a save file (tells which VM it holds)."""
        with calling(f"read save file {path} on {self.name}"):
            return str(self.conn.saveImageGetXMLDesc(path, 0))

    # -- events ------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _emit(self, event: DomainEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not kill libvirt's event thread
                pass

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._closed = True
        names = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}
        self._emit(DomainEvent(self.name, "", "host", "disconnected", names.get(reason, "")))

    def _register_events(self) -> None:
        conn = self._conn

        def lifecycle(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
            ev, det = lifecycle_names(event, detail)
            self._emit(DomainEvent(self.name, dom.name(), "lifecycle", ev, det))

        def agent(_c: Any, dom: Any, state: int, reason: int, _o: Any) -> None:
            self._emit(DomainEvent(
                self.name, dom.name(), "agent",
                AGENT_STATES.get(state, str(state)), AGENT_REASONS.get(reason, str(reason)),
            ))

        def reboot(_c: Any, dom: Any, _o: Any) -> None:
            self._emit(DomainEvent(self.name, dom.name(), "reboot", "reset"))

        def pmsuspend(_c: Any, dom: Any, _reason: int, _o: Any) -> None:
            self._emit(DomainEvent(self.name, dom.name(), "pm", "suspend"))

        def pmwakeup(_c: Any, dom: Any, _reason: int, _o: Any) -> None:
            self._emit(DomainEvent(self.name, dom.name(), "pm", "wakeup"))

        wanted = [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, agent),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_PMSUSPEND, pmsuspend),
            (libvirt.VIR_DOMAIN_EVENT_ID_PMWAKEUP, pmwakeup),
        ]
        for event_id, callback in wanted:
            try:
                self._callback_ids.append(
                    conn.domainEventRegisterAny(None, event_id, callback, None)
                )
            except libvirt.libvirtError:
                # a driver without this event kind (the test driver lacks some)
                continue
