"""Bad input and faults, tried as a new user would: each ends in one ``virtlife: ...``
line with the documented exit code, writes nothing, and Ctrl-C always ends a command.

Every test runs the real ``virtlife`` command as a subprocess (as ``test_cli.py``
does), with this test's own ``VIRTLIFE_HOME`` and, where a command could write disk
images or build the test guest, its own ``VIRTLIFE_IMAGES`` and ``VIRTLIFE_CACHE``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import NODE_URI

_SCRIPT = Path(sys.executable).with_name("virtlife")
VIRTLIFE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "virtlife.cli.main"]

EXIT_FAILED = 1
EXIT_STORE_UNAVAILABLE = 7
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def virtlife(*args: str | bytes, timeout: float = 60, env: dict[str, str] | None = None) -> Run:
    proc = subprocess.run([*VIRTLIFE, *args], capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    return Run(proc.returncode, proc.stdout.decode(errors="replace"),
               proc.stderr.decode(errors="replace"))


def on_node(*args: str | bytes, **kwargs: object) -> Run:
    return virtlife("-c", NODE_URI, *args, **kwargs)  # type: ignore[arg-type]


def one_line_error(run: Run, code: int) -> str:
    """The command failed with ``code`` and said why in one line; that line's text."""
    context = f"exit {run.code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    assert "Traceback" not in run.out + run.err, context
    assert run.code == code, context
    lines = run.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtlife: "), context
    return lines[0].removeprefix("virtlife: ")


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.fixture
def lab_env(tmp_path: Path) -> dict[str, str]:
    """Images go to tmp; the cache is a file, so a guest build would fail at once."""
    (tmp_path / "cache-is-a-file").write_text("not a directory\n")
    return {"VIRTLIFE_IMAGES": str(tmp_path / "lab" / "images"),
            "VIRTLIFE_CACHE": str(tmp_path / "cache-is-a-file")}


# -- names virtlife creates: plain file names, checked before anything is written -------


@pytest.mark.parametrize("name", ["../x", "a/b/c", "/tmp/abs", ".hidden", "-x", "a b", ""])
@pytest.mark.parametrize("command", [["lab", "create"], ["create"]], ids=" ".join)
def test_create_with_a_name_that_is_not_a_plain_file_name_is_bad_input_and_writes_nothing(
        command: list[str], name: str, tmp_path: Path, lab_env: dict[str, str]) -> None:
    before = files_under(tmp_path)
    message = one_line_error(on_node(*command, "--", name, env=lab_env), EXIT_USAGE)
    assert "VM name" in message
    assert files_under(tmp_path) == before


def test_lab_create_with_an_unusable_cache_is_one_line(lab_env: dict[str, str]) -> None:
    message = one_line_error(on_node("lab", "create", "t1", env=lab_env), EXIT_FAILED)
    assert "VIRTLIFE_CACHE" in message


def test_lab_guest_build_with_an_unusable_cache_is_one_line(lab_env: dict[str, str]) -> None:
    message = one_line_error(virtlife("lab", "guest", "build", env=lab_env), EXIT_FAILED)
    assert "cannot build the test guest" in message


# -- domain XML files: bounded, UTF-8, readable ----------------------------------------


def test_define_of_an_endless_file_stops_reading_and_is_bad_input() -> None:
    message = one_line_error(on_node("define", "/dev/zero", timeout=30), EXIT_USAGE)
    assert "/dev/zero" in message and "larger than 1 MiB" in message


def test_define_of_a_10_mb_file_is_refused_before_libvirt_sees_it(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    big.write_text("<domain type='test'><name>big</name><description>"
                   + "x" * 10_000_000 + "</description></domain>")
    message = one_line_error(on_node("define", str(big)), EXIT_USAGE)
    assert str(big) in message and "larger than 1 MiB" in message


def test_define_of_a_file_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.xml"
    latin1.write_bytes(b"<domain type='test'><name>caf\xe9</name></domain>")
    message = one_line_error(on_node("define", str(latin1)), EXIT_USAGE)
    assert "not UTF-8" in message


@pytest.mark.parametrize("path", ["/tmp", "/proc/self/mem", ""],
                         ids=["a directory", "an unreadable file", "an empty path"])
def test_define_of_a_file_that_cannot_be_read_is_bad_input(path: str) -> None:
    one_line_error(on_node("define", path), EXIT_USAGE)


@pytest.mark.parametrize("command", ["save vm-running", "restore"])
def test_save_and_restore_refuse_a_directory_or_an_empty_path(command: str) -> None:
    for path in ("/tmp", ""):
        one_line_error(on_node(*command.split(), path), EXIT_USAGE)


# -- option values: checked when parsed ------------------------------------------------


@pytest.mark.parametrize("args", [
    "start vm-off --timeout -1", "start vm-off --timeout 0", "start vm-off --timeout nan",
    "start vm-off --timeout inf", "shutdown vm-running --timeout 1e300",
    "suspend vm-running --timeout NaN", "history --limit 0", "history --limit -5",
    "history --limit 99999999999999999999", "events --count 0", "events --timeout nan",
    "events --timeout -3", "create n1 --memory 0", "create n1 --memory -5",
    "create n1 --vcpus 0", "lab create t1 --memory 0", "lab create t1 --dirty -1",
    "list --all --bogus", "state", "suspend a b",
], ids=lambda a: a)
def test_an_odd_option_value_is_a_one_line_usage_error_naming_it(
        args: str, lab_env: dict[str, str]) -> None:
    run = on_node(*args.split(), env=lab_env, timeout=30)
    message = one_line_error(run, EXIT_USAGE)
    assert f"'virtlife {args.split()[0]}" in message  # where to read the help


def test_top_level_help_documents_the_exit_codes() -> None:
    run = virtlife("--help")
    assert run.code == 0
    epilog = run.out[run.out.index("Exit codes:"):]
    for code in ("0 done", "1 failed", "2 not found", "3 refused", "4 host unreachable",
                 "5 timed out", "6 busy", "7 store unavailable", "64  bad usage",
                 "130 interrupted"):
        assert code in epilog, epilog


def test_virtlife_alone_shows_the_help_as_a_usage_error() -> None:
    run = virtlife()
    assert run.code == EXIT_USAGE
    assert "Usage: virtlife" in run.out + run.err
    assert "Traceback" not in run.err


# -- odd bytes and characters in names ---------------------------------------------------


def test_an_argument_that_is_not_utf8_is_bad_input() -> None:
    message = one_line_error(on_node("state", b"vm-\xff"), EXIT_USAGE)
    assert "not UTF-8" in message


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "esc\x1b[31m", "nl\u2028x"])
def test_a_lookup_of_a_name_with_control_characters_is_one_line_not_found(name: str) -> None:
    message = one_line_error(on_node("state", name), 2)
    assert "no VM named" in message


