"""The shutdown/reboot ladder as plain policy: steps, bounds, fallback, force, messages."""

from __future__ import annotations

import pytest

from virtlife import errors
from virtlife.services import ladder
from virtlife.services.ladder import STEPS, Climb, Step, climb
from virtlife.states import ShutdownMode


class Clock:
    """The ladder's clock: a waiting step spends its whole bound, a winning one 1 s."""

    now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ladder, "time", fake)
    return fake


class Guest:
    """A scripted guest: which requests can be asked, and which one it obeys."""

    def __init__(self, refuse: dict[Step, str | errors.VirtlifeError] | None = None,
                 obeys: Step | None = None, ask_s: dict[Step, float] | None = None) -> None:
        self.refuse = refuse or {}
        self.obeys = obeys
        self.ask_s = ask_s or {}  # how long asking takes (an agent's answer timeout)
        self.asked: list[Step] = []
        self.bounds: list[float] = []
        self.shares: list[float] = []
        self.forced = False

    def ask(self, step: Step, share: float = 0.0) -> str | errors.VirtlifeError | None:
        self.asked.append(step)
        self.shares.append(share)
        Clock.now += self.ask_s.get(step, 0.0)
        return self.refuse.get(step)

    def settled(self, seconds: float) -> bool:
        self.bounds.append(seconds)
        obeyed = self.obeys is not None and self.asked[-1] is self.obeys
        Clock.now += 1.0 if obeyed else seconds
        return obeyed

    def force(self) -> None:
        self.forced = True


def run(guest: Guest, mode: ShutdownMode = ShutdownMode.AUTO, *, total: float = 90,
        force: bool = False, fallback: Step | None = None) -> Climb:
    return climb(STEPS[mode], total, ask=guest.ask, settled=guest.settled,
                 force=guest.force if force else None, what="power off", vm="web1",
                 fallback=fallback)


def test_the_modes_name_their_steps_in_order() -> None:
    assert STEPS[ShutdownMode.AUTO] == (Step.AGENT, Step.ACPI, Step.ACPI_AGAIN)
    assert STEPS[ShutdownMode.AGENT] == (Step.AGENT,)
    assert STEPS[ShutdownMode.ACPI] == (Step.ACPI, Step.ACPI_AGAIN)
    assert STEPS[ShutdownMode.DEFAULT] == (Step.LIBVIRT,)
    assert set(STEPS) == set(ShutdownMode)


def test_the_agent_step_wins_and_nothing_else_is_asked() -> None:
    guest = Guest(obeys=Step.AGENT)
    result = run(guest)
    assert guest.asked == [Step.AGENT]
    assert guest.bounds == [pytest.approx(30, abs=0.5)]  # a third of the time: 3 steps
    assert result.winner is not None and result.winner.step is Step.AGENT
    assert result.note("powered off").startswith("powered off by the guest agent after ")
    assert "(" not in result.note("powered off")  # no earlier step failed


def test_a_missing_agent_costs_no_wait_and_gives_its_time_to_the_acpi_presses() -> None:
    guest = Guest(refuse={Step.AGENT: "no agent listens in the guest"}, obeys=Step.ACPI)
    result = run(guest)
    assert guest.asked == [Step.AGENT, Step.ACPI]
    assert guest.bounds == [pytest.approx(45, abs=0.5)]  # what is left, over 2 steps
    note = result.note("powered off")
    assert note.startswith("powered off by the ACPI button after ")
    assert note.endswith("(guest agent: no agent listens in the guest)")


def test_the_second_press_wins_when_the_first_is_ignored() -> None:
    guest = Guest(obeys=Step.ACPI_AGAIN)
    result = run(guest, ShutdownMode.ACPI, total=60)
    assert guest.asked == [Step.ACPI, Step.ACPI_AGAIN]
    assert guest.bounds[0] == pytest.approx(30, abs=0.5)
    assert guest.bounds[1] == pytest.approx(30, abs=0.5)
    assert [a.outcome for a in result.attempts] == ["asked; no power off within 30 s",
                                                    "worked"]
    assert "a second press of the ACPI button" in result.note("powered off")


