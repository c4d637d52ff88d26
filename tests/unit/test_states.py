"""The state mapping and the transition table, checked against an independent matrix."""

from __future__ import annotations

import pytest

from virtlife import states
from virtlife.errors import InvalidTransition
from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.states import (
    REASONS,
    TRANSITIONS,
    Operation,
    StateInfo,
    VMState,
    check_transition,
    classify,
    shutdown_aged,
)


def test_libvirt_state_numbers_match_the_binding() -> None:
    assert states.LV_NOSTATE == libvirt.VIR_DOMAIN_NOSTATE
    assert states.LV_RUNNING == libvirt.VIR_DOMAIN_RUNNING
    assert states.LV_BLOCKED == libvirt.VIR_DOMAIN_BLOCKED
    assert states.LV_PAUSED == libvirt.VIR_DOMAIN_PAUSED
    assert states.LV_SHUTDOWN == libvirt.VIR_DOMAIN_SHUTDOWN
    assert states.LV_SHUTOFF == libvirt.VIR_DOMAIN_SHUTOFF
    assert states.LV_CRASHED == libvirt.VIR_DOMAIN_CRASHED
    assert states.LV_PMSUSPENDED == libvirt.VIR_DOMAIN_PMSUSPENDED
    assert states.SHUTOFF_REASON_SAVED == libvirt.VIR_DOMAIN_SHUTOFF_SAVED


@pytest.mark.parametrize(("prefix", "lv_state"), [
    ("VIR_DOMAIN_RUNNING_", states.LV_RUNNING),
    ("VIR_DOMAIN_PAUSED_", states.LV_PAUSED),
    ("VIR_DOMAIN_SHUTOFF_", states.LV_SHUTOFF),
    ("VIR_DOMAIN_CRASHED_", states.LV_CRASHED),
])
def test_every_reason_libvirt_defines_has_a_name(prefix: str, lv_state: int) -> None:
    values = {getattr(libvirt, k) for k in dir(libvirt)
              if k.startswith(prefix) and not k.endswith("_LAST")}
    assert max(values) < len(REASONS[lv_state])


@pytest.mark.parametrize(("lv", "reason", "managed", "expected"), [
    (1, 1, False, "running (booted)"),
    (1, 3, False, "running (restored)"),
    (1, 8, False, "running (event wakeup)"),
    (2, 0, False, "idle (unknown)"),
    (3, 1, False, "paused (user)"),
    (3, 2, False, "paused (migrating)"),
    (4, 1, False, "in shutdown (user)"),
    (5, 1, False, "shut off (shutdown)"),
    (5, 2, False, "shut off (destroyed)"),
    (5, 3, False, "shut off (crashed)"),
    (5, 5, False, "saved (saved to file)"),
    (5, 2, True, "saved (managed save)"),
    (6, 1, False, "crashed (panicked)"),
    (7, 0, False, "pmsuspended (unknown)"),
    (0, 0, False, "dying (no state)"),
])
def test_classify_names_states_as_operators_do(lv: int, reason: int, managed: bool,
                                               expected: str) -> None:
    assert str(classify(lv, reason, has_managed_save=managed)) == expected


def test_shutdown_in_progress_becomes_dying_when_stuck() -> None:
    assert shutdown_aged(classify(4, 1), 5).state is VMState.SHUTDOWN
    stuck = shutdown_aged(classify(4, 1), 600)
    assert stuck.state is VMState.DYING
    assert "600" in stuck.reason
    assert classify(4, 1).state is VMState.SHUTDOWN  # unknown age: not dying


def test_only_a_shutdown_in_progress_can_age_into_dying() -> None:
    running = classify(1, 1)
    assert shutdown_aged(running, 600) is running


def test_unknown_reason_number_is_shown_not_hidden() -> None:
    assert classify(3, 99).reason == "reason 99"


# The matrix, written independently of states.TRANSITIONS: "x" = allowed.
# columns: undefined shutoff running shutdown paused saved idle crashed dying pmsuspended
COLUMNS = ["undefined", "shutoff", "running", "shutdown", "paused", "saved", "idle",
           "crashed", "dying", "pmsuspended"]
MATRIX = """
define              x x x x x x x x x x
start               . x . . . x . . . .
shutdown            . . x . . . x . . .
reboot              . . x . . . x . . .
reset               . . x . . . x . . .
destroy             . . x x x . x x x x
suspend             . . x . . . x . . .
resume              . . . . x . . . . .
save                . . x . x . x . . .
restore             x x . . . x . . . .
managedsave         . . x . x . x . . .
managedsave-remove  . . . . . x . . . .
pmsuspend           . . x . . . x . . .
pmwakeup            . . . . . . . . . x
undefine            . x . . . x . . . .
snapshot-create     . x x . x . x . . .
snapshot-revert     . x x . x . x x . .
snapshot-delete     . x x . x x x . . .
attach-iso          . x x . x . x . . .
detach-iso          . x x . x . x . . .
agent-enable        . x x x x x x x x x
graphics            . x x x x x x x x x
agent-freeze        . . x . . . x . . .
agent-thaw          . . x . . . x . . .
agent-set-time      . . x . . . x . . .
agent-set-password  . . x . . . x . . .
agent-exec          . . x . . . x . . .
agent-command       . . x . . . x . . .
migrate             . . x . x . x . . .
migrate-offline     . x . . . . . . . .
migrate-abort       . . x . x . x . . .
migrate-resume      . . . . x . . . . .
"""


