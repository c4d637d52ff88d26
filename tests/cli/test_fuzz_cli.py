"""Property: whatever text a user types, ``virtlife`` ends with a documented exit code
and at most a one-line error, never a traceback.

Hypothesis drives ``virtlife.cli.main.main(argv)`` in-process against libvirt's
``test:///default`` (each call opens a fresh connection, so no example sees another's
changes) with arbitrary VM names, HOST/NAME refs, file paths and option values. An
exception escaping ``main`` or an exit code outside the documented set fails the test.

Kept safe and fast: commands that would stream forever (``events`` without a timeout),
touch this machine (``lab setup``, ``demo``) or write where the text says (``save``
outside the test's directory) are not drawn; the guest cache is a file, so a ``lab
create`` that passes its checks fails at once instead of building the test guest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtlife.cli.main import main

DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 64, 130}
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text as users type it, and bytes as a shell passes them (undecodable bytes arrive as
# surrogate escapes, like sys.argv).
TEXT = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=20).map(os.fsdecode),
    st.sampled_from(["", "-", "--", "/", "..", "../x", "a/b/c", "test", "x/test",
                     "test:///default/test", "-h", "--help", "-1", "0", "nan", "inf",
                     "1e400", "99999999999999999999", " ", "\n", "é", "a\x00b"]),
)
NUMBER = st.one_of(TEXT, st.integers().map(str), st.floats().map(str))
COMMANDS_WITH_REF = ["state", "info", "dumpxml", "history", "suspend", "resume", "start",
                     "destroy", "undefine", "managedsave", "reset", "shutdown"]


@pytest.fixture
def fuzz_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory, images directory and (file) guest cache of the test's own."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "cache-is-a-file").write_text("")
    monkeypatch.setenv("VIRTLIFE_IMAGES", str(tmp_path / "images"))
    monkeypatch.setenv("VIRTLIFE_CACHE", str(tmp_path / "cache-is-a-file"))
    monkeypatch.chdir(work)
    return work


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-c", "test:///default", *argv])  # an escaping exception fails the test
    out, err = capsys.readouterr()
    assert code in DOCUMENTED, (argv, code, err)
    assert "Traceback" not in out + err, (argv, err)
    if code not in (0, 64):  # a failure says why in one line (64 may show the help)
        lines = [line for line in err.splitlines() if "warning:" not in line]
        assert len(lines) == 1 and lines[0].startswith("virtlife: "), (argv, err)


@SETTINGS
@given(command=st.sampled_from(COMMANDS_WITH_REF), ref=TEXT)
def test_any_vm_ref_ends_cleanly(command: str, ref: str, fuzz_env: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    run([command, "--", ref], capsys)


@SETTINGS
@given(name=TEXT, memory=NUMBER, vcpus=NUMBER, lab=st.booleans())
def test_any_new_vm_name_and_size_ends_cleanly(name: str, memory: str, vcpus: str, lab: bool,
                                              fuzz_env: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    if lab:
        run(["lab", "create", "--memory", memory, "--", name], capsys)
    else:
        run(["create", "--memory", memory, "--vcpus", vcpus, "--", name], capsys)
    assert not any(p.is_symlink() or p.name.endswith(".qcow2")
                   for p in fuzz_env.parent.rglob("*") if p.parent != fuzz_env.parent)


@SETTINGS
@given(path=TEXT, content=st.one_of(st.none(), st.binary(max_size=200),
                                    st.text(max_size=200).map(str.encode)),
       command=st.sampled_from(["define", "restore", "save"]))
def test_any_file_path_and_content_ends_cleanly(path: str, content: bytes | None, command: str,
                                                fuzz_env: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # Paths stay inside the test's directory: no '/', so no '..' can climb out either.
    local = path.replace("/", "_").replace("\x00", "")
    if content is not None and local not in ("", ".", ".."):
        try:
            (fuzz_env / local).write_bytes(content)
        except (OSError, UnicodeEncodeError):
            pass  # a name the file system refuses: the command sees it missing
    if command == "save":
        run(["save", "test", "--", local], capsys)
    else:
        run([command, "--", local], capsys)


@SETTINGS
@given(option=st.sampled_from([["history", "--limit"], ["events", "--count"],
                               ["start", "test", "--timeout"],
                               ["shutdown", "test", "--timeout"],
                               ["suspend", "test", "--timeout"],
                               ["shutdown", "test", "--mode"],
                               ["pmsuspend", "test", "--target"]]),
       value=NUMBER)
def test_any_option_value_ends_cleanly(option: list[str], value: str, fuzz_env: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--timeout", "0.05"] if option[0] == "events" else []
    run([*option, value, *extra], capsys)


@SETTINGS
@given(args=st.lists(TEXT, max_size=4),
       command=st.sampled_from(["list", "host", "history", "state", "create", "define",
                                "lab", "dumpxml", "undefine", "restore", "-v", "--log-file",
                                "--version", "--bogus", ""]))
def test_any_argument_list_ends_cleanly(command: str, args: list[str], fuzz_env: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if command == "lab" and args[:1] == ["setup"]:  # would prepare this host
        args = args[1:]
    if command == "--log-file":  # keep the log inside the test's directory
        args = [a.replace("/", "_") for a in args]
    run([command, *args], capsys)
