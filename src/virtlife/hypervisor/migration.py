"""``Migration``: the libvirt calls of one domain's migration, flags from plain words.

A ``MigrationRequest`` says what an operator asked for (live or offline, paused at the
destination, auto-converge, post-copy allowed, multifd, compression, storage copy,
tunnelled, the unsafe flag that virtlife's pre-flight check earned, downtime and
bandwidth); ``flags`` and ``params`` turn it into libvirt's ``migrateToURI3``
arguments, peer to peer (the source libvirtd talks to the destination's). ``Migration``
starts it (a blocking call: the service runs it on a thread), reads its job, tunes it
while it runs (max downtime, bandwidth, the switch to post-copy) and aborts it. It
decides nothing: the policy is ``services.migration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtlife.hypervisor.libvirt_api import calling, libvirt
from virtlife.hypervisor.part import DomainPart

if TYPE_CHECKING:
    pass

MIB = 1024 * 1024


@dataclass(frozen=True)
class MigrationRequest:
    live: bool = True  # False: the VM is paused while its memory moves
    offline: bool = False  # only the definition moves (a shut-off VM)
    paused: bool = False  # leave it paused at the destination
    persistent: bool = True  # define it at the destination
    undefine_source: bool = True  # and undefine it at the source: a real move
    unsafe: bool = False  # libvirt cannot prove the storage shared; our check did
    auto_converge: bool = False
    postcopy: bool = False  # allow the switch to post-copy (``start_postcopy``)
    postcopy_resume: bool = False  # recover a post-copy that failed (both ends paused)
    compressed: bool = False  # XBZRLE: see the policy's warning for TCG guests
    parallel: int | None = None  # multifd connections
    copy_storage: str | None = None  # "all" or "inc"
    tunnelled: bool = False
    max_downtime_ms: int | None = None
    bandwidth_mib_s: int | None = None
    dest_name: str | None = None


def flags(req: MigrationRequest) -> int:
    """libvirt's migration flags for ``req`` (always peer to peer, abort on I/O error)."""
    value = int(libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    chosen: dict[int, bool] = {
        libvirt.VIR_MIGRATE_LIVE: req.live and not req.offline,
        libvirt.VIR_MIGRATE_OFFLINE: req.offline,
        libvirt.VIR_MIGRATE_PAUSED: req.paused,
        libvirt.VIR_MIGRATE_PERSIST_DEST: req.persistent or req.offline,
        libvirt.VIR_MIGRATE_UNDEFINE_SOURCE: req.undefine_source,
        libvirt.VIR_MIGRATE_UNSAFE: req.unsafe,
        libvirt.VIR_MIGRATE_AUTO_CONVERGE: req.auto_converge,
        libvirt.VIR_MIGRATE_POSTCOPY: req.postcopy or req.postcopy_resume,
        libvirt.VIR_MIGRATE_POSTCOPY_RESUME: req.postcopy_resume,
        libvirt.VIR_MIGRATE_COMPRESSED: req.compressed,
        libvirt.VIR_MIGRATE_PARALLEL: req.parallel is not None,
        libvirt.VIR_MIGRATE_NON_SHARED_DISK: req.copy_storage == "all",
        libvirt.VIR_MIGRATE_NON_SHARED_INC: req.copy_storage == "inc",
        libvirt.VIR_MIGRATE_TUNNELLED: req.tunnelled,
    }
    for flag, on in chosen.items():
        if on:
            value |= flag
    return value


def params(req: MigrationRequest) -> dict[str, Any]:
    """libvirt's typed migration parameters for ``req``."""
    found: dict[str, Any] = {}
    if req.bandwidth_mib_s is not None:  # the cap holds in post-copy too (QEMU: none)
        found[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = req.bandwidth_mib_s
        found[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = req.bandwidth_mib_s
    if req.parallel is not None:
        found[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = req.parallel
    if req.dest_name is not None:
        found[libvirt.VIR_MIGRATE_PARAM_DEST_NAME] = req.dest_name
    return found


class Migration(DomainPart):
    """The migration job of one domain (``Migration(guest)``)."""

    def start(self, dest_uri: str, req: MigrationRequest, *, dest: str = "") -> None:
        """Migrate to ``dest_uri`` (peer to peer); returns when libvirt is done. ``dest``:
        the destination's inventory name, for the error (its URI otherwise)."""
        if req.max_downtime_ms is not None and not req.offline:
            self.set_max_downtime(req.max_downtime_ms)
        with calling(f"migrate {self.vm} from {self.guest.host.name} to {dest or dest_uri}"):
            self._dom.migrateToURI3(dest_uri, params(req), flags(req))

    def job_stats(self) -> dict[str, Any]:
        """libvirt's statistics of the running job ({} when there is none)."""
        try:
            return dict(self._dom.jobStats(0) or {})
        except libvirt.libvirtError as err:
            if err.get_error_code() in (libvirt.VIR_ERR_OPERATION_INVALID,
                                        libvirt.VIR_ERR_NO_DOMAIN):
                return {}  # ended (or gone, once it moved)
            with calling(self._what("read the migration job of")):
                raise

    def completed_stats(self) -> dict[str, Any]:
        """The statistics of the job that just completed (total time, downtime...)."""
        with calling(self._what("read the completed job of")):
            # KEEP: libvirt would drop them once read, and an operator may ask again
            return dict(self._dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                                           | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
                        or {})

    def set_max_downtime(self, ms: int) -> None:
        with calling(self._what("set the migration downtime of")):
            self._dom.migrateSetMaxDowntime(ms, 0)

    def set_bandwidth(self, mib_s: int) -> None:
        with calling(self._what("set the migration bandwidth of")):
            self._dom.migrateSetMaxSpeed(mib_s, 0)

    def start_postcopy(self) -> None:
        with calling(self._what("switch to post-copy the migration of")):
            self._dom.migrateStartPostCopy(0)

    def abort(self) -> None:
        with calling(self._what("abort the migration of")):
            self._dom.abortJob()

    def pause_postcopy(self) -> None:
        """Interrupt a migration in post-copy: both ends pause ("post-copy failed") and
        the migration can be resumed later (``postcopy_resume``); what a lost link
        does, on purpose."""
        with calling(self._what("pause the post-copy migration of")):
            self._dom.abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