def test_history_of_an_odd_name_is_empty_not_a_traceback() -> None:
    run = on_node("history", "a/b/c\u00e9\x7f", "--json")
    assert run.code == 0, run.err
    assert run.out.strip() == "[]"


# -- the environment --------------------------------------------------------------------


def test_a_virtlife_home_that_is_a_file_is_one_line_store_unavailable(tmp_path: Path) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a directory\n")
    message = one_line_error(virtlife("history", env={"VIRTLIFE_HOME": str(home)}),
                             EXIT_STORE_UNAVAILABLE)
    assert str(home) in message


@pytest.mark.parametrize("where", ["a directory", "in a missing directory"])
def test_a_log_file_that_cannot_be_written_is_bad_input(where: str, tmp_path: Path) -> None:
    path = tmp_path if where == "a directory" else tmp_path / "missing" / "x.log"
    one_line_error(virtlife("--log-file", str(path), "-c", NODE_URI, "list"), EXIT_USAGE)


# -- logging -----------------------------------------------------------------------------


def test_v_prints_progress_and_vv_adds_debug_logs(tmp_path: Path) -> None:
    once = on_node("-v", "suspend", "vm-running")
    assert once.code == 0, once.err
    assert "… " in once.err  # progress, as before
    assert " DEBUG " not in once.err
    twice = on_node("-vv", "suspend", "vm-running")
    assert twice.code == 0, twice.err
    assert " DEBUG " in twice.err


def test_log_file_gets_timestamped_lines_with_level_logger_and_thread(tmp_path: Path) -> None:
    log = tmp_path / "virtlife.log"
    run = virtlife("--log-file", str(log), "-c", NODE_URI, "suspend", "vm-running")
    assert run.code == 0, run.err
    lines = log.read_text().splitlines()
    assert lines, "nothing was logged"
    for line in lines:
        date, clock, level, logger, thread, *_ = line.split()
        assert date[:2] == "20" and clock[2] == ":"
        assert level in {"INFO", "WARNING", "ERROR"}
        assert logger.startswith("virtlife.")
        assert thread.startswith("[") and thread.endswith("]")


# -- Ctrl-C --------------------------------------------------------------------------------


@pytest.fixture
def silent_host() -> Iterator[tuple[int, threading.Event]]:
    """A TCP port that accepts connections and never says a word; yields the port and
    an event set once a client connected (so it is past its start-up)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()
    connected = threading.Event()
    server.settimeout(0.2)

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
                connected.set()
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


_SYS_TGKILL = 234  # x86_64


def _tgkill_a_worker_thread(pid: int, sig: int) -> None:
    """Send ``sig`` to one thread of ``pid`` other than its main thread, as the kernel
    may when the main thread is busy: a thread-directed signal (tgkill)."""
    import ctypes
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert tids, "the command runs no thread besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_SYS_TGKILL, pid, tids[0], sig) == 0, ctypes.get_errno()


@pytest.mark.parametrize("to_thread", [False, True], ids=["process", "worker-thread"])
def test_ctrl_c_ends_a_command_stuck_on_a_silent_host_at_once(
        silent_host: tuple[int, threading.Event], to_thread: bool) -> None:
    port, connected = silent_host
    proc = subprocess.Popen(
        [*VIRTLIFE, "-c", f"qemu+tcp://127.0.0.1:{port}/system", "state", "x"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a background job's SIGINT may be ignored; this test is about a user's Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Ctrl-C once it waits on the host (not while Python still starts, under load)
        assert connected.wait(60), "it never reached the silent host"
        assert proc.poll() is None, "it did not even wait for the silent host"
        if to_thread:  # Python must still notice it at once
            _tgkill_a_worker_thread(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        # well before the 10 s connect deadline would have ended it by itself
        out, err = proc.communicate(timeout=8)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_INTERRUPTED, (proc.returncode, out, err)
    assert err.splitlines()[0] == "virtlife: interrupted", err
    assert "Traceback" not in err
