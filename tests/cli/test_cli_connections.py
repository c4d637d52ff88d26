"""``virtlife`` as a subprocess against hosts that cannot be reached: exit codes mean
what they say (4: host unreachable), and what could be learnt is still printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support import NODE_URI, UNREACHABLE_URI

_SCRIPT = Path(sys.executable).with_name("virtlife")
VIRTLIFE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "virtlife.cli.main"]
EXIT_HOST_UNREACHABLE = 4


def virtlife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60, check=False)


def test_list_exits_4_when_no_host_answered_and_still_shows_the_host() -> None:
    run = virtlife("-c", UNREACHABLE_URI, "list", "--all")
    assert run.returncode == EXIT_HOST_UNREACHABLE, run
    assert "unreachable" in run.stdout and "Connection refused" in run.stdout
    (line,) = run.stderr.splitlines()
    assert line.startswith("virtlife: no host answered")


def test_list_json_exits_4_when_no_host_answered() -> None:
    run = virtlife("-c", UNREACHABLE_URI, "list", "--all", "--json")
    assert run.returncode == EXIT_HOST_UNREACHABLE, run
    data = json.loads(run.stdout)
    assert data["vms"] == [] and [u["uri"] for u in data["unreachable"]] == [UNREACHABLE_URI]


def test_list_exits_0_when_one_host_answered() -> None:
    assert virtlife("host", "add", "a", NODE_URI).returncode == 0
    assert virtlife("host", "add", "down", UNREACHABLE_URI).returncode == 0
    run = virtlife("list", "--all", "--json")
    assert run.returncode == 0, run
    data = json.loads(run.stdout)
    assert {vm["host"] for vm in data["vms"]} == {"a"}
    assert [u["host"] for u in data["unreachable"]] == ["down"]
