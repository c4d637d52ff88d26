"""``Guest``: a thin wrapper of one libvirt domain.

Each method is one libvirt call (or a few reads), with libvirt errors translated and
flags chosen from plain words ("agent", "acpi", "mem"...). It does not check whether
an operation is allowed or wait for its result: ``services.lifecycle`` does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtlife import errors
from virtlife.hypervisor.console import ConsoleStream, open_console, open_graphics_socket
from virtlife.hypervisor.libvirt_api import calling, libvirt, translate
from virtlife.states import (
    LV_SHUTOFF,
    UNDEFINED,
    PMTarget,
    ShutdownMode,
    StateInfo,
    classify,
)

if TYPE_CHECKING:
    import socket

    from virtlife.hypervisor.host import Host

SHUTDOWN_MODES: dict[ShutdownMode, int] = {
    ShutdownMode.DEFAULT: 0,  # libvirt chooses: the agent when configured, else ACPI
    ShutdownMode.AGENT: libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
    ShutdownMode.ACPI: libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
}
REBOOT_MODES: dict[ShutdownMode, int] = {
    ShutdownMode.DEFAULT: 0,
    ShutdownMode.AGENT: libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT,
    ShutdownMode.ACPI: libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN,
}
PM_TARGETS: dict[PMTarget, int] = {
    PMTarget.MEM: libvirt.VIR_NODE_SUSPEND_TARGET_MEM,
    PMTarget.DISK: libvirt.VIR_NODE_SUSPEND_TARGET_DISK,
    PMTarget.HYBRID: libvirt.VIR_NODE_SUSPEND_TARGET_HYBRID,
}
# virDomainJobOperation: what a running libvirt job is doing (libvirt-domain.h).
JOB_OPERATIONS = {
    0: "unknown job", 1: "start", 2: "save", 3: "restore", 4: "incoming migration",
    5: "migration", 6: "snapshot", 7: "snapshot revert", 8: "dump", 9: "backup",
    10: "snapshot delete",
}


@dataclass(frozen=True)
class GuestInfo:
    host: str
    name: str
    uuid: str
    id: int | None
    state: StateInfo
    vcpus: int
    memory_mib: int
    max_memory_mib: int
    cpu_time_s: float
    persistent: bool
    autostart: bool
    managed_save: bool
    snapshots: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "name": self.name, "uuid": self.uuid, "id": self.id,
            "state": self.state.state.value, "reason": self.state.reason,
            "vcpus": self.vcpus, "memory_mib": self.memory_mib,
            "max_memory_mib": self.max_memory_mib, "cpu_time_s": round(self.cpu_time_s, 2),
            "persistent": self.persistent, "autostart": self.autostart,
            "managed_save": self.managed_save, "snapshots": self.snapshots,
        }


class Guest:
    """One domain on one ``Host``."""

    def __init__(self, host: Host, dom: Any) -> None:
        self.host = host
        self._dom = dom
        self.name: str = dom.name()

    def __repr__(self) -> str:
        return f"Guest({self.host.name}/{self.name})"

    def _what(self, verb: str) -> str:
        return f"{verb} {self.name} on {self.host.name}"

    # -- reads ---------------------------------------------------------------------

    def status(self) -> StateInfo:
        """The classified state; ``undefined`` once the domain is gone."""
        try:
            lv_state, lv_reason = self._dom.state(0)
            managed = lv_state == LV_SHUTOFF and bool(self._dom.hasManagedSaveImage(0))
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return UNDEFINED
            raise translate(err, self._what("read the state of")) from err
        return classify(lv_state, lv_reason, has_managed_save=managed)

    def uuid(self) -> str:
        return str(self._dom.UUIDString())

    def reattach(self) -> None:
        """Look the domain up again, by its UUID, on the Host's current connection (its
        handle dies with the connection it came from: after a libvirtd restart every
        call on it fails). ``VMNotFound`` when the host no longer has it; the name is
        read again (libvirt's, should it have been renamed meanwhile)."""
        uuid = self.uuid()  # kept in the handle: no call to the dead connection
        conn = self.host.conn
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise errors.VMNotFound(
                    f"no VM {self.name} (UUID {uuid}) on host {self.host.name}") from err
            raise translate(err, self._what("look up again")) from err
        self._dom, self.name = dom, dom.name()

    def domain_id(self) -> int | None:
        """libvirt's id of the running domain (a new one at every start); None when off."""
        with calling(self._what("read the id of")):
            dom_id = int(self._dom.ID())
        return dom_id if dom_id >= 0 else None

    def job(self) -> str | None:
        """The libvirt job running on the domain now (``save``, ``migration``, ``dump``...),
        whoever started it; None when there is none or the driver cannot tell."""
        try:
            stats = self._dom.jobStats(0)
        except libvirt.libvirtError as err:
            if "only on the source host" in (err.get_error_message() or ""):
                return "incoming migration"  # libvirt keeps its statistics at the source
            if err.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT,
                                        libvirt.VIR_ERR_OPERATION_INVALID,
                                        libvirt.VIR_ERR_NO_DOMAIN):
                return None  # no job API (test driver), not running, or gone
            raise translate(err, self._what("read the job of")) from err
        if not stats or int(stats.get("type", 0)) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        operation = int(stats.get(libvirt.VIR_DOMAIN_JOB_OPERATION, 0))
        return JOB_OPERATIONS.get(operation, f"job {operation}")

    def is_persistent(self) -> bool:
        with calling(self._what("inspect")):
            return bool(self._dom.isPersistent())

    def has_managed_save(self) -> bool:
        with calling(self._what("inspect")):
            return bool(self._dom.hasManagedSaveImage(0))

    def snapshot_count(self) -> int:
        with calling(self._what("count snapshots of")):
            try:
                return int(self._dom.snapshotNum(0))
            except libvirt.libvirtError as err:
                if err.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT,):
                    return 0
                raise

    def xml(self, *, inactive: bool = False, secure: bool = False) -> str:
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (
            libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        )
        with calling(self._what("read the XML of")):
            return str(self._dom.XMLDesc(flags))

    def info(self) -> GuestInfo:
        with calling(self._what("read information about")):
            _st, max_kib, mem_kib, vcpus, cpu_ns = self._dom.info()
            dom_id = self._dom.ID()
            persistent = bool(self._dom.isPersistent())
            autostart = bool(self._dom.autostart()) if persistent else False
            managed = bool(self._dom.hasManagedSaveImage(0))
        return GuestInfo(
            host=self.host.name,
            name=self.name,
            uuid=self.uuid(),
            id=dom_id if dom_id >= 0 else None,
            state=self.status(),
            vcpus=int(vcpus),
            memory_mib=int(mem_kib) // 1024,
            max_memory_mib=int(max_kib) // 1024,
            cpu_time_s=cpu_ns / 1e9,
            persistent=persistent,
            autostart=autostart,
            managed_save=managed,
            snapshots=self.snapshot_count() if persistent else 0,
        )

    # -- state changes ------------------------------------------------------------------

    def start(self, *, paused: bool = False, force_boot: bool = False) -> None:
        flags = (libvirt.VIR_DOMAIN_START_PAUSED if paused else 0) | (
            libvirt.VIR_DOMAIN_START_FORCE_BOOT if force_boot else 0
        )
        with calling(self._what("start")):
            self._dom.createWithFlags(flags)

    def shutdown(self, mode: ShutdownMode = ShutdownMode.DEFAULT) -> None:
        with calling(self._what("shut down")):
            self._dom.shutdownFlags(SHUTDOWN_MODES[mode])

    def reboot(self, mode: ShutdownMode = ShutdownMode.DEFAULT) -> None:
        with calling(self._what("reboot")):
            self._dom.reboot(REBOOT_MODES[mode])

    def reset(self) -> None:
        with calling(self._what("reset")):
            self._dom.reset(0)

    def destroy(self, *, graceful: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_DESTROY_GRACEFUL if graceful else 0
        with calling(self._what("destroy")):
            self._dom.destroyFlags(flags)

    def suspend(self) -> None:
        with calling(self._what("suspend")):
            self._dom.suspend()

    def resume(self) -> None:
        with calling(self._what("resume")):
            self._dom.resume()

    def save(self, path: str) -> None:
        with calling(self._what("save")):
            self._dom.save(path)

    def managed_save(self) -> None:
        with calling(self._what("managed-save")):
            self._dom.managedSave(0)

    def managed_save_remove(self) -> None:
        with calling(self._what("remove the managed-save image of")):
            self._dom.managedSaveRemove(0)

    def pm_suspend(self, target: PMTarget = PMTarget.MEM) -> None:
        with calling(self._what("pmsuspend")):
            self._dom.pMSuspendForDuration(PM_TARGETS[target], 0, 0)

    def pm_wakeup(self) -> None:
        with calling(self._what("pmwakeup")):
            self._dom.pMWakeup(0)

    def undefine(
        self, *, managed_save: bool = False, snapshots: bool = False, nvram: bool | None = None
    ) -> None:
        """Undefine; ``nvram`` True removes NVRAM, False keeps it, None lets libvirt decide."""
        flags = 0
        if managed_save:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        if snapshots:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        if nvram is True:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        elif nvram is False:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        with calling(self._what("undefine")):
            self._dom.undefineFlags(flags)

    # -- devices (raw XML; services.media builds on this) ----------------------------

    @staticmethod
    def _affect(live: bool, config: bool) -> int:
        if not (live or config):
            raise ValueError("a device change must affect the live VM, its definition or both")
        return (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (
            libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0)

    def attach_device(self, xml: str, *, live: bool, config: bool) -> None:
        """Add the device ``xml`` to the running VM (``live``), its definition (``config``)
        or both."""
        with calling(self._what("attach a device to")):
            self._dom.attachDeviceFlags(xml, self._affect(live, config))

    def detach_device(self, xml: str, *, live: bool, config: bool) -> None:
        """Remove the device ``xml`` names; libvirt may finish a live removal later."""
        with calling(self._what("detach a device from")):
            self._dom.detachDeviceFlags(xml, self._affect(live, config))

    # -- consoles (hypervisor.console holds the stream and socket wrappers) -----------

    def open_console(self, *, force: bool = False) -> ConsoleStream:
        """A session on the VM's serial console; ``OperationBusy`` while another client
        holds it, unless ``force`` takes it over."""
        return open_console(self.host.conn, self._dom,
                            f"the serial console of {self.name} on {self.host.name}",
                            force=force)

    def open_graphics_socket(self, index: int) -> socket.socket:
        """A socket to the VM's graphics server ``index`` (local connections only)."""
        return open_graphics_socket(self._dom, index,
                                    f"the graphics server of {self.name} on {self.host.name}")
