"""The verdicts of ``services.migration.ending``, pinned where mutation testing (mutmut
3.3.1) found them loose.

Each test failed on at least one surviving mutant: a journal outcome (``error`` /
``interrupted`` / ``ok``) or a ``settled`` flag the other tests never read, a host named
in a verdict, a source the sightings left out, three hosts, the post-copy conditions an
operator would see as "completed" or "failed" when neither is true, and the texts an
operator reads in the journal or the refusal, in full.
"""

from __future__ import annotations

import pytest

from virtlife.services.migration.ending import (
    Ending,
    Settle,
    Sighting,
    postcopy_settle,
    resume_refusal,
    unconfirmed_message,
    where_now,
)
from virtlife.services.migration.phases import MigrationPhase
from virtlife.states import VMState

RUNNING_A = Sighting("lab-a", state=VMState.RUNNING, reason="booted")
RUNNING_B = Sighting("lab-b", state=VMState.RUNNING, reason="migrated")
RUNNING_C = Sighting("lab-c", state=VMState.RUNNING, reason="booted")
GONE_A = Sighting("lab-a")
GONE_B = Sighting("lab-b")
SILENT_A = Sighting("lab-a", answered=False, why="refused")
SILENT_B = Sighting("lab-b", answered=False, why="timed out")
PC_FAILED_A = Sighting("lab-a", state=VMState.PAUSED, reason="post-copy failed",
                       job="migration")
PC_FAILED_B = Sighting("lab-b", state=VMState.PAUSED, reason="post-copy failed")


# -- where_now: the source left out of the sightings ---------------------------------------

def test_a_source_not_in_the_sightings_counts_as_not_asked() -> None:
    verdict = where_now("web1", "lab-a", [RUNNING_B])
    # running at lab-b, but the source may run it too: never "completed"
    assert (verdict.ending, verdict.outcome, verdict.settled, verdict.at) == (
        Ending.UNKNOWN, "error", False, "")
    assert verdict.text == ("running (migrated) at lab-b, but lab-a could not be asked "
                            "(not asked); `virtlife state lab-a/web1` once it answers")


def test_nothing_running_and_the_source_not_in_the_sightings_is_unknown_not_aborted() -> None:
    verdict = where_now("web1", "lab-a", [GONE_B])
    assert (verdict.ending, verdict.outcome, verdict.settled) == (
        Ending.UNKNOWN, "error", False)
    assert verdict.text == ("not known where it runs: lab-a could not be asked (not "
                            "asked); `virtlife state web1` once they answer")


def test_the_silent_source_is_named_first_and_once() -> None:
    verdict = where_now("web1", "lab-a", [SILENT_B, SILENT_A])
    assert (verdict.ending, verdict.outcome, verdict.settled) == (
        Ending.UNKNOWN, "error", False)
    assert verdict.text == ("not known where it runs: lab-a could not be asked (refused), "
                            "lab-b could not be asked (timed out); `virtlife state web1` "
                            "once they answer")


# -- where_now: each ending's outcome, host and text ----------------------------------------

def test_an_incoming_migration_job_at_the_destination_still_runs() -> None:
    incoming = Sighting("lab-b", state=VMState.PAUSED, reason="migration",
                        job="incoming migration")
    verdict = where_now("web1", "lab-a", [GONE_A, incoming])
    assert (verdict.ending, verdict.outcome, verdict.settled) == (
        Ending.RUNNING, "interrupted", False)
    assert verdict.text == ("the migration still runs at lab-b (libvirt's incoming "
                            "migration job), with no virtlife process watching it; "
                            "`virtlife migrate-abort lab-a/web1` ends it, keeping it at lab-a")


def test_a_post_copy_failed_at_the_source_alone_names_the_destination_to_resume_to() -> None:
    verdict = where_now("web1", "lab-a", [PC_FAILED_A, SILENT_B])
    assert (verdict.ending, verdict.outcome, verdict.settled) == (
        Ending.POSTCOPY_FAILED, "error", False)
    assert verdict.text == ("post-copy failed: paused (post-copy failed) at lab-a; its "
                            "memory is split between the hosts; once the link is back: "
                            "virtlife migrate lab-a/web1 lab-b --postcopy-resume")
    # no other host seen at all: a placeholder, never a host it did not go to
    alone = where_now("web1", "lab-a", [PC_FAILED_A])
    assert alone.text.endswith("virtlife migrate lab-a/web1 DEST --postcopy-resume")


def test_active_at_the_source_and_elsewhere_is_a_settled_error() -> None:
    verdict = where_now("web1", "lab-a", [RUNNING_A, RUNNING_B])
    assert (verdict.ending, verdict.outcome, verdict.settled, verdict.at) == (
        Ending.TWICE, "error", True, "")
    assert verdict.text == ("active at two hosts: running (booted) at lab-a and running "
                            "(migrated) at lab-b; destroy one copy")


def test_active_at_two_other_hosts_is_twice_not_completed_at_the_first() -> None:
    verdict = where_now("web1", "lab-a", [GONE_A, RUNNING_B, RUNNING_C])
    assert (verdict.ending, verdict.outcome, verdict.settled, verdict.at) == (
        Ending.TWICE, "error", True, "")
    assert verdict.text == ("active at two hosts: running (migrated) at lab-b, running "
                            "(booted) at lab-c; destroy one copy")


def test_an_aborted_move_says_the_vm_stays_at_the_source() -> None:
    verdict = where_now("web1", "lab-a", [RUNNING_A, GONE_B])
    assert (verdict.ending, verdict.at) == (Ending.ABORTED, "lab-a")


