"""Entry point of the ``virtlife`` command: the served fast path, then the command in a
worker thread.

Nothing heavy is imported here: ``virtlife --help`` (or a bare ``virtlife``) is printed
by ``cli.roothelp`` without click; ``virtlife list`` and ``virtlife state`` are first
offered to a running ``virtlife serve`` (``cli.quick``, which needs neither click nor
libvirt); otherwise the command runs in a worker thread while the main thread waits
for it: a libvirt call blocked in C never returns to Python on SIGINT, but the main
thread does, so Ctrl-C always ends the command at once (exit 130), after asking
``cli.app`` (when it was loaded) to stop what the command serves and mark this
process's running operations as interrupted. SIGTERM ends it the same way (exit 143),
and so does SIGHUP (exit 129: a closed terminal or a dropped ssh session must not leave
a migration running with nobody watching it).
The click group and its error boundary live in ``cli.root``; ``cli`` and ``EPILOG``
are still importable from here.
"""

from __future__ import annotations

import os
import sys

from virtlife.errors import exit_codes

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 64  # BSD's EX_USAGE; click's own 2 would read as "not found"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_HUNG_UP = 129  # 128 + SIGHUP
# Every exit code the command may end with (virtlife.errors documents their meaning).
EXIT_CODES = frozenset({0, 1, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_HUNG_UP}
                       | exit_codes())
# How long Ctrl-C waits for the journal to mark the running operations interrupted,
# then for the command to end by itself before the process exits without it.
INTERRUPT_HOOK_S = 2.0
INTERRUPT_GRACE_S = 0.2
# How often the main thread wakes up to notice a Ctrl-C that another thread received.
SIGNAL_POLL_S = 0.1


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a service manager's stop): ended as Ctrl-C ends a command."""

    code = EXIT_TERMINATED
    said = "terminated"


class HungUp(Terminated):
    """SIGHUP (the terminal closed, the ssh session dropped): ended as SIGTERM ends it."""

    code = EXIT_HUNG_UP
    said = "hung up"


def _terminate(signum: int, _frame: object) -> None:
    import signal

    raise HungUp() if signum == signal.SIGHUP else Terminated()


def __getattr__(name: str) -> Any:
    """``cli`` and ``EPILOG`` from ``cli.root``, imported (with click) when asked for."""
    if name in ("cli", "EPILOG"):
        from virtlife.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def echo_err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``), so that it stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def one_line(text: str) -> str:
    return printable(" ".join(text.split()))


def _bad_argument(args: Sequence[str]) -> str | None:
    """Why an argument cannot be used (not UTF-8, or a NUL), or None if all can."""
    for index, arg in enumerate(args, 1):
        if "\x00" in arg:
            return f"argument {index} ({arg!r}) holds a NUL character"
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return (f"argument {index} ({os.fsencode(arg)!r}) is not UTF-8 text; names, paths and "
                    "values must be UTF-8")
    return None


def _run(args: list[str]) -> int:
    """Run the command; every expected ending becomes an exit code and at most one line."""
    from virtlife.cli import quick

    request = quick.parse(args)
    if request is not None:
        return quick.run_direct(request)
    from virtlife.cli.root import run_click

    return run_click(args)


def _mark_interrupted() -> None:
    """Call ``cli.app.on_interrupt`` (if it exists), for at most ``INTERRUPT_HOOK_S``.

    It runs in a thread of its own: the command's thread may hold what it needs, and a
    second Ctrl-C, or the time limit, leaves it behind. A process that never loaded
    ``cli.app`` started no operation: there is nothing to mark.
    """
    import threading

    hook = getattr(sys.modules.get("virtlife.cli.app"), "on_interrupt", None)
    if not callable(hook):
        return
    problems: list[BaseException] = []

    def call() -> None:
        try:
            hook()
        except Exception as err:
            problems.append(err)

    marker = threading.Thread(target=call, name="virtlife-interrupt", daemon=True)
    marker.start()
    try:
        marker.join(INTERRUPT_HOOK_S)
    except KeyboardInterrupt:
        pass
    if marker.is_alive():
        problems.append(TimeoutError(f"no answer within {INTERRUPT_HOOK_S:.0f} s"))
    for err in problems:
        echo_err("virtlife: warning: could not mark the interrupted operation in the "
                 f"journal: {err}")


