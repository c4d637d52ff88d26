"""Ctrl-C in-process: ``main`` asks ``cli.app.on_interrupt`` to mark the running
operations, never waits long for it, and returns 130.

The command is a stand-in (``main._run`` patched) that ends soon after the signal, so
that ``main`` returns instead of ending the process; the real, stuck-in-libvirt case
is ``tests/cli/test_bad_input.py``'s silent-host test.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from virtlife.cli import app as app_module
from virtlife.cli import main as main_module


@pytest.fixture(autouse=True)
def sigint_raises_keyboard_interrupt() -> Iterator[None]:
    """Python's own SIGINT handler for each test, whatever the runner (an xdist worker)
    installed: the tests then always run, and the runner's handler comes back after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _ctrl_c_after(seconds: float) -> None:
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    threading.Timer(seconds, signal.pthread_kill, (main_thread, signal.SIGINT)).start()


def _command_taking(seconds: float) -> Callable[[list[str]], int]:
    def run(_args: list[str]) -> int:
        time.sleep(seconds)
        return 0

    return run


def test_ctrl_c_calls_the_interrupt_hook_and_returns_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    release = threading.Event()
    hook_threads: list[str] = []

    def stuck(_args: list[str]) -> int:
        release.wait(10)
        return 0

    def on_interrupt() -> None:
        hook_threads.append(threading.current_thread().name)
        release.set()  # the stand-in command ends once its operation is marked

    monkeypatch.setattr(main_module, "_run", stuck)
    monkeypatch.setattr(app_module, "on_interrupt", on_interrupt, raising=False)
    _ctrl_c_after(0.2)
    assert main_module.main(["state", "x"]) == 130
    assert len(hook_threads) == 1
    assert capsys.readouterr().err == "virtlife: interrupted\n"


def test_ctrl_c_without_the_hook_still_returns_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(main_module, "_run", _command_taking(0.5))
    monkeypatch.setattr(main_module, "INTERRUPT_GRACE_S", 5.0)
    monkeypatch.delattr(app_module, "on_interrupt", raising=False)
    _ctrl_c_after(0.1)
    assert main_module.main(["state", "x"]) == 130
    assert capsys.readouterr().err == "virtlife: interrupted\n"


def test_a_hook_that_hangs_is_left_behind_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    never = threading.Event()
    monkeypatch.setattr(main_module, "_run", _command_taking(0.5))
    monkeypatch.setattr(main_module, "INTERRUPT_HOOK_S", 0.2)
    monkeypatch.setattr(main_module, "INTERRUPT_GRACE_S", 5.0)
    monkeypatch.setattr(app_module, "on_interrupt", lambda: never.wait(30), raising=False)
    _ctrl_c_after(0.1)
    started = time.monotonic()
    try:
        assert main_module.main(["state", "x"]) == 130
    finally:
        never.set()
    assert time.monotonic() - started < 3
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "virtlife: interrupted"
    assert err[1].startswith("virtlife: warning: could not mark the interrupted operation")


def test_a_hook_that_fails_is_a_warning_beside_the_interruption(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> None:
        raise RuntimeError("journal locked")

    monkeypatch.setattr(main_module, "_run", _command_taking(0.5))
    monkeypatch.setattr(main_module, "INTERRUPT_GRACE_S", 5.0)
    monkeypatch.setattr(app_module, "on_interrupt", broken, raising=False)
    _ctrl_c_after(0.1)
    assert main_module.main(["state", "x"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err == ["virtlife: interrupted",
                   "virtlife: warning: could not mark the interrupted operation in the "
                   "journal: journal locked"]


def test_sigterm_ends_a_command_as_ctrl_c_does_and_returns_143(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    release = threading.Event()
    hooked: list[str] = []

    def stuck(_args: list[str]) -> int:
        release.wait(10)
        return 0

    def on_interrupt() -> None:
        hooked.append("marked")
        release.set()

    monkeypatch.setattr(main_module, "_run", stuck)
    monkeypatch.setattr(app_module, "on_interrupt", on_interrupt, raising=False)
    before = signal.getsignal(signal.SIGTERM)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGTERM)).start()
    assert main_module.main(["state", "x"]) == 143
    assert hooked == ["marked"]
    assert capsys.readouterr().err == "virtlife: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_sighup_ends_a_command_as_sigterm_does_and_returns_129(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A closed terminal or a dropped ssh session (issue 15, E): the hook runs (it aborts
    this process's migrations and marks its operations), as for SIGTERM; Python's
    default for SIGHUP would end the process with no hook at all."""
    release = threading.Event()
    hooked: list[str] = []

    def stuck(_args: list[str]) -> int:
        release.wait(10)
        return 0

    def on_interrupt() -> None:
        hooked.append("marked")
        release.set()

    monkeypatch.setattr(main_module, "_run", stuck)
    monkeypatch.setattr(app_module, "on_interrupt", on_interrupt, raising=False)
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        main_thread = threading.main_thread().ident
        assert main_thread is not None
        threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGHUP)).start()
        assert main_module.main(["state", "x"]) == 129
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # the caller's is back
    finally:
        signal.signal(signal.SIGHUP, before)
    assert hooked == ["marked"]
    assert capsys.readouterr().err == "virtlife: hung up\n"
    assert 129 in main_module.EXIT_CODES


def test_the_apps_stop_functions_run_before_the_journal_is_marked(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    order: list[str] = []
    app = app_module.App(None, verbose=False)

    class Marked:
        def interrupted(self) -> None:
            order.append("journal")

    monkeypatch.setattr(app, "_services", Marked())
    app.on_stop.append(lambda: order.append("server"))
    app.on_stop.append(lambda: (_ for _ in ()).throw(RuntimeError("socket busy")))
    app_module.on_interrupt()
    assert order == ["server", "journal"]  # a failing stop does not skip the journal
    assert "could not stop cleanly: socket busy" in capsys.readouterr().err
