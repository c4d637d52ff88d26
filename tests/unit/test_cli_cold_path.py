"""What a cold ``virtlife`` process imports for the commands run most: the root help
loads neither click nor libvirt, and ``list``/``state`` (no server running) load
neither click nor Rich nor the parts of virtlife that they do not use. These are
behaviour tests on ``sys.modules`` after the command ran; the time it takes is
measured by ``bench/cli_start.py``."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from virtlife.cli.main import main
code = main(sys.argv[1:])
sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def _modules(*args: str) -> tuple[int, set[str], str]:
    """Exit code, every module loaded, and stdout of ``virtlife ARGS`` run cold."""
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                         text=True, timeout=60)
    line = [x for x in run.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return run.returncode, set(line.split()[1:]), run.stdout


def _under(modules: set[str], *roots: str) -> set[str]:
    return {m for m in modules for r in roots if m == r or m.startswith(r + ".")}


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["-h"], 0), ([], 64)])
def test_the_root_help_loads_neither_click_nor_libvirt(args: list[str], code: int) -> None:
    returncode, modules, _ = _modules(*args)
    assert returncode == code
    assert not _under(modules, "click", "libvirt", "rich", "virtlife.cli.root",
                      "virtlife.services", "virtlife.hypervisor", "virtlife.store")
