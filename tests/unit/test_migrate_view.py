"""``MigrationView``: what the operator sees of a migration, on a terminal and in a log.

Samples are real libvirt job statistics (tests/data/migration_jobstats.json) read by
``JobSample.from_job_stats``; the one iterating sample is a real one with the iteration,
dirty rate, bandwidth and throttle of a busy guest written over it. On a terminal the
raw output goes through a small emulator of the escape sequences Rich uses, so that the
tests read the screen as it stays, not every frame ever drawn.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from rich.console import Console

from support import DATA
from virtlife.cli.migrate_view import MigrationView
from virtlife.services.migration.phases import MIB, JobSample
from virtlife.services.migration.policy import Decision, PolicyAction
from virtlife.services.progress import Update

VM = "web1"
REAL = json.loads((DATA / "migration_jobstats.json").read_text())["live_snapshot"]
# A busy guest in its third pass: 120 MiB dirty left, 64 MiB/s sent, 16 MiB/s dirtied
# (4096 pages of 4 KiB), vCPUs throttled by 20 %.
BUSY = {**REAL[4], "memory_iteration": 3, "memory_remaining": 120 * MIB,
        "memory_bps": 64 * MIB, "memory_dirty_rate": 4096, "auto_converge_throttle": 20}
RAISE = Decision(PolicyAction.RAISE_DOWNTIME, "dirty 16 MiB/s vs 64 MiB/s for 3 samples: "
                 "max downtime 300 -> 600 ms", at_s=7.5, value=600)


def samples(stats: list[dict[str, Any]], step_s: float = 0.5) -> list[JobSample]:
    out: list[JobSample] = []
    for i, s in enumerate(stats):
        out.append(JobSample.from_job_stats(s, previous=out[-1] if out else None,
                                            elapsed_s=step_s * (i + 1)))
    return out


def progress(p: JobSample) -> Update:
    return Update(VM, "progress", p.describe(), p.fraction, "op1", p.as_dict())


def policy(d: Decision) -> Update:
    return Update(VM, "policy", d.reason, None, "op1", d.as_dict())


CHECK = Update(VM, "check", "checking web1 against lab-b", op_id="op1")
START = Update(VM, "start", "preparing destination: lab-b", op_id="op1")
RUN = samples(REAL[1:-1])  # preparing, transferring x6, stopped x2 (the completed job)
ITERATING = JobSample.from_job_stats(BUSY, previous=RUN[3], elapsed_s=7.5)


def terminal() -> Console:
    # an xterm, whatever TERM, TTY_INTERACTIVE or NO_COLOR the tests run with
    return Console(record=True, force_terminal=True, width=100, file=io.StringIO(),
                   _environ={"TERM": "xterm"})


_SEQ = re.compile(r"\x1b\[(\??)(\d*)([A-Za-z])")


def screen(raw: str, width: int = 100) -> list[str]:
    """The lines a terminal shows after ``raw``: text, newlines, carriage returns, the
    cursor-up, erase-line, cursor-visibility and colour sequences Rich writes (any other
    sequence fails the test), and wrapping at ``width``."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\x1b":
            m = _SEQ.match(raw, i)
            assert m, f"unknown escape sequence {raw[i:i + 8]!r}"
            private, num, code = m.groups()
            if code == "A" and not private:
                row = max(0, row - int(num or 1))
            elif code == "K" and not private and num == "2":
                rows[row] = []
            elif not ((private and code in "lh" and num == "25") or code == "m"):
                raise AssertionError(f"unexpected sequence {m.group()!r}")
            i = m.end()
            continue
        if ch == "\n" or (ch != "\r" and col == width):
            row, col = row + 1, 0
            if row == len(rows):
                rows.append([])
        if ch == "\r":
            col = 0
        elif ch != "\n":
            line = rows[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = ch
            col += 1
        i += 1
    return ["".join(r).rstrip() for r in rows if "".join(r).strip()]


def raw(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def test_terminal_shows_phase_bar_and_rates_while_iterating() -> None:
    console = terminal()
    with MigrationView(console) as view:
        for u in (CHECK, START, *map(progress, RUN[:4]), progress(ITERATING)):
            view(u)
        shown = screen(raw(console))
    # 272.8 MiB in all, 120 dirty: 152.8 clean; (120 MiB) / (64 - 16 MiB/s) = 2.5 s
    assert shown == [
        "… checking web1 against lab-b",
        "… preparing destination: lab-b",
        "web1: iterating dirty pages, iteration 3",
        shown[3],
        "dirty 16 MiB/s vs 64 MiB/s, throttle 20 %, ETA 3 s, elapsed 7.5 s",
    ]
    bar, _, text = shown[3].partition(" ")
    assert text == "153 of 273 MiB sent, 120 MiB left"
    assert len(bar) == 40 and bar.startswith("━" * 22) and bar[22] != "━"  # 56 % of 40
    # every frame drawn, as recorded: the real first pass was shown on the way
    recorded = console.export_text()
    assert "web1: transferring memory" in recorded
    assert "49 of 273 MiB sent, 224 MiB left" in recorded  # real sample 2


def test_policy_lines_stay_and_exit_leaves_one_final_line() -> None:
    console = terminal()
    with MigrationView(console) as view:
        for u in (CHECK, START, *map(progress, RUN[:4]), progress(ITERATING), policy(RAISE),
                  *map(progress, RUN[4:])):
            view(u)
        during = screen(raw(console))
        assert during[2] == f"policy: {RAISE.reason}"
        assert during[3] == "web1: stopped at source, moving device state"
    final = ("web1: stopped at source, moving device state: 273 of 273 MiB sent, "
             "178 MiB transferred, 3 iterations, downtime 110 ms, elapsed 4.5 s")
    assert RUN[-1].downtime_ms == 110 and RUN[-1].memory_processed == 186201969  # the data
    assert screen(raw(console)) == [
        "… checking web1 against lab-b",
        "… preparing destination: lab-b",
        f"policy: {RAISE.reason}",
        final[:100],  # the terminal wraps the one long line
        final[100:],
    ]
    assert raw(console).rstrip("\n").endswith(final[60:] + "\x1b[0m")  # one line, unbroken
    assert raw(console).rfind("\x1b[?25h") > raw(console).rfind("\x1b[?25l") > 0
    assert f"policy: {RAISE.reason}" in console.export_text()


@pytest.mark.parametrize(("index", "head", "numbers"), [
    (0, "web1: preparing destination", None),  # real: iteration 0, all zero
    (1, "web1: transferring memory", "49 of 273 MiB sent, 224 MiB left"),
    (7, "web1: stopped at source, moving device state", "273 of 273 MiB sent"),
])
def test_the_live_area_names_the_phase_of_each_real_sample(
        index: int, head: str, numbers: str | None) -> None:
    view = MigrationView(terminal())
    view.vm, view.detail = VM, RUN[index].as_dict()
    out = Console(width=100, file=io.StringIO(), force_terminal=False)
    out.print(view.render())
    lines = raw(out).splitlines()
    assert lines[0] == head
    if numbers is None:
        assert lines[1:] == ["ETA unknown, elapsed 0.5 s"]
    else:
        assert lines[1].endswith(" " + numbers)


def test_post_copy_with_disks_shows_page_requests_and_the_disk_copy() -> None:
    stats = {**REAL[4], "memory_iteration": 4, "memory_remaining": 20 * MIB,
             "memory_postcopy_requests": 12, "disk_total": 2048 * MIB,
             "disk_processed": 512 * MIB, "disk_remaining": 1536 * MIB}
    view = MigrationView(terminal())
    view.vm = VM
    view.detail = JobSample.from_job_stats(stats, previous=None, elapsed_s=75.0).as_dict()
    out = Console(width=120, file=io.StringIO(), force_terminal=False)
    out.print(view.render())
    head, bar, rates = raw(out).splitlines()
    assert head == "web1: post-copy, running at destination"
    assert bar.endswith(" 253 of 273 MiB sent, 20 MiB left, disks 512 of 2048 MiB")
    # (20 MiB + 1536 MiB) / 563.6 MiB/s (memory_bps of the real sample) = 2.8 s
    assert rates == "564 MiB/s, 12 page requests, ETA 3 s, elapsed 1 min 15 s"


def test_an_exception_stops_the_live_area_and_goes_on_up() -> None:
    console = terminal()
    with pytest.raises(KeyboardInterrupt), MigrationView(console) as view:
        for u in (START, *map(progress, RUN[:3])):
            view(u)
        raise KeyboardInterrupt
    console.print("web1 stays on lab-a")
    # real sample 3: 196542464 of 286072832 bytes left, 74918209 sent, at 1.5 s
    last = ("migration did not finish; last seen: web1: transferring memory: 85 of 273 MiB "
            "sent, 187 MiB left, 71 MiB transferred, 1 iteration, downtime 300 ms, "
            "elapsed 1.5 s")
    assert screen(raw(console)) == [
        "… preparing destination: lab-b", last[:100], last[100:], "web1 stays on lab-a"]
    assert raw(console).rfind("\x1b[?25h") > raw(console).rfind("\x1b[?25l") > 0
    with MigrationView(console) as again:  # a new live area can start on it
        again(progress(RUN[1]))
    assert "".join(screen(raw(console))[-2:]) == (
        "web1: transferring memory: 49 of 273 MiB sent, 224 MiB left, 37 MiB transferred, "
        "1 iteration, downtime 300 ms, elapsed 1.0 s")


def test_a_failed_check_leaves_only_its_line() -> None:
    console = terminal()
    with pytest.raises(RuntimeError), MigrationView(console) as view:
        view(CHECK)
        raise RuntimeError("cannot migrate web1 to lab-b")
    assert screen(raw(console)) == ["… checking web1 against lab-b"]


@pytest.mark.parametrize("console", [
    Console(file=io.StringIO(), force_terminal=False),
    Console(file=io.StringIO(), force_terminal=True, _environ={"TERM": "dumb"}),
    Console(file=io.StringIO(), _environ={"FORCE_COLOR": "1", "TTY_INTERACTIVE": "0"}),
], ids=["pipe", "dumb-terminal", "ci-log-with-colour"])
def test_off_a_terminal_one_plain_line_per_update(console: Console) -> None:
    updates = [CHECK, START, *map(progress, RUN[:4]), progress(ITERATING), policy(RAISE),
               *map(progress, RUN[4:])]
    with MigrationView(console) as view:
        for u in updates:
            view.update(u)
    out = raw(console)
    assert "\x1b" not in out
    assert out.splitlines() == [f"… {u.message}" for u in updates]
    assert out.splitlines()[6] == f"… {ITERATING.describe()}"
    assert len(out.splitlines()[6]) > 80  # longer than the console: not wrapped
    assert "iterating dirty pages, iteration 3: 153 of 273 MiB sent" in out


def test_off_a_terminal_a_stalled_move_prints_its_progress_line_once() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    stalled = progress(RUN[2])
    updates = [progress(RUN[1]), stalled, stalled, stalled, policy(RAISE), stalled, stalled]
    with MigrationView(console) as view:
        for u in updates:
            view.update(u)
    assert raw(console).splitlines() == [f"… {u.message}" for u in (
        progress(RUN[1]), stalled, policy(RAISE), stalled)]


def test_off_a_terminal_an_exception_adds_nothing_and_goes_on_up() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with pytest.raises(ValueError, match="boom"), MigrationView(console) as view:
        view(progress(RUN[1]))
        raise ValueError("boom")
    assert raw(console) == f"… {RUN[1].describe()}\n"


def test_a_progress_update_without_values_shows_its_text_and_fraction() -> None:
    console = terminal()
    with MigrationView(console) as view:
        view(Update(VM, "progress", "copying the definition", 0.25))
        bar = screen(raw(console))[1]
        assert screen(raw(console))[0] == "web1: copying the definition"
        assert bar.startswith("━" * 10) and bar[10] != "━"  # a quarter of 40
    assert screen(raw(console)) == ["web1: copying the definition"]
