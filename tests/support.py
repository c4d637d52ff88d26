"""Constants and helpers shared by the test suites (a module of its own: with no
__init__.py files in tests/, ``import conftest`` could pick up tests/integration/conftest.py).

``EventStream`` runs ``virtlife events --json`` in the background and collects its lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
NODE_URI = f"test://{DATA / 'node.xml'}"
NODE2_URI = f"test://{DATA / 'node2.xml'}"
UNREACHABLE_URI = "qemu+tcp://127.0.0.1:1/system"

_SCRIPT = Path(sys.executable).with_name("virtlife")
VIRTLIFE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "virtlife.cli.main"]


class EventStream:
    """``virtlife [-c URI] events --json ARGS`` running in the background, lines collected."""

    def __init__(self, *args: str, uri: str | None = None) -> None:
        connect = ["-c", uri] if uri else []
        self.proc = subprocess.Popen([*VIRTLIFE, *connect, "events", "--json", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=os.environ.copy())
        self.events: list[dict[str, str]] = []

    def read_until(self, match: dict[str, str], timeout_s: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            event: dict[str, str] = json.loads(line)
            self.events.append(event)
            if all(event.get(k) == v for k, v in match.items()):
                return event
        raise AssertionError(f"no event {match} in {self.events}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_iso_stub(path: Path) -> Path:
    """Write the smallest file that reads as an ISO 9660 image (a primary volume
    descriptor's type byte and "CD001" at sector 16), for attach-iso on the test driver."""
    path.write_bytes(b"\0" * 16 * 2048 + b"\x01CD001\x01" + b"\0" * 2041)
    return path
