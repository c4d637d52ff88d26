"""What ``virtlife migrate`` shows while a VM moves: a live Rich display of its progress.

``MigrationView`` is a context manager over a Rich ``Console`` (stderr by default) that
takes the migration service's ``Update`` values (``view(update)``). On a terminal it keeps
a live area, redrawn at each sample: the phase in the operators' words, a bar of memory
sent of the total, what is left, the dirty rate against the bandwidth, the throttle, the
ETA and the time elapsed. The check and start messages and every policy decision are
printed above it as lines that stay; on exit the live area gives way to one final line,
also when an exception ends the ``with`` block. Anywhere else (a pipe, a CI log, a dumb
terminal) it prints one ``… message`` line per update, as the command always did (a
progress line the same as the one just before it is left out: a stalled move would print
it at every sample), and no cursor-control sequence. It only reads the values it is
given: it must not call libvirt or a service, keep a clock, or decide anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from virtlife.services.migration.phases import of_text, rate_text, size_text
from virtlife.services.progress import Update

BAR_WIDTH = 40


class MigrationView:
    """Shows one migration's updates on ``console``; use it as ``with MigrationView() as
    view:`` and pass ``view`` as the service's ``progress`` callback."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else Console(stderr=True)
        # Redraws need a terminal that moves the cursor: Rich's is_interactive says so
        # (a terminal, not TERM=dumb; TTY_INTERACTIVE=0 turns it off where FORCE_COLOR
        # made a CI log "a terminal").
        self.live_mode = (self.console.is_terminal and self.console.is_interactive
                          and not self.console.is_dumb_terminal)
        self.vm = ""
        self.message = ""  # the last progress update's text
        self.detail: Mapping[str, Any] | None = None  # the last progress sample
        self.fraction: float | None = None
        self._live: Live | None = None

    def __enter__(self) -> MigrationView:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the live area (transient: it is erased) and print the final line in its
        place; an exception goes on up."""
        live, self._live = self._live, None
        if live is None:
            return
        live.stop()
        line = self.final_line()
        if exc_type is not None:
            line = f"migration did not finish; last seen: {line}"
        self.console.print(Text(line, style="bold" if exc_type is None else "yellow"),
                           soft_wrap=True)  # the terminal wraps it: one line to copy

    def __call__(self, update: Update) -> None:
        self.update(update)

    def update(self, update: Update) -> None:
        """Show one update: a redraw for a progress sample, a line for anything else."""
        self.vm = update.vm or self.vm
        if not self.live_mode:
            if update.stage == "progress" and update.message == self.message:
                return  # a stalled move (a cut link): not one identical line per sample
            self.message = update.message if update.stage == "progress" else ""
            self.console.out(f"… {update.message}", highlight=False)
            return
        if update.stage in ("progress", "stats"):  # stats: the completed job, at the end
            self.message, self.detail, self.fraction = (
                update.message, update.detail, update.fraction)
            if self._live is None:
                self._live = Live(self.render(), console=self.console, auto_refresh=False,
                                  transient=True)
                self._live.start(refresh=True)
            else:
                self._live.update(self.render(), refresh=True)
        elif update.stage == "policy":
            reason = (update.detail or {}).get("reason") or update.message
            self.console.print(Text(f"policy: {reason}", style="cyan"))
        else:
            self.console.print(Text(f"… {update.message}", style="dim"))

    # -- what is drawn ------------------------------------------------------------------

    def render(self) -> RenderableType:
        """The live area for the last sample: the phase, the bar, the rates."""
        d = self.detail
        if d is None:  # a progress update without its values: its text and fraction
            head = Text(f"{self.vm}: {self.message}", style="bold")
            if self.fraction is None:
                return head
            return Group(head, _bar_row(ProgressBar(total=1.0, completed=self.fraction,
                                                    width=BAR_WIDTH), ""))
        rows: list[RenderableType] = [Text(f"{self.vm}: {_head(d)}", style="bold")]
        total, left = d.get("memory_total"), d.get("memory_remaining")
        if total and left is not None:
            done = max(0, total - left)
            rows.append(_bar_row(ProgressBar(total=float(total), completed=float(done),
                                             width=BAR_WIDTH), _amounts(d)))
        rows.append(Text(", ".join(_rates(d))))
        return Group(*rows)

    def final_line(self) -> str:
        """The line left once the live area is gone: the vm, the phase, the numbers."""
        d = self.detail
        if d is None:
            return f"{self.vm}: {self.message}"
        parts: list[str] = []
        if d.get("memory_total") and d.get("memory_remaining") is not None:
            parts.append(_amounts(d))
        processed = d.get("memory_processed") or 0
        if processed:
            parts.append(f"{size_text(processed)} transferred")
        if d.get("iteration"):
            parts.append(f"{d['iteration']} iteration{'s' if d['iteration'] > 1 else ''}")
        if d.get("downtime_ms") is not None:
            parts.append(f"downtime {d['downtime_ms']} ms")
        parts.append(f"elapsed {_duration(d.get('at_s') or 0.0)}")
        return f"{self.vm}: {_head(d)}: {', '.join(parts)}"


def _bar_row(bar: ProgressBar, text: str) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_row(bar, Text(text))
    return grid


def _head(d: Mapping[str, Any]) -> str:
    """``iterating dirty pages, iteration 3``: the phase as ``describe()`` words it."""
    head = str(d.get("phase_label") or d.get("phase") or "migrating")
    if d.get("phase") == "iterating":
        head += f", iteration {d.get('iteration', 0)}"
    return head


def _amounts(d: Mapping[str, Any]) -> str:
    """``233 of 273 MiB sent, 40.0 MiB left`` (and the disks when they are copied)."""
    total, left = d["memory_total"], d["memory_remaining"]
    parts = [f"{of_text(max(0, total - left), total)} sent"]
    if left:
        parts.append(f"{size_text(left)} left")
    disks = d.get("disk_total")
    if disks:
        parts.append(f"disks {of_text(disks - (d.get('disk_remaining') or 0), disks)}")
    return ", ".join(parts)


def _rates(d: Mapping[str, Any]) -> list[str]:
    """The rates, the throttle, the ETA and the time elapsed (``describe()``'s rules)."""
    parts: list[str] = []
    phase, bandwidth, dirty = d.get("phase"), d.get("bandwidth"), d.get("dirty_rate")
    if dirty is not None and phase in ("transferring", "iterating") and (
            dirty > 0 or phase == "iterating"):
        parts.append(f"dirty {size_text(dirty)}/s vs {rate_text(bandwidth)}")
    elif bandwidth:
        parts.append(rate_text(bandwidth))
    if phase == "postcopy" and d.get("postcopy_requests"):
        parts.append(f"{d['postcopy_requests']} page requests")
    if d.get("throttle_pct") is not None:
        parts.append(f"throttle {d['throttle_pct']} %")
    eta = d.get("eta_s")
    if phase == "stopped" and not d.get("memory_remaining"):
        pass  # all sent: the switch-over is a matter of the downtime
    elif eta is not None:
        parts.append(f"ETA {_duration(math.ceil(eta))}")
    elif dirty is not None and bandwidth and dirty >= bandwidth:
        parts.append("ETA unknown: dirtied as fast as sent")
    else:
        parts.append("ETA unknown")
    parts.append(f"elapsed {_duration(d.get('at_s') or 0.0)}")
    return parts


def _duration(seconds: float) -> str:
    """``7.5 s`` (``3 s`` for a whole number) under a minute, then ``2 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.0f} s" if isinstance(seconds, int) else f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"
