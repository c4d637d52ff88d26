"""Migration phases and progress from libvirt's job statistics (real and realistic dicts)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support import DATA
from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.services.migration import phases
from virtlife.services.migration.phases import MIB, JobSample, MigrationPhase

P = MigrationPhase
TOTAL = 286072832  # memory_total of the 256 MiB test guest (RAM plus video memory)
SAMPLES = json.loads((DATA / "migration_jobstats.json").read_text())


def test_job_stats_key_names_match_the_binding() -> None:
    keys = {name: value for name, value in vars(phases).items() if name.startswith("K_")}
    for name, value in keys.items():
        if name == "K_TYPE":
            continue  # the binding's own dict key, not a typed parameter
        assert getattr(libvirt, "VIR_DOMAIN_JOB_" + name[2:]) == value, name
    assert len(keys) > 20


def test_job_type_and_operation_numbers_match_the_binding() -> None:
    assert phases.JOB_NONE == libvirt.VIR_DOMAIN_JOB_NONE
    assert phases.JOB_BOUNDED == libvirt.VIR_DOMAIN_JOB_BOUNDED
    assert phases.JOB_UNBOUNDED == libvirt.VIR_DOMAIN_JOB_UNBOUNDED
    assert phases.JOB_COMPLETED == libvirt.VIR_DOMAIN_JOB_COMPLETED
    assert phases.JOB_FAILED == libvirt.VIR_DOMAIN_JOB_FAILED
    assert phases.JOB_CANCELLED == libvirt.VIR_DOMAIN_JOB_CANCELLED
    assert phases.OPERATION_MIGRATION_IN == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN
    assert phases.OPERATION_MIGRATION_OUT == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT


def mig(iteration: int, remaining: int, processed: int, *, bps: int | None = 64 * MIB,
        dirty_pages: int | None = 0, job: int = 2, **extra: Any) -> dict[str, Any]:
    """A live migration's jobStats() as libvirt 9.0 returns it (the captured key set,
    operation 5: migration out)."""
    stats: dict[str, Any] = {
        "operation": 5, "time_elapsed": 1000 * iteration, "downtime": 300, "setup_time": 4,
        "data_total": TOTAL, "data_processed": processed, "data_remaining": remaining,
        "memory_total": TOTAL, "memory_processed": processed, "memory_remaining": remaining,
        "memory_constant": 228, "memory_normal": processed // 4096,
        "memory_normal_bytes": processed, "memory_iteration": iteration,
        "memory_postcopy_requests": 0, "memory_page_size": 4096, "type": job,
    }
    if bps is not None:
        stats["memory_bps"] = bps
    if dirty_pages is not None:
        stats["memory_dirty_rate"] = dirty_pages
    stats.update(extra)
    return stats


def read(stats: dict[str, Any], previous: JobSample | None = None, at: float = 1.0,
         **kw: Any) -> JobSample:
    return JobSample.from_job_stats(stats, previous=previous, elapsed_s=at, **kw)


@pytest.mark.parametrize(("stats", "postcopy", "phase"), [
    ({"type": 0}, False, P.PREPARING),  # the job has not begun (seen before every job)
    (mig(0, 0, 0, bps=None), False, P.PREPARING),  # setup: iteration 0, all zero (seen)
    ({"type": 2, "operation": 5, "time_elapsed": 12}, False, P.PREPARING),  # no memory yet
    (mig(1, 200 * MIB, 70 * MIB), False, P.TRANSFERRING),
    (mig(2, 40 * MIB, 300 * MIB, dirty_pages=16300), False, P.ITERATING),
    (mig(35, 17 * MIB, 2118 * MIB, dirty_pages=16300), False, P.ITERATING),
    (mig(3, 0, 150 * MIB), False, P.STOPPED),  # all sent, the job still runs
    (mig(4, 20 * MIB, 320 * MIB, memory_postcopy_requests=3), False, P.POSTCOPY),
    (mig(4, 20 * MIB, 320 * MIB), True, P.POSTCOPY),  # said by the event
    (mig(3, 0, 150 * MIB, job=3), False, P.STOPPED),  # source done; not resumed yet
    (mig(3, 0, 150 * MIB, job=3), True, P.POSTCOPY),
    (mig(2, 40 * MIB, 300 * MIB, job=4, errmsg="Unable to write to socket"), False, P.FAILED),
    (mig(2, 40 * MIB, 300 * MIB, job=5), False, P.CANCELLED),
    ({"success": True, "memory_processed": 311 * MIB, "downtime": 7}, False, P.STOPPED),
    ({"success": False, "errmsg": "client socket is closed"}, False, P.FAILED),
])
def test_phase_from_job_stats(stats: dict[str, Any], postcopy: bool,
                              phase: MigrationPhase) -> None:
    assert read(stats, postcopy=postcopy).phase is phase


def test_real_managedsave_samples_go_preparing_transferring_stopped() -> None:
    seen = []
    progress = None
    for i, stats in enumerate(SAMPLES["managedsave"]):
        progress = read(stats, progress, at=i * 0.05)
        seen.append(progress.phase)
    assert seen == [P.PREPARING, P.TRANSFERRING, P.TRANSFERRING, P.STOPPED, P.STOPPED]
    assert progress is not None and progress.downtime_ms == 336 and progress.iteration == 3


def test_real_live_snapshot_setup_with_zero_remaining_is_not_stopped() -> None:
    progress = None
    seen = []
    for i, stats in enumerate(SAMPLES["live_snapshot"]):
        progress = read(stats, progress, at=i * 0.05)
        seen.append(progress.phase)
    assert seen[:3] == [P.PREPARING, P.PREPARING, P.TRANSFERRING]
    assert seen[-1] is P.STOPPED  # the trailing {"type": 0} keeps the last phase
    assert seen.index(P.STOPPED) == seen.count(P.PREPARING) + seen.count(P.TRANSFERRING)


def test_the_phase_never_goes_back_but_can_always_fail() -> None:
    resumed = read(mig(3, 0, 150 * MIB)).with_phase(P.RESUMED)
    assert read(mig(3, 0, 150 * MIB, job=3), resumed).phase is P.RESUMED
    iterating = read(mig(5, 40 * MIB, 400 * MIB, dirty_pages=100))
    assert read(mig(1, 200 * MIB, 450 * MIB), iterating).phase is P.ITERATING
    assert read(mig(5, 40 * MIB, 400 * MIB, job=4), iterating).phase is P.FAILED


def test_post_copy_stays_post_copy_until_it_ends() -> None:
    post = read(mig(4, 30 * MIB, 300 * MIB), postcopy=True)
    later = read(mig(4, 10 * MIB, 320 * MIB), post)  # the caller forgot the flag
    assert later.phase is P.POSTCOPY
    assert read(mig(4, 0, 330 * MIB, job=3), later).phase is P.POSTCOPY


def test_a_job_gone_from_libvirt_keeps_the_last_sample_at_the_new_time() -> None:
    last = read(mig(5, 40 * MIB, 400 * MIB, dirty_pages=100), at=5.0)
    gone = read({"type": 0}, last, at=6.0)
    assert gone.phase is P.ITERATING and gone.at_s == 6.0
    assert gone.memory_processed == last.memory_processed


def test_bandwidth_is_measured_from_the_previous_sample_until_libvirt_has_one() -> None:
    first = read(mig(1, 250 * MIB, 10 * MIB, bps=None), at=1.0)
    assert first.bandwidth is None
    second = read(mig(1, 220 * MIB, 40 * MIB, bps=None), first, at=1.5)
    assert second.bandwidth == pytest.approx(60 * MIB)
    third = read(mig(1, 200 * MIB, 60 * MIB, bps=64 * MIB), second, at=2.0)
    assert third.bandwidth == 64 * MIB


def test_dirty_rate_is_pages_times_page_size() -> None:
    progress = read(mig(3, 40 * MIB, 300 * MIB, dirty_pages=16300))
    assert progress.dirty_rate == 16300 * 4096  # 63.7 MiB/s: the recipe's `dirty 64`
    huge = read(mig(3, 40 * MIB, 300 * MIB, dirty_pages=10, memory_page_size=2 * MIB))
    assert huge.dirty_rate == 20 * MIB


@pytest.mark.parametrize(("stats", "postcopy", "eta"), [
    (mig(1, 128 * MIB, 128 * MIB, dirty_pages=0), False, 2.0),  # 128 MiB at 64 MiB/s
    (mig(3, 32 * MIB, 300 * MIB, dirty_pages=4096), False, 32 / 48),  # 64 - 16 MiB/s
    (mig(3, 32 * MIB, 300 * MIB, dirty_pages=16384), False, None),  # dirtied as sent
    (mig(3, 32 * MIB, 300 * MIB, bps=None), False, None),  # bandwidth unknown
    (mig(4, 32 * MIB, 300 * MIB, dirty_pages=16384), True, 0.5),  # post-copy: no dirtying
])
def test_eta(stats: dict[str, Any], postcopy: bool, eta: float | None) -> None:
    found = read(stats, postcopy=postcopy).eta_s
    assert found == (pytest.approx(eta) if eta is not None else None)


def test_fraction_is_what_is_clean_at_the_destination() -> None:
    assert read(mig(1, TOTAL // 4, 50 * MIB)).fraction == pytest.approx(0.75)
    assert read(mig(3, 0, 150 * MIB)).fraction == 1.0
    assert read({"type": 0}).fraction is None
    with_disk = read(mig(1, 0, 0, disk_total=100 * MIB, disk_remaining=50 * MIB,
                         memory_remaining=TOTAL))
    assert with_disk.fraction == pytest.approx(50 * MIB / (TOTAL + 100 * MIB))


@pytest.mark.parametrize(("progress", "text"), [
    (read({"type": 0}), "preparing destination"),
    (read(mig(1, 187 * MIB, 86 * MIB, bps=280 * MIB)),
     "transferring memory: 86 of 273 MiB sent, 187 MiB left, 280 MiB/s, ETA 1 s"),
    (read(mig(7, 40 * MIB, 612 * MIB, dirty_pages=15872, auto_converge_throttle=20)),
     "iterating dirty pages, iteration 7: 233 of 273 MiB sent (612 MiB with re-sends), "
     "40 MiB left, dirty 62 MiB/s vs 64 MiB/s, throttle 20 %, ETA 20 s"),
    (read(mig(9, 40 * MIB, 612 * MIB, dirty_pages=16384)),
     "iterating dirty pages, iteration 9: 233 of 273 MiB sent (612 MiB with re-sends), "
     "40 MiB left, dirty 64 MiB/s vs 64 MiB/s, ETA unknown: dirtied as fast as sent"),
    (read(mig(3, 0, 150 * MIB)),
     "stopped at source, moving device state: 273 of 273 MiB sent, 64 MiB/s"),
    (read(mig(4, 73 * MIB, 300 * MIB, memory_postcopy_requests=3)),
     "post-copy, running at destination: 200 of 273 MiB sent (300 MiB with re-sends), "
     "73 MiB left, 3 page requests, 64 MiB/s, ETA 2 s"),
    (read(mig(40, 0, 2118 * MIB, job=3, time_elapsed=33500, downtime=39))
     .with_phase(P.COMPLETED),
     "completed: 2118 MiB sent in 33.5 s, downtime 39 ms, 40 iterations, 64 MiB/s"),
    (read(mig(5, 0, 300 * MIB, job=3, time_elapsed=4200, downtime=7,
              dirty_pages=4096)).with_phase(P.COMPLETED),
     "completed: 300 MiB sent in 4.2 s, downtime 7 ms, 5 iterations, "
     "dirty 16 MiB/s vs 64 MiB/s"),
    (read(mig(2, 40 * MIB, 300 * MIB, job=4, errmsg="client socket is closed")),
     "failed: client socket is closed"),
    (read(mig(2, 40 * MIB, 300 * MIB, job=5)), "cancelled"),
])
def test_describe_reads_as_one_line(progress: JobSample, text: str) -> None:
    assert progress.describe() == text


def test_as_dict_is_one_json_line_with_the_text() -> None:
    progress = read(mig(7, 40 * MIB, 612 * MIB, dirty_pages=15872), at=7.25)
    line = json.loads(json.dumps(progress.as_dict()))
    assert line["phase"] == "iterating" and line["phase_label"] == "iterating dirty pages"
    assert line["iteration"] == 7 and line["at_s"] == 7.25
    assert line["memory_remaining"] == 40 * MIB and line["bandwidth"] == 64 * MIB
    assert line["dirty_rate"] == 15872 * 4096 and line["eta_s"] == 20.0
    assert line["text"] == progress.describe()


def test_phases_are_ordered_and_labelled_in_the_operators_words() -> None:
    assert [p.label for p in P][:5] == [
        "preparing destination", "transferring memory", "iterating dirty pages",
        "stopped at source, moving device state", "post-copy, running at destination"]
    assert [p.rank for p in P] == sorted(p.rank for p in P)
    assert {p for p in P if p.is_final} == {P.COMPLETED, P.FAILED, P.CANCELLED}
