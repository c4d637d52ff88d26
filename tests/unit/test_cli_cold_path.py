"""What a cold ``virtlife`` process imports for the commands run most: the root help
loads neither click nor libvirt, and ``list``/``state`` (no server running) load
neither click nor Rich nor the parts of virtlife that they do not use. These are
behaviour tests on ``sys.modules`` after the command ran; the time it takes is
measured by ``bench/cli_start.py``."""

from __future__ import annotations

import os
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
    """Exit code, every module loaded, and stdout of ``virtlife ARGS`` run cold.

    Without ``make test``'s coverage of subprocesses: coverage, started in the child by
    its ``.pth`` hook, imports socket, tomllib and traceback itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                         text=True, timeout=60, env=env)
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


# What the hot forms of list and state have no use for: click and Rich, the operations
# and the services behind them, the agent, snapshot and migration wrappers, the API's
# tokens, the settings parser (no settings file here), the guest agent's binding, the
# store's facts and freezes tables, socket (graphics sockets, the journal's machine name:
# no operation is recorded), getpass (the journal's actor), logging (and its traceback:
# nothing is logged at WARNING; virtlife.lazylog), queue (event listeners), the
# server's prometheus_client and, for a table, json.
NOT_ON_THE_HOT_PATH = (
    "click", "rich", "tomllib", "virtlife.cli.root", "virtlife.cli.app",
    "libvirt_qemu", "virtlife.store.facts", "virtlife.store.freezes", "socket", "getpass",
    "logging", "traceback", "queue", "prometheus_client",
    "virtlife.cli.roothelp", "virtlife.services.operations", "virtlife.services.lifecycle",
    "virtlife.services.agent", "virtlife.services.snapshots", "virtlife.services.consoles",
    "virtlife.services.migration", "virtlife.services.freeze", "virtlife.services.events",
    "virtlife.store.tokens", "virtlife.hypervisor.agent", "virtlife.hypervisor.snapshot",
    "virtlife.hypervisor.migration", "virtlife.hypervisor.hostfacts", "virtlife.xml",
)


@pytest.mark.parametrize("args", [["list", "--all"], ["list"], ["state", "vm-running"],
                                  ["state", "vm-saved"]])
def test_the_hot_forms_load_only_what_they_read(args: list[str], node_uri: str) -> None:
    code, modules, out = _modules("-c", node_uri, *args)
    assert code == 0, out
    assert "libvirt" in modules and "virtlife.services.fleet" in modules  # read directly
    assert not _under(modules, *NOT_ON_THE_HOT_PATH, "json")


def test_the_hot_forms_load_json_only_to_print_it(node_uri: str) -> None:
    code, modules, out = _modules("-c", node_uri, "state", "vm-running", "--json")
    assert code == 0
    assert '"label": "running"' in out
    assert "json" in modules
    assert not _under(modules, *NOT_ON_THE_HOT_PATH)


# ``main()`` as the ``virtlife`` script calls it (no argv). An atexit handler says whether
# the collector was on; an object's finaliser, run only if the interpreter is torn down
# (module globals cleared), says so on stderr.
EXIT_PROBE = """
import atexit, gc, os, sys
from virtlife.cli.main import main

class Teardown:
    def __del__(self):
        os.write(2, b"TEARDOWN\\n")

marker = Teardown()
atexit.register(lambda: sys.stderr.write(f"ATEXIT gc={gc.isenabled()}\\n"))
sys.argv = ["virtlife", *sys.argv[1:]]
sys.exit(main())
"""


def _ending(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", EXIT_PROBE, *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args", [["list", "--all"], ["state", "vm-running"],
                                  ["state", "nope"], ["list", "--json"]])
def test_a_hot_form_ends_its_process_without_tearing_the_interpreter_down(
        args: list[str], node_uri: str) -> None:
    """The connections still close on daemon threads as the process ends; a teardown
    under a thread inside libvirt crashed it (SIGSEGV) about once in 100 runs."""
    run = _ending("-c", node_uri, *args)
    clicked = _modules("-c", node_uri, *args)  # main(argv): the usual ending
    assert (run.returncode, run.stdout) == (clicked[0], clicked[2])  # same answer
    assert run.returncode in (0, 2)
    assert "ATEXIT gc=False" in run.stderr  # the handlers ran; the collector was off
    assert "TEARDOWN" not in run.stderr
    if run.returncode == 2:
        assert "virtlife: no VM named nope" in run.stderr


@pytest.mark.parametrize("args", [["--version"], ["list", "--help"], ["--help"], []])
def test_other_commands_end_the_usual_way(args: list[str]) -> None:
    run = _ending(*args)
    assert run.returncode in (0, 64)
    assert "ATEXIT gc=True" in run.stderr
    assert "TEARDOWN" in run.stderr


def test_main_with_argv_returns_and_leaves_the_collector_alone(node_uri: str) -> None:
    import gc

    from virtlife.cli.main import main

    assert main(["-c", node_uri, "state", "vm-running"]) == 0
    assert gc.isenabled()


@pytest.mark.parametrize(("module", "not_loaded"), [
    ("virtlife.hypervisor.events", ("libvirt", "virtlife.hypervisor.host")),
    ("virtlife.states", ("libvirt", "virtlife.hypervisor")),
    ("virtlife.store.inventory", ("virtlife.store.journal", "virtlife.store.db")),
])
def test_a_package_loads_only_the_modules_asked_for(module: str,
                                                    not_loaded: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert not _under(set(run.stdout.split()), *not_loaded)


def test_the_packages_still_export_their_names() -> None:
    from virtlife import hypervisor, store
    from virtlife.hypervisor.guest import Guest
    from virtlife.store.db import open_store

    assert hypervisor.Guest is Guest and store.open_store is open_store
    for package in (hypervisor, store):
        for name in package.__all__:
            assert getattr(package, name) is not None
        with pytest.raises(AttributeError):
            package.nothing_of_the_kind  # noqa: B018
