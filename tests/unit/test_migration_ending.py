"""The pure verdicts of ``services.migration.ending`` (issue 15, E, F and I): where a
migration left the VM when no process saw it end, what is known when the destination
stops answering, and when a failed post-copy has settled."""

from __future__ import annotations

import pytest

from virtlife.services.migration.ending import (
    UNCONFIRMED,
    Ending,
    Settle,
    Sighting,
    after_death,
    confirmed_later,
    postcopy_settle,
    resume_refusal,
    unconfirmed_message,
    where_now,
)
from virtlife.services.migration.phases import MigrationPhase
from virtlife.states import VMState

RUNNING_B = Sighting("lab-b", state=VMState.RUNNING, reason="migrated")
RUNNING_A = Sighting("lab-a", state=VMState.RUNNING, reason="booted")
GONE_A = Sighting("lab-a")
GONE_B = Sighting("lab-b")
SILENT_B = Sighting("lab-b", answered=False, why="lab-b did not answer over the network")
PC_FAILED_A = Sighting("lab-a", state=VMState.PAUSED, reason="post-copy failed",
                       job="migration")
PC_FAILED_B = Sighting("lab-b", state=VMState.PAUSED, reason="post-copy failed")


def test_a_move_that_ended_after_its_process_died_is_recorded_as_completed() -> None:
    verdict = where_now("web1", "lab-a", [GONE_A, RUNNING_B])
    assert (verdict.ending, verdict.settled, verdict.at) == (Ending.COMPLETED, True, "lab-b")
    assert after_death(verdict) == (
        "ok", "completed after its process died: running (migrated) at lab-b")


def test_a_kept_source_definition_is_named_in_the_completed_verdict() -> None:
    kept = Sighting("lab-a", state=VMState.SHUTOFF, reason="migrated")
    verdict = where_now("web1", "lab-a", [kept, RUNNING_B])
    assert verdict.ending is Ending.COMPLETED
    assert "a shut off (migrated) at lab-a definition remains" in verdict.text


def test_a_vm_still_at_its_source_with_no_job_was_aborted() -> None:
    verdict = where_now("web1", "lab-a", [RUNNING_A, GONE_B])
    assert (verdict.ending, verdict.outcome, verdict.settled) == (
        Ending.ABORTED, "interrupted", True)
    outcome, detail = after_death(verdict)
    assert outcome == "interrupted"
    assert detail == ("its process ended while it ran; aborted: running (booted) at lab-a, "
                      "the migration over")


def test_a_migration_job_still_running_is_said_and_left_to_look_at_again() -> None:
    moving = Sighting("lab-a", state=VMState.RUNNING, reason="booted", job="migration")
    verdict = where_now("web1", "lab-a", [moving, SILENT_B])
    assert (verdict.ending, verdict.settled) == (Ending.RUNNING, False)
    assert "still runs at lab-a" in verdict.text
    assert "virtlife migrate-abort lab-a/web1" in verdict.text
    outcome, detail = after_death(verdict)
    assert outcome == "interrupted" and detail.endswith(UNCONFIRMED)


def test_a_failed_post_copy_is_not_an_end_and_says_how_to_resume() -> None:
    verdict = where_now("web1", "lab-a", [PC_FAILED_A, PC_FAILED_B])
    assert (verdict.ending, verdict.settled) == (Ending.POSTCOPY_FAILED, False)
    assert "virtlife migrate lab-a/web1 lab-b --postcopy-resume" in verdict.text


def test_gone_from_the_source_and_a_silent_destination_is_unknown() -> None:
    verdict = where_now("web1", "lab-a", [GONE_A, SILENT_B])
    assert (verdict.ending, verdict.settled) == (Ending.UNKNOWN, False)
    assert "lab-b could not be asked" in verdict.text


def test_running_at_the_destination_with_a_silent_source_is_not_called_completed() -> None:
    silent_a = Sighting("lab-a", answered=False, why="refused")
    verdict = where_now("web1", "lab-a", [silent_a, RUNNING_B])
    assert (verdict.ending, verdict.settled) == (Ending.UNKNOWN, False)