def test_running_nowhere_is_a_settled_interruption_naming_what_each_host_has() -> None:
    off = Sighting("lab-a", state=VMState.SHUTOFF, reason="destroyed")
    verdict = where_now("web1", "lab-a", [off, GONE_B])
    assert (verdict.ending, verdict.outcome, verdict.settled, verdict.at) == (
        Ending.ABORTED, "interrupted", True, "")
    assert verdict.text == "running nowhere: shut off (destroyed) at lab-a"
    off_b = Sighting("lab-b", state=VMState.SHUTOFF, reason="migrated")
    both = where_now("web1", "lab-a", [off, off_b])
    assert both.text == ("running nowhere: shut off (destroyed) at lab-a, shut off "
                         "(migrated) at lab-b")
    assert where_now("web1", "lab-a", [GONE_A, GONE_B]).text == "running nowhere: on no host"


# -- unconfirmed_message --------------------------------------------------------------------

def test_an_unconfirmed_end_with_no_phase_seen_says_so_in_full() -> None:
    text = unconfirmed_message("web1", "lab-a", "lab-b", phase=None, libvirt_done=False,
                               at_source=GONE_A, why="cannot reach host lab-b")
    assert text == ("cannot confirm that web1 moved to lab-b: lab-b stopped answering "
                    "(cannot reach host lab-b); no phase of the job was seen; web1 is gone "
                    "from lab-a (libvirt removes it there after the switch-over); find out "
                    "with `virtlife state lab-b/web1` once lab-b answers (`virtlife history "
                    "web1` shows this move, corrected once known)")
    done = unconfirmed_message("web1", "lab-a", "lab-b", phase=MigrationPhase.STOPPED,
                               libvirt_done=True, at_source=GONE_A, why="x")
    assert "(x); libvirt at the source reported the migration done; web1 is gone" in done


# -- postcopy_settle -----------------------------------------------------------------------

def _settle(src: Sighting, dst: Sighting, *, waited: float = 1.0,
            failed_for: float = 0.0) -> tuple[Settle, str, bool]:
    found = postcopy_settle("web1", src, dst, waited_s=waited, bound_s=45.0,
                            failed_for_s=failed_for, stable_s=10.0)
    return found.settle, found.text, found.undefine_source


def test_a_post_copy_finished_by_itself_says_so_without_a_removal_when_nothing_was_left() -> None:
    assert _settle(GONE_A, RUNNING_B) == (
        Settle.COMPLETED, "the post-copy finished by itself: running (migrated) at lab-b",
        False)


def test_a_failed_destination_is_never_completed_even_with_a_silent_source() -> None:
    assert _settle(SILENT_A, PC_FAILED_B, failed_for=10.0)[0] is Settle.WAIT


def test_a_vm_still_active_at_the_source_is_not_completed_at_the_destination() -> None:
    in_postcopy_a = Sighting("lab-a", state=VMState.PAUSED, reason="post-copy")
    assert _settle(in_postcopy_a, RUNNING_B)[0] is Settle.WAIT
    assert _settle(in_postcopy_a, RUNNING_B, waited=45.0)[0] is Settle.STILL_RUNNING


@pytest.mark.parametrize("src", [GONE_A, SILENT_A], ids=["source-gone", "source-silent"])
def test_only_a_post_copy_failed_at_the_source_counts_as_failed(src: Sighting) -> None:
    assert _settle(src, SILENT_B, failed_for=10.0)[0] is Settle.WAIT
    assert _settle(src, PC_FAILED_B, failed_for=10.0)[0] is Settle.WAIT


def test_a_destination_still_taking_pages_is_not_failed_yet() -> None:
    incoming = Sighting("lab-b", state=VMState.RUNNING, reason="post-copy",
                        job="incoming migration")
    assert _settle(PC_FAILED_A, incoming, failed_for=10.0)[0] is Settle.WAIT


def test_failed_at_the_source_with_nothing_at_the_destination_is_failed_in_full() -> None:
    assert _settle(PC_FAILED_A, GONE_B, failed_for=10.0) == (
        Settle.FAILED,
        "post-copy failed: paused (post-copy failed) at lab-a, not on lab-b; its memory is "
        "split between the hosts, so it cannot run until the move ends; once lab-b is "
        "reachable again: virtlife migrate lab-a/web1 lab-b --postcopy-resume", False)


def test_unsettled_by_the_bound_with_a_silent_host_says_how_to_find_out() -> None:
    moving = Sighting("lab-a", state=VMState.PAUSED, reason="post-copy", job="migration")
    assert _settle(moving, SILENT_B, waited=45.0) == (
        Settle.UNKNOWN,
        "post-copy did not settle within 45 s: paused (post-copy) at lab-a, lab-b could "
        "not be asked (timed out); `virtlife state lab-b/web1` tells how it ends", False)


# -- resume_refusal --------------------------------------------------------------------------

def test_resume_refuses_a_migration_still_running_before_post_copy_as_still_running() -> None:
    pre_copy = Sighting("lab-a", state=VMState.RUNNING, reason="booted", job="migration")
    assert resume_refusal("web1", pre_copy, qemu_migrating=False) == (
        "cannot resume the post-copy migration of web1: it is still running (running "
        "(booted) at lab-a, QEMU still migrating), not failed; wait for it to end "
        "(`virtlife state web1`), or `virtlife migrate-abort lab-a/web1` before post-copy")


def test_resume_refuses_a_vm_not_paused_by_a_failed_post_copy_in_full() -> None:
    assert resume_refusal("web1", RUNNING_A, qemu_migrating=False) == (
        "cannot resume the post-copy migration of web1: it is running (booted) at lab-a, "
        "not paused (post-copy failed)")
