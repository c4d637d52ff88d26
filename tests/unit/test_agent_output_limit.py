"""exec's bounds without a guest (issue 15 G): the output limit's shell script run by
this machine's own shells, what one agent call may carry and the errors past it, and
``max_output`` through the CLI's and the REST API's front ends.

The script runs in the guest under its ``/bin/sh``; here it runs under each POSIX shell
this machine has (dash, bash, busybox sh), as ``guest-exec`` would start it. The real
guest's busybox runs it in tests/integration/test_agent_real.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from api_support import served
from support import NODE_URI
from virtlife import errors
from virtlife.hypervisor import agent as hv_agent
from virtlife.hypervisor.agent import (
    COMMAND_MAX_BYTES,
    OUTPUT_MAX_BYTES,
    REPLY_MAX_BYTES,
    STDIN_MAX_BYTES,
    Agent,
    ExecStatus,
    OutputLimit,
    exec_arguments,
)
from virtlife.hypervisor.libvirt_api import libvirt

SHELLS = {name: argv for name, argv in [("dash", ["dash"]), ("bash", ["bash"]),
                                        ("busybox", ["busybox", "sh"])]
          if shutil.which(argv[0])}


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    return SHELLS[request.param]


def run_limited(shell: list[str], limit: OutputLimit, argv: list[str], *,
                stdin: bytes = b"", env: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[ExecStatus, int]:
    """Run ``argv`` under the limit's script as guest-exec would (``/bin/sh -c SCRIPT
    ...``, here under ``shell``); the raw status (and the return code, negative for a
    signal) as the agent would report it."""
    path, args = limit.command(argv)
    assert path == "/bin/sh" and args[0] == "-c"
    with subprocess.Popen([*shell, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        finally:  # the shell's pipeline too, should the test fail
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    code = proc.returncode
    status = ExecStatus(True, code if code >= 0 else None, -code if code < 0 else None,
                        out, err)
    return status, code


# -- the script, under this machine's shells ------------------------------------------

def test_the_limit_keeps_its_bytes_of_each_stream_and_tells_a_cut(shell: list[str]) -> None:
    limit = OutputLimit(100)
    raw, _ = run_limited(shell, limit, ["/bin/sh", "-c",
                                        "head -c 5000 /dev/zero | tr '\\0' o; "
                                        "head -c 100 /dev/zero | tr '\\0' e >&2; exit 3"])
    assert (len(raw.stdout), len(raw.stderr)) == (101, 100)  # one byte more tells a cut
    got = limit.apply(raw, "/bin/sh", "run /bin/sh in web1")
    assert (got.exit_code, got.stdout, got.stderr) == (3, b"o" * 100, b"e" * 100)
    assert (got.stdout_cut, got.stderr_cut) == (True, False)


def test_the_program_runs_to_its_end_after_the_cut(shell: list[str], tmp_path: Path) -> None:
    """The rest is read away, not refused: no SIGPIPE ends a chatty program early."""
    done = tmp_path / "done"
    raw, code = run_limited(shell, OutputLimit(10), [
        "/bin/sh", "-c", f"yes | head -c 3000000; yes | head -c 3000000 >&2; "
                         f"echo ok > {done}; exit 4"])
    assert code == 4 and done.read_text() == "ok\n"
    assert (len(raw.stdout), len(raw.stderr)) == (11, 11)


def test_the_program_gets_the_input_and_only_the_three_standard_fds(shell: list[str]) -> None:
    raw, code = run_limited(shell, OutputLimit(1000), [
        "/bin/sh", "-c", "wc -c; for f in 3 4 5 6 7 8 9; do "
                         "[ -e /proc/self/fd/$f ] && echo open $f >&2; done; :"],
        stdin=b"12345")
    assert (code, raw.stdout.strip(), raw.stderr) == (0, b"5", b"")


def test_a_program_ended_by_a_signal_ends_the_shell_by_it(shell: list[str]) -> None:
    _, code = run_limited(shell, OutputLimit(10), ["/bin/sh", "-c", "kill -TERM $$"])
    assert code == -signal.SIGTERM
    _, code = run_limited(shell, OutputLimit(10), ["/bin/sh", "-c", "kill -KILL $$"])
    assert code == -signal.SIGKILL
    # one that dumps core reads as 128 + N, as a shell says, and leaves no core of it
    raw, code = run_limited(shell, OutputLimit(10), ["/bin/sh", "-c", "kill -SEGV $$"])
    assert code == 128 + signal.SIGSEGV and raw.stderr == b""


def test_a_program_that_leaves_a_child_behind_ends_at_once(shell: list[str]) -> None:
    raw, code = run_limited(shell, OutputLimit(100), [
        "/bin/sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo started"], timeout=20)
    assert (code, raw.stdout) == (0, b"started\n")


def test_a_program_the_guest_lacks_is_the_guests_error(shell: list[str]) -> None:
    limit = OutputLimit(100)
    raw, code = run_limited(shell, limit, ["/no/such/program", "x"])
    assert code == 127
    with pytest.raises(errors.AgentGuestError) as err:
        limit.apply(raw, "/no/such/program", "run /no/such/program in web1")
    assert err.value.exit_code == 9
    assert str(err.value) == (
        "cannot run /no/such/program in web1: the guest reported an error for guest-exec: "
        "it has no program /no/such/program (its /bin/sh finds none at that path or in "
        "its PATH)")


def test_a_guest_without_head_is_told_to_run_it_without_a_limit(tmp_path: Path) -> None:
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("no dash here")
    limit = OutputLimit(100)
    raw, code = run_limited([dash], limit, ["/bin/echo", "hi"],
                            env={"PATH": str(tmp_path)})  # nothing to find in it
    assert code == 125
    with pytest.raises(errors.AgentCommandFailed) as err:
        limit.apply(raw, "/bin/echo", "run /bin/echo in web1")
    assert str(err.value) == ("cannot run /bin/echo in web1: the guest has no `head`, which "
                              "its output limit needs; run it without one (an output limit "
                              "of 0), and keep its output under 3 MiB")


def test_a_program_cannot_pass_for_the_scripts_refusal() -> None:
    """The refusal is told by its run's random tag, on the exact exit code."""
    limit = OutputLimit(100)
    other = OutputLimit(100)
    assert limit.tag != other.tag and len(limit.tag) == 16
    for status in (ExecStatus(True, 127, None, f"{other.tag} noexec\n".encode()),
                   ExecStatus(True, 1, None, f"{limit.tag} noexec\n".encode()),
                   ExecStatus(True, 125, None, f"{other.tag} nocap head\n".encode())):
        assert limit.apply(status, "p", "x").stdout == status.stdout


