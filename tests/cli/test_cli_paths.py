"""Every path argument refuses a control character as bad input (exit 64), in one line,
before anything is written or asked of libvirt: a newline in an ``attach-iso`` path was
stored as a space in the persistent definition, and the VM no longer started.

Each test runs the real ``virtlife`` command as a subprocess with its own
``VIRTLIFE_HOME`` (the autouse fixture).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bad_input import EXIT_USAGE, files_under, on_node, one_line_error, virtlife

# (command, where the odd path goes): {bad} is replaced by a path holding the character
COMMANDS = {
    "attach-iso": ["-c", "NODE", "attach-iso", "vm-off", "{bad}"],
    "attach-iso --detach": ["-c", "NODE", "attach-iso", "vm-off", "{bad}", "--detach"],
    "save": ["-c", "NODE", "save", "vm-running", "{bad}"],
    "restore": ["-c", "NODE", "restore", "{bad}"],
    "define": ["-c", "NODE", "define", "{bad}"],
    "create --disk": ["-c", "NODE", "create", "new1", "--disk", "{bad}"],
    "create --kernel": ["-c", "NODE", "create", "new1", "--kernel", "{bad}"],
    "windows-drivers-iso --out": ["windows-drivers-iso", "--drivers", "{tmp}", "--out",
                                  "{bad}"],
    "windows-drivers-iso --drivers": ["windows-drivers-iso", "--drivers", "{bad}", "--out",
                                      "{tmp}/out.iso"],
    "viewer-file -o": ["-c", "NODE", "viewer-file", "vm-running", "-o", "{bad}"],
    "--log-file": ["--log-file", "{bad}", "-c", "NODE", "list"],
}


@pytest.mark.parametrize("char", ["\n", "\t", "\x1b", "\x7f"], ids=repr)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_path_with_a_control_character_is_bad_input_and_writes_nothing(
        command: str, char: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bad = str(work / f"a{char}b.iso")
    args = [a.replace("{bad}", bad).replace("{tmp}", str(work)) for a in COMMANDS[command]]
    if args[:2] == ["-c", "NODE"]:
        run = on_node(*args[2:])
    else:
        run = virtlife(*args)
    line = one_line_error(run, EXIT_USAGE)
    assert "control character" in line, line
    assert files_under(work) == []


def test_an_empty_connect_uri_is_bad_input_not_the_inventory() -> None:
    line = one_line_error(virtlife("-c", "", "list"), EXIT_USAGE)
    assert "empty URI" in line and "-c" in line