def test_a_guest_that_ignores_everything_times_out_and_is_left_alone() -> None:
    guest = Guest(refuse={Step.AGENT: "not connected"})
    with pytest.raises(errors.OperationTimeout) as err:
        run(guest, total=10)
    assert not guest.forced
    message = str(err.value)
    assert message.startswith("web1 did not power off within 10 s: guest agent: not "
                              "connected; ACPI button: asked; no power off within 5 s; "
                              "ACPI button, again: asked; no power off within 5 s")
    assert "add --force" in message and "virtlife destroy web1" in message


def test_force_ends_it_after_every_step_was_ignored() -> None:
    guest = Guest()
    result = run(guest, total=9, force=True)
    assert guest.forced
    assert [a.step for a in result.attempts] == [Step.AGENT, Step.ACPI, Step.ACPI_AGAIN,
                                                 Step.FORCE]
    note = result.note("powered off")
    assert note.startswith("powered off by force after ")
    assert "guest agent: asked; no power off within 3 s" in note


def test_force_is_not_used_while_a_step_works() -> None:
    guest = Guest(obeys=Step.ACPI)
    run(guest, force=True)
    assert not guest.forced


def test_nothing_askable_falls_back_once_on_libvirts_way_for_auto() -> None:
    refuse = {Step.AGENT: "no agent", Step.ACPI: "no button", Step.ACPI_AGAIN: "no button"}
    guest = Guest(refuse=refuse, obeys=Step.LIBVIRT)
    result = run(guest, fallback=Step.LIBVIRT)
    assert guest.asked[-1] is Step.LIBVIRT
    assert result.note("powered off").startswith(
        "powered off by the method libvirt chose after ")


def test_nothing_askable_is_unsupported_and_never_forced() -> None:
    refuse = {Step.AGENT: "no agent"}
    guest = Guest(refuse=refuse)
    with pytest.raises(errors.Unsupported, match=r"^cannot power off web1: guest agent: no "
                                                 r"agent$"):
        run(guest, ShutdownMode.AGENT, force=True)
    assert not guest.forced and guest.asked == [Step.AGENT]  # agent mode never falls back


def test_a_fallback_that_is_ignored_times_out() -> None:
    refuse = {Step.AGENT: "no agent", Step.ACPI: "no", Step.ACPI_AGAIN: "no"}
    guest = Guest(refuse=refuse)
    with pytest.raises(errors.OperationTimeout, match="libvirt's choice: asked"):
        run(guest, total=1, fallback=Step.LIBVIRT)


def test_attempts_as_json() -> None:
    guest = Guest(refuse={Step.AGENT: "no agent"}, obeys=Step.ACPI,
                  ask_s={Step.AGENT: 2.5})
    data = run(guest).as_dict()
    # a step that failed took its own time; the one that worked, the time since the start
    assert data == [{"step": "guest agent", "outcome": "no agent", "seconds": 2.5},
                    {"step": "ACPI button", "outcome": "worked", "seconds": 3.5}]


def test_each_step_says_how_long_it_took() -> None:
    guest = Guest(ask_s={Step.AGENT: 0.5})
    result = run(guest, total=9.5, force=True)
    # each step has a third: asking the agent spent 0.5 s of its own share
    third = pytest.approx(9.5 / 3)
    assert [(a.step, a.seconds) for a in result.attempts] == [
        (Step.AGENT, third), (Step.ACPI, third), (Step.ACPI_AGAIN, third),
        (Step.FORCE, 9.5)]
    assert guest.bounds == [pytest.approx(9.5 / 3 - 0.5), third, third]
    assert result.note("powered off").startswith("powered off by force after 9.5 s (")