def test_the_limit_passes_the_argv_unchanged_after_its_own() -> None:
    limit = OutputLimit(1234)
    path, args = limit.command(["/bin/prog", "-c", "a b", "$HOME", ""])
    assert path == "/bin/sh"
    assert args[2:] == ["virtlife-exec", "1235", limit.tag, "/bin/prog", "-c", "a b",
                        "$HOME", ""]


# -- what one agent call carries -----------------------------------------------------

def test_the_largest_limited_answer_fits_what_libvirt_passes_a_client() -> None:
    worst = {"return": {"exited": True, "exitcode": 255, "signal": 64,
                        "out-data": base64.b64encode(b"x" * (OUTPUT_MAX_BYTES + 1)).decode(),
                        "err-data": base64.b64encode(b"x" * (OUTPUT_MAX_BYTES + 1)).decode(),
                        "out-truncated": False, "err-truncated": False}}
    assert len(json.dumps(worst)) < REPLY_MAX_BYTES - 64 * 1024  # with room to spare


def test_the_largest_input_fits_one_command_with_room_for_the_program() -> None:
    path, args = OutputLimit(OUTPUT_MAX_BYTES).command(["/bin/sh", "-c", "x" * 16000])
    text = json.dumps({"execute": "guest-exec", "arguments": exec_arguments(
        path, args, stdin=b"\xff" * STDIN_MAX_BYTES)})
    assert len(text) < COMMAND_MAX_BYTES
    assert COMMAND_MAX_BYTES < 200 * 1024  # under the agent socket's buffer (~208 KiB)


