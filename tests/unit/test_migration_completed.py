"""The final statistics of a completed move (``_completed``): the destination's completed
job, with the disk copy carried over from the source's progress samples where the
destination has no disk figures (libvirt 9.0 keeps none there), and read again for a
moment after a post-copy, whose statistics come late.

The moved VM is a stand-in whose domain answers ``jobStats`` from a list of replies
(the test driver has no job statistics at all).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest

from virtlife.services.migration import service
from virtlife.services.migration.checks import MigrationKind, Report
from virtlife.services.migration.phases import JobSample, MigrationPhase
from virtlife.services.migration.policy import PolicyState
from virtlife.services.migration.service import MigrationOutcome, _completed
from virtlife.services.operations import OperationResult
from virtlife.states import Operation, StateInfo, VMState

MIB = 1024 * 1024
DISK = 64 * MIB

# the destination's completed job after a live move with --copy-storage (libvirt 9.0:
# memory and times, no disk_* keys)
COMPLETED: dict[str, Any] = {
    "type": libvirt.VIR_DOMAIN_JOB_COMPLETED, "operation": 1, "time_elapsed": 2140,
    "downtime": 41, "setup_time": 9, "memory_total": 286072832,
    "memory_processed": 150714598, "memory_remaining": 0, "memory_bps": 67108864,
    "memory_dirty_rate": 0, "memory_iteration": 3, "memory_postcopy_requests": 0,
    "memory_page_size": 4096,
}
# the job a destination shows before its statistics are there
NO_JOB: dict[str, Any] = {"type": libvirt.VIR_DOMAIN_JOB_NONE}


class StatsDomain:
    """A domain whose completed-job statistics are ``replies``, one per read (the last
    one repeats); a reply that is an exception is raised. It does nothing else."""

    def __init__(self, *replies: dict[str, Any] | Exception) -> None:
        self.replies = list(replies)
        self.reads: list[int] = []  # the flags of each jobStats call

    def jobStats(self, flags: int = 0) -> dict[str, Any]:  # libvirt's name
        self.reads.append(flags)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return dict(reply)


def _moved(dom: StatsDomain) -> Any:
    return SimpleNamespace(name="web1", host=SimpleNamespace(name="lab-b"), _dom=dom)


def _outcome(*samples: JobSample) -> MigrationOutcome:
    result = OperationResult("lab-b", "web1", Operation.MIGRATE,
                             StateInfo(VMState.RUNNING, "migrated"), 0.0)
    report = Report(vm="web1", source="lab-a", destination="lab-b",
                    kind=MigrationKind.LIVE, checks=())
    return MigrationOutcome(result, report, samples=list(samples), wall_s=2.5)


def _state(*, postcopy: bool = False) -> PolicyState:
    return PolicyState(downtime_ms=300, auto_converge_armed=False, postcopy_armed=postcopy,
                       postcopy_started=postcopy)


def _sample(*, disk_done: int | None, phase: MigrationPhase = MigrationPhase.STOPPED,
            ) -> JobSample:
    """The source's last progress sample; ``disk_done`` None: it saw no disk copy."""
    copy = disk_done is not None
    return JobSample(phase=phase, at_s=2.0, iteration=3, memory_total=286072832,
                     memory_processed=140 * MIB, memory_remaining=4 * MIB,
                     bandwidth=60.0 * MIB, downtime_ms=300, job_elapsed_ms=1990,
                     disk_total=DISK if copy else None, disk_processed=disk_done,
                     disk_remaining=DISK - disk_done if disk_done is not None else None)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between reads, recorded instead of slept (only the service's ``time``
    is replaced: another thread's sleep is neither recorded nor cut short)."""
    waited: list[float] = []
    monkeypatch.setattr(service, "time", SimpleNamespace(sleep=waited.append,
                                                         monotonic=time.monotonic))
    return waited


def test_a_disk_copy_the_destination_does_not_report_is_carried_over_whole(
        sleeps: list[float]) -> None:
    # the last sample caught the copy just short of its end (63.6 of 64 MiB); the move
    # completed, so the whole disk was copied
    dom = StatsDomain(COMPLETED)
    stats = _completed(_moved(dom), _outcome(_sample(disk_done=int(63.6 * MIB))), _state())
    assert stats is not None
    assert stats.phase is MigrationPhase.COMPLETED
    assert (stats.disk_total, stats.disk_processed, stats.disk_remaining) == (DISK, DISK, 0)
    # the rest is the destination's completed job, not the source's last sample
    assert (stats.downtime_ms, stats.job_elapsed_ms, stats.memory_processed,
            stats.iteration) == (41, 2140, 150714598, 3)
    assert dom.reads == [libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                         | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED]
    assert sleeps == []


def test_disk_figures_the_destination_reports_are_its_own() -> None:
    dom = StatsDomain({**COMPLETED, "disk_total": 2 * DISK, "disk_processed": 2 * DISK,
                       "disk_remaining": 0})
    stats = _completed(_moved(dom), _outcome(_sample(disk_done=DISK // 2)), _state())
    assert stats is not None
    assert (stats.disk_total, stats.disk_processed, stats.disk_remaining) == (
        2 * DISK, 2 * DISK, 0)


@pytest.mark.parametrize("samples", [(), (_sample(disk_done=None),)],
                         ids=["no sample", "a sample without a disk copy"])
def test_no_disk_figures_where_no_sample_saw_a_disk_copy(samples: tuple[JobSample, ...],
                                                         ) -> None:
    stats = _completed(_moved(StatsDomain(COMPLETED)), _outcome(*samples), _state())
    assert stats is not None and stats.phase is MigrationPhase.COMPLETED
    assert (stats.disk_total, stats.disk_processed, stats.disk_remaining) == (None, None, None)
    assert stats.downtime_ms == 41


def test_after_a_postcopy_the_late_statistics_are_awaited_and_the_disk_carried_over(
        sleeps: list[float]) -> None:
    # the destination shows no job for a moment after a post-copy, then the completed one
    dom = StatsDomain(NO_JOB, {}, {**COMPLETED, "memory_postcopy_requests": 12})
    last = _sample(disk_done=int(63.6 * MIB), phase=MigrationPhase.POSTCOPY)
    stats = _completed(_moved(dom), _outcome(last), _state(postcopy=True))
    assert stats is not None
    assert len(dom.reads) == 3 and sleeps == [0.5, 0.5]
    assert stats.phase is MigrationPhase.COMPLETED
    assert (stats.downtime_ms, stats.postcopy_requests) == (41, 12)
    assert (stats.disk_total, stats.disk_processed, stats.disk_remaining) == (DISK, DISK, 0)


def test_a_postcopy_whose_statistics_never_come_has_none_within_six_reads(
        sleeps: list[float]) -> None:
    dom = StatsDomain(NO_JOB)
    last = _sample(disk_done=DISK, phase=MigrationPhase.POSTCOPY)
    assert _completed(_moved(dom), _outcome(last), _state(postcopy=True)) is None
    assert len(dom.reads) == 6 and len(sleeps) == 5


def test_without_postcopy_late_statistics_are_awaited_too(sleeps: list[float]) -> None:
    # seen once in a clean-clone run: a pre-copy move whose destination showed no
    # completed job at the first read
    dom = StatsDomain(NO_JOB, COMPLETED)
    stats = _completed(_moved(dom), _outcome(_sample(disk_done=DISK)), _state())
    assert stats is not None and stats.phase is MigrationPhase.COMPLETED
    assert stats.downtime_ms == 41
    assert len(dom.reads) == 2 and sleeps == [0.5]


def test_without_postcopy_statistics_that_never_come_give_none_within_six_reads(
        sleeps: list[float]) -> None:
    dom = StatsDomain(NO_JOB)
    assert _completed(_moved(dom), _outcome(_sample(disk_done=DISK)), _state()) is None
    assert len(dom.reads) == 6 and len(sleeps) == 5


def test_statistics_that_cannot_be_read_give_none_not_an_error(sleeps: list[float]) -> None:
    err = libvirt.libvirtError("Domain not found")
    dom = StatsDomain(err)
    assert _completed(_moved(dom), _outcome(_sample(disk_done=DISK)),
                      _state(postcopy=True)) is None
    assert len(dom.reads) == 1 and sleeps == []
