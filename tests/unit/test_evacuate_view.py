"""``cli.evacuate_view``: one row per VM with its phase and its migration's percent, and
the overall line, on a terminal; one line per change elsewhere, a migration's progress
at each quarter only."""

from __future__ import annotations

import io

from rich.console import Console

from virtlife.cli.evacuate_view import EvacuationView
from virtlife.services.progress import Update

OP = "0123456789ab"


def step(vm: str, outcome: str, to: str | None, reason: str = "") -> Update:
    return Update(vm, "step", f"{vm}: {outcome}", None, OP,
                  {"vm": vm, "to": to, "outcome": outcome, "reason": reason})


def progress(vm: str, fraction: float) -> Update:
    return Update(vm, "progress", "transferring memory", fraction, "child",
                  {"phase_label": "transferring memory"})


UPDATES = [
    Update("lab-a", "plan", "evacuating lab-a (operation 0123456789ab): 2 of 3 VM(s) have "
           "a destination", None, OP),
    step("db1", "left", None, "db1 cannot go to lab-b: not enough memory"),
    step("web1", "moving", "lab-b"),
    progress("web1", 0.10), progress("web1", 0.12), progress("web1", 0.30),
    step("web1", "moved", "lab-b"),
    Update("lab-a", "overall", "lab-a: 1 moved, 0 failed, 1 left; 0 moving, 0 waiting",
           0.66, OP),
]


def test_elsewhere_each_change_is_a_line_and_progress_only_at_each_quarter() -> None:
    out = io.StringIO()
    with EvacuationView(Console(file=out, force_terminal=False, width=200)) as view:
        assert not view.live_mode
        for update in UPDATES:
            view(update)
    assert out.getvalue().splitlines() == [
        "evacuating lab-a (operation 0123456789ab): 2 of 3 VM(s) have a destination",
        "db1: left", "web1: moving",
        "web1: transferring memory 10%", "web1: transferring memory 30%",  # 12%: same quarter
        "web1: moved", "  lab-a: 1 moved, 0 failed, 1 left; 0 moving, 0 waiting"]


def test_on_a_terminal_the_live_area_has_a_row_per_vm_and_the_overall_line() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, force_interactive=True, width=160)
    with EvacuationView(console) as view:
        assert view.live_mode
        for update in UPDATES[:6]:
            view(update)
        shown = Console(record=True, width=160, file=io.StringIO())
        shown.print(view.render())
        text = shown.export_text()
        assert "web1" in text and "lab-b" in text and "transferring memory 30%" in text
        assert "not enough memory" in text
        view(UPDATES[6])
        view(UPDATES[7])
        assert view.rows["web1"] == {"to": "lab-b", "phase": "moved", "progress": "",
                                     "note": ""}
        assert view.overall.startswith("lab-a: 1 moved")
    assert "evacuating lab-a" in out.getvalue()  # the plan line stays above the area
