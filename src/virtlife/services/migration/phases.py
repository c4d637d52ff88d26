"""A migration's phase and progress, read from libvirt's job statistics.

``MigrationPhase`` names the phases in the operators' words; ``JobSample.from_job_stats``
turns one ``virDomain.jobStats()`` dict (or a ``JOB_COMPLETED`` event's parameters) into
a small frozen value: the phase, memory sent of the total, what is left, the dirty rate
against the bandwidth, the throttle, and an ETA, with ``describe()`` for the CLI and
``as_dict()`` for ``--json`` lines. The policy (``policy.py``) reads series of these.

libvirt's key names and job-type numbers are part of its stable API, so they are written
here as plain strings and integers (a unit test compares them with the binding's
``VIR_DOMAIN_JOB_*`` constants). This module must not import libvirt, call it, or keep
a clock: the caller says how long the migration has run (``elapsed_s``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

# virDomainJobType: the "type" key of jobStats() (libvirt-domain.h).
JOB_NONE = 0  # no job (before it starts, or after libvirt dropped it)
JOB_BOUNDED = 1  # a job with a known end
JOB_UNBOUNDED = 2  # a job without one: a migration
JOB_COMPLETED = 3  # jobStats(COMPLETED) or the JOB_COMPLETED event
JOB_FAILED = 4
JOB_CANCELLED = 5

# virDomainJobOperation values a migration shows.
OPERATION_MIGRATION_IN = 4
OPERATION_MIGRATION_OUT = 5

# The jobStats() keys read here (VIR_DOMAIN_JOB_* string constants).
K_TYPE = "type"  # not a typed parameter: the binding adds it to the dict
K_OPERATION = "operation"
K_SUCCESS = "success"  # in the JOB_COMPLETED event, which carries no "type"
K_ERRMSG = "errmsg"
K_TIME_ELAPSED = "time_elapsed"  # ms since the job began, on libvirt's clock
K_DOWNTIME = "downtime"  # ms: QEMU's expected downtime while running, the real one after
K_SETUP_TIME = "setup_time"
K_DATA_TOTAL = "data_total"  # memory + disks
K_DATA_PROCESSED = "data_processed"
K_DATA_REMAINING = "data_remaining"
K_MEMORY_TOTAL = "memory_total"  # guest RAM plus device memory (video RAM...), bytes
K_MEMORY_PROCESSED = "memory_processed"  # bytes sent so far, re-sent pages included
K_MEMORY_REMAINING = "memory_remaining"  # dirty bytes still to send
K_MEMORY_BPS = "memory_bps"  # bytes/s; absent until QEMU has measured a while
K_MEMORY_DIRTY_RATE = "memory_dirty_rate"  # PAGES per second, not bytes
K_MEMORY_PAGE_SIZE = "memory_page_size"
K_MEMORY_ITERATION = "memory_iteration"  # passes over memory: 0 in setup, 1 the first
K_MEMORY_POSTCOPY_REQS = "memory_postcopy_requests"  # page faults served in post-copy
K_AUTO_CONVERGE_THROTTLE = "auto_converge_throttle"  # % of vCPU time taken away
K_DISK_TOTAL = "disk_total"
K_DISK_PROCESSED = "disk_processed"
K_DISK_REMAINING = "disk_remaining"
K_DISK_BPS = "disk_bps"

DEFAULT_PAGE_SIZE = 4096
MIB = 1024 * 1024


class MigrationPhase(Enum):
    """Where a migration is, as an operator says it (``label``); ``.value`` is its JSON name.

    The comments name the phase that follows. A phase never goes back (see ``rank``),
    except to ``failed`` or ``cancelled``, which may follow any other.
    """

    # libvirt prepares the destination (a listening QEMU) and QEMU sets up;
    # -> TRANSFERRING once the first pass over memory has begun
    PREPARING = "preparing"
    # the first pass: every page is sent once (iteration 0 or 1);
    # -> ITERATING when the first pass is done, or STOPPED when nothing was dirtied
    TRANSFERRING = "transferring"
    # passes 2..N re-send the pages the guest dirtied meanwhile;
    # -> STOPPED when what is left fits in the allowed downtime,
    #    or POSTCOPY when the policy switches
    ITERATING = "iterating"
    # the VM is paused at the source: the last pages and the device state move;
    # -> RESUMED once libvirt resumes it at the destination
    STOPPED = "stopped"
    # the VM runs at the destination, which pulls the pages it still lacks;
    # -> RESUMED when the last page is there
    POSTCOPY = "postcopy"
    # the VM runs at the destination (said by the orchestrator, from the destination's
    # RESUMED event: job statistics come from the source);
    # -> COMPLETED once the result is verified
    RESUMED = "resumed"
    # verified: running at the destination, gone at the source; the end
    COMPLETED = "completed"
    # the job failed; the end (the VM stays at the source, except after post-copy)
    FAILED = "failed"
    # aborted (Ctrl-C, migrate-abort, the watchdog or --timeout); the end
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def rank(self) -> int:
        """Order of the phases: a later sample never shows an earlier phase."""
        return _ORDER.index(self)

    @property
    def is_final(self) -> bool:
        return self in (MigrationPhase.COMPLETED, MigrationPhase.FAILED,
                        MigrationPhase.CANCELLED)

    @property
    def is_precopy(self) -> bool:
        """Pre-copy is running: memory is being sent while the VM runs at the source."""
        return self in (MigrationPhase.TRANSFERRING, MigrationPhase.ITERATING)


_LABELS = {
    MigrationPhase.PREPARING: "preparing destination",
    MigrationPhase.TRANSFERRING: "transferring memory",
    MigrationPhase.ITERATING: "iterating dirty pages",
    MigrationPhase.STOPPED: "stopped at source, moving device state",
    MigrationPhase.POSTCOPY: "post-copy, running at destination",
    MigrationPhase.RESUMED: "resumed at destination",
    MigrationPhase.COMPLETED: "completed",
    MigrationPhase.FAILED: "failed",
    MigrationPhase.CANCELLED: "cancelled",
}
_ORDER = list(MigrationPhase)


def _int(stats: Mapping[str, Any], key: str) -> int | None:
    value = stats.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _stats_phase(stats: Mapping[str, Any], *, postcopy: bool) -> MigrationPhase | None:
    """The phase the statistics alone show; None for "no job" (the caller decides)."""
    job = _int(stats, K_TYPE)
    if job is None and K_SUCCESS in stats:  # a JOB_COMPLETED event's parameters
        job = JOB_COMPLETED if stats[K_SUCCESS] else JOB_FAILED
    if job == JOB_FAILED:
        return MigrationPhase.FAILED
    if job == JOB_CANCELLED:
        return MigrationPhase.CANCELLED
    if job in (None, JOB_NONE):
        return None
    requests = _int(stats, K_MEMORY_POSTCOPY_REQS) or 0
    if postcopy or requests > 0:
        return MigrationPhase.POSTCOPY
    if job == JOB_COMPLETED:
        # QEMU at the source has sent everything; libvirt resumes the VM at the
        # destination next. Only the destination's event may say "resumed".
        return MigrationPhase.STOPPED
    iteration = _int(stats, K_MEMORY_ITERATION) or 0
    total = _int(stats, K_MEMORY_TOTAL) or 0
    remaining = _int(stats, K_MEMORY_REMAINING)
    if iteration == 0 or total == 0:
        return MigrationPhase.PREPARING  # seen: iteration 0, processed 0, remaining 0
    if remaining == 0:
        return MigrationPhase.STOPPED  # all memory sent, the job still runs
    return MigrationPhase.TRANSFERRING if iteration <= 1 else MigrationPhase.ITERATING


@dataclass(frozen=True)
class JobSample:
    """One sample of a migration's progress. Sizes are bytes, rates bytes per second.

    ``at_s`` is the caller's wall clock since the migration began (the watchdog and the
    policy's windows use it, as libvirt's ``time_elapsed`` may stop with a cut link).
    """

    phase: MigrationPhase
    at_s: float
    iteration: int = 0
    memory_total: int | None = None
    memory_processed: int = 0
    memory_remaining: int | None = None
    bandwidth: float | None = None  # memory_bps, else measured against the previous sample
    dirty_rate: float | None = None  # pages/s x page size; None until QEMU has measured
    throttle_pct: int | None = None  # auto-converge's throttle; None when it is off
    downtime_ms: int | None = None  # expected while it runs, the real one once completed
    setup_time_ms: int | None = None
    job_elapsed_ms: int | None = None  # libvirt's time_elapsed
    postcopy_requests: int | None = None
    disk_total: int | None = None
    disk_processed: int | None = None
    disk_remaining: int | None = None
    operation: int | None = None
    error: str | None = None  # libvirt's errmsg of a failed job

    @classmethod
    def from_job_stats(cls, stats: Mapping[str, Any], *, previous: JobSample | None,
                       elapsed_s: float, postcopy: bool = False) -> JobSample:
        """Read one ``jobStats()`` dict (or ``JOB_COMPLETED`` event parameters).

        ``previous`` is the last sample (None for the first): the phase never goes back
        from it (a job gone from libvirt, ``type`` 0, keeps the previous phase until the
        orchestrator says how it ended), post-copy stays post-copy, and it gives the
        bandwidth when libvirt has none yet (bytes sent between the two samples).
        ``postcopy`` is True once the orchestrator switched or saw the post-copy event
        (``memory_postcopy_requests`` above 0 says it too, but stays 0 for an idle guest).
        """
        found = _stats_phase(stats, postcopy=postcopy)
        if found is None and previous is not None:
            return dataclasses.replace(previous, at_s=elapsed_s)  # no job: nothing new
        if found is None:
            phase = MigrationPhase.PREPARING
        elif found in (MigrationPhase.FAILED, MigrationPhase.CANCELLED) or previous is None:
            phase = found
        elif previous.phase is MigrationPhase.POSTCOPY and found is MigrationPhase.STOPPED:
            phase = MigrationPhase.POSTCOPY  # a completed post-copy job: still post-copy
        else:
            phase = max(found, previous.phase, key=lambda p: p.rank)

        processed = _int(stats, K_MEMORY_PROCESSED) or 0
        bandwidth: float | None = _int(stats, K_MEMORY_BPS) or None
        if bandwidth is None and previous is not None and elapsed_s > previous.at_s:
            sent = processed - previous.memory_processed
            if sent > 0:
                bandwidth = sent / (elapsed_s - previous.at_s)
        pages = _int(stats, K_MEMORY_DIRTY_RATE)
        page_size = _int(stats, K_MEMORY_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        iteration = _int(stats, K_MEMORY_ITERATION)
        if iteration is None:
            iteration = previous.iteration if previous is not None else 0
        errmsg = stats.get(K_ERRMSG)
        return cls(
            phase=phase,
            at_s=elapsed_s,
            iteration=iteration,
            memory_total=_int(stats, K_MEMORY_TOTAL),
            memory_processed=processed,
            memory_remaining=_int(stats, K_MEMORY_REMAINING),
            bandwidth=float(bandwidth) if bandwidth else None,
            dirty_rate=float(pages * page_size) if pages is not None else None,
            throttle_pct=_int(stats, K_AUTO_CONVERGE_THROTTLE),
            downtime_ms=_int(stats, K_DOWNTIME),
            setup_time_ms=_int(stats, K_SETUP_TIME),
            job_elapsed_ms=_int(stats, K_TIME_ELAPSED),
            postcopy_requests=_int(stats, K_MEMORY_POSTCOPY_REQS),
            disk_total=_int(stats, K_DISK_TOTAL),
            disk_processed=_int(stats, K_DISK_PROCESSED),
            disk_remaining=_int(stats, K_DISK_REMAINING),
            operation=_int(stats, K_OPERATION),
            error=str(errmsg) if errmsg else None,
        )

    def with_phase(self, phase: MigrationPhase, *, at_s: float | None = None,
                   error: str | None = None) -> JobSample:
        """This sample in a phase the statistics cannot show: ``resumed`` (the
        destination's event), ``completed`` (verified), or how it ended."""
        return dataclasses.replace(self, phase=phase,
                                   at_s=self.at_s if at_s is None else at_s,
                                   error=error if error is not None else self.error)

    # -- derived ------------------------------------------------------------------------

    @property
    def transferred(self) -> int:
        """Every byte moved so far, memory and disks: what the watchdog watches."""
        return self.memory_processed + (self.disk_processed or 0)

    @property
    def memory_done(self) -> int | None:
        """Memory already clean at the destination (the total less what is dirty)."""
        if self.memory_total is None or self.memory_remaining is None:
            return None
        return max(0, self.memory_total - self.memory_remaining)

    @property
    def fraction(self) -> float | None:
        """0..1 of the memory (and disks) at the destination; None before it is known."""
        if self.phase in (MigrationPhase.RESUMED, MigrationPhase.COMPLETED):
            return 1.0
        if self.phase is MigrationPhase.STOPPED and not self.memory_remaining:
            return 1.0
        total = (self.memory_total or 0) + (self.disk_total or 0)
        left = (self.memory_remaining or 0) + (self.disk_remaining or 0)
        if total <= 0 or self.memory_remaining is None:
            return None
        return min(1.0, max(0.0, (total - left) / total))

    @property
    def dirty_ratio(self) -> float | None:
        """The dirty rate over the bandwidth: at 1 or more, pre-copy cannot catch up."""
        if self.dirty_rate is None or not self.bandwidth:
            return None
        return self.dirty_rate / self.bandwidth

    @property
    def converging(self) -> bool | None:
        """Whether pre-copy can catch up at these rates (dirty rate below bandwidth)."""
        ratio = self.dirty_ratio
        return None if ratio is None else ratio < 1.0

    @property
    def eta_s(self) -> float | None:
        """Seconds until the memory is across; None when it cannot be told.

        In pre-copy each pass re-sends what the guest dirtied during the last one, so the
        passes form a geometric series: remaining / (bandwidth - dirty rate). When the
        guest dirties as fast as the link sends, pre-copy never ends: None. In post-copy
        and once stopped, nothing is dirtied any more: remaining / bandwidth.
        """
        if self.phase.is_final or self.phase is MigrationPhase.RESUMED:
            return 0.0
        if self.memory_remaining is None or not self.bandwidth:
            return None
        left = self.memory_remaining + (self.disk_remaining or 0)
        rate = self.bandwidth
        if self.phase.is_precopy and self.dirty_rate:
            rate = self.bandwidth - self.dirty_rate
            if rate <= 0:
                return None
        return left / rate

    # -- output --------------------------------------------------------------------------

    def describe(self) -> str:
        """One line for the CLI, e.g. ``iterating dirty pages, iteration 7: 216 of 256 MiB
        sent (612 MiB with re-sends), 40 MiB left, dirty 62 MiB/s vs 64 MiB/s, throttle
        20 %, ETA unknown: dirtied as fast as sent``."""
        head = self.phase.label
        if self.phase is MigrationPhase.ITERATING:
            head += f", iteration {self.iteration}"
        if self.phase is MigrationPhase.FAILED:
            return f"{head}: {self.error}" if self.error else head
        if self.phase in (MigrationPhase.PREPARING, MigrationPhase.CANCELLED):
            return head
        if self.phase in (MigrationPhase.RESUMED, MigrationPhase.COMPLETED):
            return self._summary(head)
        parts: list[str] = []
        done, total = self.memory_done, self.memory_total
        if done is not None and total:
            sent = f"{of_text(done, total)} sent"
            if self.memory_processed > total:
                sent += f" ({size_text(self.memory_processed)} with re-sends)"
            parts.append(sent)
            if self.memory_remaining:
                parts.append(f"{size_text(self.memory_remaining)} left")
        if self.disk_total:
            copied = self.disk_total - (self.disk_remaining or 0)
            parts.append(f"disks {of_text(copied, self.disk_total)}")
        if self.phase is MigrationPhase.POSTCOPY and self.postcopy_requests:
            parts.append(f"{self.postcopy_requests} page requests")
        rate = rate_text(self.bandwidth)
        if self.phase.is_precopy and self.dirty_rate is not None and (
                self.dirty_rate > 0 or self.phase is MigrationPhase.ITERATING):
            parts.append(f"dirty {rate_text(self.dirty_rate)} vs {rate}")
        elif self.bandwidth:
            parts.append(rate)
        if self.throttle_pct is not None:
            parts.append(f"throttle {self.throttle_pct} %")
        if self.phase is not MigrationPhase.STOPPED or self.memory_remaining:
            parts.append(self._eta_text())
        return f"{head}: {', '.join(parts)}" if parts else head

    def _eta_text(self) -> str:
        eta = self.eta_s
        if eta is not None:
            return f"ETA {math.ceil(eta)} s"
        ratio = self.dirty_ratio
        if self.phase.is_precopy and ratio is not None and ratio >= 1.0:
            return "ETA unknown: dirtied as fast as sent"
        return "ETA unknown"

    def _summary(self, head: str) -> str:
        sent = f"{size_text(self.memory_processed)} sent" if self.memory_processed else ""
        took = f"in {self.job_elapsed_ms / 1000:.1f} s" if self.job_elapsed_ms else ""
        parts = [" ".join(w for w in (sent, took) if w)] if sent or took else []
        if self.downtime_ms is not None:
            parts.append(f"downtime {self.downtime_ms} ms")
        if self.iteration:
            parts.append(f"{self.iteration} iterations")
        if self.bandwidth:
            parts.append(rate_text(self.bandwidth) if not self.dirty_rate else
                         f"dirty {rate_text(self.dirty_rate)} vs {rate_text(self.bandwidth)}")
        return f"{head}: {', '.join(parts)}" if parts else head

    def as_dict(self) -> dict[str, Any]:
        """One ``--json`` line: sizes in bytes, rates in bytes/s, ``text`` as described."""
        def rounded(value: float | None, digits: int = 0) -> float | int | None:
            if value is None:
                return None
            return round(value, digits) if digits else round(value)

        return {
            "phase": self.phase.value,
            "phase_label": self.phase.label,
            "at_s": round(self.at_s, 2),
            "iteration": self.iteration,
            "fraction": rounded(self.fraction, 4),
            "memory_total": self.memory_total,
            "memory_processed": self.memory_processed,
            "memory_remaining": self.memory_remaining,
            "bandwidth": rounded(self.bandwidth),
            "dirty_rate": rounded(self.dirty_rate),
            "throttle_pct": self.throttle_pct,
            "eta_s": rounded(self.eta_s, 1),
            "downtime_ms": self.downtime_ms,
            "setup_time_ms": self.setup_time_ms,
            "job_elapsed_ms": self.job_elapsed_ms,
            "postcopy_requests": self.postcopy_requests,
            "disk_total": self.disk_total,
            "disk_processed": self.disk_processed,
            "disk_remaining": self.disk_remaining,
            "error": self.error,
            "text": self.describe(),
        }


def _unit(total: float) -> tuple[str, float]:
    return ("GiB", 1024.0 * MIB) if total >= 10 * 1024 * MIB else ("MiB", float(MIB))


def _num(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def size_text(nbytes: float) -> str:
    """``64 MiB``, ``1.5 MiB``, ``12 GiB``: how every migration display writes a size."""
    unit, div = _unit(nbytes)
    return f"{_num(nbytes / div)} {unit}"


def of_text(done: float, total: float) -> str:
    """``180 of 256 MiB``: both in the unit of the total."""
    unit, div = _unit(total)
    return f"{_num(done / div)} of {_num(total / div)} {unit}"


def rate_text(bps: float | None) -> str:
    return "bandwidth unknown" if not bps else f"{size_text(bps)}/s"