class FakeLibvirtError(libvirt.libvirtError):  # type: ignore[misc]
    def __init__(self, code: int, domain: int, message: str, int1: int = 0) -> None:
        Exception.__init__(self, message)
        self.err = (code, domain, message, 2, None, None, None, int1, 0)


class FakeQemu:
    """``libvirt_qemu`` for ``Agent.command_text``: what was sent, and what to answer."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.timeouts: list[int] = []
        self.error: BaseException | None = None

    def qemuAgentCommand(self, dom: object, text: str, timeout: int, flags: int) -> str:
        self.sent.append(text)
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        return '{"return": {}}'


@pytest.fixture
def qemu(monkeypatch: pytest.MonkeyPatch) -> FakeQemu:
    fake = FakeQemu()
    monkeypatch.setattr(hv_agent, "libvirt_qemu", fake)
    return fake


def web1_agent() -> Agent:
    guest = SimpleNamespace(name="web1", _dom=object(), host=SimpleNamespace(name="hv1"))
    return Agent(guest)  # type: ignore[arg-type]


def test_a_command_longer_than_the_agent_takes_is_refused_unsent(qemu: FakeQemu) -> None:
    agent = web1_agent()
    padded = json.dumps({"execute": "guest-ping", "arguments": {"pad": "x" * 200_000}})
    with pytest.raises(errors.InvalidInput) as err:
        agent.command_text(padded, name="guest-ping")
    assert err.value.exit_code == 64 and qemu.sent == []
    assert str(err.value).startswith(
        f"cannot run agent command guest-ping in web1 on hv1: the agent command would be "
        f"{len(padded)} bytes of JSON, and at most 131072 (128 KiB) go to the guest agent "
        "in one command")
    fits = json.dumps({"execute": "guest-ping", "arguments": {"pad": "x" * 100_000}})
    assert agent.command_text(fits, name="guest-ping") == '{"return": {}}'


def test_an_answer_longer_than_libvirt_passes_is_said_to_be_lost(qemu: FakeQemu) -> None:
    qemu.error = FakeLibvirtError(libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_RPC,
                                  "Unable to encode message payload")
    with pytest.raises(errors.AgentCommandFailed) as err:
        web1_agent().exec_status(7)
    assert err.value.exit_code == 9  # never 4, "host unreachable"
    assert str(err.value) == (
        "cannot run agent command guest-exec-status in web1 on hv1: its answer was longer "
        "than libvirt passes to a client (4 MiB), and is lost; a guest program's output "
        "comes in one answer: run it again with an output limit (--max-output)")


def test_an_answer_over_10_mib_says_the_channel_broke_and_how_to_recover(
        qemu: FakeQemu) -> None:
    qemu.error = FakeLibvirtError(
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_QEMU,
        "No complete agent response found in 10485760 bytes: Numerical result out of range",
        34)  # ERANGE, as libvirt 9.0 reported it
    with pytest.raises(errors.AgentUnavailable) as err:
        web1_agent().exec_status(7)
    assert err.value.exit_code == 8
    assert "its answer was over libvirt's 10 MiB limit" in str(err.value)
    assert "restart qemu-guest-agent inside the guest" in str(err.value)
    assert "or shut web1 down and start it again" in str(err.value)


def test_the_status_of_a_program_waits_for_its_longest_answer(qemu: FakeQemu) -> None:
    """Its output comes once, in that answer: one abandoned half-way is lost. A loaded
    host's TCG guest took 9 s for the 2.8 MB of a mebibyte on each stream."""
    agent = web1_agent()
    agent.exec_status(7)
    agent.ping()
    assert qemu.timeouts == [37, 5]
    assert REPLY_MAX_BYTES / (qemu.timeouts[0] - 5) <= 2.8e6 / 9 / 2  # half the rate seen