def test_asking_spends_the_step_s_own_share_and_the_next_step_keeps_its_own() -> None:
    # a hung agent: its ping and request are cut off at the step's share (30 s here)
    hung = errors.AgentTimeout("cannot ping: the guest agent did not answer within 30 s")
    guest = Guest(refuse={Step.AGENT: hung}, ask_s={Step.AGENT: 30.0}, obeys=Step.ACPI)
    result = run(guest, total=90)
    assert guest.shares == [pytest.approx(30), pytest.approx(30)]
    assert guest.bounds == [pytest.approx(30)]  # the ACPI press waits its whole share
    assert result.winner is not None and result.winner.step is Step.ACPI
    assert result.note("powered off").endswith(
        "(guest agent: the guest agent did not answer within 30 s)")


def test_a_hung_agent_in_agent_mode_is_a_timeout_and_a_missing_one_unavailable() -> None:
    hung = errors.AgentTimeout("cannot ping web1: the guest agent did not answer in time")
    with pytest.raises(errors.AgentTimeout) as caught:
        run(Guest(refuse={Step.AGENT: hung}), ShutdownMode.AGENT, force=True)
    assert caught.value.exit_code == 5
    assert str(caught.value) == ("cannot power off web1: guest agent: the guest agent did "
                                 "not answer in time")
    gone = errors.AgentNotConnected("cannot ping web1: no agent listens in the guest; "
                                    "install it")
    with pytest.raises(errors.AgentNotConnected) as missing:
        run(Guest(refuse={Step.AGENT: gone}), ShutdownMode.AGENT)
    assert missing.value.exit_code == 8
    # a driver without any way to ask is still unsupported
    with pytest.raises(errors.Unsupported):
        run(Guest(refuse={Step.AGENT: errors.Unsupported("cannot: no agent here")}),
            ShutdownMode.AGENT)


def test_the_fallback_says_how_long_it_took() -> None:
    refuse = {Step.AGENT: "no agent", Step.ACPI: "no", Step.ACPI_AGAIN: "no"}
    result = run(Guest(refuse=refuse, obeys=Step.LIBVIRT), fallback=Step.LIBVIRT)
    assert result.attempts[-1].seconds == 1.0
    result = run(Guest(refuse=refuse), total=4, fallback=Step.LIBVIRT, force=True)
    assert [(a.step, a.outcome, a.seconds) for a in result.attempts[-2:]] == [
        (Step.LIBVIRT, "asked; no power off within the time left", 4.0),
        (Step.FORCE, "worked", 4.0)]
    assert result.note("powered off") == (
        "powered off by force after 4.0 s (guest agent: no agent; ACPI button: no; "
        "ACPI button, again: no; libvirt's choice: asked; no power off within the time "
        "left)")


def test_a_refused_fallback_is_unsupported_without_waiting() -> None:
    refuse = {Step.AGENT: "no agent", Step.ACPI: "no", Step.ACPI_AGAIN: "no",
              Step.LIBVIRT: "not this driver"}
    guest = Guest(refuse=refuse)
    # the fallback's own reason is said too
    with pytest.raises(errors.Unsupported, match=r"^cannot power off web1: guest agent: no "
                                                 r"agent; ACPI button: no; ACPI button, "
                                                 r"again: no; libvirt's choice: not this "
                                                 r"driver$"):
        run(guest, force=True, fallback=Step.LIBVIRT)
    assert guest.asked[-1] is Step.LIBVIRT and guest.bounds == [] and not guest.forced


def test_an_ask_that_used_up_the_time_leaves_no_wait_for_the_steps_after_it() -> None:
    guest = Guest(ask_s={Step.AGENT: 20.0})  # an agent that hangs past the whole timeout
    with pytest.raises(errors.OperationTimeout):
        run(guest, total=10)
    assert guest.bounds == [0.0, 0.0, 0.0]