def _interrupted(worker: Any, stop: KeyboardInterrupt | None = None) -> int:
    code = stop.code if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    try:  # after SIGHUP the terminal may be gone: stderr then fails, the rest goes on
        echo_err(f"virtlife: {stop.said}" if isinstance(stop, Terminated)
                 else "virtlife: interrupted")
    except OSError:
        pass
    _mark_interrupted()
    try:
        worker.join(INTERRUPT_GRACE_S)
    except KeyboardInterrupt:
        pass
    if worker.is_alive():
        # The command may be stuck in a libvirt call that never returns; exiting
        # normally would wait for it (and for every non-daemon thread it started).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed pipe must not keep us from exiting
                pass
        os._exit(code)
    return code


def _served(args: list[str]) -> int | None:
    """The exit code of the command answered by a running ``virtlife serve``, or None
    when it is not one the server answers, or no server answered (then run it here)."""
    from virtlife.cli import quick

    request = quick.parse(args)
    if request is None or request.connect_uri is not None:
        return None
    return quick.run_served(request)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``virtlife ARGV`` and return its exit code (one of ``EXIT_CODES``).

    Without ``argv`` this is the ``virtlife`` process itself. For the hot forms of
    ``list`` and ``state`` it then runs without the cyclic garbage collector (the
    imports allocate enough to trigger it dozens of times; a few thousand short-lived
    objects need no collection) and it does not return: once the answer is printed,
    ``end_process`` ends the process. A caller passing ``argv`` (tests, scripts) gets
    the exit code back and keeps its collector as it was.
    """
    if argv is not None:
        return _main(list(argv))
    args = sys.argv[1:]
    from virtlife.cli import quick

    if quick.parse(args) is None:
        return _main(args)
    import gc

    gc.disable()
    end_process(_main(args))


def end_process(code: int) -> NoReturn:
    """End this process with ``code`` without tearing the interpreter down.

    What an exit promises is kept: the ``atexit`` handlers run (logging's, coverage's)
    and stdout and stderr are flushed. What it skips is the teardown: the hosts'
    connections are still being closed on daemon threads (``Services.close(wait=False)``:
    the daemons see the sockets close anyway), and a thread inside a libvirt call when
    the interpreter is finalized crashes the process once libvirt calls back into Python
    (``PyGILState_Ensure`` from a callback's free function: SIGSEGV, seen about once in
    100 ``list --all`` runs). Skipping it also saves walking every object once more
    (~20 ms). With another non-daemon thread alive (none on the hot path) the process
    exits the usual way, which waits for it.
    """
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon and t is not threading.main_thread()
           for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # let the usual exit report it (exit status 120)
        sys.exit(code)
    os._exit(code)


def _main(args: list[str]) -> int:
    problem = _bad_argument(args)
    if problem is not None:
        echo_err(f"virtlife: {problem}")
        return EXIT_USAGE
    if args in ([], ["--help"], ["-h"]):  # click's page, printed without click
        from virtlife.cli.roothelp import print_help

        print_help(to_stderr=not args)  # bare: click's usage error, on stderr
        return EXIT_OK if args else EXIT_USAGE
    try:
        served = _served(args)
    except KeyboardInterrupt:
        echo_err("virtlife: interrupted")
        return EXIT_INTERRUPTED
    if served is not None:
        return served
    import threading

    outcome: dict[str, int] = {}
    bug: list[BaseException] = []

    def work() -> None:
        try:
            outcome["code"] = _run(args)
        except BaseException as err:  # a bug: re-raised below with its traceback
            bug.append(err)

    worker = threading.Thread(target=work, name="virtlife-command", daemon=True)
    import signal

    on_main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    before_hup = signal.signal(signal.SIGHUP, _terminate) if on_main_thread else None
    try:
        worker.start()
        # Wake up now and then: the kernel may hand SIGINT to a thread blocked in C,
        # and Python runs the handler only when the main thread executes bytecode; a
        # plain join() would then sleep through Ctrl-C until the command ends.
        while worker.is_alive():
            worker.join(SIGNAL_POLL_S)
    except KeyboardInterrupt as stop:
        return _interrupted(worker, stop)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, before)
            signal.signal(signal.SIGHUP, before_hup)
        if not worker.is_alive():
            logs = sys.modules.get("virtlife.logs")
            if logs is not None:
                logs.reset_logging()
    if bug:
        raise bug[0]
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
