"""What ``virtlife host maintenance`` shows while an evacuation runs.

``EvacuationView`` takes the maintenance service's ``Update`` values. On a terminal it
keeps a live area with one row per VM (destination, phase, its migration's phase and
percent, the reason of a VM that stays) under the overall line (moved, failed, left,
the time to go); the plan and each migration's start and policy steps are printed above
it as lines that stay. Anywhere else (a pipe, a CI log) it prints one line per change:
a VM's phase, its migration's phase and percent at each quarter, and the overall line.
It only reads what it is given: it must not call a service or decide anything.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from virtlife.services.progress import Update


class EvacuationView:
    """``with EvacuationView() as view:`` and pass ``view`` as the progress sink."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.live_mode = (self.console.is_terminal and self.console.is_interactive
                          and not self.console.is_dumb_terminal)
        self.rows: dict[str, dict[str, str]] = {}  # vm -> to, phase, progress, note
        self.overall = ""
        self._shown: dict[str, tuple[str, int]] = {}  # plain lines: (phase, quarter) shown
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> EvacuationView:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            live.stop()  # transient: the summary table takes its place

    def __call__(self, update: Update) -> None:
        with self._lock:
            line = self._take(update)
            if not self.live_mode:
                if line is not None:
                    self.console.out(line, highlight=False)
                return
            if update.stage in ("plan", "start", "policy", "settle"):
                self.console.print(Text(update.message if update.stage == "plan" else
                                        f"{update.vm}: {update.message}", style="dim"))
            if self._live is None:
                self._live = Live(self.render(), console=self.console, auto_refresh=False,
                                  transient=True)
                self._live.start(refresh=True)
            else:
                self._live.update(self.render(), refresh=True)

    def _take(self, update: Update) -> str | None:
        """Keep what ``update`` says; the plain line it makes, if any."""
        detail: dict[str, Any] = dict(update.detail or {})
        if update.stage == "step":
            row = self.rows.setdefault(update.vm, {"progress": ""})
            row.update(to=str(detail.get("to") or "-"), phase=str(detail.get("outcome", "")),
                       note=str(detail.get("reason") or ""))
            if row["phase"] != "moving":
                row["progress"] = ""
            return update.message
        if update.stage == "overall":
            self.overall = update.message
            return f"  {update.message}"
        if update.stage == "progress":
            phase = str(detail.get("phase_label") or detail.get("phase") or "moving")
            percent = "" if update.fraction is None else f" {update.fraction * 100:.0f}%"
            self.rows.setdefault(update.vm, {"to": "-", "phase": "moving", "note": ""})[
                "progress"] = f"{phase}{percent}"
            quarter = int((update.fraction or 0.0) * 4)
            if self._shown.get(update.vm) == (phase, quarter):
                return None
            self._shown[update.vm] = (phase, quarter)
            return f"{update.vm}: {phase}{percent}"
        if update.stage == "plan":
            return update.message
        if update.stage in ("start", "policy", "settle"):
            return f"{update.vm}: {update.message}"
        return None

    def render(self) -> RenderableType:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for name in ("VM", "TO", "PHASE", "MIGRATION", "NOTE"):
            table.add_column(name, no_wrap=True, overflow="ellipsis",
                             max_width=60 if name == "NOTE" else None)
        for vm, row in self.rows.items():
            table.add_row(vm, row.get("to", "-"), row.get("phase", ""),
                          row.get("progress", ""), row.get("note", ""))
        return Group(table, Text(self.overall, style="bold"))