def test_other_libvirt_errors_are_translated_as_before(qemu: FakeQemu) -> None:
    qemu.error = FakeLibvirtError(
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_FROM_QEMU,
        "Guest agent is not responding: QEMU guest agent is not connected")
    with pytest.raises(errors.AgentNotConnected):
        web1_agent().ping()


# -- the front ends ---------------------------------------------------------------------

def test_the_clis_limits_are_the_services() -> None:
    from virtlife.cli import agent as cli_agent
    from virtlife.services import agent as svc_agent

    assert cli_agent.MAX_OUTPUT_DEFAULT == svc_agent.DEFAULT_MAX_OUTPUT == 2**20
    assert cli_agent.MAX_OUTPUT_MOST == svc_agent.MAX_OUTPUT == OUTPUT_MAX_BYTES
    assert cli_agent.STDIN_MOST == svc_agent.MAX_STDIN == STDIN_MAX_BYTES


class ApiGuest:
    def __init__(self) -> None:
        self.started: list[tuple[str, list[str], bytes | None]] = []


@pytest.fixture
def api_guest(monkeypatch: pytest.MonkeyPatch) -> ApiGuest:
    from virtlife.services import agent as agent_module
    from virtlife.services import freeze as freeze_module

    side = ApiGuest()

    class ScriptedAgent:
        def __init__(self, guest: Any) -> None:
            self.guest, self.vm = guest, "vm-running"

        def freeze_status(self, **_bounds: float) -> str:
            return "thawed"

        def exec_start(self, path: str, args: list[str], *, stdin: bytes | None = None) -> int:
            side.started.append((path, args, stdin))
            return 42

        def exec_status(self, pid: int) -> ExecStatus:
            return ExecStatus(True, 0, None, b"o" * 600, b"e" * 10)  # what the guest kept

    monkeypatch.setattr(agent_module, "Agent", ScriptedAgent)
    monkeypatch.setattr(freeze_module, "Agent", ScriptedAgent)
    return side


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with served(tmp_path / "s.db", {"local": NODE_URI}, follow_events=False) as api:
        with api.client() as c:
            yield c


EXEC = "/api/vms/local/vm-running/agent/exec"


def test_the_api_takes_max_output_and_says_what_was_cut(client: httpx.Client,
                                                        api_guest: ApiGuest) -> None:
    r = client.post(EXEC, json={"argv": ["/bin/cat", "f"], "max_output": 500})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (len(got["stdout"]), got["stderr"], got["cut"]) == (500, "e" * 10, ["stdout"])
    assert (got["max_output"], got["truncated"]) == (500, True)
    [(path, args, _)] = api_guest.started
    assert (path, args[3], args[5:]) == ("/bin/sh", "501", ["/bin/cat", "f"])
    r = client.post(EXEC, json={"argv": ["/bin/cat", "f"]})
    assert r.json()["max_output"] == 2**20 and r.json()["cut"] == []
    r = client.post(EXEC, json={"argv": ["/bin/cat", "f"], "max_output": 0})
    assert api_guest.started[-1] == ("/bin/cat", ["f"], None)  # as it is


@pytest.mark.parametrize(("body", "says"), [
    ({"max_output": OUTPUT_MAX_BYTES + 1}, "max_output: Input should be less than or equal "
                                           f"to {OUTPUT_MAX_BYTES}"),
    ({"max_output": -1}, "max_output: Input should be greater than or equal to 0"),
    ({"stdin": "x" * (STDIN_MAX_BYTES + 1)}, "stdin: String should have at most 65536"),
    ({"stdin": "é" * (STDIN_MAX_BYTES // 2 + 1)}, "the input for /bin/cat is larger than "
                                                  "65536 bytes (64 KiB)"),
])
def test_the_api_refuses_what_one_agent_call_cannot_carry(client: httpx.Client,
                                                          api_guest: ApiGuest,
                                                          body: dict[str, Any],
                                                          says: str) -> None:
    r = client.post(EXEC, json={"argv": ["/bin/cat"], **body})
    assert r.status_code == 422 and says in r.json()["error"]["message"], r.text
    assert api_guest.started == []