def test_active_at_two_hosts_is_said_never_guessed() -> None:
    verdict = where_now("web1", "lab-a", [RUNNING_A, RUNNING_B])
    assert verdict.ending is Ending.TWICE and verdict.outcome == "error"


def test_a_correction_keeps_what_the_command_had_said() -> None:
    verdict = where_now("web1", "lab-a", [GONE_A, RUNNING_B])
    outcome, detail = confirmed_later(verdict, f"cannot confirm ... {UNCONFIRMED}")
    assert outcome == "ok"
    assert detail == ("completed: running (migrated) at lab-b (confirmed later; first "
                      "recorded: cannot confirm ...)")


@pytest.mark.parametrize(("at_source", "says"), [
    (GONE_A, "web1 is gone from lab-a"),
    (RUNNING_A, "web1 is still running (booted) at lab-a"),
    (Sighting("lab-a", answered=False, why="refused"), "lab-a could not be asked either"),
])
def test_an_unconfirmed_end_says_the_phase_the_source_and_what_to_run(
        at_source: Sighting, says: str) -> None:
    text = unconfirmed_message("web1", "lab-a", "lab-b", phase=MigrationPhase.STOPPED,
                               libvirt_done=False, at_source=at_source,
                               why="cannot reach host lab-b")
    assert text.startswith("cannot confirm that web1 moved to lab-b: lab-b stopped "
                           "answering (cannot reach host lab-b)")
    assert "the job's last phase seen: stopped at source, moving device state" in text
    assert says in text
    assert "`virtlife state lab-b/web1` once lab-b answers" in text
    done = unconfirmed_message("web1", "lab-a", "lab-b", phase=None, libvirt_done=True,
                               at_source=GONE_A, why="x")
    assert "libvirt at the source reported the migration done" in done


# -- a failed post-copy: settled or not ---------------------------------------------------

def _settle(src: Sighting, dst: Sighting, *, waited: float = 1.0,
            failed_for: float = 0.0) -> tuple[Settle, str, bool]:
    found = postcopy_settle("web1", src, dst, waited_s=waited, bound_s=45.0,
                            failed_for_s=failed_for, stable_s=10.0)
    return found.settle, found.text, found.undefine_source


def test_a_post_copy_that_finished_by_itself_is_completed_and_the_stale_source_goes() -> None:
    stale = Sighting("lab-a", state=VMState.SHUTOFF, reason="migrated")
    settle, text, undefine = _settle(stale, RUNNING_B)
    assert (settle, undefine) == (Settle.COMPLETED, True)
    assert "finished by itself: running (migrated) at lab-b" in text
    assert _settle(GONE_A, RUNNING_B)[::2] == (Settle.COMPLETED, False)


def test_post_copy_failed_counts_only_once_it_held() -> None:
    assert _settle(PC_FAILED_A, PC_FAILED_B, failed_for=3.0)[0] is Settle.WAIT
    settle, text, _ = _settle(PC_FAILED_A, PC_FAILED_B, failed_for=10.0)
    assert settle is Settle.FAILED and "--postcopy-resume" in text


def test_a_destination_still_moving_pages_is_waited_for_then_said_still_running() -> None:
    in_postcopy_a = Sighting("lab-a", state=VMState.PAUSED, reason="post-copy",
                             job="migration")
    in_postcopy_b = Sighting("lab-b", state=VMState.RUNNING, reason="post-copy",
                             job="incoming migration")
    assert _settle(in_postcopy_a, in_postcopy_b)[0] is Settle.WAIT
    settle, text, _ = _settle(in_postcopy_a, in_postcopy_b, waited=45.0)
    assert settle is Settle.STILL_RUNNING and "QEMU may still finish it" in text
    assert _settle(in_postcopy_a, SILENT_B, waited=45.0)[0] is Settle.UNKNOWN


def test_postcopy_resume_tells_still_running_from_failed() -> None:
    assert resume_refusal("web1", PC_FAILED_A, qemu_migrating=False) is None
    still = resume_refusal("web1", PC_FAILED_A, qemu_migrating=True)
    assert still is not None and "it is still running" in still and "not failed" in still
    other = resume_refusal("web1", RUNNING_A, qemu_migrating=False)
    assert other is not None and "not paused (post-copy failed)" in other
