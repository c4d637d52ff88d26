"""The pure core of migration: phases and progress, the convergence policy, the checks.

Plain values and functions, no libvirt and no I/O: the hypervisor wrapper gathers the
facts and the job statistics, the orchestrator calls these in this order and acts.

1. Pre-flight (``checks``): gather ``VMFacts`` and the two ``HostFacts``, then
   ``report = run_checks(vm, src, dst, CheckOptions(...))``. Refuse unless
   ``report.ok``; print ``report.warnings``; ``--check`` prints ``report.render()`` or
   ``report.as_dict()`` and stops. Pass libvirt's unsafe flag only when
   ``report.allows_unsafe``, and say ``report.unsafe_reason``.
2. Start (``policy``): ``state = plan_start(limits)``; its ``auto_converge_armed`` and
   ``postcopy_armed`` are the VIR_MIGRATE_AUTO_CONVERGE and VIR_MIGRATE_POSTCOPY flags
   (QEMU takes neither once the migration runs); once the job exists,
   ``migrateSetMaxDowntime(state.downtime_ms)``. With ``--compressed`` print
   ``compressed_warning(...)`` first.
3. Every second or so (``phases`` then ``policy``):
   ``p = JobSample.from_job_stats(dom.jobStats(), previous=p, elapsed_s=t, postcopy=seen)``;
   keep the samples; print ``p.describe()`` or ``p.as_dict()``. Then
   ``watchdog(samples)`` (abort a stall before libvirt's ~28 s keepalive), then
   ``next_step(state, samples, limits)``; carry out a decision's ``action``, print its
   ``reason``, and ``state = state.after(decision)``. Past ``--timeout``:
   ``on_timeout(limits.on_timeout, state, timeout_s=..., at_s=t)``, the same way.
4. The end: ``p.with_phase(MigrationPhase.RESUMED)`` on the destination's event,
   ``COMPLETED`` once verified (a crashed guest there is ``FAILED``), else ``FAILED`` or
   ``CANCELLED``; the final statistics are ``JobSample.from_job_stats`` of the completed
   job (the source's JOB_COMPLETED event after post-copy), journalled with
   ``state.as_dict()`` (the policy steps taken).
"""

from virtlife.services.migration.checks import (
    Check,
    CheckOptions,
    Clock,
    CopyStorage,
    Disk,
    DiskAtDestination,
    HostFacts,
    MigrationKind,
    Report,
    Status,
    VMFacts,
    run_checks,
    version_from_int,
)
from virtlife.services.migration.phases import JobSample, MigrationPhase
from virtlife.services.migration.policy import (
    Convergence,
    Decision,
    Limits,
    PolicyAction,
    PolicyState,
    PostcopyMode,
    TimeoutAction,
    compressed_warning,
    estimate_convergence,
    next_step,
    on_timeout,
    plan_start,
    stalled,
    stalled_for,
    watchdog,
)

__all__ = [
    "Check",
    "CheckOptions",
    "Clock",
    "Convergence",
    "CopyStorage",
    "Decision",
    "Disk",
    "DiskAtDestination",
    "HostFacts",
    "JobSample",
    "Limits",
    "MigrationKind",
    "MigrationPhase",
    "PolicyAction",
    "PolicyState",
    "PostcopyMode",
    "Report",
    "Status",
    "TimeoutAction",
    "VMFacts",
    "compressed_warning",
    "estimate_convergence",
    "next_step",
    "on_timeout",
    "plan_start",
    "run_checks",
    "stalled",
    "stalled_for",
    "version_from_int",
    "watchdog",
]