def _matrix() -> dict[Operation, set[VMState]]:
    table = {}
    for line in MATRIX.strip().splitlines():
        op, *cells = line.split()
        marks = zip(COLUMNS, cells, strict=True)
        table[Operation(op)] = {VMState(c) for c, mark in marks if mark == "x"}
    return table


def test_matrix_covers_every_operation_and_state() -> None:
    assert set(_matrix()) == set(Operation)
    assert set(COLUMNS) == {s.value for s in VMState}


@pytest.mark.parametrize("op", list(Operation))
@pytest.mark.parametrize("state", list(VMState))
def test_transition_table_matches_matrix(op: Operation, state: VMState) -> None:
    allowed = state in _matrix()[op]
    # "saved" here is the managed-save case; the saved-to-file case has its own tests
    current = StateInfo(state, states.REASON_MANAGED_SAVE if state is VMState.SAVED else "r")
    if allowed:
        assert check_transition(op, "web1", current) is TRANSITIONS[op]
    else:
        with pytest.raises(InvalidTransition) as err:
            check_transition(op, "web1", current)
        assert str(err.value).startswith(f"cannot {op.value} web1: ")


def test_refusal_reads_as_one_clear_line() -> None:
    with pytest.raises(InvalidTransition) as err:
        check_transition(Operation.RESUME, "web1", StateInfo(VMState.RUNNING, "booted"))
    assert str(err.value) == "cannot resume web1: it is running, not paused"


def test_refusal_suggests_what_to_do_instead() -> None:
    with pytest.raises(InvalidTransition) as err:
        check_transition(Operation.START, "web1", StateInfo(VMState.PAUSED, "user"))
    assert str(err.value) == (
        "cannot start web1: it is paused, not shut off or saved; resume it instead")


def test_refusal_of_an_undefined_vm_says_so() -> None:
    with pytest.raises(InvalidTransition, match="cannot start web1: it is not defined"):
        check_transition(Operation.START, "web1", states.UNDEFINED)


def test_active_states_are_the_ones_with_a_qemu_process() -> None:
    inactive = {s for s in VMState if not s.is_active}
    assert inactive == {VMState.UNDEFINED, VMState.SHUTOFF, VMState.SAVED}


def test_a_state_never_equals_an_operation_or_a_string() -> None:
    assert VMState.SHUTDOWN != Operation.SHUTDOWN
    assert VMState.RUNNING != "running"
    assert VMState("running") is VMState.RUNNING


SAVED_MANAGED = StateInfo(VMState.SAVED, states.REASON_MANAGED_SAVE)
SAVED_FILE = StateInfo(VMState.SAVED, states.REASON_SAVED_TO_FILE)


def test_saved_names_its_two_cases() -> None:
    assert SAVED_MANAGED.save_kind is states.SaveKind.MANAGED
    assert SAVED_FILE.save_kind is states.SaveKind.TO_FILE
    assert StateInfo(VMState.SHUTOFF, "saved").save_kind is None


def test_resume_of_a_managed_save_says_start_restores_it() -> None:
    with pytest.raises(InvalidTransition) as err:
        check_transition(Operation.RESUME, "web1", SAVED_MANAGED)
    assert str(err.value) == (
        "cannot resume web1: it is saved (managed save), not paused; "
        "start it to restore its saved RAM (managedsave-remove discards it)")


def test_resume_of_a_vm_saved_to_a_file_says_restore_brings_it_back() -> None:
    with pytest.raises(InvalidTransition) as err:
        check_transition(Operation.RESUME, "web1", SAVED_FILE)
    assert str(err.value) == (
        "cannot resume web1: it is saved (saved to file), not paused; "
        "restore its save file to bring it back (start boots it afresh)")


def test_managedsave_remove_of_a_vm_saved_to_a_file_is_refused() -> None:
    assert check_transition(Operation.MANAGEDSAVE_REMOVE, "web1", SAVED_MANAGED)
    with pytest.raises(InvalidTransition, match="saved to a file and has no managed-save"):
        check_transition(Operation.MANAGEDSAVE_REMOVE, "web1", SAVED_FILE)


def test_start_is_allowed_in_both_saved_cases() -> None:
    assert check_transition(Operation.START, "web1", SAVED_FILE)
    assert check_transition(Operation.START, "web1", SAVED_MANAGED)


@pytest.mark.parametrize(("kind", "word"), [
    (states.ShutdownMode, "agent"), (states.ShutdownMode, "acpi"),
    (states.PMTarget, "disk")])
def test_parse_enum_takes_the_cli_words(kind: type, word: str) -> None:
    assert states.parse_enum(kind, word, "mode") is kind(word)


def test_parse_enum_refuses_an_unknown_word_naming_the_accepted_ones() -> None:
    from virtlife.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        states.parse_enum(states.ShutdownMode, "hard", "shutdown mode")
    assert str(err.value) == "unknown shutdown mode 'hard': use one of auto, agent, acpi, default"
    assert err.value.exit_code == 64
