"""``virtlife lab up/down/status`` refusals that come before anything is built: a size or
segment that cannot be (usage, exit 64), and an inventory that already has a lab host's
name for another host (exit 1). Nothing here brings a lab up; the real runs are in
tests/integration/test_lab_hosts.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from support import VIRTLIFE


def virtlife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True, timeout=60,
                          env=os.environ.copy(), check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["0"], "Invalid value for '[N]': 0 is not in the range 1<=x<=26"),
    (["27"], "Invalid value for '[N]': 27 is not in the range 1<=x<=26"),
    (["--segment", "8.8.8.0/24"], "cannot use 8.8.8.0/24 as the lab's segment: give a "
                                  "private IPv4 network"),
    (["--segment", "lab"], "cannot use 'lab' as the lab's segment"),
    (["4", "--segment", "10.9.9.0/28"], "cannot fit 4 host(s) into 10.9.9.0/28"),
])
def test_lab_up_refuses_a_size_or_segment_that_cannot_be(args: list[str],
                                                          message: str) -> None:
    run = virtlife("lab", "up", *args)
    assert run.returncode == 64, run.stderr
    assert message in run.stderr
    assert run.stderr.count("\n") == 1


def test_lab_up_refuses_when_the_inventory_has_a_lab_hosts_name_elsewhere() -> None:
    added = virtlife("host", "add", "lab-b", "test:///default")
    assert added.returncode == 0, added.stderr
    run = virtlife("lab", "up", "2")
    assert run.returncode == 1
    assert run.stderr == (
        "virtlife: cannot bring the lab up: the inventory has a host lab-b at "
        "test:///default, not at the lab's qemu+tcp://10.253.7.12/system; remove it "
        "(virtlife host remove lab-b)\n")
    assert run.stdout == ""


def test_lab_help_shows_the_multi_host_commands_with_examples() -> None:
    run = virtlife("lab", "--help")
    assert run.returncode == 0
    assert "virtlife lab up 2 && virtlife lab status" in run.stdout
    for command in ("up", "down", "status"):
        sub = virtlife("lab", command, "--help")
        assert sub.returncode == 0 and "Example: virtlife lab " + command in sub.stdout
